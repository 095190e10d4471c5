# Visualisation and attribution: method maps and metrics per model, and activation maximization
# of each dissected layer's top units.


rule lcam:
    input:
        model_files=model_files,
        code=code("lcam"),
    output:
        directory(artifact("lcam")),
    log:
        log_file("lcam"),
    benchmark:
        benchmark_file("lcam")
    conda:
        ENV
    threads: step_threads("lcam")
    resources:
        **step_resources("lcam"),
    params:
        **step_params("lcam"),
    shell:
        STEP_SHELL


rule attribution:
    input:
        packed=artifact("prepare"),
        lcam=lcam_input,
        model_files=model_files,
        code=code("attribution"),
    output:
        directory(artifact("attribution")),
    log:
        log_file("attribution"),
    benchmark:
        benchmark_file("attribution")
    conda:
        ENV
    threads: step_threads("attribution")
    resources:
        **step_resources("attribution"),
    params:
        **step_params("attribution"),
    shell:
        STEP_SHELL


rule featurevis:
    input:
        dissection=artifact("dissect"),
        packed=artifact("prepare"),
        model_files=model_files,
        code=code("featurevis"),
    output:
        directory(artifact("featurevis")),
    log:
        log_file("featurevis"),
    benchmark:
        benchmark_file("featurevis")
    conda:
        ENV
    threads: step_threads("featurevis")
    resources:
        **step_resources("featurevis"),
    params:
        **step_params("featurevis"),
    shell:
        STEP_SHELL
