"""Time the compositional-explanation search (``cnnscope.formulas``) on a Broden-shaped packed set and
print a table: the atoms (one pass over the masks), the units' histograms (one pass over the
activations), the beam search to each length and the pruned exhaustive pair search over every unit, a
formula whose mask spans every atom (the dearest one formula can be), and the formulas step's whole
search (atoms, units, beam to ``--max-length``, optimal pair), each with the peak host memory.

    python benchmarks/formulas.py --images 63305 --units 512     # ResNet-18 layer4 on full Broden

The set is ``benchmarks/dissect.py``'s (random blob-shaped labels over 6 categories, 4 pixel-label
layers and 1 image-level label per image, from 1,197 labels, 112 px masks for 224 px images), and the
activations are random, ``(images, units, 7, 7)`` float16 (``layer4``'s shape), thresholded at
dissection's default quantile. Its labels are uniform over 1,197 concepts, so a concept holds few
atoms; real Broden's colours cover most pixels, and a formula that joins them costs up to the
every-atom row.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from dissect import _Peak, _random_activations, build_packed

from cnnscope.artifacts import ExtractArtifact
from cnnscope.dissection import unit_thresholds
from cnnscope.formulas import MAX_LENGTH, Formula, FormulaSearch, evaluate
from cnnscope.rows import RowReader

QUANTILE = 0.005  # dissection's default


def _acts(cache: Path, images: int, units: int) -> tuple[RowReader, np.ndarray]:
    """Random activations of ``(images, units, 7, 7)`` and their thresholds, made once into ``cache``."""
    out = cache / f"acts-random-{images}-{units}"
    made = ExtractArtifact(out).activations
    if not Path(made).is_file():
        out.mkdir(parents=True, exist_ok=True)
        _random_activations(out, (images, units, 7, 7))
    acts = RowReader(made)
    thresholds_file = out / "thresholds.npy"
    if not thresholds_file.is_file():
        np.save(thresholds_file, unit_thresholds(acts, QUANTILE, progress=False)[0])
    return acts, np.load(thresholds_file)


def run(images: int, units: int, size: int, cache: Path, max_length: int) -> None:
    """Print the table's rows for one set size, each as soon as it is measured."""
    data = build_packed(cache / f"packed-{images}-{size}", images, size)
    acts, thresholds = _acts(cache, images, units)
    peak = _Peak(torch.device("cpu"))
    search_s = 0.0

    def timed(what: str, work: Callable[[], object], per_unit: bool = False, step: bool = True) -> object:
        """Time ``work``, print its row (``what`` may name the result), and add it to the step's total."""
        nonlocal search_s
        peak.reset()
        start = time.perf_counter()
        result = work()
        took = time.perf_counter() - start
        search_s += took if step else 0.0
        each = f"{1000 * took / units:.1f}" if per_unit else ""
        row = (images, units, what.format(result), f"{took:.2f}", each, f"{peak.read()[0]:.2f}")
        print("| " + " | ".join(str(x) for x in row) + " |", flush=True)
        return result

    search = timed("atoms ({0.weight.shape[0]:,})", lambda: FormulaSearch(data, "paper"))
    found = timed("units' histograms", lambda: search.units(acts, thresholds))
    for length in range(1, max_length + 1):
        search._whole.clear()  # each length pays for the formulas it counts over the whole set
        best = timed(
            f"beam to length {length}",
            lambda n=length: [search.beam(u, n) for u in found],
            per_unit=True,
            step=length == max_length,
        )
    timed(
        "exhaustive pair, beam's as floor ({0:.0f} pairs scored)",
        lambda: np.mean([search.best_pair(u, b[2].iou)[1] for u, b in zip(found, best, strict=True)]),
        per_unit=True,
    )
    whole = search_s
    every = torch.arange(len(search.weight))

    def dearest() -> None:
        terms = search.terms[every]
        inside = evaluate(Formula((0, 1), ("OR",)), terms)
        search._label_counts(terms[inside], search.weight[inside])

    timed("one formula over every atom", dearest, step=False)
    print(
        f"| {images} | {units} | formulas step's search (length {max_length}) | {whole:.1f} | | |", flush=True
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, nargs="+", default=[400, 1600])
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--size", type=int, default=224, help="image size; masks are half of it")
    p.add_argument("--max-length", type=int, default=MAX_LENGTH)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cnnscope-bench")
    a = p.parse_args()
    print("| images | units | step | seconds | ms per unit | peak host GB |\n|---|---|---|---|---|---|")
    for n in a.images:
        run(n, a.units, a.size, a.cache, a.max_length)


if __name__ == "__main__":
    main()
