# Train the study's built-in models on the synthetic world.


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
        cfg=lambda wc: compose_step(
            "train", [*model_overrides(wc.model), *study_overrides("train")]
        ),
        args=lambda wc: shell_args(
            [*model_overrides(wc.model), *study_overrides("train")]
        ),
    shell:
        "python -m cnnscope.steps.train {params.args} out={output} threads={threads} > {log} 2>&1"
