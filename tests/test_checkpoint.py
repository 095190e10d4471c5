"""Thresholds and the tally resume from their checkpoints and end with the same bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnscope.checkpoint import Checkpoint
from cnnscope.data.packed import PackedDataset
from cnnscope.dissection import tally, unit_thresholds


class _Dies:
    """Rows that raise after ``budget`` reads (a job killed mid-loop), and count the rows read."""

    def __init__(self, arr: np.ndarray, budget: int | None = None) -> None:
        self.arr, self.budget, self.rows_read = arr, budget, 0
        self.shape = arr.shape

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, index: slice) -> np.ndarray:
        if self.budget is not None:
            if self.budget == 0:
                raise KeyboardInterrupt("killed")
            self.budget -= 1
        out = self.arr[index]
        self.rows_read += len(out)
        return out


def _data(n: int) -> tuple[np.ndarray, PackedDataset]:
    rng = np.random.default_rng(3)
    acts = rng.gamma(1.0, 1.0, (n, 6, 4, 4)).astype(np.float16)
    masks = (rng.integers(1, 8, (n, 2, 8, 8)) * (rng.random((n, 2, 8, 8)) < 0.3)).astype(np.uint16)
    scalars = rng.integers(8, 10, (n, 1)).astype(np.int32)
    cats = ["color", "object", "scene"]
    labels = [
        {"number": i, "name": f"l{i}", "primary": cats[min(i // 4, 2)], "categories": []}
        for i in range(1, 10)
    ]
    meta = {"n_images": n, "mask_size": [8, 8], "image_size": [16, 16], "categories": cats, "labels": labels}
    return acts, PackedDataset(Path("."), meta, np.zeros((n, 16, 16, 3), np.uint8), masks, scalars)


@pytest.mark.parametrize("budget", [1, 4, 9])
def test_thresholds_resume_where_the_killed_run_stopped(tmp_path, budget):
    acts, _ = _data(40)
    ref, _, _ = unit_thresholds(acts, 0.05, batch_size=4, progress=False)
    ckpt = tmp_path / "q.ckpt"
    with pytest.raises(KeyboardInterrupt):
        unit_thresholds(
            _Dies(acts, budget), 0.05, batch_size=4, progress=False, checkpoint=Checkpoint(ckpt, 0)
        )
    saved = Checkpoint(ckpt).load()["image"]
    assert saved == 4 * budget
    again = _Dies(acts)
    got, _, _ = unit_thresholds(again, 0.05, batch_size=4, progress=False, checkpoint=Checkpoint(ckpt, 0))
    assert again.rows_read == 40 - saved  # resumed, not restarted
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("budget", [1, 5])
def test_tally_resumes_and_counts_equal_an_uninterrupted_run(tmp_path, budget):
    acts, data = _data(30)
    thr, _, _ = unit_thresholds(acts, 0.1, progress=False)
    ref = tally(acts, thr, data, batch_size=3, progress=False)
    ckpt = tmp_path / "t.ckpt"
    with pytest.raises(KeyboardInterrupt):
        tally(_Dies(acts, budget), thr, data, batch_size=3, progress=False, checkpoint=Checkpoint(ckpt, 0))
    assert Checkpoint(ckpt).load()["image"] == 3 * budget
    again = _Dies(acts)
    got = tally(again, thr, data, batch_size=3, progress=False, checkpoint=Checkpoint(ckpt, 0))
    assert again.rows_read == 30 - 3 * budget
    for field in ("both", "labels", "units_cat_paper", "units_cat_lite"):
        np.testing.assert_array_equal(getattr(got, field), getattr(ref, field), err_msg=field)
    assert ref.both.sum() > 0 and ref.units_cat_lite.sum() > 0


def test_no_checkpoint_file_means_a_fresh_start(tmp_path):
    assert Checkpoint(tmp_path / "none.ckpt").load() is None
    acts, _ = _data(8)
    ckpt = Checkpoint(tmp_path / "c.ckpt", every_s=3600)  # never due: nothing written
    unit_thresholds(acts, 0.05, batch_size=2, progress=False, checkpoint=ckpt)
    assert not ckpt.path.exists()
