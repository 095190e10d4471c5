"""The study report: one self-contained HTML page, figures (PNG + SVG) and tables (CSV) beside it.

Reading order, top to bottom: a summary (what ran, when, how long, with what), an at-a-glance table
per model, the dissection overview (detectors per category and layer, detectors against depth, IoU
distributions), texture vs shape (per-class shape bias with humans and published CNNs when given, its
spread), the cross-analysis of shape bias against shape- and texture-like detectors, attribution
(gallery, metrics, feature maps), and per-layer details with unit cards (activation maximization,
top images with the unit's mask). Every figure's table is written to ``tables/`` so figures can be
remade; the page opens from disk with no network.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from cnnscope import plots
from cnnscope.data.packed import PackedDataset
from cnnscope.errors import CnnscopeError
from cnnscope.provenance import git_commit, stage_times, versions
from cnnscope.shapebias import analysis

CSS = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;
font-size:13px;text-align:left}th{background:#f3f3f3}img.strip{image-rendering:pixelated}
.unit{margin:.6em 0}.meta{color:#555;font-size:13px}h2{border-bottom:2px solid #ddd;margin-top:2em}
figure{margin:1em 0}figcaption{color:#555;font-size:13px;max-width:900px}nav a{margin-right:1em}
img.fig{max-width:100%}pre{background:#f6f6f6;padding:.6em;font-size:12px;overflow-x:auto}
"""


@dataclass
class LayerResult:
    model: str
    layer: str
    units: pd.DataFrame
    detectors: pd.DataFrame
    summary: dict
    thresholds: np.ndarray
    extract_dir: Path


def load_layer(results: Path, dataset: str, entry: str) -> LayerResult:
    """Read one dissected layer (``entry`` is ``<model>/<layer>``)."""
    model, layer = entry.split("/", 1)
    d = results / "dissect" / dataset / model / layer
    if not (d / "units.csv").is_file():
        raise CnnscopeError(f"{d} has no units.csv; run the dissect step for {entry}")
    return LayerResult(
        model, layer, pd.read_csv(d / "units.csv"), pd.read_csv(d / "detectors.csv"),
        json.loads((d / "summary.json").read_text()), np.load(d / "thresholds.npy"),
        results / "extract" / dataset / model / layer,
    )  # fmt: skip


def unit_strip(data: PackedDataset, res: LayerResult, unit: int, k: int, scale: int) -> np.ndarray:
    """The unit's ``k`` top-activating images side by side, outside-mask pixels dimmed."""
    maxima = np.load(res.extract_dir / "maxima.npy", mmap_mode="r")
    acts = np.load(res.extract_dir / "activations.npy", mmap_mode="r")
    top = np.argsort(-np.asarray(maxima[:, unit]), kind="stable")[:k]
    h, w = data.meta["image_size"]
    tiles = []
    for i in top:
        a = torch.from_numpy(np.asarray(acts[i, unit], np.float32))[None, None]
        up = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
        mask = up > res.thresholds[unit]
        img = np.asarray(data.images[i]).astype(np.float32)
        img = np.where(mask[..., None], img, img * 0.25 + 40)
        tile = np.kron(img, np.ones((scale, scale, 1))) if scale > 1 else img
        tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255))
    return np.concatenate(tiles, axis=1).clip(0, 255).astype(np.uint8)


class Page:
    """The page being written: HTML parts, and the figures and tables directories beside it."""

    def __init__(self, out: Path) -> None:
        self.out, self.parts = out, []
        self.figs, self.tables = out / "figures", out / "tables"
        self.figs.mkdir(parents=True, exist_ok=True)
        self.tables.mkdir(parents=True, exist_ok=True)

    def add(self, *parts: str) -> None:
        self.parts.extend(parts)

    def figure(self, path: Path, caption: str) -> None:
        svg = path.with_suffix(".svg")
        link = f" (<a href='figures/{svg.name}'>SVG</a>)" if svg.is_file() else ""
        self.add(
            f"<figure><img class='fig' src='figures/{path.name}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}{link}</figcaption></figure>"
        )

    def table(self, df: pd.DataFrame, name: str, show: bool = True) -> None:
        """Write ``tables/<name>.csv`` and, if ``show``, the table on the page with a link to it."""
        df.to_csv(self.tables / f"{name}.csv", index=False)
        if show:
            self.add(
                df.to_html(index=False, float_format=lambda x: f"{x:.3f}", border=0, na_rep="–"),
                f"<p class='meta'>Table: <a href='tables/{name}.csv'>tables/{name}.csv</a></p>",
            )

    def write(self, title: str) -> Path:
        head = (
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head><body>"
        )
        index = self.out / "index.html"
        index.write_text(head + "\n".join(self.parts) + "\n</body></html>\n")
        return index


def _reference_decisions(folder: Path) -> pd.DataFrame:
    """A reference folder's decisions; human observers (``subject-NN``) are pooled as one maker."""
    df = analysis.read_decisions(folder)
    if df["subj"].astype(str).str.startswith("subject-").all():
        df = df.assign(subj=f"humans ({folder.name})")
    return df


def shape_bias_tables(
    results: Path, stimuli: str, models: list[str], references: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per decision-maker (models, then references): shape bias and its context; and per class."""
    frames, rows = [], []
    for m in models:
        d = results / "cueconflict" / stimuli / m
        if not (d / "summary.json").is_file():
            raise CnnscopeError(f"{d} has no summary.json; run the cueconflict step for {m}")
        frames.append(pd.read_csv(d / "cue-conflict.csv"))
        summ = json.loads((d / "summary.json").read_text())
        metrics = results / "train" / m / "metrics.json"
        met = json.loads(metrics.read_text()) if metrics.is_file() else {}
        keep = (
            "shape_bias",
            "shape_hits",
            "texture_hits",
            "cue_fraction",
            "edge_accuracy",
            "silhouette_accuracy",
        )
        rows.append(
            {
                "decision-maker": m,
                **{k: summ[k] for k in keep},
                "clean_accuracy": met.get("val_accuracy", float("nan")),
                "random_texture_accuracy": met.get("val_accuracy_random_texture", float("nan")),
            }
        )
    for ref in references:
        df = _reference_decisions(Path(ref))
        frames.append(df)
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
    per_class = analysis.shape_bias_per_class(pd.concat(frames, ignore_index=True))
    return pd.DataFrame(rows), per_class


def shape_bias_section(
    page: Page, table: pd.DataFrame, per_class: pd.DataFrame, stimuli: str, colors: dict
) -> None:
    """The texture-vs-shape figures and tables (from :func:`shape_bias_tables`)."""
    pooled = dict(zip(table["decision-maker"], table["shape_bias"], strict=True))
    page.add(
        "<h2 id='shape'>Texture vs shape</h2><p class='meta'>Cue-conflict stimuli "
        f"(<b>{html.escape(stimuli)}</b>): shape bias = shape hits / (shape hits + texture hits) over "
        "trials whose shape and texture classes differ. <i>cue_fraction</i> is the share of those trials "
        "decided by either cue; read shape bias beside it and beside clean accuracy.</p>"
    )
    page.figure(
        plots.shape_bias_plot(per_class, pooled, colors, page.figs / "shape_bias.png"),
        "Fraction of shape decisions per shape class (dots) and pooled shape bias (dashed lines), "
        "per decision-maker.",
    )
    page.figure(
        plots.shape_bias_box(per_class, colors, page.figs / "shape_bias_box.png"),
        "Spread of the per-class shape bias of each decision-maker.",
    )
    page.table(per_class, "shape_bias_per_class", show=False)
    page.table(table, "shape_bias")


def cross_table(layers: list[LayerResult], bias: pd.DataFrame) -> pd.DataFrame:
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


def _featurevis_image(results: Path, probe: str, model: str, layer: str, unit: int, figs: Path) -> str:
    """The unit's activation-maximization image as an <img>, or nothing when none was made."""
    src = results / "featurevis" / probe / model / layer / f"unit_{unit}.png"
    if not src.is_file():
        return ""
    name = f"{model}_{layer}_unit{unit}_maximized.png".replace("/", "_")
    Image.open(src).resize((96, 96), Image.NEAREST).save(figs / name)
    alt = f"unit {unit} maximized"
    return f"<img class='strip' src='figures/{name}' alt='{alt}' title='activation maximization'> "


def _summary(
    page: Page,
    data: PackedDataset,
    probe: str,
    layers: list[LayerResult],
    models: list[str],
    repo: Path,
    sections: list[tuple[str, str]],
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page.add(
        "<h1>cnnscope study report</h1>",
        f"<p class='meta'>Generated {now} from commit <code>{html.escape(git_commit(repo))}</code>. Probe "
        f"dataset <b>{html.escape(probe)}</b>: {len(data)} images, {len(data.meta['labels'])} concepts in "
        f"{len(data.categories)} categories. Models: {html.escape(', '.join(models))}. Dissected layers: "
        f"{html.escape(', '.join(f'{r.model}/{r.layer}' for r in layers))}.</p>",
        "<nav>" + "".join(f"<a href='#{key}'>{title}</a>" for key, title in sections) + "</nav>",
    )


def _provenance(page: Page, results: Path, study: dict) -> None:
    page.add("<h2 id='provenance'>Provenance</h2><h3>How long each stage took</h3>")
    page.table(stage_times(results / "benchmarks"), "stage_times")
    page.add(
        "<p class='meta'>From Snakemake's per-job benchmark files (wall seconds; peak resident memory "
        "in MB). The report's own job is not included.</p><h3>Package versions</h3>"
    )
    page.table(pd.DataFrame(list(versions().items()), columns=["package", "version"]), "versions")
    if study:
        page.add(
            "<h3>Study config</h3><pre>" + html.escape(yaml.safe_dump(study, sort_keys=False)) + "</pre>"
        )


def build_report(
    packed: Path,
    results: Path,
    dataset: str,
    entries: list[str],
    out: Path,
    top_units: int = 8,
    top_images: int = 5,
    cue_conflict: list[str] | None = None,
    stimuli: str | None = None,
    references: list[str] | None = None,
    attribution: list[str] | None = None,
    study: dict | None = None,
    repo: Path = Path("."),
) -> Path:
    """Write ``out/index.html`` with its ``figures/`` and ``tables/`` (see the module docstring)."""
    data = PackedDataset.open(packed)
    layers = [load_layer(results, dataset, e) for e in entries]
    models = list(dict.fromkeys(r.model for r in layers))
    colors = plots.model_colors(models)
    page = Page(out)
    sections = [("glance", "At a glance"), ("dissection", "Dissection")]
    sections += [("shape", "Texture vs shape"), ("cross", "Cross-analysis")] if cue_conflict else []
    sections += [("attribution", "Attribution")] if attribution else []
    sections += [("layers", "Layers and units"), ("provenance", "Provenance")]
    _summary(page, data, dataset, layers, models, repo, sections)

    # At a glance: one row per model.
    bias, per_class = (
        shape_bias_tables(results, stimuli or "", cue_conflict, references or [])
        if cue_conflict
        else (pd.DataFrame(columns=["decision-maker", "shape_bias"]), None)
    )
    cross = cross_table(layers, bias)
    glance = []
    for m in models:
        met_path = results / "train" / m / "metrics.json"
        met = json.loads(met_path.read_text()) if met_path.is_file() else {}
        last = [r for r in layers if r.model == m][-1]
        b = bias[bias["decision-maker"] == m]
        c = cross[cross["model"] == m] if len(cross) else cross
        glance.append({
            "model": m, "regime": met.get("regime", "–"), "clean_accuracy": met.get("val_accuracy", np.nan),
            "shape_bias": float(b["shape_bias"].iloc[0]) if len(b) else np.nan,
            "cue_fraction": float(b["cue_fraction"].iloc[0]) if len(b) else np.nan,
            "detectors_last_layer": f"{last.summary['detectors']}/{last.summary['units']} ({last.layer})",
            "shape_like_share": float(c["shape_like"].iloc[0]) if len(c) else np.nan,
            "texture_like_share": float(c["texture_like"].iloc[0]) if len(c) else np.nan,
        })  # fmt: skip
    page.add("<h2 id='glance'>At a glance</h2>")
    page.table(pd.DataFrame(glance), "at_a_glance")

    # Dissection overview.
    counts = pd.concat([r.detectors.assign(model=r.model, layer=r.layer) for r in layers], ignore_index=True)
    page.add("<h2 id='dissection'>Network Dissection</h2>")
    top = counts[counts["rule"] == "top_label"]
    page.figure(
        plots.detectors_stacked(top, page.figs / "detectors_per_layer.png"),
        "Unique detectors per concept category in each dissected layer (one top label per unit).",
    )
    page.table(counts[["model", "layer", "rule", "category", "detectors", "unique"]], "detectors", show=False)
    totals = pd.DataFrame([
        {"model": r.model, "layer": r.layer, "detectors": r.summary["detectors"], "units": r.summary["units"],
         "depth": i / max(1, len([x for x in layers if x.model == r.model]) - 1)}
        for m in models for i, r in enumerate([x for x in layers if x.model == m])
    ])  # fmt: skip
    page.figure(
        plots.detectors_by_depth(totals, colors, page.figs / "detectors_by_depth.png"),
        "Fraction of units that are detectors against the layer's relative depth, per model.",
    )
    page.table(totals, "detectors_by_depth", show=False)
    units = pd.concat([r.units.assign(model=r.model, layer=r.layer) for r in layers], ignore_index=True)
    threshold = float(
        yaml.safe_load(
            (results / "dissect" / dataset / layers[0].model / layers[0].layer / "config.yaml").read_text()
        )["detector_iou"]
    )
    page.figure(
        plots.iou_distribution(units, colors, threshold, page.figs / "iou_distribution.png"),
        "Distribution of each unit's best IoU per layer; units above the dotted line are detectors.",
    )
    page.table(units, "units", show=False)

    if cue_conflict:
        shape_bias_section(page, bias, per_class, stimuli or "", colors)
        page.add("<h2 id='cross'>Cross-analysis: shape bias and what the units detect</h2>")
        if len(cross):
            page.figure(
                plots.cross_analysis(cross, colors, page.figs / "cross_analysis.png"),
                "Per model, shape bias against the share of its detector units (last dissected layer) "
                "whose top label is shape-like (object, part) or texture-like (texture, color, material).",
            )
        page.table(cross, "cross_analysis")

    if attribution:
        page.add("<h2 id='attribution'>Attribution</h2>")
        tables = []
        for m in attribution:
            d = results / "attribution" / dataset / m
            if not (d / "metrics.csv").is_file():
                raise CnnscopeError(f"{d} has no metrics.csv; run the attribution step for {m}")
            maps = dict(np.load(d / "maps.npz"))
            images = np.asarray(data.images[np.load(d / "images.npy")])
            page.figure(
                plots.attribution_gallery(
                    images, maps, f"{m}: maps for the predicted class", page.figs / f"{m}_attribution.png"
                ),
                f"{m}: every method's map for the predicted class on the same probe images.",
            )
            grid = page.figs / f"{m}_feature_grid.png"
            grid_image = Image.open(d / "feature_grid.png")
            grid_image.save(grid)
            page.add(
                f"<p class='meta'>{html.escape(m)}: every feature map of the attribution layer for the "
                f"first image (each scaled to its own range).</p><img class='strip' "
                f"src='figures/{grid.name}' alt='feature maps of {html.escape(m)}' "
                f"width='{2 * grid_image.width}'>"
            )
            tables.append(pd.read_csv(d / "metrics.csv"))
        page.add(
            "<p class='meta'>Average Drop (lower is better) and Increase in Confidence (higher) on the "
            "image multiplied by its map; deletion AUC (lower) and insertion AUC (higher) of the target "
            "probability as the most attributed pixels are removed or inserted.</p>"
        )
        page.table(pd.concat(tables, ignore_index=True), "attribution_metrics")

    page.add("<h2 id='layers'>Layers and units</h2>")
    scale = max(1, 96 // data.meta["image_size"][0])
    for r in layers:
        s = r.summary
        page.add(
            f"<h3>{html.escape(r.model)} / {html.escape(r.layer)}</h3><p class='meta'>{s['detectors']} of "
            f"{s['units']} units are detectors ({s['iou_mode']} IoU, quantile {s['quantile']}, thresholds "
            f"{s['threshold_method']}).</p>"
        )
        det = r.detectors.pivot(index="category", columns="rule", values="unique").reset_index()
        page.add(det.to_html(index=False, border=0))
        for _, u in r.units.sort_values("iou", ascending=False).head(top_units).iterrows():
            unit = int(u["unit"])
            name = f"{r.model}_{r.layer}_unit{unit}.png".replace("/", "_")
            Image.fromarray(unit_strip(data, r, unit, top_images, scale)).save(page.figs / name)
            page.add(
                f"<div class='unit'><b>unit {unit}</b>: {html.escape(str(u['label']))} "
                f"({html.escape(str(u['category']))}), IoU {u['iou']:.3f}<br>"
                + _featurevis_image(results, dataset, r.model, r.layer, unit, page.figs)
                + f"<img class='strip' src='figures/{name}' alt='unit {unit} top images'></div>"
            )
    _provenance(page, results, study or {})
    return page.write("cnnscope report")
