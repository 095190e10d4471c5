"""Cue-conflict analysis pinned to the published numbers, on the real stimuli and raw data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED
from torch import nn

from cnnscope.errors import DatasetError, ModelError
from cnnscope.models.registry import LoadedModel
from cnnscope.shapebias import analysis, stimuli
from cnnscope.shapebias.classes import CLASSES, IMAGENET_INDICES, aggregate, decide
from cnnscope.shapebias.decisions import model_decisions

TVS = SHARED / "data" / "texture-vs-shape"
RAW = TVS / "raw-data"


def test_index_lists_are_the_published_facts():
    published = json.loads((SHARED / "reference" / "imagenet_16class_indices.json").read_text())
    assert {k: list(v) for k, v in IMAGENET_INDICES.items()} == published
    assert tuple(published) == CLASSES
    flat = [i for v in IMAGENET_INDICES.values() for i in v]
    assert len(flat) == len(set(flat)) == 207


def test_humans_pooled_match_the_paper():
    res = analysis.shape_bias(analysis.read_decisions(RAW / "style-transfer-512-nomask-experiment"), by=None)
    row = res.iloc[0]
    assert (row["shape_hits"], row["texture_hits"]) == (9236, 398)
    assert row["shape_bias"] == pytest.approx(0.9587, abs=5e-5)


def test_published_cnns_match_the_paper():
    df = analysis.read_decisions(RAW / "style-transfer-512-nomask-experiment-trained-CNNs")
    res = analysis.shape_bias(df)
    assert res.loc["resnet50", ["shape_hits", "texture_hits"]].tolist() == [162, 572]
    assert res.loc["resnet50", "shape_bias"] == pytest.approx(0.2207, abs=5e-5)
    sin = [s for s in res.index if s != "resnet50"][0]
    assert res.loc[sin, ["shape_hits", "texture_hits"]].tolist() == [586, 141]
    assert res.loc[sin, "shape_bias"] == pytest.approx(0.8061, abs=5e-5)
    per_class = analysis.shape_bias_per_class(df)
    assert len(per_class) == 32 and per_class["trials"].sum() == 2400


def test_texture_class_is_parsed_from_the_image_name():
    assert analysis.texture_class("0001_s5n_s01_0_bird_00_bird3-clock2.png") == "clock"
    with pytest.raises(DatasetError, match="not a cue-conflict"):
        analysis.texture_class("0002_edg_s01_0_oven_00_oven10.png")


def test_edge_and_silhouette_accuracy_per_observer():
    for folder in ("edge-experiment", "silhouette-filled-experiment"):
        acc = analysis.accuracy(analysis.read_decisions(RAW / folder))
        assert len(acc) == 10 and ((acc > 0.5) & (acc <= 1)).all()


def test_real_stimuli_load_with_their_labels():
    conflict = stimuli.cue_conflict(TVS / "stimuli" / "style-transfer-preprocessed-512")
    assert len(conflict) == 1280
    counts = pd.Series([s.shape for s in conflict]).value_counts()
    assert set(counts.index) == set(CLASSES) and (counts == 80).all()
    same = [s for s in conflict if not s.conflict]
    assert len(same) == 80 and pd.Series([s.shape for s in same]).value_counts().eq(5).all()
    s = next(s for s in conflict if s.path.name == "cat1-airplane1.png")
    assert (s.shape, s.texture) == ("cat", "airplane")
    assert len(stimuli.single_cue(TVS / "stimuli" / "edges")) == 160
    assert len(stimuli.single_cue(TVS / "stimuli" / "filled-silhouettes")) == 160


def test_bad_stimulus_folders_name_the_problem(tmp_path):
    root = tmp_path / "cc"
    shutil.copytree(TVS / "stimuli" / "style-transfer-preprocessed-512" / "cat", root / "cat")
    with pytest.raises(DatasetError, match="lacks class folder.*airplane"):
        stimuli.cue_conflict(root)
    for c in CLASSES:
        (root / c).mkdir(exist_ok=True)
    (root / "cat" / "kitty.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="kitty.png does not follow"):
        stimuli.cue_conflict(root)


def test_reference_csv_missing_columns_is_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("subj,trial,object_response\nx,1,cat\n")
    with pytest.raises(DatasetError, match=r"bad\.csv lacks column\(s\) session, rt, category"):
        analysis.read_decisions(bad)


def test_aggregation_takes_the_mean_not_the_sum():
    probs = torch.zeros(1, 1000)
    probs[0, 404] = 0.1  # airplane has one index
    dog = list(IMAGENET_INDICES["dog"])
    probs[0, dog] = 0.8 / len(dog)  # dog: more mass in total, far less on average
    agg = aggregate(probs)
    assert agg[0, CLASSES.index("airplane")] == pytest.approx(0.1)
    assert agg[0, CLASSES.index("dog")] == pytest.approx(0.8 / len(dog))
    logits = torch.log(probs.clamp(min=1e-12))
    assert decide(logits) == ["airplane"]
    assert decide(torch.eye(16)[[3]]) == ["bird"]  # a 16-way head is used directly


def test_an_imagenet_model_runs_the_whole_decision_path_on_all_stimuli():
    conflict = stimuli.cue_conflict(TVS / "stimuli" / "style-transfer-preprocessed-512")
    images = stimuli.load_rgb(conflict)
    assert images.shape == (1280, 224, 224, 3)
    torch.manual_seed(0)
    # An untrained model with ImageNet's 1,000-way head (no weights can be downloaded here; the path
    # from its logits to the 16 classes is what is under test, not the architecture: a small one).
    net = nn.Sequential(nn.Conv2d(3, 8, 7, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.append(nn.Linear(8, 1000)).eval()
    loaded = LoadedModel(net, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    df = model_decisions(loaded, conflict, images, "imagenet-head-untrained", batch_size=64, progress=False)
    assert list(df.columns) == list(analysis.COLUMNS) and len(df) == 1280
    assert set(df["object_response"]) <= set(CLASSES)
    res = analysis.shape_bias(df).iloc[0]
    assert res["trials"] == 1200 and 0 <= res["shape_bias"] <= 1
    # the decisions round-trip through the published CSV format
    assert analysis.with_cues(df)["texture"].tolist() == [s.texture for s in conflict if s.conflict]


def test_a_head_that_fits_no_mapping_is_refused():
    loaded = LoadedModel(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(12)), (0, 0, 0), (1, 1, 1)
    )
    stim = [stimuli.Stimulus(TVS / "x.png", "cat", "dog")]
    with pytest.raises(ModelError, match="it has 12 outputs"):
        model_decisions(loaded, stim, np.zeros((1, 8, 8, 3), np.uint8), "m", progress=False)


def test_a_head_with_named_classes_decides_by_name_in_any_order():
    """A classes file maps a head's outputs by name: another order, or extra classes, decide alike."""
    from cnnscope.shapebias.classes import CLASSES, decide, head_problem

    logits = torch.randn(5, 16)
    expected = decide(logits, CLASSES)
    order = torch.randperm(16)
    names = [CLASSES[i] for i in order.tolist()]
    assert decide(logits[:, order], CLASSES, names) == expected
    extra = torch.cat([logits, torch.full((5, 2), 99.0)], 1)  # two unrelated classes score highest
    assert decide(extra, CLASSES, [*CLASSES, "x", "y"]) == expected
    assert "names 3 classes but it has 16 outputs" in head_problem(16, CLASSES, ["a", "b", "c"])
