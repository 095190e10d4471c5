"""The learned inversion's section: how well a decoder reconstructs images from each layer's features
(intact, binarised, dropped out), and how DGN-AM's images drive the units against pixel-space
activation maximisation and the best probe image."""

from __future__ import annotations

import json

import pandas as pd

from cnnscope import plots
from cnnscope.artifacts import DecoderArtifact
from cnnscope.report.sections import Entry, Section, register, stacked


def draw(page, entries: list[Entry]) -> None:
    errors = stacked(entries, lambda a: DecoderArtifact(a).errors, model=True)
    page.add(
        "<p class='meta'>Learned inversion (Dosovitskiy &amp; Brox 2016): per dissected layer, an "
        "up-convolutional decoder is trained to reconstruct the image from the layer's features (a world "
        "model's on the world in its regime, other models' on the probe set), the model frozen. Error: "
        "squared error on held-out images over their variance about their mean image (1: the mean image "
        "would do as well). The decoder trained on intact features also reconstructs from the features' "
        "sign pattern at one magnitude (binarised) and from half of them (dropout), both with the L2 norm "
        "kept: what survives shows what the layer's code keeps. The reconstructions are beside the "
        "optimisation-based ones in the layer sections; the unit cards show each unit's DGN-AM image "
        "(Nguyen et al. 2016: activation maximisation through the decoder, the code kept within the range "
        "the decoder learned from) after its pixel-space one.</p>"
    )
    page.figure(
        plots.decoder_errors(errors, page.figs / "decoder_errors.png"),
        "Held-out reconstruction error per layer, from intact, binarised and dropped-out features; dotted: "
        "the mean image.",
    )
    page.table(errors, "decoder_errors")
    raised = pd.DataFrame(
        [
            {"model": e.model, "layer": e.layer, "unit": int(unit), **row}
            for e in entries
            for unit, row in json.loads(DecoderArtifact(e.artifact).dgn.read_text()).items()
        ]
    )
    if raised.empty:
        return
    above = (raised["through_decoder"] > raised["best_probe"]).sum()
    page.add(
        f"<p class='meta'>The unit's mean activation on its DGN-AM image, its pixel-space "
        f"activation-maximisation image and its best probe image: DGN-AM's image drives {above} of "
        f"{len(raised)} units harder than any probe image.</p>"
    )
    page.table(raised, "decoder_dgn")


register(Section("decoder", "Learned inversion and DGN-AM", draw))
