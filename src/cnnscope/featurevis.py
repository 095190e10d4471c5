"""What a unit prefers and what a layer keeps: activation maximization, inversion, feature grids.

* :func:`maximize` -- gradient ascent on an image to raise one channel's mean activation (Erhan et
  al. 2009; Olah et al. 2017): a pixel or a decorrelated Fourier parametrisation (scaled by 1/frequency
  and colour-decorrelated, so steps are not dominated by high frequencies), random jitter, scale and
  rotation each step (transformation robustness), optional multi-scale upscaling of the pixel image.
* :func:`invert` -- reconstruct an input from a layer's feature map (Mahendran & Vedaldi 2015): the
  normalised feature loss ``||phi(x) - phi0||^2 / ||phi0||^2`` plus an alpha-norm and a total-variation
  regulariser, from random noise.
* :func:`feature_grid` -- a layer's feature maps for one image, tiled.
* :func:`first_conv` and :func:`filter_grid` -- the first convolution a forward pass runs, and its
  filters as colour images, tiled (the survey's first-layer view, where aliasing artefacts show).

Images live in [0, 1]; the model's own normalisation is applied inside. Everything runs on the
device of the model's parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnscope.attribution.backprop import ReLURule, redirected_rule
from cnnscope.bounds import bounded, check_params, choice, positive
from cnnscope.features import LayerCapture
from cnnscope.models.layers import evaluating, resolve_layer
from cnnscope.models.normalize import normalize

# Colour correlation of natural images (square root of the covariance, from ImageNet statistics, as
# used by Lucid): decorrelated parameters are mapped to RGB through it.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR_SQRT = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


@dataclass
class Trace:
    """The optimised image ``(3, H, W)`` in [0, 1] and the objective at every step."""

    image: torch.Tensor
    values: list[float]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class FourierImage(nn.Module):
    """An image parametrised by its 2-D spectrum, scaled by 1/frequency, and decorrelated colours."""

    def __init__(self, size: int, generator: torch.Generator, device: torch.device, decay: float = 1.0):
        super().__init__()
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freq = torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / size)
        self.register_buffer("scale", (1.0 / freq**decay).to(device) * size / 4)
        init = torch.randn(3, size, size // 2 + 1, 2, generator=generator) * 0.01
        self.spectrum = nn.Parameter(init.to(device))
        self.size = size

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        img = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho")
        rgb = torch.einsum("cd,dhw->chw", _COLOR_SQRT.to(img.device), img)
        return torch.sigmoid(rgb)[None]


class PixelImage(nn.Module):
    """An image parametrised per pixel (through a sigmoid, so it stays in [0, 1])."""

    def __init__(self, size: int, generator: torch.Generator, device: torch.device):
        super().__init__()
        self.logits = nn.Parameter((torch.randn(1, 3, size, size, generator=generator) * 0.1).to(device))

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def upscale(self, size: int) -> None:
        self.logits = nn.Parameter(F.interpolate(self.logits.detach(), size=size, mode="bilinear"))


PARAMETRISATIONS: dict[str, type[nn.Module]] = {"fourier": FourierImage, "pixel": PixelImage}


def robust_transform(
    x: torch.Tensor,
    generator: torch.Generator,
    jitter: int = 4,
    scales: Sequence[float] = (0.95, 1.05),
    degrees: float = 8.0,
) -> torch.Tensor:
    """Random jitter, scale and rotation, all differentiable (transformation robustness)."""
    if jitter:
        dx, dy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    s = float(torch.empty(1).uniform_(*scales, generator=generator))
    a = math.radians(float(torch.empty(1).uniform_(-degrees, degrees, generator=generator)))
    theta = torch.tensor(
        [[math.cos(a) / s, -math.sin(a) / s, 0.0], [math.sin(a) / s, math.cos(a) / s, 0.0]],
        device=x.device,
        dtype=x.dtype,
    )[None].expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)


def channel_activation(model: nn.Module, layer: str, x: torch.Tensor, unit: int) -> torch.Tensor:
    """Mean activation of channel ``unit`` of ``layer`` per image (the forward stops at the layer)."""
    with LayerCapture(resolve_layer(model, layer), stop=True, keep_graph=True) as cap:
        return cap(model, x)[:, unit].mean((1, 2))


Parametrisation = choice("Parametrisation", PARAMETRISATIONS)


@dataclass
class MaximizeParams:
    """Activation maximisation's settings (the featurevis step extends them)."""

    size: int = bounded(64, 8)
    steps: int = positive(128)
    lr: float = bounded(0.05, 0, open_lo=True)
    param: Parametrisation = Parametrisation.fourier
    seed: int = bounded(0, 0)


def maximize(
    model: nn.Module,
    layer: str,
    unit: int,
    mean: Sequence[float],
    std: Sequence[float],
    params: MaximizeParams | None = None,
    robust: bool = True,
    octaves: Sequence[int] = (),
    redirect_steps: int = 16,
    **settings: Any,
) -> Trace:
    """Optimise an image to raise ``unit``'s mean activation in ``layer``, with ``params`` (default
    :class:`MaximizeParams`) and any of its fields replaced by ``settings``.

    ``octaves`` (pixel parametrisation only) are larger sizes to upscale to, each getting ``steps``
    further steps: coarse structure first, detail later. For the first ``redirect_steps`` steps every
    ReLU uses the redirected gradient, so a unit that is silent on the starting image can still rise.
    """
    p = dataclasses.replace(params or MaximizeParams(), **settings)
    check_params(p)
    size, steps, lr, param, seed = p.size, p.steps, p.lr, p.param, p.seed
    device = _device(model)
    gen = torch.Generator().manual_seed(seed)
    if octaves and param != "pixel":
        raise ValueError("multi-scale octaves need param='pixel'")
    image: nn.Module = PARAMETRISATIONS[param](size, gen, device)
    values: list[float] = []
    with evaluating(model):
        step = 0
        for stage_size in [size, *octaves]:
            if stage_size != size:
                image.upscale(stage_size)
            opt = torch.optim.Adam(image.parameters(), lr=lr)
            for _ in range(steps):
                x = image()
                if robust:
                    x = robust_transform(x, gen)
                with ReLURule(redirected_rule) if step < redirect_steps else contextlib.nullcontext():
                    act = channel_activation(model, layer, normalize(x, mean, std), unit).mean()
                step += 1
                opt.zero_grad()
                (-act).backward()
                opt.step()
                values.append(act.item())
    return Trace(image()[0].detach(), values)


def total_variation(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    dh = x[..., 1:, :-1] - x[..., :-1, :-1]
    dw = x[..., :-1, 1:] - x[..., :-1, :-1]
    return ((dh**2 + dw**2) ** (beta / 2)).sum()


def invert(
    model: nn.Module,
    layer: str,
    target: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    steps: int = 200,
    lr: float = 0.05,
    alpha: float = 6.0,
    lambda_alpha: float = 1e-5,
    lambda_tv: float = 1e-3,
    seed: int = 0,
) -> tuple[torch.Tensor, list[float]]:
    """Reconstruct ``target`` (``(3, H, W)`` in [0, 1]) from ``layer``'s feature map.

    Returns the reconstruction and the normalised feature loss at every step.
    """
    device = _device(model)
    layer_module = resolve_layer(model, layer)
    with evaluating(model):
        with torch.no_grad(), LayerCapture(layer_module) as cap:
            phi0 = cap(model, normalize(target[None].to(device), mean, std))
        gen = torch.Generator().manual_seed(seed)
        x = (torch.rand(target[None].shape, generator=gen) * 0.2 + 0.4).to(device).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        losses: list[float] = []
        for _ in range(steps):
            with LayerCapture(layer_module, keep_graph=True) as cap:
                phi = cap(model, normalize(x, mean, std))
            feature = (phi - phi0).pow(2).sum() / phi0.pow(2).sum()
            centred = x - 0.5
            loss = feature + lambda_alpha * centred.abs().pow(alpha).sum() + lambda_tv * total_variation(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            losses.append(feature.item())
    return x.detach()[0], losses


def feature_grid(maps: torch.Tensor, columns: int = 8, pad: int = 1) -> torch.Tensor:
    """Tile ``(C, h, w)`` feature maps, each scaled to [0, 1], into one ``(rows*(h+pad), ...)`` image."""
    c, h, w = maps.shape
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    scaled = ((flat - lo) / (hi - lo).clamp(min=1e-12)).view(c, h, w)
    rows = math.ceil(c / columns)
    grid = torch.ones(rows * (h + pad), columns * (w + pad))
    for i in range(c):
        r, k = divmod(i, columns)
        grid[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = scaled[i].cpu()
    return grid


def first_conv(model: nn.Module, x: torch.Tensor) -> nn.Conv2d | None:
    """The first ``Conv2d`` a forward pass of ``x`` runs (not the first registered: a model may
    register its stem last), or ``None`` if it runs none."""
    ran: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: ran.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with evaluating(model), torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return ran[0] if ran else None


def filter_grid(weight: torch.Tensor, columns: int = 8, pad: int = 1, zoom: int = 8) -> torch.Tensor:
    """``(H, W, 3)`` in [0, 1]: each filter of ``weight`` ``(C, 3, k, k)`` scaled to [0, 1] over its
    three colours together (so its hue shows), enlarged ``zoom`` times (nearest), tiled ``columns``
    wide on white."""
    c, channels, kh, kw = weight.shape
    if channels != 3:
        raise ValueError(f"filters of {channels} input channels are not colour images")
    flat = weight.detach().float().cpu().flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    scaled = ((flat - lo) / (hi - lo).clamp(min=1e-12)).view(c, 3, kh, kw)
    big = scaled.repeat_interleave(zoom, 2).repeat_interleave(zoom, 3).permute(0, 2, 3, 1)
    h, w = kh * zoom, kw * zoom
    rows = math.ceil(c / columns)
    grid = torch.ones(rows * (h + pad), columns * (w + pad), 3)
    for i in range(c):
        r, k = divmod(i, columns)
        grid[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = big[i]
    return grid
