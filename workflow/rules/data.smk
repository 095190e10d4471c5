# Probe data: generate the synthetic world or download real Broden, then pack it.


rule synthworld:
    input:
        code=code("synthworld"),
    output:
        directory(artifact("synthworld")),
    log:
        log_file("synthworld"),
    benchmark:
        benchmark_file("synthworld")
    wildcard_constraints:
        dataset="synthworld",
    conda:
        ENV
    threads: step_threads("synthworld")
    resources:
        **step_resources("synthworld"),
    params:
        **step_params("synthworld"),
    shell:
        STEP_SHELL


rule download:
    input:
        code=code("download"),
    output:
        directory(artifact("download")),
    log:
        log_file("download"),
    benchmark:
        benchmark_file("download")
    wildcard_constraints:
        dataset="broden1_(224|227|384)",
    conda:
        ENV
    threads: step_threads("download")
    resources:
        **step_resources("download"),
    params:
        **step_params("download"),
    shell:
        STEP_SHELL


rule prepare:
    input:
        dataset_dir=dataset_dir,
        code=code("prepare"),
    output:
        directory(artifact("prepare")),
    log:
        log_file("prepare"),
    benchmark:
        benchmark_file("prepare")
    conda:
        ENV
    threads: step_threads("prepare")
    resources:
        **step_resources("prepare"),
    params:
        **step_params("prepare"),
    shell:
        STEP_SHELL
