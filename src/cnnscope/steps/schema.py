"""Typed schemas of every step's config, registered in Hydra's ConfigStore.

Each ``config/<step>.yaml`` starts its defaults list with ``<step>_schema``, so a misspelt key or a
wrongly typed value (on the command line, in the YAML, or in the study config) fails before any work.
The Snakefile composes the same configs to pass each rule its own part as plain-dict params.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from cnnscope.data.synthworld import WorldSpec
from cnnscope.training import TrainParams


@dataclass
class ModelConfig:
    """Which network (see :class:`cnnscope.models.registry.ModelSpec`)."""

    source: str = "builtin"  # torchvision | builtin | checkpoint
    arch: str = MISSING
    weights: str | None = None  # torchvision weights enum member, or DEFAULT
    checkpoint: str | None = None
    num_classes: int | None = None
    width: int = 24
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass
class DatasetConfig:
    """A probe dataset: the synthetic world, or a real Broden release to download."""

    name: str = MISSING
    source: str = "broden"  # broden | synthworld
    url: str | None = None
    sha256: str | None = None  # expected archive digest, when known
    size_bytes: int | None = None  # expected archive size, when known


@dataclass
class SynthworldStep:
    world: WorldSpec = field(default_factory=WorldSpec)
    out: str = MISSING
    progress: bool = True


@dataclass
class DownloadStep:
    dataset: DatasetConfig = MISSING
    out: str = MISSING  # the unpacked dataset directory
    cache_dir: str = "data/downloads"  # where the (resumable) archive is kept
    timeout_s: float = 60.0
    retries: int = 3
    progress: bool = True


@dataclass
class PrepareStep:
    dataset_dir: str = MISSING
    out: str = MISSING
    workers: int = 2
    progress: bool = True


@dataclass
class TrainStep:
    model: ModelConfig = MISSING
    train: TrainParams = field(default_factory=TrainParams)
    out: str = MISSING
    checkpoint_s: float = 30.0  # seconds between checkpoints (a killed job resumes)
    threads: int = 1
    progress: bool = True


@dataclass
class ExtractStep:
    model: ModelConfig = MISSING
    layer: str = MISSING
    packed: str = MISSING
    out: str = MISSING
    batch_size: int = 64
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # autocast on the GPU
    store_dtype: str = "float16"  # float16 | float32
    checkpoint_s: float = 30.0  # how often progress is saved, so a killed job resumes
    threads: int = 1
    progress: bool = True


@dataclass
class DissectStep:
    activations: str = MISSING  # an extract step's output directory
    packed: str = MISSING
    out: str = MISSING
    quantile: float = 0.005  # top fraction of activations that is "on"
    iou_mode: str = "paper"  # paper (original NetDissect) | lite (NetDissect-Lite)
    detector_iou: float = 0.04
    device: str = "auto"
    batch_size: int = 0  # tally batch; 0: sized from max_elements
    max_elements: int = 0  # activations / mask pixels per batch; 0: 4M on the CPU, 64M on a GPU
    memory_budget_mb: int = 2048  # exact quantile buffer limit, else histogram
    checkpoint_s: float = 30.0  # seconds between checkpoints (a killed job resumes)
    threads: int = 1
    progress: bool = True


@dataclass
class WorldStimuli:
    """The built-in shape/texture world's stimulus sets (cnnscope.data.shapetexture)."""

    size: int = 64
    seed: int = 0
    poses: int = 5  # cue-conflict images per (shape, texture) pair
    singles: int = 10  # edge and silhouette images per class


@dataclass
class StimuliStep:
    source: str = "world"  # world | download | local
    world: WorldStimuli = field(default_factory=WorldStimuli)
    url: str = "https://github.com/rgeirhos/texture-vs-shape/archive/refs/heads/master.zip"
    sha256: str | None = None
    path: str | None = None  # a local texture-vs-shape checkout (source=local)
    cache_dir: str = "data/downloads"
    timeout_s: float = 60.0
    retries: int = 3
    out: str = MISSING
    progress: bool = True


@dataclass
class CueConflictStep:
    model: ModelConfig = MISSING
    name: str = MISSING  # the decision-maker's name in the raw-data tables
    stimuli: str = MISSING  # a stimuli step's output (texture-vs-shape layout)
    classes: str = "world"  # world (the 16 world shapes) | imagenet (the 16 ImageNet categories)
    out: str = MISSING
    batch_size: int = 64
    device: str = "auto"
    threads: int = 1
    progress: bool = True


@dataclass
class AttributionStep:
    model: ModelConfig = MISSING
    name: str = MISSING
    packed: str = MISSING  # probe images come from the packed dataset
    layer: str = MISSING  # the class-activation layer (the last conv block)
    methods: list[str] = field(
        default_factory=lambda: [
            "cam",
            "gradcam",
            "gradcam++",
            "counterfactual_gradcam",
            "guided_backprop",
            "deconvnet",
            "guided_gradcam",
            "guided_gradcam++",
        ]
    )
    images: int = 6  # gallery images (maps are kept for these)
    metric_images: int = 64  # images the metrics are averaged over (gallery included)
    deletion_steps: int = 16
    out: str = MISSING
    device: str = "auto"
    threads: int = 1


@dataclass
class FeaturevisStep:
    model: ModelConfig = MISSING
    dissection: str = MISSING  # a dissect step's output: its top units are visualised
    layer: str = MISSING
    units: int = 4
    size: int = 64
    steps: int = 128
    lr: float = 0.05
    param: str = "fourier"  # fourier | pixel
    seed: int = 0
    out: str = MISSING
    device: str = "auto"
    threads: int = 1


@dataclass
class ReportStep:
    layers: list[str] = MISSING  # "<model>/<layer>" entries
    probe: str = MISSING  # the probe dataset's name (results/dissect/<probe>/...)
    cue_conflict: list[str] = field(default_factory=list)  # models with cue-conflict results
    stimuli: str | None = None  # the stimulus set's name (results/cueconflict/<stimuli>/...)
    references: list[str] = field(default_factory=list)  # folders of raw-data CSVs
    attribution: list[str] = field(default_factory=list)  # models with attribution results
    study: str = ""  # the study config as JSON, shown on the page
    results: str = "results"
    packed: str = MISSING
    out: str = MISSING
    top_units: int = 8
    top_images: int = 5


STEP_SCHEMAS = {
    "synthworld": SynthworldStep,
    "download": DownloadStep,
    "prepare": PrepareStep,
    "train": TrainStep,
    "extract": ExtractStep,
    "dissect": DissectStep,
    "stimuli": StimuliStep,
    "cueconflict": CueConflictStep,
    "attribution": AttributionStep,
    "featurevis": FeaturevisStep,
    "report": ReportStep,
}


def register() -> None:
    """Register every step schema (as ``<step>_schema``) and the group schemas."""
    cs = ConfigStore.instance()
    for name, node in STEP_SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=node)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)


register()
