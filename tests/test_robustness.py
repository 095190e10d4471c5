"""The whole texture-vs-shape paper: accuracy per stimulus type and distortion, and the distortions.

Counts below were written from a plain ``csv.DictReader`` tally of each file (correct = response equals
category), independent of the pandas code under test.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED
from scipy import ndimage
from test_steps import _step

from cnnscope.artifacts import RobustnessArtifact
from cnnscope.shapebias import analysis, robustness
from cnnscope.shapebias import distortions as dist

RAW = SHARED / "data" / "texture-vs-shape" / "raw-data"
HUMAN_DISTORTIONS = RAW / "raw-data-from-generalisation-paper"


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("grayscale-experiment/grayscale-experiment_alexnet_session_1.csv", {("alexnet", "0"): (155, 160)}),
        ("texture-experiment/texture-experiment_subject-03_session_1.csv", {("subject-03", "0"): (40, 48)}),
        ("edge-experiment/edge-experiment_subject-05_session_1.csv", {("subject-05", "0"): (142, 160)}),
        (
            "contrast-png-experiment-trained-CNNs/contrast-png-experiment_resnet50_session-1.csv",
            {
                ("resnet50", "c01"): (77, 1120),
                ("resnet50", "c05"): (591, 1120),
                ("resnet50", "c100"): (1073, 1120),
            },
        ),
    ],
)
def test_accuracy_per_subject_experiment_condition_is_the_hand_count(file, expected):
    table = robustness.accuracy(analysis.read_decisions(RAW / file))
    experiment = file.split("/")[1].split("_")[0].removesuffix("-experiment")
    assert set(table["experiment"]) == {experiment}
    got = {(r.subj, str(r.condition)): (r.correct, r.trials) for r in table.itertuples()}
    for key, counts in expected.items():
        assert got[key] == counts


def test_noise_curve_of_one_observer_is_the_hand_count():
    df = analysis.read_decisions(
        HUMAN_DISTORTIONS / "noise-experiment" / "noise-experiment_subject-02_session_1.csv"
    )
    curve = robustness.curves(df)
    assert curve["curve"].unique().tolist() == ["noise"]
    assert curve["level"].tolist() == [0.0, 0.03, 0.05, 0.1, 0.2, 0.35, 0.6, 0.9]
    assert curve["correct"].tolist() == [127, 122, 128, 125, 93, 76, 28, 3]
    assert (curve["trials"] == 160).all()
    # Half of 127/160 is 0.396875: between 0.35 (76/160 = 0.475) and 0.6 (28/160 = 0.175).
    a0, a1 = 76 / 160, 28 / 160
    expected = 0.35 + (a0 - 127 / 320) / (a0 - a1) * 0.25
    summary = robustness.summary(curve).iloc[0]
    assert summary["half_accuracy_level"] == pytest.approx(expected)
    assert summary["distorted_accuracy"] == pytest.approx((122 + 128 + 125 + 93 + 76 + 28 + 3) / (7 * 160))


def test_wilson_interval_on_hand_computed_cases():
    # 8 of 10, p = 0.8: centre (0.8 + z²/20) / (1 + z²/10), half z·sqrt(0.016 + z²/400) / (1 + z²/10)
    lo, hi = robustness.wilson(8, 10)
    z = robustness.Z95
    centre, half = (
        (0.8 + z * z / 20) / (1 + z * z / 10),
        z * math.sqrt(0.016 + z * z / 400) / (1 + z * z / 10),
    )
    assert (float(lo), float(hi)) == pytest.approx((centre - half, centre + half))
    assert (float(lo), float(hi)) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    lo, hi = robustness.wilson(0, 5)
    assert float(lo) == pytest.approx(0.0, abs=1e-12) and 0 < float(hi) < 0.5
    lo, hi = robustness.wilson(5, 5)
    assert float(hi) == pytest.approx(1.0) and 0.5 < float(lo) < 1


def test_half_accuracy_level_interpolates_and_is_nan_when_never_reached():
    assert robustness.half_level(np.array([0.0, 1.0, 2.0]), np.array([0.8, 0.6, 0.2])) == pytest.approx(1.5)
    assert robustness.half_level(np.array([0.0, 1.0]), np.array([0.8, 0.4])) == pytest.approx(1.0)
    assert math.isnan(robustness.half_level(np.array([0.0, 1.0]), np.array([0.8, 0.7])))
    assert robustness.half_level(np.array([math.inf, 3.0, 1.5]), np.array([0.9, 0.3, 0.1])) == 3.0


def test_published_resnets_stylized_is_more_robust_on_average():
    """The raw data behind Geirhos et al. 2019, Fig. 6 / Table 5: over the five distortions both
    ResNet-50s were tested on, the Stylized-ImageNet one keeps more accuracy at the distorted levels."""
    folders = sorted(RAW.glob("*-experiment-trained-CNNs"))
    df = analysis.read_decisions(*[f for f in folders if "style-transfer" not in f.name])
    summary = robustness.summary(robustness.curves(df))
    assert set(summary["curve"]) == {"noise", "contrast", "lowpass", "highpass", "phase"}
    mean = robustness.mean_robustness(summary)
    assert mean["resnet50-train-60-epochs"] > mean["resnet50"] + 0.05


def test_eidolon_conditions_parse_as_reach_per_coherence():
    assert robustness.condition_level("eidolon", "128-3-10") == ("eidolon coherence 0.3", 128.0)
    assert robustness.condition_level("contrast-png", "c05") == ("contrast", 0.05)
    assert robustness.condition_level("highpass", "inf") == ("highpass", math.inf)
    df = analysis.read_decisions(HUMAN_DISTORTIONS / "eidolon-experiment")
    curves = robustness.curves(df)
    assert set(curves["curve"]) == {f"eidolon coherence {c}" for c in ("0", "0.3", "1")}
    assert curves["subj"].nunique() == 5
    assert curves.groupby(["subj", "curve"])["level"].apply(lambda s: s.is_monotonic_increasing).all()


# --- the distortions -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(0.45, 0.2, size=(3, 32, 32)), 0, 1)


def test_each_distortion_at_its_clean_level_is_the_identity(grey):
    rng = np.random.default_rng(1)
    for name, d in dist.DISTORTIONS.items():
        out = d.apply(grey, d.value(d.levels[0]), rng)
        if name == "noise":  # the papers' noise level 0 is the 30%-contrast image
            np.testing.assert_allclose(out, dist.contrast(grey, dist.NOISE_CONTRAST), atol=1e-12)
        else:
            np.testing.assert_allclose(out, grey, atol=1e-12, err_msg=name)


def test_contrast_scales_the_standard_deviation(grey):
    for label in dist.DISTORTIONS["contrast"].levels:
        c = dist.DISTORTIONS["contrast"].value(label)
        out = dist.DISTORTIONS["contrast"].apply(grey, c, None)
        np.testing.assert_allclose(out.std(axis=(1, 2)), c * grey.std(axis=(1, 2)), rtol=1e-9)
        np.testing.assert_allclose(out.mean(axis=(1, 2)), (1 - c) / 2 + c * grey.mean(axis=(1, 2)))


def test_uniform_noise_stays_within_its_width():
    flat = np.full((2, 64, 64), 0.5)  # contrast 30% of mid grey is mid grey: no clipping below w = 0.5
    for w in (0.03, 0.1, 0.35):
        noise = dist.uniform_noise(flat, w, np.random.default_rng(0)) - 0.5
        assert np.abs(noise).max() <= w and np.abs(noise).max() > 0.95 * w
        assert noise.mean() == pytest.approx(0, abs=w / 50)
        assert noise.std() == pytest.approx(w / math.sqrt(3), rel=0.03)  # U(-w, w)


@pytest.mark.parametrize("size", [32, 33])
def test_phase_scrambling_keeps_the_amplitude_spectrum(size):
    x = np.clip(np.random.default_rng(4).normal(0.45, 0.2, size=(2, size, size)), 0, 1)
    for w in (30.0, 90.0, 180.0):
        out = dist.scramble_phase(x, w, np.random.default_rng(2))
        assert np.isrealobj(out)
        before, after = np.fft.fft2(x), np.fft.fft2(out)
        np.testing.assert_allclose(np.abs(after), np.abs(before), atol=1e-9)
        np.testing.assert_allclose(out.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-12)
        # Each frequency's phase moved by U(-w, w): within the width, and spanning it.
        shift = np.degrees(np.angle(after * np.conj(before)))
        assert np.abs(shift).max() <= w + 1e-6 and np.abs(shift).max() > 0.97 * w
        assert np.abs(shift).mean() == pytest.approx(w / 2, rel=0.1)


def test_blur_equals_scipys_gaussian_filter(grey):
    for sigma in (1.0, 3.0, 7.0, 40.0):
        ours = dist.gaussian_blur(grey, sigma)
        ref = np.stack(
            [ndimage.gaussian_filter(g, sigma, mode="constant", cval=dist.BACKGROUND_GREY) for g in grey]
        )
        np.testing.assert_allclose(ours, ref, atol=1e-10)
    high = dist.high_pass(grey, 1.0)
    assert (
        np.abs(high.mean(axis=(1, 2)) - dist.BACKGROUND_GREY).max() < 0.02
    )  # shifted to the grey (then clipped)


def test_rotation_by_quarter_turns(grey):
    np.testing.assert_array_equal(dist.rotate(grey, 90), np.rot90(grey, 1, axes=(1, 2)))
    np.testing.assert_array_equal(dist.rotate(dist.rotate(grey, 180), 180), grey)
    np.testing.assert_array_equal(dist.rotate(dist.rotate(grey, 90), 270), grey)
    with pytest.raises(ValueError, match="multiples of 90"):
        dist.rotate(grey, 45)


def test_distort_is_seeded_per_distortion_and_level():
    images = np.random.default_rng(3).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    a = dist.distort(images, "noise", "0.2", seed=0)
    assert a.dtype == np.uint8 and a.shape == images.shape and (a[..., 0] == a[..., 2]).all()
    np.testing.assert_array_equal(a, dist.distort(images, "noise", "0.2", seed=0))
    assert not np.array_equal(a, dist.distort(images, "noise", "0.35", seed=0))
    assert not np.array_equal(a, dist.distort(images, "noise", "0.2", seed=1))
    for name in ("noise", "phase"):  # batching does not change any image's noise
        whole = dist.distort(images, name, dist.DISTORTIONS[name].levels[3])
        halves = [
            dist.distort(images[i : i + 1], name, dist.DISTORTIONS[name].levels[3], first=i) for i in (0, 1)
        ]
        np.testing.assert_array_equal(whole, np.concatenate(halves))
    grey = dist.to_uint8_rgb(dist.greyscale(images))
    np.testing.assert_array_equal(dist.distort(images, "rotation", "0"), grey)


# --- the step on a folder of images (a real study's path) ---------------------------------------


def test_robustness_step_distorts_a_folder_of_class_images(study, tmp_path):
    """A real study's robustness: a folder of 16-class images in ImageNet layout (here two classes of
    the world's originals, resized to ``size``), every level of the distortions asked for."""
    originals = study / "results" / "stimuli" / "world" / "stimuli" / "original"
    folder = tmp_path / "images"
    for cls in ("circle", "star"):
        (folder / cls).mkdir(parents=True)
        for f in sorted((originals / cls).glob("*.png")):
            shutil.copy(f, folder / cls / f.name)
    model = ["model=convnet", "model.width=8", f"model.checkpoint={study / 'results/train/tiny/model.pt'}"]
    common = [*model, "name=tiny", "size=40", "distortions=[rotation,contrast]", "progress=false"]
    res = _step("robustness", *common, f"images={folder}", "out=r", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    images = sum(1 for _ in folder.rglob("*.png"))
    art = RobustnessArtifact(tmp_path / "r")
    rotation, contrast = pd.read_csv(art.decisions("rotation")), pd.read_csv(art.decisions("contrast"))
    assert len(rotation) == 4 * images and len(contrast) == 8 * images
    assert [str(c) for c in contrast["condition"].unique()] == list(dist.DISTORTIONS["contrast"].levels)
    assert set(rotation["category"]) == {"circle", "star"} and not art.decisions("noise").exists()
    summary = json.loads(art.summary.read_text())
    assert summary["images"] == images and [c["curve"] for c in summary["curves"]] == ["contrast", "rotation"]
    (folder / "zebra").mkdir()
    bad = _step("robustness", *common, f"images={folder}", "out=bad", cwd=tmp_path)
    assert bad.returncode == 2 and "one folder per class named among" in bad.stdout + bad.stderr
    assert "zebra" in bad.stdout + bad.stderr and not (tmp_path / "bad").exists()


def test_the_colour_variant_distorts_every_channel_alike():
    images = np.random.default_rng(5).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    for name, d in dist.DISTORTIONS.items():
        if name != "noise":  # the clean level is the identity in colour too
            np.testing.assert_array_equal(dist.distort(images, name, d.levels[0], grey=False), images)
    low = dist.distort(images, "contrast", "c10", grey=False).astype(float) / 255
    np.testing.assert_allclose(low.std(axis=(1, 2)), 0.1 * (images / 255).std(axis=(1, 2)), atol=2e-3)
    x = np.moveaxis(images / 255, -1, 1)[0]  # (3, H, W): one phase noise for all three channels
    out = dist.scramble_phase(x, 90.0, np.random.default_rng(0))
    shift = np.angle(np.fft.fft2(out) * np.conj(np.fft.fft2(x)))
    big = np.abs(np.fft.fft2(x)).min(axis=0) > 1e-6
    np.testing.assert_allclose(shift[0][big], shift[1][big], atol=1e-6)
    np.testing.assert_allclose(shift[0][big], shift[2][big], atol=1e-6)
