# What the generated rules (stages.smk) share: the study (cnnscope.stages.Study, derived from the
# config and the stage declarations), each job's settings, inputs and command line.
import dataclasses
import json
import os
import sys
from pathlib import Path

from snakemake.utils import validate

from cnnscope.plan import cached, key as plan_key
from cnnscope.resources import CONFIG_DIR
from cnnscope.sources import ROOT as CODE_ROOT, closure
from cnnscope.stages import EVERY_JOB, MODEL_FILES, STAGES, Study
from cnnscope.overrides import overrides, shell_args

validate(config, schema="../schemas/config.schema.yaml")

# Steps run as `python -m cnnscope.steps.<step>` (STEP_SHELL), in the environment Snakemake runs in: this
# interpreter's directory goes first on PATH (cluster jobs inherit it). Under --sdm conda every rule runs
# in envs/cnnscope.yaml instead, whose post-deploy script makes this cnnscope importable there.
os.environ["PATH"] = os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
)
ENV = "../envs/cnnscope.yaml"
# How each step is run (every job alike): its module, given the job's settings and paths, through
# cnnscope.stepkit.warm, which runs it as `python -m <module>` would, in a child of the warm-start
# server where a local run has one (start_warm), else in a fresh interpreter.
STEP_SHELL = (
    "python -m cnnscope.stepkit.warm {params.module} {params.args} > {log:q} 2>&1"
)


def start_warm():
    """Start a local run's warm-start server (its socket in a folder of its own under the temporary
    folder; it removes both when this Snakemake process ends) and name it to the jobs. A cluster
    run has none: neither the process that submits its jobs (they start on other machines, in their
    own allocations) nor a job's own Snakemake inside its allocation (it runs that one job).
    """
    if not workflow.local_exec or workflow.exec_mode.name != "DEFAULT":
        return
    import subprocess
    import tempfile

    from cnnscope.stepkit.warm import ENV as WARM

    socket = os.path.join(tempfile.mkdtemp(prefix="cnnscope-warm-"), "socket")
    server = [
        sys.executable,
        "-m",
        "cnnscope.stepkit.warm",
        "--serve",
        socket,
        str(os.getpid()),
    ]
    subprocess.Popen(server, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    os.environ[WARM] = socket


def _build_plan():
    """Every job's composed config, each model's spec and weights source, after the study's check
    (cnnscope.plan: kept on disk, built again only when the study, the config tree, the code or a file a
    model names changes)."""
    from cnnscope.errors import CnnscopeError
    from cnnscope.models.registry import needs_download
    from cnnscope.stepkit.compose import check_study, compose_step, study_model_spec

    composed = {}

    def compose(step, items):
        k = json.dumps([step, list(items)])
        if k not in composed:
            composed[k] = compose_step(step, list(items))
        return composed[k]

    def spec(name):
        return study_model_spec(live, name, compose)

    live = Study(config, lambda name: needs_download(spec(name)))
    try:
        check_study(live, compose, spec)
    except CnnscopeError as e:
        raise WorkflowError(f"study config: {e}") from None
    return {
        "composed": composed,
        "models": {n: dataclasses.asdict(spec(n)) for n in live.models},
        "fetched": {n: live.fetched(n) for n in live.models},
    }


def _named_files():
    """What model entries name besides the config tree: checkpoints, class-name files, and for your own
    modules (`import`) the study folder's Python files."""
    named = []
    for m in config["models"]:
        values = m.get("overrides") or {}
        named += [
            v
            for v in (
                m.get("checkpoint"),
                values.get("checkpoint"),
                values.get("classes"),
            )
            if v
        ]
        named += ["."] if m["model"] == "import" or "factory" in values else []
    return named


PLAN = cached(
    Path(".snakemake/cnnscope"),
    plan_key(config, CODE_ROOT, CONFIG_DIR, _named_files()),
    _build_plan,
)
STUDY = Study(config, lambda name: PLAN["fetched"][name])


def code(step):
    """The step module's import closure within cnnscope: editing any of it reruns the step."""
    here = Path.cwd()
    return [
        os.path.relpath(p, here) if p.is_relative_to(here) else str(p)
        for p in closure(f"cnnscope.steps.{step}")
    ]


def model_files(wildcards):
    """What loading the model reads: the trained checkpoint, the fetched weights, or the user's own
    checkpoint and class-names files (a changed file reruns the jobs that load it)."""
    name = wildcards.model
    trained = STUDY.train_artifact_of(
        name
    )  # a model trained here, or a snapshot of one
    if trained:
        return [trained]
    if STUDY.fetched(name):
        return [STUDY.artifact("weights", model=name)]
    spec = PLAN["models"][name]
    return [f for f in (spec["checkpoint"], spec["classes"]) if f is not None]


def stage_inputs(stage):
    """The rule's named inputs, from the stage's declaration (an optional input a job lacks is [])."""

    def source(given):
        if given.stages[0] == MODEL_FILES:
            return model_files
        if given.stages[0] == EVERY_JOB:
            return [STUDY.artifact(s, **wc) for s, wc in STUDY.all_jobs()]

        def path(wildcards):
            found = STUDY.source(given, dict(wildcards.items()))
            if found is None and not given.optional:
                raise WorkflowError(
                    f"{stage.name}: no job makes its input {given.name}"
                )
            return found or []

        return path

    return {given.name: source(given) for given in stage.inputs}


def step_params(stage):
    """Rule params: the step's `module`; `cfg`, the job's composed config as plain values (tracked:
    a changed setting reruns the job); and `args`, its command line: the job's settings, the inputs its
    declaration binds to step settings, its output and threads (a cluster job's cpus_per_task, where
    the step may use them all), each quoted for Hydra and the shell.
    """
    step = stage.name
    bound = {given.name: given.setting for given in stage.inputs if given.setting}

    def cfg(wildcards):
        return PLAN["composed"][
            json.dumps([step, STUDY.job_items(step, dict(wildcards.items()))])
        ]

    def args(wildcards, input, output, threads, resources):
        io = {bound[k]: v for k, v in input.items() if k in bound and v}
        io["out"] = output[0]
        if stage.threads:
            job = resources.get("cpus_per_task") if stage.threads == "all" else None
            io["threads"] = int(job) if job else threads
        items = STUDY.job_items(step, dict(wildcards.items()))
        return shell_args([*items, *overrides(io)])

    return {"module": f"cnnscope.steps.{step}", "cfg": cfg, "args": args}


def step_threads(stage):
    """A CPU step's threads: every core of a local run (Snakemake gives a job at most --cores), or
    the study's job_threads where fewer, one for the other steps and for those whose results depend
    on the thread count (training). A cluster job uses the cpus_per_task it was given instead
    (`step_params` passes them on), never more.
    """
    if stage.threads != "all":
        return 1
    cores = workflow.resource_settings.cores or 1
    return min(cores, STUDY.job_threads or cores)


def step_priority(stage):
    """The job's priority from its declaration (0 where it declares none)."""
    if stage.priority is None:
        return 0
    return lambda wildcards: stage.priority(STUDY, dict(wildcards.items()))


def step_resources(stage):
    """A GPU for the steps that run on a device, when the study asks for one (`gpu: true`)."""
    return {"gpu": int(bool(config.get("gpu", False)))} if stage.device else {}


def stage_output(stage):
    """The artifact folder; the report's is Snakemake's report entry too (its figures)."""
    out = directory(STUDY.artifact(stage.name))
    if stage.name != "report":
        return out
    return report(
        out,
        patterns=["figures/{name}.png"],
        category="cnnscope study report",
        caption="../report/figure.rst",
    )


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    model="[A-Za-z0-9_][A-Za-z0-9_.-]*(@[0-9]+)?",
    layer="[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*",
