"""The study report: one self-contained HTML page, figures (PNG + SVG) and tables (CSV) beside it.

:func:`build_report` reads the artifacts the workflow names (:mod:`.inputs`), derives every table
(:mod:`.tables`, pure DataFrame functions) and writes the page section by section (:mod:`.page`).
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from cnnscope import plots, provenance
from cnnscope.attribution.suite import DISPLAY_NAMES
from cnnscope.data.packed import PackedDataset
from cnnscope.io import verify
from cnnscope.report import inputs as read
from cnnscope.report import page as parts
from cnnscope.report import tables
from cnnscope.report.inputs import ReportInputs
from cnnscope.report.sections import SECTIONS, Entry
from cnnscope.report.sections import decoder as _decoder  # noqa: F401  (a static edge: the rule tracks it)
from cnnscope.report.sections import formulas as _formulas  # noqa: F401  (a static edge: the rule tracks it)
from cnnscope.report.sections import mistakes as _mistakes  # noqa: F401  (a static edge: the rule tracks it)
from cnnscope.report.sections import sanity as _sanity  # noqa: F401  (a static edge: the rule tracks it)
from cnnscope.report.sections import tcav as _tcav  # noqa: F401  (a static edge: the rule tracks it)
from cnnscope.shapebias import analysis
from cnnscope.shapebias.stimuli import CONFLICT_SET, STIMULUS_SETS


def build_report(
    inputs: ReportInputs, out: Path, top_units: int = 8, top_images: int = 5, study: dict | None = None
) -> Path:
    """Write ``out/index.html`` with its ``figures/`` and ``tables/``, after checking every input
    artifact against its manifest."""
    for path, step in read.artifacts(inputs):
        verify(path, step)
    data = PackedDataset.open(inputs.packed)
    own = [m for m in inputs.models if m.snapshot_of is None]  # the snapshots have a section of their own
    layers = [read.load_layer(e) for e in inputs.layers if e.snapshot_of is None]
    models = list(dict.fromkeys(r.model for r in layers))
    metrics = {m.name: read.train_metrics(m) for m in own}
    cue_models = [m for m in own if "cueconflict" in m.artifacts]
    attr_models = [m for m in own if "attribution" in m.artifacts]
    colors = plots.model_colors(models)

    if cue_models:
        cue = {m.name: read.cue_conflict(m) for m in cue_models}
        refs = [read.reference_decisions(f) for f in inputs.references]
        bias = tables.shape_bias({n: s for n, (s, _) in cue.items()}, metrics, refs)
        conflict = [r[r["experiment"] == STIMULUS_SETS[CONFLICT_SET].experiment] for r in refs]
        per_class = tables.per_class([t for _, t in cue.values()] + conflict)
        everyone = pd.concat([*(read.stimulus_decisions(m) for m in cue_models), *refs], ignore_index=True)
        types = tables.stimulus_types(everyone)
        robust = [read.robustness_decisions(m) for m in own if "robustness" in m.artifacts]
        grey = {read.robustness_greyscale(m) for m in own if "robustness" in m.artifacts}
        empty = pd.DataFrame(columns=[*analysis.COLUMNS, "experiment"])
        curves, robust_summary = tables.robustness(
            pd.concat(robust, ignore_index=True) if robust else empty,
            pd.concat(refs, ignore_index=True) if refs else empty,
        )
    else:
        bias = pd.DataFrame(columns=["decision-maker", "shape_bias"])
    cross = tables.cross(layers, bias)

    page = parts.Page(out)
    n2v_layers = tables.net2vec_layers(layers)
    toc = [("glance", "At a glance"), ("dissection", "Dissection")]
    toc += [("net2vec", "Net2Vec")] if len(n2v_layers) else []
    basis = tables.basis(layers)
    toc += [("basis", "Rotated basis")] if len(basis) else []
    if cue_models:
        toc += [("shape", "Texture vs shape")]
        toc += [("types", "Stimulus types")] if len(types) else []
        toc += [("robustness", "Robustness")] if len(curves) else []
        toc += [("cross", "Cross-analysis")]
    toc += [("attribution", "Attribution")] if attr_models else []
    training = _training(inputs, layers, metrics)
    repeats = {m.name: m.condition for m in own if m.condition is not None}
    conditions = tables.conditions(layers, repeats) if repeats else None
    toc += [("training", "Training")] if training or repeats else []
    contributed = _contributed(inputs)
    toc += [(s.stage, s.title) for s, _ in contributed]
    toc += [("layers", "Layers and units"), ("provenance", "Provenance")]
    parts.summary(page, data, inputs.probe, layers, models, provenance.git_commit(Path(".")), toc)
    parts.glance(page, tables.glance(models, layers, metrics, bias, cross))
    parts.dissection(
        page,
        tables.detectors(layers),
        tables.by_depth(models, layers),
        tables.units(layers),
        layers[0].detector_iou,
        colors,
    )
    if len(n2v_layers):
        concepts = tables.net2vec_concepts(layers)
        parts.net2vec(
            page,
            concepts,
            tables.net2vec_gain(concepts),
            tables.net2vec_iou_by_k(layers),
            tables.net2vec_mass(concepts),
            n2v_layers,
            colors,
        )
    if len(basis):
        parts.basis(page, basis)
    if cue_models:
        parts.shape_bias(page, bias, per_class, inputs.stimuli or "", colors)
        if len(types):
            parts.stimulus_types(page, types, colors)
        if len(curves):
            pairs = tables.bias_robustness(bias, robust_summary)
            parts.robustness(page, curves, robust_summary, pairs, colors, grey)
        parts.cross(page, cross, colors)
    if attr_models:
        parts.attribution_header(page)
        frames = []
        for m in attr_models:
            table, maps, images, made = read.attribution(m)
            # Methods are named as their papers name them, not by config id.
            maps = {DISPLAY_NAMES.get(k, k): v for k, v in maps.items()}
            table = table.assign(method=table["method"].map(lambda k: DISPLAY_NAMES.get(k, k)))
            parts.attribution_model(page, m.name, data.images[images], maps, made)
            frames.append(table)
        parts.attribution_metrics(page, pd.concat(frames, ignore_index=True))
        located = [t for t in (read.localisation(m) for m in attr_models) if t is not None]
        if located:
            table = pd.concat(located, ignore_index=True)
            table = table.assign(method=table["method"].map(lambda k: DISPLAY_NAMES.get(k, k)))
            parts.localisation(page, table)
    if training or repeats:
        parts.training(page, training, conditions, colors)
    for section, entries in contributed:
        page.add(f"<h2 id='{section.stage}'>{html.escape(section.title)}</h2>")
        section.draw(page, entries)
    parts.layers(page, data, layers, top_units, top_images)
    parts.provenance(
        page,
        provenance.stage_times([(b.step, b.file) for b in inputs.benchmarks]),
        provenance.versions(),
        study or {},
    )
    return page.write("cnnscope report")


def _contributed(inputs: ReportInputs) -> list[tuple]:
    """Each registered stage section (:mod:`cnnscope.report.sections`) the study ran, with its entries."""
    out = []
    for section in SECTIONS.values():
        entries = [
            Entry(e.model, e.layer, Path(e.artifacts[section.stage]))
            for e in inputs.layers
            if section.stage in e.artifacts
        ]
        entries += [
            Entry(m.name, "", Path(m.artifacts[section.stage]))
            for m in inputs.models
            if section.stage in m.artifacts
        ]
        if entries:
            out.append((section, entries))
    return out


def _training(
    inputs: ReportInputs, layers: list[read.LayerResult], metrics: dict[str, dict]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None:
    """The tables of the Training section (detectors, scores, units visualised over training): each
    model with snapshots, at each snapshot's step and, for a model trained here, at its last step (the
    final model); ``None`` without snapshots."""
    snapshots = [m for m in inputs.models if m.snapshot_of is not None]
    if not snapshots:
        return None
    bases = {m.snapshot_of for m in snapshots}
    final = {m.name: read.train_steps(m) for m in inputs.models if m.name in bases}
    final = {name: steps for name, steps in final.items() if steps is not None}
    points = [(e.snapshot_of, e.step, read.load_layer(e)) for e in inputs.layers if e.snapshot_of is not None]
    points += [(r.model, final[r.model], r) for r in layers if r.model in final]

    def cue(m) -> dict:
        return read.cue_conflict(m)[0] if "cueconflict" in m.artifacts else {}

    scores = [
        (
            m.snapshot_of,
            m.step,
            cue(m),
            metrics.get(m.snapshot_of, {}).get("snapshots", {}).get(str(m.step), {}),
        )
        for m in snapshots
    ]
    scores += [
        (m.name, final[m.name], cue(m), metrics.get(m.name, {})) for m in inputs.models if m.name in final
    ]
    units = [(m, step, r.layer, read.featurevis_units(r)) for m, step, r in points]
    return (
        tables.training_detectors(points),
        tables.training_scores(scores),
        tables.featurevis_over_training(units),
    )
