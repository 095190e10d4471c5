"""Run a set of attribution methods on a batch and score them: what the attribution step calls.

Every method's result becomes an ``(N, H, W)`` saliency map in [0, 1]: class-activation maps as they
are; pixel gradients (guided backprop, DeconvNet, Guided Grad-CAM/++) as the largest absolute value
over colour channels, scaled per image.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import torch
from torch import nn

from cnnscope.attribution.backprop import DeconvNet, GuidedBackprop, guided_cam
from cnnscope.attribution.base import normalize_maps
from cnnscope.attribution.cam import CAM, CounterfactualGradCAM, GradCAM, GradCAMPlusPlus
from cnnscope.attribution.metrics import deletion_insertion, drop_and_increase
from cnnscope.bounds import choice
from cnnscope.errors import CnnscopeError
from cnnscope.progress import track

Method = Callable[[nn.Module, str, torch.Tensor, torch.Tensor], torch.Tensor]


def saliency(grad: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` pixel gradients -> ``(N, H, W)`` in [0, 1]."""
    return normalize_maps(grad.abs().amax(1))


def _class_activation(cls: type) -> Method:
    def run(model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with cls(model, layer) as m:
            return m(x, targets)

    return run


def _backprop(cls: type) -> Method:
    def run(model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with cls(model) as m:
            return saliency(m(x, targets))

    return run


def _guided(cls: type) -> Method:
    def run(model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with cls(model, layer) as cam:
            return saliency(guided_cam(cam, x, targets))

    return run


# Every method the suite runs, by the name configs and tables use: the one list of methods.
METHODS: dict[str, Method] = {
    "cam": _class_activation(CAM),
    "gradcam": _class_activation(GradCAM),
    "gradcam++": _class_activation(GradCAMPlusPlus),
    "counterfactual_gradcam": _class_activation(CounterfactualGradCAM),
    "guided_backprop": _backprop(GuidedBackprop),
    "deconvnet": _backprop(DeconvNet),
    "guided_gradcam": _guided(GradCAM),
    "guided_gradcam++": _guided(GradCAMPlusPlus),
}
MethodName = choice("MethodName", METHODS)
# How pages name each method: as the papers that introduced them do (keys: METHODS).
DISPLAY_NAMES: dict[str, str] = {
    "cam": "CAM",
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "counterfactual_gradcam": "Counterfactual Grad-CAM",
    "guided_backprop": "Guided Backprop",
    "deconvnet": "DeconvNet",
    "guided_gradcam": "Guided Grad-CAM",
    "guided_gradcam++": "Guided Grad-CAM++",
}


def attribute(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    methods: list[str],
    targets: torch.Tensor,
    progress: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Each method's maps for ``targets``, and its time per image in seconds."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise CnnscopeError(f"unknown attribution method(s) {unknown}; valid: {', '.join(METHODS)}")
    maps, seconds = {}, {}
    for name in track(methods, "attribution", enabled=progress):
        t0 = time.perf_counter()
        maps[name] = METHODS[name](model, layer, x, targets)
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
