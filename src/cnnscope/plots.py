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


def attribution_gallery(
    images: np.ndarray,
    maps: dict[str, np.ndarray],
    title: str,
    out: Path,
    rows: Sequence[str] | None = None,
) -> Path:
    """One row per image: the image, then each method's map over it (jet, half transparent); ``rows``:
    a label left of each row."""
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
        if rows is not None:
            axes[i, 0].text(
                -0.08, 0.5, rows[i], transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=6
            )
    for j, name in enumerate(["image", *methods]):
        axes[0, j].set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, out)


def _panel_grid(groups: Sequence[tuple[str, str]], size: float = 2.5) -> tuple[plt.Figure, dict]:
    """One panel per (model, layer): a row per model, its layers left to right; unused panels hidden."""
    models = list(dict.fromkeys(m for m, _ in groups))
    layers = {m: [ly for mm, ly in groups if mm == m] for m in models}
    cols = max(len(v) for v in layers.values())
    fig, axes = plt.subplots(
        len(models), cols, figsize=(size * cols + 1.4, size * len(models) + 0.3), squeeze=False
    )
    panels = {}
    for i, m in enumerate(models):
        for j in range(cols):
            if j < len(layers[m]):
                panels[m, layers[m][j]] = axes[i, j]
            else:
                axes[i, j].set_axis_off()
    return fig, panels


def _legend_right(fig: plt.Figure, order: Sequence[str] | None = None) -> None:
    """One legend for every panel's labelled artists (each label once, in ``order`` if given), right of
    the top-right panel, where the saved figure keeps it."""
    found = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            found.setdefault(label, h)
    labels = [x for x in order if x in found] if order else list(found)
    axes = np.asarray(fig.axes).reshape(fig.axes[0].get_gridspec().get_geometry())
    axes[0, -1].legend(
        [found[x] for x in labels], labels, fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left"
    )


def _category_order(categories: Sequence[str]) -> list[str]:
    """The Broden categories in their usual order, then any others as met."""
    present = list(dict.fromkeys(categories))
    return [c for c in CATEGORY_COLORS if c in present] + [c for c in present if c not in CATEGORY_COLORS]


def _scatter_by_category(
    ax: plt.Axes,
    rows: pd.DataFrame,
    x: str,
    y: str,
    by: str,
    cats: Sequence[str],
    size: float,
    alpha: float,
) -> None:
    """Column ``x`` against ``y`` of ``rows``, one labelled series per Broden category (column ``by``),
    in the category's colour."""
    for cat in cats:
        c = rows[rows[by] == cat]
        ax.scatter(
            c[x], c[y], s=size, alpha=alpha, label=cat,
            color=CATEGORY_COLORS.get(cat, "#888888"), edgecolors="none",
        )  # fmt: skip


def net2vec_scatter(concepts: pd.DataFrame, out: Path) -> Path:
    """Per segmentation concept, the IoU of the best single unit (x) against that of the learned
    combination (y), one panel per (model, layer), coloured by category; points above the diagonal
    gain from combining units. ``concepts``: model, layer, category, single_iou, net2vec_iou."""
    seg = concepts[concepts["net2vec_iou"].notna()]
    groups = list(dict.fromkeys(zip(seg["model"], seg["layer"], strict=True)))
    fig, panels = _panel_grid(groups)
    top = max(0.05, 1.05 * float(np.nanmax(seg[["single_iou", "net2vec_iou"]].to_numpy())))
    cats = _category_order(seg["category"])
    for (m, ly), ax in panels.items():
        sub = seg[(seg["model"] == m) & (seg["layer"] == ly)]
        ax.plot([0, top], [0, top], color="k", linestyle=":", linewidth=1, label="y = x")
        _scatter_by_category(ax, sub, "single_iou", "net2vec_iou", "category", cats, size=16, alpha=0.8)
        ax.set(xlim=(0, top), ylim=(0, top), title=f"{m} / {ly}", aspect="equal")
        ax.set_xlabel("IoU, best single unit")
        ax.set_ylabel("IoU, Net2Vec combination")
        ax.spines[["top", "right"]].set_visible(False)
    _legend_right(fig, ["y = x", *cats])
    return _save(fig, out)


def _layer_shades(
    groups: Sequence[tuple[str, str]], colors: dict[str, tuple]
) -> dict[tuple[str, str], tuple]:
    """Each (model, layer) in its model's colour, lighter for a model's earlier layers."""
    shades = {}
    for m in dict.fromkeys(m for m, _ in groups):
        own = [g for g in groups if g[0] == m]
        for i, g in enumerate(own):
            alpha = 0.35 + 0.65 * i / max(1, len(own) - 1)
            shades[g] = (*colors[m][:3], alpha)
    return shades


def net2vec_gain_bars(gain: pd.DataFrame, colors: dict[str, tuple], out: Path) -> Path:
    """Mean IoU gain of the learned combination over the best single unit, one group of bars per concept
    category and one bar per (model, layer) (model colour, lighter for earlier layers).
    ``gain``: model, layer, category, mean_iou_gain."""
    cats = _category_order(gain["category"])
    groups = list(dict.fromkeys(zip(gain["model"], gain["layer"], strict=True)))
    shades = _layer_shades(groups, colors)
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.18 * len(cats) * len(groups) + 2.5), 3.2))
    x = np.arange(len(cats))
    for i, (m, ly) in enumerate(groups):
        sub = gain[(gain["model"] == m) & (gain["layer"] == ly)].set_index("category")
        vals = sub["mean_iou_gain"].reindex(cats).to_numpy(dtype=float)
        ax.bar(x - 0.4 + (i + 0.5) * width, vals, width, color=shades[m, ly], label=f"{m} / {ly}")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xticks(x, cats)
    ax.set_xlabel("concept category")
    ax.set_ylabel("mean IoU gain (Net2Vec − single unit)")
    ax.set_title("Gain of combining units, per category")
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out)


LINESTYLES = ("-", "--", ":", "-.")


def net2vec_iou_by_k(table: pd.DataFrame, colors: dict[str, tuple], out: Path) -> Path:
    """Mean IoU over segmentation concepts against the number of units the combination may use (log2
    axis): a line per (model, layer) through the top-k restrictions to the full combination (star, at
    the layer's number of units), with the best single unit as a cross at k = 1. Model colour, line
    style per layer. ``table``: model, layer, kind ("single unit", "top-k", "all units"), k, mean_iou."""
    groups = list(dict.fromkeys(zip(table["model"], table["layer"], strict=True)))
    styles = {ly: LINESTYLES[i % len(LINESTYLES)] for i, ly in enumerate(dict.fromkeys(table["layer"]))}
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for m, ly in groups:
        sub = table[(table["model"] == m) & (table["layer"] == ly)]
        line = sub[sub["kind"] != "single unit"].sort_values("k")
        full = sub[sub["kind"] == "all units"]
        single = sub[sub["kind"] == "single unit"]
        ax.plot(line["k"], line["mean_iou"], color=colors[m], linestyle=styles[ly], marker="o",
                markersize=3, label=f"{m} / {ly}")  # fmt: skip
        ax.scatter(full["k"], full["mean_iou"], color=colors[m], marker="*", s=90, zorder=3)
        ax.scatter(single["k"], single["mean_iou"], color=colors[m], marker="x", s=40, zorder=3)
    ks = sorted(set(table["k"].astype(int)))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("units the combination may use (k, log scale)")
    ax.set_ylabel("mean IoU (segmentation concepts)")
    ax.set_title("Set IoU against the number of units combined")
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    handles += [
        plt.Line2D([], [], color="k", marker="x", linestyle="none"),
        plt.Line2D([], [], color="k", marker="*", markersize=9, linestyle="none"),
    ]
    labels += ["best single unit", "all units"]
    ax.legend(handles, labels, fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out)


def net2vec_mass(mass: pd.DataFrame, colors: dict[str, tuple], out: Path) -> Path:
    """How many concepts need each number of units to hold a share of their weight mass, one panel per
    (model, layer). ``mass``: model, layer, mass_pct, units, concepts."""
    groups = list(dict.fromkeys(zip(mass["model"], mass["layer"], strict=True)))
    pct = float(mass["mass_pct"].iloc[0])
    fig, panels = _panel_grid(groups, size=2.3)
    for (m, ly), ax in panels.items():
        sub = mass[(mass["model"] == m) & (mass["layer"] == ly)]
        ax.bar(sub["units"], sub["concepts"], width=0.85, color=colors[m])
        ax.set_title(f"{m} / {ly}")
        ax.set_xlabel(f"units holding {pct:g}% of the weight")
        ax.set_ylabel("concepts")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out)


def _training_axis(ax: plt.Axes, steps: Sequence[int]) -> None:
    """Training steps on a symmetric-log axis (step 0, the initialisation, has a place)."""
    ax.set_xscale("symlog", linthresh=max(1, min((s for s in steps if s > 0), default=1)))
    ax.set_xlabel("training step")
    ax.spines[["top", "right"]].set_visible(False)


def training_detectors(table: pd.DataFrame, out: Path) -> Path:
    """Unique detectors per category against training step, one panel per (model, layer) (Bau et al.
    2017, Fig. 10). ``table``: model, step, layer, category, unique."""
    fig, panels = _panel_grid(list(dict.fromkeys(zip(table["model"], table["layer"], strict=True))))
    for (m, layer), ax in panels.items():
        sub = table[(table["model"] == m) & (table["layer"] == layer)]
        for cat in _category_order(sub["category"]):
            line = sub[sub["category"] == cat].sort_values("step")
            ax.plot(line["step"], line["unique"], marker="o", ms=3, color=CATEGORY_COLORS.get(cat), label=cat)
        _training_axis(ax, sub["step"].tolist())
        ax.set_title(f"{m} {layer}", fontsize=9)
        ax.set_ylabel("unique detectors")
    _legend_right(fig, list(CATEGORY_COLORS))
    return _save(fig, out)


def training_scores(table: pd.DataFrame, colors: dict[str, tuple], out: Path) -> Path:
    """Shape bias and clean validation accuracy against training step, a line per model (solid: shape
    bias; dashed: accuracy). ``table``: model, step, shape_bias, clean_accuracy."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for m, sub in table.groupby("model", sort=False):
        sub = sub.sort_values("step")
        ax.plot(
            sub["step"], sub["shape_bias"], marker="o", ms=3, color=colors.get(m), label=f"{m} shape bias"
        )
        ax.plot(sub["step"], sub["clean_accuracy"], ls="--", color=colors.get(m), label=f"{m} clean accuracy")
    _training_axis(ax, table["step"].tolist())
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _save(fig, out)


def featurevis_strips(table: pd.DataFrame, out: Path) -> Path:
    """One (model, layer)'s units over training: a row per unit (labelled as at the final model), a
    column per step, each cell the unit's activation-maximization image at that step. ``table``: unit,
    label, step, image (:func:`cnnscope.report.tables.featurevis_over_training`)."""
    units = list(dict.fromkeys(table["unit"]))
    steps = sorted(set(table["step"]))
    cell = table.set_index(["unit", "step"])["image"]
    fig, axes = plt.subplots(
        len(units), len(steps), figsize=(1.1 * len(steps) + 0.9, 1.1 * len(units) + 0.3), squeeze=False
    )
    for i, unit in enumerate(units):
        label = table.loc[table["unit"] == unit, "label"].iloc[0]
        for j, step in enumerate(steps):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if (unit, step) in cell.index:
                ax.imshow(plt.imread(cell[(unit, step)]), interpolation="nearest")
            if i == 0:
                ax.set_title(f"step {step}", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"unit {unit}\n{label}", fontsize=7)
    return _save(fig, out)


def conditions(table: pd.DataFrame, out: Path) -> Path:
    """Unique detectors per category for each training condition, one panel per layer: a bar per
    condition, its height the mean over the condition's repeats and its error bar their standard
    deviation (Bau et al. 2017, Fig. 9). ``table``: condition, layer, category, unique_mean, unique_sd."""
    layers = list(dict.fromkeys(table["layer"]))
    conds = list(dict.fromkeys(table["condition"]))
    cats = _category_order(table["category"])
    fig, axes = plt.subplots(
        1, len(layers), figsize=(max(3.2, 0.5 * len(conds) * len(cats)) * len(layers), 3.2), squeeze=False
    )
    shades = model_colors(conds)
    width = 0.8 / len(conds)
    x = np.arange(len(cats))
    for ax, layer in zip(axes[0], layers, strict=True):
        sub = table[table["layer"] == layer].set_index(["condition", "category"])
        for i, c in enumerate(conds):
            rows = [sub.loc[(c, k)] if (c, k) in sub.index else None for k in cats]
            mean = [r["unique_mean"] if r is not None else 0.0 for r in rows]
            sd = [r["unique_sd"] if r is not None and np.isfinite(r["unique_sd"]) else 0.0 for r in rows]
            ax.bar(x - 0.4 + (i + 0.5) * width, mean, width, yerr=sd, capsize=2, color=shades[c], label=c)
        ax.set_xticks(x, cats, rotation=30, fontsize=8)
        ax.set_title(layer, fontsize=9)
        ax.set_ylabel("unique detectors")
        ax.spines[["top", "right"]].set_visible(False)
    _legend_right(fig)
    return _save(fig, out)


def basis(table: pd.DataFrame, out: Path) -> Path:
    """Per (model, layer), in the network's basis and in a random rotation of it: unique detectors
    (top), detector units (middle); and Net2Vec's mean IoU of the best single unit and of a learned
    combination (bottom). ``table``: :func:`cnnscope.report.tables.basis`."""
    labels = [f"{m}\n{ly}" for m, ly in zip(table["model"], table["layer"], strict=True)]
    x = np.arange(len(table))
    fig, axes = plt.subplots(3, 1, figsize=(max(4.0, 0.9 * len(table) + 1.5), 7), sharex=True)
    pairs = [
        (
            "unique_detectors",
            "rotated_unique_detectors",
            "unique detectors",
            "network's basis",
            "random rotation",
        ),
        ("detector_units", "rotated_detector_units", "detector units", "network's basis", "random rotation"),
        (
            "net2vec_single_iou",
            "net2vec_learned_iou",
            "mean val IoU",
            "best single unit",
            "Net2Vec combination",
        ),
    ]
    for ax, (left, right, ylabel, left_label, right_label) in zip(axes, pairs, strict=True):
        ax.bar(x - 0.2, table[left], 0.4, color="#4c72b0", label=left_label)
        ax.bar(
            x + 0.2,
            table[right],
            0.4,
            color="#bbbbbb" if "rotated" in right else "#dd8452",
            label=right_label,
        )
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1].set_xticks(x, labels, fontsize=7)
    return _save(fig, out)


def stimulus_types(table: pd.DataFrame, colors: dict[str, tuple], out: Path) -> Path:
    """Accuracy per stimulus type, one marker per decision-maker with its 95% interval (Geirhos et al.
    2019, Fig. 2). ``table``: decision-maker, type, accuracy, ci_low, ci_high."""
    types = list(dict.fromkeys(table["type"]))
    makers = list(dict.fromkeys(table["decision-maker"]))
    cmap = _maker_colors(makers, colors)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(types) + 2.5), 3.2))
    step = 0.7 / max(1, len(makers))
    for i, maker in enumerate(makers):
        rows = table[table["decision-maker"] == maker].set_index("type").reindex(types)
        x = np.arange(len(types)) - 0.35 + step * (i + 0.5)
        err = [rows["accuracy"] - rows["ci_low"], rows["ci_high"] - rows["accuracy"]]
        ax.errorbar(x, rows["accuracy"], yerr=err, fmt="o", color=cmap[maker], label=maker, ms=4, capsize=2)
    ax.set_xticks(range(len(types)), types)
    ax.set_ylim(0, 1.02)
    ax.axhline(1 / 16, color="k", linestyle=":", linewidth=1)
    ax.set_ylabel("accuracy (16 classes)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, out)


def robustness_curves(curves: pd.DataFrame, colors: dict[str, tuple], out: Path) -> Path:
    """Accuracy against distortion level, one panel per distortion, one line per decision-maker with
    its 95% interval as a band; levels in order of difficulty, evenly spaced and labelled.
    ``curves``: decision-maker, curve, level, accuracy, ci_low, ci_high (rows in that order)."""
    panels = list(dict.fromkeys(curves["curve"]))
    makers = list(dict.fromkeys(curves["decision-maker"]))
    cmap = _maker_colors(makers, colors)
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols + 1.6, 2.4 * rows), squeeze=False, sharey=True)
    for ax, panel in zip(axes.flat, panels, strict=False):
        sub = curves[curves["curve"] == panel]
        levels = list(dict.fromkeys(sub["level"]))  # each maker's rows are in order of difficulty
        pos = {lv: i for i, lv in enumerate(levels)}
        for maker in makers:
            g = sub[sub["decision-maker"] == maker]
            if g.empty:
                continue
            x = g["level"].map(pos)
            ax.plot(x, g["accuracy"], "o-", color=cmap[maker], ms=3, label=maker)
            ax.fill_between(x, g["ci_low"], g["ci_high"], color=cmap[maker], alpha=0.2, linewidth=0)
        ax.set_xticks(range(len(levels)), [f"{lv:g}" for lv in levels], fontsize=6, rotation=45)
        ax.axhline(1 / 16, color="k", linestyle=":", linewidth=1)
        ax.set_title(panel)
        ax.set_ylim(0, 1.02)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    _legend_right(fig, makers)
    return _save(fig, out)


def bias_robustness(table: pd.DataFrame, colors: dict[str, tuple], out: Path) -> Path:
    """Mean robustness against shape bias, one point per decision-maker, one panel per group (the
    study's models; the references), each averaged over the distortions its group shares."""
    groups = list(dict.fromkeys(table["group"]))
    cmap = _maker_colors(list(table["decision-maker"]), colors)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.4 * len(groups), 3), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        sub = table[table["group"] == group]
        for r in sub.itertuples():
            ax.scatter(r.shape_bias, r.mean_robustness, color=cmap[r[1]], s=30, zorder=3)
            ax.annotate(
                r[1], (r.shape_bias, r.mean_robustness), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("shape bias")
        ax.set_ylabel("mean accuracy under distortion")
        ax.set_title("the study's models" if group == "model" else "references")
        ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out)


def localisation(table: pd.DataFrame, baseline: str, out: Path) -> Path:
    """Pointing accuracy and energy share in the mask, one bar per method, one panel row per model and
    object placement; the ``baseline`` method's row as a dashed line."""
    groups = list(dict.fromkeys(zip(table["model"], table["placement"], strict=True)))
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, 2.6 * len(groups)), squeeze=False)
    for row, (model, placement) in zip(axes, groups, strict=True):
        sub = table[(table["model"] == model) & (table["placement"] == placement)]
        methods, base = sub[sub["method"] != baseline], sub[sub["method"] == baseline].iloc[0]
        for ax, col, label in (
            (row[0], "pointing", "pointing accuracy"),
            (row[1], "energy_mask", "energy in mask"),
        ):
            ax.bar(range(len(methods)), methods[col], color="#4c72b0", width=0.7)
            ax.axhline(base[col], color="k", linestyle="--", linewidth=1)
            ax.set_xticks(range(len(methods)), methods["method"], rotation=35, ha="right", fontsize=7)
            ax.set_ylim(0, 1.02)
            ax.set_ylabel(label)
            ax.set_title(f"{model}, objects: {placement}")
            ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out)


SIMILARITIES = {"spearman": "rank correlation", "ssim": "SSIM", "hog": "HOG correlation"}


def randomisation(table: pd.DataFrame, out: Path) -> Path:
    """Each similarity to the trained model's map (:data:`SIMILARITIES`) against the cascade step, a row
    of panels per model, one line per method. ``table``: model, method, step, randomised and the
    similarities."""
    models = list(dict.fromkeys(table["model"]))
    methods = list(dict.fromkeys(table["method"]))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(
        len(models), len(SIMILARITIES), figsize=(12, 2.8 * len(models)), squeeze=False, sharey=True
    )
    for row, model in zip(axes, models, strict=True):
        sub = table[table["model"] == model]
        steps = sub.drop_duplicates("step").sort_values("step")
        labels = [
            "trained" if s == 0 else f"+{b}" for s, b in zip(steps["step"], steps["randomised"], strict=True)
        ]
        for ax, (col, title) in zip(row, SIMILARITIES.items(), strict=True):
            for m in methods:
                g = sub[sub["method"] == m].sort_values("step")
                ax.plot(g["step"], g[col], "o-", ms=3, color=colors[m], label=m)
            ax.axhline(0, color="k", linewidth=0.6)
            ax.set_xticks(steps["step"], labels, rotation=35, ha="right", fontsize=7)
            ax.set_title(f"{model}: {title}")
            ax.set_ylim(-1.02, 1.02)
            ax.spines[["top", "right"]].set_visible(False)
    _legend_right(fig, methods)
    return _save(fig, out)


def mistakes(table: pd.DataFrame, out: Path) -> Path:
    """Per model (a panel each) and method: the mean similarity of the predicted and the true class's
    maps on misclassified images beside that of the top-1 and top-2 classes' on correctly classified
    ones. ``table``: model, method, predicted_vs_true, top1_vs_top2."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(
        1, len(models), figsize=(3.4 * len(models) + 1.6, 2.8), squeeze=False, sharey=True
    )
    bars = {"predicted_vs_true": "mistakes: predicted vs true", "top1_vs_top2": "correct: top-1 vs top-2"}
    for ax, model in zip(axes[0], models, strict=True):
        sub = table[table["model"] == model]
        x = np.arange(len(sub))
        for k, (col, label) in enumerate(bars.items()):
            ax.bar(x + (k - 0.5) * 0.38, sub[col].fillna(0), 0.38, color=plt.cm.tab10(k), label=label)
        ax.set_xticks(x, sub["method"], rotation=25, ha="right", fontsize=7)
        ax.axhline(0, color="k", linewidth=0.6)
        ax.set_title(model)
        ax.set_ylim(-1.02, 1.02)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0, 0].set_ylabel("Spearman correlation of the two maps")
    _legend_right(fig)
    return _save(fig, out)


def data_randomisation(table: pd.DataFrame, out: Path) -> Path:
    """Each method's similarity to the trained model's maps of the permuted-label model's maps, a panel
    per similarity (:data:`SIMILARITIES`), a group of bars per method, a bar per model. ``table``:
    model, method and the similarities."""
    models = list(dict.fromkeys(table["model"]))
    methods = list(dict.fromkeys(table["method"]))
    fig, axes = plt.subplots(1, len(SIMILARITIES), figsize=(12, 3.2), squeeze=False, sharey=True)
    width = 0.8 / len(models)
    for ax, (col, title) in zip(axes[0], SIMILARITIES.items(), strict=True):
        for i, model in enumerate(models):
            sub = table[table["model"] == model].set_index("method").reindex(methods)
            ax.bar(np.arange(len(methods)) + i * width, sub[col], width, label=model)
        ax.axhline(0, color="k", linewidth=0.6)
        ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods, rotation=35, ha="right", fontsize=7)
        ax.set_title(f"permuted labels: {title}")
        ax.set_ylim(-1.02, 1.02)
        ax.spines[["top", "right"]].set_visible(False)
    _legend_right(fig, models)
    return _save(fig, out)


def randomisation_maps(maps: dict[str, np.ndarray], names: dict[str, str], out: Path) -> Path:
    """A grid of one image's maps: a row per method, a column per cascade step (``<method>@<step>``),
    and last, where there is one, the permuted-label model's (``<method>@labels``)."""
    methods = list(dict.fromkeys(k.rsplit("@", 1)[0] for k in maps))
    kinds = {k.rsplit("@", 1)[1] for k in maps}
    steps = sorted(int(k) for k in kinds if k.isdigit()) + sorted(k for k in kinds if not k.isdigit())
    fig, axes = plt.subplots(
        len(methods), len(steps), figsize=(1.1 * len(steps) + 1.4, 1.1 * len(methods)), squeeze=False
    )
    for i, m in enumerate(methods):
        for j, s in enumerate(steps):
            ax = axes[i, j]
            ax.imshow(maps[f"{m}@{s}"].astype(np.float32), cmap="jet", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(names.get(m, m), fontsize=7, rotation=0, ha="right", va="center")
            if i == 0:
                title = {0: "trained", "labels": "permuted labels"}.get(s, f"step {s}")
                ax.set_title(title, fontsize=7)
    return _save(fig, out)


def tcav_heatmap(table: pd.DataFrame, out: Path) -> Path:
    """TCAV scores, classes (rows) x concepts (columns), a panel per model, layer and concept family; a
    cell whose score does not differ significantly from the random concepts' is crossed out, and the
    tested class's own concepts (the world's ground truth) are outlined. ``table``: model, layer,
    family, class, concept, tcav, significant, own."""
    keys = ["model", "layer", "family"]
    panels = list(dict.fromkeys(zip(*(table[k] for k in keys), strict=True)))
    classes = list(dict.fromkeys(table["class"]))
    widest = table.groupby(keys)["concept"].nunique().max()
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(0.2 * widest + 2.5, (0.2 * len(classes) + 1.6) * len(panels)),
        squeeze=False,
    )
    for ax, (model, layer, family) in zip(axes[:, 0], panels, strict=True):
        sub = table[(table["model"] == model) & (table["layer"] == layer) & (table["family"] == family)]
        concepts = list(dict.fromkeys(sub["concept"]))

        def cells(values: str, sub: pd.DataFrame = sub, concepts: list[str] = concepts) -> np.ndarray:
            grid = sub.pivot(index="class", columns="concept", values=values)
            return grid.reindex(index=classes, columns=concepts).to_numpy()

        image = ax.imshow(cells("tcav").astype(float), cmap="RdBu_r", vmin=0, vmax=1, aspect="auto")
        for i, j in zip(*np.nonzero(~cells("significant").astype(bool)), strict=True):
            ax.plot(j, i, "x", color="0.35", ms=3, mew=0.6)
        for i, j in zip(*np.nonzero(cells("own").astype(bool)), strict=True):
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="k", linewidth=1.0))
        ax.set_xticks(range(len(concepts)), concepts, rotation=90, fontsize=6)
        ax.set_yticks(range(len(classes)), classes, fontsize=6)
        ax.set_title(
            f"{model}, {layer}, {family} concepts: TCAV (x: not significant; outlined: the class's own)",
            fontsize=8,
        )
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    return _save(fig, out)


def tcav_net2vec_scatter(table: pd.DataFrame, out: Path) -> Path:
    """Per class and probe concept, the TCAV score of the concept's CAVs (x) against that along its
    Net2Vec classification embedding (y), one panel per (model, layer), coloured by the concept's
    category; a point in the lower-left or upper-right quarter is a cell where the two agree on the
    side of 0.5. ``table``: model, layer, cue (the category), tcav, net2vec_tcav."""
    rows = table[table["net2vec_tcav"].notna()]
    groups = list(dict.fromkeys(zip(rows["model"], rows["layer"], strict=True)))
    fig, panels = _panel_grid(groups)
    cats = _category_order(rows["cue"])
    for (m, ly), ax in panels.items():
        sub = rows[(rows["model"] == m) & (rows["layer"] == ly)]
        ax.axhline(0.5, color="k", linestyle=":", linewidth=1)
        ax.axvline(0.5, color="k", linestyle=":", linewidth=1)
        _scatter_by_category(ax, sub, "tcav", "net2vec_tcav", "cue", cats, size=10, alpha=0.6)
        ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), title=f"{m} / {ly}", aspect="equal")
        ax.set_xlabel("TCAV score, CAVs")
        ax.set_ylabel("TCAV score, Net2Vec embedding")
        ax.spines[["top", "right"]].set_visible(False)
    _legend_right(fig, cats)
    return _save(fig, out)


def formula_iou_by_length(table: pd.DataFrame, out: Path) -> Path:
    """Mean IoU of the units' best formula per length (Mu & Andreas 2020's headline curve), one line
    per (model, layer). ``table``: model, layer, unit, length, iou."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for (model, layer), sub in table.groupby(["model", "layer"], sort=False):
        mean = sub.groupby("length")["iou"].mean()
        ax.plot(mean.index, mean.to_numpy(), marker="o", label=f"{model} / {layer}")
    ax.set_xticks(sorted(table["length"].unique()))
    ax.set_xlabel("formula length (concepts)")
    ax.set_ylabel("mean IoU of the best formula")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _save(fig, out)


def response_profile(
    values: np.ndarray, labels: Sequence[str] | None, top: int, title: str, out: Path
) -> Path:
    """One image's mean activation per unit of a layer as bars (the filter-visualisation check: a unit
    that detects what the image shows spikes), its ``top`` units in red and named (``u<unit>``, and its
    dissection label when ``labels`` gives one per unit). PNG only: one per image of an explain page."""
    order = np.argsort(-values, kind="stable")[:top]
    colors = np.full(len(values), "#9aa5b1", dtype=object)
    colors[order] = "#c44e52"
    fig, ax = plt.subplots(figsize=(4.2, 2.0))
    ax.bar(np.arange(len(values)), values, width=1.0, color=colors.tolist())
    for u in order:
        name = f"u{u}" + (f" {labels[u]}" if labels is not None else "")
        ax.annotate(name, (u, values[u]), fontsize=6, rotation=45, xytext=(2, 2), textcoords="offset points")
    ax.set_xlim(-1, len(values))
    ax.set_xlabel("unit")
    ax.set_ylabel("mean activation")
    ax.set_title(title, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def decoder_errors(table: pd.DataFrame, out: Path) -> Path:
    """Per model (a panel each): the learned inversion's held-out error at each layer, a line per kind
    of features it reconstructs from. ``table``: model, layer, features, error (layers in depth order)."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(
        1, len(models), figsize=(3.2 * len(models) + 1.6, 2.6), squeeze=False, sharey=True
    )
    for ax, model in zip(axes[0], models, strict=True):
        sub = table[table["model"] == model]
        layers = list(dict.fromkeys(sub["layer"]))
        for k, (features, rows) in enumerate(sub.groupby("features", sort=False)):
            rows = rows.set_index("layer").reindex(layers)
            ax.plot(layers, rows["error"], marker="o", color=plt.cm.tab10(k), label=features)
        ax.axhline(1, color="k", linewidth=0.6, linestyle=":")
        ax.set_title(model)
        ax.set_ylim(bottom=0)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0, 0].set_ylabel("held-out error (1: the mean image)")
    _legend_right(fig)
    return _save(fig, out)
