"""Dissection IoU, computed by hand on a 3-image toy set in both modes, and end to end on a
hand-built detector whose unit fires exactly where a concept is."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from cnnscope.data.broden import BrodenDataset
from cnnscope.data.packed import PackedDataset, pack
from cnnscope.dissection import DEAD_BELOW, dead_units, summarize, tally, unique_detectors, unit_thresholds
from cnnscope.features import extract_layer
from cnnscope.models.registry import LoadedModel

LABELS = [
    {"number": 1, "name": "red", "primary": "color", "categories": ["color"]},
    {"number": 2, "name": "ball", "primary": "object", "categories": ["object"]},
    {"number": 3, "name": "beach", "primary": "scene", "categories": ["scene"]},
]


def _toy() -> tuple[PackedDataset, np.ndarray]:
    """Three 2x2 images (pixels p0 p1 / p2 p3), one unit, activations already at mask size.

    A: color [red red - -], object [- ball ball -], unit on {p0, p2}
    B: color [- - - red],   object [ball - - -], scene beach, unit on {p0, p1}
    C: no labels,                                  unit on everywhere
    """
    masks = np.zeros((3, 2, 2, 2), np.uint16)  # (N, K=color|object, 2, 2)
    masks[0, 0] = [[1, 1], [0, 0]]
    masks[0, 1] = [[0, 2], [2, 0]]
    masks[1, 0] = [[0, 0], [0, 1]]
    masks[1, 1] = [[2, 0], [0, 0]]
    scalars = np.array([[0], [3], [0]], np.int32)
    acts = np.zeros((3, 1, 2, 2), np.float32)
    acts[0, 0] = [[1, 0], [1, 0]]
    acts[1, 0] = [[1, 1], [0, 0]]
    acts[2, 0] = 1
    meta = {
        "n_images": 3,
        "mask_size": [2, 2],
        "image_size": [4, 4],
        "categories": ["color", "object", "scene"],
        "labels": LABELS,
    }
    return PackedDataset(Path("."), meta, np.zeros((3, 4, 4, 3), np.uint8), masks, scalars), acts


def test_toy_iou_by_hand_in_both_modes():
    data, acts = _toy()
    t = tally(acts, np.array([0.5]), data, progress=False)
    # I: red {p0} in A = 1; ball {p2} in A + {p0} in B = 2; beach = |mask of B| = 2
    np.testing.assert_array_equal(t.both[1:, 0], [1, 2, 2])
    # G: red 2 + 1 = 3; ball 2 + 1 = 3; beach covers all of B = 4
    np.testing.assert_array_equal(t.labels[1:], [3, 3, 4])
    # paper: A_color = A + B (both have a colour label) = 4; A_object = 4; A_scene = B = 2
    np.testing.assert_array_equal(t.units_cat_paper[0], [4, 4, 2])
    # lite: B's mask {p0, p1} misses its only colour pixel p3, so A_color = 2
    np.testing.assert_array_equal(t.units_cat_lite[0], [2, 4, 2])
    paper, lite = t.iou("paper")[1:, 0], t.iou("lite")[1:, 0]
    np.testing.assert_allclose(paper, [1 / (4 + 3 - 1), 2 / (4 + 3 - 2), 2 / (2 + 4 - 2)])
    np.testing.assert_allclose(lite, [1 / (2 + 3 - 1), 2 / (4 + 3 - 2), 2 / (2 + 4 - 2)])
    assert np.all(lite >= paper)


def test_tally_is_independent_of_batch_size():
    data, acts = _toy()
    one = tally(acts, np.array([0.5]), data, batch_size=1, progress=False)
    all_ = tally(acts, np.array([0.5]), data, batch_size=3, progress=False)
    for a, b in [
        (one.both, all_.both),
        (one.units_cat_lite, all_.units_cat_lite),
        (one.units_cat_paper, all_.units_cat_paper),
        (one.labels, all_.labels),
    ]:
        np.testing.assert_array_equal(a, b)


def test_summary_and_both_counting_rules():
    names = ["-", "red", "ball", "box"]
    cat = np.array([-1, 0, 1, 1])
    iou = np.array([[0, 0, 0], [0.10, 0.0, 0.0], [0.05, 0.20, 0.0], [0.0, 0.0, 0.03]])
    units = summarize(iou, names, cat, ["color", "object"], detector_iou=0.04)
    assert units["label"].tolist() == ["red", "ball", "box"]
    assert units["detector"].tolist() == [True, True, False]
    assert units["object_label"].tolist() == ["ball", "ball", "box"]
    det = unique_detectors(units, ["color", "object"], 0.04).set_index(["rule", "category"])
    assert det.loc[("top_label", "color"), "unique"] == 1
    assert det.loc[("top_label", "object"), ["detectors", "unique"]].tolist() == [1, 1]
    assert det.loc[("per_category", "object"), ["detectors", "unique"]].tolist() == [2, 1]


def _write_broden(root: Path, n: int = 4, size: int = 16) -> None:
    """A tiny Broden-format set: red squares (label 1) on grey (2) inside a larger box (3)."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        img = np.full((size, size, 3), 128, np.uint8)
        r, c = 2 * rng.integers(1, 4, size=2)
        img[r : r + 6, c : c + 6] = (200, 30, 30)
        color = np.full((size, size), 2, np.uint16)
        color[r : r + 6, c : c + 6] = 1
        obj = np.zeros((size, size), np.uint16)
        obj[max(r - 2, 0) : r + 8, max(c - 2, 0) : c + 8] = 3
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        for name, m in (("color", color), ("object", obj)):
            m = m[::2, ::2]
            rgb = np.stack([m % 256, m // 256, 0 * m], -1).astype(np.uint8)
            Image.fromarray(rgb).save(root / "images" / f"{i}_{name}.png")
        rows.append(
            [f"{i}.png", "train", size, size, size // 2, size // 2, f"{i}_color.png", f"{i}_object.png"]
        )
    tables = {
        "index.csv": [["image", "split", "ih", "iw", "sh", "sw", "color", "object"], *rows],
        "category.csv": [
            ["name", "first", "last", "count", "frequency"],
            ["color", 1, 2, 2, n],
            ["object", 1, 1, 1, n],
        ],
        "label.csv": [
            ["number", "name", "category", "frequency", "coverage", "syns"],
            [1, "red", f"color({n})", n, 1, ""],
            [2, "grey", f"color({n})", n, 1, ""],
            [3, "box", f"object({n})", n, 1, ""],
        ],
        "c_color.csv": [
            ["code", "number", "name", "frequency", "coverage"],
            [1, 1, "red", n, 1],
            [2, 2, "grey", n, 1],
        ],
        "c_object.csv": [["code", "number", "name", "frequency", "coverage"], [1, 3, "box", n, 1]],
    }
    for name, table in tables.items():
        with open(root / name, "w", newline="") as f:
            csv.writer(f).writerows(table)


@pytest.mark.parametrize("mode", ["paper", "lite"])
def test_hand_built_red_detector_gets_iou_one(tmp_path, mode):
    _write_broden(tmp_path / "set")
    pack(BrodenDataset(tmp_path / "set"), tmp_path / "packed", progress=False)
    data = PackedDataset.open(tmp_path / "packed")
    # A 1x1 conv computing R - G - B, then ReLU: positive exactly on the red pixels.
    conv = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
        conv.bias.zero_()
    model = nn.Sequential(conv, nn.ReLU())
    loaded = LoadedModel(model.eval(), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    extract_layer(loaded, "1", data.images, tmp_path, progress=False)
    acts = np.load(tmp_path / "activations.npy")
    thr, _, _ = unit_thresholds(acts, 0.3, progress=False)  # red covers 14% < 30%: threshold 0
    assert thr[0] == 0.0
    iou = tally(acts, thr, data, progress=False).iou(mode)
    units = summarize(iou, data.label_names(), data.label_category(), data.categories)
    row = units.iloc[0]
    assert (row["label"], row["category"]) == ("red", "color")
    assert row["iou"] == pytest.approx(1.0)
    assert 0.2 < row["object_iou"] < 0.8  # the box contains the square but is larger
    assert isinstance(units, pd.DataFrame)


def test_a_unit_no_probe_image_lifts_is_dead(tmp_path):
    """Two units behind a ReLU: red minus green minus blue (positive on red pixels), and one whose bias
    keeps it below zero on every image (dead). The extract step's unit range says which is which."""
    _write_broden(tmp_path / "set")
    pack(BrodenDataset(tmp_path / "set"), tmp_path / "packed", progress=False)
    data = PackedDataset.open(tmp_path / "packed")
    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([[1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]).view(2, 3, 1, 1)
        conv.bias[:] = torch.tensor([0.0, -10.0])  # pixels lie in [0, 1]: the second never reaches 0
    loaded = LoadedModel(nn.Sequential(conv, nn.ReLU()).eval(), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    extract_layer(loaded, "1", data.images, tmp_path, progress=False)
    assert dead_units(np.load(tmp_path / "unit_range.npy")).tolist() == [False, True]
    edge = np.array([[-1.0, -1.0, -1.0], [0.0, DEAD_BELOW, 2 * DEAD_BELOW]])
    assert dead_units(edge).tolist() == [True, True, False]


def _reference_tally(acts, thr, masks, scalars, label_cat, ncat, n_labels):
    """The definitions of the module docstring, written as plain loops (dense, slow, obvious)."""
    n, c = acts.shape[:2]
    sh, sw = masks.shape[2:]
    up = torch.nn.functional.interpolate(
        torch.from_numpy(acts), size=(sh, sw), mode="bilinear", align_corners=False
    ).numpy()
    on = up.reshape(n, c, -1) > thr[None, :, None]
    flat = masks.reshape(n, masks.shape[1], -1)
    both, g = np.zeros((n_labels, c)), np.zeros(n_labels)
    paper, lite = np.zeros((c, ncat)), np.zeros((c, ncat))
    for x in range(n):
        scal = [s for s in scalars[x] if s]
        for lab in flat[x][flat[x] > 0]:
            g[lab] += 1
        for k in range(flat.shape[1]):
            for p in range(sh * sw):
                if flat[x, k, p]:
                    both[flat[x, k, p]] += on[x, :, p]
        for s in scal:
            g[s] += sh * sw
            both[s] += on[x].sum(1)
        present = {label_cat[lab] for lab in flat[x][flat[x] > 0]} | {label_cat[s] for s in scal}
        for u in range(c):
            area = on[x, u].sum()
            touched = {label_cat[lab] for lab in flat[x][:, on[x, u]].ravel() if lab}
            touched |= {label_cat[s] for s in scal}
            for cat in present:
                paper[u, cat] += area
            for cat in touched:
                lite[u, cat] += area
    return both, g, paper, lite


@pytest.mark.parametrize(
    ("seed", "batch_size", "max_elements"),
    [(0, 4, 1 << 24), (1, 4, 1 << 24), (2, 4, 1 << 24), (0, 0, 150), (1, 0, 64), (2, 1, 200)],
)
def test_tally_matches_a_loop_reference_on_random_data(seed, batch_size, max_elements):
    """Also in small batches sized from ``max_elements``, with maps upsampled one or two at a time."""
    rng = np.random.default_rng(seed)
    n, c, k = 6, 5, 2
    acts = rng.gamma(1.0, 1.0, (n, c, 4, 4)).astype(np.float32) * (rng.random((n, c, 1, 1)) < 0.8)
    masks = (rng.integers(1, 10, (n, k, 8, 8)) * (rng.random((n, k, 8, 8)) < 0.05)).astype(np.uint16)
    masks[0] = 0  # an image without pixel labels
    scalars = (rng.integers(10, 13, (n, 1)) * (rng.random((n, 1)) < 0.5)).astype(np.int32)
    cats = ["color", "object", "scene"]
    labels = [
        {"number": i, "name": f"l{i}", "primary": cats[i % 2] if i < 10 else "scene", "categories": []}
        for i in range(1, 13)
    ]
    meta = {"n_images": n, "mask_size": [8, 8], "image_size": [16, 16], "categories": cats, "labels": labels}
    data = PackedDataset(Path("."), meta, np.zeros((n, 16, 16, 3), np.uint8), masks, scalars)
    thr = np.quantile(acts.transpose(1, 0, 2, 3).reshape(c, -1), 0.8, axis=1).astype(np.float32)
    got = tally(acts, thr, data, batch_size=batch_size, max_elements=max_elements, progress=False)
    both, g, paper, lite = _reference_tally(
        acts, thr, masks, scalars, data.label_category(), 3, data.n_label_slots
    )
    np.testing.assert_array_equal(got.both, both)
    np.testing.assert_array_equal(got.labels, g)
    np.testing.assert_array_equal(got.units_cat_paper, paper)
    np.testing.assert_array_equal(got.units_cat_lite, lite)
    assert (lite <= paper).all() and (lite < paper).any()
