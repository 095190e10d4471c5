"""Resumable, verified download and unpacking of a Broden release.

The archive is fetched into ``<cache>/<name>.zip.part`` with HTTP ``Range`` requests, so an
interrupted download (a dropped connection, a killed job) continues where it stopped. Only a complete
archive whose size (``Content-Length``/``Content-Range``, and ``size_bytes`` when configured), SHA-256
(when configured) and per-member zip CRCs all check out is renamed to ``<name>.zip`` and unpacked;
a corrupt one is deleted, so no later run trusts it. A cached archive is checked the same way, and
an MD5 is checked where only that is published.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from cnnscope.bounds import bounded
from cnnscope.errors import DownloadError
from cnnscope.io import file_digest
from cnnscope.progress import Progress, track

log = logging.getLogger(__name__)
CHUNK = 1 << 20
SHA256 = r"[0-9a-fA-F]{64}"  # what a configured digest must look like
MD5 = r"[0-9a-fA-F]{32}"


@dataclass
class Fetching:
    """How a step fetches and unpacks its archive (part of the download and stimuli steps' configs):
    where the resumable archive is cached, each attempt's timeout, the number of retries, and how many
    times its own size the archive may unpack to (a zip that declares more is refused before anything
    is written: Broden's JPEGs and PNGs barely compress, so a real release unpacks to about 1x)."""

    cache_dir: str = "data/downloads"
    timeout_s: float = bounded(60.0, 0, open_lo=True)
    retries: int = bounded(3, 0)
    max_unpack_ratio: float = bounded(4.0, 1)


def _total_size(resp, offset: int) -> int | None:
    """The full size of the resource, from ``Content-Range`` (206) or ``Content-Length`` (200)."""
    cr = resp.headers.get("Content-Range")
    if cr and "/" in cr and not cr.endswith("/*"):
        return int(cr.rsplit("/", 1)[1])
    cl = resp.headers.get("Content-Length")
    return offset + int(cl) if cl is not None else None


def fetch(
    url: str,
    dest: Path,
    size_bytes: int | None = None,
    sha256: str | None = None,
    timeout_s: float = 60.0,
    retries: int = 3,
    progress: bool = True,
    md5: str | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an earlier attempt. A ``dest``
    already there (the cache) is checked like a fresh download and fetched again if it fails."""
    dest = Path(dest)
    if dest.exists():
        try:
            _verify(dest, url, None, size_bytes, sha256, md5)
            return dest
        except DownloadError as e:
            log.warning("cached archive rejected: %s; downloading it again", e)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    total: int | None = None
    for attempt in range(1, retries + 2):
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                if have and resp.status == 200:  # the server ignored Range: start over
                    log.info("server does not resume; restarting %s", url)
                    have = 0
                    part.unlink()
                total = _total_size(resp, have)
                if size_bytes is not None and total is not None and total != size_bytes:
                    raise DownloadError(
                        f"{url} is {total} bytes but size_bytes={size_bytes} is expected; "
                        "check the dataset config (config/dataset/*.yaml)"
                    )
                with (
                    open(part, "ab") as f,
                    Progress(
                        dest.name,
                        total,
                        enabled=progress,
                        initial=have,
                        unit="B",
                        unit_scale=True,
                    ) as bar,
                ):
                    while block := resp.read(CHUNK):
                        f.write(block)
                        bar.update(len(block))
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to fetch: the part is complete
                total = have
            else:
                raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            log.warning("attempt %d of %s failed: %s", attempt, url, e)
            if attempt > retries:
                raise DownloadError(
                    f"cannot download {url} after {attempt} attempts ({e}). The partial file "
                    f"{part} is kept and a rerun resumes it; or download the file by hand to {dest}."
                ) from e
            continue
        got = part.stat().st_size
        if total is None or got == total:
            break
        log.warning("attempt %d ended at %d of %d bytes; resuming", attempt, got, total)
    else:
        raise DownloadError(f"download of {url} did not complete after {retries + 1} attempts")
    _verify(part, url, total, size_bytes, sha256, md5)
    os.replace(part, dest)
    return dest


def _verify(
    part: Path, url: str, total: int | None, size_bytes: int | None, sha256: str | None, md5: str | None
) -> None:
    """Check size and the configured digests; delete the file if any is wrong."""
    got = part.stat().st_size
    expected = size_bytes if size_bytes is not None else total
    if expected is not None and got != expected:
        part.unlink()
        raise DownloadError(f"{url}: got {got} bytes, expected {expected}; deleted, rerun to retry")
    for name, want, algorithm in (("SHA-256", sha256, "sha256"), ("MD5", md5, "md5")):
        if want and (got_digest := file_digest(part, algorithm)) != want.lower():
            part.unlink()
            raise DownloadError(
                f"{url}: {name} {got_digest} does not match the expected {want}; the corrupt "
                "archive was deleted, rerun to download it again"
            )


class _TooLarge(DownloadError):
    """An archive that would unpack to more than its step allows (kept: the bound is a setting)."""


def _dataset_root(extracted: Path, marker: str) -> Path:
    """The shallowest directory holding ``marker`` (archives wrap everything in ``<name>/``)."""
    hits = sorted(extracted.rglob(marker), key=lambda p: len(p.parts))
    if not hits:
        raise DownloadError(f"the archive has no {marker}; it is not the dataset expected")
    return hits[0].parent


def unpack(
    archive: Path, out: Path, max_ratio: float, progress: bool = True, marker: str = "index.csv"
) -> None:
    """Check the unpacked size and every member's CRC, then unpack into the work directory ``out`` the
    archive's directory that holds ``marker`` (``index.csv`` for Broden, ``stimuli`` for a
    texture-vs-shape checkout).

    The members' declared sizes must sum to at most ``max_ratio`` times the archive's size (checked
    before anything is decompressed; the CRC check then holds each member to its declared size). An
    archive that fails this is refused and kept, since the bound is a setting. One that is not a zip,
    fails a CRC or lacks ``marker`` is deleted (it cannot be trusted); a failure to write
    (permissions, a full disk) is reported as such and keeps the verified archive.
    """
    archive, out = Path(archive), Path(out)
    try:
        if not zipfile.is_zipfile(archive):
            raise DownloadError(f"{archive} is not a zip archive (truncated or corrupt)")
        with zipfile.ZipFile(archive) as zf:
            declared, size = sum(m.file_size for m in zf.infolist()), archive.stat().st_size
            if declared > max_ratio * size:
                raise _TooLarge(
                    f"{archive} would unpack to {declared:,} bytes, {declared / size:.0f}x its size of "
                    f"{size:,} (max_unpack_ratio={max_ratio:g}); nothing was unpacked. If it is the "
                    "dataset you meant, raise max_unpack_ratio for this step"
                )
            bad = zf.testzip()
            if bad is not None:
                raise DownloadError(f"{archive}: member {bad} fails its CRC check")
            members = zf.infolist()
    except _TooLarge:
        raise
    except (zipfile.BadZipFile, DownloadError, EOFError, zlib.error) as e:
        archive.unlink(missing_ok=True)
        why = str(e) if isinstance(e, DownloadError) else f"{archive} is corrupt ({e})"
        raise DownloadError(f"{why}; deleted the archive, rerun to download it again") from e
    try:
        with zipfile.ZipFile(archive) as zf:
            for m in track(members, f"unpack {archive.name}", enabled=progress):
                zf.extract(m, out / "_zip")
        root = _dataset_root(out / "_zip", marker)
        for item in root.iterdir():
            shutil.move(str(item), out / item.name)
        shutil.rmtree(out / "_zip")
    except DownloadError as e:
        archive.unlink(missing_ok=True)
        raise DownloadError(f"{e}; deleted the archive, rerun to download it again") from e
    except OSError as e:
        raise DownloadError(
            f"cannot unpack {archive} into {out}: {e.strerror or e} ({e.filename}). The verified archive "
            "is kept; free space or fix the permissions, then rerun"
        ) from e
