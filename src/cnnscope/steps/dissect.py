"""Step ``dissect``: thresholds, IoU tally and per-unit labels for one layer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import MISSING

from cnnscope.artifacts import ACTIVATIONS, THRESHOLDS, UNIT_RANGE, UNITS
from cnnscope.bounds import bounded, choice, positive
from cnnscope.checkpoint import Checkpoint
from cnnscope.data.packed import PackedDataset
from cnnscope.device import pick_device
from cnnscope.dissection import (
    IOU_MODES,
    MEMORY_BUDGET_MB,
    Tally,
    summarize,
    tally,
    unique_detectors,
    unit_thresholds,
)
from cnnscope.io import atomic_file, read_json, resumable_dir, verify, write_json, write_yaml
from cnnscope.rows import RowReader
from cnnscope.steps.runner import result_config, run_step
from cnnscope.steps.schema import OnDevice, Resumable, register

log = logging.getLogger("cnnscope")
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


register("dissect", Config)


def body(cfg: dict) -> None:
    src = Path(cfg["activations"])
    fingerprint = {
        "config": result_config(cfg),
        "activations": verify(src, "extract"),
        "packed": verify(cfg["packed"], "prepare"),
    }
    data = PackedDataset.open(cfg["packed"])
    device = pick_device(cfg["device"])
    fingerprint["device"] = str(device)
    acts = RowReader(src / ACTIVATIONS)
    with resumable_dir(cfg["out"], fingerprint) as (tmp, resumed):
        if resumed:
            log.info("dissect: continuing the work a killed run left in %s", tmp)
        thresholds, method, err = _thresholds(cfg, acts, src, device, tmp)
        counts = tally(
            acts,
            thresholds,
            data,
            batch_size=cfg["batch_size"],
            device=device,
            max_elements=cfg["max_elements"],
            progress=cfg["progress"],
            checkpoint=Checkpoint(tmp / "tally.ckpt", cfg["checkpoint_s"]),
        )
        (tmp / "tally.ckpt").unlink(missing_ok=True)
        summary = _write(cfg, tmp, data, thresholds, method, err, counts, device)
    log.info(
        "dissect: %d of %d units are detectors (IoU > %s, %s mode) -> %s",
        summary["detectors"],
        summary["units"],
        cfg["detector_iou"],
        cfg["iou_mode"],
        cfg["out"],
    )


def _thresholds(
    cfg: dict, acts: RowReader, src: Path, device: torch.device, tmp: Path
) -> tuple[np.ndarray, str, float]:
    """The units' thresholds: computed (resuming from a checkpoint) or, on resume, the saved ones."""
    done = tmp / "thresholds.json"
    if done.is_file():
        saved = read_json(done)
        return np.load(tmp / THRESHOLDS), saved["method"], saved["max_error"]
    ckpt = Checkpoint(tmp / "thresholds.ckpt", cfg["checkpoint_s"])
    thresholds, method, err = unit_thresholds(
        acts,
        cfg["quantile"],
        np.load(src / UNIT_RANGE),
        device=device,
        memory_budget=cfg["memory_budget_mb"] << 20,
        max_elements=cfg["max_elements"],
        progress=cfg["progress"],
        checkpoint=ckpt,
    )
    np.save(tmp / THRESHOLDS, thresholds)
    with atomic_file(done) as t:
        write_json(t, {"method": method, "max_error": err})
    ckpt.path.unlink(missing_ok=True)
    return thresholds, method, err


def _write(
    cfg: dict,
    tmp: Path,
    data: PackedDataset,
    thresholds: np.ndarray,
    method: str,
    err: float,
    counts: Tally,
    device: torch.device,
) -> dict:
    """The step's tables and arrays, into the work directory that becomes the artifact."""
    iou = counts.iou(cfg["iou_mode"])
    units = summarize(iou, data.label_names(), counts.label_category, counts.categories, cfg["detector_iou"])
    detectors = unique_detectors(units, counts.categories, cfg["detector_iou"])
    units.to_csv(tmp / UNITS, index=False)
    detectors.to_csv(tmp / "detectors.csv", index=False)
    np.save(tmp / "iou.npy", iou.astype(np.float32))
    np.savez_compressed(
        tmp / "tally.npz",
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
        "iou_mode": cfg["iou_mode"],
        "quantile": cfg["quantile"],
        "device": str(device),
    }
    write_json(tmp / "summary.json", summary)
    write_yaml(tmp / "config.yaml", cfg)
    (tmp / "thresholds.json").unlink()
    return summary


if __name__ == "__main__":
    run_step("dissect", body)
