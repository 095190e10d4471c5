"""Atomic artifacts: all or nothing, and no debris from killed runs."""

from __future__ import annotations

import pytest

from cnnscope.io import atomic_dir, atomic_file


def test_failed_block_leaves_nothing_and_keeps_the_old_artifact(tmp_path):
    out = tmp_path / "artifact"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_debris_of_a_killed_run_is_removed(tmp_path):
    (tmp_path / ".artifact.tmp-deadbeef").mkdir()
    (tmp_path / ".artifact.tmp-deadbeef" / "partial.npy").write_bytes(b"x")
    (tmp_path / ".other.tmp-12345678").mkdir()  # another artifact's: left alone
    with atomic_dir(tmp_path / "artifact") as tmp:
        (tmp / "done").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-12345678", "artifact"]


def test_atomic_file_replaces_only_when_complete(tmp_path):
    out = tmp_path / "f.json"
    with atomic_file(out) as tmp:
        tmp.write_text("1")
    with pytest.raises(ValueError), atomic_file(out) as tmp:
        tmp.write_text("2")
        raise ValueError
    assert out.read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_resumable_dir_keeps_work_for_a_rerun_but_no_empty_debris(tmp_path):
    from cnnscope.io import resumable_dir

    out = tmp_path / "art"
    with pytest.raises(RuntimeError), resumable_dir(out, {"a": 1}) as (work, resumed):
        assert not resumed
        raise RuntimeError("bad input, before any work")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), resumable_dir(out, {"a": 1}) as (work, resumed):
        (work / "half.npy").write_bytes(b"x")
        raise RuntimeError("killed mid-way")
    with resumable_dir(out, {"a": 1}) as (work, resumed):
        assert resumed and (work / "half.npy").is_file()
    assert (out / "half.npy").is_file() and not (out / "fingerprint.json").exists()
    with pytest.raises(RuntimeError), resumable_dir(tmp_path / "b", {"a": 1}) as (work, _):
        (work / "half").write_text("1")
        raise RuntimeError
    with resumable_dir(tmp_path / "b", {"a": 2}) as (work, resumed):
        assert not resumed and not (work / "half").exists()  # another fingerprint starts over
