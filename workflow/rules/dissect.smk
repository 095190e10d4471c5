# Network Dissection of each (model, layer).


rule dissect:
    input:
        activations="results/extract/{dataset}/{model}/{layer}",
        packed="results/prepare/{dataset}",
        code=code("dissect"),
    output:
        directory("results/dissect/{dataset}/{model}/{layer}"),
    log:
        "results/logs/dissect/{dataset}/{model}/{layer}.log",
    benchmark:
        "results/benchmarks/dissect/{dataset}/{model}/{layer}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    params:
        **step_params("dissect", study_overrides("dissect")),
    shell:
        "python -m cnnscope.steps.dissect {params.args} activations={input.activations}"
        " packed={input.packed} out={output} threads={threads} > {log} 2>&1"
