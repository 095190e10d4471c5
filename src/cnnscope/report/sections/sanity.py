"""The sanity checks' section: how each method's maps change as the model is randomised, and how they
compare with those of the same architecture trained on permuted labels."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from cnnscope import plots
from cnnscope.artifacts import SanityArtifact
from cnnscope.attribution.suite import DISPLAY_NAMES
from cnnscope.report.sections import Entry, Section, register, stacked


def draw(page, entries: list[Entry]) -> None:
    table = stacked(entries, lambda a: SanityArtifact(a).randomisation)
    table = table.assign(method=table["method"].map(lambda k: DISPLAY_NAMES.get(k, k)))
    page.add(
        "<p class='meta'>Three checks of the maps against what the worlds know: whether they point at "
        "the object (<a href='#localisation'>Localisation</a>, in the Attribution section), whether they "
        "change when the model does (this section), and which concepts the decisions are sensitive to "
        "(<a href='#tcav'>Concept tests</a>, next).</p>"
    )
    page.add(
        "<p class='meta'>Cascading model-parameter randomisation (Adebayo et al. 2018): the model's "
        "parametrised blocks are re-initialised from the output down, one more at each step, and each "
        "method's map of the same image and class (the trained model's prediction) is compared with the "
        "trained model's: Spearman rank correlation, SSIM and the correlation of the maps' histograms of "
        "oriented gradients (HOG), averaged over the images. A map that "
        "explains the model should decorrelate as the weights it depends on are destroyed; one that stays "
        "similar shows the image more than the model.</p>"
    )
    page.figure(
        plots.randomisation(table, page.figs / "sanity_randomisation.png"),
        "Similarity to the trained model's map against the blocks randomised so far (left to right: "
        "from the output down), one line per method.",
    )
    for e in entries:
        maps = dict(np.load(SanityArtifact(e.artifact).maps))
        name = f"sanity_maps_{e.model}.png".replace("/", "_")
        page.figure(
            plots.randomisation_maps(maps, DISPLAY_NAMES, page.figs / name),
            f"{html.escape(e.model)}: the first image's map per method (rows) as blocks are randomised "
            "(columns; step 0: the trained model).",
        )
    page.table(table, "sanity_randomisation")
    _data_randomisation(page, entries)


def _data_randomisation(page, entries: list[Entry]) -> None:
    """The permuted-label comparison, for the models the study gave a permuted-label twin."""
    found = [SanityArtifact(e.artifact).labels for e in entries]
    tables = [pd.read_csv(f) for f in found if f.exists()]
    if not tables:
        page.add(
            "<p class='meta'>Data randomisation: no model of the study was trained on permuted labels "
            "(<code>models[].labels: permuted</code>), so it was not checked.</p>"
        )
        return
    table = pd.concat(tables, ignore_index=True)
    table = table.assign(method=table["method"].map(lambda k: DISPLAY_NAMES.get(k, k)))
    fit = table.drop_duplicates("model")
    page.add(
        "<h3>Data randomisation</h3><p class='meta'>The same architecture trained on the same images with "
        "their labels randomly permuted can only memorise (training accuracy "
        + ", ".join(f"{v:.2f}" for v in fit["twin_train_accuracy"].unique())
        + ", validation accuracy "
        + ", ".join(f"{v:.2f}" for v in fit["twin_val_accuracy"].unique())
        + "). Each method's maps of that model, for the same images and classes, against the trained "
        "model's: a method whose maps stay similar does not depend on what the model learned.</p>"
    )
    page.figure(
        plots.data_randomisation(table, page.figs / "sanity_data_randomisation.png"),
        "Similarity of the permuted-label model's maps to the trained model's, per method and model.",
    )
    page.table(table, "sanity_data_randomisation")


register(Section("sanity", "Do the explanations explain? Sanity checks", draw))
