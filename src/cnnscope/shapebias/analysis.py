"""Analyses of raw per-trial decisions: shape bias (overall and per class), cue use, accuracy.

Decisions are tables in the published raw-data columns
``subj,session,trial,rt,object_response,category,condition,imagename``; ``category`` is the shape
class (the true class for edges and silhouettes) and a cue-conflict trial's texture class is the
part after ``-`` in the last ``_``-separated field of ``imagename``, digits removed.

Shape bias (Geirhos et al. 2019) = shape hits / (shape hits + texture hits), over conflict trials
only (shape != texture). It is only meaningful beside the fraction of trials decided by either cue:
a model that rarely picks the texture class can show a "high" shape bias without knowing shapes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from cnnscope.errors import DatasetError

COLUMNS = ("subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename")


def experiment_of(csv: Path) -> str:
    """The experiment a published raw-data file belongs to:
    ``edge-experiment_subject-01_session_1.csv`` -> ``edge``."""
    return csv.name.split("_", 1)[0].removesuffix("-experiment")


def read_decisions(*paths: str | Path, experiment: str | None = None) -> pd.DataFrame:
    """Concatenate raw-data CSV files (or every ``*.csv`` of the folders given), with a column
    ``experiment``: ``experiment`` if given, else each file's (:func:`experiment_of`)."""
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.csv")) if p.is_dir() else [p]
    if not files:
        raise DatasetError(f"no decision CSV files in {', '.join(map(str, paths))}")
    frames = []
    for f in files:
        df = pd.read_csv(f)
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise DatasetError(f"{f} lacks column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
        frames.append(df[list(COLUMNS)].assign(experiment=experiment or experiment_of(f)))
    return pd.concat(frames, ignore_index=True)


def texture_class(imagename: str) -> str:
    """``0001_s5n_s01_0_bird_00_bird3-clock2.png`` -> ``clock``."""
    last = imagename.rsplit("_", 1)[-1]
    if "-" not in last:
        raise DatasetError(f"image name {imagename!r} is not a cue-conflict stimulus (<shape>-<texture>)")
    return re.sub(r"\d+", "", last.split("-", 1)[1].removesuffix(".png"))


def with_cues(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``shape``, ``texture``, ``shape_hit``, ``texture_hit`` and keep only conflict trials."""
    out = df.assign(shape=df["category"], texture=df["imagename"].map(texture_class))
    out = out[out["shape"] != out["texture"]].copy()
    out["shape_hit"] = out["object_response"] == out["shape"]
    out["texture_hit"] = out["object_response"] == out["texture"]
    return out


def _bias(g: pd.DataFrame) -> pd.Series:
    shape, texture = int(g["shape_hit"].sum()), int(g["texture_hit"].sum())
    decided = shape + texture
    return pd.Series(
        {
            "trials": len(g),
            "shape_hits": shape,
            "texture_hits": texture,
            "shape_bias": shape / decided if decided else float("nan"),
            "cue_fraction": decided / len(g) if len(g) else float("nan"),
        }
    )


def shape_bias(df: pd.DataFrame, by: str | None = "subj") -> pd.DataFrame:
    """Shape bias per decision-maker (``by``), or pooled over everyone (``by=None``)."""
    cues = with_cues(df)
    if by is None:
        return _bias(cues).to_frame().T
    return pd.DataFrame({k: _bias(g) for k, g in cues.groupby(by, sort=True)}).T.rename_axis(by)


def shape_bias_per_class(df: pd.DataFrame, by: str = "subj") -> pd.DataFrame:
    """Shape bias per decision-maker and shape class (the dots of the published figure)."""
    cues = with_cues(df)
    rows = [{by: k[0], "shape": k[1], **_bias(g)} for k, g in cues.groupby([by, "shape"], sort=True)]
    return pd.DataFrame(rows)


def accuracy(df: pd.DataFrame, by: str = "subj") -> pd.Series:
    """Fraction of trials whose response is the true class (edges, silhouettes, clean images)."""
    return (df["object_response"] == df["category"]).groupby(df[by]).mean()
