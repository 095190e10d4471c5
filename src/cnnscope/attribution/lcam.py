"""Learned class activation maps (L-CAM; Gkartzonika, Gkalelis & Mezaris, ECCV Workshops 2022).

An attention module, a 1x1 convolution from a layer's ``K`` feature maps to one map per class, is
trained on a frozen classifier so that one forward pass yields every class's activation map. Written
anew from the paper (its official code is under a non-commercial licence). Two variants:

* **L-CAM-Fm** (``fm``): the target class's map, through a sigmoid, multiplies the feature maps and the
  rest of the network runs on them (the layer's output is replaced by a forward hook);
* **L-CAM-Img** (``img``): the map, upsampled to the input size and through a sigmoid, multiplies the
  image, and the whole network runs on it.

Training (target: the ground-truth class) minimises, with ``M`` the sigmoid map,

    loss = cross_entropy(f(masked), y) + area * mean(M) + tv * TV(M)

where ``TV(M)`` is the mean absolute difference between vertically and horizontally adjacent values
of ``M`` (anisotropic total variation): the area term keeps the map small, the TV term smooth. The
classifier is frozen: in eval mode (batch-norm statistics untouched), its parameters never updated,
and bit-identical afterwards. A checkpoint (attention weights, optimiser state, step, losses) lets a
killed run resume and end with the same weights.

At inference one forward pass gives the attention's maps for all classes; the target's map is passed
through the sigmoid (Fm: at the layer's resolution, then upsampled; Img: upsampled, then the sigmoid)
and min-max normalised per image like the other class-activation maps.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnscope.artifacts import LcamArtifact
from cnnscope.attribution.base import normalize_maps, select
from cnnscope.bounds import bounded, positive
from cnnscope.checkpoint import Checkpoint, resume
from cnnscope.errors import CnnscopeError
from cnnscope.models.layers import evaluating, resolve_layer
from cnnscope.optim import Optimizer
from cnnscope.progress import track

VARIANTS = ("fm", "img")


@dataclass
class LCAMParams:
    """How an L-CAM attention module is trained (the lcam step's ``lcam`` config)."""

    steps: int = positive(200)
    batch_size: int = positive(32)
    lr: float = bounded(0.02, 0, open_lo=True)  # Adam
    area: float = bounded(0.5, 0)  # weight of mean(M), the map's area
    tv: float = bounded(0.5, 0)  # weight of TV(M), the map's total variation
    seed: int = bounded(0, 0)  # order of the training batches


class Attention(nn.Module):
    """A 1x1 convolution from ``channels`` feature maps to ``classes`` maps (zero-initialised)."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, classes, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.conv(feats)


def load_attention(
    lcam: str | os.PathLike[str], variants: Iterable[str], layer: str, device: torch.device
) -> dict[str, Attention]:
    """The trained attention of each variant (``fm``, ``img``) from an lcam step's output, by variant;
    refused if it was trained at another layer than ``layer``."""
    out = {}
    for variant in variants:
        state = torch.load(LcamArtifact(lcam).attention(variant), weights_only=True)
        if state["layer"] != layer:
            raise CnnscopeError(f"{lcam} was trained at layer {state['layer']!r}, not {layer!r}")
        w = state["state_dict"]["conv.weight"]
        attention = Attention(w.shape[1], w.shape[0])
        attention.load_state_dict(state["state_dict"])
        out[variant] = attention.to(device).eval()
    return out


def total_variation(m: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of vertically and horizontally adjacent values of ``(N, H, W)`` maps."""
    return (m[:, 1:] - m[:, :-1]).abs().mean() + (m[:, :, 1:] - m[:, :, :-1]).abs().mean()


def _pick(maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each image's target map: ``(N, C, h, w)`` -> ``(N, h, w)``."""
    return maps[torch.arange(len(maps), device=maps.device), targets]


class _Features:
    """The layer's output on the last forward pass; with ``replace``, the output becomes
    ``replace(output)`` (a new tensor: an in-place operation after the layer cannot reach it)."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.layer = resolve_layer(model, layer, type(model).__name__)
        self.output: torch.Tensor | None = None
        self.replace: Callable[[torch.Tensor], torch.Tensor] | None = None

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        self.output = output
        return self.replace(output) if self.replace is not None else output.clone()

    def __enter__(self) -> _Features:
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def _masked_logits(
    model: nn.Module,
    feats: _Features,
    attention: Attention,
    variant: str,
    x: torch.Tensor,
    targets: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier's logits on the masked features (fm) or image (img), and the sigmoid maps ``M``."""
    if variant == "fm":
        kept: dict[str, torch.Tensor] = {}

        def mask(o: torch.Tensor) -> torch.Tensor:
            kept["m"] = torch.sigmoid(_pick(attention(o), targets))
            return o * kept["m"][:, None]

        feats.replace = mask
        try:
            return model(x), kept["m"]
        finally:
            feats.replace = None
    with torch.no_grad():
        model(x)
    a = _pick(attention(feats.output.detach()), targets)
    m = torch.sigmoid(
        F.interpolate(a[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    )
    return model(x * m[:, None]), m


def train_lcam(
    model: nn.Module,
    layer: str,
    variant: str,
    classes: int,
    sample: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]],
    params: LCAMParams,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
) -> tuple[Attention, list[float]]:
    """Train the attention of ``variant`` on frozen ``model`` at ``layer``; ``sample(generator)`` draws
    one training batch ``(images, labels)`` (normalised, on the model's device). Returns the attention
    and the loss of every step."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown L-CAM variant {variant!r}; use one of {', '.join(VARIANTS)}")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(params.seed)
    grads = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with evaluating(model), _Features(model, layer) as feats:
            with torch.no_grad():
                model(sample(torch.Generator().manual_seed(params.seed))[0][:1])
            attention = Attention(feats.output.shape[1], classes).to(device)
            opt = Optimizer(list(attention.parameters()), "adam", params.lr)
            losses: list[float] = []
            state, start = resume(checkpoint, f"L-CAM-{variant}", "step", params.steps)
            if state is not None:
                attention.load_state_dict(state["attention"])
                opt.load_state_dict(state["optimizer"])
                gen.set_state(state["generator"])
                losses = list(state["losses"])
            desc = f"L-CAM-{variant} training"
            for step in track(
                range(start, params.steps), desc, enabled=progress, initial=start, total=params.steps
            ):
                x, y = sample(gen)
                logits, m = _masked_logits(model, feats, attention, variant, x, y)
                loss = F.cross_entropy(logits, y) + params.area * m.mean() + params.tv * total_variation(m)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the L-CAM-{variant} loss is not finite at step {step + 1}")
                if checkpoint and checkpoint.due() and step + 1 < params.steps:
                    checkpoint.save(
                        {
                            "step": step + 1,
                            "attention": attention.state_dict(),
                            "optimizer": opt.state_dict(),
                            "generator": gen.get_state(),
                            "losses": losses,
                        }
                    )
    finally:
        for p, g in zip(model.parameters(), grads, strict=True):
            p.requires_grad_(g)
    return attention, losses


class LCAM:
    """L-CAM maps from a trained attention: one forward pass, every class's map; use as a context
    manager like the other methods."""

    def __init__(self, model: nn.Module, layer: str, attention: Attention, variant: str) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown L-CAM variant {variant!r}; use one of {', '.join(VARIANTS)}")
        self.model, self.layer, self.attention, self.variant = model, layer, attention, variant
        self._feats: _Features | None = None

    def __enter__(self) -> LCAM:
        self._feats = _Features(self.model, self.layer).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._feats is not None:
            self._feats.__exit__()
            self._feats = None

    def __call__(self, x: torch.Tensor, targets: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """``(N, H, W)`` maps in [0, 1] for ``targets`` (default: the predicted class)."""
        if self._feats is None:
            raise RuntimeError("use LCAM as a context manager: with LCAM(...) as m: m(x)")
        with evaluating(self.model), torch.no_grad():
            logits = self.model(x)
            a = _pick(self.attention(self._feats.output), select(logits, targets))
        size = x.shape[-2:]
        if self.variant == "fm":
            m = F.interpolate(torch.sigmoid(a)[:, None], size=size, mode="bilinear", align_corners=False)
        else:
            m = torch.sigmoid(F.interpolate(a[:, None], size=size, mode="bilinear", align_corners=False))
        return normalize_maps(m[:, 0])
