"""Shared machinery of the class-activation methods: the layer tap, targets, upsampling, scaling.

The layer's output is routed through :class:`_Tap`, an identity autograd function that records the
output's value and, in the backward pass, the gradient with respect to it. Because the tap's output is
a new tensor, a later in-place operation (``ReLU(inplace=True)``, ``out += identity``) modifies the
tap's output, not the recorded value, and autograd still delivers the gradient of the value before
the in-place step. Hooks are removed on exit, even after an error.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnscope.models.layers import evaluating, resolve_layer


class _Tap(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, store: dict) -> torch.Tensor:
        ctx.store = store
        store["activations"] = x.detach().clone()
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        ctx.store["gradients"] = grad.detach().clone()
        return grad, None


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map to [0, 1] by its own min and max (constant maps become 0)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp(min=1e-12)).view_as(maps)


def select(logits: torch.Tensor, targets: torch.Tensor | list[int] | None) -> torch.Tensor:
    """Each image's target class: the given ones, or the predicted class."""
    if targets is None:
        return logits.argmax(1)
    t = torch.as_tensor(targets, device=logits.device, dtype=torch.long)
    if t.shape != (len(logits),):
        raise ValueError(f"need one target per image ({len(logits)}), got shape {tuple(t.shape)}")
    return t


class LayerAttribution:
    """Base class: subclasses implement :meth:`weights` (per image and channel of the layer)."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model, self.layer_name = model, layer
        self.layer = resolve_layer(model, layer, type(model).__name__)
        self.store: dict[str, torch.Tensor] = {}
        self._handle = None

    def __enter__(self) -> LayerAttribution:
        self._handle = self.layer.register_forward_hook(lambda m, i, o: _Tap.apply(o, self.store))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def weights(
        self, acts: torch.Tensor, grads: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """``(N, C)`` channel weights (or ``(N, C, h, w)`` per-position weights)."""
        raise NotImplementedError

    def layer_maps(self, x: torch.Tensor, targets: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """``(N, h, w)`` maps at the layer's resolution, before ReLU, upsampling or scaling."""
        if self._handle is None:
            raise RuntimeError(f"use {type(self).__name__} as a context manager: with ... as m: m(x)")
        with evaluating(self.model), torch.enable_grad():
            logits = self.model(x)
            t = select(logits, targets)
            self.model.zero_grad(set_to_none=True)
            logits.gather(1, t[:, None]).sum().backward()
        acts, grads = self.store["activations"], self.store["gradients"]
        with torch.no_grad():
            w = self.weights(acts, grads, logits.detach(), t)
            if w.dim() == 2:
                w = w[:, :, None, None]
            return (w * acts).sum(1)

    def __call__(
        self,
        x: torch.Tensor,
        targets: torch.Tensor | list[int] | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """``(N, H, W)`` maps at the input's size: ReLU, bilinear upsampling, per-map [0, 1]."""
        maps = F.relu(self.layer_maps(x, targets))
        up = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return normalize_maps(up) if normalize else up
