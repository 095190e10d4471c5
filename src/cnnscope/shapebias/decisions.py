"""A model's decisions on stimuli, written as raw-data rows like the published experiments'.

Images are fed at their native size (224 x 224 for the real stimuli) with the model's own
normalisation, no resize or crop. ImageNet models decide by the toolbox's 1000 -> 16 rule
(:func:`cnnscope.shapebias.classes.decide`); models with a 16-way head use it directly, and a head
whose classes file names the 16 classes picks their logits by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from cnnscope.errors import ModelError
from cnnscope.models.registry import LoadedModel
from cnnscope.progress import track
from cnnscope.shapebias.analysis import COLUMNS
from cnnscope.shapebias.classes import CLASSES, decide, head_problem
from cnnscope.shapebias.stimuli import Stimulus

BATCH_SIZE = 64  # stimuli per forward pass, the default of the library and of the cueconflict step


def model_decisions(
    loaded: LoadedModel,
    stimuli: list[Stimulus],
    images: np.ndarray,
    subj: str,
    batch_size: int = BATCH_SIZE,
    device: torch.device | str = "cpu",
    progress: bool = True,
    classes: Sequence[str] = CLASSES,
    condition: str | int = 0,
) -> pd.DataFrame:
    """One raw-data row per stimulus: the model's response among ``classes``, in ``condition`` (a
    distortion's level label; 0 for undistorted stimuli)."""
    device = torch.device(device)
    responses: list[str] = []
    with torch.inference_mode():
        for a in track(range(0, len(images), batch_size), f"decide {subj}", enabled=progress):
            x = loaded.normalize(torch.from_numpy(np.array(images[a : a + batch_size])).to(device))
            logits = loaded.module(x)
            problem = head_problem(logits.shape[-1], classes, loaded.class_names)
            if problem is not None:
                raise ModelError(f"{subj} cannot decide the cue conflict: {problem}")
            responses += decide(logits, classes, loaded.class_names)
    rows = [
        {
            "subj": subj,
            "session": 1,
            "trial": i + 1,
            "rt": float("nan"),
            "object_response": r,
            "category": s.shape,
            "condition": condition,
            "imagename": f"{i + 1:04d}_cnnscope_{subj}_{condition}_{s.shape}_00_{s.path.name}",
        }
        for i, (s, r) in enumerate(zip(stimuli, responses, strict=True))
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))
