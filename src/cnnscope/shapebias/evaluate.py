"""A model's full texture-vs-shape evaluation: decisions on every stimulus type, and its summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cnnscope.data import shapetexture
from cnnscope.data.imagefolder import SUFFIXES, load_images
from cnnscope.errors import DatasetError
from cnnscope.models.registry import LoadedModel
from cnnscope.progress import track
from cnnscope.shapebias import analysis
from cnnscope.shapebias.classes import CLASSES
from cnnscope.shapebias.decisions import BATCH_SIZE, model_decisions
from cnnscope.shapebias.distortions import DISTORTIONS, distort
from cnnscope.shapebias.stimuli import CONFLICT_SET, Stimulus, load_rgb, stimulus_sets

# The decision spaces a model can be evaluated in: the world's 16 shapes, or 16 ImageNet categories.
CLASS_SETS: dict[str, Sequence[str]] = {"world": shapetexture.CLASSES, "imagenet": CLASSES}
# The summary's accuracy keys of the types whose key is not their name (kept from the first release).
ACCURACY_KEYS = {"edges": "edge", "silhouettes": "silhouette"}


def evaluate(
    loaded: LoadedModel,
    root: str | Path,
    subj: str,
    classes: Sequence[str] = CLASSES,
    batch_size: int = BATCH_SIZE,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Raw-data decisions of the model on every stimulus type of ``root``."""
    sets = stimulus_sets(root, classes)  # validates every folder before any forward pass
    return {
        name: model_decisions(loaded, stim, load_rgb(stim), subj, batch_size, device, progress, classes)
        for name, stim in sets.items()
    }


def summary(decisions: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Shape bias, its hit counts and the cue fraction, and the accuracy on each single-cue type
    (``<type>_accuracy``; edges and silhouettes as ``edge_accuracy`` and ``silhouette_accuracy``)."""
    bias = analysis.shape_bias(decisions[CONFLICT_SET], by=None).iloc[0]
    return {
        "shape_bias": float(bias["shape_bias"]),
        "shape_hits": int(bias["shape_hits"]),
        "texture_hits": int(bias["texture_hits"]),
        "conflict_trials": int(bias["trials"]),
        "cue_fraction": float(bias["cue_fraction"]),
        **{
            f"{ACCURACY_KEYS.get(name, name)}_accuracy": float(analysis.accuracy(df).iloc[0])
            for name, df in decisions.items()
            if name != CONFLICT_SET
        },
    }


def local_images(root: str | Path, classes: Sequence[str], size: int) -> tuple[list[Stimulus], np.ndarray]:
    """A folder of 16-class images in ImageNet layout (``<root>/<class>/<image>``, class folders named
    among ``classes``; a missing class is allowed), each image's shorter side resized to ``size`` and
    centre-cropped, for a real study's distortions."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    unknown = [f.name for f in folders if f.name not in classes]
    if not folders or unknown:
        raise DatasetError(
            f"{root} must hold one folder per class named among {', '.join(classes)}"
            + (f"; it has {', '.join(unknown[:5])}" if unknown else "; it has none")
        )
    stimuli = [
        Stimulus(p, f.name, None) for f in folders for p in sorted(f.iterdir()) if p.suffix in SUFFIXES
    ]
    if not stimuli:
        raise DatasetError(f"{root}: no images ({', '.join(sorted(SUFFIXES))}) in its class folders")
    return stimuli, load_images([s.path for s in stimuli], size)


def evaluate_distortions(
    loaded: LoadedModel,
    stimuli: list[Stimulus],
    images: np.ndarray,
    subj: str,
    distortions: Sequence[str],
    seed: int = 0,
    classes: Sequence[str] = CLASSES,
    batch_size: int = BATCH_SIZE,
    device: torch.device | str = "cpu",
    progress: bool = True,
    grey: bool = True,
) -> dict[str, pd.DataFrame]:
    """Raw-data decisions of the model on ``images`` under each distortion at each of its published
    levels (``condition``: the level's label), greyscale as the papers showed them (``grey``) or in
    colour (:func:`cnnscope.shapebias.distortions.distort`)."""
    out = {}
    for name in distortions:
        levels = DISTORTIONS[name].levels
        out[name] = pd.concat(
            [
                model_decisions(
                    loaded,
                    stimuli,
                    np.concatenate(  # a batch at a time: the float work stays a batch's size
                        [
                            distort(images[a : a + batch_size], name, label, seed, a, grey)
                            for a in range(0, len(images), batch_size)
                        ]
                    ),
                    subj,
                    batch_size,
                    device,
                    False,
                    classes,
                    label,
                )
                for label in track(levels, f"{name} {subj}", enabled=progress)
            ],
            ignore_index=True,
        )
    return out
