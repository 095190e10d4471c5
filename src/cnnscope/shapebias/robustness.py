"""Accuracy per stimulus type and distortion level, from raw per-trial decisions of anyone.

One code path for human observers, published CNNs and cnnscope's models: each is a table in the raw
data's columns with an ``experiment`` (:func:`cnnscope.shapebias.analysis.read_decisions`).

* Accuracy of ``k`` correct of ``n`` trials, with a 95% Wilson score interval
  ``(p̂ + z²/2n ± z·sqrt(p̂(1-p̂)/n + z²/4n²)) / (1 + z²/n)``, ``z = 1.96`` (Wilson 1927): unlike the
  normal approximation it stays inside [0, 1] and is sane at 0 or n correct. Pooling observers pools
  their trials, treated as independent. A response ``na`` (no answer in time) counts as wrong.
* A distortion's curve: accuracy against the numeric level of each condition (:data:`DISTORTIONS`'s
  labels, or eidolon's ``reach-coherence-grain``, one curve per coherence, against reach).
* The half-accuracy level: where accuracy first falls to half of the undistorted accuracy, linearly
  interpolated between the two levels around it, along the levels in order of difficulty (the first
  level itself when the undistorted one is at infinity, high-pass's σ = inf); ``NaN`` when it never
  does, and for rotation, whose levels have no order of difficulty.
* Mean robustness: per decision-maker, the mean over its distortions of the mean accuracy over each
  distortion's distorted levels (the undistorted level excluded), the quantity set against shape bias
  (Geirhos et al. 2019: "increasing shape bias improves ... robustness").
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cnnscope.shapebias.distortions import DISTORTIONS, Distortion

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
EIDOLON = "eidolon"  # the generalisation paper's eidolon experiment (analysed, not generated)
BY_EXPERIMENT: dict[str, tuple[str, Distortion]] = {d.experiment: (k, d) for k, d in DISTORTIONS.items()}


def wilson(
    correct: np.ndarray | int, trials: np.ndarray | int, z: float = Z95
) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of ``correct`` successes in ``trials`` (elementwise)."""
    k, n = np.asarray(correct, dtype=float), np.asarray(trials, dtype=float)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # Mathematically p̂ lies inside; at 0 or n correct the float sum may miss it by an ulp.
    return np.clip(np.minimum(centre - half, p), 0, 1), np.clip(np.maximum(centre + half, p), 0, 1)


def _tally(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    hit = (df["object_response"] == df["category"]).rename("correct")
    out = hit.groupby([df[k] for k in keys], sort=True).agg(["size", "sum"]).reset_index()
    out = out.rename(columns={"size": "trials", "sum": "correct"})
    out["accuracy"] = out["correct"] / out["trials"]
    out["ci_low"], out["ci_high"] = wilson(out["correct"].to_numpy(), out["trials"].to_numpy())
    return out


def accuracy(df: pd.DataFrame, keys: tuple[str, ...] = ("subj", "experiment", "condition")) -> pd.DataFrame:
    """Trials, correct, accuracy and its 95% Wilson interval per group of ``keys``."""
    return _tally(df, list(keys))


def is_distortion(experiment: str) -> bool:
    return experiment in BY_EXPERIMENT or experiment == EIDOLON


def condition_level(experiment: str, condition: object) -> tuple[str, float]:
    """``(curve, level)`` of one condition: the distortion's name and the label's numeric level;
    eidolon's ``reach-coherence-grain`` -> ``("eidolon coherence <c>", reach)`` (coherence in tenths)."""
    if experiment == EIDOLON:
        reach, coherence, _grain = str(condition).split("-")
        return f"{EIDOLON} coherence {int(coherence) / 10:g}", float(reach)
    name, d = BY_EXPERIMENT[experiment]
    return name, float(d.value(str(condition)))


def _difficulty(curve: str) -> tuple[int, bool]:
    """The sign of a level's difficulty along ``curve`` (+1: larger is harder) and whether the curve
    has an order of difficulty at all."""
    if curve.startswith(EIDOLON):
        return 1, True
    d = DISTORTIONS[curve]
    first, last = d.value(d.levels[0]), d.value(d.levels[-1])
    return (1 if last > first else -1), d.monotone


def curves(df: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against level per decision-maker and distortion curve, over the distortion rows of
    ``df``, levels in order of difficulty (the undistorted first)."""
    rows = df[df["experiment"].map(is_distortion)]
    if rows.empty:
        return pd.DataFrame(
            columns=["subj", "curve", "level", "trials", "correct", "accuracy", "ci_low", "ci_high"]
        )
    parsed = [condition_level(e, c) for e, c in zip(rows["experiment"], rows["condition"], strict=True)]
    rows = rows.assign(curve=[p[0] for p in parsed], level=[p[1] for p in parsed])
    out = _tally(rows, ["subj", "curve", "level"])
    sign = out["curve"].map(lambda c: _difficulty(c)[0])
    out = out.assign(_order=out["level"] * sign).sort_values(["subj", "curve", "_order"], kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def half_level(levels: np.ndarray, accuracies: np.ndarray) -> float:
    """The level where accuracy first falls to half of ``accuracies[0]`` (the undistorted level),
    interpolated linearly between the levels around it; ``NaN`` if it never does."""
    target = accuracies[0] / 2
    for i in range(1, len(levels)):
        if accuracies[i] <= target:
            if math.isinf(levels[i - 1]):  # high-pass's undistorted σ = inf: nothing to interpolate from
                return float(levels[i])
            a0, a1 = accuracies[i - 1], accuracies[i]
            t = 1.0 if a0 == a1 else (a0 - target) / (a0 - a1)
            return float(levels[i - 1] + t * (levels[i] - levels[i - 1]))
    return math.nan


def summary(curve_table: pd.DataFrame) -> pd.DataFrame:
    """Per decision-maker and curve: undistorted accuracy, mean accuracy over the distorted levels,
    and the half-accuracy level (``NaN`` for rotation)."""
    rows = []
    for (subj, curve), g in curve_table.groupby(["subj", "curve"], sort=True):
        levels, acc = g["level"].to_numpy(), g["accuracy"].to_numpy()
        monotone = _difficulty(curve)[1]
        rows.append(
            {
                "subj": subj,
                "curve": curve,
                "clean_accuracy": float(acc[0]),
                "distorted_accuracy": float(acc[1:].mean()) if len(acc) > 1 else math.nan,
                "half_accuracy_level": half_level(levels, acc) if monotone else math.nan,
            }
        )
    return pd.DataFrame(rows)


def mean_robustness(summary_table: pd.DataFrame) -> pd.Series:
    """Per decision-maker: the mean over curves of the mean accuracy over distorted levels, over the
    curves that every decision-maker of the table has (so that the numbers compare)."""
    makers = summary_table["subj"].nunique()
    shared = summary_table.groupby("curve")["subj"].nunique().pipe(lambda n: n[n == makers].index)
    common = summary_table[summary_table["curve"].isin(shared)]
    return common.groupby("subj", sort=True)["distorted_accuracy"].mean().rename("mean_robustness")
