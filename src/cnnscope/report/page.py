"""The report page: its HTML, one function per section, each given the tables it shows.

Reading order, top to bottom: a summary (what ran, when, how long, with what), an at-a-glance table
per model, the dissection overview (detectors per category and layer, detectors against depth, IoU
distributions), Net2Vec (learned unit combinations against the best single unit), texture vs shape
(per-class shape bias with humans and published CNNs when given, its spread), the cross-analysis of
shape bias against shape- and texture-like detectors, attribution (gallery, metrics, feature maps),
and per-layer details with unit cards (activation maximization, top images with the unit's mask,
DeconvNet projections of its maxima). The page opens from disk with no network.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from cnnscope import plots
from cnnscope.artifacts import PAGE, AttributionArtifact, DecoderArtifact, FeaturevisArtifact
from cnnscope.attribution.localisation import CENTRE
from cnnscope.attribution.suite import DISPLAY_NAMES, METHODS, PERTURBATION
from cnnscope.data.packed import PackedDataset
from cnnscope.dissection import DEAD_BELOW
from cnnscope.report.images import unit_strip
from cnnscope.report.inputs import LayerResult

CSS = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;
font-size:13px;text-align:left}th{background:#f3f3f3}img.strip{image-rendering:pixelated}
.unit{margin:.6em 0}.meta{color:#555;font-size:13px}h2{border-bottom:2px solid #ddd;margin-top:2em}
figure{margin:1em 0}figcaption{color:#555;font-size:13px;max-width:900px}nav a{margin-right:1em}
img.fig{max-width:100%}pre{background:#f6f6f6;padding:.6em;font-size:12px;overflow-x:auto}
summary{cursor:pointer;list-style-position:outside}summary h2{display:inline-block;width:95%}
"""
_SECTION = re.compile(r"\s*(<h2[^>]*>.*?</h2>)(.*)", re.S)


def foldable(parts: list[str]) -> list[str]:
    """Each section (from its ``<h2>`` to the next) as an open ``<details>`` whose summary is the
    heading, so a reader can fold what they are not reading; the table of contents still jumps."""
    out, inside = [], False
    for part in parts:
        m = _SECTION.match(part)
        if m:
            out += ["</details>"] if inside else []
            out.append(f"<details open><summary>{m[1]}</summary>{m[2]}")
            inside = True
        else:
            out.append(part)
    return out + (["</details>"] if inside else [])


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
        index = self.out / PAGE
        index.write_text(head + "\n".join(foldable(self.parts)) + "\n</body></html>\n")
        return index


def summary(
    page: Page,
    data: PackedDataset,
    probe: str,
    layers: list[LayerResult],
    models: list[str],
    commit: str,
    sections: list[tuple[str, str]],
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page.add(
        "<h1>cnnscope study report</h1>",
        f"<p class='meta'>Generated {now} from commit <code>{html.escape(commit)}</code>. Probe "
        f"dataset <b>{html.escape(probe)}</b>: {len(data)} images, {len(data.meta['labels'])} concepts in "
        f"{len(data.categories)} categories. Models: {html.escape(', '.join(models))}. Dissected layers: "
        f"{html.escape(', '.join(f'{r.model}/{r.layer}' for r in layers))}.</p>",
        "<nav>" + "".join(f"<a href='#{key}'>{title}</a>" for key, title in sections) + "</nav>",
    )


def glance(page: Page, table: pd.DataFrame) -> None:
    page.add("<h2 id='glance'>At a glance</h2>")
    page.table(table, "at_a_glance")


def dissection(
    page: Page,
    counts: pd.DataFrame,
    totals: pd.DataFrame,
    units: pd.DataFrame,
    detector_iou: float,
    colors: dict,
) -> None:
    page.add("<h2 id='dissection'>Network Dissection</h2>")
    page.figure(
        plots.detectors_stacked(counts[counts["rule"] == "top_label"], page.figs / "detectors_per_layer.png"),
        "Unique detectors per concept category in each dissected layer (one top label per unit).",
    )
    page.table(counts, "detectors", show=False)
    page.figure(
        plots.detectors_by_depth(totals, colors, page.figs / "detectors_by_depth.png"),
        "Fraction of units that are detectors against the layer's relative depth, per model.",
    )
    page.add(
        "<p class='meta'>Per layer: its units, its detectors, and its dead units (their largest "
        f"activation on the whole probe set at most {DEAD_BELOW:g}: no probe image lifts them).</p>"
    )
    page.table(totals, "detectors_by_depth")
    page.figure(
        plots.iou_distribution(units, colors, detector_iou, page.figs / "iou_distribution.png"),
        "Distribution of each unit's best IoU per layer; units above the dotted line are detectors.",
    )
    page.table(units, "units", show=False)


def net2vec(
    page: Page,
    concepts: pd.DataFrame,
    gain: pd.DataFrame,
    by_k: pd.DataFrame,
    mass: pd.DataFrame,
    per_layer: pd.DataFrame,
    colors: dict,
) -> None:
    """Learned combinations of units against the best single unit (Net2Vec), over the layers that have
    them."""
    pct = f"{mass['mass_pct'].iloc[0]:g}%" if len(mass) else "a share"
    page.add(
        "<h2 id='net2vec'>Net2Vec: concepts across units</h2><p class='meta'>Net2Vec (Fong &amp; "
        "Vedaldi 2018) learns, per concept, a weighting of all the layer's units whose thresholded "
        "combination segments the concept, and compares it with the best single unit; both are scored "
        "by set IoU on the probe set's val split (average precision for image-level concepts). The "
        "top-k curves keep only each concept's k largest weights; the histogram counts how many units "
        f"(largest weights first) hold {pct} of a concept's weight mass: few units mean the concept is "
        "local, many that it is distributed.</p>"
    )
    page.figure(
        plots.net2vec_scatter(concepts, page.figs / "net2vec_scatter.png"),
        "IoU of each segmentation concept by its best single unit (x) and by the learned combination "
        "(y), per layer; points above the diagonal gain from combining units.",
    )
    page.table(concepts, "net2vec_concepts", show=False)
    page.figure(
        plots.net2vec_gain_bars(gain, colors, page.figs / "net2vec_gain.png"),
        "Mean IoU gain of the combination over the best single unit, per concept category and layer.",
    )
    page.table(gain, "net2vec_gain", show=False)
    page.figure(
        plots.net2vec_iou_by_k(by_k, colors, page.figs / "net2vec_iou_by_k.png"),
        "Mean IoU over segmentation concepts as the combination may use its k largest weights; crosses "
        "mark the best single unit, stars the full combination (all of the layer's units).",
    )
    page.table(by_k, "net2vec_iou_by_k", show=False)
    if len(mass):
        page.figure(
            plots.net2vec_mass(mass, colors, page.figs / "net2vec_mass.png"),
            f"Number of segmentation concepts by how many units hold {pct} of their weight mass.",
        )
    page.table(mass, "net2vec_mass", show=False)
    page.table(per_layer, "net2vec_layers")


def shape_bias(page: Page, table: pd.DataFrame, per_class: pd.DataFrame, stimuli: str, colors: dict) -> None:
    """The texture-vs-shape figures and tables."""
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


def stimulus_types(page: Page, table: pd.DataFrame, colors: dict) -> None:
    """Accuracy per single-cue stimulus type (Geirhos et al. 2019, Fig. 2)."""
    page.add(
        "<h3 id='types'>Stimulus types</h3><p class='meta'>Accuracy among the 16 classes on each type of "
        "Fig. 2 of the paper (original, greyscale, filled silhouette, edges, texture only), with 95% "
        "Wilson intervals; human observers of a reference folder are pooled. The real set ships only the "
        "silhouette and edge images, so a real model shows those two; the references' rows come from the "
        "published raw data of every type.</p>"
    )
    page.figure(
        plots.stimulus_types(table, colors, page.figs / "stimulus_types.png"),
        "Accuracy per stimulus type and decision-maker (dotted: chance, 1/16).",
    )
    page.table(table, "stimulus_types")


def robustness(
    page: Page,
    curves: pd.DataFrame,
    summary: pd.DataFrame,
    pairs: pd.DataFrame,
    colors: dict,
    greyscale: set[bool],
) -> None:
    """Accuracy under distortions, and shape bias against robustness; ``greyscale``: how the study's
    models' images were distorted (greyscale first, as the papers, or in colour)."""
    how = {
        True: "made greyscale first, as the papers did",
        False: "in colour, every channel distorted alike (<code>steps.robustness.greyscale: false</code>)",
    }
    models = " and ".join(how[g] for g in sorted(greyscale, reverse=True)) or "none"
    page.add(
        "<h3 id='robustness'>Distortion robustness</h3><p class='meta'>Accuracy under each distortion of "
        "Geirhos et al. (2018; 2019, §3.3) at the published levels, with 95% Wilson intervals: the "
        f"study's models on its images, {models}; the references on greyscale images, from the "
        "published raw data of the "
        "references (human observers of the generalisation paper; ResNet-50 trained on ImageNet and on "
        "Stylized-ImageNet). The half-accuracy level is where accuracy first falls to half of the "
        "undistorted accuracy (interpolated; none for rotation). The noise experiment's level 0 is the "
        "image at 30% contrast, as in the papers.</p>"
    )
    page.figure(
        plots.robustness_curves(curves, colors, page.figs / "robustness_curves.png"),
        "Accuracy against distortion level, levels in order of difficulty (dotted: chance).",
    )
    page.table(curves, "robustness_curves", show=False)
    page.table(summary, "robustness")
    if len(pairs):
        page.figure(
            plots.bias_robustness(pairs, colors, page.figs / "shape_bias_robustness.png"),
            "Mean accuracy under distortion against shape bias, per decision-maker (each group averaged "
            "over the distortions all its members share; the humans of the two experiments are different "
            "observers).",
        )
        page.table(pairs, "shape_bias_robustness")


def cross(page: Page, table: pd.DataFrame, colors: dict) -> None:
    page.add("<h2 id='cross'>Cross-analysis: shape bias and what the units detect</h2>")
    if len(table):
        page.figure(
            plots.cross_analysis(table, colors, page.figs / "cross_analysis.png"),
            "Per model, shape bias against the share of its detector units (last dissected layer) "
            "whose top label is shape-like (object, part) or texture-like (texture, color, material).",
        )
    page.table(table, "cross_analysis")


def basis(page: Page, table: pd.DataFrame) -> None:
    """How much interpretability is axis-aligned: the layers in a random basis, and Net2Vec."""
    page.add(
        "<h2 id='basis'>Natural vs rotated basis</h2>",
        "<p class='meta'>Each layer dissected again after a random orthogonal rotation of its units "
        "(<code>steps.dissect.rotation_seed</code>; Bau et al. 2017, §3.2): rotated units are random "
        "linear combinations of the real ones. Beside them, Net2Vec's learned combinations (mean "
        "validation IoU over concepts) against the best single unit.</p>",
    )
    page.figure(
        plots.basis(table, page.figs / "basis.png"),
        "Unique detectors (top-label rule, top) and detector units (middle) in the network's basis and in "
        "a random rotation; Net2Vec's mean IoU of the best single unit and of the learned combination "
        "(bottom).",
    )
    page.table(table, "basis")


def training(
    page: Page,
    snapshots: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None,
    conditions: pd.DataFrame | None,
    colors: dict,
) -> None:
    """Interpretability over training (the snapshots' detectors, shape bias and, where drawn, the same
    units' activation maximization against step) and across training conditions (detectors per
    condition, repeats as error bars)."""
    page.add("<h2 id='training'>Training</h2>")
    if snapshots is not None:
        detectors, scores, strips = snapshots
        page.add(
            "<p class='meta'>Snapshots of each model's weights during training (<code>snapshots</code> in "
            "the study), dissected at the model's layers and evaluated on the cue-conflict stimuli like "
            "models of their own; the last step is the final model. Step 0 is the random "
            "initialisation.</p>"
        )
        page.figure(
            plots.training_detectors(detectors, page.figs / "training_detectors.png"),
            "Unique detectors per category (top-label rule) against training step, per model and layer "
            "(cf. Bau et al. 2017, Fig. 10).",
        )
        page.table(detectors, "training_detectors", show=False)
        if scores["shape_bias"].notna().any() or scores["clean_accuracy"].notna().any():
            page.figure(
                plots.training_scores(scores, colors, page.figs / "training_scores.png"),
                "Shape bias (solid) and clean validation accuracy (dashed) against training step.",
            )
        page.table(scores, "training_scores")
        if len(strips):
            page.add(
                "<h3>Units over training</h3><p class='meta'>The final model's top units of each layer "
                "(<code>attribution.snapshot_featurevis</code>), their activation-maximization images "
                "drawn again from the weights of every snapshot.</p>"
            )
            for (m, layer), one in strips.groupby(["model", "layer"], sort=False):
                name = f"training_units_{m}_{layer}".replace("/", "_")
                page.figure(
                    plots.featurevis_strips(one, page.figs / f"{name}.png"),
                    f"{m} {layer}: each unit's activation maximization at each training step (rows: units, "
                    "labelled as at the final model).",
                )
            page.table(strips.drop(columns="image"), "training_units", show=False)
    if conditions is not None:
        page.add(
            "<h3>Training conditions</h3><p class='meta'>Each condition is a model of the study; one given "
            "<code>seeds</code> is repeated from each initialisation seed, its repeats shown as the mean "
            "and, as error bars, their standard deviation.</p>"
        )
        page.figure(
            plots.conditions(conditions, page.figs / "training_conditions.png"),
            "Unique detectors per category (top-label rule) for each training condition, per layer "
            "(cf. Bau et al. 2017, Fig. 9).",
        )
        page.table(conditions, "training_conditions", show=False)
        cell = conditions.assign(
            cell=[
                f"{m:.1f}" if n < 2 else f"{m:.1f} ± {sd:.1f}"
                for m, sd, n in zip(
                    conditions["unique_mean"], conditions["unique_sd"], conditions["repeats"], strict=True
                )
            ]
        )
        grid = cell.pivot(index=["condition", "layer"], columns="category", values="cell").fillna("0")
        page.add(
            grid.to_html(border=0),
            "<p class='meta'>Mean ± standard deviation over repeats. Table: "
            "<a href='tables/training_conditions.csv'>tables/training_conditions.csv</a></p>",
        )


def attribution_header(page: Page) -> None:
    page.add("<h2 id='attribution'>Attribution</h2>")


def attribution_model(
    page: Page, model: str, images: np.ndarray, maps: dict[str, np.ndarray], made: AttributionArtifact
) -> None:
    """One model's gallery (every method's map on the same probe images), its feature-map grid and its
    first convolution's filters."""
    page.figure(
        plots.attribution_gallery(
            images, maps, f"{model}: maps for the predicted class", page.figs / f"{model}_attribution.png"
        ),
        f"{model}: every method's map for the predicted class on the same probe images.",
    )
    dest = page.figs / f"{model}_feature_grid.png"
    grid_image = Image.open(made.feature_grid)
    grid_image.save(dest)
    page.add(
        f"<p class='meta'>{html.escape(model)}: every feature map of the attribution layer for the "
        f"first image (each scaled to its own range).</p><img class='strip' "
        f"src='figures/{dest.name}' alt='feature maps of {html.escape(model)}' "
        f"width='{2 * grid_image.width}'>"
    )
    if made.first_filters.is_file():  # absent when the first convolution does not read RGB
        dest = page.figs / f"{model}_first_filters.png"
        filters = Image.open(made.first_filters)
        filters.save(dest)
        page.add(
            f"<p class='meta'>{html.escape(model)}: the filters of its first convolution as colour "
            f"images (each scaled to its own range, enlarged).</p><img class='strip' "
            f"src='figures/{dest.name}' alt='first-layer filters of {html.escape(model)}' "
            f"width='{filters.width}'>"
        )


def attribution_metrics(page: Page, table: pd.DataFrame) -> None:
    masked = [DISPLAY_NAMES[m] for m in METHODS if m in PERTURBATION]
    page.add(
        "<p class='meta'>Average Drop (lower is better) and Increase in Confidence (higher) on the "
        "image multiplied by its map; deletion AUC (lower) and insertion AUC (higher) of the target "
        "probability as the most attributed pixels are removed or inserted. Each method's cost per "
        "image: forward and backward passes through the model, counted by hooks, and seconds. "
        f"{', '.join(masked[:-1])} and {masked[-1]} (a forward pass per mask, "
        "hundreds each) are computed and scored on fewer images (the images column).</p>"
    )
    learned = {"L-CAM-Fm", "L-CAM-Img"}
    without = [m for m, g in table.groupby("model", sort=False) if not learned & set(g["method"])]
    if without:
        page.add(
            f"<p class='meta'>No L-CAM for {html.escape(', '.join(without))}: L-CAM trains on a model's "
            "training images, which the study has only for models it trains (give others "
            "<code>attribution.lcam_data</code>, an ImageNet-layout folder).</p>"
        )
    page.table(table, "attribution_metrics")


def localisation(page: Page, table: pd.DataFrame) -> None:
    """Do the maps point at the object? Pointing game and energy share against the world's masks."""
    page.add(
        "<h3 id='localisation'>Localisation</h3><p class='meta'>Each method's map of the true class on "
        "the shape/texture world's originals (models trained here), whose object masks are known by "
        "construction. Pointing "
        "game (Zhang et al. 2016, as TorchRay defines it): a hit when the map's maximum lies within 15 px "
        "of the object at 224 px, scaled to the image; pooled and as the mean of per-class accuracies. "
        "Objects placed as the models were trained (centred: the centre point hits almost every one) "
        "and anywhere (smaller, at any position). For every model, also the probe set's images that show "
        "a labelled object (<i>probe set</i>): the target is every object pixel of Broden's object "
        "masks and the map explains the model's top-1 class, since no probe label is one of a model's "
        "classes; it asks less (any object will do), so it stands apart. "
        "Energy share (Score-CAM's energy-based pointing game): the map's mass inside the object's mask, "
        "and inside its bounding box as Score-CAM measured it. The baseline row is the centre point and a "
        "uniform map.</p>"
    )
    page.figure(
        plots.localisation(table, CENTRE, page.figs / "localisation.png"),
        "Pointing-game accuracy and energy share in the mask per method and model; dashed: the centre "
        "point / uniform-map baseline.",
    )
    page.table(table, "localisation")


def _unit_thumbnail(
    r: LayerResult, unit: int, src: Path | None, kind: str, alt: str, title: str, figs: Path
) -> str:
    """A unit's image ``src`` enlarged to 96 px (``figures/<model>_<layer>_unit<unit>_<kind>.png``) as an
    <img>, or nothing when none was made."""
    if src is None or not src.is_file():
        return ""
    name = f"{r.model}_{r.layer}_unit{unit}_{kind}.png".replace("/", "_")
    Image.open(src).resize((96, 96), Image.NEAREST).save(figs / name)
    return f"<img class='strip' src='figures/{name}' alt='unit {unit} {alt}' title='{title}'> "


def _featurevis_image(r: LayerResult, unit: int, figs: Path) -> str:
    """The unit's activation-maximization image as an <img>, or nothing when none was made."""
    src = FeaturevisArtifact(r.featurevis_dir).unit_image(unit) if r.featurevis_dir else None
    return _unit_thumbnail(r, unit, src, "maximized", "maximized", "activation maximization", figs)


def _dgn_image(r: LayerResult, unit: int, figs: Path) -> str:
    """The unit's activation maximisation through the decoder (DGN-AM) as an <img>, or nothing."""
    src = DecoderArtifact(r.decoder_dir).dgn_image(unit) if r.decoder_dir else None
    title = "DGN-AM: activation maximization through the learned decoder"
    return _unit_thumbnail(r, unit, src, "dgn", "DGN-AM", title, figs)


def _projection_image(r: LayerResult, unit: int, figs: Path) -> str:
    """The unit's DeconvNet projections above their image patches (Zeiler & Fergus), enlarged to a
    readable height, as an <img>; nothing when none were made."""
    src = FeaturevisArtifact(r.featurevis_dir).projection_image(unit) if r.featurevis_dir else None
    if src is None or not src.is_file():
        return ""
    name = f"{r.model}_{r.layer}_unit{unit}_projected.png".replace("/", "_")
    img = Image.open(src)
    factor = max(1, 160 // img.height)
    img.resize((img.width * factor, img.height * factor), Image.NEAREST).save(figs / name)
    title = "DeconvNet: the unit's maximum in each top image projected to pixels, above the image patch"
    return f"<br><img class='strip' src='figures/{name}' alt='unit {unit} projections' title='{title}'>"


def _inversions(r: LayerResult, data: PackedDataset, figs: Path, scale: int) -> str:
    """The layer's inversions beside their probe images, or nothing when none were made."""
    listing = FeaturevisArtifact(r.featurevis_dir).inversions if r.featurevis_dir else None
    if listing is None or not listing.is_file():
        return ""
    cells = []
    for inv in json.loads(listing.read_text()):
        i = inv["image"]
        shown = [
            np.array(data.images[i]),
            np.array(Image.open(FeaturevisArtifact(r.featurevis_dir).inversion_image(i))),
        ]
        learned = DecoderArtifact(r.decoder_dir).reconstruction_image(i) if r.decoder_dir else None
        if learned is not None and learned.is_file():
            shown.append(np.array(Image.open(learned).convert("RGB")))
        pair = np.concatenate(shown, 1)
        name = f"{r.model}_{r.layer}_inversion{i}.png".replace("/", "_")
        Image.fromarray(pair).resize((pair.shape[1] * scale, pair.shape[0] * scale), Image.NEAREST).save(
            figs / name
        )
        cells.append(
            f"<img class='strip' src='figures/{name}' alt='probe image {i} and its reconstruction' "
            f"title='feature loss {inv['feature_loss']:.3f}'>"
        )
    if not cells:
        return ""
    learned = (
        " Then the learned inversion (Dosovitskiy &amp; Brox 2016): the decoder's reconstruction from "
        "the features, from their sign pattern alone (binarised) and from half of them (dropout)."
        if r.decoder_dir
        else ""
    )
    return (
        "<p class='meta'>Network inversion (Mahendran &amp; Vedaldi 2015): each probe image beside the "
        f"image reconstructed from this layer's features alone by optimisation.{learned}</p>"
        + " ".join(cells)
    )


def _formula(r: LayerResult, unit: int) -> str:
    """The unit's longest best formula and its IoU (compositional explanations), if the study made them."""
    if r.formulas is None:
        return ""
    mine = r.formulas[r.formulas["unit"] == unit]
    best = mine[mine["length"] == mine["length"].max()].iloc[0]
    return f"; as a formula: {html.escape(str(best['formula']))}, IoU {best['iou']:.3f}"


def layers(
    page: Page, data: PackedDataset, results: list[LayerResult], top_units: int, top_images: int
) -> None:
    """Per layer: its detector counts and a card per top unit (activation maximization, top images,
    projections)."""
    page.add("<h2 id='layers'>Layers and units</h2>")
    scale = max(1, 96 // data.meta["image_size"][0])
    for r in results:
        s = r.summary
        page.add(
            f"<h3>{html.escape(r.model)} / {html.escape(r.layer)}</h3><p class='meta'>{s['detectors']} of "
            f"{s['units']} units are detectors ({s['iou_mode']} IoU, quantile {s['quantile']}, thresholds "
            f"{s['threshold_method']}).</p>"
        )
        det = r.detectors.pivot(index="category", columns="rule", values="unique").reset_index()
        page.add(det.to_html(index=False, border=0))
        page.add(_inversions(r, data, page.figs, scale))
        for _, u in r.units.sort_values("iou", ascending=False).head(top_units).iterrows():
            unit = int(u["unit"])
            name = f"{r.model}_{r.layer}_unit{unit}.png".replace("/", "_")
            Image.fromarray(unit_strip(data, r, unit, top_images, scale)).save(page.figs / name)
            page.add(
                f"<div class='unit'><b>unit {unit}</b>: {html.escape(str(u['label']))} "
                f"({html.escape(str(u['category']))}), IoU {u['iou']:.3f}{_formula(r, unit)}<br>"
                + _featurevis_image(r, unit, page.figs)
                + _dgn_image(r, unit, page.figs)
                + f"<img class='strip' src='figures/{name}' alt='unit {unit} top images'>"
                + _projection_image(r, unit, page.figs)
                + "</div>"
            )


def provenance(page: Page, times: pd.DataFrame, versions: dict[str, str], study: dict) -> None:
    page.add("<h2 id='provenance'>Provenance</h2><h3>How long each stage took</h3>")
    page.table(times, "stage_times")
    page.add(
        "<p class='meta'>From Snakemake's benchmark files of this study's jobs (wall seconds; peak "
        "resident memory in MB). The report's own job is not included.</p><h3>Package versions</h3>"
    )
    page.table(pd.DataFrame(list(versions.items()), columns=["package", "version"]), "versions")
    if study:
        page.add(
            "<h3>Study config</h3><pre>" + html.escape(yaml.safe_dump(study, sort_keys=False)) + "</pre>"
        )
