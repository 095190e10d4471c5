# Extract each (model, layer)'s activations over the packed probe set.


rule extract:
    input:
        packed="results/prepare/{dataset}",
        checkpoint=checkpoint_input,
        code=code("extract"),
    output:
        directory("results/extract/{dataset}/{model}/{layer}"),
    log:
        "results/logs/extract/{dataset}/{model}/{layer}.log",
    benchmark:
        "results/benchmarks/extract/{dataset}/{model}/{layer}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    params:
        cfg=lambda wc: compose_step("extract", extract_items(wc)),
        args=lambda wc: shell_args(extract_items(wc)),
    shell:
        "python -m cnnscope.steps.extract {params.args} packed={input.packed}"
        " out={output} threads={threads} > {log} 2>&1"
