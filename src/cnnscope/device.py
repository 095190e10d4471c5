"""Which torch device a step runs on, and which GPU when a workstation has several.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once, but it does not tell a job *which*
GPU to use, so without help every job would land on ``cuda:0``. :func:`pick_device` therefore claims a
GPU for its process when it resolves to a plain ``cuda`` and more than one GPU is visible: it takes the
lowest-numbered GPU that no other cnnscope process holds, marked by an exclusive ``flock`` on one lock
file per GPU. The lock is kept for the life of the process; the OS drops a flock when its process exits
or is killed, so a crashed job never leaves a stale claim behind.

Environment:

``CNNSCOPE_GPU_LOCK_DIR``
    Directory of the per-GPU lock files. Default: ``cnnscope-gpu-<uid>`` under the system temporary
    directory (one per user). Every process that should share out the same GPUs must see the same
    directory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cnnscope.errors import CnnscopeError

if TYPE_CHECKING:  # torch is imported where a device is picked: `cnnscope run` counts GPUs without it
    import torch

log = logging.getLogger("cnnscope")

#: One entry per NVIDIA GPU the driver knows; read by :func:`gpu_count` (tests point it elsewhere).
NVIDIA_GPUS_DIR = Path("/proc/driver/nvidia/gpus")
#: Environment variable that overrides :func:`gpu_lock_dir`.
LOCK_DIR_ENV = "CNNSCOPE_GPU_LOCK_DIR"

# The GPU this process has claimed: (lock directory, index, open lock file). Holding the open file keeps
# the flock; it is closed only by release_gpu() or by the process ending.
_claim: tuple[Path, int, IO[str]] | None = None


def _visible_devices() -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES up to the first invalid (negative) one, as CUDA reads it;
    None when the variable is unset."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    entries = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return entries


def gpu_count() -> int:
    """How many GPUs this process may use, found without importing or initialising CUDA.

    ``cnnscope run`` calls this before Snakemake starts, to set ``--resources gpu=N``, so it must be
    cheap: it reads CUDA_VISIBLE_DEVICES when set (``""`` or ``"-1"`` -> 0), else counts the entries of
    :data:`NVIDIA_GPUS_DIR` (0 when there is no NVIDIA driver)."""
    visible = _visible_devices()
    if visible is not None:
        return len(visible)
    try:
        return sum(1 for _ in NVIDIA_GPUS_DIR.iterdir())
    except OSError:
        return 0


def gpu_lock_dir() -> Path:
    """Where the per-GPU lock files live: $CNNSCOPE_GPU_LOCK_DIR, else a per-user directory under the
    system temporary directory (per user so that one user's directory never blocks another's)."""
    override = os.environ.get(LOCK_DIR_ENV)
    if override:
        return Path(override)
    return Path(tempfile.gettempdir()) / f"cnnscope-gpu-{os.getuid()}"


def _lock_name(index: int) -> str:
    """The lock file of visible GPU ``index``: named after its CUDA_VISIBLE_DEVICES entry when there is
    one (so processes that see different subsets of the GPUs still lock the same physical device),
    else after the index."""
    visible = _visible_devices()
    name = visible[index] if visible is not None and index < len(visible) else str(index)
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".lock"


def release_gpu() -> None:
    """Give up this process's GPU claim, if any (the process ending does the same)."""
    global _claim
    if _claim is not None:
        _claim[2].close()
        _claim = None


def claim_gpu(count: int) -> int:
    """Claim one of ``count`` visible GPUs for this process and return its index.

    Takes the lowest index whose lock file no other process holds (exclusive, non-blocking ``flock``)
    and keeps it until the process ends; calling again returns the same index. When every GPU is held,
    which Snakemake's ``gpu`` resource normally prevents, it warns and returns 0 rather than wait."""
    global _claim
    lock_dir = gpu_lock_dir()
    if _claim is not None:
        if _claim[0] == lock_dir and _claim[1] < count:
            return _claim[1]
        release_gpu()
    try:
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("cannot create GPU lock directory %s (%s): using cuda:0", lock_dir, exc)
        return 0
    for index in range(count):
        path = lock_dir / _lock_name(index)
        try:
            handle = open(path, "a+")  # noqa: SIM115 - held open for the life of the process
        except OSError as exc:
            log.warning("cannot open GPU lock file %s (%s)", path, exc)
            continue
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()  # held by another process
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")  # who holds it, for whoever looks
        handle.flush()
        _claim = (lock_dir, index, handle)
        return index
    log.warning(
        "all %d GPUs are claimed by other cnnscope processes (locks in %s): sharing cuda:0",
        count,
        lock_dir,
    )
    return 0


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU; a GPU asked for must be there.

    A plain ``cuda`` (from ``auto`` or ``cuda`` with no index) with more than one GPU visible claims a
    free GPU for this process (:func:`claim_gpu`) and makes it the current device, so concurrent jobs
    spread over the GPUs; an explicit index such as ``cuda:1`` is used as given, without a claim."""
    import torch

    if requested == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = torch.device("cuda")
    else:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise CnnscopeError(f"device={requested} but no GPU is visible: use device=auto or device=cpu")
    if device.type == "cuda" and device.index is None:
        count = torch.cuda.device_count()
        if count > 1:
            index = claim_gpu(count)
            torch.cuda.set_device(index)
            return torch.device(f"cuda:{index}")
    return device
