"""Atomic artifact writing.

A step that dies half-way must leave nothing a later run would trust, so every artifact is written to a
temporary sibling first and renamed into place only when it is complete (``os.replace`` is atomic on
one file system).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


def _tmp_sibling(path: Path) -> Path:
    """A fresh temporary sibling of ``path``, after removing any left by a killed earlier run.

    One artifact path is only ever produced by one job at a time (Snakemake guarantees it), so a
    sibling that already exists belongs to a run that died.
    """
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(tmp, path)


@contextmanager
def resumable_dir(path: str | os.PathLike[str], fingerprint: dict) -> Iterator[tuple[Path, bool]]:
    """Like :func:`atomic_dir`, but the work directory ``.<name>.partial`` survives a crash, so a later
    run with the same ``fingerprint`` resumes in it (``resumed`` is True) instead of starting over.

    A different fingerprint (another config, dataset or checkpoint) discards the partial work.
    """
    path = Path(path)
    partial = path.parent / f".{path.name}.partial"
    stamp = partial / "fingerprint.json"
    resumed = stamp.is_file() and read_json(stamp) == json.loads(json.dumps(fingerprint, default=str))
    if not resumed:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        write_json(stamp, fingerprint)
    try:
        yield partial, resumed
    except BaseException:
        if [p.name for p in partial.iterdir()] == [stamp.name]:  # failed before any work: no debris
            shutil.rmtree(partial, ignore_errors=True)
        raise
    stamp.unlink()
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(partial, path)


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file path that replaces ``path`` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON (call inside an atomic directory, or on its own)."""
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_yaml(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as block-style YAML (the resolved config beside each artifact)."""
    Path(path).write_text(yaml.safe_dump(obj, sort_keys=False))


def file_stamp(path: str | os.PathLike[str]) -> list[int] | None:
    """``[size, mtime_ns]`` of a file (None if missing): a cheap identity for resume fingerprints."""
    path = Path(path)
    if not path.is_file():
        return None
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())
