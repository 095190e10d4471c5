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

**Atoms.** Every count above is a sum over pixels of something that depends only on which concepts
the pixel carries, so pixels that carry the same concepts (the same pixel labels under the same
image-level labels) are counted together: an *atom* is one such set, with its number of pixels. A
formula's mask, its overlap with each concept and the unit's overlaps are sums over atoms, a unit is
the histogram of the atoms its mask covers (and its area per image, for ``A_S``), and the search never
holds a pixel-by-concept mask. Full Broden's 794M mask pixels make a few million atoms at most
(one per labelled region of an image, fewer where images share them); the map from pixel to atom
(``int32``, 4 bytes a pixel) is the one per-pixel array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cnnscope.data.packed import PackedDataset
from cnnscope.dissection import IOU_MODES, active_pixels, batch_elements
from cnnscope.errors import CnnscopeError
from cnnscope.progress import track
from cnnscope.rows import Rows, read_rows

OPS = ("AND", "OR", "AND NOT")
COMMUTATIVE = ("AND", "OR")
BEAM_SIZE = 5  # the reference code's BEAM_SIZE
MAX_LENGTH = 3  # the reference code's MAX_FORMULA_LENGTH
CHUNK = 1 << 16  # atoms whose concept pairs are counted at once (a key table of CHUNK x W x W int64)
MERGE = 1 << 22  # a unit histogram's pending (unit, atom) runs merged beyond this many
TIE = 1e-12  # IoUs closer than this are equal when bounds are compared with them


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

    @property
    def support(self) -> tuple[int, ...]:
        """The concepts whose union holds the formula's mask: the first, and every one joined by OR
        (AND and AND NOT only shrink a mask)."""
        return (self.terms[0], *(t for o, t in zip(self.ops, self.terms[1:], strict=True) if o == "OR"))

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


def evaluate(formula: Formula, terms: torch.Tensor) -> torch.Tensor:
    """The formula's truth on each row of ``terms`` ``long (rows, W)``, a row being the concept columns
    one atom (or pixel) carries, padded with any number that is not a column."""
    out = (terms == formula.terms[0]).any(1)
    for op, term in zip(formula.ops, formula.terms[1:], strict=True):
        col = (terms == term).any(1)
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
class Unit:
    """One unit's mask ``M_u``: the atoms it covers and its pixels in each, its area per image, and the
    images each category's universe counts (``bool (N, ncat)``)."""

    atoms: torch.Tensor  # long (n,), ascending
    count: torch.Tensor  # long (n,)
    area: torch.Tensor  # long (N,)
    universe: torch.Tensor  # bool (N, ncat)

    def area_over(self, categories: torch.Tensor) -> torch.Tensor:
        """``A_S(u)`` for each row of ``categories`` ``bool (k, ncat)``: the unit's area over the
        images that carry some category of the row."""
        counted = (self.universe.double() @ categories.double().T) > 0  # (N, k)
        return (self.area[:, None] * counted).sum(0)


def _as_sets(labels: np.ndarray) -> np.ndarray:
    """Each row of label numbers (last axis) as a canonical set: ascending, a repeated label once,
    0 (none) first."""
    out = np.sort(labels, axis=-1)
    out[..., 1:][out[..., 1:] == out[..., :-1]] = 0
    return np.sort(out, axis=-1)


class FormulaSearch:
    """Formulas of the probe set's concepts for the units of one layer (see the module docstring).

    Building it reads the probe set's masks once and finds its atoms; :meth:`units` reads a layer's
    activations once and finds each unit's histogram over them."""

    def __init__(
        self, data: PackedDataset, iou_mode: str = "paper", max_elements: int = 0, progress: bool = False
    ) -> None:
        if iou_mode not in IOU_MODES:
            raise CnnscopeError(f"unknown iou_mode {iou_mode!r}; use one of {', '.join(IOU_MODES)}")
        self.data, self.mode = data, iou_mode
        n = len(data)
        sh, sw = data.meta["mask_size"]
        self.pixels = sh * sw
        label_cat = data.label_category()
        ncat = len(data.categories)
        layers = data.masks.shape[1]
        scalars = _as_sets(data.scalars.astype(np.uint16))  # (N, S); label numbers fit the masks' uint16
        width = layers + scalars.shape[1]
        masks = data.stream("masks")
        batch = max(1, batch_elements(max_elements, "cpu") // (self.pixels * width))
        self.atom_of = np.empty((n, self.pixels), np.int32)  # each pixel's atom
        ids: dict[bytes, int] = {}
        found: list[np.ndarray] = []  # each atom's label numbers: pixel labels, then image-level ones
        pixel_cat = np.zeros((n, ncat + 1), bool)  # the last column: no category
        weight = np.zeros(1 << 16, np.int64)  # each atom's pixels (a buffer that doubles as atoms come)
        for a in track(range(0, n, batch), "formula atoms", enabled=progress):
            block = np.asarray(masks[a : a + batch])  # (B, K, sh, sw) label numbers
            b = len(block)
            sca = np.broadcast_to(scalars[a : a + b, None, :], (b, self.pixels, scalars.shape[1]))
            rows = np.concatenate([block.reshape(b, layers, self.pixels).swapaxes(1, 2), sca], 2)
            rows = rows.reshape(b * self.pixels, width)
            # Neighbouring pixels mostly carry the same labels: only the first of each run is looked up.
            start = np.ones(len(rows), bool)
            start[1:] = (rows[1:] != rows[:-1]).any(1)
            start[:: self.pixels] = True  # a run stays in its image
            first_of = np.flatnonzero(start)
            runs = np.concatenate([_as_sets(rows[first_of, :layers]), rows[first_of, layers:]], 1)
            keys = runs.view(np.dtype((np.void, runs.itemsize * width))).ravel()
            uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            known = len(ids)
            local = np.fromiter((ids.setdefault(k, len(ids)) for k in uniq.tolist()), np.int32, len(uniq))
            found.append(runs[first[local >= known]])  # the new atoms, in the order of their numbers
            length = np.diff(first_of, append=len(rows))
            self.atom_of[a : a + b] = np.repeat(local[inverse.reshape(-1)], length).reshape(b, -1)
            if len(ids) > len(weight):
                weight = np.concatenate(
                    [weight, np.zeros(max(len(weight), len(ids) - len(weight)), np.int64)]
                )
            weight[local] += np.bincount(inverse.reshape(-1), weights=length).astype(np.int64)  # exact < 2^53
            # Label 0's category is -1: the last column.
            pixel_cat[(a + first_of // self.pixels)[:, None], label_cat[runs[:, :layers]]] = True
        atoms = np.concatenate(found).astype(np.int64)  # (A, W) label numbers, 0 for none

        labelled = np.unique(atoms)
        self.labels = labelled[(labelled > 0) & (label_cat[labelled] >= 0)]  # label numbers, ascending
        big = len(self.labels)
        self.category = torch.from_numpy(label_cat[self.labels])
        column = np.full(data.n_label_slots, big)  # big: not a concept
        column[self.labels] = np.arange(big)
        terms = np.sort(column[atoms], axis=1)
        terms[:, 1:][terms[:, 1:] == terms[:, :-1]] = big  # a concept both pixel and image label, once
        self.terms = torch.from_numpy(terms)  # (A, W) concept columns, `big` for none
        self.weight = torch.from_numpy(weight[: len(atoms)])
        pcat = label_cat[atoms[:, :layers]]  # (A, K) categories of each atom's pixel labels
        self.pixel_cats = torch.from_numpy((pcat[:, :, None] == np.arange(ncat)).any(1))  # (A, ncat)
        sc = label_cat[data.scalars]
        self.scalar_category = torch.from_numpy((sc[:, :, None] == np.arange(ncat)).any(1))  # (N, ncat)
        self.image_category = self.scalar_category | torch.from_numpy(pixel_cat[:, :ncat])
        self.size = self._label_counts(self.terms, self.weight)  # |C_l|
        self.pairs = self._pair_counts(self.terms, self.weight)  # |C_a & C_b|
        flat = self.terms.flatten()
        holds = flat < big
        order = torch.argsort(flat[holds], stable=True)
        self._holding = torch.arange(len(atoms)).repeat_interleave(width)[holds][order]  # atoms by concept
        self._start = torch.cat(
            [torch.zeros(1, dtype=torch.long), torch.bincount(flat[holds], minlength=big).cumsum(0)]
        )
        self._whole: dict[Formula, tuple[int, torch.Tensor]] = {}
        self._candidates: torch.Tensor | None = None

    @property
    def names(self) -> list[str]:
        """Each concept column's label name."""
        names = self.data.label_names()
        return [names[i] for i in self.labels]

    # --- counting over atoms -----------------------------------------------------------------------
    def _label_counts(self, terms: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``long (L,)``: the weight of the rows of ``terms`` that carry each concept."""
        big = len(self.labels)
        out = torch.zeros(big + 1, dtype=torch.long)
        out.index_add_(0, terms.flatten(), weight[:, None].expand_as(terms).flatten())
        return out[:big]

    def _pair_counts(self, terms: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``long (L, L)``: the weight of the rows of ``terms`` that carry both concepts of each pair
        (the diagonal: each concept), :data:`CHUNK` rows at a time."""
        side = len(self.labels) + 1
        out = torch.zeros(side * side, dtype=torch.long)
        for s in range(0, len(terms), CHUNK):
            t, w = terms[s : s + CHUNK], weight[s : s + CHUNK]
            key = (t[:, :, None] * side + t[:, None, :]).flatten(1)
            out.index_add_(0, key.flatten(), w[:, None].expand_as(key).flatten())
        return out.view(side, side)[:-1, :-1]

    def _holding_any(self, concepts: tuple[int, ...]) -> torch.Tensor:
        """The atoms that carry some of ``concepts``, ascending."""
        parts = [self._holding[self._start[c] : self._start[c + 1]] for c in concepts]
        return torch.cat(parts).unique() if len(parts) > 1 else parts[0]

    # --- units -------------------------------------------------------------------------------------
    def units(
        self, acts: Rows, thresholds: np.ndarray, max_elements: int = 0, progress: bool = False
    ) -> list[Unit]:
        """Each unit's mask ``M_u`` as dissection defines it (:func:`cnnscope.dissection.unit_masks`),
        as atoms and area per image, from activations read in batches of images. An upsampled map's
        active pixels come in runs of one atom (a labelled region), so runs are counted, not pixels."""
        n, c = acts.shape[:2]
        if n != len(self.data):
            raise CnnscopeError(f"activations cover {n} images but the probe set has {len(self.data)}")
        sh, sw = self.data.meta["mask_size"]
        thr = torch.as_tensor(thresholds, dtype=torch.float32)
        max_elements = batch_elements(max_elements, "cpu")
        batch = max(1, max_elements // max(int(np.prod(acts.shape[1:])), self.pixels))
        n_atoms, ncat = len(self.weight), self.image_category.shape[1]
        atom_of = torch.from_numpy(self.atom_of)
        area = torch.zeros(c * n, dtype=torch.long)
        touched = torch.zeros(c * n * ncat, dtype=torch.bool) if self.mode == "lite" else None
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        held = 0
        for a in track(range(0, n, batch), "formula units", enabled=progress):
            x = read_rows(acts, a, a + batch).float()
            for ab, au, ap in active_pixels(x, thr, (sh, sw), max_elements):
                image = ab + a
                atom = atom_of[image, ap].long()
                new = torch.ones(len(atom), dtype=torch.bool)
                new[1:] = (atom[1:] != atom[:-1]) | (au[1:] != au[:-1]) | (image[1:] != image[:-1])
                start = new.nonzero().flatten()
                length = torch.diff(start, append=torch.tensor([len(atom)]))
                ru, ri, ra = au[start], image[start], atom[start]
                area.index_add_(0, ru * n + ri, length)
                if touched is not None:
                    hit, cat = self.pixel_cats[ra].nonzero(as_tuple=True)
                    touched[(ru[hit] * n + ri[hit]) * ncat + cat] = True
                pending.append((ru * n_atoms + ra, length))
                held += len(ra)
                if held > MERGE:
                    pending, held = [_merged(pending)], 0
        keys, counts = _merged(pending) if pending else (torch.zeros(0, dtype=torch.long),) * 2
        bounds = torch.searchsorted(keys, torch.arange(c + 1) * n_atoms).tolist()
        area = area.view(c, n)
        out = []
        for u in range(c):
            if touched is None:
                universe = self.image_category
            else:
                universe = touched.view(c, n, ncat)[u] | self.scalar_category
            part = slice(bounds[u], bounds[u + 1])
            out.append(Unit(keys[part] - u * n_atoms, counts[part], area[u], universe))
        return out

    def _formula_counts(self, formula: Formula) -> tuple[int, torch.Tensor]:
        """``|F|`` and ``|F & C_l|`` for every concept, over the atoms that can hold ``F``, kept for the
        next unit that asks."""
        if formula not in self._whole:
            atoms = self._holding_any(formula.support)
            terms = self.terms[atoms]
            inside = evaluate(formula, terms)
            weight = self.weight[atoms][inside]
            self._whole[formula] = (int(weight.sum()), self._label_counts(terms[inside], weight))
        return self._whole[formula]

    def _categories(self, terms: tuple[int, ...]) -> torch.Tensor:
        out = torch.zeros(self.image_category.shape[1], dtype=torch.bool)
        out[self.category[list(terms)]] = True
        return out

    # --- scoring -----------------------------------------------------------------------------------
    def singles(self, unit: Unit) -> list[Scored]:
        """Every concept alone (dissection's IoU)."""
        inter = self._label_counts(self.terms[unit.atoms], unit.count)
        per_category = unit.area_over(torch.eye(self.image_category.shape[1], dtype=torch.bool))
        union = per_category[self.category] + self.size - inter
        return [
            Scored(Formula((i,)), int(a), int(b)) for i, (a, b) in enumerate(zip(inter, union, strict=True))
        ]

    def _extension_counts(self, unit: Unit, formula: Formula) -> tuple[torch.Tensor, torch.Tensor]:
        """``inter`` and ``union`` ``(3, L)`` of ``formula op c`` for each operator (:data:`OPS`) and
        concept ``c``; a concept already in the formula gets union 0 (never chosen)."""
        size, with_c = self._formula_counts(formula)
        rows = self.terms[unit.atoms]
        f = evaluate(formula, rows)
        inter_f = int(unit.count[f].sum())
        inter_fc = self._label_counts(rows[f], unit.count[f])
        inter_c = self._label_counts(rows, unit.count)
        base = self._categories(formula.terms)
        cats = base[None, :] | torch.eye(len(base), dtype=torch.bool)
        area = unit.area_over(cats)[self.category]  # A_{S(F) + cat(c)} per concept c
        inter, fsize = _joined(inter_f, inter_c, inter_fc, size, self.size, with_c)
        union = area[None, :] + fsize - inter
        union[:, list(formula.terms)] = 0
        return inter, union

    def extensions(self, unit: Unit, formula: Formula, top: int | None = None) -> list[Scored]:
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

    def beam(self, unit: Unit, max_length: int = MAX_LENGTH, beam_size: int = BEAM_SIZE) -> dict[int, Scored]:
        """The beam search's best formula of each length ``1..max_length`` for ``unit`` (the best of
        everything the search scored at that length). Only each beam formula's ``beam_size`` best
        extensions can enter the next beam, so only they are kept."""
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

    def _pair_area(self, unit: Unit) -> torch.Tensor:
        """``A_{cat a, cat b}(u)`` for every pair of concepts ``(L, L)``."""
        ncat = self.image_category.shape[1]
        eye = torch.eye(ncat, dtype=torch.bool)
        area_pairs = unit.area_over((eye[:, None, :] | eye[None, :, :]).view(-1, ncat)).view(ncat, ncat)
        return area_pairs[self.category[:, None], self.category[None, :]]

    def _pair_candidates(self) -> torch.Tensor:
        """``bool (3, L, L)`` (operator, first, second concept): which are length-2 formulas in the
        canonical order (a commutative pair once, a concept never with itself)."""
        if self._candidates is None:
            idx = torch.arange(len(self.labels))
            valid = (idx[:, None] != idx[None, :]).expand(len(OPS), len(idx), len(idx)).clone()
            valid[: len(COMMUTATIVE)] &= idx[:, None] < idx[None, :]
            self._candidates = valid
        return self._candidates

    def _pair_formula(self, flat: int) -> Formula:
        """The length-2 formula at a flat index into ``(3, L, L)``."""
        big = len(self.labels)
        return Formula(((flat // big) % big, flat % big), (OPS[flat // (big * big)],))

    def _pair_exact(self, unit: Unit) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact ``inter`` and ``union`` ``(3, L, L)`` of every pair: the unit's pair counts are one
        pass over its atoms (the concept pairs each carries)."""
        inter_c = self._label_counts(self.terms[unit.atoms], unit.count)
        pair_inter = self._pair_counts(self.terms[unit.atoms], unit.count)  # |M_u & C_a & C_b|
        inter, fsize = _joined(
            inter_c[:, None], inter_c[None, :], pair_inter, self.size[:, None], self.size[None, :], self.pairs
        )
        return inter, self._pair_area(unit)[None] + fsize - inter

    def pair_table(self, unit: Unit) -> tuple[list[Formula], torch.Tensor, torch.Tensor]:
        """Every length-2 formula in canonical order with its exact ``inter`` and ``union`` (the
        unpruned exhaustive search)."""
        inter, union = self._pair_exact(unit)
        flat = self._pair_candidates().flatten().nonzero().flatten()
        return [self._pair_formula(i) for i in flat.tolist()], inter.flatten()[flat], union.flatten()[flat]

    def best_pair(self, unit: Unit, floor: float = 0.0) -> tuple[Scored, int]:
        """The optimal length-2 formula, by the exhaustive search pruned by upper bounds, and how many
        pairs the bounds left to score (those whose bound reaches the optimum). For a pair ``(a, b)``
        with ``I_c = |M_u & C_c|``, ``|C_c|`` and ``A = A_{cat(a), cat(b)}(u)`` (the union is at
        least ``A`` and at least ``|F|``)::

            AND:      IoU <= min(I_a, I_b) / A
            OR:       IoU <= min(I_a + I_b, A) / max(A, |C_a|, |C_b|)
            AND NOT:  IoU <= I_a / A

        ``floor``: an IoU some pair reaches (beam search's best pair), below which no pair is scored.
        """
        inter_c = self._label_counts(self.terms[unit.atoms], unit.count).double()
        size = self.size.double()
        area = self._pair_area(unit).double()
        safe = area.clamp(min=1)
        bounds = {
            "AND": torch.minimum(inter_c[:, None], inter_c[None, :]) / safe,
            "OR": torch.minimum(inter_c[:, None] + inter_c[None, :], area)
            / torch.maximum(torch.maximum(area, size[:, None]), size[None, :]).clamp(min=1),
            "AND NOT": inter_c[:, None].expand_as(area) / safe,
        }
        bound = torch.stack([bounds[op] for op in OPS])
        left = (self._pair_candidates() & (bound >= floor - TIE)).flatten().nonzero().flatten()  # ascending
        inter, union = self._pair_exact(unit)
        inter, union = inter.flatten()[left], union.flatten()[left]
        iou = torch.where(union > 0, inter.double() / union.clamp(min=1).double(), 0.0)
        first = int((iou == iou.max()).nonzero()[0])  # the earliest of equals in the canonical order
        best = Scored(self._pair_formula(int(left[first])), int(inter[first]), int(union[first]))
        return best, int((bound.flatten()[left] >= best.iou - TIE).sum())


def _merged(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys (ascending, each once) and their summed counts of several ``(keys, counts)``."""
    keys = torch.cat([k for k, _ in parts])
    counts = torch.cat([c for _, c in parts])
    uniq, inverse = keys.unique(return_inverse=True)
    return uniq, torch.zeros(len(uniq), dtype=torch.long).index_add_(0, inverse, counts)


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


def _top(scored: list[Scored], k: int) -> list[Scored]:
    """The ``k`` best by IoU, ties broken by :attr:`Formula.key`."""
    return sorted(scored, key=lambda s: (-s.iou, s.formula.key))[:k]
