"""Step ``dissect``: thresholds, IoU tally and per-unit labels for one layer."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cnnscope.data.packed import PackedDataset
from cnnscope.dissection import IOU_MODES, summarize, tally, unique_detectors, unit_thresholds
from cnnscope.errors import CnnscopeError
from cnnscope.features import pick_device
from cnnscope.io import atomic_dir, write_json, write_yaml
from cnnscope.steps.runner import run_step

log = logging.getLogger("cnnscope")


def body(cfg: dict) -> None:
    if cfg["iou_mode"] not in IOU_MODES:
        raise CnnscopeError(f"iou_mode={cfg['iou_mode']!r}; use one of {', '.join(IOU_MODES)}")
    if not 0 < cfg["quantile"] < 1:
        raise CnnscopeError(f"quantile={cfg['quantile']} must lie in (0, 1), e.g. 0.005")
    src = Path(cfg["activations"])
    if not (src / "activations.npy").is_file():
        raise CnnscopeError(f"{src} has no activations.npy; run the extract step first")
    data = PackedDataset.open(cfg["packed"])
    device = pick_device(cfg["device"])
    acts = np.load(src / "activations.npy", mmap_mode="r")
    thresholds, method, err = unit_thresholds(
        acts,
        cfg["quantile"],
        np.load(src / "unit_range.npy"),
        device=device,
        memory_budget=cfg["memory_budget_mb"] << 20,
        progress=cfg["progress"],
    )
    counts = tally(
        acts,
        thresholds,
        data,
        batch_size=cfg["batch_size"],
        device=device,
        max_elements=cfg["max_elements"],
        progress=cfg["progress"],
    )
    iou = counts.iou(cfg["iou_mode"])
    units = summarize(iou, data.label_names(), counts.label_category, counts.categories, cfg["detector_iou"])
    detectors = unique_detectors(units, counts.categories, cfg["detector_iou"])
    with atomic_dir(cfg["out"]) as tmp:
        units.to_csv(tmp / "units.csv", index=False)
        detectors.to_csv(tmp / "detectors.csv", index=False)
        np.save(tmp / "thresholds.npy", thresholds)
        np.save(tmp / "iou.npy", iou.astype(np.float32))
        np.savez_compressed(
            tmp / "tally.npz",
            both=counts.both,
            labels=counts.labels,
            units_cat_paper=counts.units_cat_paper,
            units_cat_lite=counts.units_cat_lite,
        )
        write_json(
            tmp / "summary.json",
            {
                "units": len(units),
                "detectors": int(units["detector"].sum()),
                "threshold_method": method,
                "threshold_max_error": err,
                "iou_mode": cfg["iou_mode"],
                "quantile": cfg["quantile"],
                "device": str(device),
            },
        )
        write_yaml(tmp / "config.yaml", cfg)
    log.info(
        "dissect: %d of %d units are detectors (IoU > %s, %s mode) -> %s",
        int(units["detector"].sum()),
        len(units),
        cfg["detector_iou"],
        cfg["iou_mode"],
        cfg["out"],
    )


if __name__ == "__main__":
    run_step("dissect", body)
