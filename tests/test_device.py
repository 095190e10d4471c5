"""Device choice: counting GPUs without CUDA, and spreading concurrent processes over GPUs by flock."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from cnnscope import device as dev
from cnnscope.errors import CnnscopeError

# Claims a GPU out of argv[1], prints its index, and holds the claim until stdin closes.
HOLDER = """
import sys
from cnnscope.device import claim_gpu
print(claim_gpu(int(sys.argv[1])), flush=True)
sys.stdin.read()
"""


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch):
    """Every test locks in its own directory and leaves no claim behind in this process."""
    path = tmp_path / "locks"
    monkeypatch.setenv(dev.LOCK_DIR_ENV, str(path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    dev.release_gpu()
    yield path
    dev.release_gpu()


def start_holder(count: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),  # carries CNNSCOPE_GPU_LOCK_DIR
    )


def claimed(proc: subprocess.Popen) -> int:
    line = proc.stdout.readline()
    assert line, f"holder exited without claiming (rc={proc.wait()})"
    return int(line)


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.stdin.close()
    for proc in procs:
        assert proc.wait(timeout=60) == 0
        proc.stdout.close()


@pytest.mark.parametrize(("value", "expected"), [("0,2,3", 3), ("", 0), ("-1", 0), ("1", 1), ("1,-1,2", 1)])
def test_gpu_count_follows_cuda_visible_devices(monkeypatch, tmp_path, value, expected):
    gpus = tmp_path / "gpus"
    for i in range(4):
        (gpus / f"0000:0{i}:00.0").mkdir(parents=True)
    monkeypatch.setattr(dev, "NVIDIA_GPUS_DIR", gpus)  # ignored while the variable is set
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert dev.gpu_count() == expected


def test_gpu_count_reads_the_driver_directory(monkeypatch, tmp_path):
    gpus = tmp_path / "gpus"
    for i in range(4):
        (gpus / f"0000:0{i}:00.0").mkdir(parents=True)
    monkeypatch.setattr(dev, "NVIDIA_GPUS_DIR", gpus)
    assert dev.gpu_count() == 4
    monkeypatch.setattr(dev, "NVIDIA_GPUS_DIR", tmp_path / "absent")
    assert dev.gpu_count() == 0


def test_gpu_count_does_not_initialise_cuda():
    code = (
        "import sys; from cnnscope.device import gpu_count; gpu_count(); "
        "import torch; sys.exit(int(torch.cuda.is_initialized()))"
    )
    assert subprocess.run([sys.executable, "-c", code], env=os.environ.copy()).returncode == 0


def test_concurrent_processes_claim_different_gpus_and_release_on_exit(lock_dir):
    a, b = start_holder(2), start_holder(2)
    try:
        assert sorted([claimed(a), claimed(b)]) == [0, 1]
    finally:
        stop(a, b)
    assert dev.claim_gpu(2) == 0  # both locks went with their processes


def test_killed_holder_leaves_no_stale_lock(lock_dir):
    a = start_holder(2)
    assert claimed(a) == 0
    assert dev.claim_gpu(2) == 1
    dev.release_gpu()
    a.kill()
    a.wait(timeout=60)
    a.stdin.close()
    a.stdout.close()
    assert dev.claim_gpu(2) == 0


def test_claimant_beyond_the_gpus_falls_back_to_cuda0_with_a_warning(lock_dir, caplog):
    a, b = start_holder(2), start_holder(2)
    try:
        assert sorted([claimed(a), claimed(b)]) == [0, 1]
        with caplog.at_level(logging.WARNING, logger="cnnscope"):
            assert dev.claim_gpu(2) == 0
        assert any("all 2 GPUs are claimed" in r.getMessage() for r in caplog.records)
    finally:
        stop(a, b)


def test_claim_is_kept_for_the_process(lock_dir):
    first = dev.claim_gpu(3)
    assert dev.claim_gpu(3) == first == 0
    other = start_holder(3)
    try:
        assert claimed(other) == 1
    finally:
        stop(other)


def test_locks_follow_physical_gpus_under_cuda_visible_devices(lock_dir, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    holder = start_holder(2)  # takes physical GPU 2 as its index 0
    try:
        assert claimed(holder) == 0
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")
        assert dev.claim_gpu(2) == 0  # index 0 is GPU 3 here, which is free
        assert sorted(p.name for p in lock_dir.iterdir()) == ["2.lock", "3.lock"]
    finally:
        stop(holder)


def test_pick_device_without_a_gpu():
    assert not torch.cuda.is_available()
    assert dev.pick_device("auto") == torch.device("cpu")
    assert dev.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(CnnscopeError, match="no GPU is visible"):
        dev.pick_device("cuda")
    with pytest.raises(CnnscopeError):
        dev.pick_device("cuda:1")


@pytest.fixture
def fake_gpus(monkeypatch):
    """Pretend torch sees two GPUs; record set_device calls."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    return current


def test_pick_device_claims_a_gpu_when_there_are_several(fake_gpus, lock_dir):
    holder = start_holder(2)
    try:
        assert claimed(holder) == 0
        assert dev.pick_device("auto") == torch.device("cuda:1")
        assert dev.pick_device("cuda") == torch.device("cuda:1")
        assert fake_gpus == [1, 1]
    finally:
        stop(holder)


def test_pick_device_explicit_index_takes_no_lock(fake_gpus, lock_dir):
    assert dev.pick_device("cuda:1") == torch.device("cuda:1")
    assert fake_gpus == []
    assert not lock_dir.exists()


def test_pick_device_single_gpu_is_left_alone(fake_gpus, lock_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert dev.pick_device("auto") == torch.device("cuda")
    assert fake_gpus == []
    assert not lock_dir.exists()
