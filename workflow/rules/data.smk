# Probe data: generate the synthetic world or download real Broden, then pack it.


rule synthworld:
    input:
        code=code("synthworld"),
    output:
        directory("results/synthworld/{dataset}"),
    wildcard_constraints:
        dataset="synthworld",
    params:
        **step_params("synthworld", study_overrides("synthworld")),
    log:
        "results/logs/synthworld/{dataset}.log",
    benchmark:
        "results/benchmarks/synthworld/{dataset}.tsv"
    shell:
        "{PYTHON} -m cnnscope.steps.synthworld {params.args} out={output} > {log} 2>&1"


rule download:
    input:
        code=code("download"),
    output:
        directory(f"{DATA_DIR}/{{dataset}}"),
    wildcard_constraints:
        dataset="broden1_(224|227|384)",
    params:
        **step_params("download", [f"dataset={DATASET}", *study_overrides("download")]),
    log:
        "results/logs/download/{dataset}.log",
    benchmark:
        "results/benchmarks/download/{dataset}.tsv"
    shell:
        "{PYTHON} -m cnnscope.steps.download {params.args} dataset={wildcards.dataset}"
        " cache_dir={DATA_DIR}/downloads out={output} > {log} 2>&1"


rule prepare:
    input:
        data=dataset_dir,
        code=code("prepare"),
    output:
        directory("results/prepare/{dataset}"),
    params:
        **step_params("prepare", study_overrides("prepare")),
    threads: 2
    log:
        "results/logs/prepare/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare/{dataset}.tsv"
    shell:
        "{PYTHON} -m cnnscope.steps.prepare {params.args} dataset_dir={input.data}"
        " out={output} workers={threads} > {log} 2>&1"
