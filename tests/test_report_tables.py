"""The report's tables as pure functions on hand-made inputs, and the unit mask it shares with the
tally."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cnnscope.dissection import unit_masks
from cnnscope.report import page, tables
from cnnscope.report.inputs import LayerResult


def _layer(
    model: str,
    layer: str,
    categories: list[str],
    detector: list[bool],
    net2vec: pd.DataFrame | None = None,
    net2vec_summary: dict | None = None,
    dead: int = 0,
) -> LayerResult:
    units = pd.DataFrame(
        {"unit": range(len(categories)), "label": [f"l{i}" for i in range(len(categories))],
         "category": categories, "iou": [0.1] * len(categories), "detector": detector}
    )  # fmt: skip
    detectors = pd.DataFrame(
        {"rule": ["top_label"], "category": ["object"], "detectors": [sum(detector)], "unique": [1]}
    )
    summary = {"detectors": sum(detector), "units": len(categories), "dead_units": dead}
    thresholds = np.zeros(len(categories))
    return LayerResult(
        model, layer, units, detectors, summary, 0.04, thresholds, Path(), None, net2vec, net2vec_summary
    )


LAYERS = [
    _layer("a", "conv2", ["color", "object"], [True, False], dead=1),
    _layer("a", "conv5", ["object", "part", "texture", "color"], [True, True, True, False]),
    _layer("b", "conv5", ["material", "scene"], [True, True]),
]


def test_by_depth_spaces_each_models_layers_from_0_to_1():
    t = tables.by_depth(["a", "b"], LAYERS)
    assert t["depth"].tolist() == [0.0, 1.0, 0.0]
    assert t[["detectors", "units", "dead_units"]].values.tolist() == [[1, 2, 1], [3, 4, 0], [2, 2, 0]]


def test_cross_counts_shares_of_detectors_at_the_last_layer():
    bias = pd.DataFrame({"decision-maker": ["a", "b", "humans"], "shape_bias": [0.7, 0.2, 0.95]})
    t = tables.cross(LAYERS, bias)
    a = t.set_index("model").loc["a"]
    assert a["layer"] == "conv5" and a["detectors"] == 3
    assert a["shape_like"] == pytest.approx(2 / 3) and a["texture_like"] == pytest.approx(1 / 3)
    b = t.set_index("model").loc["b"]  # material is texture-like, scene neither
    assert b["shape_like"] == 0 and b["texture_like"] == pytest.approx(1 / 2) and b["shape_bias"] == 0.2


def test_shape_bias_rows_models_first_with_training_metrics_then_references():
    summary = {"shape_bias": 0.75, "shape_hits": 3, "texture_hits": 1, "cue_fraction": 0.5,
               "edge_accuracy": 0.1, "silhouette_accuracy": 0.2}  # fmt: skip
    ref = pd.DataFrame(
        {"subj": ["humans"] * 3, "object_response": ["cat", "cat", "dog"], "category": ["cat"] * 3,
         "imagename": ["cat1-dog1.png", "cat2-dog2.png", "cat3-dog3.png"],
         "experiment": ["style-transfer-512-nomask"] * 3}
    )  # fmt: skip
    edges = ref.assign(imagename=["cat1.png"] * 3, experiment="edge")  # not cue conflict: left out
    t = tables.shape_bias({"a": summary}, {"a": {"val_accuracy": 0.9}}, [ref, edges])
    assert t["decision-maker"].tolist() == ["a", "humans"]
    assert t.loc[0, "clean_accuracy"] == 0.9 and np.isnan(t.loc[0, "random_texture_accuracy"])
    assert t.loc[1, "shape_bias"] == pytest.approx(2 / 3)  # 2 shape and 1 texture decision


def test_glance_has_one_row_per_model_and_marks_what_is_missing():
    bias = pd.DataFrame({"decision-maker": ["a"], "shape_bias": [0.7], "cue_fraction": [0.9]})
    cross = tables.cross(LAYERS, bias)
    t = tables.glance(["a", "b"], LAYERS, {"a": {"regime": "shape", "val_accuracy": 0.8}}, bias, cross)
    assert t["detectors_last_layer"].tolist() == ["3/4 (conv5)", "2/2 (conv5)"]
    assert t.loc[0, "regime"] == "shape" and t.loc[1, "regime"] == "–" and np.isnan(t.loc[1, "shape_bias"])


NAN = np.nan
# Net2Vec concepts of a/conv5 (4 units) and b/conv5 (2 units); "sky" is image-level only. The top-k
# columns are out of order on purpose: k is read from the name and sorted as a number.
N2V_A = pd.DataFrame(
    {"concept": ["c1", "c2", "c3", "sky"], "category": ["object", "object", "color", "scene"],
     "single_iou": [0.1, 0.2, 0.1, NAN], "net2vec_iou": [0.3, 0.3, 0.5, NAN],
     "iou_top2": [0.2, 0.25, 0.3, NAN], "iou_top1": [0.1, 0.2, 0.0, NAN], "iou_gain": [0.2, 0.1, 0.4, NAN],
     "units_for_80pct_mass": [2, 3, 2, NAN], "ap_single": [0.5, NAN, 0.7, 0.9]}
)  # fmt: skip
N2V_B = pd.DataFrame(
    {"concept": ["d1"], "category": ["color"], "single_iou": [0.4], "net2vec_iou": [0.4], "iou_top2": [0.4],
     "iou_top1": [0.4], "iou_gain": [0.0], "units_for_80pct_mass": [1], "ap_single": [NAN]}
)  # fmt: skip
SUMMARY_A = {"segmentation_concepts": 3, "classification_concepts": 3, "mean_single_iou": 0.4 / 3,
             "mean_net2vec_iou": 1.1 / 3, "mean_iou_gain": 0.7 / 3, "mean_ap_single": 0.7,
             "mean_ap_net2vec": 0.8}  # fmt: skip
SUMMARY_B = {"segmentation_concepts": 1, "classification_concepts": 0, "mean_single_iou": 0.4,
             "mean_net2vec_iou": 0.4, "mean_iou_gain": 0.0, "mean_ap_single": None,
             "mean_ap_net2vec": None}  # fmt: skip
N2V_LAYERS = [
    _layer("a", "conv2", ["color", "object"], [True, False], dead=1),
    _layer("a", "conv5", ["object", "part", "texture", "color"], [True] * 4, N2V_A, SUMMARY_A),
    _layer("b", "conv5", ["material", "scene"], [True, True], N2V_B, SUMMARY_B),
]


def test_net2vec_concepts_stacks_the_layers_that_have_them_model_and_layer_first():
    t = tables.net2vec_concepts(N2V_LAYERS)
    assert t.columns[:3].tolist() == ["model", "layer", "concept"]
    assert t[["model", "layer", "concept"]].values.tolist() == [
        ["a", "conv5", "c1"], ["a", "conv5", "c2"], ["a", "conv5", "c3"], ["a", "conv5", "sky"],
        ["b", "conv5", "d1"],
    ]  # fmt: skip
    assert tables.net2vec_concepts(LAYERS).empty


def test_net2vec_gain_averages_segmentation_concepts_per_category():
    t = tables.net2vec_gain(tables.net2vec_concepts(N2V_LAYERS))
    assert t[["model", "layer", "category", "concepts"]].values.tolist() == [
        ["a", "conv5", "object", 2],
        ["a", "conv5", "color", 1],
        ["b", "conv5", "color", 1],
    ]  # the image-level "sky" makes no scene row
    assert t["mean_single_iou"].tolist() == pytest.approx([0.15, 0.1, 0.4])
    assert t["mean_net2vec_iou"].tolist() == pytest.approx([0.3, 0.5, 0.4])
    assert t["mean_iou_gain"].tolist() == pytest.approx([0.15, 0.4, 0.0])


def test_net2vec_iou_by_k_goes_from_the_single_unit_through_top_k_to_all_units():
    t = tables.net2vec_iou_by_k(N2V_LAYERS)
    a = t[t["model"] == "a"]
    assert a["kind"].tolist() == ["single unit", "top-k", "top-k", "all units"]
    assert a["k"].tolist() == [1, 1, 2, 4]  # all units: the layer's 4 units
    assert a["mean_iou"].tolist() == pytest.approx([0.4 / 3, 0.3 / 3, 0.75 / 3, 1.1 / 3])
    b = t[t["model"] == "b"]
    assert b["k"].tolist() == [1, 1, 2, 2] and b["mean_iou"].tolist() == pytest.approx([0.4] * 4)


def test_net2vec_mass_counts_concepts_per_number_of_units():
    t = tables.net2vec_mass(tables.net2vec_concepts(N2V_LAYERS))
    assert t.values.tolist() == [
        ["a", "conv5", 80.0, 2, 2], ["a", "conv5", 80.0, 3, 1], ["b", "conv5", 80.0, 1, 1]
    ]  # fmt: skip
    assert tables.net2vec_mass(pd.DataFrame(columns=["model", "layer"])).empty


def test_net2vec_layers_copies_each_summary_and_marks_missing_values():
    t = tables.net2vec_layers(N2V_LAYERS)
    assert t[["model", "layer", "segmentation_concepts", "classification_concepts"]].values.tolist() == [
        ["a", "conv5", 3, 3], ["b", "conv5", 1, 0]
    ]  # fmt: skip
    assert t.loc[0, "mean_iou_gain"] == pytest.approx(0.7 / 3) and t.loc[0, "mean_ap_net2vec"] == 0.8
    assert np.isnan(t.loc[1, "mean_ap_single"]) and np.isnan(t.loc[1, "mean_ap_net2vec"])


def test_glance_averages_each_models_net2vec_gain_over_its_layers():
    layers = [
        _layer("a", "conv2", ["color"], [True], N2V_A, {**SUMMARY_A, "mean_iou_gain": 0.1}),
        _layer("a", "conv5", ["color"], [True], N2V_A, {**SUMMARY_A, "mean_iou_gain": 0.4}),
        _layer("b", "conv5", ["color"], [True]),
    ]
    bias = pd.DataFrame(columns=["decision-maker", "shape_bias", "cue_fraction"])
    t = tables.glance(["a", "b"], layers, {}, bias, pd.DataFrame())
    assert t.loc[0, "net2vec_mean_iou_gain"] == pytest.approx(0.25)  # (0.1 + 0.4) / 2, one per layer
    assert np.isnan(t.loc[1, "net2vec_mean_iou_gain"])


def test_the_unit_mask_is_the_bilinear_upsampling_compared_strictly():
    # Columns of a 2x2 map [0, 1] upsampled to width 4 with pixel centres aligned: 0, .25, .75, 1.
    maps = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    assert unit_masks(maps, torch.tensor([0.5]), (2, 4))[0].tolist() == [[False, False, True, True]] * 2
    assert unit_masks(maps, torch.tensor([0.75]), (2, 4))[0].tolist() == [[False, False, False, True]] * 2


def test_each_report_section_folds_under_its_heading():
    parts = [
        "<h1>t</h1>",
        "<nav></nav>",
        "<h2 id='a'>A</h2><p>x</p>",
        "<p>y</p>",
        "<h2 id='b'>B</h2>",
        "<p>z</p>",
    ]
    html = "".join(page.foldable(parts))
    assert html == (
        "<h1>t</h1><nav></nav><details open><summary><h2 id='a'>A</h2></summary><p>x</p><p>y</p></details>"
        "<details open><summary><h2 id='b'>B</h2></summary><p>z</p></details>"
    )
    assert page.foldable(["<p>no sections</p>"]) == ["<p>no sections</p>"]
