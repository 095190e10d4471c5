"""Step ``formulas``: compositional explanations of a dissected layer's units (Mu & Andreas 2020;
:mod:`cnnscope.formulas`), in the IoU mode the layer was dissected in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import MISSING

from cnnscope.artifacts import DissectArtifact, ExtractArtifact, FormulasArtifact
from cnnscope.bounds import bounded, positive
from cnnscope.data.packed import PackedDataset
from cnnscope.formulas import BEAM_SIZE, MAX_LENGTH, FormulaSearch
from cnnscope.io import read_json, write_json
from cnnscope.progress import track
from cnnscope.rows import RowReader
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import Threaded, register

MATCH = 1e-9  # IoUs closer than this are equal (exact counts; float64 ratios)
STORED = 1e-6  # dissection keeps its IoUs as float32: a single concept's equals them to this


@dataclass
class Config(Threaded):
    activations: str = MISSING  # an extract step's output directory
    dissect: str = MISSING  # the same layer's dissect step output (thresholds, IoU mode, IoUs)
    packed: str = MISSING
    max_length: int = bounded(MAX_LENGTH, 1, 6)  # concepts per formula
    beam_size: int = positive(BEAM_SIZE)
    exhaustive: bool = True  # also the optimal length-2 formula, to count beam search's misses


register("formulas", Config)


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(activations="extract", dissect="dissect", packed="prepare")
    dissected = DissectArtifact(cfg.dissect)
    mode = read_json(dissected.summary)["iou_mode"]
    data = PackedDataset.open(cfg.packed)
    search = FormulaSearch(data, mode, progress=cfg.progress)
    acts = RowReader(ExtractArtifact(cfg.activations).activations)
    units = search.units(acts, np.load(dissected.thresholds), progress=cfg.progress)
    names = search.names
    rows, pairs = [], []
    for u, unit in enumerate(track(units, "formulas", enabled=cfg.progress)):
        best = search.beam(unit, cfg.max_length, cfg.beam_size)
        rows += [
            {
                "unit": u,
                "length": length,
                "formula": s.formula.render(names),
                "iou": s.iou,
                "intersection": s.inter,
                "union": s.union,
            }
            for length, s in sorted(best.items())
        ]
        if cfg.exhaustive and cfg.max_length >= 2:
            optimum, scored = search.best_pair(unit, floor=best[2].iou)
            pairs.append(
                {
                    "unit": u,
                    "beam_formula": best[2].formula.render(names),
                    "beam_iou": best[2].iou,
                    "optimal_formula": optimum.formula.render(names),
                    "optimal_iou": optimum.iou,
                    "beam_missed": best[2].iou < optimum.iou - MATCH,
                    "pairs_scored": scored,
                }
            )
    table = pd.DataFrame(rows)
    _check(table, np.load(dissected.iou), cfg.dissect)
    summary = _summary(table, pd.DataFrame(pairs), len(search.labels), mode)
    with out.write() as tmp:
        made = FormulasArtifact(tmp)
        table.to_csv(made.formulas, index=False)
        if pairs:
            pd.DataFrame(pairs).to_csv(made.pairs, index=False)
        write_json(made.summary, summary)
    out.done(
        "%d units, mean IoU by length %s; best formula compound for %.0f%%; beam search missed the "
        "length-2 optimum for %s",
        summary["units"],
        " / ".join(f"{v:.3f}" for v in summary["mean_iou"].values()),
        100 * summary["compound_share"],
        f"{summary['beam_missed']} units" if pairs else "(not searched)",
    )


def _check(table: pd.DataFrame, dissect_iou: np.ndarray, where: str) -> None:
    """Stop unless every unit's best single concept has dissection's best IoU (one definition, two
    counts: a difference is a bug, not a finding)."""
    single = table[table["length"] == 1].set_index("unit")["iou"]
    expected = dissect_iou.max(0)[single.index]
    worst = float(np.abs(single.to_numpy() - expected).max())
    if not np.isfinite(table["iou"]).all() or worst > STORED:
        raise FloatingPointError(f"single-concept IoUs differ from {where}'s by up to {worst:.3g}")


def _summary(table: pd.DataFrame, pairs: pd.DataFrame, concepts: int, mode: str) -> dict:
    """Mean best IoU per length, the share of units whose best formula (shortest among equals) has
    more than one concept, and beam search's length-2 misses."""
    best = table.sort_values(["unit", "iou", "length"], ascending=[True, False, True]).groupby("unit").head(1)
    return {
        "units": int(table["unit"].nunique()),
        "concepts": concepts,
        "iou_mode": mode,
        "mean_iou": {str(k): float(v) for k, v in table.groupby("length")["iou"].mean().items()},
        "compound_share": float((best["length"] > 1).mean()),
        "beam_missed": int(pairs["beam_missed"].sum()) if len(pairs) else None,
        "beam_missed_share": float(pairs["beam_missed"].mean()) if len(pairs) else None,
        "mean_pairs_scored": float(pairs["pairs_scored"].mean()) if len(pairs) else None,
    }


if __name__ == "__main__":
    run_step("formulas", body)
