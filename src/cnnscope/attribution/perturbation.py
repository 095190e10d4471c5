"""Perturbation methods: maps from how the model's scores change on masked inputs, no gradients.

* :class:`ScoreCAM` (Wang et al. 2020): each feature map of the layer, upsampled to the input and
  min-max normalised, masks the input; the channel's weight is the target's score on that masked
  input, and the map is ``ReLU(sum_k w_k A_k)`` at the layer's resolution, upsampled and scaled like
  the other class-activation maps. Two weightings, because the anchors differ:

  - ``probability`` (the paper and its authors' code): ``w_k`` is the target's softmax probability
    on the masked input;
  - ``channel_softmax`` (pytorch-grad-cam's ``ScoreCAM``): the target's logits on the masked inputs,
    softmax-normalised over the channels. ``tests/test_perturbation.py`` compares it with that
    library.

  Masks are upsampled with pixel centres aligned (``align_corners=False``), as every map in cnnscope
  (pytorch-grad-cam aligns corners).
* :class:`RISE` (Petsiuk et al. 2018): ``n_masks`` random binary ``grid x grid`` masks (each cell on
  with probability ``p``), upsampled bilinearly to ``(grid + 1) * ceil(H / grid)`` and cropped at a
  random shift; the map is ``sum_i P_i M_i / (n_masks * p)``, ``P_i`` the target's softmax probability
  on ``x * M_i``. The masks come from ``seed``: the same maps for the same seed.

* :class:`SIDU` (Muddamsetty, Jahromi & Moeslund, Pattern Recognition 2022, and the authors' code
  ``satyamahesh84/SIDU_XAI_CODE``): each feature map of the layer, binarised at ``threshold`` (the
  code's 0.5, on the raw activations) and upsampled bilinearly to the input, is a mask ``M_k``; with
  ``P_k`` the softmax vector on ``x * M_k``, ``P`` on ``x`` and ``t`` the target::

      SD_k = exp(-(P[t] - P_k[t])^2 / (2 sigma^2))       similarity difference, sigma = 0.25
      U_k  = minmax_k( sum_j ||P_k - P_j||_2 )            uniqueness, scaled over the masks
      S    = (1 / K) sum_k SD_k U_k M_k

  The code computes ``SD`` for every class (``sqrt(exp(-d^2 / sigma^2))``) and shows the target's
  row, which is the above; it also divides by 0.5 (RISE's ``p``), which the per-image scaling
  removes. ``MarcoParola/pytorch-sidu`` differs: it compares the masked inputs' *feature maps*, not
  their predictions, and binarises at 0.15.

Masked inputs run in batches of ``batch_size`` on the model's device; all three are context managers
like the other methods, and leave no hook behind. Their settings are :class:`ScoreCAMParams`,
:class:`RISEParams` and :class:`SIDUParams`, which the study's attribution step nests, so a map made
through the library with its defaults is the one the study makes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnscope.attribution.base import LayerAttribution, normalize_maps, select
from cnnscope.bounds import bounded, check_params, choice, positive
from cnnscope.errors import CnnscopeError
from cnnscope.models.layers import evaluating

Weighting = choice("Weighting", ("probability", "channel_softmax"))


@dataclass
class ScoreCAMParams:
    weighting: Weighting = Weighting.probability  # probability (the paper) | channel_softmax
    batch_size: int = positive(64)  # masked inputs per forward pass


@dataclass
class RISEParams:
    n_masks: int = positive(500)
    grid: int = positive(7)  # cells per side of a mask
    p: float = bounded(0.5, 0, 1, open_lo=True)  # probability a cell is on
    seed: int = bounded(0, 0)
    batch_size: int = positive(64)  # masked inputs per forward pass


@dataclass
class SIDUParams:
    threshold: float = 0.5  # a feature map's cell is on above this activation (the authors' code)
    sigma: float = bounded(0.25, 0, None, open_lo=True)  # the similarity kernel's width
    batch_size: int = positive(64)  # masked inputs per forward pass


def target_scores(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, probability: bool
) -> torch.Tensor:
    """The target's softmax probability (or logit) on each input; one target per input."""
    out = model(inputs)
    if probability:
        out = F.softmax(out, 1)
    return out.gather(1, targets[:, None])[:, 0]


class ScoreCAM(LayerAttribution):
    """Score-CAM: channel weights from the target's score on the input masked by each channel."""

    def __init__(
        self, model: nn.Module, layer: str, params: ScoreCAMParams | None = None, **settings
    ) -> None:
        """``params`` (default :class:`ScoreCAMParams`), with any of its fields replaced by ``settings``."""
        p = dataclasses.replace(params or ScoreCAMParams(), **settings)
        check_params(p)
        super().__init__(model, layer)
        self.weighting, self.batch_size = p.weighting, p.batch_size

    def channel_masks(self, acts: torch.Tensor, rows: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The masks of (image, channel) ``rows`` of ``acts.flatten(0, 1)``: ``(len(rows), H, W)``."""
        up = F.interpolate(acts.flatten(0, 1)[rows, None], size=size, mode="bilinear", align_corners=False)
        return normalize_maps(up[:, 0])

    def layer_maps(self, x: torch.Tensor, targets: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        if self._handle is None:
            raise RuntimeError("use ScoreCAM as a context manager: with ScoreCAM(...) as m: m(x)")
        with evaluating(self.model), torch.no_grad():
            logits = self.model(x)
            t = select(logits, targets)
            acts = self.store["activations"]
            n, k = acts.shape[:2]
            probability = self.weighting == "probability"
            scores = torch.empty(n * k, device=x.device)
            for a in range(0, n * k, self.batch_size):
                rows = torch.arange(a, min(a + self.batch_size, n * k), device=x.device)
                masks = self.channel_masks(acts, rows, x.shape[-2:])
                image = rows // k
                scores[rows] = target_scores(self.model, x[image] * masks[:, None], t[image], probability)
        w = scores.view(n, k)
        if not probability:
            w = F.softmax(w, 1)
        return (w[:, :, None, None] * acts).sum(1)


class RISE:
    """RISE: the probability-weighted average of random masks (see the module docstring)."""

    def __init__(self, model: nn.Module, params: RISEParams | None = None, **settings) -> None:
        """``params`` (default :class:`RISEParams`), with any of its fields replaced by ``settings``."""
        s = dataclasses.replace(params or RISEParams(), **settings)
        check_params(s)
        self.model, self.n_masks, self.grid, self.p = model, s.n_masks, s.grid, s.p
        self.seed, self.batch_size = s.seed, s.batch_size

    def __enter__(self) -> RISE:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def masks(self, size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
        """``(n_masks, H, W)`` smooth masks in [0, 1], the same for the same seed (drawn on the CPU)."""
        h, w = size
        ch, cw = math.ceil(h / self.grid), math.ceil(w / self.grid)
        gen = torch.Generator().manual_seed(self.seed)
        cells = (torch.rand(self.n_masks, 1, self.grid, self.grid, generator=gen) < self.p).float()
        up = F.interpolate(
            cells, size=((self.grid + 1) * ch, (self.grid + 1) * cw), mode="bilinear", align_corners=False
        )
        dy = torch.randint(0, ch, (self.n_masks,), generator=gen)
        dx = torch.randint(0, cw, (self.n_masks,), generator=gen)
        rows = (dy[:, None] + torch.arange(h))[:, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, :]
        return up[torch.arange(self.n_masks)[:, None, None], 0, rows, cols].to(device)

    def saliency(self, x: torch.Tensor, targets: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """``(N, H, W)``: the Monte Carlo estimate ``sum_i P_i M_i / (n_masks * p)``, unscaled."""
        with evaluating(self.model), torch.no_grad():
            t = self.model(x).argmax(1) if targets is None else torch.as_tensor(targets, device=x.device)
            if t.shape != (len(x),):
                raise ValueError(f"need one target per image ({len(x)}), got shape {tuple(t.shape)}")
            masks = self.masks(x.shape[-2:], x.device)
            sal = torch.zeros(len(x), *x.shape[-2:], device=x.device)
            for i in range(len(x)):
                for a in range(0, self.n_masks, self.batch_size):
                    m = masks[a : a + self.batch_size]
                    s = target_scores(self.model, x[i] * m[:, None], t[i].expand(len(m)), probability=True)
                    sal[i] += (s[:, None, None] * m).sum(0)
        return sal / (self.n_masks * self.p)

    def __call__(self, x: torch.Tensor, targets: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """``(N, H, W)`` maps in [0, 1]: :meth:`saliency` min-max scaled per image."""
        return normalize_maps(self.saliency(x, targets))


class SIDU(LayerAttribution):
    """SIDU: feature-map masks weighted by similarity difference and uniqueness (the module docstring)."""

    def __init__(self, model: nn.Module, layer: str, params: SIDUParams | None = None, **settings) -> None:
        """``params`` (default :class:`SIDUParams`), with any of its fields replaced by ``settings``."""
        p = dataclasses.replace(params or SIDUParams(), **settings)
        check_params(p)
        super().__init__(model, layer)
        self.threshold, self.sigma, self.batch_size = p.threshold, p.sigma, p.batch_size

    def masks(self, acts: torch.Tensor, rows: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``M_k`` of (image, channel) ``rows`` of ``acts.flatten(0, 1)``: ``(len(rows), H, W)``."""
        on = (acts.flatten(0, 1)[rows, None] > self.threshold).float()
        return F.interpolate(on, size=size, mode="bilinear", align_corners=False)[:, 0]

    def saliency(self, x: torch.Tensor, targets: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """``(N, H, W)``: ``S`` unscaled."""
        if self._handle is None:
            raise RuntimeError("use SIDU as a context manager: with SIDU(...) as m: m(x)")
        with evaluating(self.model), torch.no_grad():
            logits = self.model(x)
            t = select(logits, targets)
            acts = self.store["activations"]
            n, k = acts.shape[:2]
            peak = acts.flatten(1).amax(1)
            if (peak <= self.threshold).any():  # every mask empty: SIDU has nothing to weigh
                raise CnnscopeError(
                    f"SIDU: no activation of layer {self.layer_name!r} exceeds its threshold "
                    f"{self.threshold:g} on image {int((peak <= self.threshold).nonzero()[0])} (its largest "
                    f"is {float(peak.min()):.3g}); set the sidu threshold below the layer's activations "
                    "(perturbation.sidu.threshold in a study) or leave SIDU out"
                )
            probs = torch.empty(n * k, logits.shape[1], device=x.device)
            for a in range(0, n * k, self.batch_size):
                rows = torch.arange(a, min(a + self.batch_size, n * k), device=x.device)
                probs[rows] = F.softmax(
                    self.model(x[rows // k] * self.masks(acts, rows, x.shape[-2:])[:, None]), 1
                )
            probs = probs.view(n, k, -1)
            images = torch.arange(n, device=x.device)
            diff = probs[images, :, t] - F.softmax(logits, 1)[images, t][:, None]  # (N, K)
            weight = torch.exp(-(diff**2) / (2 * self.sigma**2)) * normalize_maps(
                torch.cdist(probs, probs).sum(2)
            )
            sal = torch.zeros(n, *x.shape[-2:], device=x.device)
            for a in range(0, n * k, self.batch_size):  # the masks again: all at once could be gigabytes
                rows = torch.arange(a, min(a + self.batch_size, n * k), device=x.device)
                sal.index_add_(
                    0, rows // k, weight.flatten()[rows, None, None] * self.masks(acts, rows, x.shape[-2:])
                )
        return sal / k

    def __call__(self, x: torch.Tensor, targets: torch.Tensor | list[int] | None = None) -> torch.Tensor:
        """``(N, H, W)`` maps in [0, 1]: :meth:`saliency` min-max scaled per image."""
        return normalize_maps(self.saliency(x, targets))
