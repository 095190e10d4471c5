"""The mistakes' section: on misclassified images, how close each method's map of the predicted class
is to the true class's, against the top-1 and top-2 classes' maps on images the model gets right."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from cnnscope import plots
from cnnscope.artifacts import MistakesArtifact
from cnnscope.attribution.suite import DISPLAY_NAMES
from cnnscope.report.sections import Entry, Section, register, stacked


def draw(page, entries: list[Entry]) -> None:
    summary = stacked(entries, lambda a: MistakesArtifact(a).summary)
    summary = summary.assign(method=summary["method"].map(lambda k: DISPLAY_NAMES.get(k, k)))
    page.add(
        "<p class='meta'>The L-CAM paper's analysis of mistakes (Gkartzonika et al. 2022): on a "
        "misclassified image, the map of the predicted class is close to the map of the true class, "
        "because similar classes share regions. Each model's labelled images (a world model: a fresh "
        "sample of the world in its training regime; a real model: the study's labelled folder) are "
        "classified; on each misclassified image, each method's map of the predicted class is compared "
        "with its map of the true class, and on each correctly classified image the top-1 class's map "
        "with the top-2 class's (two classes the model finds close, on an image it gets right). "
        "Similarity: Spearman rank correlation of the two maps, as in the sanity checks; a pair with a "
        "constant map has none and is counted apart. <i>t</i> and <i>p</i>: Student's two-sample t-test "
        "of the mistakes' similarities against the correct images' (two-sided); with a few dozen "
        "mistakes, a difference can be chance.</p>"
    )
    page.figure(
        plots.mistakes(summary, page.figs / "mistakes.png"),
        "Mean similarity of the two maps: predicted vs true class on misclassified images, top-1 vs "
        "top-2 class on correctly classified ones, per model and method.",
    )
    page.table(summary, "mistakes")
    for e in entries:
        _gallery(page, e)


def _gallery(page, e: Entry) -> None:
    """The model's first misclassified images with each method's maps of the predicted and true class."""
    made = MistakesArtifact(e.artifact)
    gallery = dict(np.load(made.gallery))
    images, index = gallery.pop("images"), gallery.pop("index")
    if not len(index):
        page.add(f"<p class='meta'>{html.escape(e.model)} classified every image right.</p>")
        return
    pairs = pd.read_csv(made.pairs).drop_duplicates("image").set_index("image")
    rows = [f"{pairs.loc[i, 'label_name']} → {pairs.loc[i, 'predicted_name']}" for i in index]
    maps = {}
    for method, m in gallery.items():
        name = DISPLAY_NAMES.get(method, method)
        maps[f"{name}: predicted"], maps[f"{name}: true"] = m[:, 0], m[:, 1]
    name = f"mistakes_{e.model}.png".replace("/", "_")
    page.figure(
        plots.attribution_gallery(images, maps, e.model, page.figs / name, rows=rows),
        f"{e.model}: misclassified images (true → predicted class), each method's map of the predicted "
        "and of the true class.",
    )


register(Section("mistakes", "Mistakes: the predicted class's map against the true class's", draw))
