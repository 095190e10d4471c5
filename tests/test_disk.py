"""Disk faults a user can cause, on real file systems: a full tmpfs and a read-only mount (CI runs as
root, so it can mount them). Each is one line naming the path and the fix, exit 2, no traceback, and
no artifact a rerun would trust; the rerun after the cause is removed ends as an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_steps import _step

from cnnscope import cli
from cnnscope.io import MANIFEST, SEAL_DIGEST


@contextmanager
def _mount(where: Path, size_kb: int, read_only: bool = False):
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_kb}k" + (",ro" if read_only else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True)
    if res.returncode != 0:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI runs as root)")
        pytest.fail(f"cannot mount a tmpfs at {where}: {res.stderr.decode()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def _one_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    text = res.stdout + res.stderr
    assert res.returncode == 2, text
    assert "Traceback" not in text, text
    line = next(ln for ln in text.splitlines() if "failed:" in ln or ln.startswith("cnnscope "))
    for needle in needles:
        assert needle in line, line
    return line


def _artifacts(root: Path) -> list[str]:
    """Everything a rerun could mistake for a finished artifact: sealed directories."""
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob(MANIFEST))


def test_a_full_disk_names_the_file_and_a_rerun_with_space_ends_as_an_uninterrupted_run(world, tmp_path):
    with _mount(tmp_path / "small", 96) as small:
        res = _step("prepare", f"dataset_dir={world}", f"out={small}/packed", "progress=false", cwd=tmp_path)
        line = _one_line(res, "prepare failed: cannot use", "No space left on device", "free space")
        assert f"{small}/" in line and "None" not in line
        assert _artifacts(small) == [] and not (small / "packed").exists()
    # The rerun once there is space (the mount gone, the same out=) equals an uninterrupted run.
    rerun = _step("prepare", f"dataset_dir={world}", f"out={small}/packed", "progress=false", cwd=tmp_path)
    clean = _step("prepare", f"dataset_dir={world}", "out=clean", "progress=false", cwd=tmp_path)
    assert rerun.returncode == clean.returncode == 0, rerun.stdout + clean.stdout
    assert _files(small / "packed") == _files(tmp_path / "clean")


def _files(artifact: Path) -> dict:
    """Each file's size and digest from the manifest, but the resolved config's (which names out=);
    modification times and inodes differ between any two runs."""
    files = json.loads((artifact / MANIFEST).read_text())["files"]
    return {k: (v["size"], v[SEAL_DIGEST]) for k, v in files.items() if k != "config.yaml"}


def test_torch_save_on_a_full_disk_is_one_line(tmp_path):
    """Training writes its checkpoint and model with torch.save, whose own error is an opaque
    RuntimeError from its C++ writer (a traceback)."""
    args = ["train.steps=2", "train.n_train=32", "train.n_val=16", "train.image_size=16", "progress=false"]
    with _mount(tmp_path / "small", 24) as small:
        res = _step("train", f"out={small}/m", "model.width=8", *args, cwd=tmp_path)
        _one_line(res, "train failed: cannot use", f"{small}/", "No space left on device")
        assert _artifacts(small) == []


def test_a_read_only_disk_is_one_line_for_steps_and_commands(world, tmp_path, capsys):
    with _mount(tmp_path / "ro", 64, read_only=True) as ro:
        res = _step("prepare", f"dataset_dir={world}", f"out={ro}/packed", cwd=tmp_path)
        _one_line(res, "prepare failed: cannot use", str(ro), "read-only")
        assert cli.main(["init", str(ro / "study")]) == 2
        assert "cnnscope init: cannot use" in capsys.readouterr().err
        assert cli.main(["run", "--directory", str(ro), "-n"]) == 2
        err = capsys.readouterr().err
        assert f"cannot write in the study folder {ro}" in err and "Read-only file system" in err
        image = tmp_path / "grey.png"
        from PIL import Image

        Image.new("RGB", (32, 32), (120, 120, 120)).save(image)
        res = subprocess.run(
            [sys.executable, "-m", "cnnscope.cli", "explain", str(image), "--model", "resnet18",
             "--set", "weights=null", "--size", "32", "--methods", "gradcam", "--out", str(ro / "explain")],
            capture_output=True, text=True, cwd=tmp_path, timeout=300,
        )  # fmt: skip
        _one_line(res, "cnnscope explain: cannot use", str(ro), "read-only")


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_init_where_a_file_stands_is_one_line(tmp_path, capsys, where):
    (tmp_path / "notes").write_text("a user's file")
    target = tmp_path / "notes" if where == "file" else tmp_path / "notes" / "study"
    assert cli.main(["init", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnscope init: ") and "Traceback" not in err and err.count("\n") == 1
    assert (tmp_path / "notes").read_text() == "a user's file"
