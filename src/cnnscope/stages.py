"""The study's stages, each declared once, and what a study makes of them.

A :class:`Stage` says everything the workflow and the report need to know about one step: its
wildcards (one job per dataset, model, layer, stimulus set...), its inputs, each bound by name to the
step setting it fills (or to none: a dependency only), which jobs a study asks of it, the settings
each job gets from the study, its threads and whether it runs on a device, and whether the report
reads its artifact. The workflow generates one rule per declaration (``workflow/rules/stages.smk``);
:class:`Study` derives every job, path and the report's inputs from them; the tests derive their
expected job counts from them too. Nothing here imports torch, Hydra or Snakemake, so parsing the DAG
and the tests stay cheap.

Adding a stage: its library module, its step module (``cnnscope.steps.<name>``), one :class:`Stage`
in :data:`STAGES`, its report section, and its test (README, "Adding a stage").
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from cnnscope.artifacts import TrainArtifact
from cnnscope.overrides import hydra_value, model_items, overrides

MODEL_FILES = "model_files"  # what loading the job's model reads (checkpoint, fetched weights, files)
EVERY_JOB = "jobs"  # the artifact of every other job of the study (the report's input)


@dataclass(frozen=True)
class In:
    """One input of a stage: the artifact of the first of ``stages`` that has a job for the same
    wildcards (or :data:`MODEL_FILES`), filling the step setting ``setting`` (``None``: the step finds
    it otherwise, e.g. through its model config). ``optional``: a job without it runs without it.
    ``other``: the job reads the artifact of the model this names (``None``: of none) instead of its
    own: featurevis at a snapshot reads the final model's units (:meth:`Study.final_model`), the
    sanity check its permuted-label twin's weights (:meth:`Study.random_labels_twin`)."""

    stages: tuple[str, ...]
    setting: str | None = None
    optional: bool = False
    other: Callable[[Study, str], str | None] | None = None

    @property
    def name(self) -> str:
        """The rule input's name: the setting it fills, else its first source."""
        return self.setting or self.stages[0]


def _in(
    *stages: str,
    setting: str | None = None,
    optional: bool = False,
    other: Callable[[Study, str], str | None] | None = None,
) -> In:
    return In(stages, setting, optional, other)


@dataclass(frozen=True)
class Stage:
    """One step of the study (see the module docstring).

    ``doc``: what it does, a line of README's table of stages (:func:`stage_table`).
    ``wildcards``: the job's wildcards, in path order. ``jobs``: the study's jobs of this stage (an empty
    list turns it off). ``items``: the job's settings from the study, as Hydra overrides (the study's
    ``steps.<name>`` overrides follow them). ``threads``: ``None`` for a step without a ``threads``
    setting; ``"one"`` for one thread, where the result's bytes depend on the thread count (the backward
    pass sums gradients in another order: training, Net2Vec's and L-CAM's learned weights;
    ``tests/test_threads.py``), so that every machine learns the same bytes; ``"all"`` for every core of
    the run (at most the study's ``job_threads``) or of its cluster job. ``priority``: the job's
    Snakemake priority (``None``: 0), where the order of jobs ready together matters: the longest
    chains first. ``device``: it runs on a GPU when the study has ``gpu: true``.
    ``loads_model``: it loads the job's model (the model's settings, and :data:`MODEL_FILES` as an
    input). ``local``: it runs on the submit host (it needs the network). ``report``: the report reads
    its artifact. ``root``: ``"data"`` for artifacts kept outside ``results/`` (downloads).
    """

    name: str
    doc: str
    wildcards: tuple[str, ...]
    jobs: Callable[[Study], list[dict[str, str]]]
    inputs: tuple[In, ...] = ()
    items: Callable[[Study, dict[str, str]], list[str]] = lambda study, wc: []
    threads: Literal["one", "all"] | None = None
    priority: Callable[[Study, dict[str, str]], int] | None = None
    device: bool = False
    loads_model: bool = False
    local: bool = False
    report: bool = False
    root: Literal["results", "data"] = "results"
    constraints: dict[str, str] = field(default_factory=dict)

    @property
    def per_layer(self) -> bool:
        return "layer" in self.wildcards


class Study:
    """A study config (``config/config.yaml``'s keys, already validated against the study schema) and
    everything derived from it: models, the stages it runs, their jobs, paths and settings.

    ``fetched(name)``: whether the model's weights come from the network (the workflow composes the
    model to know); without it no model is fetched."""

    def __init__(self, config: dict[str, Any], fetched: Callable[[str], bool] = lambda name: False) -> None:
        self.config = config
        self.fetched = fetched
        self.dataset: str = config["dataset"]
        self.data_dir: str = config.get("data_dir", "data")
        self.downloads = os.path.join(self.data_dir, "downloads")  # the archive cache of every download
        self.entries = _repeat_models(config["models"])  # the study's models, each repeat on its own
        self.models: dict[str, dict[str, Any]] = {m["name"]: m for m in self.entries}
        self.models.update(_snapshot_models(self.entries))
        self.cc: dict[str, Any] | None = config.get("cue_conflict")
        self.attr: dict[str, Any] | None = config.get("attribution")
        self.stimset = (
            (self.cc["stimuli"] if self.cc["stimuli"] == "world" else "texture-vs-shape") if self.cc else None
        )
        self.net2vec = bool(config.get("net2vec", True))
        self.formulas = bool(config.get("formulas", True))
        self.featurevis = bool(self.attr is not None and self.attr.get("featurevis", True))
        self.snapshot_featurevis = self.featurevis and bool(self.attr.get("snapshot_featurevis", False))
        self.decoder = self.featurevis and bool(self.attr.get("decoder", True))
        self.lcam = bool(self.attr is not None and self.attr.get("lcam", True))
        self.job_threads: int | None = config.get("job_threads")  # None: every core of the run
        self._jobs: dict[str, list[dict[str, str]]] = {}

    # --- models ------------------------------------------------------------------------------------
    def trained(self) -> list[str]:
        return [n for n, m in self.models.items() if m.get("train")]

    def cc_models(self) -> list[str]:
        return [n for n, m in self.models.items() if self.cc and m.get("cue_conflict", True)]

    def robustness_models(self) -> list[str]:
        """The cue-conflict models but snapshots, under distortions, where there are images to distort:
        the world's originals, or the study's ``robustness_images`` folder (the real checkout ships
        none)."""
        cc = self.cc or {}
        if not cc.get("robustness", True) or not (self.stimset == "world" or cc.get("robustness_images")):
            return []
        return [m for m in self.cc_models() if "snapshot_of" not in self.models[m]]

    def attr_models(self) -> list[str]:
        return [n for n, m in self.models.items() if self.attr is not None and m.get("attribution", True)]

    def featurevis_models(self) -> list[str]:
        """The attributed models and their snapshots (a snapshot is never attributed itself)."""
        attributed = set(self.attr_models())
        return [m for m in self.models if self.final_model(m) in attributed]

    def lcam_models(self) -> list[str]:
        """L-CAM needs a model's training images: the world's for the models trained here, else the
        study's ``lcam_data`` folder; the other models are compared without L-CAM (the report says so)."""
        data = self.attr.get("lcam_data") if self.attr else None
        return [n for n in self.attr_models() if self.lcam and (self.models[n].get("train") or data)]

    def layer_targets(self, snapshots: bool = True) -> list[tuple[str, str]]:
        """Every (model, layer) to dissect; ``snapshots``: with the snapshot models'."""
        return [
            (name, layer)
            for name, m in self.models.items()
            if snapshots or "snapshot_of" not in m
            for layer in m["layers"]
        ]

    def train_artifact_of(self, name: str) -> str | None:
        """The train artifact that holds the model's weights: its own (``train: true``), or its base
        model's for a snapshot of a model trained here; ``None`` for the others."""
        base = self.models[self.models[name].get("snapshot_of", name)]
        return self.artifact("train", model=base["name"]) if base.get("train") else None

    def final_model(self, name: str) -> str:
        """The model a snapshot was kept from (a model that is no snapshot: itself)."""
        return self.models[name].get("snapshot_of", name)

    def tcav_models(self) -> list[str]:
        """The attribution models trained here: TCAV tests the world's concepts, whose classes they have."""
        return [m for m in self.attr_models() if self.models[m].get("train")]

    def random_labels_twin(self, name: str) -> str | None:
        """The model the sanity check compares ``name``'s maps with (Adebayo et al.'s data randomisation):
        the study's first model trained here on permuted labels (``labels: permuted``) with the same
        model config and overrides; ``None`` for snapshots, for such models themselves and where there
        is none."""
        m = self.models[name]
        if "snapshot_of" in m or m.get("labels") == "permuted":
            return None
        config = (m["model"], m.get("overrides") or {})
        twins = [
            n
            for n, t in self.models.items()
            if t.get("train")
            and t.get("labels") == "permuted"
            and (t["model"], t.get("overrides") or {}) == config
        ]
        return twins[0] if twins else None

    def cam_layer(self, name: str) -> str:
        return self.models[name].get("cam_layer", self.models[name]["layers"][-1])

    # --- paths -------------------------------------------------------------------------------------
    def _path(self, parts: list[str], stage: str, suffix: str = "", **wildcards: str) -> str:
        pattern = "/".join([*parts, *(f"{{{w}}}" for w in STAGES[stage].wildcards)]) + suffix
        return pattern.format(**wildcards) if wildcards else pattern

    def artifact(self, stage: str, **wildcards: str) -> str:
        """The stage's artifact: its path pattern, or one job's path given its wildcards (real datasets
        live outside results/, in data_dir)."""
        parts = [self.data_dir] if STAGES[stage].root == "data" else ["results", stage]
        return self._path(parts, stage, **wildcards)

    def log_file(self, stage: str, **wildcards: str) -> str:
        return self._path(["results/logs", stage], stage, ".log", **wildcards)

    def benchmark_file(self, stage: str, **wildcards: str) -> str:
        return self._path(["results/benchmarks", stage], stage, ".tsv", **wildcards)

    def trained_model(self, name: str) -> str:
        return str(TrainArtifact(self.artifact("train", model=name)).model)

    # --- jobs --------------------------------------------------------------------------------------
    def jobs(self, stage: str) -> list[dict[str, str]]:
        """The study's jobs of ``stage`` (derived once: every input and report entry asks)."""
        if stage not in self._jobs:
            self._jobs[stage] = STAGES[stage].jobs(self)
        return self._jobs[stage]

    def all_jobs(self) -> list[tuple[str, dict[str, str]]]:
        """Every job of the study but the report's, as ``(stage, wildcards)``, in declaration order."""
        return [(s, wc) for s in STAGES if s != "report" for wc in self.jobs(s)]

    def model_jobs(self, name: str) -> int:
        """How many of the study's jobs work on the model or its snapshots: training's priority, so
        that on a few cores the models most of the study waits for train first and a control (the
        permuted-label model, a few jobs) trains beside their downstream jobs."""
        own = {m for m, entry in self.models.items() if self.final_model(m) == name}
        return sum(wc.get("model") in own for _, wc in self.all_jobs())

    def has_job(self, stage: str, wildcards: dict[str, str]) -> bool:
        keys = STAGES[stage].wildcards
        return any(all(wc[k] == wildcards.get(k) for k in keys) for wc in self.jobs(stage))

    def source(self, given: In, wildcards: dict[str, str]) -> str | None:
        """The artifact an input refers to for one job (``None``: no stage of it has that job)."""
        if given.other is not None:
            other = given.other(self, wildcards["model"])
            if other is None:
                return None
            wildcards = {**wildcards, "model": other}
        for stage in given.stages:
            if self.has_job(stage, wildcards):
                return self.artifact(stage, **{k: wildcards[k] for k in STAGES[stage].wildcards})
        return None

    # --- settings ----------------------------------------------------------------------------------
    def study_overrides(self, stage: str) -> list[str]:
        """The study's overrides for every job of ``stage`` (``steps.<stage>``)."""
        return overrides((self.config.get("steps") or {}).get(stage) or {})

    def model_overrides(self, name: str) -> list[str]:
        """Select the model's config group and apply its overrides and checkpoint."""
        m = self.models[name]
        items = [f"model={m['model']}", *model_items(m.get("overrides", {}))]
        if m.get("train"):
            items.append(f"model.checkpoint={hydra_value(self.trained_model(name))}")
        elif "snapshot_of" in m and "checkpoint" not in m:  # a snapshot of a model trained here
            kept = TrainArtifact(self.train_artifact_of(name)).snapshot(m["step"])
            items.append(f"model.checkpoint={hydra_value(str(kept))}")
        elif m.get("checkpoint"):
            items.append(f"model.checkpoint={hydra_value(m['checkpoint'])}")
        return items

    def job_items(self, stage: str, wildcards: dict[str, str]) -> list[str]:
        """All of one job's settings: its model's, the study's for the stage, then the job's own (the
        more specific last, so that a model's ``training`` settings win over ``steps.train``)."""
        s = STAGES[stage]
        model = self.model_overrides(wildcards["model"]) if s.loads_model else []
        return [*model, *self.study_overrides(stage), *s.items(self, wildcards)]

    def reference_dirs(self) -> list[str]:
        """Reference raw-data folders, inside the stimuli set unless given as absolute paths."""
        refs = self.cc.get("references", []) if self.cc else []
        stimuli = self.artifact("stimuli", stimset=self.stimset) if self.cc else ""
        return [r if os.path.isabs(r) else f"{stimuli}/{r}" for r in refs]

    def report_inputs(self) -> dict[str, Any]:
        """What the report reads (:class:`cnnscope.report.inputs.ReportInputs`): the artifacts of every
        stage declared ``report``, per layer or per model, and every job's benchmark file."""
        d = {"dataset": self.dataset}
        shown = [s for s in STAGES.values() if s.report]

        def made(stages: list[Stage], wc: dict[str, str]) -> dict[str, str]:
            """Each stage's artifact for these wildcards, where the study has that job."""
            return {
                s.name: self.artifact(s.name, **{k: wc[k] for k in s.wildcards})
                for s in stages
                if self.has_job(s.name, wc)
            }

        per_layer = [s for s in shown if s.per_layer]
        per_model = [s for s in shown if "model" in s.wildcards and not s.per_layer]

        def snapshot(m: str) -> dict[str, Any]:
            entry = self.models[m]
            return (
                {"snapshot_of": entry["snapshot_of"], "step": entry["step"]} if "snapshot_of" in entry else {}
            )

        def condition(m: str) -> dict[str, Any]:
            """A repeat's condition (``seeds``); the others are their own."""
            return {"condition": self.models[m]["condition"]} if self.models[m]["condition"] != m else {}

        layers = [
            {
                "model": m,
                "layer": layer,
                "artifacts": made(per_layer, {**d, "model": m, "layer": layer}),
                **snapshot(m),
            }
            for m, layer in self.layer_targets()
        ]
        models = [
            {
                "name": m,
                "artifacts": made(per_model, {**d, "model": m, "stimset": self.stimset or ""}),
                **snapshot(m),
                **condition(m),
            }
            for m in self.models
        ]
        return {
            "probe": self.dataset,
            "packed": self.artifact("prepare", **d),
            "layers": layers,
            "models": models,
            "stimuli": self.stimset,
            "references": self.reference_dirs(),
            "benchmarks": [{"step": s, "file": self.benchmark_file(s, **wc)} for s, wc in self.all_jobs()],
        }


def _dataset(stage: str) -> Callable[[Study], list[dict[str, str]]]:
    """The probe dataset's job of a data stage: the synthetic world's, or a download's."""

    def jobs(study: Study) -> list[dict[str, str]]:
        synthetic = study.dataset == "synthworld"
        return [{"dataset": study.dataset}] if synthetic == (stage == "synthworld") else []

    return jobs


def _layers(
    when: Callable[[Study], bool] = lambda study: True,
    snapshots: Callable[[Study], bool] = lambda study: False,
    models: Callable[[Study], list[str]] | None = None,
) -> Callable[[Study], list[dict[str, str]]]:
    """Per-layer jobs (where ``snapshots``: the snapshot models' too; ``models``: of those only)."""

    def jobs(study: Study) -> list[dict[str, str]]:
        if not when(study):
            return []
        targets = study.layer_targets(snapshots(study))
        if models is not None:
            keep = set(models(study))
            targets = [(m, layer) for m, layer in targets if m in keep]
        return [{"dataset": study.dataset, "model": m, "layer": layer} for m, layer in targets]

    return jobs


SNAPSHOT = "@"  # a snapshot model's name: <model>@<step>
REPEAT = "-seed"  # a repeat's name: <model>-seed<k>


def _repeat_models(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The study's model entries with each entry that lists ``seeds`` replaced by its repeats: the same
    condition (architecture, settings, training) initialised from each seed (the model config's
    ``seed``), named ``<model>-seed<k>`` and grouped as the condition ``<model>`` (Bau et al. 2017,
    §4.2: repeated random initialisations). Every entry names its ``condition``: its own name when it
    is no repeat."""
    out = []
    for m in models:
        if not m.get("seeds"):
            out.append({**m, "condition": m["name"]})
            continue
        base = {k: v for k, v in m.items() if k != "seeds"}
        out += [
            {
                **base,
                "name": f"{m['name']}{REPEAT}{seed}",
                "overrides": {**(m.get("overrides") or {}), "seed": seed},
                "condition": m["name"],
            }
            for seed in m["seeds"]
        ]
    return out


def _snapshot_models(models: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A model entry of each snapshot (``models[].snapshots``): studied like a model of its own (its
    layers dissected, its cue conflict evaluated), named ``<model>@<step>``, its weights the train
    stage's snapshot (a model trained here: ``snapshots`` lists steps) or a checkpoint of a run
    trained elsewhere (``snapshots`` lists ``{step, checkpoint}``)."""
    out = {}
    for m in models:
        for kept in m.get("snapshots", []):
            step = kept if isinstance(kept, int) else kept["step"]
            name = f"{m['name']}{SNAPSHOT}{step}"
            entry = {
                "name": name,
                "model": m["model"],
                "layers": m["layers"],
                "overrides": m.get("overrides", {}),
                "cue_conflict": m.get("cue_conflict", True),
                "attribution": False,
                "condition": m["condition"],
                "snapshot_of": m["name"],
                "step": step,
            }
            if not isinstance(kept, int):
                entry["checkpoint"] = kept["checkpoint"]
            out[name] = entry
    return out


def _per_model(models: Callable[[Study], list[str]], **more: Callable[[Study], str]):
    def jobs(study: Study) -> list[dict[str, str]]:
        return [{**{k: f(study) for k, f in more.items()}, "model": m} for m in models(study)]

    return jobs


def _named(study: Study, wc: dict[str, str]) -> list[str]:
    return [f"name={hydra_value(wc['model'])}", f"layer={hydra_value(study.cam_layer(wc['model']))}"]


def _attribution_items(study: Study, wc: dict[str, str]) -> list[str]:
    """The model's name and CAM layer; a model trained here is also localised on the world's originals,
    whose object masks are known."""
    world = ["localisation.world=true"] if study.models[wc["model"]].get("train") else []
    return [*_named(study, wc), *world]


def _world_data(study: Study, name: str) -> list[str]:
    """A world model's decoder learns from the world in its regime; others' from the probe set."""
    m = study.models[name]
    return overrides({"data": "world", "regime": m.get("regime", "standard")}) if m.get("train") else []


def _lcam_data(study: Study, name: str) -> list[str]:
    """What the model's L-CAM trains on: the world in its regime, or the study's image folder."""
    if study.models[name].get("train"):
        return _world_data(study, name)
    data = study.attr.get("lcam_data") if study.attr else None
    return overrides({"data": data}) if data else []


def _stimuli_items(study: Study, wc: dict[str, str]) -> list[str]:
    cc = study.cc or {}
    path = [f"path={hydra_value(cc['path'])}"] if cc.get("path") else []
    return [f"source={cc['stimuli']}", f"cache_dir={hydra_value(study.downloads)}", *path]


def _decider_items(study: Study, wc: dict[str, str]) -> list[str]:
    """The decision-maker's name in the raw-data tables and its decision space."""
    return [f"name={hydra_value(wc['model'])}", f"classes={(study.cc or {})['classes']}"]


def _robustness_items(study: Study, wc: dict[str, str]) -> list[str]:
    """The decision-maker's items, and a real study's image folder."""
    cc = study.cc or {}
    images = [f"images={hydra_value(cc['robustness_images'])}"] if study.stimset != "world" else []
    return [*_decider_items(study, wc), *images]


def _train_items(study: Study, wc: dict[str, str]) -> list[str]:
    """A trained model's regime, labels and own training settings (``training``), and the steps whose
    weights it keeps (its snapshots)."""
    m = study.models[wc["model"]]
    given = {f"train.{k}": v for k, v in (m.get("training") or {}).items()}
    given.update({f"train.{k}": m[k] for k in ("regime", "labels") if k in m})
    if m.get("snapshots"):
        given["train.snapshots"] = sorted(m["snapshots"])
    return overrides(given)


def _tcav_jobs(study: Study) -> list[dict[str, str]]:
    """Per layer of each model TCAV tests (:meth:`Study.tcav_models`): its ``tcav_layers``, default its
    dissected layers."""
    return [
        {"dataset": study.dataset, "model": m, "layer": layer}
        for m in study.tcav_models()
        for layer in study.models[m].get("tcav_layers", study.models[m]["layers"])
    ]


def _layer(study: Study, wc: dict[str, str]) -> list[str]:
    return [f"layer={hydra_value(wc['layer'])}"]


_DATASET = ("dataset",)
_LAYER = ("dataset", "model", "layer")
_PACKED = _in("prepare", setting="packed")
# What a step reads of one dissected layer: its activations, its dissection and the probe set.
_DISSECTED = (_in("extract", setting="activations"), _in("dissect", setting="dissect"), _PACKED)

# The study's stages in DAG order: each one's declaration is its whole wiring.
STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage(
            "synthworld",
            "draw the synthetic probe world in Broden format (offline)",
            _DATASET,
            _dataset("synthworld"),
            constraints={"dataset": "synthworld"},
        ),
        Stage(
            "download",
            "fetch (resumable, verified) and unpack a real Broden release (`config/dataset/`)",
            _DATASET,
            _dataset("download"),
            items=lambda study, wc: [f"dataset={wc['dataset']}", f"cache_dir={hydra_value(study.downloads)}"],
            local=True,
            root="data",
            constraints={"dataset": "broden1_(224|227|384)"},
        ),
        Stage(
            "prepare",
            "decode the probe set once into row files read without decoding",
            _DATASET,
            lambda study: [{"dataset": study.dataset}],
            inputs=(_in("synthworld", "download", setting="dataset_dir"),),
            threads="all",
        ),
        Stage(
            "weights",
            "fetch a model's pretrained weights once, on the submit host (compute nodes are often offline)",
            ("model",),
            _per_model(lambda study: [m for m in study.models if study.fetched(m)]),
            loads_model=True,
            local=True,
        ),
        Stage(
            "train",
            "train a built-in CNN (`config/model/`) on the shape/texture world, in its regime",
            ("model",),
            _per_model(Study.trained),
            items=_train_items,
            threads="one",
            priority=lambda study, wc: study.model_jobs(wc["model"]),
            loads_model=True,
            report=True,
        ),
        Stage(
            "extract",
            "one layer's activations over the probe set (float16), per-image unit maxima",
            _LAYER,
            _layers(snapshots=lambda study: True),
            inputs=(_PACKED, _in(MODEL_FILES)),
            items=_layer,
            threads="all",
            device=True,
            loads_model=True,
            report=True,
        ),
        Stage(
            "dissect",
            "Network Dissection of a layer: thresholds, IoU tally, unit labels, detectors",
            _LAYER,
            _layers(snapshots=lambda study: True),
            inputs=(_in("extract", setting="activations"), _PACKED),
            threads="all",
            device=True,
            report=True,
        ),
        Stage(
            "net2vec",
            "Net2Vec of a dissected layer: learned unit combinations per concept vs the best single unit",
            _LAYER,
            _layers(lambda study: study.net2vec),
            inputs=_DISSECTED,
            threads="one",
            device=True,
            report=True,
        ),
        Stage(
            "formulas",
            "compositional explanations of a dissected layer's units (Mu & Andreas 2020): each unit's best "
            "formula of concepts (AND, OR, AND NOT) per length by beam search, and the optimal pair",
            _LAYER,
            _layers(lambda study: study.formulas),
            inputs=_DISSECTED,
            threads="all",
            report=True,
        ),
        Stage(
            "featurevis",
            "activation maximization of a dissected layer's top units (at snapshots: the final model's "
            "units), their top images' DeconvNet projections, and inversions of probe images, for the "
            "attributed models and their snapshots",
            _LAYER,
            _layers(
                lambda study: study.featurevis,
                snapshots=lambda study: study.snapshot_featurevis,
                models=Study.featurevis_models,
            ),
            inputs=(
                _in("dissect", setting="dissection", other=Study.final_model),
                _in("extract", setting="activations"),
                _PACKED,
                _in(MODEL_FILES),
            ),
            items=_layer,
            threads="all",
            device=True,
            loads_model=True,
            report=True,
        ),
        Stage(
            "decoder",
            "learned inversion of a dissected layer (Dosovitskiy & Brox 2016): a decoder from its features "
            "to the image, its held-out error from intact, binarised and dropped-out features, and "
            "featurevis's units raised through it (DGN-AM, Nguyen et al. 2016)",
            _LAYER,
            _layers(lambda study: study.decoder, models=Study.featurevis_models),
            inputs=(
                _in("featurevis", setting="featurevis"),
                _in("extract", setting="activations"),
                _PACKED,
                _in(MODEL_FILES),
            ),
            items=lambda study, wc: [*_layer(study, wc), *_world_data(study, wc["model"])],
            threads="one",
            device=True,
            loads_model=True,
            report=True,
        ),
        Stage(
            "stimuli",
            "the stimulus types of Geirhos et al. 2019 (original, greyscale, silhouette, edges, texture, cue "
            "conflict): the world's, or the real ones (downloaded or local)",
            ("stimset",),
            lambda study: [{"stimset": study.stimset}] if study.cc else [],
            items=_stimuli_items,
            local=True,
        ),
        Stage(
            "cueconflict",
            "a model's decisions on every stimulus type, its accuracy per type and shape bias (Geirhos "
            "et al. 2019)",
            ("stimset", "model"),
            _per_model(Study.cc_models, stimset=lambda study: study.stimset),
            inputs=(_in("stimuli", setting="stimuli"), _in(MODEL_FILES)),
            items=_decider_items,
            threads="all",
            device=True,
            loads_model=True,
            report=True,
        ),
        Stage(
            "robustness",
            "a model's decisions under the distortions of Geirhos et al. (noise, contrast, low-/high-pass, "
            "phase, rotation) at the published levels: the world's originals, or a folder of images",
            ("stimset", "model"),
            _per_model(Study.robustness_models, stimset=lambda study: study.stimset),
            inputs=(_in("stimuli", setting="stimuli"), _in(MODEL_FILES)),
            items=_robustness_items,
            threads="all",
            device=True,
            loads_model=True,
            report=True,
        ),
        Stage(
            "lcam",
            "train a model's L-CAM attention modules (Fm, Img) on its training data",
            ("model",),
            _per_model(Study.lcam_models),
            inputs=(_in(MODEL_FILES),),
            items=lambda study, wc: [*_named(study, wc), *_lcam_data(study, wc["model"])],
            threads="one",
            device=True,
            loads_model=True,
        ),
        Stage(
            "attribution",
            "every attribution method's maps on probe images, their faithfulness metrics, and their "
            "localisation of the objects (the probe set's object masks; world models: the world's "
            "originals too)",
            ("dataset", "model"),
            _per_model(Study.attr_models, dataset=lambda study: study.dataset),
            inputs=(_PACKED, _in("lcam", setting="lcam", optional=True), _in(MODEL_FILES)),
            items=_attribution_items,
            threads="all",
            device=True,
            loads_model=True,
            report=True,
        ),
        Stage(
            "mistakes",
            "a model's misclassified images through its maps: Grad-CAM's and L-CAM's of the predicted "
            "against the true class, beside the top-1 against the top-2 class on images it gets right",
            ("model",),
            _per_model(Study.lcam_models),
            inputs=(_in("lcam", setting="lcam"), _in(MODEL_FILES)),
            items=lambda study, wc: [*_named(study, wc), *_lcam_data(study, wc["model"])],
            threads="all",
            device=True,
            loads_model=True,
            report=True,
        ),
        Stage(
            "sanity",
            "the sanity checks of Adebayo et al. 2018: each method's maps as the model's blocks are "
            "re-initialised from the top down, and those of the same architecture trained on permuted "
            "labels, against the trained model's",
            ("dataset", "model"),
            _per_model(Study.attr_models, dataset=lambda study: study.dataset),
            inputs=(
                _PACKED,
                _in(MODEL_FILES),
                _in("train", setting="random_labels", optional=True, other=Study.random_labels_twin),
            ),
            items=_named,
            threads="all",
            device=True,
            loads_model=True,
            report=True,
        ),
        Stage(
            "tcav",
            "TCAV (Kim et al. 2018) at a layer of a model trained here (its tcav_layers, default its "
            "dissected layers) of the world's concepts (each class's texture and shape) and the probe "
            "set's, with the paper's significance test against random concepts, and how the probe "
            "concepts' CAVs agree with the layer's Net2Vec embeddings",
            _LAYER,
            _tcav_jobs,
            inputs=(
                _in("train", setting="world"),
                _PACKED,
                _in("net2vec", setting="net2vec", optional=True),
                _in(MODEL_FILES),
            ),
            items=lambda study, wc: [f"name={hydra_value(wc['model'])}", *_layer(study, wc)],
            threads="all",
            device=True,
            loads_model=True,
            report=True,
        ),
        Stage(
            "report",
            "the study's HTML page over every job's results",
            (),
            lambda study: [{}],
            inputs=(_in(EVERY_JOB),),
            local=True,
            items=lambda study, wc: [
                f"inputs={hydra_value(study.report_inputs())}",
                f"study={hydra_value(json.dumps(study.config))}",
            ],
        ),
    ]
}


def stage_table() -> str:
    """The table of stages in README.md (``tests/test_stages.py`` keeps them equal; ``cnnscope stages``
    prints it): each stage, what it does, its artifact path and whether it may run on a GPU."""
    study = Study({"dataset": "<dataset>", "data_dir": "data", "models": []})
    rows = ["| stage | what it does | artifact | GPU |", "| --- | --- | --- | --- |"]
    for s in STAGES.values():
        path = study.artifact(s.name, **{w: f"<{w}>" for w in s.wildcards})
        rows.append(f"| `{s.name}` | {s.doc} | `{path}/` | {'yes' if s.device else ''} |")
    return "\n".join(rows) + "\n"
