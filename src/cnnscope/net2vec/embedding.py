"""What the concept x unit weight matrix says: how many units a concept needs, and which concepts
are alike (Fong & Vedaldi 2018, sections 4.2 and 4.4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def top_k(weight: torch.Tensor, k: int) -> torch.Tensor:
    """``weight`` ``(L, K)`` with all but each row's ``k`` largest ``|w|`` set to zero (``k >= K``
    keeps every unit)."""
    if k >= weight.shape[1]:
        return weight.clone()
    keep = weight.abs().topk(k, dim=1).indices
    return torch.zeros_like(weight).scatter(1, keep, weight.gather(1, keep))


def units_for_mass(weight: np.ndarray, share: float = 0.8) -> np.ndarray:
    """Per concept, the fewest units whose ``|w|`` sum to at least ``share`` of the row's total (0 for
    a row of zeros)."""
    a = -np.sort(-np.abs(weight), axis=1)
    total = a.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, np.cumsum(a, 1) / total, 1.0)
    # a small tolerance keeps a share reached exactly (1 unit of 4 equal ones is 0.25) from rounding up
    need = (frac < share - 1e-6).sum(1) + 1
    return np.where(total[:, 0] > 0, need, 0)


def nearest(weight: np.ndarray, names: list[str], n: int = 3) -> pd.DataFrame:
    """Each concept's ``n`` nearest other concepts by cosine similarity of their embeddings."""
    norm = np.linalg.norm(weight, axis=1, keepdims=True)
    unit = weight / np.where(norm > 0, norm, 1)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    n = min(n, len(names) - 1)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :n]
    rows = [
        {"concept": names[i], "rank": r + 1, "neighbour": names[j], "cosine": float(sim[i, j])}
        for i in range(len(names))
        for r, j in enumerate(order[i])
    ]
    return pd.DataFrame(rows, columns=["concept", "rank", "neighbour", "cosine"])
