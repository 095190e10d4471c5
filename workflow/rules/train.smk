# Train the study's built-in models on the shape/texture world, in their regime.


rule train:
    input:
        code=code("train"),
    output:
        directory(artifact("train")),
    log:
        log_file("train"),
    benchmark:
        benchmark_file("train")
    conda:
        ENV
    threads: step_threads("train")
    resources:
        **step_resources("train"),
    params:
        **step_params("train"),
    shell:
        STEP_SHELL
