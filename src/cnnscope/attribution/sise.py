"""SISE and Ada-SISE: input sampling with the feature maps of every block, fused block by block.

:class:`SISE` (Sattarzadeh, Sudhakar, Lem et al., "Explaining convolutional neural networks through
attribution-based input sampling and block-wise feature aggregation", AAAI 2021) explains the target
class ``t`` of an image ``x`` in four phases:

1. **Feature maps** at the end of each block: the output of the last module to run at each spatial
   resolution, up to the chosen layer (:func:`block_ends`; the paper takes the layer before each
   pooling layer of VGG-16 and the end of each stage of a ResNet, which this rule finds in both).
2. **Selection** by one backward pass: a block's feature map ``A_k`` is kept when its average gradient
   ``alpha_k = mean_ij d y_t / d A_k[i, j]`` is positive (and ``A_k`` is not constant: its mask would be
   empty, adding nothing for a forward pass).
3. **Attribution-based input sampling**, as RISE and Score-CAM sample: each kept map, upsampled
   bilinearly to the input and min-max scaled, is a mask ``M_k``; the block's visualisation map is
   ``V_b = sum_k P_t(x * M_k) M_k``, ``P_t`` the target's softmax probability.
4. **Fusion**, from the first block to the last: ``F_1 = n(V_1)``;
   ``F_b = (F_{b-1} + n(V_b)) * [n(V_b) > otsu(n(V_b))]``, ``n`` min-max scaling, ``otsu`` Otsu's
   threshold (:func:`otsu_threshold`): a deeper block keeps the shallower blocks' detail only where
   it finds the class itself. The explanation is ``n(F_B)``. A block that kept no map for an image
   has no visualisation map there and is passed over.

The public re-implementations differ in the fusion's scale: they add the raw ``V_b`` (a sum over as
many masks as the block kept) to the scaled ``F_{b-1}`` and multiply the binary mask by 255, so the
earlier blocks outweigh the later by factors of 255; here every block enters scaled to [0, 1].

:class:`AdaSISE` (Sudhakar, Sattarzadeh, Plataniotis et al., "Ada-SISE: adaptive semantic input
sampling for efficient explanation of convolutional neural networks", ICASSP 2021) keeps SISE's
sampling and fusion and selects fewer maps, adaptively: of a block's maps with positive average
gradient, those above the Otsu threshold of those gradients (all of them when fewer than two distinct
values leave nothing to threshold), which cuts the forward passes.

Masked inputs run in batches of ``batch_size`` on the model's device; the classes are context
managers like the other methods and leave no hook behind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cnnscope.attribution.base import normalize_maps, select
from cnnscope.attribution.perturbation import target_scores
from cnnscope.bounds import check_params, positive
from cnnscope.errors import ModelError
from cnnscope.models.layers import evaluating, resolve_layer


@dataclass
class SISEParams:
    batch_size: int = positive(64)  # masked inputs per forward pass


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each row of ``values`` ``(R, n)``, as scikit-image's ``threshold_otsu``
    computes it: a ``bins``-bin histogram over the row's range, the bin centre that maximises the
    between-class variance ``w_0 w_1 (mu_0 - mu_1)^2`` (foreground: values above it); a constant row's
    threshold is its value. In float64, so close values do not change bins by rounding."""
    v = values.double()
    lo, hi = v.min(1, keepdim=True).values, v.max(1, keepdim=True).values
    span = hi - lo
    idx = ((v - lo) / span.clamp(min=torch.finfo(v.dtype).tiny) * bins).floor().clamp(0, bins - 1).long()
    hist = torch.zeros(len(v), bins, dtype=v.dtype, device=v.device).scatter_add_(1, idx, torch.ones_like(v))
    centres = lo + span / bins * (torch.arange(bins, dtype=v.dtype, device=v.device) + 0.5)
    mass = hist * centres
    w0, w1 = hist.cumsum(1), hist.flip(1).cumsum(1).flip(1)
    mu0, mu1 = mass.cumsum(1) / w0, mass.flip(1).cumsum(1).flip(1) / w1
    between = w0[:, :-1] * w1[:, 1:] * (mu0[:, :-1] - mu1[:, 1:]) ** 2
    threshold = centres.gather(1, between.argmax(1, keepdim=True))[:, 0]
    return torch.where(span[:, 0] > 0, threshold, lo[:, 0]).to(values.dtype)


@dataclass
class _Record:
    depth: int
    order: int = 0
    calls: int = 0
    conv: bool = False
    output: torch.Tensor | None = field(default=None, repr=False)


def block_ends(records: dict[str, _Record], layer: str) -> list[str]:
    """The modules whose outputs SISE samples, in the order they run, ``layer`` last: for each spatial
    resolution met after the first convolution and before ``layer``'s own, the last module to run at
    that resolution among the outermost ones there (a ResNet's ``layer1``, not a convolution inside
    its next stage; a VGG's ReLU before each pooling layer). Modules called more than once are left
    out, their output being ambiguous."""
    mine = records[layer]
    if mine.output is None or mine.calls != 1:
        raise ModelError(f"SISE needs layer {layer!r} to output feature maps (N, C, H, W), computed once")
    first_conv = min((r.order for r in records.values() if r.conv), default=mine.order)
    found = [
        (name, r)
        for name, r in records.items()
        if r.output is not None and r.calls == 1 and first_conv <= r.order < mine.order
        if r.output.shape[-2:] != mine.output.shape[-2:]
    ]
    ends = []
    for size in dict.fromkeys(r.output.shape[-2:] for _, r in found):
        here = [(name, r) for name, r in found if r.output.shape[-2:] == size]
        top = min(r.depth for _, r in here)
        ends.append(max(((name, r) for name, r in here if r.depth == top), key=lambda nr: nr[1].order))
    return [name for name, _ in sorted(ends, key=lambda nr: nr[1].order)] + [layer]


def fuse(maps: list[torch.Tensor]) -> torch.Tensor:
    """SISE's cascade (phase 4) of per-block maps ``(N, H, W)``, first block first, in [0, 1]."""
    fused = torch.zeros_like(maps[0])
    started = torch.zeros(len(fused), dtype=torch.bool, device=fused.device)
    for v in maps:
        v = normalize_maps(v)
        present = v.flatten(1).amax(1) > 0
        keep = v > otsu_threshold(v.flatten(1))[:, None, None]
        cascaded = torch.where(started[:, None, None], (fused + v) * keep, v)
        fused = torch.where(present[:, None, None], cascaded, fused)
        started |= present
    return normalize_maps(fused)


class SISE:
    """SISE: block-wise input sampling with gradient-selected feature maps (the module docstring)."""

    def __init__(self, model: nn.Module, layer: str, params: SISEParams | None = None, **settings) -> None:
        """``params`` (default :class:`SISEParams`), with any of its fields replaced by ``settings``;
        ``layer`` is the last block's end (the other blocks are found before it)."""
        p = dataclasses.replace(params or SISEParams(), **settings)
        check_params(p)
        resolve_layer(model, layer, type(model).__name__)
        self.model, self.layer_name, self.batch_size = model, layer, p.batch_size

    def __enter__(self) -> SISE:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def blocks(
        self, x: torch.Tensor, targets: torch.Tensor | list[int] | None = None
    ) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """One forward and one backward pass: the block ends' names, their feature maps, the target's
        gradients with respect to them, and the targets."""
        records: dict[str, _Record] = {}
        clock = iter(range(1 << 62))

        def hook(name: str, depth: int, conv: bool):
            def record(module: nn.Module, inputs: tuple, output: object) -> torch.Tensor | None:
                r = records.setdefault(name, _Record(depth, conv=conv))
                r.order, r.calls = next(clock), r.calls + 1
                maps = isinstance(output, torch.Tensor) and output.dim() == 4
                r.output = output if maps else None
                # The network goes on with a copy: an in-place operation after the module (a ReLU,
                # a residual sum) cannot change the recorded maps or the gradient taken for them.
                return output.clone() if maps else None

            return record

        handles = [
            m.register_forward_hook(hook(name, name.count("."), isinstance(m, nn.Conv2d)))
            for name, m in self.model.named_modules()
            if name
        ]
        try:
            with torch.enable_grad():
                logits = self.model(x.detach().requires_grad_(True))
        finally:
            for h in handles:
                h.remove()
        t = select(logits, targets)
        names = block_ends(records, self.layer_name)
        acts = [records[n].output for n in names]
        grads = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), acts)
        return names, [a.detach() for a in acts], list(grads), t

    def selected(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """``(N, K)``: which of a block's maps sample the input (positive average gradient, not
        constant)."""
        varies = acts.flatten(2).amax(2) > acts.flatten(2).amin(2)
        return (grads.mean((2, 3)) > 0) & varies

    def block_map(
        self, x: torch.Tensor, t: torch.Tensor, acts: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """``V_b`` ``(N, H, W)``: the kept maps as masks, each weighted by the target's probability on
        the input it masks."""
        n, k = keep.shape
        rows = keep.flatten().nonzero()[:, 0]
        v = torch.zeros(n, *x.shape[-2:], device=x.device, dtype=x.dtype)
        for a in range(0, len(rows), self.batch_size):
            r = rows[a : a + self.batch_size]
            up = F.interpolate(
                acts.flatten(0, 1)[r, None], size=x.shape[-2:], mode="bilinear", align_corners=False
            )
            masks = normalize_maps(up[:, 0])
            image = r // k
            p = target_scores(self.model, x[image] * masks[:, None], t[image], probability=True)
            v.index_add_(0, image, p[:, None, None] * masks)
        return v

    def __call__(self, x: torch.Tensor, targets: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """``(N, H, W)`` explanations in [0, 1]."""
        with evaluating(self.model):
            _, acts, grads, t = self.blocks(x, targets)
            with torch.no_grad():
                maps = [
                    self.block_map(x, t, a, self.selected(g, a)) for a, g in zip(acts, grads, strict=True)
                ]
        return fuse(maps)


class AdaSISE(SISE):
    """Ada-SISE: SISE with the maps whose positive average gradient passes Otsu's threshold."""

    def selected(self, grads: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        keep = super().selected(grads, acts)
        alpha = grads.mean((2, 3))
        for i in range(len(keep)):
            rising = alpha[i][alpha[i] > 0]
            if rising.unique().numel() > 1:
                keep[i] &= alpha[i] > otsu_threshold(rising[None])[0]
        return keep
