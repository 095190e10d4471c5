"""The Hydra step entry points: no stray folders, resolved config beside the artifact, and bad
input failing fast with a clear message and no artifact."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml


def _step(step: str, *args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", f"cnnscope.steps.{step}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_step_writes_artifact_and_resolved_config_and_nothing_else(tmp_path):
    res = _step(
        "synthworld", "out=world", "world.n_images=6", "world.image_size=32", "progress=false", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]  # no outputs/, .hydra, *.log
    cfg = yaml.safe_load((tmp_path / "world" / "config.yaml").read_text())
    assert cfg["world"]["n_images"] == 6 and cfg["out"] == "world"
    assert "synthworld: 6 images of 32px -> world" in res.stdout + res.stderr


def test_misspelt_key_fails_before_work(tmp_path):
    res = _step("synthworld", "out=world", "world.n_imgs=6", cwd=tmp_path)
    assert res.returncode != 0
    assert "n_imgs" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_wrong_type_fails_before_work(tmp_path):
    res = _step("dissect", "activations=a", "packed=p", "out=o", "quantile=lots", cwd=tmp_path)
    assert res.returncode != 0 and "quantile" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_dataset_directory_is_named_and_leaves_no_artifact(tmp_path):
    res = _step("prepare", "dataset_dir=nowhere", "out=packed", cwd=tmp_path)
    assert res.returncode == 2
    assert "dataset directory nowhere does not exist" in res.stdout + res.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_layer_fails_listing_valid_ones(tmp_path, packed):
    res = _step(
        "extract",
        "model=resnet18",
        "model.weights=null",
        "layer=layer9",
        f"packed={packed.root}",
        "out=acts",
        cwd=tmp_path,
    )
    assert res.returncode == 2
    out = res.stdout + res.stderr
    assert "unknown layer 'layer9'" in out and "layer4" in out
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_config_fails(tmp_path):
    res = _step("extract", "model=resnet181", "layer=layer4", "packed=p", "out=o", cwd=tmp_path)
    assert res.returncode != 0 and "resnet181" in res.stderr
