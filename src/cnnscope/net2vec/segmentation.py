"""Segmentation embeddings: a learned weighting of a layer's units that segments each concept.

For concept ``l`` with weights ``w_l`` (one per unit) and bias ``b_l`` the predicted mask is
``sigma(w_l . up(A(x) / s) + b_l) > 0.5``, with ``up`` the bilinear upsampling to mask resolution that
dissection uses (:func:`cnnscope.dissection.unit_masks`) and ``s`` each unit's input scale
(``scaling: threshold`` divides by the unit's dissection threshold, so a weight of 1 and a bias of -1
reproduce the unit's own mask; a unit whose threshold is not positive keeps scale 1). Upsampling is
linear and its weights sum to one, so ``w . up(A) + b = up(w . A + b)``: the 1x1 convolution runs at
the layer's resolution and only its ``L`` outputs are upsampled, never the ``K`` units.

Loss (Fong & Vedaldi 2018, eq. 2): per-pixel binary cross-entropy, positives weighted ``1 - alpha_l``
and negatives ``alpha_l``, ``alpha_l`` the concept's share of positive pixels over its training images
(``balance: false`` weights both 1). A concept's images are those that carry its category
(:mod:`.concepts`). The loss is a sum over concepts whose terms share no parameter, and the optimisers
(Adam, SGD) update each parameter from its own gradient, so training all concepts at once equals
training each alone. All concepts train together as one convolution, batched, streamed from disk with
at most ``max_elements`` values per tensor, on the GPU when there is one; a killed run resumes from its
checkpoint (weights, optimiser state, epoch and batch) and ends with the same weights.

Evaluation is dissection's set IoU summed over images, ``sum |M & L| / sum |M | L|`` over the images
of the concept's category, for the best single unit (its dissection mask), the combination, and the
combination restricted to its top-k units by ``|w|`` (the other weights set to zero, the bias kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cnnscope.bounds import Range, bounded, choice, positive
from cnnscope.checkpoint import Checkpoint, resume
from cnnscope.data.packed import PackedDataset
from cnnscope.dissection import unit_masks
from cnnscope.net2vec.concepts import ConceptStats
from cnnscope.net2vec.embedding import top_k
from cnnscope.optim import OPTIMIZERS, Optimizer
from cnnscope.progress import track
from cnnscope.rows import Rows, read_rows

SCALINGS = ("threshold", "none")
OptimizerKind = choice("OptimizerKind", OPTIMIZERS)
Scaling = choice("Scaling", SCALINGS)


@dataclass
class SegmentationParams:
    """How the segmentation embeddings are trained (the net2vec step's ``segmentation`` config)."""

    epochs: int = positive(4)
    batch_size: int = positive(16)  # images per step (fewer where a batch would pass max_elements)
    optimizer: OptimizerKind = OptimizerKind.sgd
    lr: float = bounded(1.0, 0, open_lo=True)
    momentum: float = bounded(0.9, 0, 1, open_hi=True)  # sgd only
    weight_decay: float = bounded(0.0, 0)
    scaling: Scaling = Scaling.threshold  # threshold: units divided by their dissection threshold
    balance: bool = True  # the paper's alpha weighting of positive and negative pixels
    seed: int = bounded(0, 0)  # order of the batches in each epoch
    top_k: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16], metadata={"range": Range(1)})


def unit_scale(thresholds: np.ndarray, scaling: str) -> np.ndarray:
    """Each unit's input divisor: its threshold where positive (``threshold``), else 1."""
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; use one of {', '.join(SCALINGS)}")
    s = np.ones(len(thresholds), np.float32)
    if scaling == "threshold":
        s = np.where(thresholds > 0, thresholds, 1).astype(np.float32)
    return s


def logits(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor, size
) -> torch.Tensor:
    """``up(W . (A / s) + b)``: activations ``(B, K, h, w)`` to logits ``(B, L, *size)``."""
    z = F.conv2d(x / scale.view(1, -1, 1, 1), weight[:, :, None, None], bias)
    return F.interpolate(z, size=tuple(size), mode="bilinear", align_corners=False)


def _targets(masks: Rows, a: int, b: int, lut: torch.Tensor, n: int) -> torch.Tensor:
    """bool ``(B, L, P)``: the pixels of rows ``[a, b)`` labelled with each of the ``n`` concepts
    (``lut`` maps a label number to its concept index, ``n`` for none)."""
    pix = read_rows(masks, a, b).view(torch.int16).to(lut.device).long() & 0xFFFF
    idx = lut[pix.flatten(2)]  # (B, layers, P)
    out = torch.zeros(idx.shape[0], n + 1, idx.shape[2], dtype=torch.bool, device=lut.device)
    out.scatter_(1, idx, torch.ones_like(idx, dtype=torch.bool))
    return out[:, :n]


@dataclass
class Problem:
    """One layer's segmentation problem: the concepts, their images and pixel weights, the inputs."""

    acts: Rows
    data: PackedDataset
    masks: Rows
    labels: np.ndarray  # the concepts' label numbers (L,)
    universe: np.ndarray  # bool (N, L): the images of each concept's category
    split: np.ndarray  # str (N,)
    scale: np.ndarray  # float32 (K,)
    alpha: np.ndarray  # float64 (L,): positive-pixel share over the training images
    batch_size: int
    device: torch.device

    @classmethod
    def build(
        cls,
        acts: Rows,
        data: PackedDataset,
        stats: ConceptStats,
        labels: np.ndarray,
        scale: np.ndarray,
        device: torch.device,
        max_elements: int,
        batch_size: int,
    ) -> Problem:
        universe = stats.universe(labels)
        train_images = universe[stats.split == "train"].sum(0)
        p = int(np.prod(data.meta["mask_size"]))
        alpha = stats.train_pixels[labels] / np.maximum(train_images * p, 1)
        per_image = max(int(np.prod(acts.shape[1:])), len(labels) * p, data.masks.shape[1] * p)
        bs = max(1, min(batch_size, max_elements // per_image))
        return cls(acts, data, data.stream("masks"), labels, universe, stats.split, scale, alpha, bs, device)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.data.meta["mask_size"])

    def lut(self) -> torch.Tensor:
        lut = torch.full((self.data.n_label_slots,), len(self.labels), dtype=torch.long)
        lut[torch.as_tensor(self.labels)] = torch.arange(len(self.labels))
        return lut.to(self.device)

    def blocks(self, split: str) -> list[tuple[int, np.ndarray]]:
        """``(start, rows)`` of each batch of consecutive images that holds images of ``split``."""
        n = len(self.split)
        out = []
        for a in range(0, n, self.batch_size):
            rows = np.flatnonzero(self.split[a : a + self.batch_size] == split)
            if len(rows):
                out.append((a, rows))
        return out

    def batch(self, a: int, rows: np.ndarray, lut: torch.Tensor):
        """Activations, targets and the concepts' image mask of the ``rows`` of the batch at ``a``."""
        b = a + self.batch_size
        sel = torch.as_tensor(rows, device=self.device)
        x = read_rows(self.acts, a, b).to(self.device).float()[sel]
        y = _targets(self.masks, a, b, lut, len(self.labels))[sel]
        valid = torch.as_tensor(self.universe[a + rows], device=self.device)
        return x, y, valid


def _loss(z: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
    """Balanced per-pixel binary cross-entropy, summed over concepts, averaged over the batch's pixels.

    One fused kernel with per-concept weights broadcast, never a per-pixel weight tensor:
    ``neg * (pos / neg * y * softplus(-z) + (1 - y) * softplus(z))``, 0 outside a concept's images.
    """
    z = z.flatten(2)
    weight = (neg.view(1, -1) * valid)[:, :, None]
    ratio = (pos / neg.clamp(min=torch.finfo(neg.dtype).tiny)).view(-1, 1)
    loss = F.binary_cross_entropy_with_logits(
        z, y.flatten(2).to(z.dtype), weight=weight, pos_weight=ratio, reduction="sum"
    )
    return loss / (z.shape[0] * z.shape[2])


def train(
    problem: Problem,
    params: SegmentationParams,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The concepts' weights ``(L, K)`` and biases ``(L,)`` (from zeros), and each epoch's mean loss."""
    dev = problem.device
    k = problem.acts.shape[1]
    weight = torch.zeros(len(problem.labels), k, device=dev, requires_grad=True)
    bias = torch.zeros(len(problem.labels), device=dev, requires_grad=True)
    kind = OptimizerKind(params.optimizer).value
    opt = Optimizer([weight, bias], kind, params.lr, params.momentum, params.weight_decay)
    alpha = torch.as_tensor(problem.alpha, dtype=torch.float32, device=dev)
    pos, neg = (1 - alpha, alpha) if params.balance else (torch.ones_like(alpha), torch.ones_like(alpha))
    scale = torch.as_tensor(problem.scale, device=dev)
    lut, blocks = problem.lut(), problem.blocks("train")
    losses: list[float] = []
    state, _ = resume(checkpoint, "net2vec segmentation", "epoch", params.epochs)
    epoch, start, running = 0, 0, 0.0
    if state is not None:
        with torch.no_grad():
            weight.copy_(state["weight"])
            bias.copy_(state["bias"])
        opt.load_state_dict(state["optimizer"])
        epoch, start, running, losses = state["epoch"], state["block"], state["running"], state["losses"]
    for e in range(epoch, params.epochs):
        order = np.random.default_rng([params.seed, e]).permutation(len(blocks))
        desc = f"segmentation epoch {e + 1}/{params.epochs}"
        for i in track(range(start, len(blocks)), desc, enabled=progress, initial=start):
            x, y, valid = problem.batch(*blocks[order[i]], lut)
            loss = _loss(logits(x, weight, bias, scale, problem.size), y, valid, pos, neg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
            if checkpoint and checkpoint.due() and i + 1 < len(blocks):
                checkpoint.save(_state(weight, bias, opt, e, i + 1, running, losses))
        losses.append(running / max(1, len(blocks)))
        if not np.isfinite(losses[-1]):
            raise FloatingPointError(f"the segmentation loss is not finite in epoch {e + 1}")
        start, running = 0, 0.0
        if checkpoint and e + 1 < params.epochs:
            checkpoint.save(_state(weight, bias, opt, e + 1, 0, 0.0, losses))
    return weight.detach().cpu().numpy(), bias.detach().cpu().numpy(), losses


def _state(weight, bias, opt, epoch: int, block: int, running: float, losses: list[float]) -> dict:
    return {
        "weight": weight.detach().cpu().clone(),
        "bias": bias.detach().cpu().clone(),
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "block": block,
        "running": running,
        "losses": list(losses),
    }


@dataclass
class Scores:
    """Set-IoU counts on one split, per variant (rows) and concept (columns)."""

    variants: list[str]
    inter: np.ndarray  # float64 (V, L): sum |M & L|
    predicted: np.ndarray  # float64 (V, L): sum |M|
    truth: np.ndarray  # float64 (L,): sum |L|

    def iou(self) -> np.ndarray:
        union = self.predicted + self.truth[None] - self.inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, self.inter / union, 0.0)


def evaluate(
    problem: Problem,
    weight: np.ndarray,
    bias: np.ndarray,
    single_units: np.ndarray,
    thresholds: np.ndarray,
    ks: list[int],
    split: str = "val",
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
) -> Scores:
    """Set IoU on ``split`` of the single units (their dissection masks), the combination, and the
    combination restricted to its top-``k`` units for each ``k`` in ``ks``."""
    dev = problem.device
    w = torch.as_tensor(weight, device=dev)
    b = torch.as_tensor(bias, device=dev)
    combos = [("net2vec", w)] + [(f"top{k}", top_k(w, k)) for k in ks]
    variants = ["single", *(name for name, _ in combos)]
    units = torch.as_tensor(single_units, device=dev)
    unit_thr = torch.as_tensor(thresholds, dtype=torch.float32, device=dev)[units]
    scale = torch.as_tensor(problem.scale, device=dev)
    lut, blocks = problem.lut(), problem.blocks(split)
    n_l = len(problem.labels)
    inter = torch.zeros(len(variants), n_l, dtype=torch.float64, device=dev)
    predicted = torch.zeros_like(inter)
    truth = torch.zeros(n_l, dtype=torch.float64, device=dev)
    state, start = resume(checkpoint, "net2vec evaluation", "block", len(blocks))
    if state is not None:
        inter.copy_(state["inter"])
        predicted.copy_(state["predicted"])
        truth.copy_(state["truth"])

    def count(v: int, pred: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> None:
        pred = pred.flatten(2) & valid[:, :, None]
        inter[v] += (pred & y).sum((0, 2)).double()
        predicted[v] += pred.sum((0, 2)).double()

    with torch.no_grad():
        for i in track(range(start, len(blocks)), f"evaluate on {split}", enabled=progress, initial=start):
            x, y, valid = problem.batch(*blocks[i], lut)
            y = y.flatten(2) & valid[:, :, None]
            truth += y.sum((0, 2)).double()
            nb = len(x)
            single = unit_masks(x[:, units].flatten(0, 1), unit_thr.repeat(nb), problem.size)
            count(0, single.view(nb, n_l, *problem.size), y, valid)
            for v, (_, wv) in enumerate(combos, start=1):
                count(v, logits(x, wv, b, scale, problem.size) > 0, y, valid)
            if checkpoint and checkpoint.due():
                checkpoint.save(
                    {"block": i + 1, "inter": inter.cpu(), "predicted": predicted.cpu(), "truth": truth.cpu()}
                )
    return Scores(variants, inter.cpu().numpy(), predicted.cpu().numpy(), truth.cpu().numpy())
