# Extract each (model, layer)'s activations over the packed probe set.


def extract_items(wc):
    return [*model_overrides(wc.model), f"layer={wc.layer}", *study_overrides("extract")]


rule extract:
    input:
        packed="results/prepare/{dataset}",
        checkpoint=checkpoint_input,
        code=code("extract"),
    output:
        directory("results/extract/{dataset}/{model}/{layer}"),
    params:
        cfg=lambda wc: compose_step("extract", extract_items(wc)),
        args=lambda wc: shell_args(extract_items(wc)),
    threads: 1
    resources:
        gpu=GPU,
    log:
        "results/logs/extract/{dataset}/{model}/{layer}.log",
    benchmark:
        "results/benchmarks/extract/{dataset}/{model}/{layer}.tsv"
    shell:
        "{PYTHON} -m cnnscope.steps.extract {params.args} packed={input.packed}"
        " out={output} threads={threads} > {log} 2>&1"
