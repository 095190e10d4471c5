"""Run a set of attribution methods on a batch and score them: what the attribution step calls.

Every method's result becomes an ``(N, H, W)`` saliency map in [0, 1]: class-activation maps as they
are; pixel gradients (guided backprop, DeconvNet, Guided Grad-CAM/++) as the largest absolute value
over colour channels, scaled per image.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from cnnscope.attribution.backprop import DeconvNet, GuidedBackprop, guided_cam
from cnnscope.attribution.base import normalize_maps
from cnnscope.attribution.cam import CAM, CounterfactualGradCAM, GradCAM, GradCAMPlusPlus
from cnnscope.attribution.lcam import LCAM, Attention, load_attention
from cnnscope.attribution.metrics import deletion_insertion, drop_and_increase
from cnnscope.attribution.perturbation import RISE, SIDU, RISEParams, ScoreCAM, ScoreCAMParams, SIDUParams
from cnnscope.attribution.sise import SISE, AdaSISE, SISEParams
from cnnscope.bounds import choice
from cnnscope.errors import CnnscopeError
from cnnscope.progress import track

Method = Callable[..., torch.Tensor]  # (model, layer, images, targets, **options) -> (N, H, W) maps


def saliency(grad: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` pixel gradients -> ``(N, H, W)`` in [0, 1]."""
    return normalize_maps(grad.abs().amax(1))


def _class_activation(cls: type) -> Method:
    def run(model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor, **options) -> torch.Tensor:
        with cls(model, layer, **options) as m:
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


def _learned(variant: str) -> Method:
    def run(
        model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor, attention=None
    ) -> torch.Tensor:
        if attention is None:
            raise CnnscopeError(f"L-CAM-{variant} needs a trained attention module (the lcam step's)")
        with LCAM(model, layer, attention, variant) as m:
            return m(x, targets)

    return run


def _model_only(cls: type) -> Method:
    def run(model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor, **options) -> torch.Tensor:
        with cls(model, **options) as m:
            return m(x, targets)

    return run


# The methods that need a module trained for the model first, and the L-CAM variant each one is.
LCAM_VARIANTS: dict[str, str] = {"lcam_fm": "fm", "lcam_img": "img"}
TRAINED = frozenset(LCAM_VARIANTS)
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
    "scorecam": _class_activation(ScoreCAM),
    "rise": _model_only(RISE),
    "sidu": _class_activation(SIDU),
    "sise": _class_activation(SISE),
    "ada_sise": _class_activation(AdaSISE),
    **{m: _learned(v) for m, v in LCAM_VARIANTS.items()},
}
# Methods that run hundreds of forward passes per image (a study runs them on fewer images).
PERTURBATION = frozenset({"scorecam", "rise", "sidu", "sise", "ada_sise"})
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
    "scorecam": "Score-CAM",
    "rise": "RISE",
    "sidu": "SIDU",
    "sise": "SISE",
    "ada_sise": "Ada-SISE",
    "lcam_fm": "L-CAM-Fm",
    "lcam_img": "L-CAM-Img",
}


class PassCounter:
    """Images through the model's forward passes, and through backward passes (a hook on each output
    that requires gradients), while the counter is active: what a method costs, counted, not declared.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model, self.forward, self.backward = model, 0, 0
        self._handle = None

    def _on_forward(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.forward += len(output)
        if output.requires_grad:
            output.register_hook(self._on_backward)

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backward += len(grad)

    def __enter__(self) -> PassCounter:
        self._handle = self.model.register_forward_hook(self._on_forward)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


@dataclass
class MethodParams:
    """The settings of the methods that have any, by method name (the study's attribution step nests
    them, so :func:`attribute` with its defaults computes the study's maps)."""

    scorecam: ScoreCAMParams = field(default_factory=ScoreCAMParams)
    rise: RISEParams = field(default_factory=RISEParams)
    sidu: SIDUParams = field(default_factory=SIDUParams)
    sise: SISEParams = field(default_factory=SISEParams)
    ada_sise: SISEParams = field(default_factory=SISEParams)


def trained_attention(
    lcam: str | None, methods: list[str], layer: str, device: torch.device
) -> dict[str, Attention]:
    """The trained L-CAM attention of each method among ``methods`` that needs one, by method, from
    an lcam step's output (``lcam``); refused, naming the fix, when there is none."""
    wanted = [m for m in methods if m in TRAINED]
    if not wanted:
        return {}
    if lcam is None:
        raise CnnscopeError(
            f"methods {wanted} need a trained L-CAM attention: give lcam=<the lcam step's output>"
        )
    loaded = load_attention(lcam, [LCAM_VARIANTS[m] for m in wanted], layer, device)
    return {m: loaded[LCAM_VARIANTS[m]] for m in wanted}


def attribute(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    methods: list[str],
    targets: torch.Tensor,
    progress: bool = False,
    params: MethodParams | None = None,
    attention: Mapping[str, Attention] | None = None,
) -> tuple[dict[str, torch.Tensor], pd.DataFrame]:
    """Each method's maps for ``targets`` (the settings of those that have any: ``params``; the
    trained L-CAM attention modules: ``attention[method]``), and a table of what each cost per image:
    seconds, and forward and backward passes as counted by :class:`PassCounter`.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise CnnscopeError(f"unknown attribution method(s) {unknown}; valid: {', '.join(METHODS)}")
    params = params or MethodParams()
    maps, cost = {}, []
    for name in track(methods, "attribution", enabled=progress):
        options = {"params": getattr(params, name)} if hasattr(params, name) else {}
        if name in TRAINED:
            options["attention"] = (attention or {}).get(name)
        t0 = time.perf_counter()
        with PassCounter(model) as passes:
            maps[name] = METHODS[name](model, layer, x, targets, **options)
        if x.is_cuda:
            torch.cuda.synchronize()
        cost.append(
            {
                "method": name,
                "images": len(x),
                "forward_passes": passes.forward / len(x),
                "backward_passes": passes.backward / len(x),
                "seconds_per_image": (time.perf_counter() - t0) / len(x),
            }
        )
    return maps, pd.DataFrame(cost)


def score(
    model: nn.Module, x: torch.Tensor, maps: dict[str, torch.Tensor], targets: torch.Tensor, steps: int
) -> pd.DataFrame:
    """Average Drop, Increase in Confidence and mean deletion/insertion AUC per method, each over the
    images it has maps for (the first ``len(maps[method])`` of ``x``)."""
    rows = []
    for name, m in maps.items():
        xs, ts = x[: len(m)], targets[: len(m)]
        drop, inc = drop_and_increase(model, xs, m, ts)
        dele, ins = deletion_insertion(model, xs, m, ts, steps=steps)
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
