"""The TCAV section: which concepts each class's decision is sensitive to (the world's and the probe
set's), and how the probe concepts' CAVs agree with Net2Vec's embeddings."""

from __future__ import annotations

import pandas as pd

from cnnscope import plots
from cnnscope.artifacts import TcavArtifact
from cnnscope.report.sections import Entry, Section, register

KEYS = ["model", "layer", "family", "cue"]


def _summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, layer, family and cue with a ground truth: each class's own concept against the
    other classes' concepts of the cue."""
    cues = table[table["own"]][KEYS].drop_duplicates()
    table = table.merge(cues, on=KEYS)
    own = (
        table[table["own"]]
        .groupby(KEYS, sort=False)
        .agg(mean_tcav=("tcav", "mean"), significant=("significant", "sum"), classes=("class", "count"))
        .reset_index()
    )
    others = (
        table[~table["own"]]
        .groupby(KEYS, sort=False)
        .agg(others_mean_tcav=("tcav", "mean"), others_significant=("significant", "mean"))
        .reset_index()
    )
    return own.merge(others, on=KEYS)


def _agreement(agreement: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per model and layer: how Net2Vec's embeddings and the CAVs agree (mean cosine against the random
    CAVs' mean absolute cosine, rank correlation of the two TCAV scores over the cells, share of cells
    on the same side of 0.5)."""
    cells = table[table["net2vec_tcav"].notna()]
    by = ["model", "layer"]
    cell_stats = pd.DataFrame(
        [
            {
                "model": model,
                "layer": layer,
                "spearman_cells": g["tcav"].rank().corr(g["net2vec_tcav"].rank()),
                "same_side_cells": ((g["tcav"] > 0.5) == (g["net2vec_tcav"] > 0.5)).mean(),
            }
            for (model, layer), g in cells.groupby(by, sort=False)
        ]
    )
    per = (
        agreement.groupby(by, sort=False)
        .agg(
            concepts=("concept", "count"),
            mean_cosine=("cosine", "mean"),
            mean_random_abs_cosine=("random_abs_cosine", "mean"),
        )
        .reset_index()
    )
    return per.merge(cell_stats, on=by)


def draw(page, entries: list[Entry]) -> None:
    made = [TcavArtifact(e.artifact) for e in entries]
    table = pd.concat([pd.read_csv(a.scores) for a in made], ignore_index=True)
    compared = [pd.read_csv(a.net2vec) for a in made if a.net2vec.is_file()]
    page.add(
        "<p class='meta'>Testing with concept activation vectors (Kim et al. 2018). A concept is a set of "
        "images; two families are tested, each against random images of its own kind: the world's "
        "(every class's texture over the whole image, and its shape as a filled silhouette) and the probe "
        "set's Broden concepts (the probe images that carry the label). A concept's CAV is the normal of "
        "a linear classifier separating the layer's activations of its images from those of random "
        "images; a class's TCAV score is the share of its images whose logit grows along the CAV. Each "
        "concept is learned against several random sets and tested, two-sided, against CAVs of random "
        "sets (Bonferroni-corrected over the family's table); random sets tested as concepts "
        "(<code>random:&lt;i&gt;</code>) show the test's false-positive rate. The world knows the answer: "
        "a model trained in the standard regime may use its class's texture, one trained in the shape "
        "regime only its shape (the world's silhouettes, and the probe world's objects, which are the "
        "same 16 shapes in random colours and materials).</p>"
    )
    page.add(
        "<p class='meta'>Per model, layer, family and cue with a ground truth: the mean TCAV score of each "
        "class for its own concept and how many of them are significant, against the mean over the other "
        "classes' concepts (and the share of those significant). A model that uses a cue scores its own "
        "class's concept higher than the others'.</p>"
    )
    page.table(_summary(table), "tcav_summary")
    page.figure(
        plots.tcav_heatmap(table, page.figs / "tcav_heatmap.png"),
        "TCAV score of every class (rows) for every concept (columns), per model, layer and family. "
        "Every cell: <a href='tables/tcav.csv'>tables/tcav.csv</a>.",
    )
    page.table(table, "tcav", show=False)  # a row per class and concept: the CSV, not the page
    if compared:
        agreement = pd.concat(compared, ignore_index=True)
        page.add(
            "<p class='meta'>Net2Vec's classification embedding of a probe concept (logistic regression on "
            "the layer's spatially averaged activations, Fong &amp; Vedaldi 2018) is a concept vector too. "
            "Per model and layer: the mean cosine between each concept's CAVs, summed over positions, and "
            "its embedding in the averaged activations, beside the mean absolute cosine of the random "
            "CAVs with it (chance); the rank correlation over classes and concepts of the TCAV score "
            "along the CAVs and along the embedding; and the share of those cells where both lie on the "
            "same side of 0.5.</p>"
        )
        page.table(_agreement(agreement, table), "tcav_net2vec_summary")
        page.figure(
            plots.tcav_net2vec_scatter(table, page.figs / "tcav_net2vec.png"),
            "Per class and probe concept: the TCAV score along the concept's CAVs (x) and along its "
            "Net2Vec embedding (y). Per concept: "
            "<a href='tables/tcav_net2vec.csv'>tables/tcav_net2vec.csv</a>.",
        )
        page.table(agreement, "tcav_net2vec", show=False)


register(Section("tcav", "Do the explanations explain? Concept tests (TCAV)", draw))
