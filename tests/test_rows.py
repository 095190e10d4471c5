"""Row streaming of .npy files with pread/pwrite (cnnscope.rows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnscope.rows import RowReader, RowWriter, read_rows


def _mapped(path: Path) -> bool:
    """Whether this process has ``path`` memory-mapped right now."""
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.uint16, np.float32])
def test_reader_slices_equal_numpy_slices(tmp_path, dtype):
    rng = np.random.default_rng(0)
    ref = (rng.random((23, 3, 5, 4)) * 200).astype(dtype)
    np.save(tmp_path / "a.npy", ref)
    rows = RowReader(tmp_path / "a.npy")
    assert (len(rows), rows.shape, rows.dtype) == (23, ref.shape, ref.dtype)
    for a, b in [(0, 23), (0, 1), (5, 12), (20, 40), (22, 23), (7, 7), (30, 35)]:
        got = rows[a:b]
        assert got.dtype == ref.dtype and got.shape == ref[a:b].shape
        np.testing.assert_array_equal(got, ref[a:b])
    got[...] = 0  # a fresh array: writing to it cannot touch the file
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), ref)
    with pytest.raises(TypeError, match="contiguous row ranges"):
        rows[0:10:2]


def test_reader_does_not_map_the_file(tmp_path):
    """Streamed rows live in the page cache, not in this process: the file is never mapped."""
    path = tmp_path / "big.npy"
    np.save(path, np.arange(64 * 1024, dtype=np.float32).reshape(64, 1024))
    mm = np.load(path, mmap_mode="r")
    assert _mapped(path)  # the control: a memmap is in /proc/self/maps
    del mm
    assert not _mapped(path)
    rows = RowReader(path)
    total = sum(float(read_rows(rows, a, a + 8).sum()) for a in range(0, 64, 8))
    assert total == float(np.arange(64 * 1024, dtype=np.float64).sum())
    assert not _mapped(path)


def test_writer_round_trip_and_reopen(tmp_path):
    path = tmp_path / "w.npy"
    ref = np.random.default_rng(1).standard_normal((10, 2, 3)).astype(np.float16)
    w = RowWriter(path, ref.shape, np.float16)
    assert not _mapped(path)
    w.write(0, ref[:4].astype(np.float32))  # converted to the file's dtype
    w.sync()
    w.close()
    w = RowWriter(path, ref.shape, "float16", mode="r+")  # a killed run's file, continued
    w.write(4, ref[4:])
    w.close()
    np.testing.assert_array_equal(np.load(path), ref)
    with pytest.raises(ValueError, match="holds float16"):
        RowWriter(path, (11, 2, 3), np.float16, mode="r+")
    with (
        RowWriter(path, ref.shape, np.float16, mode="r+") as w,
        pytest.raises(ValueError, match="do not fit"),
    ):
        w.write(9, ref[:2])


def test_truncated_and_fortran_files_are_refused(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((8, 100), np.float32))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) - 1000])
    with pytest.raises(OSError, match="truncated"):
        RowReader(tmp_path / "t.npy")[0:8]
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((4, 3))))
    with pytest.raises(ValueError, match="Fortran"):
        RowReader(tmp_path / "f.npy")


def test_read_rows_copies_read_only_memmap_slices(tmp_path):
    np.save(tmp_path / "m.npy", np.arange(12, dtype=np.int32).reshape(6, 2))
    mm = np.load(tmp_path / "m.npy", mmap_mode="r")
    t = read_rows(mm, 2, 4)
    t += 1  # owns its memory: allowed, and the file is untouched
    assert t.tolist() == [[5, 6], [7, 8]]
    assert np.load(tmp_path / "m.npy")[2].tolist() == [4, 5]
