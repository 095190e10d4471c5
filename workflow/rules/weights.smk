# Pretrained weights (torchvision, timm) fetched once per model, before any job loads them: a local
# rule, since compute nodes are often offline.


rule weights:
    input:
        code=code("weights"),
    output:
        directory(artifact("weights")),
    log:
        log_file("weights"),
    benchmark:
        benchmark_file("weights")
    conda:
        ENV
    threads: step_threads("weights")
    resources:
        **step_resources("weights"),
    params:
        **step_params("weights"),
    shell:
        STEP_SHELL
