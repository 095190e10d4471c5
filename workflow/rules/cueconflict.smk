# Texture vs shape: the stimulus sets, and each model's decisions on them.


rule stimuli:
    input:
        code=code("stimuli"),
    output:
        directory(artifact("stimuli")),
    log:
        log_file("stimuli"),
    benchmark:
        benchmark_file("stimuli")
    conda:
        ENV
    threads: step_threads("stimuli")
    resources:
        **step_resources("stimuli"),
    params:
        **step_params("stimuli"),
    shell:
        STEP_SHELL


rule cueconflict:
    input:
        stimuli=artifact("stimuli"),
        model_files=model_files,
        code=code("cueconflict"),
    output:
        directory(artifact("cueconflict")),
    log:
        log_file("cueconflict"),
    benchmark:
        benchmark_file("cueconflict")
    conda:
        ENV
    threads: step_threads("cueconflict")
    resources:
        **step_resources("cueconflict"),
    params:
        **step_params("cueconflict"),
    shell:
        STEP_SHELL
