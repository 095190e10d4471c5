# Extract each (model, layer)'s activations over the packed probe set.


rule extract:
    input:
        packed=artifact("prepare"),
        model_files=model_files,
        code=code("extract"),
    output:
        directory(artifact("extract")),
    log:
        log_file("extract"),
    benchmark:
        benchmark_file("extract")
    conda:
        ENV
    threads: step_threads("extract")
    resources:
        **step_resources("extract"),
    params:
        **step_params("extract"),
    shell:
        STEP_SHELL
