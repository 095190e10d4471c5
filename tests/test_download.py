"""Download and unpack a Broden-format zip served from 127.0.0.1: clean, resumed, corrupt."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
import zipfile
from pathlib import Path

import pytest

from cnnscope.data.broden import BrodenDataset
from cnnscope.data.download import Fetching, fetch, unpack
from cnnscope.errors import DownloadError

RATIO = Fetching().max_unpack_ratio  # the steps' default


class _Server:
    """A loopback HTTP server for one file, honouring Range; can cut the first response short, or
    send slowly (``delay`` seconds per 64 KiB) so a client can be killed mid-download."""

    def __init__(
        self, payload: bytes, cut_first_at: int | None = None, ranges: bool = True, delay: float = 0.0
    ):
        self.payload, self.cut, self.ranges, self.delay = payload, cut_first_at, ranges, delay
        self.requests: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                data, start = outer.payload, 0
                if rng and outer.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut is not None and len(outer.requests) == 1:
                    self.wfile.write(body[: outer.cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                for k in range(0, len(body), 65536):
                    try:
                        self.wfile.write(body[k : k + 65536])
                    except (BrokenPipeError, ConnectionResetError):
                        return  # the client was killed
                    time.sleep(outer.delay)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/broden1_224.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def archive(world, tmp_path_factory) -> bytes:
    """The synthetic world zipped as Broden's zips are: everything under ``broden1_224/``."""
    path = tmp_path_factory.mktemp("zip") / "broden1_224.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(world.rglob("*")):
            if f.is_file():
                zf.write(f, Path("broden1_224") / f.relative_to(world))
    return path.read_bytes()


def test_clean_download_unpacks_a_readable_dataset(archive, tmp_path):
    digest = hashlib.sha256(archive).hexdigest()
    with _Server(archive) as srv:
        zp = fetch(
            srv.url,
            tmp_path / "dl" / "broden1_224.zip",
            size_bytes=len(archive),
            sha256=digest,
            progress=False,
        )
    assert zp.read_bytes() == archive
    out = tmp_path / "broden1_224"
    unpack(zp, out, RATIO, progress=False)
    assert len(BrodenDataset(out)) == 60
    assert srv.requests == [None]


def test_interrupted_download_resumes_with_range(archive, tmp_path):
    half = len(archive) // 2
    with _Server(archive, cut_first_at=half) as srv:
        zp = fetch(srv.url, tmp_path / "broden1_224.zip", retries=2, progress=False)
    assert zp.read_bytes() == archive
    assert srv.requests[0] is None
    assert srv.requests[1] == f"bytes={half}-"


def test_partial_file_from_a_killed_run_is_resumed(archive, tmp_path):
    dest = tmp_path / "broden1_224.zip"
    dest.with_name(dest.name + ".part").write_bytes(archive[:1000])
    with _Server(archive) as srv:
        fetch(srv.url, dest, progress=False)
    assert dest.read_bytes() == archive and srv.requests == ["bytes=1000-"]


def test_server_without_range_support_restarts_cleanly(archive, tmp_path):
    dest = tmp_path / "broden1_224.zip"
    dest.with_name(dest.name + ".part").write_bytes(b"stale bytes")
    with _Server(archive, ranges=False) as srv:
        fetch(srv.url, dest, progress=False)
    assert dest.read_bytes() == archive


def test_checksum_mismatch_deletes_the_archive(archive, tmp_path):
    dest = tmp_path / "broden1_224.zip"
    with _Server(archive) as srv, pytest.raises(DownloadError, match="SHA-256 .* does not match"):
        fetch(srv.url, dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_size_mismatch_is_refused_before_downloading(archive, tmp_path):
    with _Server(archive) as srv, pytest.raises(DownloadError, match="size_bytes=5"):
        fetch(srv.url, tmp_path / "x.zip", size_bytes=5, progress=False)


def test_corrupt_archive_fails_its_crc_and_leaves_nothing(archive, tmp_path):
    bad = bytearray(archive)
    with zipfile.ZipFile(__import__("io").BytesIO(archive)) as zf:
        info = zf.getinfo("broden1_224/index.csv")
    pos = info.header_offset + 30 + len(info.filename) + 5  # inside the member's data
    bad[pos] ^= 0xFF
    zp = tmp_path / "broden1_224.zip"
    zp.write_bytes(bytes(bad))
    with pytest.raises(DownloadError, match="corrupt|CRC"):
        unpack(zp, tmp_path / "broden1_224", RATIO, progress=False)
    assert not (tmp_path / "broden1_224").exists()
    assert not zp.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_truncated_archive_is_not_a_zip(archive, tmp_path):
    zp = tmp_path / "broden1_224.zip"
    zp.write_bytes(archive[: len(archive) // 3])
    with pytest.raises(DownloadError, match="not a zip archive"):
        unpack(zp, tmp_path / "out", RATIO, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_cached_archive_is_checked_and_fetched_again_when_its_digest_differs(archive, tmp_path):
    cached = tmp_path / "broden1_224.zip"
    cached.write_bytes(b"not the archive")
    digest = hashlib.sha256(archive).hexdigest()
    with _Server(archive) as srv:
        assert fetch(srv.url, cached, sha256=digest, progress=False).read_bytes() == archive
        assert srv.requests == [None]
        fetch(srv.url, cached, sha256=digest, progress=False)  # now cached and right
        assert srv.requests == [None]


def test_a_write_error_while_unpacking_keeps_the_verified_archive(archive, tmp_path):
    zp = tmp_path / "broden1_224.zip"
    zp.write_bytes(archive)
    out = tmp_path / "work"
    out.mkdir()
    (out / "_zip").write_text("a file where a directory must go")  # writing fails, as on a full disk
    with pytest.raises(DownloadError, match="cannot unpack .* The verified archive is kept"):
        unpack(zp, out, RATIO, progress=False)
    assert zp.read_bytes() == archive


def test_an_md5_pin_is_checked(archive, tmp_path):
    dest = tmp_path / "broden1_224.zip"
    with _Server(archive) as srv:
        with pytest.raises(DownloadError, match="MD5 .* does not match"):
            fetch(srv.url, dest, md5="0" * 32, progress=False)
        assert not dest.exists()
        fetch(srv.url, dest, md5=hashlib.md5(archive).hexdigest(), progress=False)
    assert dest.read_bytes() == archive


def test_an_archive_declaring_far_more_than_its_size_is_refused_before_writing(archive, tmp_path):
    """A zip bomb: 64 MiB of zeros in about 64 KiB. Refused from its declared sizes alone, in one line,
    and kept (the bound is a setting: a user who meant it raises max_unpack_ratio)."""
    zp = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("broden1_224/index.csv", "image,split,ih,iw,sh,sw\n")
        zf.writestr("broden1_224/zeros.bin", bytes(64 << 20))
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match=r"would unpack to 67,108,\d+ bytes, \d+x its size") as e:
        unpack(zp, out, RATIO, progress=False)
    assert "max_unpack_ratio=4" in str(e.value) and "\n" not in str(e.value)
    assert not out.exists() and zp.is_file()
    real = tmp_path / "broden1_224.zip"
    real.write_bytes(archive)
    with zipfile.ZipFile(real) as zf:
        ratio = sum(m.file_size for m in zf.infolist()) / len(archive)
    assert ratio < RATIO  # the Broden-format world itself passes
    unpack(real, tmp_path / "ok", RATIO, progress=False)
    assert len(BrodenDataset(tmp_path / "ok")) == 60
