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

The loss is dense (every concept at every mask pixel), so how it is computed sets Net2Vec's cost. The
gradient is written out rather than left to autograd, which would keep every intermediate map: only
the (image, concept) pairs whose image carries the concept's category are computed; the upsampling is
two small matrices (:class:`Upsampling`), the logits are upsampled a cache-sized chunk of pairs at a
time, every pixel is scored as a negative with two vectorised kernels, and the few positive pixels
are corrected from a sparse list (:func:`_balanced_bce`). ``tests/test_net2vec.py`` checks the loss
and both gradients against autograd on the dense definition.

Evaluation is dissection's set IoU summed over images, ``sum |M & L| / sum |M | L|`` over the images
of the concept's category, for the best single unit (its dissection mask), the combination, and the
combination restricted to its top-k units by ``|w|`` (the other weights set to zero, the bias kept).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from cnnscope.bounds import Range, bounded, choice, positive
from cnnscope.checkpoint import Checkpoint, resume
from cnnscope.data.packed import PackedDataset, read_labels
from cnnscope.dissection import batch_images, may_exceed, unit_masks
from cnnscope.net2vec.concepts import ConceptStats
from cnnscope.net2vec.embedding import top_k
from cnnscope.optim import OPTIMIZERS, Optimizer
from cnnscope.progress import track
from cnnscope.rows import Rows, read_rows

SCALINGS = ("threshold", "none")
OptimizerKind = choice("OptimizerKind", OPTIMIZERS)
Scaling = choice("Scaling", SCALINGS)
# Values per dense buffer on the CPU: 64 maps of 112 x 112 (4 MB) stay in cache, where the sigmoid and
# log over 256 maps ran 1.5-4x slower per value (a GPU takes the step's whole max_elements).
CPU_CHUNK = 1 << 20
LOG_FOLDS = 6  # values multiplied before one log: 2**6 (see _sum_log)


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


def linear_weights(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)``: the weights of 1-D linear interpolation with pixel centres aligned, read off
    ``F.interpolate`` (``align_corners=False``, dissection's choice) by interpolating the identity."""
    eye = torch.eye(n_in)[None]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T.contiguous()


@dataclass(frozen=True)
class Upsampling:
    """Dissection's bilinear upsampling from the layer's grid ``(h, w)`` to the masks' ``(H, W)`` as two
    matrices, ``up(z) = U_h z U_w^T`` (bilinear is separable): two small matrix products per map, and
    the transpose ``down(g) = U_h^T g U_w`` carries a per-pixel gradient back to the grid."""

    rows: torch.Tensor  # (H, h)
    cols: torch.Tensor  # (W, w)

    @classmethod
    def between(cls, grid: tuple[int, int], size: tuple[int, int], device: torch.device) -> Upsampling:
        return cls(*(linear_weights(g, s).to(device) for g, s in zip(grid, size, strict=True)))

    @property
    def size(self) -> tuple[int, int]:
        return self.rows.shape[0], self.cols.shape[0]

    def up(self, z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``(r, h, w)`` to ``(r, H, W)``, into ``out`` if given."""
        return torch.matmul(self.rows, torch.matmul(z, self.cols.T), out=out)

    def down(self, g: torch.Tensor) -> torch.Tensor:
        """``(r, H, W)`` to ``(r, h, w)``: the transpose of :meth:`up`."""
        return torch.matmul(torch.matmul(self.rows.T, g), self.cols)


@dataclass
class Batch:
    """One batch's activations, the (image, concept) pairs it scores, and their positive pixels.

    A pair is scored only where the image carries the concept's category; the others have weight 0
    in the loss and are never computed (on Broden, an OpenSurfaces image leaves out every object and
    part concept). Positives are few (a pixel has one label per mask layer), so they are kept as a
    sparse list and every other pixel of a pair is a negative.
    """

    x: torch.Tensor  # float (B, K, h, w)
    pairs: torch.Tensor  # long (R,): image * L + concept, ascending
    pos_pair: torch.Tensor  # long (Q,): each positive pixel's pair (an index into ``pairs``), ascending
    pos_pixel: torch.Tensor  # long (Q,): its flat pixel index in the mask
    area: int  # H * W, the mask's pixels

    def chunks(
        self, rows: int, among: torch.Tensor | None = None
    ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """``(a, b, pair, at)`` for the pairs ``among`` (ascending indices into :attr:`pairs`; all of
        them by default) taken ``rows`` at a time, ``among[a:b]`` in each chunk: each of their positive
        pixels' position within the chunk and its flat index in a ``(b - a, H * W)`` buffer."""
        n = len(self.pairs) if among is None else len(among)
        pos_pair, pos_pixel = self.pos_pair, self.pos_pixel
        if among is not None:
            rank = torch.full((len(self.pairs),), -1, dtype=torch.long, device=among.device)
            rank[among] = torch.arange(n, device=among.device)
            pos_pair = rank[pos_pair]
            pos_pair, pos_pixel = pos_pair[pos_pair >= 0], pos_pixel[pos_pair >= 0]
        marks = torch.arange(0, n + rows, rows, device=pos_pair.device)
        edges = torch.searchsorted(pos_pair, marks).tolist()
        for i, a in enumerate(range(0, n, rows)):
            pair = pos_pair[edges[i] : edges[i + 1]] - a
            yield a, min(n, a + rows), pair, pair * self.area + pos_pixel[edges[i] : edges[i + 1]]


def _sum_log(m: torch.Tensor) -> torch.Tensor:
    """``sum(log(m), 1)`` of ``(r, n)`` values in ``[1/2, 1]``, overwriting ``m``: the log is the costly
    kernel, so up to ``2**LOG_FOLDS`` values are first multiplied (a product of 64 stays above
    ``2**-64``, far from float32's smallest normal, and rounds no worse than the 64 logs would sum)."""
    n = m.shape[1]
    for _ in range(LOG_FOLDS):
        half = n // 2
        if not half:
            break
        m[:, :half].mul_(m[:, n - half : n])  # pairs i with i + n - half; an odd middle stays
        n -= half
    return torch.log(m[:, :n]).sum(1)


def _balanced_bce(
    z: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, batch: Batch, up: Upsampling, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair, the balanced BCE summed over the mask's pixels ``(R,)`` and its gradient with respect
    to the pair's logits on the layer's grid ``(R, h, w)``; ``z`` the grid logits, ``pos``/``neg``
    each pair's positive and negative weight, ``chunk`` values per dense buffer.

    Every pixel is first a negative, ``neg * softplus(Z)`` with gradient ``neg * sigmoid(Z)``. From
    ``S = sigmoid(Z)``, ``softplus(Z) = max(Z, 0) - log(max(S, 1 - S))``: torch's softplus and log1p
    run 20x slower than its sigmoid on the CPU, and the logs are summed through products
    (:func:`_sum_log`). Each term is exact to float32 rounding of ``S`` (below 6e-8, where ``Z < -16.6``,
    it rounds to 0). Each positive pixel is then corrected to ``pos * softplus(-Z)``, gradient
    ``pos * (sigmoid(Z) - 1)``.
    """
    rows = max(1, min(len(z), chunk // batch.area))
    loss = torch.empty(len(z), dtype=z.dtype, device=z.device)
    grad = torch.empty_like(z)
    logit = torch.empty(rows, batch.area, dtype=z.dtype, device=z.device)
    prob, work = torch.empty_like(logit), torch.empty_like(logit)
    for a, b, pair, at in batch.chunks(rows):
        n = b - a
        zz = up.up(z[a:b], out=logit[:n].view(n, *up.size)).view(n, -1)
        s = torch.sigmoid(zz, out=prob[:n])
        dense = torch.clamp(zz, min=0, out=work[:n]).sum(1)
        dense -= _sum_log(torch.maximum(s, torch.sub(1, s, out=work[:n]), out=work[:n]))
        zp, sp = zz.view(-1)[at], s.view(-1)[at]
        wp, wn = pos[a:b][pair], neg[a:b][pair]
        fix = torch.zeros(n, dtype=z.dtype, device=z.device)
        loss[a:b] = neg[a:b] * dense + fix.index_add_(0, pair, (wp - wn) * F.softplus(zp) - wp * zp)
        s.mul_(neg[a:b].view(-1, 1)).view(-1).index_add_(0, at, (wp - wn) * sp - wp)
        grad[a:b] = up.down(s.view(n, *up.size))
    return loss, grad


def _grid_logits(batch: Batch, weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor):
    """The scaled activations ``(B, K, h*w)`` and every pair's logits on the layer's grid ``(R, h, w)``."""
    xs = batch.x.flatten(2) / scale.view(1, -1, 1)
    z = (torch.matmul(weight, xs) + bias.view(1, -1, 1)).flatten(0, 1)[batch.pairs]
    return xs, z.view(-1, *batch.x.shape[2:])


def loss_and_grad(
    problem: Problem,
    batch: Batch,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's balanced BCE, summed over concepts and averaged over its images' pixels, and its
    gradients with respect to ``weight`` ``(L, K)`` and ``bias`` ``(L,)``; ``pos``/``neg`` ``(L,)``."""
    n_img, n_l = len(batch.x), len(weight)
    xs, z = _grid_logits(batch, weight, bias, problem.scale_tensor)
    concept = batch.pairs % n_l
    loss, grad = _balanced_bce(z, pos[concept], neg[concept], batch, problem.upsampling, problem.chunk)
    norm = n_img * batch.area
    g = torch.zeros(n_img * n_l, xs.shape[2], dtype=xs.dtype, device=xs.device)
    g.index_copy_(0, batch.pairs, grad.flatten(1) / norm)
    g = g.view(n_img, n_l, -1)
    return loss.sum() / norm, torch.einsum("blp,bkp->lk", g, xs), g.sum((0, 2))


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
    chunk: int  # values per dense (pairs x pixels) buffer
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
        bs = min(batch_size, batch_images(acts, data, max_elements))
        chunk = max_elements if device.type == "cuda" else min(max_elements, CPU_CHUNK)
        masks = data.stream("masks")
        return cls(acts, data, masks, labels, universe, stats.split, scale, alpha, bs, chunk, device)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.data.meta["mask_size"])

    @cached_property
    def upsampling(self) -> Upsampling:
        return Upsampling.between(tuple(self.acts.shape[2:]), self.size, self.device)

    @cached_property
    def scale_tensor(self) -> torch.Tensor:
        return torch.as_tensor(self.scale, device=self.device)

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

    def batch(self, a: int, rows: np.ndarray, lut: torch.Tensor) -> Batch:
        """The ``rows`` of the batch at ``a``: activations, pairs and positive pixels."""
        b, dev, n_l = a + self.batch_size, self.device, len(self.labels)
        sel = torch.as_tensor(rows, device=dev)
        x = read_rows(self.acts, a, b).to(dev).float()[sel]
        concept = lut[read_labels(self.masks, a, b, dev)[sel].flatten(2)]  # (B, layers, P); L: none
        pairs = torch.as_tensor(self.universe[a + rows], device=dev).flatten().nonzero()[:, 0]
        rank = torch.full((len(rows) * n_l,), -1, dtype=torch.long, device=dev)
        rank[pairs] = torch.arange(len(pairs), device=dev)
        image, layer, pixel = (concept < n_l).nonzero(as_tuple=True)
        pair = rank[image * n_l + concept[image, layer, pixel]]
        area = int(np.prod(self.size))
        key = torch.unique((pair * area + pixel)[pair >= 0])  # sorted; a pixel twice counts once
        return Batch(x, pairs, key // area, key % area, area)


def train(
    problem: Problem,
    params: SegmentationParams,
    progress: bool = True,
    checkpoint: Checkpoint | None = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The concepts' weights ``(L, K)`` and biases ``(L,)`` (from zeros), and each epoch's mean loss."""
    dev = problem.device
    k = problem.acts.shape[1]
    weight = torch.zeros(len(problem.labels), k, device=dev)
    bias = torch.zeros(len(problem.labels), device=dev)
    kind = OptimizerKind(params.optimizer).value
    opt = Optimizer([weight, bias], kind, params.lr, params.momentum, params.weight_decay)
    alpha = torch.as_tensor(problem.alpha, dtype=torch.float32, device=dev)
    pos, neg = (1 - alpha, alpha) if params.balance else (torch.ones_like(alpha), torch.ones_like(alpha))
    lut, blocks = problem.lut(), problem.blocks("train")
    losses: list[float] = []
    state, _ = resume(checkpoint, "net2vec segmentation", "epoch", params.epochs)
    epoch, start, running = 0, 0, 0.0
    if state is not None:
        weight.copy_(state["weight"])
        bias.copy_(state["bias"])
        opt.load_state_dict(state["optimizer"])
        epoch, start, running, losses = state["epoch"], state["block"], state["running"], state["losses"]
    for e in range(epoch, params.epochs):
        order = np.random.default_rng([params.seed, e]).permutation(len(blocks))
        desc = f"segmentation epoch {e + 1}/{params.epochs}"
        for i in track(range(start, len(blocks)), desc, enabled=progress, initial=start):
            batch = problem.batch(*blocks[order[i]], lut)
            loss, weight.grad, bias.grad = loss_and_grad(problem, batch, weight, bias, pos, neg)
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
    return weight.cpu().numpy(), bias.cpu().numpy(), losses


def _state(weight, bias, opt, epoch: int, block: int, running: float, losses: list[float]) -> dict:
    return {
        "weight": weight.cpu().clone(),
        "bias": bias.cpu().clone(),
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


def _count(
    batch: Batch, maps: torch.Tensor, thr: torch.Tensor | None, up: Upsampling, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair, the pixels of its mask and those of them that are positives, ``(R,)`` each: the
    single units' dissection masks (``thr`` their thresholds) or where the combinations' logits are
    positive (``thr`` None). Only maps that :func:`may_exceed` their threshold are upsampled; the
    others have no pixel, exactly."""
    hot = may_exceed(maps, torch.zeros(len(maps), device=maps.device) if thr is None else thr)
    hot = hot.nonzero()[:, 0]
    predicted = torch.zeros(len(maps), dtype=torch.float64, device=maps.device)
    inter = torch.zeros_like(predicted)
    for a, b, pair, at in batch.chunks(max(1, chunk // batch.area), among=hot):
        sel = hot[a:b]
        m = up.up(maps[sel]) > 0 if thr is None else unit_masks(maps[sel], thr[sel], up.size)
        predicted[sel] = torch.count_nonzero(m.flatten(1), dim=1).double()
        inter.index_add_(0, sel[pair], m.view(-1)[at].double())
    return predicted, inter


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
    dev, n_l = problem.device, len(problem.labels)
    w = torch.as_tensor(weight, device=dev)
    b = torch.as_tensor(bias, device=dev)
    combos = [("net2vec", w)] + [(f"top{k}", top_k(w, k)) for k in ks]
    variants = ["single", *(name for name, _ in combos)]
    units = torch.as_tensor(single_units, device=dev)
    unit_thr = torch.as_tensor(thresholds, dtype=torch.float32, device=dev)[units]
    lut, blocks = problem.lut(), problem.blocks(split)
    inter = torch.zeros(len(variants), n_l, dtype=torch.float64, device=dev)
    predicted = torch.zeros_like(inter)
    truth = torch.zeros(n_l, dtype=torch.float64, device=dev)
    state, start = resume(checkpoint, "net2vec evaluation", "block", len(blocks))
    if state is not None:
        inter.copy_(state["inter"])
        predicted.copy_(state["predicted"])
        truth.copy_(state["truth"])

    with torch.no_grad():
        for i in track(range(start, len(blocks)), f"evaluate on {split}", enabled=progress, initial=start):
            batch = problem.batch(*blocks[i], lut)
            concept = batch.pairs % n_l
            truth.index_add_(0, concept[batch.pos_pair], torch.ones_like(batch.pos_pair, dtype=torch.float64))
            # Each variant's maps and thresholds: the single unit's activations, the combinations' logits.
            single = batch.x[batch.pairs // n_l, units[concept]]
            found = [(single, unit_thr[concept])]
            found += [(_grid_logits(batch, wv, b, problem.scale_tensor)[1], None) for _, wv in combos]
            for v, (maps, thr) in enumerate(found):
                pred, hit = _count(batch, maps, thr, problem.upsampling, problem.chunk)
                predicted[v].index_add_(0, concept, pred)
                inter[v].index_add_(0, concept, hit)
            if checkpoint and checkpoint.due():
                checkpoint.save(
                    {"block": i + 1, "inter": inter.cpu(), "predicted": predicted.cpu(), "truth": truth.cpu()}
                )
    return Scores(variants, inter.cpu().numpy(), predicted.cpu().numpy(), truth.cpu().numpy())
