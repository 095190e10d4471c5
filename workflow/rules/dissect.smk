# Network Dissection of each (model, layer).


rule dissect:
    input:
        activations="results/extract/{dataset}/{model}/{layer}",
        packed="results/prepare/{dataset}",
        code=code("dissect"),
    output:
        directory("results/dissect/{dataset}/{model}/{layer}"),
    params:
        **step_params("dissect", study_overrides("dissect")),
    threads: 1
    resources:
        gpu=GPU,
    log:
        "results/logs/dissect/{dataset}/{model}/{layer}.log",
    benchmark:
        "results/benchmarks/dissect/{dataset}/{model}/{layer}.tsv"
    shell:
        "{PYTHON} -m cnnscope.steps.dissect {params.args} activations={input.activations}"
        " packed={input.packed} out={output} threads={threads} > {log} 2>&1"
