"""A model's full cue-conflict evaluation: decisions on the three stimulus sets, and its summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from cnnscope.data import shapetexture
from cnnscope.models.registry import LoadedModel
from cnnscope.shapebias import analysis
from cnnscope.shapebias.classes import CLASSES
from cnnscope.shapebias.decisions import BATCH_SIZE, model_decisions
from cnnscope.shapebias.stimuli import load_rgb, stimulus_sets

# The decision spaces a model can be evaluated in: the world's 16 shapes, or 16 ImageNet categories.
CLASS_SETS: dict[str, Sequence[str]] = {"world": shapetexture.CLASSES, "imagenet": CLASSES}


def evaluate(
    loaded: LoadedModel,
    root: str | Path,
    subj: str,
    classes: Sequence[str] = CLASSES,
    batch_size: int = BATCH_SIZE,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Raw-data decisions of the model on the cue-conflict, edge and silhouette sets."""
    sets = stimulus_sets(root, classes)  # validates every folder before any forward pass
    return {
        name: model_decisions(loaded, stim, load_rgb(stim), subj, batch_size, device, progress, classes)
        for name, stim in sets.items()
    }


def summary(decisions: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Shape bias, its hit counts and the cue fraction, and edge and silhouette accuracy."""
    bias = analysis.shape_bias(decisions["cue-conflict"], by=None).iloc[0]
    return {
        "shape_bias": float(bias["shape_bias"]),
        "shape_hits": int(bias["shape_hits"]),
        "texture_hits": int(bias["texture_hits"]),
        "conflict_trials": int(bias["trials"]),
        "cue_fraction": float(bias["cue_fraction"]),
        "edge_accuracy": float(analysis.accuracy(decisions["edges"]).iloc[0]),
        "silhouette_accuracy": float(analysis.accuracy(decisions["silhouettes"]).iloc[0]),
    }
