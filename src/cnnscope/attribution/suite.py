"""Run a set of attribution methods on a batch and score them: what the attribution step calls.

Every method's result becomes an ``(N, H, W)`` saliency map in [0, 1]: class-activation maps as they
are; pixel gradients (guided backprop, DeconvNet, Guided Grad-CAM/++) as the largest absolute value
over colour channels, scaled per image.
"""

from __future__ import annotations

import time

import pandas as pd
import torch
from torch import nn

from cnnscope.attribution.backprop import DeconvNet, GuidedBackprop, guided_cam
from cnnscope.attribution.base import normalize_maps
from cnnscope.attribution.cam import CAM, CounterfactualGradCAM, GradCAM, GradCAMPlusPlus
from cnnscope.attribution.metrics import deletion_insertion, drop_and_increase
from cnnscope.errors import CnnscopeError

LAYER_METHODS = {
    "cam": CAM,
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "counterfactual_gradcam": CounterfactualGradCAM,
}
PIXEL_METHODS = {"guided_backprop": GuidedBackprop, "deconvnet": DeconvNet}
GUIDED_METHODS = {"guided_gradcam": GradCAM, "guided_gradcam++": GradCAMPlusPlus}
ALL_METHODS = (*LAYER_METHODS, *PIXEL_METHODS, *GUIDED_METHODS)


def check_methods(methods: list[str]) -> None:
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise CnnscopeError(f"unknown attribution method(s) {unknown}; valid: {', '.join(ALL_METHODS)}")


def saliency(grad: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` pixel gradients -> ``(N, H, W)`` in [0, 1]."""
    return normalize_maps(grad.abs().amax(1))


def attribute(
    model: nn.Module, layer: str, x: torch.Tensor, methods: list[str], targets: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Each method's maps for ``targets``, and its time per image in seconds."""
    check_methods(methods)
    maps, seconds = {}, {}
    for name in methods:
        t0 = time.perf_counter()
        if name in LAYER_METHODS:
            with LAYER_METHODS[name](model, layer) as m:
                maps[name] = m(x, targets)
        elif name in PIXEL_METHODS:
            with PIXEL_METHODS[name](model) as m:
                maps[name] = saliency(m(x, targets))
        else:
            with GUIDED_METHODS[name](model, layer) as cam:
                maps[name] = saliency(guided_cam(cam, x, targets))
        if x.is_cuda:
            torch.cuda.synchronize()
        seconds[name] = (time.perf_counter() - t0) / len(x)
    return maps, seconds


def score(
    model: nn.Module, x: torch.Tensor, maps: dict[str, torch.Tensor], targets: torch.Tensor, steps: int
) -> pd.DataFrame:
    """Average Drop, Increase in Confidence and mean deletion/insertion AUC per method."""
    rows = []
    for name, m in maps.items():
        drop, inc = drop_and_increase(model, x, m, targets)
        dele, ins = deletion_insertion(model, x, m, targets, steps=steps)
        rows.append(
            {
                "method": name,
                "average_drop": drop,
                "increase_in_confidence": inc,
                "deletion_auc": float(dele.mean()),
                "insertion_auc": float(ins.mean()),
            }
        )
    return pd.DataFrame(rows)
