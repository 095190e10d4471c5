"""Prepare, extract and dissect end to end, one process per step as the workflow runs them (start-up
included), at one thread and at every core; then each step's start-up alone. Prints a table.

    python benchmarks/e2e.py --images 1000 --size 224 --arch resnet18 --layer layer4 [--threads 1 2]

The probe set is the synthetic world in Broden's format (``cnnscope.data.synthworld``), drawn once
into ``--cache``. Model weights are random (``weights=null``): timing does not depend on them, and
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnnscope.data.synthworld import WorldSpec, generate
from cnnscope.overrides import hydra_value

STEPS = ("prepare", "extract", "dissect")


def world(cache: Path, images: int, size: int) -> Path:
    """The Broden-format synthetic world of that size (drawn once)."""
    root = cache / f"synthworld-{images}-{size}"
    if not (root / "index.csv").is_file():
        generate(root, WorldSpec(n_images=images, image_size=size), progress=False)
    return root


def run_step(step: str, args: list[str]) -> float:
    """Wall seconds of ``python -m cnnscope.steps.<step> ARGS`` (fails loudly)."""
    start = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", f"cnnscope.steps.{step}", *args, "progress=false"],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        sys.exit(f"{step} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return time.perf_counter() - start


def pipeline(data: Path, work: Path, arch: str, layer: str, threads: int) -> dict[str, float]:
    """Each step's wall seconds, start-up included, with ``threads`` threads."""
    packed, acts, dissection = work / "packed", work / "activations", work / "dissection"
    t = f"threads={threads}"
    model = [f"model={arch}", "model.weights=null", f"layer={hydra_value(layer)}"]
    return {
        "prepare": run_step("prepare", [f"dataset_dir={hydra_value(str(data))}", f"out={packed}", t]),
        "extract": run_step("extract", [*model, f"packed={packed}", f"out={acts}", t, "device=cpu"]),
        "dissect": run_step(
            "dissect", [f"activations={acts}", f"packed={packed}", f"out={dissection}", t, "device=cpu"]
        ),
    }


def startup(step: str, repeats: int = 3) -> float:
    """The fastest of ``repeats`` bare imports of the step's module: what every job pays before work."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import cnnscope.steps.{step}"], check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, len(os.sched_getaffinity(0))])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cnnscope-bench")
    args = parser.parse_args()
    data = world(args.cache, args.images, args.size)
    print(f"{args.arch} {args.layer}, {args.images} images at {args.size} px, CPU\n")
    print(f"{'threads':>7} | " + " | ".join(f"{s:>8}" for s in STEPS) + " |    total")
    for threads in args.threads:
        with tempfile.TemporaryDirectory(dir=args.cache) as work:
            seconds = pipeline(data, Path(work), args.arch, args.layer, threads)
        cells = " | ".join(f"{seconds[s]:8.1f}" for s in STEPS)
        print(f"{threads:>7} | {cells} | {sum(seconds.values()):8.1f}")
    print(
        "\nstart-up (import of the step module, best of 3): "
        + ", ".join(f"{s} {startup(s):.2f} s" for s in STEPS)
    )


if __name__ == "__main__":
    main()
