# Helpers shared by the rules: config validation, per-job Hydra configs, paths.
import os
import sys
from pathlib import Path

from snakemake.utils import validate

from cnnscope.errors import CnnscopeError
from cnnscope.models.registry import ModelSpec, check_layers
from cnnscope.steps.compose import compose_step, hydra_value, overrides, shell_args

validate(config, schema="../schemas/config.schema.yaml")

# Steps run as `python -m cnnscope.steps.<step>`: this interpreter's directory goes first on PATH so
# they run in the environment Snakemake runs in (under --use-conda, the rule's env comes first).
os.environ["PATH"] = os.pathsep.join(
    [str(Path(sys.executable).parent), os.environ.get("PATH", "")]
)
ENV = "../envs/cnnscope.yaml"
ROOT = Path(workflow.basedir)
DATASET = config["dataset"]
DATA_DIR = config.get("data_dir", "data")
GPU = 1 if config.get("gpu", False) else 0
MODELS = {m["name"]: m for m in config["models"]}
PACKED = f"results/prepare/{DATASET}"
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

# Source files each step runs: inputs, so editing them reruns the step (`python -m` is not
# seen by Snakemake's code trigger on its own).
_LIB = "src/cnnscope"
CODE = {
    "synthworld": ["data/synthworld.py", "data/render.py"],
    "download": ["data/download.py", "data/broden.py"],
    "prepare": ["data/packed.py", "data/broden.py"],
    "train": [
        "training.py",
        "models/builtin.py",
        "data/synthworld.py",
        "data/render.py",
    ],
    "extract": ["features.py", "models/registry.py", "models/builtin.py"],
    "dissect": ["dissection.py", "quantile.py", "data/packed.py"],
    "stimuli": ["data/shapetexture.py", "shapebias/stimuli.py", "data/download.py"],
    "cueconflict": [
        "shapebias/evaluate.py",
        "shapebias/decisions.py",
        "shapebias/classes.py",
        "shapebias/analysis.py",
        "shapebias/stimuli.py",
        "models/registry.py",
    ],
    "attribution": [
        "attribution/suite.py",
        "attribution/base.py",
        "attribution/cam.py",
        "attribution/backprop.py",
        "attribution/metrics.py",
        "models/registry.py",
    ],
    "featurevis": ["featurevis.py", "features.py", "models/registry.py"],
    "report": ["report.py", "plots.py", "shapebias/analysis.py"],
}


def code(step):
    # steps/schema.py is left out: params carry each step's composed config, defaults included.
    shared = ["steps/runner.py", "io.py"]
    return [f"{_LIB}/{p}" for p in [f"steps/{step}.py", *CODE[step], *shared]]


def study_overrides(step):
    """The study's overrides for every job of `step` (config.yaml `steps.<step>`)."""
    return overrides(config.get("steps", {}).get(step) or {})


def model_overrides(name):
    """Select the model's config group and apply its overrides and checkpoint."""
    m = MODELS[name]
    items = [
        f"model={m['model']}",
        *overrides({f"model.{k}": v for k, v in m.get("overrides", {}).items()}),
    ]
    if m.get("train"):
        items.append(f"model.checkpoint='results/train/{name}/model.pt'")
    elif m.get("checkpoint"):
        items.append(f"model.checkpoint={m['checkpoint']!r}")
    return items


def train_items(wc):
    regime = MODELS[wc.model].get("regime", "standard")
    return [
        *model_overrides(wc.model),
        f"train.regime={regime}",
        *study_overrides("train"),
    ]


def stimuli_items():
    items = [f"source={CC['stimuli']}", f"cache_dir={DATA_DIR}/downloads"]
    if CC.get("path"):
        items.append(f"path={hydra_value(CC['path'])}")
    return [*items, *study_overrides("stimuli")]


def cueconflict_items(wc):
    return [
        *model_overrides(wc.model),
        f"name={wc.model}",
        f"classes={CC['classes']}",
        *study_overrides("cueconflict"),
    ]


def cam_layer(name):
    return MODELS[name].get("cam_layer", MODELS[name]["layers"][-1])


def attribution_items(wc):
    return [
        *model_overrides(wc.model),
        f"name={wc.model}",
        f"layer={cam_layer(wc.model)}",
        *study_overrides("attribution"),
    ]


def featurevis_items(wc):
    return [
        *model_overrides(wc.model),
        f"layer={wc.layer}",
        *study_overrides("featurevis"),
    ]


def reference_dirs():
    """Reference raw-data folders, inside the stimuli set unless given as absolute paths."""
    refs = CC.get("references", []) if CC else []
    return [r if os.path.isabs(r) else f"results/stimuli/{STIMSET}/{r}" for r in refs]


def step_params(step, items):
    """Rule params: `cfg` (plain dict, tracked by Snakemake) and `args` (for the shell)."""
    return {"cfg": compose_step(step, items), "args": shell_args(items)}


def dataset_dir(wildcards):
    if wildcards.dataset == "synthworld":
        return f"results/synthworld/{wildcards.dataset}"
    return f"{DATA_DIR}/{wildcards.dataset}"


def extract_items(wc):
    return [
        *model_overrides(wc.model),
        f"layer={wc.layer}",
        *study_overrides("extract"),
    ]


def checkpoint_input(wildcards):
    return (
        [f"results/train/{wildcards.model}"]
        if MODELS[wildcards.model].get("train")
        else []
    )


def layer_targets():
    return [(name, layer) for name, m in MODELS.items() for layer in m["layers"]]


def _check_study():
    """Fail before any job on an unknown model, layer or untrainable model."""
    for name, m in MODELS.items():
        try:
            spec = ModelSpec(**compose_step("extract", model_overrides(name))["model"])
        except CnnscopeError:
            raise
        except Exception as e:
            raise ValueError(
                f"study config: model {name!r} -> config/model/{m['model']}.yaml: {e}"
            ) from e
        if m.get("train") and spec.source != "builtin":
            raise ValueError(
                f"study config: model {name!r} has train: true but is not built-in"
            )
        check_layers(spec, [*m["layers"], cam_layer(name)], name)
        if name in CC_MODELS and (CC["classes"] == "world") != bool(m.get("train")):
            raise ValueError(
                f"study config: model {name!r} cannot decide among cue_conflict classes "
                f"{CC['classes']!r}: world classes need a model trained in the pipeline, imagenet "
                f"classes an ImageNet model; set cue_conflict: false on the model or change classes"
            )


try:
    _check_study()
except CnnscopeError as e:
    raise WorkflowError(f"study config: {e}") from None


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    model="[A-Za-z0-9_.-]+",
    layer="[A-Za-z0-9_.]+",
