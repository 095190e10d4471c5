# Network Dissection of each (model, layer).


rule dissect:
    input:
        activations=artifact("extract"),
        packed=artifact("prepare"),
        code=code("dissect"),
    output:
        directory(artifact("dissect")),
    log:
        log_file("dissect"),
    benchmark:
        benchmark_file("dissect")
    conda:
        ENV
    threads: step_threads("dissect")
    resources:
        **step_resources("dissect"),
    params:
        **step_params("dissect"),
    shell:
        STEP_SHELL
