# Train the study's built-in models on the shape/texture world, in their regime.


rule train:
    input:
        code=code("train"),
    output:
        directory("results/train/{model}"),
    log:
        "results/logs/train/{model}.log",
    benchmark:
        "results/benchmarks/train/{model}.tsv"
    conda:
        ENV
    threads: 1
    params:
        cfg=lambda wc: compose_step("train", train_items(wc)),
        args=lambda wc: shell_args(train_items(wc)),
    shell:
        "python -m cnnscope.steps.train {params.args} out={output} threads={threads} > {log} 2>&1"
