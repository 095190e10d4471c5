"""Streaming per-unit quantiles against numpy's exact quantile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnscope.dissection import unit_thresholds
from cnnscope.quantile import HistogramQuantile, TopKQuantile


@pytest.mark.parametrize(
    "n,level,chunk",
    [(1000, 0.995, 97), (5, 0.5, 2), (4000, 0.9, 4000), (777, 0.995, 1), (10, 1.0, 3), (10, 0.0, 3)],
)
def test_topk_equals_numpy_quantile(n, level, chunk):
    rng = np.random.default_rng(n)
    data = rng.standard_normal((6, n)).astype(np.float32)
    data[0] = np.round(data[0], 1)  # ties
    q = TopKQuantile(6, n, level)
    for a in range(0, n, chunk):
        q.add(torch.from_numpy(data[:, a : a + chunk]))
    want = np.quantile(data.astype(np.float64), level, axis=1)
    np.testing.assert_allclose(q.result().numpy(), want, rtol=1e-6, atol=1e-6)


def test_topk_keeps_only_k_values_and_resumes_from_state():
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.random((3, 2000), np.float32))
    q = TopKQuantile(3, 2000, 0.995)
    assert q.k == 2000 - int(0.995 * 1999)  # 11 largest values suffice
    q.add(data[:, :1000])
    state = q.state_dict()
    r = TopKQuantile(3, 2000, 0.995)
    r.load_state_dict(state)
    r.add(data[:, 1000:])
    q.add(data[:, 1000:])
    assert torch.equal(q.result(), r.result())
    assert q.buf.shape[1] < 2 * q.k + 1000


def test_topk_refuses_the_wrong_number_of_values():
    q = TopKQuantile(1, 10, 0.9)
    q.add(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="saw 5 of 10"):
        q.result()


def test_histogram_quantile_is_within_its_bound():
    rng = np.random.default_rng(1)
    data = np.concatenate([rng.exponential(1.0, (4, 50_000)), rng.normal(0, 3, (1, 50_000))])
    data = data.astype(np.float32)
    lo, hi = torch.from_numpy(data.min(1)), torch.from_numpy(data.max(1))
    for bins in (64, 1024):
        q = HistogramQuantile(lo, hi, 50_000, 0.995, bins=bins)
        for a in range(0, 50_000, 7_000):
            q.add(torch.from_numpy(data[:, a : a + 7_000]))
        err = np.abs(q.result().numpy() - np.quantile(data, 0.995, axis=1))
        bound = q.error_bound.numpy()
        assert np.all(err <= bound + 1e-6), (err, bound)
    assert np.all(err < 0.2 * (hi - lo).numpy() / 64)  # and far tighter than the bound in practice


def test_unit_thresholds_switches_method_by_memory_budget():
    rng = np.random.default_rng(2)
    acts = rng.random((20, 3, 4, 4)).astype(np.float16)
    exact, method, err = unit_thresholds(acts, 0.1, progress=False)
    want = np.quantile(acts.astype(np.float32).transpose(1, 0, 2, 3).reshape(3, -1), 0.9, axis=1)
    np.testing.assert_allclose(exact, want, rtol=1e-6)
    assert (method, err) == ("exact", 0.0)
    flat = acts.astype(np.float32).transpose(1, 0, 2, 3).reshape(3, -1)
    rng_arr = np.stack([flat.min(1), flat.max(1)])
    approx, method, err = unit_thresholds(acts, 0.1, rng_arr, memory_budget=10, progress=False)
    assert method == "histogram" and 0 < err < 1e-3
    assert np.all(np.abs(approx - want) <= err + 1e-6)
