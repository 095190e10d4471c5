"""What ran, when, for how long, with what: the facts at the top of the report.

Stage timings come from the per-job benchmark files Snakemake writes (``results/benchmarks/<stage>/...``,
one TSV per job with wall seconds ``s`` and peak memory ``max_rss`` in MB).
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd

PACKAGES = ("cnnscope", "torch", "torchvision", "snakemake", "hydra-core", "numpy", "pandas", "matplotlib")


def stage_times(benchmarks: Path) -> pd.DataFrame:
    """Per stage: jobs, total and longest wall seconds, and peak memory, from benchmark TSVs."""
    rows = []
    for f in sorted(benchmarks.rglob("*.tsv")):
        stage = f.relative_to(benchmarks).parts[0].removesuffix(".tsv")
        try:
            t = pd.read_csv(f, sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError):
            continue  # a job killed while writing its benchmark
        if len(t):
            rows.append(
                {"stage": stage, "s": float(t["s"].iloc[-1]), "max_rss": float(t["max_rss"].iloc[-1])}
            )
    if not rows:
        return pd.DataFrame(columns=["stage", "jobs", "total_s", "longest_s", "peak_rss_mb"])
    df = pd.DataFrame(rows)
    return (
        df.groupby("stage", sort=False)
        .agg(jobs=("s", "size"), total_s=("s", "sum"), longest_s=("s", "max"), peak_rss_mb=("max_rss", "max"))
        .reset_index()
    )


def versions() -> dict[str, str]:
    """Python and the key packages' installed versions."""
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def git_commit(repo: Path) -> str:
    """The checkout's commit (with ``+dirty`` when it has uncommitted changes), or ``unknown``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
