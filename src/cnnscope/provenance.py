"""What ran, when, for how long, with what: the facts at the top of the report.

Stage timings come from the per-job benchmark files Snakemake writes (one TSV per job with wall seconds
``s`` and peak memory ``max_rss`` in MB); the workflow names the files of the study's own jobs, so
other studies sharing a results folder are not counted.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd

PACKAGES = ("cnnscope", "torch", "torchvision", "snakemake", "hydra-core", "numpy", "pandas", "matplotlib")


def stage_times(benchmarks: list[tuple[str, str]]) -> pd.DataFrame:
    """Per stage (in name order): jobs, total and longest wall seconds, and peak memory, from the
    benchmark TSVs of the jobs given as ``(stage, file)``; a job that has not written one is left out."""
    rows = []
    for stage, f in sorted(benchmarks):
        rows += _benchmark(stage, Path(f))
    if not rows:
        return pd.DataFrame(columns=["stage", "jobs", "total_s", "longest_s", "peak_rss_mb"])
    df = pd.DataFrame(rows)
    return (
        df.groupby("stage", sort=False)
        .agg(jobs=("s", "size"), total_s=("s", "sum"), longest_s=("s", "max"), peak_rss_mb=("max_rss", "max"))
        .reset_index()
    )


def _benchmark(stage: str, f: Path) -> list[dict]:
    """The job's last benchmark row, if its file exists and is whole."""
    if not f.is_file():
        return []
    try:
        t = pd.read_csv(f, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return []  # a job killed while writing its benchmark
    if not len(t):
        return []
    return [{"stage": stage, "s": float(t["s"].iloc[-1]), "max_rss": float(t["max_rss"].iloc[-1])}]


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
