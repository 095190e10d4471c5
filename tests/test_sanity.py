"""Cascading model-parameter randomisation and its similarity measures on hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from test_steps import _step

from cnnscope.artifacts import SanityArtifact
from cnnscope.attribution import sanity
from cnnscope.models.builtin import ConvNet


def test_blocks_run_from_the_output_down():
    assert sanity.blocks(ConvNet(width=8)) == ["fc", "conv5", "conv4", "conv3", "conv2", "conv1"]


def test_cascading_randomises_exactly_the_top_blocks_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = ConvNet(width=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    order = sanity.blocks(model)
    for k, name, randomised in sanity.cascading(model, seed=3):
        assert name == order[k - 1]
        state = randomised.state_dict()
        for key, value in before.items():
            block = key.split(".")[0]
            changed = not torch.equal(state[key], value)
            if block in order[:k] and key.endswith("weight") and value.dim() > 1:
                assert changed, (k, key)  # re-initialised (a fresh batch norm's weight is 1 again)
            elif block not in order[:k]:
                assert not changed, (k, key)  # untouched below the cascade
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    one = next(iter(sanity.cascading(model, seed=3)))[2].state_dict()
    two = next(iter(sanity.cascading(model, seed=3)))[2].state_dict()
    assert all(torch.equal(one[k], v) for k, v in two.items())  # seeded


def test_ranks_and_spearman_equal_scipys():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(3, 6, 6)).astype(float)  # many ties
    b = a + rng.normal(0, 1.5, size=a.shape)
    np.testing.assert_allclose(sanity.ranks(a[0].ravel()), stats.rankdata(a[0].ravel()))
    got = sanity.spearman(torch.from_numpy(a), torch.from_numpy(b))
    want = [stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.isnan(sanity.spearman(torch.zeros(1, 4, 4), torch.rand(1, 4, 4))[0])


def test_ssim_on_one_window_by_hand():
    rng = np.random.default_rng(1)
    x, y = rng.random((7, 7)), rng.random((7, 7))
    # One 7 x 7 window: means, sample variances and covariance of the 49 pixels.
    ux, uy = x.mean(), y.mean()
    vx, vy, vxy = x.var(ddof=1), y.var(ddof=1), np.cov(x.ravel(), y.ravel())[0, 1]
    c1, c2 = 0.01**2, 0.03**2
    want = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    got = sanity.ssim(torch.from_numpy(x)[None], torch.from_numpy(y)[None])
    assert got[0] == pytest.approx(want, rel=1e-10)
    big = torch.rand(2, 20, 20, dtype=torch.float64)
    np.testing.assert_allclose(sanity.ssim(big, big), 1.0)
    assert (sanity.ssim(big, 1 - big) < 0).all()  # anti-correlated structure


def test_the_step_refuses_l_cam_before_any_work(study, tmp_path):
    """L-CAM's attention is trained on the intact model: randomising the model says nothing about it."""
    res = _step(
        "sanity",
        "model=convnet",
        "model.width=8",
        f"model.checkpoint={study / 'results/train/tiny/model.pt'}",
        "name=tiny",
        "layer=conv5",
        f"packed={study / 'results/prepare/synthworld'}",
        "methods=[gradcam,lcam_fm]",
        "out=s",
        cwd=tmp_path,
    )
    assert (
        res.returncode == 2 and "L-CAM's attention is trained on the intact model" in res.stdout + res.stderr
    )
    assert not (tmp_path / "s").exists()
    table = pd.read_csv(SanityArtifact(study / "results/sanity/synthworld/tiny").randomisation)
    blocks = sanity.blocks(ConvNet(width=8))
    assert (
        table["step"].max() == len(blocks)
        and table.groupby("method")["step"].count().eq(len(blocks) + 1).all()
    )
    assert (table.loc[table["step"] == 0, ["spearman", "ssim"]] == 1.0).all().all()


def test_hog_equals_skimages():
    """HOG with skimage's defaults, on maps of several sizes (cells that do not tile the map included)."""
    feature = pytest.importorskip("skimage.feature")
    rng = np.random.default_rng(2)
    for shape in [(64, 64), (37, 50), (24, 24)]:
        maps = rng.random((2, *shape))
        want = np.stack([feature.hog(m) for m in maps])
        got = sanity.hog(torch.from_numpy(maps)).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-7)


def test_hog_of_a_vertical_edge_by_hand():
    """A vertical step: every gradient is horizontal (0 degrees), so each cell's histogram has mass
    only in the first bin, and each L2-Hys-normalised block vector is as large in every non-zero entry."""
    edge = torch.zeros(1, 24, 24, dtype=torch.float64)
    edge[:, :, 12:] = 1.0
    h = sanity.hog(edge).view(-1, 3, 3, sanity.HOG_BINS)  # one block: rows, columns, orientations
    assert (h[..., 1:] == 0).all() and (h[..., 0] > 0).any()
    nonzero = h[h > 0]
    np.testing.assert_allclose(nonzero.numpy(), nonzero[0].item())
    rng = torch.rand(3, 24, 24, dtype=torch.float64)
    np.testing.assert_allclose(sanity.hog_similarity(rng, rng), 1.0)
    assert np.isnan(sanity.hog_similarity(torch.ones(1, 24, 24), rng[:1])).all()  # no gradient at all


def test_data_randomisation_compares_with_a_permuted_label_model_and_refuses_a_true_one(study, tmp_path):
    """The train step learns permuted labels when told; the sanity step compares every method's maps of
    that model with the trained model's, and refuses a model trained on the true labels in its place."""
    common = ["model=convnet", "model.width=8", "progress=false"]
    tiny = ["train.steps=5", "train.n_train=64", "train.n_val=32", "train.image_size=32"]
    res = _step("train", *common, *tiny, "train.labels=permuted", "out=twin", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    sanity_args = [
        *common,
        f"model.checkpoint={study / 'results/train/tiny/model.pt'}",
        "name=tiny",
        "layer=conv5",
        f"packed={study / 'results/prepare/synthworld'}",
        "images=2",
        "methods=[gradcam,guided_backprop]",
    ]
    res = _step("sanity", *sanity_args, f"random_labels={tmp_path / 'twin'}", "out=s", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    made = SanityArtifact(tmp_path / "s")
    table = pd.read_csv(made.labels)
    assert list(table["method"]) == ["gradcam", "guided_backprop"]
    assert np.isfinite(table[["ssim", "hog"]].to_numpy()).all()
    assert (table[["spearman", "ssim", "hog"]] < 1.0).all().all()  # another model, other maps
    assert set(np.load(made.maps)) >= {"gradcam@labels", "guided_backprop@labels"}
    wrong = study / "results/train/tiny"
    res = _step("sanity", *sanity_args, f"random_labels={wrong}", "out=t", cwd=tmp_path)
    assert res.returncode == 2 and "train.labels=permuted" in res.stdout + res.stderr
    assert not (tmp_path / "t").exists()
