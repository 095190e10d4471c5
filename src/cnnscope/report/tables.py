"""The report's tables, as pure functions of what was read: each figure on the page is drawn from one
of these, and each is written to ``tables/<name>.csv`` so the figure can be remade."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cnnscope import plots
from cnnscope.report.inputs import LayerResult
from cnnscope.shapebias import analysis

# Cue-conflict summary keys shown for each decision-maker.
BIAS_KEYS = (
    "shape_bias",
    "shape_hits",
    "texture_hits",
    "cue_fraction",
    "edge_accuracy",
    "silhouette_accuracy",
)


def shape_bias(
    summaries: dict[str, dict], metrics: dict[str, dict], references: list[pd.DataFrame]
) -> pd.DataFrame:
    """Per decision-maker (models in order, then each reference's makers): shape bias and its context,
    with the clean and random-texture accuracy of models trained in the pipeline."""
    rows = []
    for m, summ in summaries.items():
        met = metrics.get(m, {})
        rows.append(
            {
                "decision-maker": m,
                **{k: summ[k] for k in BIAS_KEYS},
                "clean_accuracy": met.get("val_accuracy", float("nan")),
                "random_texture_accuracy": met.get("val_accuracy_random_texture", float("nan")),
            }
        )
    for df in references:
        for subj, b in analysis.shape_bias(df).iterrows():
            rows.append(
                {
                    "decision-maker": subj,
                    "shape_bias": b["shape_bias"],
                    "shape_hits": int(b["shape_hits"]),
                    "texture_hits": int(b["texture_hits"]),
                    "cue_fraction": b["cue_fraction"],
                }
            )
    return pd.DataFrame(rows)


def per_class(decisions: list[pd.DataFrame]) -> pd.DataFrame:
    """Shape bias per decision-maker and shape class, over every maker's cue-conflict trials."""
    return analysis.shape_bias_per_class(pd.concat(decisions, ignore_index=True))


def cross(layers: list[LayerResult], bias: pd.DataFrame) -> pd.DataFrame:
    """Per model, at its last dissected layer: shape bias and the shares of detector units whose top
    label is shape-like (object, part) or texture-like (texture, color, material)."""
    last = {r.model: r for r in layers}
    rows = []
    for m, r in last.items():
        match = bias[bias["decision-maker"] == m]
        if match.empty:
            continue
        det = r.units[r.units["detector"]]
        n = max(1, len(det))
        rows.append(
            {
                "model": m,
                "layer": r.layer,
                "shape_bias": float(match["shape_bias"].iloc[0]),
                "detectors": len(det),
                "shape_like": det["category"].isin(plots.SHAPE_LIKE).sum() / n,
                "texture_like": det["category"].isin(plots.TEXTURE_LIKE).sum() / n,
            }
        )
    return pd.DataFrame(rows)


def glance(
    models: list[str],
    layers: list[LayerResult],
    metrics: dict[str, dict],
    bias: pd.DataFrame,
    cross: pd.DataFrame,
) -> pd.DataFrame:
    """One row per model: regime, clean accuracy, shape bias and what its last dissected layer detects."""
    rows = []
    for m in models:
        met = metrics.get(m, {})
        last = [r for r in layers if r.model == m][-1]
        b = bias[bias["decision-maker"] == m]
        c = cross[cross["model"] == m] if len(cross) else cross
        rows.append({
            "model": m, "regime": met.get("regime", "–"), "clean_accuracy": met.get("val_accuracy", np.nan),
            "shape_bias": float(b["shape_bias"].iloc[0]) if len(b) else np.nan,
            "cue_fraction": float(b["cue_fraction"].iloc[0]) if len(b) else np.nan,
            "detectors_last_layer": f"{last.summary['detectors']}/{last.summary['units']} ({last.layer})",
            "shape_like_share": float(c["shape_like"].iloc[0]) if len(c) else np.nan,
            "texture_like_share": float(c["texture_like"].iloc[0]) if len(c) else np.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def detectors(layers: list[LayerResult]) -> pd.DataFrame:
    """Unique detectors per (model, layer, counting rule, category)."""
    counts = pd.concat([r.detectors.assign(model=r.model, layer=r.layer) for r in layers], ignore_index=True)
    return counts[["model", "layer", "rule", "category", "detectors", "unique"]]


def by_depth(models: list[str], layers: list[LayerResult]) -> pd.DataFrame:
    """Detectors and units per layer, with the layer's relative depth among its model's dissected ones."""
    rows = []
    for m in models:
        own = [r for r in layers if r.model == m]
        for i, r in enumerate(own):
            rows.append(
                {
                    "model": r.model,
                    "layer": r.layer,
                    "detectors": r.summary["detectors"],
                    "units": r.summary["units"],
                    "depth": i / max(1, len(own) - 1),
                }
            )
    return pd.DataFrame(rows)


def units(layers: list[LayerResult]) -> pd.DataFrame:
    """Every unit of every dissected layer, with its model and layer."""
    return pd.concat([r.units.assign(model=r.model, layer=r.layer) for r in layers], ignore_index=True)
