# The study report: one HTML page over every job's results.


rule report:
    input:
        jobs=[artifact(step, **wc) for step, wc in study_jobs()],
        code=code("report"),
    output:
        report(
            directory(artifact("report")),
            patterns=["figures/{name}.png"],
            category="cnnscope study report",
            caption="../report/figure.rst",
        ),
    log:
        log_file("report"),
    benchmark:
        benchmark_file("report")
    conda:
        ENV
    threads: step_threads("report")
    resources:
        **step_resources("report"),
    params:
        **step_params("report"),
    shell:
        STEP_SHELL
