"""A unit's strongest responses projected back to pixels, the DeconvNet way (Zeiler & Fergus 2014).

For each of a unit's top images, every activation of the layer is set to zero but the unit's largest
one, and that one signal is passed down to the pixels: through transposed convolutions (the backward
pass of each convolution), through max pooling by its switches (the backward pass of each max pool,
which routes to the position that won) and through each ReLU as a ReLU of the signal from above
(cnnscope's DeconvNet rule, :func:`cnnscope.attribution.backprop.deconv_rule`). The result shows which
pattern of the image excited the unit there; it is shown cropped to the unit's receptive field at
that position, beside the image patch, as in the paper's figure 2.

:func:`receptive_field` finds that field for any model without reading its architecture: the input
pixels that the layer's output at one position can depend on. It backpropagates from that position
through the model with every parameter made positive (``|w| + 1``), every ReLU passing its gradient
and every max pool replaced by an average pool of the same window, so that every path from a pixel to
the position carries a positive gradient and no path cancels or is switched off. The support of that
gradient is the theoretical receptive field, clipped to the image (zero padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from cnnscope.attribution.backprop import ReLURule, deconv_rule
from cnnscope.errors import ModelError
from cnnscope.features import LayerCapture
from cnnscope.models.layers import evaluating, resolve_layer


@dataclass(frozen=True)
class Box:
    """Rows ``top:bottom`` and columns ``left:right`` of an image (ends exclusive)."""

    top: int
    left: int
    bottom: int
    right: int


def _max_pool_args(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
) -> tuple:
    return input, kernel_size, stride, padding, dilation, ceil_mode, return_indices


class _AveragePools(TorchFunctionMode):
    """Within this mode every max pool (module or functional) is an average pool of the same window,
    whose backward pass reaches every position of it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.max_pool2d, torch.max_pool2d):
            x, kernel, stride, padding, dilation, ceil_mode, indices = _max_pool_args(*args, **kwargs)
            if indices or dilation not in (1, (1, 1)):
                raise ModelError(
                    "the receptive field is found for max pools without dilation or returned indices; "
                    f"this model calls one with dilation={dilation}, return_indices={indices}"
                )
            return F.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad=True)
        if func is F.adaptive_max_pool2d:
            return F.adaptive_avg_pool2d(args[0], args[1] if len(args) > 1 else kwargs["output_size"])
        return func(*args, **kwargs)


def _pass_all(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return g


def receptive_field(model: nn.Module, layer: str, size: tuple[int, int], where: tuple[int, int]) -> Box:
    """The input pixels of a ``size`` image that ``layer``'s output at position ``where`` (row, column)
    depends on, as a box (see the module docstring for how)."""
    device = next(model.parameters()).device
    positive = {name: p.detach().abs() + 1 for name, p in model.named_parameters()}
    x = torch.ones(1, 3, *size, device=device, requires_grad=True)
    with (
        evaluating(model),
        torch.enable_grad(),
        LayerCapture(resolve_layer(model, layer), keep_graph=True) as cap,
    ):
        with ReLURule(_pass_all), _AveragePools():
            cap(lambda inp: functional_call(model, positive, (inp,)), x)
        out = cap.output
        grad_out = torch.zeros_like(out)
        grad_out[0, :, where[0], where[1]] = 1
        (grad,) = torch.autograd.grad(out, x, grad_out)
    rows = grad[0].abs().sum(0).sum(1).nonzero()[:, 0]
    cols = grad[0].abs().sum(0).sum(0).nonzero()[:, 0]
    return Box(int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)


@dataclass
class Projections:
    """Per image: the DeconvNet projection ``(N, 3, H, W)`` of the unit's largest activation, that
    activation, its position (row, column) in the layer's map, and the receptive field there."""

    maps: torch.Tensor
    values: torch.Tensor
    where: list[tuple[int, int]]
    fields: list[Box]


def project(model: nn.Module, layer: str, x: torch.Tensor, unit: int) -> Projections:
    """Project ``unit``'s largest activation in each image of ``x`` (normalised as the model expects)
    back to pixels: the gradient of the layer's output with respect to the image under the DeconvNet
    ReLU rule, with the output's gradient zero everywhere but at the unit's maximum, where it is the
    activation itself (the unit's signal, as Zeiler & Fergus pass it down)."""
    x = x.detach().requires_grad_(True)
    with (
        evaluating(model),
        torch.enable_grad(),
        LayerCapture(resolve_layer(model, layer), keep_graph=True) as cap,
    ):
        with ReLURule(deconv_rule):
            cap(model, x)
        out = cap.output
        if not 0 <= unit < out.shape[1]:
            raise ModelError(f"unit {unit} is not one of {layer}'s {out.shape[1]} units")
        fmap = out[:, unit].detach()
        flat = fmap.flatten(1).argmax(1)
        rows, cols = flat // fmap.shape[2], flat % fmap.shape[2]
        n = torch.arange(len(x), device=x.device)
        values = fmap[n, rows, cols]
        grad_out = torch.zeros_like(out)
        grad_out[n, unit, rows, cols] = values
        (maps,) = torch.autograd.grad(out, x, grad_out)
    where = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
    size = tuple(x.shape[2:])
    fields = {w: receptive_field(model, layer, size, w) for w in set(where)}
    return Projections(maps.detach(), values, where, [fields[w] for w in where])


def strip(images: np.ndarray, projections: Projections, scale: int = 1) -> np.ndarray:
    """Per image (``uint8 (N, H, W, 3)``), the projection above the image patch, both cropped to the
    receptive field, side by side; a projection is drawn grey where zero, scaled by its largest
    absolute value (``0.5 + m / (2 max|m|)``, each image on its own scale, as the paper shows them)."""
    tiles = []
    for img, m, box in zip(images, projections.maps.cpu().numpy(), projections.fields, strict=True):
        rows, cols = slice(box.top, box.bottom), slice(box.left, box.right)
        m = m.transpose(1, 2, 0)[rows, cols]
        peak = np.abs(m).max()
        shown = 0.5 + m / (2 * peak) if peak > 0 else np.full_like(m, 0.5)
        tiles.append(np.concatenate([shown * 255, img[rows, cols].astype(np.float32)], axis=0))
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    padded = [
        np.pad(t, ((2, 2 + height - t.shape[0]), (2, 2 + width - t.shape[1]), (0, 0)), constant_values=255)
        for t in tiles
    ]
    out = np.concatenate(padded, axis=1)
    return np.kron(out, np.ones((scale, scale, 1))).round().clip(0, 255).astype(np.uint8)
