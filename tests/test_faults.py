"""Killed steps (SIGKILL) leave nothing a later run trusts, and a rerun finishes with the same result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from test_download import _Server
from test_steps import _step

from cnnscope.data.broden import BrodenDataset
from cnnscope.data.packed import pack
from cnnscope.data.synthworld import WorldSpec, generate
from cnnscope.io import seal

ENV = dict(os.environ)


def _start(step: str, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", f"cnnscope.steps.{step}", *args],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; fail if it ends first."""
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the step ended before it could be killed:\n{proc.stdout.read()}"
        assert time.monotonic() < end, "the step never reached the point to kill it"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A 400-image probe set: slow enough, at batch size 2 with ResNet-18, to be killed mid-way."""
    root = tmp_path_factory.mktemp("faults")
    generate(root / "world", WorldSpec(n_images=400, image_size=64, seed=5), progress=False)
    pack(BrodenDataset(root / "world"), root / "packed", progress=False)
    seal(root / "packed")  # as the prepare step does
    torch.manual_seed(0)  # fixed weights in a file: every run must see the same model
    torch.save(torchvision.models.resnet18().state_dict(), root / "r18.pt")
    return root


EXTRACT = (
    "model=resnet18",
    "model.source=checkpoint",
    "model.weights=null",
    "model.checkpoint=r18.pt",
    "layer=layer3",
    "packed=packed",
    "batch_size=2",
    "checkpoint_s=0",
    "progress=false",
)


def _progress(partial: Path) -> int:
    try:
        return json.loads((partial / "progress.json").read_text())["done"]
    except (OSError, ValueError):
        return 0


def test_killed_extraction_resumes_and_equals_an_uninterrupted_run(work):
    ref = _step("extract", *EXTRACT, "out=ref", cwd=work)
    assert ref.returncode == 0, ref.stderr
    partial = work / ".acts.partial"
    proc = _start("extract", *EXTRACT, "out=acts", cwd=work)
    _kill_when(proc, lambda: _progress(partial) >= 100)
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "acts").exists(), "a killed extraction must not leave its artifact"
    done = _progress(partial)
    assert 100 <= done < 400
    again = _step("extract", *EXTRACT, "out=acts", cwd=work)
    assert again.returncode == 0, again.stderr
    assert f"resuming layer3 at image {done}" in again.stdout + again.stderr
    for f in ("activations.npy", "maxima.npy", "unit_range.npy"):
        assert (work / "acts" / f).read_bytes() == (work / "ref" / f).read_bytes(), f
    assert not partial.exists() and not (work / "acts" / "progress.json").exists()


def test_changed_config_does_not_resume_stale_work(work):
    partial = work / ".other.partial"
    proc = _start("extract", *EXTRACT, "out=other", cwd=work)
    _kill_when(proc, lambda: _progress(partial) >= 20)
    res = _step("extract", *EXTRACT, "out=other", "store_dtype=float32", cwd=work)
    assert res.returncode == 0 and "resuming" not in res.stdout + res.stderr
    assert np.load(work / "other" / "activations.npy").dtype == np.float32


def test_dissection_killed_at_any_moment_leaves_no_artifact(work):
    if not (work / "ref").exists():
        assert _step("extract", *EXTRACT, "out=ref", cwd=work).returncode == 0
    args = ("activations=ref", "packed=packed", "progress=false")
    assert _step("dissect", *args, "out=dref", cwd=work).returncode == 0
    killed = 0
    for delay in np.arange(0.5, 6.0, 0.5):
        shutil.rmtree(work / "dis", ignore_errors=True)
        proc = _start("dissect", *args, "out=dis", cwd=work)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        if proc.returncode != -signal.SIGKILL:
            break  # it finished before this kill: every later delay would too
        # Killed: either nothing is there, or the rename had already committed a complete artifact.
        if (work / "dis").exists():
            assert (work / "dis" / "units.csv").read_bytes() == (work / "dref" / "units.csv").read_bytes()
    assert killed >= 3
    final = _step("dissect", *args, "out=dis", cwd=work)
    assert final.returncode == 0, final.stderr
    assert (work / "dis" / "units.csv").read_bytes() == (work / "dref" / "units.csv").read_bytes()
    assert not list(work.glob(".dis.tmp-*"))


def test_killed_dissection_resumes_from_its_checkpoints(work):
    """Killed in the thresholds, then in the tally: each rerun continues from the checkpoint, and the
    tables equal the uninterrupted run's (whose batches were sized differently)."""
    if not (work / "dref").exists():
        assert _step("extract", *EXTRACT, "out=ref", cwd=work).returncode == 0
        assert (
            _step(
                "dissect", "activations=ref", "packed=packed", "progress=false", "out=dref", cwd=work
            ).returncode
            == 0
        )
    # one image per batch and a checkpoint after each: slow enough to be killed in either loop
    args = (
        "activations=ref",
        "packed=packed",
        "progress=false",
        "out=dck",
        "checkpoint_s=0",
        "batch_size=1",
        "max_elements=4096",
    )
    partial = work / ".dck.partial"
    for ckpt, resumed in (("thresholds.ckpt", None), ("tally.ckpt", "thresholds: resuming at image")):
        proc = _start("dissect", *args, cwd=work)
        _kill_when(proc, lambda f=ckpt: (partial / f).is_file())
        out = proc.stdout.read()
        assert proc.returncode == -signal.SIGKILL and not (work / "dck").exists()
        if resumed:
            assert resumed in out, out
    final = _step("dissect", *args, cwd=work)
    assert final.returncode == 0, final.stderr
    assert "tally: resuming at image" in final.stdout + final.stderr
    for f in ("units.csv", "detectors.csv", "thresholds.npy"):
        assert (work / "dck" / f).read_bytes() == (work / "dref" / f).read_bytes(), f
    got, ref = np.load(work / "dck" / "tally.npz"), np.load(work / "dref" / "tally.npz")
    for k in ref.files:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    assert not partial.exists()
    assert sorted(p.name for p in (work / "dck").iterdir()) == sorted(
        p.name for p in (work / "dref").iterdir()
    )


def test_killed_training_resumes_and_ends_with_the_same_weights(tmp_path):
    args = (
        "train.steps=80",
        "train.n_train=128",
        "train.n_val=32",
        "train.image_size=32",
        "model.width=8",
        "checkpoint_s=0",
        "progress=false",
    )
    ref = _step("train", *args, "out=ref", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    partial = tmp_path / ".net.partial"

    def step() -> int:
        try:
            return torch.load(partial / "train.ckpt", weights_only=True)["step"]
        except (OSError, RuntimeError, EOFError, KeyError):
            return 0

    proc = _start("train", *args, "out=net", cwd=tmp_path)
    _kill_when(proc, lambda: step() >= 20)
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "net").exists()
    done = step()
    assert 20 <= done < 80
    again = _step("train", *args, "out=net", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"resuming at step {done} of 80" in again.stdout + again.stderr
    got = torch.load(tmp_path / "net" / "model.pt", weights_only=True)["state_dict"]
    want = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["state_dict"]
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("net", "ref")]
    for key in ("final_loss", "val_accuracy", "val_accuracy_random_texture"):
        assert metrics[0][key] == metrics[1][key], key
    assert not partial.exists() and not (tmp_path / "net" / "train.ckpt").exists()


def test_killed_download_resumes_from_its_partial_file(world, tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(world.rglob("*")):
            if f.is_file():
                zf.write(f, Path("broden1_224") / f.relative_to(world))
        zf.writestr("broden1_224/filler.bin", os.urandom(4_000_000))  # big enough to be cut mid-way
    payload = buf.getvalue()
    args = ("cache_dir=cache", "out=broden1_224", "progress=false", "dataset.md5=null")  # not the real one
    part = tmp_path / "cache" / "broden1_224.zip.part"
    with _Server(payload, delay=0.03) as slow:
        proc = _start("download", f"dataset.url={slow.url}", *args, cwd=tmp_path)
        _kill_when(proc, lambda: part.is_file() and part.stat().st_size >= 1 << 20)
    assert not (tmp_path / "broden1_224").exists() and not (tmp_path / "cache" / "broden1_224.zip").exists()
    have = part.stat().st_size
    with _Server(payload) as fast:
        res = _step("download", f"dataset.url={fast.url}", *args, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert fast.requests[0] == f"bytes={have}-"
    assert (tmp_path / "cache" / "broden1_224.zip").read_bytes() == payload
    assert len(BrodenDataset(tmp_path / "broden1_224")) == 60


def test_killed_net2vec_resumes_to_the_same_embeddings(work):
    """Killed mid-training (one image per step, a checkpoint after each), the rerun continues from the
    checkpoint and writes the same weights and tables as an uninterrupted run."""
    if not (work / "dref").exists():
        assert _step("extract", *EXTRACT, "out=ref", cwd=work).returncode == 0
        dissect = ("activations=ref", "packed=packed", "progress=false", "out=dref")
        assert _step("dissect", *dissect, cwd=work).returncode == 0
    common = (
        "activations=ref",
        "dissect=dref",
        "packed=packed",
        "progress=false",
        "segmentation.batch_size=1",
        "segmentation.epochs=2",
    )
    assert _step("net2vec", *common, "out=nref", cwd=work).returncode == 0
    args = (*common, "out=nck", "checkpoint_s=0")
    partial = work / ".nck.partial"
    proc = _start("net2vec", *args, cwd=work)
    _kill_when(proc, lambda: (partial / "train.ckpt").is_file())
    assert proc.returncode == -signal.SIGKILL and not (work / "nck").exists()
    final = _step("net2vec", *args, cwd=work)
    assert final.returncode == 0, final.stderr
    assert "net2vec segmentation: resuming at epoch" in final.stdout + final.stderr
    for f in ("concepts.csv", "neighbours.csv", "weights.npy", "embeddings.npz"):
        assert (work / "nck" / f).read_bytes() == (work / "nref" / f).read_bytes(), f
    assert not partial.exists()
