# Net2Vec of each dissected (model, layer): learned unit combinations per concept.


rule net2vec:
    input:
        activations=artifact("extract"),
        dissect=artifact("dissect"),
        packed=artifact("prepare"),
        code=code("net2vec"),
    output:
        directory(artifact("net2vec")),
    log:
        log_file("net2vec"),
    benchmark:
        benchmark_file("net2vec")
    conda:
        ENV
    threads: step_threads("net2vec")
    resources:
        **step_resources("net2vec"),
    params:
        **step_params("net2vec"),
    shell:
        STEP_SHELL
