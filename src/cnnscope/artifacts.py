"""The file contract between stages: each stage's artifact folder and the files in it, named here once.

A stage's writer and every reader of its artifact (later steps, the report, ``cnnscope explain``, the
workflow) reach its files through the accessor below, ``ExtractArtifact(path).activations`` and so
on, so that no file name is spelled in two modules. Kept free of heavy imports, so that the workflow
can name files while it parses the DAG.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_FILE = "config.yaml"  # every artifact: the resolved config of the step that wrote it
PAGE = "index.html"  # report, and `cnnscope explain`: the HTML page


def _file(name: str, doc: str) -> property:
    """A property: the artifact's file ``name``."""
    return property(lambda self: self.path / name, doc=f"``{name}``: {doc}")


class Artifact:
    """A stage's artifact folder (subclasses name its files)."""

    config = _file(CONFIG_FILE, "the resolved config of the step that wrote it")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)


class TrainArtifact(Artifact):
    model = _file("model.pt", "the trained model (architecture name and state dict)")
    metrics = _file("metrics.json", "training and validation accuracy, losses, timings")

    def snapshot(self, step: int) -> Path:
        """The weights after ``step`` training steps (``train.snapshots``), as the model file holds them."""
        return self.path / "snapshots" / f"step{step}.pt"


class WeightsArtifact(Artifact):
    record = _file("weights.json", "which pretrained weights were fetched, and their digest")


class ExtractArtifact(Artifact):
    activations = _file("activations.npy", "(N, C, H, W) activations, one row per probe image")
    maxima = _file("maxima.npy", "(N, C) each unit's maximum per image")
    unit_range = _file("unit_range.npy", "(2, C) each unit's smallest and largest activation")
    meta = _file("meta.json", "shape, dtype, layer and device")
    progress = _file("progress.json", "how far a killed extraction got (work directory only)")


class DissectArtifact(Artifact):
    thresholds = _file("thresholds.npy", "(C,) each unit's activation threshold")
    thresholds_done = _file("thresholds.json", "the thresholds' method and error (work directory only)")
    units = _file("units.csv", "each unit's best concept and its IoU")
    detectors = _file("detectors.csv", "unique detectors per category")
    iou = _file("iou.npy", "(labels, C) IoU of every unit and concept")
    tally = _file("tally.npz", "the raw intersection and union counts")
    summary = _file("summary.json", "detector counts, threshold method, IoU mode")
    rotation = _file("rotation.npy", "(C, C) the orthogonal matrix of a rotated basis (in rotated/)")

    @property
    def rotated(self) -> DissectArtifact:
        """The layer dissected in a random orthogonal basis (``rotation_seed``), laid out the same."""
        return DissectArtifact(self.path / "rotated")


class Net2VecArtifact(Artifact):
    concepts = _file("concepts.csv", "per concept: single-unit and learned IoU and AP")
    neighbours = _file("neighbours.csv", "each concept's nearest concepts in embedding space")
    weights = _file("weights.npy", "(concepts, C) the segmentation embeddings")
    embeddings = _file(
        "embeddings.npz", "labels, biases, scales; the classification embeddings and their unit scales"
    )
    summary = _file("summary.json", "mean IoU and AP, single unit and learned")


class FormulasArtifact(Artifact):
    formulas = _file("formulas.csv", "per unit and formula length: the best formula, its IoU and counts")
    pairs = _file("pairs.csv", "per unit: beam search's length-2 formula against the exhaustive optimum")
    summary = _file("summary.json", "mean IoU per length, compound share, beam search's misses")


class FeaturevisArtifact(Artifact):
    traces = _file("traces.json", "each visualised unit's label, IoU and activation trace")
    inversions = _file("inversions.json", "the reconstructed probe images and their losses")

    def unit_image(self, unit: int) -> Path:
        """A unit's activation-maximisation image."""
        return self.path / f"unit_{unit}.png"

    def projection_image(self, unit: int) -> Path:
        """A unit's largest activation in each of its top images, projected to pixels (DeconvNet), above
        the image patch."""
        return self.path / f"projection_{unit}.png"

    def inversion_image(self, image: int) -> Path:
        """A probe image reconstructed from the layer."""
        return self.path / f"inversion_{image}.png"


class DecoderArtifact(Artifact):
    weights = _file("decoder.pt", "the trained decoder's state dict (cnnscope.decoder.Decoder)")
    errors = _file(
        "errors.csv", "held-out reconstruction error from intact, binarised and dropped-out features"
    )
    dgn = _file(
        "dgn.json", "per unit: its mean activation on the DGN-AM and pixel-AM images and best probe image"
    )
    losses = _file("losses.json", "the training loss at every step")

    def reconstruction_image(self, image: int) -> Path:
        """A probe image reconstructed by the decoder from intact, binarised and dropped-out features."""
        return self.path / f"reconstruction_{image}.png"

    def dgn_image(self, unit: int) -> Path:
        """A unit's activation-maximisation image through the decoder (DGN-AM)."""
        return self.path / f"dgn_{unit}.png"


class CueConflictArtifact(Artifact):
    summary = _file("summary.json", "shape bias, cue hits, cue fraction")

    def decisions(self, stimulus_set: str) -> Path:
        """The raw-data table of decisions on one stimulus set (e.g. ``cue-conflict``)."""
        return self.path / f"{stimulus_set}.csv"


class RobustnessArtifact(Artifact):
    summary = _file("summary.json", "per distortion: undistorted and distorted accuracy, half-accuracy level")

    def decisions(self, distortion: str) -> Path:
        """The raw-data rows of one distortion, every level (``condition``) of it."""
        return self.path / f"{distortion}.csv"


class LcamArtifact(Artifact):
    metrics = _file("metrics.json", "each variant's first and last training losses")

    def attention(self, variant: str) -> Path:
        """The trained attention module of an L-CAM variant (``fm``, ``img``)."""
        return self.path / f"attention_{variant}.pt"


class MistakesArtifact(Artifact):
    pairs = _file(
        "pairs.csv", "per image and method: label, prediction, the class compared, the maps' similarity"
    )
    summary = _file("summary.csv", "per method: accuracy, mistakes, mean similarity of mistakes and baseline")
    gallery = _file("gallery.npz", "the first misclassified images and each method's two maps of them")


class AttributionArtifact(Artifact):
    maps = _file("maps.npz", "each method's (N, H, W) maps in [0, 1], by method name")
    images = _file("images.npy", "the probe images' indices")
    targets = _file("targets.npy", "the class each map explains")
    metrics = _file("metrics.csv", "faithfulness metrics and cost per method")
    feature_grid = _file("feature_grid.png", "the layer's feature maps for the first image")
    first_filters = _file("first_filters.png", "the filters of the first convolution, as colour images")
    localisation = _file("localisation.csv", "pointing game and energy share per method (world models)")


class TcavArtifact(Artifact):
    scores = _file("tcav.csv", "per class and concept: TCAV score, its random baseline, p, significance")
    net2vec = _file("net2vec.csv", "per probe concept: its CAVs against the layer's Net2Vec embedding")


class SanityArtifact(Artifact):
    randomisation = _file("randomisation.csv", "per method and cascade step: similarity to the trained map")
    maps = _file("maps.npz", "the first image's map per method and step, keyed <method>@<step>")
    labels = _file(
        "data_randomisation.csv",
        "per method: similarity of the permuted-label model's maps to the trained model's (if it has one)",
    )
