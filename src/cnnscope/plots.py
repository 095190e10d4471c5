"""Figures of the study report (matplotlib, Agg backend: no display needed).

Every figure is saved as PNG (for the page) and SVG (for a paper), with one colour per Broden category
and one per model used throughout, so figures read alike. Each function takes the tidy table it plots;
the report writes the same tables as CSV beside the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "svg.fonttype": "none"})

CATEGORY_COLORS = {
    "object": "#4c72b0",
    "part": "#55a868",
    "scene": "#c44e52",
    "material": "#8172b2",
    "texture": "#ccb974",
    "color": "#64b5cd",
}
SHAPE_LIKE = ("object", "part")
TEXTURE_LIKE = ("texture", "color", "material")


def model_colors(models: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per model (tab10 order); reference decision-makers get greys."""
    return {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}


def _save(fig: plt.Figure, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out)
    fig.savefig(out.with_suffix(".svg"))
    plt.close(fig)
    return out


def detectors_stacked(counts: pd.DataFrame, out: Path) -> Path:
    """Unique detectors per category, stacked, one bar per layer and one panel per model (as in
    Bau et al. 2017). ``counts``: model, layer, category, unique (the top-label rule)."""
    models = list(dict.fromkeys(counts["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(2.6 * len(models) + 1.2, 3), squeeze=False, sharey=True)
    for ax, m in zip(axes[0], models, strict=True):
        sub = counts[counts["model"] == m]
        layers = list(dict.fromkeys(sub["layer"]))
        bottom = np.zeros(len(layers))
        for cat, color in CATEGORY_COLORS.items():
            vals = (
                sub[sub["category"] == cat].set_index("layer")["unique"].reindex(layers).fillna(0).to_numpy()
            )
            ax.bar(layers, vals, bottom=bottom, color=color, label=cat, width=0.65)
            bottom += vals
        ax.set_title(m)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0, 0].set_ylabel("unique detectors")
    axes[0, -1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _save(fig, out)


def detectors_by_depth(totals: pd.DataFrame, colors: dict[str, tuple], out: Path) -> Path:
    """Detector units against relative layer depth, one line per model.
    ``totals``: model, layer, depth (0 = first dissected layer, 1 = last), detectors, units."""
    fig, ax = plt.subplots(figsize=(5, 3))
    for m, sub in totals.groupby("model", sort=False):
        ax.plot(sub["depth"], sub["detectors"] / sub["units"], marker="o", color=colors[m], label=m)
        for _, r in sub.iterrows():
            ax.annotate(
                r["layer"],
                (r["depth"], r["detectors"] / r["units"]),
                fontsize=6,
                textcoords="offset points",
                xytext=(3, 3),
            )
    ax.set_xlabel("relative depth of the dissected layer")
    ax.set_ylabel("fraction of units that are detectors")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out)


def iou_distribution(units: pd.DataFrame, colors: dict[str, tuple], threshold: float, out: Path) -> Path:
    """Each unit's best IoU, one box per (model, layer), with the detector threshold."""
    groups = list(dict.fromkeys(zip(units["model"], units["layer"], strict=True)))
    data = [units[(units["model"] == m) & (units["layer"] == ly)]["iou"].to_numpy() for m, ly in groups]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(groups) + 1.5), 3))
    box = ax.boxplot(data, patch_artist=True, widths=0.6, flierprops={"markersize": 2})
    for patch, (m, _) in zip(box["boxes"], groups, strict=True):
        patch.set_facecolor(colors[m])
        patch.set_alpha(0.6)
    ax.set_xticks(range(1, len(groups) + 1), [f"{m}\n{ly}" for m, ly in groups], fontsize=7)
    ax.axhline(threshold, color="k", linestyle=":", linewidth=1, label=f"detector IoU > {threshold}")
    ax.set_ylabel("best IoU per unit")
    ax.legend(fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out)


def _maker_colors(makers: Sequence[str], colors: dict[str, tuple]) -> dict[str, tuple]:
    greys = iter(plt.cm.Greys(np.linspace(0.9, 0.45, max(1, len(makers)))))
    return {m: colors[m] if m in colors else next(greys) for m in makers}


def shape_bias_plot(
    per_class: pd.DataFrame, pooled: dict[str, float], colors: dict[str, tuple], out: Path
) -> Path:
    """The published figure's layout: one row per shape class, one marker per decision-maker at its
    fraction of shape decisions (among shape-or-texture decisions), and a vertical line at each
    decision-maker's pooled shape bias."""
    classes = sorted(per_class["shape"].unique())
    makers = list(pooled)
    cmap = _maker_colors(makers, colors)
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(classes) + 1.6))
    for maker in makers:
        rows = per_class[per_class["subj"] == maker].set_index("shape").reindex(classes)
        ax.scatter(
            rows["shape_bias"], np.arange(len(classes)), color=cmap[maker], s=28, label=maker, zorder=3
        )
        ax.axvline(pooled[maker], color=cmap[maker], linestyle="--", linewidth=1.2)
    ax.set_yticks(np.arange(len(classes)), classes)
    ax.set_xlim(-0.02, 1.02)
    ax.invert_yaxis()
    ax.set_xlabel("fraction of 'shape' decisions   (0 = texture, 1 = shape)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(3, len(makers)))
    return _save(fig, out)


def shape_bias_box(per_class: pd.DataFrame, colors: dict[str, tuple], out: Path) -> Path:
    """The spread of per-class shape bias, one box per decision-maker."""
    makers = list(dict.fromkeys(per_class["subj"]))
    cmap = _maker_colors(makers, colors)
    data = [per_class[per_class["subj"] == m]["shape_bias"].dropna().to_numpy() for m in makers]
    fig, ax = plt.subplots(figsize=(max(3.5, 0.9 * len(makers) + 1.5), 3))
    box = ax.boxplot(data, patch_artist=True, widths=0.6)
    for patch, m in zip(box["boxes"], makers, strict=True):
        patch.set_facecolor(cmap[m])
        patch.set_alpha(0.6)
    ax.set_xticks(range(1, len(makers) + 1), makers, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("shape bias per class")
    ax.set_ylim(-0.02, 1.02)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out)


def cross_analysis(table: pd.DataFrame, colors: dict[str, tuple], out: Path) -> Path:
    """Shape bias against the share of a model's detectors that are shape-like (object, part) and
    texture-like (texture, color, material), at its last dissected layer.
    ``table``: model, layer, shape_bias, shape_like, texture_like."""
    fig, axes = plt.subplots(1, 2, figsize=(7, 3), sharey=True)
    for ax, col, label in (
        (axes[0], "shape_like", "object + part"),
        (axes[1], "texture_like", "texture + color + material"),
    ):
        for _, r in table.iterrows():
            ax.scatter(r[col], r["shape_bias"], color=colors[r["model"]], s=45, zorder=3, label=r["model"])
            ax.annotate(
                f"{r['model']} ({r['layer']})",
                (r[col], r["shape_bias"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, 4),
            )
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(f"share of detectors: {label}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("shape bias")
    axes[0].set_ylim(-0.02, 1.05)
    return _save(fig, out)


def attribution_gallery(images: np.ndarray, maps: dict[str, np.ndarray], title: str, out: Path) -> Path:
    """One row per image: the image, then each method's map over it (jet, half transparent)."""
    n, methods = len(images), list(maps)
    fig, axes = plt.subplots(
        n, len(methods) + 1, figsize=(1.35 * (len(methods) + 1), 1.4 * n + 0.4), squeeze=False
    )
    for i in range(n):
        axes[i, 0].imshow(images[i])
        for j, name in enumerate(methods, start=1):
            axes[i, j].imshow(images[i])
            h, w = images[i].shape[:2]  # a model's input_size may differ: the map spans the image
            extent = (-0.5, w - 0.5, h - 0.5, -0.5)
            axes[i, j].imshow(
                maps[name][i].astype(np.float32), cmap="jet", alpha=0.5, vmin=0, vmax=1, extent=extent
            )
        for ax in axes[i]:
            ax.set_axis_off()
    for j, name in enumerate(["image", *methods]):
        axes[0, j].set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, out)
