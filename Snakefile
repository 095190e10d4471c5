# cnnscope: a reproducible interpretability study as a Snakemake DAG of Hydra-configured steps.
# Its stages are declared once, in src/cnnscope/stages.py (STAGES: inputs, jobs, settings, resources);
# workflow/rules/stages.smk makes one rule of each. The study is config/config.yaml; each step's
# settings are its Config dataclass (src/cnnscope/steps/<step>.py). This file, workflow/ and config/
# also ship inside the installed package (cnnscope.resources), so `cnnscope run` works in any folder: results, logs and Snakemake's state go there, never into the install.
import os

from cnnscope.resources import DEFAULT_STUDY, PACKAGES

# Where the cnnscope code this workflow runs lives: for the rule environment's post-deploy script
# (workflow/envs/cnnscope.post-deploy.sh), and passed on to cluster jobs.
os.environ["CNNSCOPE_PACKAGES"] = str(PACKAGES)

# The default study, unless studies are given with --configfile: a given study is the whole study, so a
# section it omits (cue_conflict, attribution) is skipped, not inherited from the default.
if not workflow.config_settings.configfiles:

    configfile: str(DEFAULT_STUDY)


report: "workflow/report/workflow.rst"


envvars:
    "PATH",
    "CNNSCOPE_PACKAGES",


include: "workflow/rules/common.smk"
include: "workflow/rules/stages.smk"


onstart:
    start_warm()


rule all:
    default_target: True
    input:
        "results/report",
