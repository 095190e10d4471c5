# Probe data: generate the synthetic world or download real Broden, then pack it.


rule synthworld:
    input:
        code=code("synthworld"),
    output:
        directory("results/synthworld/{dataset}"),
    log:
        "results/logs/synthworld/{dataset}.log",
    benchmark:
        "results/benchmarks/synthworld/{dataset}.tsv"
    wildcard_constraints:
        dataset="synthworld",
    conda:
        ENV
    params:
        **step_params("synthworld", study_overrides("synthworld")),
    shell:
        "python -m cnnscope.steps.synthworld {params.args} out={output} > {log} 2>&1"


rule download:
    input:
        code=code("download"),
    output:
        directory(f"{DATA_DIR}/{{dataset}}"),
    log:
        "results/logs/download/{dataset}.log",
    benchmark:
        "results/benchmarks/download/{dataset}.tsv"
    wildcard_constraints:
        dataset="broden1_(224|227|384)",
    conda:
        ENV
    params:
        **step_params("download", [f"dataset={DATASET}", *study_overrides("download")]),
        cache=f"{DATA_DIR}/downloads",
    shell:
        "python -m cnnscope.steps.download {params.args} dataset={wildcards.dataset}"
        " cache_dir={params.cache} out={output} > {log} 2>&1"


rule prepare:
    input:
        data=dataset_dir,
        code=code("prepare"),
    output:
        directory("results/prepare/{dataset}"),
    log:
        "results/logs/prepare/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare/{dataset}.tsv"
    conda:
        ENV
    threads: 2
    params:
        **step_params("prepare", study_overrides("prepare")),
    shell:
        "python -m cnnscope.steps.prepare {params.args} dataset_dir={input.data}"
        " out={output} workers={threads} > {log} 2>&1"
