"""Compositional explanations (cnnscope.formulas): the atoms count every pixel once, single concepts are
dissection's IoU, every formula's IoU is the pixel-level count, planted formulas are found, and the
pruned exhaustive search is the unpruned one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.data.packed import read_labels
from cnnscope.dissection import tally, unit_masks
from cnnscope.formulas import Formula, FormulaSearch, evaluate


@pytest.fixture(scope="module")
def acts(packed) -> np.ndarray:
    """Random smooth activations of 12 units on 4 x 4 cells, at every probe image."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(len(packed), 12, 4, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def thresholds(acts) -> np.ndarray:
    return np.quantile(acts.transpose(1, 0, 2, 3).reshape(12, -1), 0.9, axis=1).astype(np.float32)


def _mask(packed, acts, thresholds, u: int) -> np.ndarray:
    """Unit ``u``'s mask ``bool (N, P)`` from dissection's definition, pixel by pixel."""
    size = tuple(packed.meta["mask_size"])
    thr = torch.full((len(packed),), float(thresholds[u]))
    return unit_masks(torch.from_numpy(acts[:, u]), thr, size).flatten(1).numpy()


def _labels(packed) -> np.ndarray:
    """Every pixel's label numbers ``(N, K, P)``."""
    return read_labels(np.asarray(packed.masks), 0, len(packed), torch.device("cpu")).flatten(2).numpy()


def test_atoms_hold_every_pixel_and_its_concepts(packed, acts, thresholds):
    search = FormulaSearch(packed, "lite", max_elements=5000)  # several batches of images
    n, p = len(packed), search.pixels
    assert int(search.weight.sum()) == n * p
    labels = _labels(packed)
    carried = search.terms[torch.from_numpy(search.atom_of.astype(np.int64))]  # (N, P, W) each pixel's atom
    for col in range(0, len(search.labels), 5):
        number = search.labels[col]
        truth = (labels == number).any(1) | (packed.scalars == number).any(1)[:, None]
        assert np.array_equal((carried == col).any(-1).numpy(), truth), search.names[col]
        assert int(search.size[col]) == truth.sum()
    for u, unit in enumerate(search.units(acts, thresholds, max_elements=3000)):
        mask = _mask(packed, acts, thresholds, u)
        assert unit.area.tolist() == mask.sum(1).tolist(), u
        atoms, count = np.unique(search.atom_of[mask], return_counts=True)
        assert unit.atoms.tolist() == atoms.tolist() and unit.count.tolist() == count.tolist(), u


@pytest.mark.parametrize("mode", ["paper", "lite"])
def test_single_concepts_are_dissections_iou(packed, acts, thresholds, mode):
    search = FormulaSearch(packed, mode)
    iou = tally(acts, thresholds, packed, progress=False).iou(mode)
    for u, unit in enumerate(search.units(acts, thresholds)):
        singles = search.singles(unit)
        mine = np.array([s.iou for s in singles])
        assert np.allclose(mine, iou[search.labels, u], rtol=0, atol=1e-12), u
        best = search.beam(unit, max_length=1)[1]
        assert best.iou == pytest.approx(iou[:, u].max(), abs=1e-12)


def _brute_iou(packed, mode: str, unit: np.ndarray, formula: Formula, search: FormulaSearch) -> float:
    """The IoU from the definition, in numpy over an explicit (N, P) grid: the formula's mask from the
    label maps, the universe from the images' categories."""
    labels = _labels(packed)
    cats = packed.label_category()

    def concept(col: int) -> np.ndarray:
        number = search.labels[col]
        pixel = (labels == number).any(1)
        image = (packed.scalars == number).any(1)
        return pixel | image[:, None]

    f = concept(formula.terms[0])
    for op, term in zip(formula.ops, formula.terms[1:], strict=True):
        c = concept(term)
        f = f & c if op == "AND" else f | c if op == "OR" else f & ~c
    wanted = {int(cats[search.labels[t]]) for t in formula.terms}
    pixel_cats = np.where(labels > 0, cats[labels], -1)  # (N, K, P)
    scalar_cats = np.where(packed.scalars > 0, cats[packed.scalars], -1)
    has_scalar = np.isin(scalar_cats, list(wanted)).any(1)
    if mode == "paper":
        counted = np.isin(pixel_cats, list(wanted)).any((1, 2)) | has_scalar
    else:
        under = np.isin(pixel_cats, list(wanted)).any(1)  # (N, P)
        counted = (under & unit).any(1) | has_scalar
    inter = (unit & f).sum()
    union = unit[counted].sum() + f.sum() - inter
    return inter / union if union else 0.0


@pytest.mark.parametrize("mode", ["paper", "lite"])
def test_every_formula_is_the_pixel_level_iou(packed, acts, thresholds, mode):
    search = FormulaSearch(packed, mode)
    for u, unit in enumerate(search.units(acts, thresholds)[:4]):
        mask = _mask(packed, acts, thresholds, u)
        best = search.beam(unit, max_length=3)
        assert sorted(best) == [1, 2, 3]
        for s in [*best.values(), *search.extensions(unit, best[2].formula)[::37]]:
            assert s.iou == pytest.approx(_brute_iou(packed, mode, mask, s.formula, search), abs=1e-12), (
                u,
                s,
            )


@pytest.mark.parametrize("op", ["OR", "AND NOT", "AND"])
def test_a_planted_formula_is_found_with_iou_one(packed, op):
    search = FormulaSearch(packed, "paper")
    names = search.names
    big = search.size.argsort(descending=True).tolist()
    pairs = search.pairs
    # Two large concepts that overlap on some pixels but not all: every operator gives a new mask.
    a, b = next(
        (i, j)
        for i in big
        for j in big
        if i < j and 0 < int(pairs[i, j]) < min(int(search.size[i]), int(search.size[j]))
    )
    planted = Formula((a, b), (op,))
    atom_of = torch.from_numpy(search.atom_of.astype(np.int64))
    mask = evaluate(planted, search.terms)[atom_of]  # (N, P)
    # A unit at mask resolution whose mask is the formula's: upsampling to the same size is the identity.
    acts = mask.view(len(packed), 1, *packed.meta["mask_size"]).float().numpy()
    (unit,) = search.units(acts, np.array([0.5], np.float32))
    assert int(unit.count.sum()) == int(mask.sum()) > 0
    best = search.beam(unit, max_length=2)
    assert best[2].iou == 1.0, (planted.render(names), best[2].formula.render(names))
    assert evaluate(best[2].formula, search.terms)[atom_of].equal(mask)
    exhaustive, _ = search.best_pair(unit)
    assert exhaustive.iou == 1.0


@pytest.mark.parametrize("mode", ["paper", "lite"])
def test_the_pruned_exhaustive_search_is_the_unpruned_one(packed, acts, thresholds, mode):
    search = FormulaSearch(packed, mode)
    pruned_work = []
    for unit in search.units(acts, thresholds):
        formulas, inter, union = search.pair_table(unit)
        iou = torch.where(
            union > 0, inter.double() / union.clamp(min=1).double(), torch.zeros(1, dtype=torch.float64)
        )
        first = int(torch.nonzero(iou == iou.max())[0])
        beam = search.beam(unit, max_length=2)[2]
        assert beam.iou <= float(iou[first]) + 1e-12  # the optimum bounds the beam
        best, scored = search.best_pair(unit)
        assert (best, scored) == search.best_pair(unit, floor=beam.iou)  # the beam's pair as a floor
        assert best.formula == formulas[first] and best.iou == float(iou[first])
        assert (best.inter, best.union) == (int(inter[first]), int(union[first]))
        pruned_work.append(scored / len(formulas))
    assert np.mean(pruned_work) < 0.5, pruned_work  # the bounds spare most pairs


def test_formulas_render_left_to_right():
    f = Formula((0,)).join("OR", 1).join("AND NOT", 2)
    assert f.render(["water", "river", "blue"]) == "(water OR river) AND NOT blue"
    assert Formula((2,)).join("AND", 0) == Formula((0, 2), ("AND",))  # a commutative pair, once
    assert Formula((2,)).join("AND NOT", 0) == Formula((2, 0), ("AND NOT",))
