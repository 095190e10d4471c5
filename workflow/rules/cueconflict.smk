# Texture vs shape: the stimulus sets, and each model's decisions on them.


rule stimuli:
    input:
        code=code("stimuli"),
    output:
        directory("results/stimuli/{stimset}"),
    log:
        "results/logs/stimuli/{stimset}.log",
    benchmark:
        "results/benchmarks/stimuli/{stimset}.tsv"
    conda:
        ENV
    params:
        **(step_params("stimuli", stimuli_items()) if CC else {}),
    shell:
        "python -m cnnscope.steps.stimuli {params.args} out={output} > {log} 2>&1"


rule cueconflict:
    input:
        stimuli="results/stimuli/{stimset}",
        checkpoint=checkpoint_input,
        code=code("cueconflict"),
    output:
        directory("results/cueconflict/{stimset}/{model}"),
    log:
        "results/logs/cueconflict/{stimset}/{model}.log",
    benchmark:
        "results/benchmarks/cueconflict/{stimset}/{model}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=GPU,
    params:
        cfg=lambda wc: compose_step("cueconflict", cueconflict_items(wc)),
        args=lambda wc: shell_args(cueconflict_items(wc)),
    shell:
        "python -m cnnscope.steps.cueconflict {params.args} stimuli={input.stimuli}"
        " out={output} threads={threads} > {log} 2>&1"
