"""Time the compositional-explanation search (``cnnscope.formulas``) on a Broden-shaped packed set and
print a table: seconds to build the concept masks and find the units' masks, then per unit for the
beam search up to each length (each includes the shorter lengths' work) and for the pruned exhaustive
pair search, and the peak host memory.

    python benchmarks/formulas.py --images 400 1600 --units 64 [--size 64]

The set is ``benchmarks/dissect.py``'s (random blob-shaped labels over 6 categories, 4 pixel-label
layers and 1 image-level label per image, from 1,197 labels), and the activations are random,
``(images, units, 7, 7)``, thresholded at dissection's default quantile. The search holds every
concept's mask densely (images x mask pixels x concepts bytes): full Broden (63,305 images of 112 x 112
mask pixels, 1,197 labels) needs about 950 GB that way, and the script says so rather than start.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from dissect import _Peak, build_packed

from cnnscope.dissection import unit_thresholds
from cnnscope.errors import CnnscopeError
from cnnscope.formulas import MAX_BYTES, FormulaSearch

QUANTILE = 0.005  # dissection's default


def run(images: int, units: int, size: int, cache: Path, max_mb: int) -> list[tuple]:
    data = build_packed(cache / f"packed-{images}-{size}", images, size)
    peak = _Peak(torch.device("cpu"))
    rng = np.random.default_rng(0)
    acts = rng.gamma(0.5, 1.0, (images, units, 7, 7)).astype(np.float32)
    thresholds, _, _ = unit_thresholds(acts, QUANTILE, progress=False)
    rows = []
    peak.reset()
    start = time.perf_counter()
    try:
        search = FormulaSearch(data, "paper", max_mb << 20)
    except CnnscopeError as e:
        return [(images, units, "refused", str(e), "", "")]
    active = search.units(acts, thresholds)
    rows.append((images, units, "masks", f"{time.perf_counter() - start:.2f} s", "", f"{peak.read()[0]:.2f}"))
    for length in (1, 2, 3):
        start = time.perf_counter()
        for a in active:
            search.beam(a, max_length=length)
        took = time.perf_counter() - start
        rows.append(
            (
                images,
                units,
                f"beam, length {length}",
                f"{took:.2f} s",
                f"{1000 * took / units:.1f}",
                f"{peak.read()[0]:.2f}",
            )
        )
    start = time.perf_counter()
    scored = [search.best_pair(a)[1] for a in active]
    took = time.perf_counter() - start
    rows.append(
        (
            images,
            units,
            f"exhaustive pair ({np.mean(scored):.0f} scored)",
            f"{took:.2f} s",
            f"{1000 * took / units:.1f}",
            f"{peak.read()[0]:.2f}",
        )
    )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, nargs="+", default=[400, 1600])
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--max-mb", type=int, default=MAX_BYTES >> 20)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cnnscope-bench")
    a = p.parse_args()
    print("| images | units | step | time | ms per unit | peak host GB |\n|---|---|---|---|---|---|")
    for n in a.images:
        for row in run(n, a.units, a.size, a.cache, a.max_mb):
            print("| " + " | ".join(str(x) for x in row) + " |", flush=True)


if __name__ == "__main__":
    main()
