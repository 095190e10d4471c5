"""Mistakes through the maps: which classes are compared (the true one on a mistake, the second one on
a correct image), the similarity as the sanity checks' Spearman of maps computed directly, two classes
with the same evidence giving identical maps, the summary by hand, and the step on an image folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_lcam import _folder
from test_steps import _step

from cnnscope.attribution.cam import GradCAM
from cnnscope.attribution.mistakes import compare_classes, summarise
from cnnscope.attribution.sanity import spearman
from cnnscope.attribution.tcav import ttest_ind
from cnnscope.models.builtin import ConvNet
from cnnscope.training import save_model


def _net(classes: int = 5) -> ConvNet:
    torch.manual_seed(0)
    return ConvNet(num_classes=classes, width=4).eval()


def test_mistakes_compare_the_true_class_and_correct_images_the_second():
    net = _net()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        top2 = net(x).topk(2, 1).indices
    labels = top2[:, 0].clone()
    labels[::2] = (labels[::2] + 1) % 5  # every other image misclassified
    found = compare_classes(net, "conv5", x, labels, ["gradcam"])
    pairs = found.pairs
    assert pairs["predicted"].tolist() == top2[:, 0].tolist()
    assert pairs["correct"].tolist() == [False, True] * 4
    expected = torch.where(top2[:, 0] == labels, top2[:, 1], labels)
    assert pairs["compared"].tolist() == expected.tolist()
    with GradCAM(net, "conv5") as cam:
        first, second = cam(x, top2[:, 0]), cam(x, expected)
    assert torch.allclose(found.maps["gradcam"][:, 0], first) and torch.allclose(
        found.maps["gradcam"][:, 1], second
    )
    assert np.allclose(pairs["similarity"], spearman(first, second), equal_nan=True)


def test_two_classes_with_the_same_evidence_have_identical_maps():
    """Class 1's head is twice class 0's: its Grad-CAM weights are twice as large, the normalised map
    the same, so a mistake between them has similarity 1."""
    net = _net(3)
    with torch.no_grad():
        net.fc.weight[1] = 2 * net.fc.weight[0]
        net.fc.bias[1] = net.fc.bias[0]
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        predicted = net(x).argmax(1)
    labels = torch.where(predicted == 1, 0, 1)
    found = compare_classes(net, "conv5", x, labels, ["gradcam"])
    shared = found.pairs["compared"].isin([0, 1]) & found.pairs["predicted"].isin([0, 1])
    assert shared.any()
    assert np.allclose(found.pairs.loc[shared, "similarity"], 1.0)


def test_summary_by_hand():
    pairs = pd.DataFrame(
        {
            "method": ["a"] * 5 + ["b"] * 2,
            "correct": [True, True, False, False, True, True, True],
            "similarity": [0.2, 0.4, 0.9, np.nan, 0.3, 0.1, 0.5],
        }
    )
    s = summarise(pairs).set_index("method")
    assert s.loc["a", "accuracy"] == pytest.approx(0.6) and s.loc["a", "mistakes"] == 2
    assert s.loc["a", "predicted_vs_true"] == pytest.approx(0.9)
    assert s.loc["a", "top1_vs_top2"] == pytest.approx(0.3)
    assert s.loc["a", "difference"] == pytest.approx(0.6) and s.loc["a", "constant_maps"] == 1
    t, p = ttest_ind(np.array([0.9]), np.array([0.2, 0.4, 0.3]))  # the constant pair left out
    assert (s.loc["a", "t"], s.loc["a", "p"]) == (pytest.approx(t), pytest.approx(p)) and p < 0.05
    assert s.loc["b", "mistakes"] == 0 and np.isnan(s.loc["b", "predicted_vs_true"])
    assert np.isnan(s.loc["b", "p"])  # no mistakes: nothing to test


def test_mistakes_step_on_an_image_folder(tmp_path):
    """Grad-CAM only (no L-CAM needed), the folder's labels, the gallery of the first mistakes; an
    L-CAM method without the lcam step's output is refused with the fix, leaving nothing."""
    _folder(tmp_path / "val")
    torch.manual_seed(0)
    save_model(ConvNet(num_classes=4, width=8), "convnet", tmp_path / "net.pt")
    args = (
        "model=convnet",
        "model.checkpoint=net.pt",
        "model.num_classes=4",
        "model.width=8",
        "name=toy",
        "layer=conv5",
        "data=val",
        "image_size=32",
        "show=2",
        "progress=false",
    )
    res = _step("mistakes", *args, "methods=[gradcam]", "out=mistakes", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    pairs = pd.read_csv(tmp_path / "mistakes" / "pairs.csv")
    assert sorted(pairs["label"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    wrong = pairs.loc[~pairs["correct"], "image"].tolist()
    gallery = np.load(tmp_path / "mistakes" / "gallery.npz")
    assert gallery["index"].tolist() == wrong[:2] and gallery["gradcam"].shape == (
        min(2, len(wrong)),
        2,
        32,
        32,
    )
    summary = pd.read_csv(tmp_path / "mistakes" / "summary.csv")
    assert summary["mistakes"].tolist() == [len(wrong)] and summary["images"].tolist() == [12]
    bad = _step("mistakes", *args, "out=bad", cwd=tmp_path)  # L-CAM by default: it needs lcam=
    assert bad.returncode == 2 and "give lcam=" in bad.stdout + bad.stderr
    assert not (tmp_path / "bad").exists()
