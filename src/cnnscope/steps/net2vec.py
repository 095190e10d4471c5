"""Step ``net2vec``: learned unit combinations per concept for one dissected layer (cnnscope.net2vec)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import MISSING

from cnnscope.artifacts import DissectArtifact, ExtractArtifact, Net2VecArtifact
from cnnscope.bounds import bounded, positive
from cnnscope.checkpoint import Checkpoint
from cnnscope.data.packed import PackedDataset
from cnnscope.device import pick_device
from cnnscope.dissection import batch_elements, batch_images
from cnnscope.errors import DatasetError
from cnnscope.io import write_json
from cnnscope.net2vec import classification, segmentation
from cnnscope.net2vec.classification import ClassificationParams
from cnnscope.net2vec.concepts import ConceptStats, concept_stats
from cnnscope.net2vec.embedding import nearest, units_for_mass
from cnnscope.net2vec.segmentation import Problem, SegmentationParams, unit_scale
from cnnscope.rows import RowReader
from cnnscope.stepkit.runner import Output, run_step
from cnnscope.stepkit.schema import OnDevice, Resumable, register


@dataclass
class Config(OnDevice, Resumable):
    activations: str = MISSING  # an extract step's output directory
    dissect: str = MISSING  # the same layer's dissect step output (thresholds, IoUs)
    packed: str = MISSING
    min_train_images: int = positive(1)  # a concept needs this many train images (and one val image)
    mass_share: float = bounded(0.8, 0, 1, open_lo=True)  # units carrying this share of |w| per concept
    neighbours: int = positive(3)  # nearest concepts listed per concept
    max_elements: int = bounded(0, 0)  # values per batch tensor; 0: 4M on a CPU, 64M on a GPU
    segmentation: SegmentationParams = field(default_factory=SegmentationParams)
    classification: ClassificationParams = field(default_factory=ClassificationParams)


register("net2vec", Config)


def body(cfg: Config) -> None:
    out = Output(cfg)
    out.verify(activations="extract", dissect="dissect", packed="prepare")
    data = PackedDataset.open(cfg.packed)
    splits = set(data.meta.get("splits") or [])
    if not {"train", "val"} <= splits:
        raise DatasetError(
            f"{cfg.packed}: Net2Vec trains on the probe set's train split and scores on val, but its "
            f"split column holds only {sorted(splits) or 'nothing'}; use a dataset with both"
        )
    device = pick_device(cfg.device)
    out.identify(device=str(device), threads=cfg.threads)  # threads: float sums in another order
    with out.write(resumable=True) as tmp:
        summary = _run(cfg, data, device, tmp)
        write_json(Net2VecArtifact(tmp).summary, summary)
        for ckpt in ("train.ckpt", "evaluate.ckpt"):
            (tmp / ckpt).unlink(missing_ok=True)
    out.done(
        "%d segmentation concepts, mean val IoU %.3f single unit -> %.3f learned (+%.3f)",
        summary["segmentation_concepts"],
        summary["mean_single_iou"],
        summary["mean_net2vec_iou"],
        summary["mean_iou_gain"],
    )


def _run(cfg: Config, data: PackedDataset, device: torch.device, tmp: Path) -> dict:
    """Concept statistics, the segmentation and classification embeddings and their scores against
    the best single unit, written into the work directory ``tmp``; returns the summary."""
    dis, made = DissectArtifact(cfg.dissect), Net2VecArtifact(tmp)
    acts = RowReader(ExtractArtifact(cfg.activations).activations)
    thresholds = np.load(dis.thresholds)
    dissect_iou = np.load(dis.iou)
    seg = cfg.segmentation
    max_elements = batch_elements(cfg.max_elements, device)
    stats = concept_stats(acts, data, batch_images(acts, data, max_elements), device, cfg.progress)
    seg_labels = stats.concepts("segmentation", cfg.min_train_images)
    cls_labels = stats.concepts("classification", cfg.min_train_images)
    if len(seg_labels) + len(cls_labels) == 0:
        raise DatasetError(
            f"{cfg.packed}: no concept has {cfg.min_train_images} train image(s) and a val image; "
            "lower min_train_images or use a larger probe set"
        )
    problem = Problem.build(
        acts,
        data,
        stats,
        seg_labels,
        unit_scale(thresholds, seg.scaling),
        device,
        max_elements,
        seg.batch_size,
    )
    weight, bias, losses = segmentation.train(
        problem, seg, cfg.progress, Checkpoint(tmp / "train.ckpt", cfg.checkpoint_s)
    )
    single = dissect_iou[seg_labels].argmax(1)
    scores = segmentation.evaluate(
        problem,
        weight,
        bias,
        single,
        thresholds,
        seg.top_k,
        progress=cfg.progress,
        checkpoint=Checkpoint(tmp / "evaluate.ckpt", cfg.checkpoint_s),
    )
    cls = classification.fit(stats, cls_labels, cfg.classification, device)
    _check_finite(
        scores.iou(), weight, bias, *(cls[k] for k in ("weight", "bias", "ap_single", "ap_net2vec"))
    )
    table = _table(cfg, data, stats, seg_labels, single, dissect_iou, scores, weight, cls)
    table.to_csv(made.concepts, index=False)
    names = data.label_names()
    nearest(weight, [names[i] for i in seg_labels], cfg.neighbours).to_csv(made.neighbours, index=False)
    np.save(made.weights, weight)
    np.savez(
        made.embeddings,
        labels=seg_labels,
        bias=bias,
        scale=problem.scale,
        cls_labels=cls_labels,
        cls_weight=cls["weight"],
        cls_bias=cls["bias"],
        cls_scale=cls["scale"],
    )
    return _summary(table, losses, device)


def _table(
    cfg: Config,
    data: PackedDataset,
    stats: ConceptStats,
    seg_labels: np.ndarray,
    single: np.ndarray,
    dissect_iou: np.ndarray,
    scores: segmentation.Scores,
    weight: np.ndarray,
    cls: dict,
) -> pd.DataFrame:
    """``concepts.csv``: one row per concept, its segmentation and classification columns (empty where
    the concept is not one of that kind)."""
    names, cats = data.label_names(), data.categories
    iou = dict(zip(scores.variants, scores.iou(), strict=True))
    seg = pd.DataFrame(
        {
            "label_number": seg_labels,
            "seg_train_images": stats.support(stats.pixel_present, seg_labels, "train"),
            "seg_val_images": stats.support(stats.pixel_present, seg_labels, "val"),
            "train_pixel_share": (
                stats.train_pixels[seg_labels]
                / np.maximum(stats.universe(seg_labels)[stats.split == "train"].sum(0), 1)
                / int(np.prod(data.meta["mask_size"]))
            ),
            "single_unit": single,
            "single_unit_dissect_iou": dissect_iou[seg_labels, single],
            "single_iou": iou["single"],
            "net2vec_iou": iou["net2vec"],
            **{f"iou_{v}": iou[v] for v in scores.variants if v.startswith("top")},
            "iou_gain": iou["net2vec"] - iou["single"],
            f"units_for_{round(cfg.mass_share * 100)}pct_mass": units_for_mass(weight, cfg.mass_share),
        }
    )
    clf = pd.DataFrame(
        {
            "label_number": cls["labels"],
            "cls_train_images": stats.support(stats.present, cls["labels"], "train"),
            "cls_val_images": stats.support(stats.present, cls["labels"], "val"),
            "cls_single_unit": cls["unit"],
            "ap_single": cls["ap_single"],
            "ap_net2vec": cls["ap_net2vec"],
        }
    )
    out = seg.merge(clf, on="label_number", how="outer").sort_values("label_number", kind="stable")
    out.insert(0, "category", [cats[stats.label_category[n]] for n in out["label_number"]])
    out.insert(0, "concept", [names[n] for n in out["label_number"]])
    for col in (
        "single_unit",
        "cls_single_unit",
        "seg_train_images",
        "seg_val_images",
        "cls_train_images",
        "cls_val_images",
    ):
        out[col] = out[col].astype("Int64")
    for col in out.columns:
        if col.startswith("units_for_"):
            out[col] = out[col].astype("Int64")
    return out.reset_index(drop=True)


def _check_finite(*arrays: np.ndarray) -> None:
    """Stop rather than write a number that is not finite (a diverged optimiser, an empty split)."""
    if not all(np.isfinite(a).all() for a in arrays):
        raise FloatingPointError("net2vec produced a non-finite weight, IoU or average precision")


def _summary(table: pd.DataFrame, losses: list[float], device: torch.device) -> dict:
    seg = table[table["net2vec_iou"].notna()]
    cls = table[table["ap_net2vec"].notna()]
    return {
        "segmentation_concepts": len(seg),
        "classification_concepts": len(cls),
        "mean_single_iou": float(seg["single_iou"].mean()) if len(seg) else 0.0,
        "mean_net2vec_iou": float(seg["net2vec_iou"].mean()) if len(seg) else 0.0,
        "mean_iou_gain": float(seg["iou_gain"].mean()) if len(seg) else 0.0,
        "mean_ap_single": float(cls["ap_single"].mean()) if len(cls) else 0.0,
        "mean_ap_net2vec": float(cls["ap_net2vec"].mean()) if len(cls) else 0.0,
        "segmentation_losses": losses,
        "device": str(device),
    }


if __name__ == "__main__":
    run_step("net2vec", body)
