"""Figures of the study report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# One colour per Broden category, used everywhere so figures read alike.
CATEGORY_COLORS = {
    "object": "#4c72b0",
    "part": "#55a868",
    "scene": "#c44e52",
    "material": "#8172b2",
    "texture": "#ccb974",
    "color": "#64b5cd",
}


def detector_bars(detectors: dict[str, pd.DataFrame], title: str, out: Path) -> Path:
    """Unique detectors per category, one bar group per category and one bar per layer.

    ``detectors`` maps layer name -> the ``detectors.csv`` table of the dissect step; the
    ``top_label`` rule (each unit counted once, for its best label) is plotted.
    """
    layers = list(detectors)
    cats = list(CATEGORY_COLORS)
    width = 0.8 / max(1, len(layers))
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    for j, layer in enumerate(layers):
        df = detectors[layer]
        top = df[df["rule"] == "top_label"].set_index("category")["unique"]
        vals = [int(top.get(c, 0)) for c in cats]
        ax.bar(
            np.arange(len(cats)) + (j - (len(layers) - 1) / 2) * width,
            vals,
            width,
            label=layer,
            color=plt.cm.viridis(0.15 + 0.7 * j / max(1, len(layers) - 1)),
        )
    ax.set_xticks(np.arange(len(cats)), cats)
    ax.set_ylabel("unique detectors")
    ax.set_title(title)
    ax.legend(title="layer", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def shape_bias_plot(per_class: pd.DataFrame, pooled: dict[str, float], out: Path) -> Path:
    """The published figure's layout: one row per shape class, one marker per decision-maker at its
    fraction of shape decisions (among shape-or-texture decisions), and a vertical line at each
    decision-maker's pooled shape bias."""
    classes = sorted(per_class["shape"].unique())
    makers = list(pooled)
    colors = plt.cm.tab10(np.arange(len(makers)) % 10)
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(classes) + 1.4), dpi=110)
    for color, maker in zip(colors, makers, strict=True):
        rows = per_class[per_class["subj"] == maker].set_index("shape").reindex(classes)
        ax.scatter(rows["shape_bias"], np.arange(len(classes)), color=color, s=28, label=maker, zorder=3)
        ax.axvline(pooled[maker], color=color, linestyle="--", linewidth=1.2)
    ax.set_yticks(np.arange(len(classes)), classes)
    ax.set_xlim(-0.02, 1.02)
    ax.invert_yaxis()
    ax.set_xlabel("fraction of 'shape' decisions   (0 = texture, 1 = shape)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(4, len(makers)))
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def attribution_gallery(images: np.ndarray, maps: dict[str, np.ndarray], title: str, out: Path) -> Path:
    """One row per image: the image, then each method's map over it (jet, half transparent)."""
    n, methods = len(images), list(maps)
    fig, axes = plt.subplots(
        n, len(methods) + 1, figsize=(1.35 * (len(methods) + 1), 1.4 * n + 0.4), dpi=110, squeeze=False
    )
    for i in range(n):
        axes[i, 0].imshow(images[i])
        for j, name in enumerate(methods, start=1):
            axes[i, j].imshow(images[i])
            axes[i, j].imshow(maps[name][i].astype(np.float32), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        for ax in axes[i]:
            ax.set_axis_off()
    for j, name in enumerate(["image", *methods]):
        axes[0, j].set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
