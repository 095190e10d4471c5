"""Atomic, sealed artifact writing, and checking an artifact before it is used.

A step that dies half-way must leave nothing a later run would trust, so every artifact is written to a
temporary sibling first and renamed into place only when it is complete (``os.replace`` is atomic on
one file system). On completion it is sealed: ``manifest.json`` records each file's size and SHA-256,
and a step verifies every input artifact against it before use (:func:`verify`), so a truncated or
edited file is reported instead of trusted. Only a sealed artifact (or nothing) is ever replaced, and a
lock file beside it keeps a second process from writing the same one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from cnnscope.errors import CnnscopeError

log = logging.getLogger("cnnscope")


MANIFEST = "manifest.json"  # every sealed artifact's files, sizes and digests


def _tmp_sibling(path: Path) -> Path:
    """A fresh temporary sibling of ``path``, after removing any left by a killed earlier run.

    One artifact path is only ever produced by one process at a time (:func:`_writer_lock`), so a
    sibling that already exists belongs to a run that died.
    """
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


def _check_target(path: Path) -> None:
    """Refuse an artifact path whose replacement would delete what is not this step's own artifact:
    ``.``/``..``, the working directory or a parent of it, a regular file, or a non-empty directory
    that is not a sealed artifact (it has no manifest)."""
    resolved = path.resolve()
    if path.name in ("", ".", "..") or resolved == Path.cwd().resolve() or resolved in Path.cwd().parents:
        raise CnnscopeError(f"out={path} would replace a directory that holds other work; name a new one")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise CnnscopeError(f"out={path} is an existing file, not an artifact directory; name another out=")
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST).is_file():
        raise CnnscopeError(
            f"out={path} is a directory that is not a cnnscope artifact (no {MANIFEST}); "
            "move it away or name another out="
        )


@contextmanager
def _writer_lock(path: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``path`` for the block, so two processes never write one artifact;
    a second writer is refused at once, naming the holder. The lock file is removed on release."""
    lock = path.parent / f".{path.name}.lock"
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not lock.exists() or os.stat(lock).st_ino != os.fstat(f.fileno()).st_ino:
                raise BlockingIOError  # the holder released and removed it after we opened it
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise CnnscopeError(
                f"out={path} is being written by {holder}; wait for it or name another out="
            ) from None
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # while still held, so no one locks a file about to vanish


# The digest each file of a sealed artifact is recorded with: xxh3-128 (xxhash), which hashes at
# memory speed (26 GB/s on one core here, SHA-256 1.7 GB/s), so sealing costs about one read of what
# was written. It guards against damage (a truncated, replaced or edited file), not against forgery.
# Manifests of earlier versions hold "sha256", which verification still reads.
SEAL_DIGEST = "xxh3_128"
DIGESTS = (SEAL_DIGEST, "sha256")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read in blocks: ``xxh3_128``, or any of :mod:`hashlib`'s."""
    with open(path, "rb") as f:
        if algorithm == "xxh3_128":
            import xxhash

            h = xxhash.xxh3_128()
            while block := f.read(1 << 24):
                h.update(block)
            return h.hexdigest()
        return hashlib.file_digest(f, algorithm).hexdigest()


def seal(work: Path) -> None:
    """Record every file of a finished artifact in its manifest: its size, digest, and the
    modification time and inode it has (renaming the directory into place keeps both), so that a
    routine check of it costs a ``stat`` (:func:`verify`)."""
    entries = {}
    for f in sorted(p for p in work.rglob("*") if p.is_file() and p.name != MANIFEST):
        st = f.stat()
        entries[str(f.relative_to(work))] = {
            "size": st.st_size,
            SEAL_DIGEST: file_digest(f, SEAL_DIGEST),
            "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino,
        }
    write_json(work / MANIFEST, {"files": entries})


def _rerun(step: str, path: Path) -> str:
    """What to do about a damaged artifact: ``cnnscope run`` rebuilds a truncated or missing file by
    itself (:func:`damaged_artifacts`); a file edited in place (same size) needs the artifact forced."""
    return f"rerun the {step} step (in a study: cnnscope run --forcerun {shlex.quote(str(path))})"


def verify(path: str | os.PathLike[str], step: str, full: bool = False) -> str:
    """Check an input artifact against its manifest before it is used; return the manifest's digest,
    the artifact's identity. A missing, truncated or edited file fails with "rerun step ...".

    The routine check compares each file's size, modification time and inode with the manifest's,
    and hashes only a file where one differs (a copied study, a touched file): an edit is caught
    unless it keeps the size and the time to the nanosecond. ``full`` hashes every file
    (``cnnscope verify --full``), which catches that too.
    """
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise CnnscopeError(f"{path} is not a sealed artifact (no {MANIFEST}); run the {step} step")
    for name, want in _manifest_files(path, step).items():
        f = path / name
        try:
            st = f.stat()
        except OSError:  # missing, or a path through a file
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise CnnscopeError(f"{path} is damaged: {name} is missing; {_rerun(step, path)}")
        if st.st_size != want["size"]:
            raise CnnscopeError(
                f"{path} is damaged: {name} has {st.st_size} bytes, not {want['size']} "
                f"(truncated?); {_rerun(step, path)}"
            )
        if not full and (want.get("mtime_ns"), want.get("inode")) == (st.st_mtime_ns, st.st_ino):
            continue
        algorithm = next(a for a in DIGESTS if a in want)
        if file_digest(f, algorithm) != want[algorithm]:
            raise CnnscopeError(
                f"{path} is damaged: {name} was changed after it was written; {_rerun(step, path)}"
            )
    return file_digest(manifest)


def _manifest_files(path: Path, step: str) -> dict[str, dict]:
    """The manifest's ``{file: {"size", <digest>, ...}}``; a manifest that is unreadable or not of that
    shape (truncated, emptied, edited) makes the artifact damaged like any of its files."""
    try:
        files = read_json(path / MANIFEST)["files"]
        if not isinstance(files, dict) or not all(
            isinstance(w, dict)
            and isinstance(w.get("size"), int)
            and any(isinstance(w.get(a), str) for a in DIGESTS)
            for w in files.values()
        ):
            raise TypeError(f"its file entries are not {{size, {SEAL_DIGEST}}}")
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as e:
        why = f"no {e} entry" if isinstance(e, KeyError) else str(e)
        raise CnnscopeError(
            f"{path} is damaged: {MANIFEST} is unreadable ({why}); {_rerun(step, path)}"
        ) from e
    return files


def damaged_artifacts(root: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """``(artifact, why)`` for every sealed artifact under ``root`` whose manifest is unreadable or
    one of whose files is missing or of another size: the cheap half of :func:`verify` (no digests),
    for ``cnnscope run`` to rebuild them before Snakemake, which sees only timestamps, trusts them."""
    out = []
    for manifest in sorted(Path(root).rglob(MANIFEST)):
        art = manifest.parent
        try:
            files = _manifest_files(art, "its")
        except CnnscopeError:
            out.append((art, f"{MANIFEST} is unreadable"))
            continue
        for name, want in files.items():
            f = art / name
            if not f.is_file() or f.stat().st_size != want["size"]:
                out.append((art, f"{name} is {'missing' if not f.is_file() else 'truncated or grown'}"))
                break
    return out


def verify_if_sealed(path: str | os.PathLike[str], step: str) -> str | None:
    """:func:`verify` a directory made by a cnnscope step; ``None`` for one made elsewhere (e.g. a
    dataset unpacked by hand), which is trusted as it is."""
    if not (Path(path) / MANIFEST).is_file():
        log.info("%s was not made by cnnscope (no %s); using it as it is", path, MANIFEST)
        return None
    return verify(path, step)


def _replace(work: Path, path: Path) -> None:
    """Seal ``work`` and put it in place of ``path`` (the step's own previous artifact, if any)."""
    seal(work)
    if path.exists():
        shutil.rmtree(path)
    os.replace(work, path)


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path``, sealed, only if the block finishes."""
    path = Path(path)
    _check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(path):
        tmp = _tmp_sibling(path)
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _replace(tmp, path)


_UNREADABLE = object()  # a fingerprint file that cannot be read: the partial work is not resumed


def _read_stamp(stamp: Path) -> Any:
    try:
        return read_json(stamp)
    except (OSError, UnicodeDecodeError, ValueError):
        return _UNREADABLE


@contextmanager
def resumable_dir(path: str | os.PathLike[str], fingerprint: dict) -> Iterator[tuple[Path, bool]]:
    """Like :func:`atomic_dir`, but the work directory ``.<name>.partial`` survives a crash, so a later
    run with the same ``fingerprint`` resumes in it (``resumed`` is True) instead of starting over.

    A different fingerprint (another config, dataset or weights) discards the partial work.
    """
    path = Path(path)
    _check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.partial"
    stamp = partial / "fingerprint.json"
    with _writer_lock(path):
        earlier = _read_stamp(stamp) if stamp.is_file() else None
        resumed = earlier == json.loads(json.dumps(fingerprint, default=str))
        if not resumed:
            if partial.exists():
                why = "is unreadable" if earlier is _UNREADABLE else "was for other inputs or settings"
                log.info("%s: earlier partial work %s; starting over", path, why)
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            with atomic_file(stamp) as tmp:  # a kill mid-write leaves no stamp, never a broken one
                write_json(tmp, fingerprint)
        try:
            yield partial, resumed
        except BaseException:
            if [p.name for p in partial.iterdir()] == [stamp.name]:  # failed before any work: no debris
                shutil.rmtree(partial, ignore_errors=True)
            raise
        stamp.unlink()
        _replace(partial, path)


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


def save_torch(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` through a Python file: a full or read-only disk then raises an :class:`OSError`
    naming ``path`` (given a path, torch's C++ writer raises an opaque ``RuntimeError``)."""
    import torch  # only the steps that save tensors pay for it

    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON (call inside an atomic directory, or on its own)."""
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_yaml(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as block-style YAML (the resolved config beside each artifact)."""
    Path(path).write_text(yaml.safe_dump(obj, sort_keys=False))


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())
