"""The report's tables as pure functions on hand-made inputs, and the unit mask it shares with the
tally."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cnnscope.dissection import unit_masks
from cnnscope.report import tables
from cnnscope.report.inputs import LayerResult


def _layer(model: str, layer: str, categories: list[str], detector: list[bool]) -> LayerResult:
    units = pd.DataFrame(
        {"unit": range(len(categories)), "label": [f"l{i}" for i in range(len(categories))],
         "category": categories, "iou": [0.1] * len(categories), "detector": detector}
    )  # fmt: skip
    detectors = pd.DataFrame(
        {"rule": ["top_label"], "category": ["object"], "detectors": [sum(detector)], "unique": [1]}
    )
    summary = {"detectors": sum(detector), "units": len(categories)}
    return LayerResult(model, layer, units, detectors, summary, 0.04, np.zeros(len(categories)), Path(), None)


LAYERS = [
    _layer("a", "conv2", ["color", "object"], [True, False]),
    _layer("a", "conv5", ["object", "part", "texture", "color"], [True, True, True, False]),
    _layer("b", "conv5", ["material", "scene"], [True, True]),
]


def test_by_depth_spaces_each_models_layers_from_0_to_1():
    t = tables.by_depth(["a", "b"], LAYERS)
    assert t["depth"].tolist() == [0.0, 1.0, 0.0]
    assert t[["detectors", "units"]].values.tolist() == [[1, 2], [3, 4], [2, 2]]


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
         "imagename": ["cat1-dog1.png", "cat2-dog2.png", "cat3-dog3.png"]}
    )  # fmt: skip
    t = tables.shape_bias({"a": summary}, {"a": {"val_accuracy": 0.9}}, [ref])
    assert t["decision-maker"].tolist() == ["a", "humans"]
    assert t.loc[0, "clean_accuracy"] == 0.9 and np.isnan(t.loc[0, "random_texture_accuracy"])
    assert t.loc[1, "shape_bias"] == pytest.approx(2 / 3)  # 2 shape and 1 texture decision


def test_glance_has_one_row_per_model_and_marks_what_is_missing():
    bias = pd.DataFrame({"decision-maker": ["a"], "shape_bias": [0.7], "cue_fraction": [0.9]})
    cross = tables.cross(LAYERS, bias)
    t = tables.glance(["a", "b"], LAYERS, {"a": {"regime": "shape", "val_accuracy": 0.8}}, bias, cross)
    assert t["detectors_last_layer"].tolist() == ["3/4 (conv5)", "2/2 (conv5)"]
    assert t.loc[0, "regime"] == "shape" and t.loc[1, "regime"] == "–" and np.isnan(t.loc[1, "shape_bias"])


def test_the_unit_mask_is_the_bilinear_upsampling_compared_strictly():
    # Columns of a 2x2 map [0, 1] upsampled to width 4 with pixel centres aligned: 0, .25, .75, 1.
    maps = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    assert unit_masks(maps, torch.tensor([0.5]), (2, 4))[0].tolist() == [[False, False, True, True]] * 2
    assert unit_masks(maps, torch.tensor([0.75]), (2, 4))[0].tolist() == [[False, False, False, True]] * 2
