# Helpers shared by the rules: the study's validation, its jobs and their paths, each rule's params.
import json
import os
import sys
from functools import cache, partial
from pathlib import Path
from types import SimpleNamespace

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from snakemake.utils import validate

from cnnscope.errors import CnnscopeError
from cnnscope.models.catalog import check_layers
from cnnscope.models.registry import (
    ModelSpec,
    needs_download,
    output_count,
    read_class_names,
)
from cnnscope.shapebias.classes import head_problem
from cnnscope.shapebias.evaluate import CLASS_SETS
from cnnscope.sources import closure
from cnnscope.steps.compose import (
    check_model_entry,
    compose_step,
    hydra_value,
    model_items,
    overrides,
    shell_args,
)
from cnnscope.steps.schema import fields, schema, uses_device
from cnnscope.training import MODEL_FILE

validate(config, schema="../schemas/config.schema.yaml")

# Steps run as `python -m cnnscope.steps.<step>`, in the environment Snakemake runs in: this
# interpreter's directory goes first on PATH (cluster jobs inherit it). Under --sdm conda every rule runs
# in envs/cnnscope.yaml instead, whose post-deploy script makes this cnnscope importable there.
os.environ["PATH"] = os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
)
ENV = "../envs/cnnscope.yaml"
# How each step is run (every job alike): its module, given the job's settings and paths.
STEP_SHELL = "python -m {params.module} {params.args} > {log:q} 2>&1"
DATASET = config["dataset"]
DATA_DIR = config.get("data_dir", "data")
DOWNLOADS = os.path.join(DATA_DIR, "downloads")  # the archive cache of every download
MODELS = {m["name"]: m for m in config["models"]}
CC = config.get("cue_conflict")
STIMSET = (
    (CC["stimuli"] if CC["stimuli"] == "world" else "texture-vs-shape") if CC else None
)
CC_MODELS = [n for n, m in MODELS.items() if CC and m.get("cue_conflict", True)]
ATTR = config.get("attribution")
ATTR_MODELS = [
    n for n, m in MODELS.items() if ATTR is not None and m.get("attribution", True)
]
FEATUREVIS = bool(ATTR is not None and ATTR.get("featurevis", True))
LCAM = bool(ATTR is not None and ATTR.get("lcam", True))
# L-CAM needs a model's training images: the world's for the models trained here, else the study's
# lcam_data folder; the other models are compared without L-CAM (the report says which).
LCAM_DATA = ATTR.get("lcam_data") if ATTR else None
LCAM_MODELS = [n for n in ATTR_MODELS if LCAM and (MODELS[n].get("train") or LCAM_DATA)]
NET2VEC = bool(config.get("net2vec", True))

# The wildcards of each step's artifact, log and benchmark paths: the one place paths are written.
WILDCARDS = {
    "synthworld": "{dataset}",
    "download": "{dataset}",
    "prepare": "{dataset}",
    "train": "{model}",
    "weights": "{model}",
    "extract": "{dataset}/{model}/{layer}",
    "dissect": "{dataset}/{model}/{layer}",
    "net2vec": "{dataset}/{model}/{layer}",
    "featurevis": "{dataset}/{model}/{layer}",
    "stimuli": "{stimset}",
    "cueconflict": "{stimset}/{model}",
    "attribution": "{dataset}/{model}",
    "lcam": "{model}",
    "report": "",
}


def _path(root, step, suffix="", **wildcards):
    pattern = f"{root}/{step}/{WILDCARDS[step]}".rstrip("/") + suffix
    return pattern.format(**wildcards) if wildcards else pattern


def artifact(step, **wildcards):
    """The step's artifact: its path pattern, or one job's path given all its wildcards."""
    if step == "download":  # real datasets live outside results/, in data_dir
        pattern = f"{DATA_DIR}/{WILDCARDS[step]}"
        return pattern.format(**wildcards) if wildcards else pattern
    return _path("results", step, **wildcards)


def log_file(step, **wildcards):
    return _path("results/logs", step, ".log", **wildcards)


def benchmark_file(step, **wildcards):
    return _path("results/benchmarks", step, ".tsv", **wildcards)


def code(step):
    """The step module's import closure within cnnscope: editing any of it reruns the step."""
    here = Path.cwd()
    return [
        os.path.relpath(p, here) if p.is_relative_to(here) else str(p)
        for p in closure(f"cnnscope.steps.{step}")
    ]


def study_overrides(step):
    """The study's overrides for every job of `step` (config.yaml `steps.<step>`)."""
    return overrides(config.get("steps", {}).get(step) or {})


def model_overrides(name):
    """Select the model's config group and apply its overrides and checkpoint."""
    m = MODELS[name]
    items = [
        f"model={m['model']}",
        *model_items(m.get("overrides", {})),
    ]
    if m.get("train"):
        items.append(f"model.checkpoint={hydra_value(trained_model(name))}")
    elif m.get("checkpoint"):
        items.append(f"model.checkpoint={hydra_value(m['checkpoint'])}")
    return items


def trained_model(name):
    return f"{artifact('train', model=name)}/{MODEL_FILE}"


def model_layer(wc):
    """A per-layer job's model and layer."""
    return [*model_overrides(wc.model), f"layer={hydra_value(wc.layer)}"]


def cam_layer(name):
    return MODELS[name].get("cam_layer", MODELS[name]["layers"][-1])


def layer_targets():
    return [(name, layer) for name, m in MODELS.items() for layer in m["layers"]]


def reference_dirs():
    """Reference raw-data folders, inside the stimuli set unless given as absolute paths."""
    refs = CC.get("references", []) if CC else []
    stimuli = artifact("stimuli", stimset=STIMSET) if CC else ""
    return [r if os.path.isabs(r) else f"{stimuli}/{r}" for r in refs]


def study_jobs():
    """Every job of the study but the report, as (step, wildcards)."""
    data = "synthworld" if DATASET == "synthworld" else "download"
    jobs = [(data, {"dataset": DATASET}), ("prepare", {"dataset": DATASET})]
    jobs += [("train", {"model": m}) for m, spec in MODELS.items() if spec.get("train")]
    jobs += [("weights", {"model": m}) for m in MODELS if fetched(m)]
    per_layer = ["extract", "dissect"]
    per_layer += (["net2vec"] if NET2VEC else []) + (
        ["featurevis"] if FEATUREVIS else []
    )
    for m, layer in layer_targets():
        jobs += [
            (s, {"dataset": DATASET, "model": m, "layer": layer}) for s in per_layer
        ]
    if CC:
        jobs.append(("stimuli", {"stimset": STIMSET}))
        jobs += [("cueconflict", {"stimset": STIMSET, "model": m}) for m in CC_MODELS]
    jobs += [("lcam", {"model": m}) for m in LCAM_MODELS]
    jobs += [("attribution", {"dataset": DATASET, "model": m}) for m in ATTR_MODELS]
    return jobs


def report_inputs():
    """What the report reads (cnnscope.report.inputs.ReportInputs), every path from `artifact`."""
    d = {"dataset": DATASET}
    layers = [
        {
            "model": m,
            "layer": layer,
            "dissect": artifact("dissect", **d, model=m, layer=layer),
            "extract": artifact("extract", **d, model=m, layer=layer),
            "net2vec": (
                artifact("net2vec", **d, model=m, layer=layer) if NET2VEC else None
            ),
            "featurevis": (
                artifact("featurevis", **d, model=m, layer=layer)
                if FEATUREVIS
                else None
            ),
        }
        for m, layer in layer_targets()
    ]
    models = [
        {
            "name": m,
            "train": artifact("train", model=m) if spec.get("train") else None,
            "cueconflict": (
                artifact("cueconflict", stimset=STIMSET, model=m)
                if m in CC_MODELS
                else None
            ),
            "attribution": (
                artifact("attribution", **d, model=m) if m in ATTR_MODELS else None
            ),
        }
        for m, spec in MODELS.items()
    ]
    benchmarks = [
        {"step": step, "file": benchmark_file(step, **wc)} for step, wc in study_jobs()
    ]
    return {
        "probe": DATASET,
        "packed": artifact("prepare", **d),
        "layers": layers,
        "models": models,
        "stimuli": STIMSET,
        "references": reference_dirs(),
        "benchmarks": benchmarks,
    }


# Each step's settings for one job (Hydra overrides), from the study and the job's wildcards.
ITEMS = {
    "synthworld": lambda wc: [],
    "download": lambda wc: [
        f"dataset={wc.dataset}",
        f"cache_dir={hydra_value(DOWNLOADS)}",
    ],
    "prepare": lambda wc: [],
    "weights": lambda wc: model_overrides(wc.model),
    "train": lambda wc: [
        *model_overrides(wc.model),
        *overrides(
            {"train.regime": MODELS[wc.model]["regime"]}
            if "regime" in MODELS[wc.model]
            else {}
        ),
    ],
    "extract": model_layer,
    "dissect": lambda wc: [],
    "net2vec": lambda wc: [],
    "featurevis": model_layer,
    "stimuli": lambda wc: [
        f"source={CC['stimuli']}",
        f"cache_dir={hydra_value(DOWNLOADS)}",
        *([f"path={hydra_value(CC['path'])}"] if CC.get("path") else []),
    ],
    "cueconflict": lambda wc: [
        *model_overrides(wc.model),
        f"name={hydra_value(wc.model)}",
        f"classes={CC['classes']}",
    ],
    "attribution": lambda wc: [
        *model_overrides(wc.model),
        f"name={hydra_value(wc.model)}",
        f"layer={hydra_value(cam_layer(wc.model))}",
    ],
    "lcam": lambda wc: [
        *model_overrides(wc.model),
        f"name={hydra_value(wc.model)}",
        f"layer={hydra_value(cam_layer(wc.model))}",
        *lcam_data(wc.model),
    ],
    "report": lambda wc: [
        f"inputs={hydra_value(report_inputs())}",
        f"study={hydra_value(json.dumps(config))}",
    ],
}


def job_items(step, wildcards):
    return [*ITEMS[step](wildcards), *study_overrides(step)]


@cache
def _composed(step, items):
    return compose_step(step, list(items))


def step_params(step):
    """Rule params: the step's `module`; `cfg`, the job's composed config as plain values (tracked:
    a changed setting reruns the job); and `args`, its command line: the job's settings, the named
    inputs that are step settings, its output and threads (a cluster job's cpus_per_task, where the
    step may use them all), each quoted for Hydra and the shell.
    """
    keys = fields(step)

    def cfg(wildcards):
        return _composed(step, tuple(job_items(step, wildcards)))

    def args(wildcards, input, output, threads, resources):
        io = {
            k: v for k, v in input.items() if k in keys and v
        }  # [] is an input the study lacks
        io["out"] = output[0]
        if "threads" in keys:
            job = resources.get("cpus_per_task") if schema(step).all_cores else None
            io["threads"] = int(job) if job else threads
        return shell_args([*job_items(step, wildcards), *overrides(io)])

    return {"module": f"cnnscope.steps.{step}", "cfg": cfg, "args": args}


def step_threads(step):
    """A CPU step's threads: every core of a local run (Snakemake gives a job at most --cores), one for
    the other steps and for those whose results depend on the thread count (training). A cluster job
    uses the cpus_per_task it was given instead (`step_params` passes them on), never more.
    """
    if "threads" not in fields(step) or not schema(step).all_cores:
        return 1
    return workflow.resource_settings.cores or 1


def step_resources(step):
    """A GPU for the steps that run on a device, when the study asks for one (`gpu: true`)."""
    return {"gpu": int(bool(config.get("gpu", False)))} if uses_device(step) else {}


@cache
def model_spec(name):
    """The model's composed spec (ModelSpec), as every job that loads it sees it."""
    return ModelSpec(**_composed("extract", tuple(model_overrides(name)))["model"])


def fetched(name):
    """Whether the model's weights come from the network (fetched once by the weights rule)."""
    return needs_download(model_spec(name))


def model_files(wildcards):
    """What loading the model reads: the trained checkpoint, the fetched weights, or the user's own
    checkpoint and class-names files (a changed file reruns the jobs that load it)."""
    name = wildcards.model
    if MODELS[name].get("train"):
        return [artifact("train", model=name)]
    if fetched(name):
        return [artifact("weights", model=name)]
    spec = model_spec(name)
    return [f for f in (spec.checkpoint, spec.classes) if f is not None]


def lcam_data(name):
    """What the model's L-CAM trains on: the world in its regime, or the study's image folder."""
    m = MODELS[name]
    if m.get("train"):
        return overrides({"data": "world", "regime": m.get("regime", "standard")})
    return overrides({"data": LCAM_DATA}) if LCAM_DATA else []


def lcam_input(wildcards):
    """The model's trained L-CAM attention, when the study trains one for it."""
    return (
        artifact("lcam", model=wildcards.model)
        if wildcards.model in LCAM_MODELS
        else []
    )


def dataset_dir(wildcards):
    step = "synthworld" if wildcards.dataset == "synthworld" else "download"
    return artifact(step, dataset=wildcards.dataset)


def _check_model(name, m):
    """One model of the study: its layers, its weights source, and a head that fits the cue-conflict
    decision space."""
    if len(set(m["layers"])) < len(m["layers"]):
        raise CnnscopeError(f"model {name!r} lists a layer twice: {m['layers']}")
    spec = model_spec(name)
    if m.get("train") and spec.source != "builtin":
        raise CnnscopeError(f"model {name!r} has train: true but is not built-in")
    if spec.source == "builtin" and not m.get("train") and spec.checkpoint is None:
        raise CnnscopeError(
            f"model {name!r} is built-in with neither train: true nor a checkpoint; "
            "give it one of them"
        )
    check_layers(spec, [*m["layers"], cam_layer(name)], name)
    if name in CC_MODELS:
        names = read_class_names(spec.classes) if spec.classes else None
        problem = head_problem(output_count(spec), CLASS_SETS[CC["classes"]], names)
        if problem:
            raise CnnscopeError(
                f"model {name!r} cannot decide among cue_conflict classes {CC['classes']!r}: "
                f"{problem}; set cue_conflict: false on the model or change classes"
            )


def _check_study():
    """Fail before any job on a duplicate model or layer, an unknown one, an untrainable model, a head
    that cannot decide the cue conflict, or any job setting that its step's schema refuses.
    """
    names = [m["name"] for m in config["models"]]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise CnnscopeError(
            f"model name(s) {', '.join(twice)} given twice; every model needs its own name"
        )
    for n, m in MODELS.items():  # before anything composes them (study_jobs does)
        check_model_entry(n, m["model"], m.get("overrides") or {})
    checks = [(f"models.{n}", partial(_check_model, n, m)) for n, m in MODELS.items()]
    checks += [
        (
            f"steps.{step}",
            partial(_composed, step, tuple(job_items(step, SimpleNamespace(**wc)))),
        )
        for step, wc in [*study_jobs(), ("report", {})]
    ]
    for where, check in checks:
        try:
            check()
        except (HydraException, OmegaConfBaseException) as e:
            why = f"{e}: {e.__cause__}" if e.__cause__ else str(e)
            raise CnnscopeError(f"{where}: {' '.join(why.split())}") from None
        except CnnscopeError as e:
            raise CnnscopeError(f"{where}: {e}") from None


# Once, in the process that plans the study (not again in each cluster job that runs one step).
if workflow.is_main_process:
    try:
        _check_study()
    except CnnscopeError as e:
        raise WorkflowError(f"study config: {e}") from None


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    model="[A-Za-z0-9_][A-Za-z0-9_.-]*",
    layer="[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*",
