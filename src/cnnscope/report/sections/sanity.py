"""The sanity checks' section: how each method's maps change as the model is randomised."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from cnnscope import plots
from cnnscope.artifacts import SanityArtifact
from cnnscope.attribution.suite import DISPLAY_NAMES
from cnnscope.report.sections import Entry, Section, register


def draw(page, entries: list[Entry]) -> None:
    table = pd.concat(
        [pd.read_csv(SanityArtifact(e.artifact).randomisation) for e in entries], ignore_index=True
    )
    table = table.assign(method=table["method"].map(lambda k: DISPLAY_NAMES.get(k, k)))
    page.add(
        "<p class='meta'>Cascading model-parameter randomisation (Adebayo et al. 2018): the model's "
        "parametrised blocks are re-initialised from the output down, one more at each step, and each "
        "method's map of the same image and class (the trained model's prediction) is compared with the "
        "trained model's: Spearman rank correlation and SSIM, averaged over the images. A map that "
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


register(Section("sanity", "Sanity checks", draw))
