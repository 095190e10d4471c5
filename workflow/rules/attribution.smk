# Visualisation and attribution: method maps and metrics per model, and activation maximization
# of each dissected layer's top units.


rule attribution:
    input:
        packed="results/prepare/{dataset}",
        checkpoint=checkpoint_input,
        code=code("attribution"),
    output:
        directory("results/attribution/{dataset}/{model}"),
    log:
        "results/logs/attribution/{dataset}/{model}.log",
    benchmark:
        "results/benchmarks/attribution/{dataset}/{model}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    params:
        cfg=lambda wc: compose_step("attribution", attribution_items(wc)),
        args=lambda wc: shell_args(attribution_items(wc)),
    shell:
        "python -m cnnscope.steps.attribution {params.args} packed={input.packed}"
        " out={output} threads={threads} > {log} 2>&1"


rule featurevis:
    input:
        dissection="results/dissect/{dataset}/{model}/{layer}",
        checkpoint=checkpoint_input,
        code=code("featurevis"),
    output:
        directory("results/featurevis/{dataset}/{model}/{layer}"),
    log:
        "results/logs/featurevis/{dataset}/{model}/{layer}.log",
    benchmark:
        "results/benchmarks/featurevis/{dataset}/{model}/{layer}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    params:
        cfg=lambda wc: compose_step("featurevis", featurevis_items(wc)),
        args=lambda wc: shell_args(featurevis_items(wc)),
    shell:
        "python -m cnnscope.steps.featurevis {params.args} dissection={input.dissection}"
        " out={output} threads={threads} > {log} 2>&1"
