"""The compositional explanations' section: how much a unit's IoU grows when it may be a formula of
concepts, and how often beam search misses the best pair."""

from __future__ import annotations

import pandas as pd

from cnnscope import plots
from cnnscope.artifacts import FormulasArtifact
from cnnscope.io import read_json
from cnnscope.report.sections import Entry, Section, register

SHOWN = 8  # units listed per layer, those whose formula gains most over their single concept


def draw(page, entries: list[Entry]) -> None:
    made = [(e, FormulasArtifact(e.artifact)) for e in entries]
    table = pd.concat(
        [pd.read_csv(a.formulas).assign(model=e.model, layer=e.layer) for e, a in made], ignore_index=True
    )
    summary = pd.DataFrame(
        [
            {
                "model": e.model,
                "layer": e.layer,
                "units": s["units"],
                "concepts": s["concepts"],
                "iou_mode": s["iou_mode"],
                **{f"mean_iou_length_{k}": v for k, v in s["mean_iou"].items()},
                "compound_share": s["compound_share"],
                "beam_missed_share": s["beam_missed_share"],
                "mean_pairs_scored": s["mean_pairs_scored"],
            }
            for e, s in ((e, read_json(a.summary)) for e, a in made)
        ]
    )
    page.add(
        "<p class='meta'>Compositional explanations (Mu &amp; Andreas 2020): each unit's mask (as "
        "dissection defines it) against formulas of the probe set's concepts joined left to right by AND, "
        "OR and AND NOT, scored by dissection's IoU in the layer's IoU mode (a single concept's IoU is "
        "dissection's, checked). Beam search as the reference code (beam 5); the optimal pair by an "
        "exhaustive search pruned by upper bounds, to count how often the beam's pair is not the best "
        "(arXiv 2511.20934 found published beam-search explanations often suboptimal). <i>compound "
        "share</i>: units whose best formula has more than one concept.</p>"
    )
    page.table(summary, "formulas_summary")
    page.figure(
        plots.formula_iou_by_length(table, page.figs / "formulas_iou.png"),
        "Mean IoU of each unit's best formula against its length, per model and layer.",
    )
    keys = ["model", "layer", "unit"]
    last = int(table["length"].max())
    single = table[table["length"] == 1].set_index(keys)[["formula", "iou"]]
    longest = table[table["length"] == last].set_index(keys)[["formula", "iou"]]
    shown = single.join(longest, lsuffix="_single", rsuffix=f"_length_{last}").reset_index()
    shown["gain"] = shown[f"iou_length_{last}"] - shown["iou_single"]
    shown = shown.sort_values(["model", "layer", "gain"], ascending=[True, True, False], kind="stable")
    shown = shown.groupby(["model", "layer"], sort=False).head(SHOWN)
    page.add(
        f"<p class='meta'>Per layer, the {SHOWN} units whose best formula of {last} concepts gains most "
        "over their single concept.</p>"
    )
    page.table(shown, "formulas_top_units")
    page.table(table, "formulas", show=False)


register(Section("formulas", "Compositional explanations", draw))
