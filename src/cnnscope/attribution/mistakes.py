"""A classifier's mistakes through its explanations: is the predicted class's map close to the true one's?

The L-CAM seed (Gkartzonika et al. 2022) looks at misclassified images and finds the map of the
predicted class close to the map of the true class: similar classes share regions, so the model looks
at the right place and names the wrong class. Measured here, per method and image, as the Spearman rank
correlation of two maps (:func:`cnnscope.attribution.sanity.spearman`, the sanity checks' measure):

* a **misclassified** image: the predicted class's map against the true class's;
* a **correctly classified** image: the top-1 class's map against the top-2 class's, the baseline a
  mistake is compared with (two classes the model itself finds close, on an image it gets right).

A mistake's maps closer than that baseline mean the two classes' evidence lies in the same place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from cnnscope.attribution.lcam import Attention
from cnnscope.attribution.sanity import spearman
from cnnscope.attribution.suite import MethodParams, attribute
from cnnscope.attribution.tcav import ttest_ind
from cnnscope.errors import CnnscopeError
from cnnscope.models.layers import evaluating


@dataclass
class Mistakes:
    """``pairs``: per image and method, its label, the predicted class (top-1), the class compared with
    (the label if wrong, else the top-2 class), whether it was right and the two maps' similarity.
    ``maps``: per method, the two maps ``(N, 2, H, W)`` (predicted, compared) of every image."""

    pairs: pd.DataFrame
    maps: dict[str, torch.Tensor]


def compare_classes(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    labels: torch.Tensor,
    methods: list[str],
    attention: Mapping[str, Attention] | None = None,
    params: MethodParams | None = None,
) -> Mistakes:
    """Each method's map of the predicted class and of the class compared with it, for every image of
    ``x`` (normalised as the model expects) with its true ``labels`` (see the module docstring)."""
    with torch.no_grad(), evaluating(model):
        logits = model(x)
    if not torch.isfinite(logits).all():
        raise CnnscopeError("the model's logits on the images hold non-finite values (NaN or inf)")
    top2 = logits.topk(2, dim=1).indices
    predicted = top2[:, 0]
    right = predicted == labels
    other = torch.where(right, top2[:, 1], labels)
    first, _ = attribute(model, layer, x, methods, predicted, params=params, attention=attention)
    second, _ = attribute(model, layer, x, methods, other, params=params, attention=attention)
    rows, maps = [], {}
    for m in methods:
        maps[m] = torch.stack([first[m], second[m]], dim=1).detach().cpu()
        rows.append(
            pd.DataFrame(
                {
                    "image": np.arange(len(x)),
                    "method": m,
                    "label": labels.cpu().numpy(),
                    "predicted": predicted.cpu().numpy(),
                    "compared": other.cpu().numpy(),
                    "correct": right.cpu().numpy(),
                    "similarity": spearman(first[m], second[m]),
                }
            )
        )
    return Mistakes(pd.concat(rows, ignore_index=True), maps)


def summarise(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per method: images, accuracy, mistakes, the mean similarity of predicted and true maps over the
    mistakes and of top-1 and top-2 maps over the correct images, the first minus the second (``NaN``
    where a group is empty), and Student's two-sample t-test of the two groups' similarities (``t``,
    two-sided ``p``; :func:`cnnscope.attribution.tcav.ttest_ind`, ``NaN`` with fewer than three values
    together): with a few dozen mistakes, a difference can be chance. A pair with a constant map has no
    rank correlation: it is left out of the means and the test, and counted in ``constant_maps``."""
    rows = []
    for method, g in pairs.groupby("method", sort=False):
        wrong, right = g[~g["correct"]], g[g["correct"]]
        mistake, baseline = wrong["similarity"].mean(), right["similarity"].mean()
        a, b = wrong["similarity"].dropna().to_numpy(), right["similarity"].dropna().to_numpy()
        t, p = ttest_ind(a, b) if min(len(a), len(b)) >= 1 and len(a) + len(b) >= 3 else (np.nan, np.nan)
        rows.append(
            {
                "method": method,
                "images": len(g),
                "accuracy": len(right) / len(g),
                "mistakes": len(wrong),
                "predicted_vs_true": mistake,
                "top1_vs_top2": baseline,
                "difference": mistake - baseline,
                "t": t,
                "p": p,
                "constant_maps": int(g["similarity"].isna().sum()),
            }
        )
    return pd.DataFrame(rows)
