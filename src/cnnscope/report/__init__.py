"""The study report: one self-contained HTML page, figures (PNG + SVG) and tables (CSV) beside it.

:func:`build_report` reads the artifacts the workflow names (:mod:`.inputs`), derives every table
(:mod:`.tables`, pure DataFrame functions) and writes the page section by section (:mod:`.page`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cnnscope import plots, provenance
from cnnscope.attribution.suite import DISPLAY_NAMES
from cnnscope.data.packed import PackedDataset
from cnnscope.io import verify
from cnnscope.report import inputs as read
from cnnscope.report import page as sections
from cnnscope.report import tables
from cnnscope.report.inputs import ReportInputs


def build_report(
    inputs: ReportInputs, out: Path, top_units: int = 8, top_images: int = 5, study: dict | None = None
) -> Path:
    """Write ``out/index.html`` with its ``figures/`` and ``tables/``, after checking every input
    artifact against its manifest."""
    for path, step in read.artifacts(inputs):
        verify(path, step)
    data = PackedDataset.open(inputs.packed)
    layers = [read.load_layer(e) for e in inputs.layers]
    models = list(dict.fromkeys(r.model for r in layers))
    metrics = {m.name: read.train_metrics(m) for m in inputs.models}
    cue_models = [m for m in inputs.models if "cueconflict" in m.artifacts]
    attr_models = [m for m in inputs.models if "attribution" in m.artifacts]
    colors = plots.model_colors(models)

    if cue_models:
        cue = {m.name: read.cue_conflict(m) for m in cue_models}
        refs = [read.reference_decisions(f) for f in inputs.references]
        bias = tables.shape_bias({n: s for n, (s, _) in cue.items()}, metrics, refs)
        per_class = tables.per_class([t for _, t in cue.values()] + refs)
    else:
        bias = pd.DataFrame(columns=["decision-maker", "shape_bias"])
    cross = tables.cross(layers, bias)

    page = sections.Page(out)
    n2v_layers = tables.net2vec_layers(layers)
    toc = [("glance", "At a glance"), ("dissection", "Dissection")]
    toc += [("net2vec", "Net2Vec")] if len(n2v_layers) else []
    toc += [("shape", "Texture vs shape"), ("cross", "Cross-analysis")] if cue_models else []
    toc += [("attribution", "Attribution")] if attr_models else []
    toc += [("layers", "Layers and units"), ("provenance", "Provenance")]
    sections.summary(page, data, inputs.probe, layers, models, provenance.git_commit(Path(".")), toc)
    sections.glance(page, tables.glance(models, layers, metrics, bias, cross))
    sections.dissection(
        page,
        tables.detectors(layers),
        tables.by_depth(models, layers),
        tables.units(layers),
        layers[0].detector_iou,
        colors,
    )
    if len(n2v_layers):
        concepts = tables.net2vec_concepts(layers)
        sections.net2vec(
            page,
            concepts,
            tables.net2vec_gain(concepts),
            tables.net2vec_iou_by_k(layers),
            tables.net2vec_mass(concepts),
            n2v_layers,
            colors,
        )
    if cue_models:
        sections.shape_bias(page, bias, per_class, inputs.stimuli or "", colors)
        sections.cross(page, cross, colors)
    if attr_models:
        sections.attribution_header(page)
        frames = []
        for m in attr_models:
            table, maps, images, grid = read.attribution(m)
            # Methods are named as their papers name them, not by config id.
            maps = {DISPLAY_NAMES.get(k, k): v for k, v in maps.items()}
            table = table.assign(method=table["method"].map(lambda k: DISPLAY_NAMES.get(k, k)))
            sections.attribution_model(page, m.name, data.images[images], maps, grid)
            frames.append(table)
        sections.attribution_metrics(page, pd.concat(frames, ignore_index=True))
    sections.layers(page, data, layers, top_units, top_images)
    sections.provenance(
        page,
        provenance.stage_times([(b.step, b.file) for b in inputs.benchmarks]),
        provenance.versions(),
        study or {},
    )
    return page.write("cnnscope report")
