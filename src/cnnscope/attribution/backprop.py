"""Backpropagation methods that change the ReLU's backward rule, and their Guided Grad-CAM products.

* plain gradient:   dx = 1[x > 0] * g
* guided backprop:  dx = 1[x > 0] * max(g, 0)   (Springenberg et al. 2015)
* DeconvNet:        dx = max(g, 0)              (Zeiler & Fergus 2014: only positive signal from above)

The rule is swapped with a ``TorchFunctionMode`` that catches every ReLU call, as a module or as
``F.relu``/``torch.relu``, in place or not, so the model needs no module ReLUs and is not modified.
A model with no ReLU at all is refused, since the methods would silently equal the plain gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from cnnscope.attribution.base import LayerAttribution, normalize_maps, select
from cnnscope.errors import ModelError
from cnnscope.models.layers import evaluating

_RELUS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}


class _RuledReLU(torch.autograd.Function):
    """A ReLU whose backward pass is ``rule(x, g)`` instead of ``1[x > 0] * g``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rule: Callable) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.rule = rule
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return ctx.rule(x, g), None


def guided_rule(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return g.clamp(min=0) * (x > 0)


def deconv_rule(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return g.clamp(min=0)


def redirected_rule(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Also pass gradients at x <= 0 when descending them would raise x (Olah et al.'s redirected
    ReLU): lets activation maximization leave a start where the unit is silent."""
    return g * ((x > 0) | (g < 0))


class ReLURule(TorchFunctionMode):
    """Within this mode every ReLU call (module or functional, in place or not) backpropagates by
    ``rule``; its forward is the ordinary ReLU, computed out of place."""

    def __init__(self, rule: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.rule, self.calls = rule, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            self.calls += 1
            return _RuledReLU.apply(args[0], self.rule)
        return func(*args, **(kwargs or {}))


class _Backprop:
    """Input-gradient method with a ReLU backward rule; a context manager for symmetry."""

    rule: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> _Backprop:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __call__(
        self, x: torch.Tensor, targets: torch.Tensor | list[int] | None = None, normalize: bool = False
    ) -> torch.Tensor:
        """``(N, C, H, W)`` gradients of each image's target score with respect to the image."""
        x = x.detach().requires_grad_(True)
        mode = ReLURule(self.rule)
        with evaluating(self.model):
            with torch.enable_grad(), mode:
                logits = self.model(x)
                t = select(logits, targets)
            (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), x)
        if mode.calls == 0:
            raise ModelError(
                f"{type(self).__name__} changes the ReLU backward rule, but {type(self.model).__name__} "
                "called no ReLU (module or functional); the result would be the plain gradient"
            )
        return normalize_maps(grad) if normalize else grad


class GuidedBackprop(_Backprop):
    rule = staticmethod(guided_rule)


class DeconvNet(_Backprop):
    rule = staticmethod(deconv_rule)


def guided(pixel: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Guided Grad-CAM (or Guided Grad-CAM++): the element-wise product of a guided-backprop
    gradient ``(N, C, H, W)`` and an upsampled class-activation map ``(N, H, W)``."""
    return pixel * maps[:, None]


def guided_cam(cam: LayerAttribution, x: torch.Tensor, targets=None) -> torch.Tensor:
    """Guided ``cam`` for the same targets (the predicted class by default)."""
    with torch.no_grad():
        t = select(cam.model(x), targets)
    with GuidedBackprop(cam.model) as gb:
        return guided(gb(x, t), cam(x, t))
