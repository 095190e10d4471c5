"""The random-rotation baseline (Bau et al. 2017, §3.2): a seeded Haar-random orthogonal basis, the
activations seen in it batch by batch, and dissection run on them unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from test_dissection import _toy

from cnnscope.dissection import tally, unit_thresholds
from cnnscope.rotation import RotatedRows, random_rotation, rotated_range


def test_the_rotation_is_orthogonal_and_seeded():
    q = random_rotation(64, seed=3)
    np.testing.assert_allclose(q @ q.T, np.eye(64), atol=1e-12)
    np.testing.assert_allclose(q.T @ q, np.eye(64), atol=1e-12)
    assert np.array_equal(q, random_rotation(64, seed=3))
    assert not np.allclose(q, random_rotation(64, seed=4))
    # Haar: the diagonal carries no sign bias (QR alone would make every R diagonal positive)
    signs = [np.sign(np.linalg.det(random_rotation(6, s))) for s in range(40)]
    assert 5 < signs.count(1.0) < 35


def test_rotated_rows_are_the_rotated_activations_within_the_rotated_range():
    rng = np.random.default_rng(0)
    acts = rng.standard_normal((7, 5, 3, 2)).astype(np.float16)
    q = random_rotation(5, seed=1)
    rows = RotatedRows(acts, q)
    want = np.einsum("ij,njhw->nihw", q, acts.astype(np.float64))
    assert rows.shape == acts.shape and len(rows) == 7
    np.testing.assert_allclose(rows[2:6], want[2:6], rtol=1e-5, atol=1e-5)
    bounds = rotated_range(np.stack([acts.min((0, 2, 3)), acts.max((0, 2, 3))]), q)
    assert (want.min((0, 2, 3)) >= bounds[0] - 1e-5).all() and (want.max((0, 2, 3)) <= bounds[1] + 1e-5).all()
    with pytest.raises(ValueError, match="must be square"):
        RotatedRows(acts, np.eye(4))


def test_a_permutation_basis_permutes_the_dissection():
    """A rotation that only swaps units (and is its own inverse) gives each unit the other's
    thresholds and IoUs: the rotated rows go through thresholds and tally like the real ones."""
    data, one = _toy()
    acts = np.concatenate([one, 1.0 - one], axis=1)  # two units: the toy's, and its complement
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    natural = tally(acts, np.array([0.5, 0.5]), data, progress=False).iou()
    thr, _, _ = unit_thresholds(RotatedRows(acts, swap), 0.4, progress=False)
    np.testing.assert_array_equal(thr, unit_thresholds(acts, 0.4, progress=False)[0][::-1])
    turned = tally(RotatedRows(acts, swap), np.array([0.5, 0.5]), data, progress=False).iou()
    np.testing.assert_array_equal(turned, natural[:, ::-1])
