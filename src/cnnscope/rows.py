"""Stream row ranges of ``.npy`` files with ``pread``/``pwrite`` instead of through a memory map.

Pages of a memory-mapped file count toward the process's resident memory while they stay mapped, so
a memmap read (or written) end to end grows the RSS to the file's size: 9.5 GB for full Broden's
images, 12.7 GB for ResNet-50 ``layer4`` activations. Reading and writing with ``pread``/``pwrite``
leaves that data in the kernel's page cache, which is shared and reclaimable, and keeps the
process's own memory at one batch. Random access elsewhere (report galleries) still uses memmaps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib import format as npy_format
from numpy.lib.format import open_memmap

if TYPE_CHECKING:  # torch is imported when rows are read as tensors, not by steps that only write rows
    import torch


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a C-ordered ``.npy`` file."""
    with open(path, "rb") as f:
        version = npy_format.read_magic(f)
        read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError(f"{path} is Fortran-ordered; rows can only be streamed from C order")
        return tuple(shape), np.dtype(dtype), f.tell()


class _RowFile:
    """Shared geometry of a row-streamed ``.npy`` file: ``shape``, ``dtype``, row size and offset."""

    def __init__(self, path: str | os.PathLike[str], flags: int) -> None:
        self._fd = -1
        self.path = Path(path)
        self.shape, self.dtype, self.offset = _header(self.path)
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, flags)

    def __len__(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RowReader(_RowFile):
    """Read-only rows of a ``.npy`` file: ``reader[a:b]`` is a fresh array, as a memmap slice copied."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, os.O_RDONLY)

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("RowReader reads contiguous row ranges only: reader[a:b]")
        a, b, _ = index.indices(len(self))
        out = np.empty((max(0, b - a), *self.row_shape), self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos, offset = 0, self.offset + a * self.row_bytes
        while pos < len(view):
            got = os.preadv(self._fd, [view[pos:]], offset + pos)
            if got == 0:
                raise OSError(f"{self.path} ends before row {b}: the file is truncated")
            pos += got
        return out


class RowWriter(_RowFile):
    """Rows written in place into a ``.npy`` file of fixed shape, created (zero-filled, sparse) if new.

    ``mode="w"`` creates the file; ``mode="r+"`` reopens one a killed run left (its header must agree).
    """

    def __init__(
        self, path: str | os.PathLike[str], shape: tuple[int, ...], dtype: np.dtype | str, mode: str = "w"
    ) -> None:
        if mode == "w":
            open_memmap(path, "w+", np.dtype(dtype), tuple(shape))  # header and size; unmapped at once
        elif mode != "r+":
            raise ValueError(f"mode must be 'w' or 'r+', got {mode!r}")
        super().__init__(path, os.O_RDWR)
        if self.shape != tuple(shape) or self.dtype != np.dtype(dtype):
            raise ValueError(f"{path} holds {self.dtype} {self.shape}, not {np.dtype(dtype)} {tuple(shape)}")

    def write(self, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` (converted to the file's dtype) at row ``start``."""
        block = np.ascontiguousarray(rows, dtype=self.dtype)
        if block.shape[1:] != self.row_shape or start + len(block) > len(self):
            raise ValueError(f"rows {block.shape} at {start} do not fit {self.path} {self.shape}")
        view = memoryview(block.reshape(-1).view(np.uint8))
        pos, offset = 0, self.offset + start * self.row_bytes
        try:
            while pos < len(view):
                pos += os.pwrite(self._fd, view[pos:], offset + pos)
        except OSError as e:  # a full disk: name the file (pwrite's error names none)
            raise OSError(e.errno, e.strerror, str(self.path)) from e

    def sync(self) -> None:
        """Make what was written durable (survives the node, not only the process, going down)."""
        try:
            os.fdatasync(self._fd)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(self.path)) from e


Rows = np.ndarray | RowReader
"""What the streaming loops read row ranges from: ``rows[a:b]`` is an array either way."""


def read_rows(rows: Rows, start: int, stop: int) -> torch.Tensor:
    """Rows ``[start, stop)`` as a CPU tensor that owns its memory (a read-only memmap slice is copied,
    so no mapped page stays referenced and torch never sees a read-only buffer)."""
    import torch

    block = rows[start:stop]
    if not block.flags.writeable:
        block = np.array(block)
    return torch.from_numpy(block)
