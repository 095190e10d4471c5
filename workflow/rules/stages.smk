# One rule per stage declared in cnnscope.stages.STAGES (src/cnnscope/stages.py): its inputs, settings,
# threads, resources and paths all come from the declaration, and the step runs as
# `python -m cnnscope.steps.<stage> <its settings as Hydra overrides>` would, through the warm start
# of common.smk (`snakemake -n -p` prints each command).


for stage in STAGES.values():

    rule:
        name:
            stage.name
        input:
            **stage_inputs(stage),
            code=code(stage.name),
        output:
            stage_output(stage),
        log:
            STUDY.log_file(stage.name),
        benchmark:
            STUDY.benchmark_file(stage.name)
        wildcard_constraints:
            **stage.constraints,
        priority: step_priority(stage)
        localrule: stage.local
        conda:
            ENV
        threads: step_threads(stage)
        resources:
            **step_resources(stage),
        params:
            **step_params(stage),
        shell:
            STEP_SHELL
