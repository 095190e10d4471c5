"""What the report reads, and reading it: every artifact path comes from the workflow (the report
rule passes each one), so the report never builds a results path itself.

The dataclasses are also the schema of the report step's ``inputs`` config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cnnscope.artifacts import (
    AttributionArtifact,
    CueConflictArtifact,
    DissectArtifact,
    FeaturevisArtifact,
    FormulasArtifact,
    Net2VecArtifact,
    RobustnessArtifact,
    TrainArtifact,
)
from cnnscope.errors import CnnscopeError
from cnnscope.shapebias import analysis
from cnnscope.shapebias.distortions import DISTORTIONS
from cnnscope.shapebias.stimuli import STIMULUS_SETS

HUMANS = "humans"  # the pooled human observers of a reference folder


@dataclass
class LayerInputs:
    """One dissected layer's artifacts, by the stage that made them (every per-layer stage the report
    reads, :data:`cnnscope.stages.STAGES`; a stage the study skips is absent)."""

    model: str
    layer: str
    artifacts: dict[str, str] = field(default_factory=dict)
    snapshot_of: str | None = None  # a snapshot model's: the model it is a snapshot of, and its step
    step: int | None = None


@dataclass
class ModelInputs:
    """One model's artifacts beside its layers, by stage (training metrics, cue conflict, attribution:
    each absent when the study does not make it)."""

    name: str
    artifacts: dict[str, str] = field(default_factory=dict)
    snapshot_of: str | None = None  # a snapshot model's: the model it is a snapshot of, and its step
    step: int | None = None
    condition: str | None = None  # a repeat's (a study model's seeds): the condition it repeats


@dataclass
class BenchmarkFile:
    """Snakemake's benchmark file of one job of ``step`` (its wall time and peak memory)."""

    step: str
    file: str


@dataclass
class ReportInputs:
    """Everything the page shows: the packed probe set, layers and models in study order, the stimulus
    set's name, reference raw-data folders, and the benchmark files of the study's jobs by step."""

    probe: str
    packed: str
    layers: list[LayerInputs]
    models: list[ModelInputs]
    stimuli: str | None = None
    references: list[str] = field(default_factory=list)
    benchmarks: list[BenchmarkFile] = field(default_factory=list)


def artifacts(inputs: ReportInputs) -> list[tuple[str, str]]:
    """Every artifact the report reads, with the stage that makes it."""
    out = [(inputs.packed, "prepare")]
    for entry in [*inputs.layers, *inputs.models]:
        out += [(path, stage) for stage, path in entry.artifacts.items()]
    return out


@dataclass
class LayerResult:
    """A dissected layer as read from its artifacts; ``net2vec`` and ``net2vec_summary`` are its
    Net2Vec ``concepts.csv`` and ``summary.json``, ``None`` when the study skips Net2Vec."""

    model: str
    layer: str
    units: pd.DataFrame
    detectors: pd.DataFrame
    summary: dict
    detector_iou: float
    thresholds: np.ndarray
    extract_dir: Path
    featurevis_dir: Path | None
    net2vec: pd.DataFrame | None = None
    net2vec_summary: dict | None = None
    # The layer dissected in a random basis (rotation_seed): its units and detectors, as above.
    rotated_units: pd.DataFrame | None = None
    rotated_detectors: pd.DataFrame | None = None
    # Compositional explanations: each unit's best formula per length (formulas.csv), if the study made them.
    formulas: pd.DataFrame | None = None
    # The layer's learned inversion and DGN-AM (the decoder stage), if the study made them.
    decoder_dir: Path | None = None


def _require(path: Path, step: str, what: str) -> Path:
    if not path.is_file():
        raise CnnscopeError(f"{path} is missing; run the {step} step for {what}")
    return path


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def load_layer(entry: LayerInputs) -> LayerResult:
    """Read one dissected layer, with its Net2Vec results when the study makes them."""
    made = entry.artifacts
    d = DissectArtifact(made["dissect"])
    what = f"{entry.model}/{entry.layer}"
    n2v = Net2VecArtifact(made["net2vec"]) if "net2vec" in made else None
    return LayerResult(
        entry.model,
        entry.layer,
        pd.read_csv(_require(d.units, "dissect", what)),
        pd.read_csv(d.detectors),
        read_json(d.summary),
        float(yaml.safe_load(d.config.read_text())["detector_iou"]),
        np.load(d.thresholds),
        Path(made["extract"]),
        Path(made["featurevis"]) if "featurevis" in made else None,
        pd.read_csv(_require(n2v.concepts, "net2vec", what)) if n2v else None,
        read_json(n2v.summary) if n2v else None,
        pd.read_csv(d.rotated.units) if d.rotated.units.is_file() else None,
        pd.read_csv(d.rotated.detectors) if d.rotated.detectors.is_file() else None,
        pd.read_csv(FormulasArtifact(made["formulas"]).formulas) if "formulas" in made else None,
        Path(made["decoder"]) if "decoder" in made else None,
    )


def featurevis_units(r: LayerResult) -> dict[int, dict]:
    """The layer's visualised units: each one's label and IoU (at the dissection that chose it), the
    activation its image reached and the image's path; nothing when the layer was not visualised."""
    if r.featurevis_dir is None:
        return {}
    vis = FeaturevisArtifact(r.featurevis_dir)
    return {
        int(unit): {
            "label": t["label"],
            "iou": t["iou"],
            "activation": t["activation"][-1],
            "image": str(vis.unit_image(int(unit))),
        }
        for unit, t in read_json(_require(vis.traces, "featurevis", f"{r.model}/{r.layer}")).items()
    }


def train_steps(model: ModelInputs) -> int | None:
    """How many steps a model trained here was trained for (``None``: not trained here)."""
    train = model.artifacts.get("train")
    return int(yaml.safe_load(TrainArtifact(train).config.read_text())["train"]["steps"]) if train else None


def train_metrics(model: ModelInputs) -> dict:
    """The model's training metrics, or nothing for a model not trained in the pipeline."""
    train = model.artifacts.get("train")
    return read_json(TrainArtifact(train).metrics) if train else {}


def cue_conflict(model: ModelInputs) -> tuple[dict, pd.DataFrame]:
    """The model's cue-conflict summary and its cue-conflict trials."""
    d = CueConflictArtifact(model.artifacts["cueconflict"])
    summary = read_json(_require(d.summary, "cueconflict", model.name))
    return summary, pd.read_csv(d.decisions("cue-conflict"))


def stimulus_decisions(model: ModelInputs) -> pd.DataFrame:
    """The model's decisions on every stimulus type it was shown, with each type's ``experiment``."""
    d = CueConflictArtifact(model.artifacts["cueconflict"])
    return pd.concat(
        [
            pd.read_csv(d.decisions(name)).assign(experiment=s.experiment)
            for name, s in STIMULUS_SETS.items()
            if d.decisions(name).is_file()
        ],
        ignore_index=True,
    )


def robustness_greyscale(model: ModelInputs) -> bool:
    """Whether the model's distortions were applied to greyscale images (the papers'), or in colour."""
    d = RobustnessArtifact(model.artifacts["robustness"])
    return bool(read_json(_require(d.summary, "robustness", model.name))["greyscale"])


def robustness_decisions(model: ModelInputs) -> pd.DataFrame:
    """The model's decisions under every distortion it was tested on, with each one's ``experiment``."""
    d = RobustnessArtifact(model.artifacts["robustness"])
    frames = [
        pd.read_csv(d.decisions(name)).assign(experiment=dist.experiment)
        for name, dist in DISTORTIONS.items()
        if d.decisions(name).is_file()
    ]
    if not frames:
        raise CnnscopeError(f"{d.path} holds no decisions; rerun the robustness step for {model.name}")
    return pd.concat(frames, ignore_index=True)


def reference_decisions(folder: str) -> pd.DataFrame:
    """A reference folder's decisions, each file's experiment from its name; human observers
    (``subject-NN``) are pooled as one decision-maker, ``humans``."""
    df = analysis.read_decisions(Path(folder))
    human = df["subj"].astype(str).str.startswith("subject-")
    return df.assign(subj=df["subj"].where(~human, HUMANS))


def localisation(model: ModelInputs) -> pd.DataFrame | None:
    """The model's localisation table (pointing game, energy share), if the study localised it."""
    path = AttributionArtifact(model.artifacts["attribution"]).localisation
    return pd.read_csv(path) if path.is_file() else None


def attribution(
    model: ModelInputs,
) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray, AttributionArtifact]:
    """The model's attribution metrics, gallery maps, gallery image indices, and the artifact (its
    feature-grid and first-filter images)."""
    d = AttributionArtifact(model.artifacts["attribution"])
    metrics = pd.read_csv(_require(d.metrics, "attribution", model.name))
    return metrics, dict(np.load(d.maps)), np.load(d.images), d
