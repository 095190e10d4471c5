"""Compositional explanations (Mu & Andreas, NeurIPS 2020): each unit as a logical formula of concepts.

A formula joins concepts left to right, ``((c0 op1 c1) op2 c2)``, with ``op`` one of AND, OR and
AND NOT. Its mask ``F(x)`` at mask resolution is built from the concepts' masks, a concept's mask
being its labelled pixels or, for an image-level label, the whole image (as in
:mod:`cnnscope.dissection`, whose unit masks ``M_u`` and symbols this module shares).

IoU of formula ``F`` for unit ``u``, counted in integers over every mask pixel of the probe set::

    IoU(F, u) = |M_u & F| / (A_S(u) + |F| - |M_u & F|),

``S`` the categories of ``F``'s concepts and ``A_S(u)`` the unit's area over the images that speak
about them: in ``paper`` mode the images that carry a label of a category in ``S``; in ``lite`` mode
those where the unit's mask covers a pixel labelled with a category in ``S`` or that carry an
image-level label of one. For a single concept this is dissection's IoU exactly, in both modes (a
test). The reference implementation (``jayelm/compexp``, built on NetDissect-Lite) counts the unit's
area over every image instead; with one category per formula the two agree on which images count
only in ``paper`` mode on a probe set whose every image carries that category.

* **Beam search** (the reference code's ``vision/settings.py``: ``BEAM_SIZE = 5``,
  ``MAX_FORMULA_LENGTH = 3``, every concept a candidate): the beam starts as the best single
  concepts; each step joins every beam formula with every concept not in it by each operator, and
  the new beam is the best ``beam_size`` of everything scored so far. A commutative pair
  (``a AND b``, ``a OR b``) is scored once.
* **Exhaustive length 2** (:meth:`FormulaSearch.best_pair`): every pair and operator, pruned by upper
  bounds on the IoU a pair can still reach from per-concept counts alone; "Guaranteed Optimal
  Compositional Explanations" (arXiv 2511.20934) found beam search's answers often suboptimal, and
  this measures how often on the probe set.

Ties between equal IoUs go to the shorter formula, then the earlier in the search's canonical order
(operators AND, OR, AND NOT; concepts by label number), so that both searches agree. Counts are exact
integers; IoUs are their float64 ratio.

The concepts' masks are held dense, ``N * P`` pixels by ``L`` concepts (``max_bytes`` bounds it): a
probe set of the default study's size costs megabytes; full Broden does not fit (not built yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cnnscope.data.packed import PackedDataset, read_labels
from cnnscope.dissection import IOU_MODES, active_pixels, batch_elements
from cnnscope.errors import CnnscopeError
from cnnscope.rows import Rows, read_rows

OPS = ("AND", "OR", "AND NOT")
COMMUTATIVE = ("AND", "OR")
MAX_BYTES = 1 << 30  # the dense concept masks' limit
BEAM_SIZE = 5  # the reference code's BEAM_SIZE
MAX_LENGTH = 3  # the reference code's MAX_FORMULA_LENGTH
CHUNK = 1 << 14  # pixel rows counted at once (a widened copy of them is CHUNK x L x 8 bytes)


@dataclass(frozen=True)
class Formula:
    """Concept columns ``terms`` (indices into :attr:`FormulaSearch.labels`) joined left to right by
    ``ops`` (one fewer)."""

    terms: tuple[int, ...]
    ops: tuple[str, ...] = ()

    @property
    def length(self) -> int:
        return len(self.terms)

    @property
    def key(self) -> tuple:
        """The canonical order that breaks ties: shorter first, then by operators (AND, OR, AND NOT),
        then by concept columns."""
        return (self.length, tuple(OPS.index(o) for o in self.ops), self.terms)

    def join(self, op: str, term: int) -> Formula:
        """``(self op term)``; a commutative pair of single concepts in ascending order."""
        if self.length == 1 and op in COMMUTATIVE and term < self.terms[0]:
            return Formula((term, self.terms[0]), (op,))
        return Formula((*self.terms, term), (*self.ops, op))

    def render(self, names: list[str]) -> str:
        """``(a OR b) AND NOT c``."""
        text = names[self.terms[0]]
        for i, (op, term) in enumerate(zip(self.ops, self.terms[1:], strict=True)):
            text = f"({text}) {op} {names[term]}" if i else f"{text} {op} {names[term]}"
        return text


def evaluate(formula: Formula, columns: torch.Tensor) -> torch.Tensor:
    """The formula's mask over the rows of ``columns`` ``bool (rows, L)`` (each row a pixel)."""
    out = columns[:, formula.terms[0]].clone()
    for op, term in zip(formula.ops, formula.terms[1:], strict=True):
        col = columns[:, term]
        out = out & col if op == "AND" else out | col if op == "OR" else out & ~col
    return out


@dataclass
class Scored:
    """A formula's exact counts for one unit: ``inter = |M_u & F|``, ``union``; ``iou`` their ratio."""

    formula: Formula
    inter: int
    union: int

    @property
    def iou(self) -> float:
        return self.inter / self.union if self.union else 0.0


@dataclass
class _Unit:
    """One unit's mask: its active pixels' concept rows, its area per image, and the images each
    category's universe counts (``bool (N, ncat)``)."""

    rows: torch.Tensor  # bool (n_active, L)
    area: torch.Tensor  # int64 (N,)
    universe: torch.Tensor  # bool (N, ncat)

    def area_over(self, categories: torch.Tensor) -> torch.Tensor:
        """``A_S(u)`` for each row of ``categories`` ``bool (k, ncat)``: the unit's area over the
        images that carry some category of the row."""
        counted = (self.universe.double() @ categories.double().T) > 0  # (N, k)
        return (self.area[:, None] * counted).sum(0)


class FormulaSearch:
    """Formulas of the probe set's concepts for the units of one layer (see the module docstring)."""

    def __init__(self, data: PackedDataset, iou_mode: str = "paper", max_bytes: int = MAX_BYTES) -> None:
        if iou_mode not in IOU_MODES:
            raise CnnscopeError(f"unknown iou_mode {iou_mode!r}; use one of {', '.join(IOU_MODES)}")
        self.data, self.mode = data, iou_mode
        n = len(data)
        sh, sw = data.meta["mask_size"]
        self.pixels = sh * sw
        label_cat = data.label_category()
        masks = read_labels(np.asarray(data.masks), 0, n, torch.device("cpu")).flatten(2)  # (N, K, P)
        scalars = torch.from_numpy(data.scalars.astype(np.int64))  # (N, S)
        seen = torch.zeros(data.n_label_slots, dtype=torch.bool)
        seen[masks.flatten()] = True
        seen[scalars.flatten()] = True
        seen[0] = False
        seen &= torch.from_numpy(label_cat >= 0)
        self.labels = seen.nonzero().flatten().numpy()  # label numbers, ascending
        self.category = torch.from_numpy(label_cat[self.labels])
        ncat, big = len(data.categories), len(self.labels)
        need = n * self.pixels * big
        if need > max_bytes:
            raise CnnscopeError(
                f"{data.root}: the formula search holds every concept's mask densely, {need / 2**20:.0f} MiB "
                f"for {n} images x {self.pixels} mask pixels x {big} concepts, over its "
                f"{max_bytes >> 20} MiB limit; use a smaller probe set"
            )
        column = torch.full((data.n_label_slots,), -1, dtype=torch.long)
        column[torch.from_numpy(self.labels)] = torch.arange(big)
        cols = torch.zeros(n, self.pixels, big + 1, dtype=torch.bool)  # the last column: no concept
        image = torch.arange(n)[:, None].expand(n, self.pixels)
        pixel = torch.arange(self.pixels)[None, :].expand(n, self.pixels)
        for k in range(masks.shape[1]):
            cols[image, pixel, column[masks[:, k]]] = True
        on_image = column[scalars]  # (N, S)
        for s in range(on_image.shape[1]):
            cols[torch.arange(n), :, on_image[:, s]] = True
        self.columns = cols[..., :big].reshape(n * self.pixels, big)
        self.size = _column_counts(self.columns)  # |C_l|
        cat_of = torch.cat([self.category, torch.tensor([-1])])
        pcat = cat_of[column[masks]]  # (N, K, P) categories of each pixel's labels, -1 for none
        self.pixel_category = torch.zeros(n, self.pixels, ncat + 1, dtype=torch.bool)
        for k in range(masks.shape[1]):
            self.pixel_category[image, pixel, pcat[:, k]] = True
        self.pixel_category = self.pixel_category[..., :ncat].reshape(n * self.pixels, ncat)
        self.scalar_category = torch.zeros(n, ncat + 1, dtype=torch.bool)
        for s in range(on_image.shape[1]):
            self.scalar_category[torch.arange(n), cat_of[on_image[:, s]]] = True
        self.scalar_category = self.scalar_category[:, :ncat]
        self.image_category = self.scalar_category | self.pixel_category.view(n, self.pixels, ncat).any(1)
        self._whole: dict[Formula, tuple[int, torch.Tensor]] = {}

    @property
    def names(self) -> list[str]:
        """Each concept column's label name."""
        names = self.data.label_names()
        return [names[i] for i in self.labels]

    # --- units -------------------------------------------------------------------------------------
    def units(self, acts: Rows, thresholds: np.ndarray, max_elements: int = 0) -> list[torch.Tensor]:
        """Each unit's active pixels (flat indices ``image * P + pixel``), ``M_u`` as dissection defines
        it (:func:`cnnscope.dissection.unit_masks`), read in batches of images."""
        n, c = acts.shape[:2]
        if n != len(self.data):
            raise CnnscopeError(f"activations cover {n} images but the probe set has {len(self.data)}")
        sh, sw = self.data.meta["mask_size"]
        thr = torch.as_tensor(thresholds, dtype=torch.float32)
        max_elements = batch_elements(max_elements, "cpu")
        per_image = max(int(np.prod(acts.shape[1:])), self.pixels)
        batch = max(1, max_elements // per_image)
        found: list[list[torch.Tensor]] = [[] for _ in range(c)]
        for a in range(0, n, batch):
            x = read_rows(acts, a, a + batch).float()
            for ab, au, ap in active_pixels(x, thr, (sh, sw), max_elements):
                flat = (ab + a) * self.pixels + ap
                for u in au.unique().tolist():
                    found[u].append(flat[au == u])
        return [torch.cat(f).sort().values if f else torch.zeros(0, dtype=torch.long) for f in found]

    def _unit(self, active: torch.Tensor) -> _Unit:
        n = len(self.data)
        images = active // self.pixels
        area = torch.bincount(images, minlength=n)
        if self.mode == "paper":
            universe = self.image_category
        else:
            touched = torch.zeros(n, self.image_category.shape[1], dtype=torch.long)
            touched.index_add_(0, images, self.pixel_category[active].long())
            universe = (touched > 0) | self.scalar_category
        return _Unit(self.columns[active], area, universe)

    def _categories(self, terms: tuple[int, ...]) -> torch.Tensor:
        out = torch.zeros(self.image_category.shape[1], dtype=torch.bool)
        out[self.category[list(terms)]] = True
        return out

    def _formula_counts(self, formula: Formula) -> tuple[int, torch.Tensor]:
        """``|F|`` and ``|F & C_l|`` for every concept, kept for the next unit that asks."""
        if formula not in self._whole:
            mask = evaluate(formula, self.columns)
            self._whole[formula] = (int(mask.sum()), _column_counts(self.columns[mask]))
        return self._whole[formula]

    # --- scoring -----------------------------------------------------------------------------------
    def singles(self, unit: _Unit) -> list[Scored]:
        """Every concept alone (dissection's IoU)."""
        inter = unit.rows.sum(0)
        cats = torch.nn.functional.one_hot(self.category, self.image_category.shape[1]).bool()
        union = unit.area_over(cats) + self.size - inter
        return [
            Scored(Formula((i,)), int(a), int(b)) for i, (a, b) in enumerate(zip(inter, union, strict=True))
        ]

    def _extension_counts(self, unit: _Unit, formula: Formula) -> tuple[torch.Tensor, torch.Tensor]:
        """``inter`` and ``union`` ``(3, L)`` of ``formula op c`` for each operator (:data:`OPS`) and
        concept ``c``; a concept already in the formula gets union 0 (never chosen)."""
        size, with_c = self._formula_counts(formula)
        f = evaluate(formula, unit.rows)
        inter_f = int(f.sum())
        inter_fc = (unit.rows & f[:, None]).sum(0)
        inter_c = unit.rows.sum(0)
        base = self._categories(formula.terms)
        cats = base[None, :] | torch.eye(len(base), dtype=torch.bool)
        area = unit.area_over(cats)[self.category]  # A_{S(F) + cat(c)} per concept c
        inter, fsize = _joined(inter_f, inter_c, inter_fc, size, self.size, with_c)
        union = area[None, :] + fsize - inter
        union[:, list(formula.terms)] = 0
        return inter, union

    def extensions(self, unit: _Unit, formula: Formula, top: int | None = None) -> list[Scored]:
        """``formula op c`` for every operator and every concept ``c`` not in it; ``top``: only the
        candidates whose IoU reaches the ``top``-th best (ties kept), sorted best first."""
        inter, union = self._extension_counts(unit, formula)
        iou = torch.where(union > 0, inter.double() / union.clamp(min=1).double(), -1.0)
        if top is not None:
            cut = iou.flatten().topk(min(top, iou.numel())).values[-1]
            iou = torch.where(iou >= cut, iou, -1.0)
        ops, cs = (iou >= 0).nonzero(as_tuple=True)
        out = [
            Scored(formula.join(OPS[o], c), int(inter[o, c]), int(union[o, c]))
            for o, c in zip(ops.tolist(), cs.tolist(), strict=True)
        ]
        return _top(out, len(out)) if top is not None else out

    def beam(
        self, active: torch.Tensor, max_length: int = MAX_LENGTH, beam_size: int = BEAM_SIZE
    ) -> dict[int, Scored]:
        """The beam search's best formula of each length ``1..max_length`` for the unit whose active
        pixels are ``active`` (the best of everything the search scored at that length). Only each
        beam formula's ``beam_size`` best extensions can enter the next beam, so only they are kept."""
        unit = self._unit(active)
        singles = self.singles(unit)
        beam = _top(singles, beam_size)
        best = {1: beam[0]}
        for _ in range(max_length - 1):
            pool = {s.formula: s for s in beam}
            for s in beam:
                found = self.extensions(unit, s.formula, beam_size)
                if not found:
                    continue
                length = s.formula.length + 1
                best[length] = _top([best[length], found[0]] if length in best else found[:1], 1)[0]
                for e in found:
                    pool.setdefault(e.formula, e)
            beam = _top(list(pool.values()), beam_size)
        return best

    def _pair_area(self, unit: _Unit) -> torch.Tensor:
        """``A_{cat a, cat b}(u)`` for every pair of concepts ``(L, L)``."""
        ncat = self.image_category.shape[1]
        eye = torch.eye(ncat, dtype=torch.bool)
        area_pairs = unit.area_over((eye[:, None, :] | eye[None, :, :]).view(-1, ncat)).view(ncat, ncat)
        return area_pairs[self.category[:, None], self.category[None, :]]

    def _pair_candidates(self) -> torch.Tensor:
        """The flat indices into ``(3, L, L)`` (operator, first, second concept) of every length-2
        formula, ascending: the canonical order (a commutative pair once, a concept never with itself)."""
        idx = torch.arange(len(self.labels))
        valid = (idx[:, None] != idx[None, :]).expand(len(OPS), len(idx), len(idx)).clone()
        valid[: len(COMMUTATIVE)] &= idx[:, None] < idx[None, :]
        return valid.flatten().nonzero().flatten()

    def _pair_formula(self, flat: int) -> Formula:
        """The length-2 formula at a flat index of :meth:`_pair_candidates`."""
        big = len(self.labels)
        return Formula(((flat // big) % big, flat % big), (OPS[flat // (big * big)],))

    def pair_table(self, active: torch.Tensor) -> tuple[list[Formula], torch.Tensor, torch.Tensor]:
        """Every length-2 formula in canonical order with its exact ``inter`` and ``union`` (the
        unpruned exhaustive search)."""
        unit = self._unit(active)
        rows = unit.rows.double()
        pair_inter = (rows.T @ rows).round().long()  # |M_u & C_a & C_b|
        inter_c, size = unit.rows.sum(0), self.size
        inter, fsize = _joined(
            inter_c[:, None], inter_c[None, :], pair_inter, size[:, None], size[None, :], self._cooccurrence()
        )
        union = self._pair_area(unit)[None] + fsize - inter
        flat = self._pair_candidates()
        return [self._pair_formula(i) for i in flat.tolist()], inter.flatten()[flat], union.flatten()[flat]

    def best_pair(self, active: torch.Tensor) -> tuple[Scored, int]:
        """The optimal length-2 formula, by the exhaustive search pruned by upper bounds, and how many
        pairs it scored exactly. For a pair ``(a, b)`` with ``I_c = |M_u & C_c|``, ``|C_c|`` and
        ``A = A_{cat(a), cat(b)}(u)`` (the union is at least ``A`` and at least ``|F|``)::

            AND:      IoU <= min(I_a, I_b) / A
            OR:       IoU <= min(I_a + I_b, A) / max(A, |C_a|, |C_b|)
            AND NOT:  IoU <= I_a / A
        """
        unit = self._unit(active)
        inter_c = unit.rows.sum(0).double()
        size = self.size.double()
        area = self._pair_area(unit).double()
        safe = area.clamp(min=1)
        bounds = {
            "AND": torch.minimum(inter_c[:, None], inter_c[None, :]) / safe,
            "OR": torch.minimum(inter_c[:, None] + inter_c[None, :], area)
            / torch.maximum(torch.maximum(area, size[:, None]), size[None, :]).clamp(min=1),
            "AND NOT": inter_c[:, None].expand_as(area) / safe,
        }
        bound = torch.stack([bounds[op] for op in OPS]).flatten()  # canonical flat order
        flat = self._pair_candidates()
        order = flat[torch.from_numpy(np.argsort(-bound[flat].numpy(), kind="stable"))].tolist()
        pair_size = self._cooccurrence()
        best: tuple[Scored, int] | None = None
        scored = 0
        for i in order:
            if best is not None and float(bound[i]) < best[0].iou - 1e-12:
                break
            formula = self._pair_formula(i)
            a, b = formula.terms
            both = int((unit.rows[:, a] & unit.rows[:, b]).sum())
            inter_all, size_all = _joined(
                int(inter_c[a]), int(inter_c[b]), both, int(size[a]), int(size[b]), int(pair_size[a, b])
            )
            op = OPS.index(formula.ops[0])
            inter, fsize = int(inter_all[op]), int(size_all[op])
            s = Scored(formula, inter, int(area[a, b]) + fsize - inter)
            scored += 1
            if best is None or s.iou > best[0].iou or (s.iou == best[0].iou and i < best[1]):
                best = (s, int(i))
        assert best is not None
        return best[0], scored

    def _cooccurrence(self) -> torch.Tensor:
        """``|C_a & C_b|`` for every pair of concepts (exact: float64 sums of at most 2^53)."""
        if not hasattr(self, "_pairs"):
            total = torch.zeros(len(self.labels), len(self.labels), dtype=torch.float64)
            for s in range(0, len(self.columns), CHUNK):
                block = self.columns[s : s + CHUNK].double()
                total += block.T @ block
            self._pairs = total.round().long()
        return self._pairs


def _joined(
    inter_f: object, inter_c: object, inter_fc: object, size_f: object, size_c: object, size_fc: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """``|M_u & G|`` and ``|G|`` of ``G = F op C`` for each operator of :data:`OPS`, stacked first, from
    ``|M_u & F|``, ``|M_u & C|``, ``|M_u & F & C|`` and ``|F|``, ``|C|``, ``|F & C|`` (numbers or
    tensors that broadcast): AND keeps the overlap, OR adds the two and removes it, AND NOT removes it."""

    def three(f: object, c: object, both: object) -> torch.Tensor:
        parts = [torch.as_tensor(x) for x in (both, f + c - both, f - both)]
        return torch.stack(torch.broadcast_tensors(*parts))

    return three(inter_f, inter_c, inter_fc), three(size_f, size_c, size_fc)


def _column_counts(columns: torch.Tensor) -> torch.Tensor:
    """``int64 (L,)``: the true entries of each column of ``columns`` ``bool (n, L)``, :data:`CHUNK`
    rows at a time (a sum widens its input to int64: never all ``n x L`` at once)."""
    total = torch.zeros(columns.shape[1], dtype=torch.long)
    for s in range(0, len(columns), CHUNK):
        total += columns[s : s + CHUNK].sum(0)
    return total


def _top(scored: list[Scored], k: int) -> list[Scored]:
    """The ``k`` best by IoU, ties broken by :attr:`Formula.key`."""
    return sorted(scored, key=lambda s: (-s.iou, s.formula.key))[:k]
