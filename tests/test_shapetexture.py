"""The shape/texture world: its cues, its stimulus sets, and the regime effect it exists to show."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED
from test_steps import _step

from cnnscope.data import shapetexture
from cnnscope.models.registry import LoadedModel
from cnnscope.report import page as sections
from cnnscope.report import tables
from cnnscope.report.inputs import reference_decisions
from cnnscope.shapebias.evaluate import evaluate, summary
from cnnscope.shapebias.stimuli import stimulus_sets
from cnnscope.training import TrainSpec, train

WORLD = shapetexture.CLASSES


def test_texture_agreement_follows_the_regime():
    _, shapes, textures = shapetexture.training_set(1600, 24, 0.9, seed=0)
    assert np.mean(shapes == textures) == pytest.approx(0.9, abs=0.03)
    assert np.bincount(shapes).tolist() == [100] * 16  # balanced classes
    _, shapes, textures = shapetexture.training_set(1600, 24, None, seed=0)
    assert np.mean(shapes == textures) == pytest.approx(1 / 16, abs=0.025)
    assert len(set(shapetexture.TEXTURES)) == 16


@pytest.fixture(scope="module")
def stimuli_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stimuli")
    shapetexture.write_stimuli(root, size=32, poses=5, singles=10, progress=False)
    return root


def test_world_stimuli_follow_the_published_layout(stimuli_root):
    sets = stimulus_sets(stimuli_root, WORLD)
    cc = sets["cue-conflict"]
    assert len(cc) == 1280 and len(sets["edges"]) == 160 and len(sets["silhouettes"]) == 160
    per_shape = pd.Series([s.shape for s in cc]).value_counts()
    assert (per_shape == 80).all() and len(per_shape) == 16
    assert sum(not s.conflict for s in cc) == 80


def test_a_cue_conflict_pose_differs_only_in_texture(stimuli_root):
    from PIL import Image

    d = stimuli_root / "stimuli/style-transfer-preprocessed-512/star"
    a = np.asarray(Image.open(d / "star2-circle2.png")).astype(int)
    b = np.asarray(Image.open(d / "star2-tee2.png")).astype(int)
    differs = (a != b).any(-1)
    assert 0.02 < differs.mean() < 0.5  # inside the star only; the background is shared


def test_shape_regime_gives_a_far_higher_shape_bias(stimuli_root):
    """The world's purpose: texture is a shortcut in one regime and useless in the other."""
    result = {}
    for regime in ("standard", "shape"):
        model, metrics = train(
            TrainSpec(regime=regime, steps=300, image_size=32, n_train=2000, n_val=300, width=16),
            progress=False,
        )
        loaded = LoadedModel(model, (0.5,) * 3, (0.25,) * 3)
        result[regime] = {**summary(evaluate(loaded, stimuli_root, regime, WORLD, progress=False)), **metrics}
    std, shp = result["standard"], result["shape"]
    assert shp["shape_bias"] > std["shape_bias"] + 0.5, result
    assert shp["val_accuracy_random_texture"] > 0.5, "the shape-regime model did not learn shapes"
    assert std["val_accuracy"] > 0.9 and std["val_accuracy_random_texture"] < 0.5
    assert min(std["cue_fraction"], shp["cue_fraction"]) > 0.5
    torch.set_num_threads(1)


def test_stimuli_step_copies_a_local_checkout(tmp_path):
    res = _step(
        "stimuli",
        "source=local",
        f"path={SHARED / 'data' / 'texture-vs-shape'}",
        "out=tvs",
        "progress=false",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    sets = stimulus_sets(tmp_path / "tvs")
    assert len(sets["cue-conflict"]) == 1280
    assert (tmp_path / "tvs" / "raw-data" / "edge-experiment").is_dir()
    bad = _step("stimuli", "source=local", f"path={tmp_path}", "out=bad", cwd=tmp_path)
    assert bad.returncode == 2 and "is not a texture-vs-shape checkout" in bad.stdout + bad.stderr
    assert not (tmp_path / "bad").exists()


def test_report_section_pools_humans_and_lists_published_cnns(tmp_path):
    raw = SHARED / "data" / "texture-vs-shape" / "raw-data"
    refs = [
        str(raw / "style-transfer-512-nomask-experiment"),
        str(raw / "style-transfer-512-nomask-experiment-trained-CNNs"),
    ]
    decisions = [reference_decisions(r) for r in refs]
    table, per_class = tables.shape_bias({}, {}, decisions), tables.per_class(decisions)
    page = sections.Page(tmp_path)
    sections.shape_bias(page, table, per_class, "texture-vs-shape", {})
    saved = pd.read_csv(tmp_path / "tables" / "shape_bias.csv").set_index("decision-maker")
    assert saved.loc["humans (style-transfer-512-nomask-experiment)", "shape_bias"] == pytest.approx(
        0.9587, abs=5e-5
    )
    assert saved.loc["resnet50", "shape_hits"] == 162
    assert len(pd.read_csv(tmp_path / "tables" / "shape_bias_per_class.csv")) == 3 * 16
    for fig in ("shape_bias", "shape_bias_box"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 10_000
        assert (tmp_path / "figures" / f"{fig}.svg").is_file()
    assert "Texture vs shape" in page.parts[0]


def test_stimuli_step_downloads_and_verifies_an_archive(tmp_path):
    """The real-stimuli download path, against a texture-vs-shape zip served on 127.0.0.1."""
    import hashlib
    import zipfile

    from test_download import _Server

    src = SHARED / "data" / "texture-vs-shape"
    zpath = tmp_path / "master.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file() and ("stimuli" in f.parts or "raw-data" in f.parts):
                zf.write(f, "texture-vs-shape-master" / f.relative_to(src))
    payload = zpath.read_bytes()
    with _Server(payload) as srv:
        res = _step(
            "stimuli",
            "source=download",
            f"url={srv.url}",
            f"sha256={hashlib.sha256(payload).hexdigest()}",
            f"size_bytes={len(payload)}",
            "cache_dir=cache",
            "out=tvs",
            "progress=false",
            cwd=tmp_path,
        )
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(stimulus_sets(tmp_path / "tvs")["cue-conflict"]) == 1280
    assert (tmp_path / "tvs" / "raw-data" / "style-transfer-512-nomask-experiment").is_dir()
    assert (
        tmp_path / "cache" / f"texture-vs-shape-{hashlib.sha256(payload).hexdigest()}.zip"
    ).read_bytes() == payload
