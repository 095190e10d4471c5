"""Step ``dissect``: thresholds, IoU tally and per-unit labels for one layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import MISSING

from cnnscope.artifacts import DissectArtifact, ExtractArtifact
from cnnscope.bounds import bounded, choice, positive
from cnnscope.checkpoint import Checkpoint
from cnnscope.data.packed import PackedDataset
from cnnscope.device import pick_device
from cnnscope.dissection import (
    IOU_MODES,
    MEMORY_BUDGET_MB,
    Tally,
    dead_units,
    summarize,
    tally,
    unique_detectors,
    unit_thresholds,
)
from cnnscope.io import atomic_file, read_json, write_json
from cnnscope.rotation import RotatedRows, random_rotation, rotated_range
from cnnscope.rows import RowReader, Rows
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, Resumable, register

IouMode = choice("IouMode", IOU_MODES)


@dataclass
class Config(OnDevice, Resumable):
    activations: str = MISSING  # an extract step's output directory
    packed: str = MISSING
    quantile: float = bounded(0.005, 0, 1, open_lo=True, open_hi=True)  # top fraction that is "on"
    iou_mode: IouMode = IouMode.paper  # paper (original NetDissect) | lite (NetDissect-Lite)
    detector_iou: float = bounded(0.04, 0, 1, open_hi=True)  # a unit whose best IoU exceeds it
    batch_size: int = bounded(0, 0)  # tally batch; 0: sized from max_elements
    max_elements: int = bounded(0, 0)  # activations / mask pixels per batch; 0: 4M on a CPU, 64M on a GPU
    memory_budget_mb: int = positive(MEMORY_BUDGET_MB)  # exact quantile buffer limit, else histogram
    # Also dissect the layer in a random orthogonal basis from this seed (Bau et al. 2017, §3.2).
    rotation_seed: int | None = bounded(None, 0)


register("dissect", Config)


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(activations="extract", packed="prepare")
    data = PackedDataset.open(cfg.packed)
    device = pick_device(cfg.device)
    out.identify(device=str(device))
    extracted = ExtractArtifact(cfg.activations)
    acts, unit_range = RowReader(extracted.activations), np.load(extracted.unit_range)
    with out.write(resumable=True) as tmp:
        summary = _dissect(cfg, acts, unit_range, data, device, tmp, dead=int(dead_units(unit_range).sum()))
        rotated = ""
        if cfg.rotation_seed is not None:
            rotation = random_rotation(acts.shape[1], cfg.rotation_seed)
            work = DissectArtifact(tmp).rotated
            work.path.mkdir(exist_ok=True)
            np.save(work.rotation, rotation)
            turned = RotatedRows(acts, rotation)
            found = _dissect(cfg, turned, rotated_range(unit_range, rotation), data, device, work.path)
            rotated = f"; {found['detectors']} in a random basis"
    out.done(
        "%d of %d units are detectors (IoU > %s, %s mode), %d dead%s",
        summary["detectors"],
        summary["units"],
        cfg.detector_iou,
        cfg.iou_mode,
        summary["dead_units"],
        rotated,
    )


def _dissect(
    cfg: Config,
    acts: Rows,
    unit_range: np.ndarray,
    data: PackedDataset,
    device: torch.device,
    work: Path,
    dead: int | None = None,
) -> dict:
    """Thresholds, tally and tables of ``acts`` into the folder ``work`` (resuming the work a killed
    run left there); returns the summary (with ``dead``, the count of dead units, in the units' own
    basis: a rotated unit mixes them)."""
    made = DissectArtifact(work)
    if made.summary.is_file():  # a killed run finished this basis (the summary is written last)
        made.thresholds_done.unlink(missing_ok=True)
        return read_json(made.summary)
    thresholds, method, err = _thresholds(cfg, acts, unit_range, device, work)
    counts = tally(
        acts,
        thresholds,
        data,
        batch_size=cfg.batch_size,
        device=device,
        max_elements=cfg.max_elements,
        progress=cfg.progress,
        checkpoint=Checkpoint(work / "tally.ckpt", cfg.checkpoint_s),
    )
    (work / "tally.ckpt").unlink(missing_ok=True)
    return _write(cfg, work, data, thresholds, method, err, counts, device, dead)


def _thresholds(
    cfg: Config, acts: Rows, unit_range: np.ndarray, device: torch.device, tmp: Path
) -> tuple[np.ndarray, str, float]:
    """The units' thresholds: computed (resuming from a checkpoint) or, on resume, the saved ones."""
    made = DissectArtifact(tmp)
    done = made.thresholds_done
    if done.is_file():
        saved = read_json(done)
        return np.load(made.thresholds), saved["method"], saved["max_error"]
    ckpt = Checkpoint(tmp / "thresholds.ckpt", cfg.checkpoint_s)
    thresholds, method, err = unit_thresholds(
        acts,
        cfg.quantile,
        unit_range,
        device=device,
        memory_budget=cfg.memory_budget_mb << 20,
        max_elements=cfg.max_elements,
        progress=cfg.progress,
        checkpoint=ckpt,
    )
    np.save(made.thresholds, thresholds)
    with atomic_file(done) as t:
        write_json(t, {"method": method, "max_error": err})
    ckpt.path.unlink(missing_ok=True)
    return thresholds, method, err


def _write(
    cfg: Config,
    tmp: Path,
    data: PackedDataset,
    thresholds: np.ndarray,
    method: str,
    err: float,
    counts: Tally,
    device: torch.device,
    dead: int | None,
) -> dict:
    """The step's tables and arrays, into the work directory that becomes the artifact."""
    iou = counts.iou(cfg.iou_mode)
    units = summarize(iou, data.label_names(), counts.label_category, counts.categories, cfg.detector_iou)
    detectors = unique_detectors(units, counts.categories, cfg.detector_iou)
    made = DissectArtifact(tmp)
    units.to_csv(made.units, index=False)
    detectors.to_csv(made.detectors, index=False)
    np.save(made.iou, iou.astype(np.float32))
    np.savez_compressed(
        made.tally,
        both=counts.both,
        labels=counts.labels,
        units_cat_paper=counts.units_cat_paper,
        units_cat_lite=counts.units_cat_lite,
    )
    summary = {
        "units": len(units),
        "detectors": int(units["detector"].sum()),
        "threshold_method": method,
        "threshold_max_error": err,
        "iou_mode": cfg.iou_mode,
        "quantile": cfg.quantile,
        "device": str(device),
        **({"dead_units": dead} if dead is not None else {}),
    }
    with atomic_file(made.summary) as t:
        write_json(t, summary)
    made.thresholds_done.unlink()
    return summary


if __name__ == "__main__":
    run_step("dissect", body)
