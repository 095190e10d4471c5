"""The TCAV section: which of the world's concepts each class's decision is sensitive to."""

from __future__ import annotations

import pandas as pd

from cnnscope import plots
from cnnscope.artifacts import TcavArtifact
from cnnscope.report.sections import Entry, Section, register


def draw(page, entries: list[Entry]) -> None:
    table = pd.concat([pd.read_csv(TcavArtifact(e.artifact).scores) for e in entries], ignore_index=True)
    page.add(
        "<p class='meta'>Testing with concept activation vectors (Kim et al. 2018). A concept is a set of "
        "images: every class's texture over the whole image, and its shape as a filled silhouette. Its "
        "CAV is the normal of a linear classifier separating the layer's activations of the concept's "
        "images from those of random world images; a class's TCAV score is the share of its images whose "
        "logit grows along the CAV. Each concept is learned against several random sets and tested, "
        "two-sided, against CAVs of random sets (Bonferroni-corrected over the table). The world knows "
        "the answer: a model trained in the standard regime may use its class's texture, one trained in "
        "the shape regime only its shape.</p>"
    )
    own = (
        table[table["own"]]
        .groupby(["model", "layer", "cue"], sort=False)
        .agg(mean_tcav=("tcav", "mean"), significant=("significant", "sum"), classes=("class", "count"))
        .reset_index()
    )
    others = (
        table[~table["own"]]
        .groupby(["model", "layer", "cue"], sort=False)
        .agg(others_mean_tcav=("tcav", "mean"), others_significant=("significant", "mean"))
        .reset_index()
    )
    summary = own.merge(others, on=["model", "layer", "cue"])
    page.add(
        "<p class='meta'>Per model, layer and cue: the mean TCAV score of each class for its own concept "
        "and how many of them are significant, against the mean over the other classes' concepts (and the "
        "share of those significant). A model that uses a cue scores its own class's concept higher than "
        "the others'.</p>"
    )
    page.table(summary, "tcav_summary")
    page.figure(
        plots.tcav_heatmap(table, page.figs / "tcav_heatmap.png"),
        "TCAV score of every class (rows) for every concept (columns), per model and layer. Every cell: "
        "<a href='tables/tcav.csv'>tables/tcav.csv</a>.",
    )
    page.table(table, "tcav", show=False)  # a row per class and concept: the CSV, not the page


register(Section("tcav", "Concept tests (TCAV)", draw))
