"""The study report: one self-contained HTML page (figures as files beside it).

Per model and layer: detectors per category (bar chart and table, both counting rules), and the top
units by IoU with their label, category and top-activating probe images with the unit's mask overlaid
(pixels outside the mask are dimmed, as in the NetDissect reports).
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
from PIL import Image

from cnnscope.data.packed import PackedDataset
from cnnscope.errors import CnnscopeError
from cnnscope.plots import attribution_gallery, detector_bars, shape_bias_plot
from cnnscope.shapebias import analysis

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;
font-size:13px;text-align:left}th{background:#f3f3f3}img.strip{image-rendering:pixelated}
.unit{margin:.6em 0}.meta{color:#555;font-size:13px}h2{border-bottom:2px solid #ddd}
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
        model,
        layer,
        pd.read_csv(d / "units.csv"),
        pd.read_csv(d / "detectors.csv"),
        json.loads((d / "summary.json").read_text()),
        np.load(d / "thresholds.npy"),
        results / "extract" / dataset / model / layer,
    )


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


def _reference_decisions(folder: Path) -> pd.DataFrame:
    """A reference folder's decisions; human observers (``subject-NN``) are pooled as one maker."""
    df = analysis.read_decisions(folder)
    if df["subj"].astype(str).str.startswith("subject-").all():
        df = df.assign(subj=f"humans ({folder.name})")
    return df


def shape_bias_section(
    results: Path, stimuli: str, models: list[str], references: list[str], figs: Path
) -> list[str]:
    """The figure and table of the texture-vs-shape stage."""
    frames, rows = [], []
    for m in models:
        d = results / "cueconflict" / stimuli / m
        if not (d / "summary.json").is_file():
            raise CnnscopeError(f"{d} has no summary.json; run the cueconflict step for {m}")
        frames.append(pd.read_csv(d / "cue-conflict.csv"))
        summ = json.loads((d / "summary.json").read_text())
        metrics = results / "train" / m / "metrics.json"
        met = json.loads(metrics.read_text()) if metrics.is_file() else {}
        rows.append(
            {
                "decision-maker": m,
                **{
                    k: summ[k]
                    for k in (
                        "shape_bias",
                        "shape_hits",
                        "texture_hits",
                        "cue_fraction",
                        "edge_accuracy",
                        "silhouette_accuracy",
                    )
                },
                "clean_accuracy": met.get("val_accuracy", float("nan")),
                "random_texture_accuracy": met.get("val_accuracy_random_texture", float("nan")),
            }
        )
    for ref in references:
        df = _reference_decisions(Path(ref))
        frames.append(df)
        for subj, bias in analysis.shape_bias(df).iterrows():
            rows.append(
                {
                    "decision-maker": subj,
                    "shape_bias": bias["shape_bias"],
                    "shape_hits": int(bias["shape_hits"]),
                    "texture_hits": int(bias["texture_hits"]),
                    "cue_fraction": bias["cue_fraction"],
                }
            )
    decisions = pd.concat(frames, ignore_index=True)
    per_class = analysis.shape_bias_per_class(decisions)
    table = pd.DataFrame(rows)
    pooled = dict(zip(table["decision-maker"], table["shape_bias"], strict=True))
    fig = shape_bias_plot(per_class, pooled, figs / "shape_bias.png")
    per_class.to_csv(figs / "shape_bias_per_class.csv", index=False)
    table.to_csv(figs / "shape_bias.csv", index=False)
    return [
        "<h2>Texture vs shape</h2><p class='meta'>Cue-conflict stimuli "
        f"(<b>{html.escape(stimuli)}</b>): shape bias = shape hits / (shape hits + texture hits) "
        "over trials whose shape and texture classes differ. <i>cue_fraction</i> is the share of "
        "those trials decided by either cue; read shape bias beside it and beside clean accuracy.</p>",
        f"<img src='figures/{fig.name}' alt='shape bias per class'>",
        _table(table),
    ]


def attribution_section(
    results: Path, probe: str, models: list[str], data: PackedDataset, figs: Path
) -> list[str]:
    """A gallery of every method per model on the same probe images, and the metrics table."""
    parts, tables = ["<h2>Attribution</h2>"], []
    for m in models:
        d = results / "attribution" / probe / m
        if not (d / "metrics.csv").is_file():
            raise CnnscopeError(f"{d} has no metrics.csv; run the attribution step for {m}")
        maps = dict(np.load(d / "maps.npz"))
        images = np.asarray(data.images[np.load(d / "images.npy")])
        fig = attribution_gallery(
            images, maps, f"{m}: maps for the predicted class", figs / f"{m}_attribution.png"
        )
        grid = figs / f"{m}_feature_grid.png"
        Image.open(d / "feature_grid.png").save(grid)
        parts += [
            f"<img src='figures/{fig.name}' alt='attribution maps of {html.escape(m)}'>",
            f"<p class='meta'>{html.escape(m)}: every feature map of the attribution layer for the "
            "first image (each scaled to its own range)</p>"
            f"<img class='strip' src='figures/{grid.name}' alt='feature maps of {html.escape(m)}' "
            f"width='{2 * Image.open(grid).width}'>",
        ]
        tables.append(pd.read_csv(d / "metrics.csv"))
    metrics = pd.concat(tables, ignore_index=True)
    metrics.to_csv(figs / "attribution_metrics.csv", index=False)
    parts += [
        "<p class='meta'>Average Drop (lower is better) and Increase in Confidence (higher) on the image "
        "multiplied by its map; deletion AUC (lower) and insertion AUC (higher) of the target "
        "probability as the most attributed pixels are removed or inserted.</p>",
        _table(metrics),
    ]
    return parts


def _featurevis_image(results: Path, probe: str, model: str, layer: str, unit: int, figs: Path) -> str:
    """The unit's activation-maximization image as an <img>, or nothing when none was made."""
    src = results / "featurevis" / probe / model / layer / f"unit_{unit}.png"
    if not src.is_file():
        return ""
    name = f"{model}_{layer}_unit{unit}_maximized.png".replace("/", "_")
    Image.open(src).resize((96, 96), Image.NEAREST).save(figs / name)
    alt = f"unit {unit} maximized"
    return f"<img class='strip' src='figures/{name}' alt='{alt}' title='activation maximization'> "


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda x: f"{x:.3f}", border=0)


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
) -> Path:
    """Write ``out/index.html`` and ``out/figures/*`` for the dissected ``entries`` and, when
    given, the cue-conflict results of the ``cue_conflict`` models on the ``stimuli`` set."""
    data = PackedDataset.open(packed)
    layers = [load_layer(results, dataset, e) for e in entries]
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    h = data.meta["image_size"][0]
    scale = max(1, 96 // h)
    models = list(dict.fromkeys(r.model for r in layers))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cnnscope report</title>",
        f"<style>{CSS}</style></head><body><h1>cnnscope study report</h1>",
        f"<p class='meta'>Probe dataset <b>{html.escape(dataset)}</b> ({len(data)} images, "
        f"{len(data.meta['labels'])} concepts in {len(data.categories)} categories). "
        f"Models: {html.escape(', '.join(models))}. Generated "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}.</p>",
    ]
    train_rows = []
    for m in models:
        metrics = results / "train" / m / "metrics.json"
        if metrics.is_file():
            met = json.loads(metrics.read_text())
            train_rows.append(
                {
                    "model": m,
                    "regime": met.get("regime", "-"),
                    "val_accuracy": met["val_accuracy"],
                    "train_accuracy": met["train_accuracy"],
                    "chance": met["chance"],
                    "seconds": met["seconds_total"],
                }
            )
    if train_rows:
        parts += ["<h2>Models trained in the pipeline</h2>", _table(pd.DataFrame(train_rows))]
    if cue_conflict:
        parts += shape_bias_section(results, stimuli or "", cue_conflict, references or [], figs)
    if attribution:
        parts += attribution_section(results, dataset, attribution, data, figs)
    for m in models:
        mine = [r for r in layers if r.model == m]
        fig = detector_bars(
            {r.layer: r.detectors for r in mine},
            f"{m}: unique detectors per category",
            figs / f"{m}_detectors.png",
        )
        parts += [
            f"<h2>{html.escape(m)}</h2>",
            f"<img src='figures/{fig.name}' alt='detectors of {html.escape(m)}'>",
        ]
        for r in mine:
            s = r.summary
            parts.append(
                f"<h3>{html.escape(m)} / {html.escape(r.layer)}</h3><p class='meta'>"
                f"{s['detectors']} of {s['units']} units are detectors ({s['iou_mode']} IoU, "
                f"quantile {s['quantile']}, thresholds {s['threshold_method']}).</p>"
            )
            det = r.detectors.pivot(index="category", columns="rule", values="unique")
            parts.append(_table(det.reset_index()))
            top = r.units.sort_values("iou", ascending=False).head(top_units)
            for _, u in top.iterrows():
                unit = int(u["unit"])
                name = f"{m}_{r.layer}_unit{unit}.png".replace("/", "_")
                Image.fromarray(unit_strip(data, r, unit, top_images, scale)).save(figs / name)
                parts.append(
                    f"<div class='unit'><b>unit {unit}</b>: {html.escape(str(u['label']))} "
                    f"({html.escape(str(u['category']))}), IoU {u['iou']:.3f}<br>"
                    + _featurevis_image(results, dataset, m, r.layer, unit, figs)
                    + f"<img class='strip' src='figures/{name}' alt='unit {unit} top images'></div>"
                )
    parts.append("</body></html>")
    index = out / "index.html"
    index.write_text("\n".join(parts))
    return index
