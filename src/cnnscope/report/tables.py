"""The report's tables, as pure functions of what was read: each figure on the page is drawn from one
of these, and each is written to ``tables/<name>.csv`` so the figure can be remade."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cnnscope import plots
from cnnscope.report.inputs import LayerResult
from cnnscope.shapebias import analysis
from cnnscope.shapebias import robustness as rb
from cnnscope.shapebias.stimuli import CONFLICT_SET, STIMULUS_SETS

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
    conflict = STIMULUS_SETS[CONFLICT_SET].experiment
    for df in references:
        df = df[df["experiment"] == conflict]
        if df.empty:
            continue
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


def _in_order(table: pd.DataFrame, makers: list[str]) -> pd.DataFrame:
    """``table`` with its decision-makers in ``makers``' order (a stable sort keeps the rest)."""
    rank = {m: i for i, m in enumerate(makers)}
    return table.sort_values("subj", key=lambda s: s.map(rank), kind="stable").reset_index(drop=True)


def stimulus_types(decisions: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per decision-maker and single-cue stimulus type (Geirhos et al. 2019, Fig. 2: original,
    greyscale, silhouette, edges, texture), with its 95% Wilson interval; ``decisions``: everyone's
    rows with their ``experiment``, models first."""
    types = {s.experiment: name for name, s in STIMULUS_SETS.items() if name != CONFLICT_SET}
    rows = decisions[decisions["experiment"].isin(types)]
    table = rb.accuracy(rows, ("subj", "experiment"))
    table = table.assign(type=table.pop("experiment").map(types))
    order = {name: i for i, name in enumerate(STIMULUS_SETS)}
    table = table.sort_values("type", key=lambda s: s.map(order), kind="stable")
    table = _in_order(table, list(dict.fromkeys(decisions["subj"])))
    cols = ["subj", "type", "trials", "correct", "accuracy", "ci_low", "ci_high"]
    return table[cols].rename(columns={"subj": "decision-maker"})


def robustness(models: pd.DataFrame, references: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy against distortion level (with 95% Wilson intervals) and, per decision-maker and
    distortion, undistorted and mean distorted accuracy and the half-accuracy level; the study's models
    first, then the references' decision-makers (``group``). Empty tables when nobody was distorted."""
    curves = pd.concat(
        [
            _in_order(rb.curves(df), list(dict.fromkeys(df["subj"]))).assign(group=group)
            for group, df in (("model", models), ("reference", references))
        ],
        ignore_index=True,
    )
    curves = curves.astype({"level": float, "trials": int, "correct": int, "accuracy": float})
    curves = curves.astype({"ci_low": float, "ci_high": float})
    summaries = [rb.summary(g).assign(group=group) for group, g in curves.groupby("group", sort=True)]
    summary = (
        pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame(columns=["subj", "group"])
    )
    return curves.rename(columns={"subj": "decision-maker"}), summary.rename(
        columns={"subj": "decision-maker"}
    )


def bias_robustness(bias: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per decision-maker with both: shape bias and mean robustness, the mean accuracy over the distorted
    levels of the distortions that every decision-maker of its group (models, references) was tested
    on (those distortions listed), so that each group's numbers compare."""
    rows = []
    for group, g in summary.groupby("group", sort=False):
        g = g.rename(columns={"decision-maker": "subj"})
        mean = rb.mean_robustness(g)
        shared = sorted(set.intersection(*(set(c) for _, c in g.groupby("subj")["curve"])))
        for maker, value in mean.items():
            match = bias[bias["decision-maker"] == maker]
            if len(match):
                rows.append(
                    {
                        "decision-maker": maker,
                        "group": group,
                        "shape_bias": float(match["shape_bias"].iloc[0]),
                        "mean_robustness": float(value),
                        "distortions": " ".join(shared),
                    }
                )
    return pd.DataFrame(
        rows, columns=["decision-maker", "group", "shape_bias", "mean_robustness", "distortions"]
    )


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
    """One row per model: regime, clean accuracy, shape bias, what its last dissected layer detects, and
    its mean Net2Vec IoU gain: the mean over its layers of each layer's ``mean_iou_gain`` (summary.json),
    so each layer counts once whatever its number of concepts; NaN without Net2Vec results (or without a
    segmented concept)."""
    rows = []
    for m in models:
        met = metrics.get(m, {})
        last = [r for r in layers if r.model == m][-1]
        gains = [
            _num(r.net2vec_summary.get("mean_iou_gain")) for r in layers if r.model == m and r.net2vec_summary
        ]
        gains = [g for g in gains if not np.isnan(g)]
        b = bias[bias["decision-maker"] == m]
        c = cross[cross["model"] == m] if len(cross) else cross
        rows.append({
            "model": m, "regime": met.get("regime", "–"), "clean_accuracy": met.get("val_accuracy", np.nan),
            "shape_bias": float(b["shape_bias"].iloc[0]) if len(b) else np.nan,
            "cue_fraction": float(b["cue_fraction"].iloc[0]) if len(b) else np.nan,
            "detectors_last_layer": f"{last.summary['detectors']}/{last.summary['units']} ({last.layer})",
            "shape_like_share": float(c["shape_like"].iloc[0]) if len(c) else np.nan,
            "texture_like_share": float(c["texture_like"].iloc[0]) if len(c) else np.nan,
            "net2vec_mean_iou_gain": float(np.mean(gains)) if gains else np.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def detectors(layers: list[LayerResult]) -> pd.DataFrame:
    """Unique detectors per (model, layer, counting rule, category)."""
    counts = pd.concat([r.detectors.assign(model=r.model, layer=r.layer) for r in layers], ignore_index=True)
    return counts[["model", "layer", "rule", "category", "detectors", "unique"]]


def by_depth(models: list[str], layers: list[LayerResult]) -> pd.DataFrame:
    """Detectors, units and dead units per layer, with the layer's relative depth among its model's
    dissected ones."""
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
                    "dead_units": r.summary["dead_units"],
                    "depth": i / max(1, len(own) - 1),
                }
            )
    return pd.DataFrame(rows)


def units(layers: list[LayerResult]) -> pd.DataFrame:
    """Every unit of every dissected layer, with its model and layer."""
    return pd.concat([r.units.assign(model=r.model, layer=r.layer) for r in layers], ignore_index=True)


def _num(x: float | None) -> float:
    """A summary value as a float, NaN for a missing one (JSON null)."""
    return np.nan if x is None else float(x)


def _segmentation(concepts: pd.DataFrame) -> pd.DataFrame:
    """The concepts Net2Vec segmented (image-level-only concepts have no ``net2vec_iou``)."""
    return concepts[concepts["net2vec_iou"].notna()]


def net2vec_concepts(layers: list[LayerResult]) -> pd.DataFrame:
    """Every Net2Vec concept of every layer that has Net2Vec results, model and layer first: the table
    of the single-unit vs combination scatter, and what the other Net2Vec tables summarize."""
    frames = [r.net2vec.assign(model=r.model, layer=r.layer) for r in layers if r.net2vec is not None]
    if not frames:
        return pd.DataFrame(columns=["model", "layer"])
    df = pd.concat(frames, ignore_index=True)
    return df[["model", "layer", *[c for c in df.columns if c not in ("model", "layer")]]]


def net2vec_gain(concepts: pd.DataFrame) -> pd.DataFrame:
    """Per (model, layer, category), over segmentation concepts: how many, the mean IoU of the best
    single unit and of the learned combination, and the mean gain; which kinds of concept are spread
    over several units rather than held by one."""
    seg = _segmentation(concepts)
    return (
        seg.groupby(["model", "layer", "category"], sort=False)
        .agg(
            concepts=("concept", "size"),
            mean_single_iou=("single_iou", "mean"),
            mean_net2vec_iou=("net2vec_iou", "mean"),
            mean_iou_gain=("iou_gain", "mean"),
        )
        .reset_index()
    )


def net2vec_iou_by_k(layers: list[LayerResult]) -> pd.DataFrame:
    """Per layer with Net2Vec results, the mean IoU over segmentation concepts as the combination may use
    more units: the best single unit (``kind`` "single unit", k = 1), the combination restricted to its
    k largest weights (``kind`` "top-k", one row per ``iou_top<k>`` column) and the full combination
    (``kind`` "all units", k = the layer's number of units); how many units a concept needs."""
    rows = []
    for r in layers:
        if r.net2vec is None:
            continue
        seg = _segmentation(r.net2vec)
        top = sorted((int(c.removeprefix("iou_top")), c) for c in seg.columns if c.startswith("iou_top"))
        points = [("single unit", 1, "single_iou"), *[("top-k", k, c) for k, c in top]]
        points.append(("all units", int(r.summary["units"]), "net2vec_iou"))
        rows += [
            {"model": r.model, "layer": r.layer, "kind": kind, "k": k, "mean_iou": seg[col].mean()}
            for kind, k, col in points
        ]
    return pd.DataFrame(rows, columns=["model", "layer", "kind", "k", "mean_iou"])


def net2vec_mass(concepts: pd.DataFrame) -> pd.DataFrame:
    """Per (model, layer): how many segmentation concepts need each number of units (largest weights
    first) to hold ``mass_pct`` percent of their weight mass (the ``units_for_<pct>pct_mass`` column);
    few units means a concept is local to a few units, many that it is distributed."""
    col = next((c for c in concepts.columns if c.startswith("units_for_")), None)
    columns = ["model", "layer", "mass_pct", "units", "concepts"]
    if col is None:
        return pd.DataFrame(columns=columns)
    pct = float(col.removeprefix("units_for_").removesuffix("pct_mass"))
    seg = concepts[concepts[col].notna()]
    rows = [
        {"model": m, "layer": ly, "mass_pct": pct, "units": int(u), "concepts": int(n)}
        for (m, ly), sub in seg.groupby(["model", "layer"], sort=False)
        for u, n in sub[col].astype(int).value_counts().sort_index().items()
    ]
    return pd.DataFrame(rows, columns=columns)


def net2vec_layers(layers: list[LayerResult]) -> pd.DataFrame:
    """Per layer with Net2Vec results, its summary: concepts fitted for segmentation and for
    classification, mean IoU of the best single unit and of the combination and their mean gain, and
    mean average precision of each; the section's overview."""
    keys = ("mean_single_iou", "mean_net2vec_iou", "mean_iou_gain", "mean_ap_single", "mean_ap_net2vec")
    rows = [
        {
            "model": r.model,
            "layer": r.layer,
            "segmentation_concepts": s["segmentation_concepts"],
            "classification_concepts": s["classification_concepts"],
            **{k: _num(s.get(k)) for k in keys},
        }
        for r in layers
        if (s := r.net2vec_summary) is not None
    ]
    return pd.DataFrame(
        rows, columns=["model", "layer", "segmentation_concepts", "classification_concepts", *keys]
    )


def training_detectors(points: list[tuple[str, int, LayerResult]]) -> pd.DataFrame:
    """Unique detectors per category (the top-label rule) at each training step, and the detector
    units whose top label is in the category: one row per (model, step, layer, category), from the
    dissected snapshots ``(model, step, layer result)`` (Bau et al. 2017, Fig. 10)."""
    rows = [
        r.detectors[r.detectors["rule"] == "top_label"].assign(model=model, step=step, layer=r.layer)
        for model, step, r in points
    ]
    table = pd.concat(rows, ignore_index=True)[["model", "step", "layer", "category", "unique", "detectors"]]
    return table.sort_values(["model", "step"], kind="stable").reset_index(drop=True)


def featurevis_over_training(points: list[tuple[str, int, str, dict[int, dict]]]) -> pd.DataFrame:
    """The units visualised at every step of a (model, layer) (``attribution.snapshot_featurevis``: the
    final model's top units, drawn again at each snapshot), from ``(model, step, layer, units)`` with
    ``units`` as :func:`cnnscope.report.inputs.featurevis_units` reads them: one row per (model, layer,
    unit, step) with the unit's final label and IoU, the activation its image reached and the image;
    only the (model, layer)s visualised at more than one step."""
    columns = ["model", "layer", "unit", "label", "iou", "step", "activation", "image"]
    rows = [
        {"model": model, "layer": layer, "unit": unit, "step": step, **shown}
        for model, step, layer, units in points
        for unit, shown in units.items()
    ]
    table = pd.DataFrame(rows, columns=columns)
    steps = table.groupby(["model", "layer"])["step"].transform("nunique")
    return (
        table[steps > 1].sort_values(["model", "layer", "unit", "step"], kind="stable").reset_index(drop=True)
    )


def training_scores(points: list[tuple[str, int, dict, dict]]) -> pd.DataFrame:
    """Shape bias, cue fraction and validation accuracy (clean, random texture) at each training step,
    from ``(model, step, cue-conflict summary, validation scores)``; a missing value is NaN."""
    rows = [
        {
            "model": model,
            "step": step,
            "shape_bias": cue.get("shape_bias", np.nan),
            "cue_fraction": cue.get("cue_fraction", np.nan),
            "clean_accuracy": val.get("val_accuracy", np.nan),
            "random_texture_accuracy": val.get("val_accuracy_random_texture", np.nan),
        }
        for model, step, cue, val in points
    ]
    return pd.DataFrame(rows).sort_values(["model", "step"], kind="stable").reset_index(drop=True)


def conditions(layers: list[LayerResult], condition_of: dict[str, str]) -> pd.DataFrame:
    """Unique detectors per category (top-label rule) of each training condition at each layer: the
    mean over the condition's repeats (models given ``seeds``), their sample standard deviation (NaN
    for one repeat) and their count (Bau et al. 2017, Fig. 9). ``condition_of``: model -> condition."""
    rows = [
        r.detectors[r.detectors["rule"] == "top_label"].assign(
            condition=condition_of.get(r.model, r.model), model=r.model, layer=r.layer
        )
        for r in layers
    ]
    each = pd.concat(rows, ignore_index=True)
    keys = ["condition", "layer", "category"]
    grouped = each.groupby(keys, sort=False)["unique"]
    table = grouped.agg(mean="mean", sd="std", repeats="count").reset_index()
    return table.rename(columns={"mean": "unique_mean", "sd": "unique_sd"})


def _unique(detectors: pd.DataFrame) -> int:
    return int(detectors.loc[detectors["rule"] == "top_label", "unique"].sum())


def basis(layers: list[LayerResult]) -> pd.DataFrame:
    """Per layer dissected in a random basis too, in the network's own basis and in the rotated one:
    unique detectors (top-label rule), detector units (best IoU above ``detector_iou``) and the mean
    of each unit's best IoU; beside them Net2Vec's mean validation IoU of the best single unit and of
    the learned combination (random mixtures of units against learned ones). Unique detectors are
    capped by the probe set's vocabulary, which a small one reaches: the other two still move."""
    rows = []
    for r in layers:
        if r.rotated_units is None or r.rotated_detectors is None:
            continue
        n2v = r.net2vec_summary or {}
        rows.append(
            {
                "model": r.model,
                "layer": r.layer,
                "units": r.summary["units"],
                "unique_detectors": _unique(r.detectors),
                "rotated_unique_detectors": _unique(r.rotated_detectors),
                "detector_units": int(r.units["detector"].sum()),
                "rotated_detector_units": int(r.rotated_units["detector"].sum()),
                "mean_iou": float(r.units["iou"].mean()),
                "rotated_mean_iou": float(r.rotated_units["iou"].mean()),
                "net2vec_single_iou": n2v.get("mean_single_iou", np.nan),
                "net2vec_learned_iou": n2v.get("mean_net2vec_iou", np.nan),
            }
        )
    return pd.DataFrame(rows)
