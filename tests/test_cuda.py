"""Dissection on CUDA against the CPU, on a 300-image synthetic world (needs a CUDA GPU).

CI has no GPU, so there this module is skipped with its reason; ``benchmarks/gpu.sh`` runs it on a
lent one. ``CNNSCOPE_TEST_DEVICE=cpu`` rehearses it on the CPU, where the "device" run differs from
the reference run only in its batching.

What may differ, and how much:

* **the tally, on the same activations and thresholds**: a unit's mask pixel can flip only where
  float rounding of the bilinear upsampling moves a value across the unit's threshold. So every
  pixel whose mask differs between the devices must lie at its threshold (within 1e-5 relative, as
  ``dissection.may_exceed`` allows), and each count differs by at most the unit's flipped pixels;
* **thresholds of the same activations**: none (the exact quantile is a selection of stored values);
* **the whole chain** (extraction under autocast on the GPU, as the pipeline runs it): activations
  within float16 rounding of the CPU's, and the same best label for every unit, except where the
  CPU's two candidate labels are within ``TIE`` IoU of each other.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnscope.data.broden import BrodenDataset
from cnnscope.data.packed import PackedDataset, pack
from cnnscope.data.synthworld import WorldSpec, generate
from cnnscope.dissection import tally, unit_masks, unit_thresholds
from cnnscope.features import ExtractParams, extract_layer
from cnnscope.models.registry import ModelSpec, load_model
from cnnscope.rows import RowReader

DEVICE = os.environ.get("CNNSCOPE_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE.startswith("cuda") and not torch.cuda.is_available(),
    reason="needs a CUDA GPU (benchmarks/gpu.sh runs it on one; CNNSCOPE_TEST_DEVICE=cpu rehearses it)",
)
LAYERS = ("layer2", "layer4")
QUANTILE = 0.005
TIE = 0.005  # IoU: two labels this close are a tie that float16 rounding may break either way
REL = 1e-5  # the relative margin within which rounding may move a value across its threshold


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> PackedDataset:
    root = tmp_path_factory.mktemp("cuda")
    generate(root / "world", WorldSpec(n_images=300, image_size=128, seed=11), progress=False)
    pack(BrodenDataset(root / "world"), root / "packed", progress=False)
    return PackedDataset.open(root / "packed")


def _extract(data: PackedDataset, layer: str, device: str, out) -> RowReader:
    """ResNet-18 with seeded random weights, as the pipeline extracts (autocast on a GPU)."""
    loaded = load_model(ModelSpec("torchvision", "resnet18", seed=3), device)
    extract_layer(
        loaded, layer, data.stream("images"), out, ExtractParams(batch_size=32), device=device, progress=False
    )
    return RowReader(out / "activations.npy")


@pytest.fixture(scope="module")
def activations(world, tmp_path_factory) -> dict[tuple[str, str], RowReader]:
    """``(layer, "cpu" | "device")`` -> that run's activations."""
    out = {}
    for layer in LAYERS:
        for name, device in (("cpu", "cpu"), ("device", DEVICE)):
            out[layer, name] = _extract(world, layer, device, tmp_path_factory.mktemp(f"{layer}-{name}"))
    return out


def _flipped(acts: RowReader, thr: np.ndarray, data: PackedDataset, device: str) -> tuple[np.ndarray, float]:
    """Per unit, the mask pixels that differ between the CPU and ``device`` on the same activations;
    and the largest relative distance of such a pixel's (float64) upsampled value from its threshold."""
    size = tuple(data.meta["mask_size"])
    c = acts.shape[1]
    flips, worst = np.zeros(c, np.int64), 0.0
    for a in range(0, len(acts), 32):
        maps = torch.from_numpy(acts[a : a + 32]).float().flatten(0, 1)
        t = torch.as_tensor(thr, dtype=torch.float32).repeat(len(maps) // c)
        diff = unit_masks(maps, t, size) != unit_masks(maps.to(device), t.to(device), size).cpu()
        flips += diff.view(-1, c, size[0] * size[1]).sum((0, 2)).numpy()
        rows = diff.flatten(1).any(1).nonzero()[:, 0]
        if len(rows):
            up = F.interpolate(maps[rows, None].double(), size=size, mode="bilinear", align_corners=False)
            tr = t[rows].double().view(-1, 1, 1)
            dist = (up[:, 0] - tr).abs() / tr.abs().clamp_min(1e-30)
            worst = max(worst, float(dist[diff[rows]].max()))
    return flips, worst


@pytest.mark.parametrize("layer", LAYERS)
def test_tally_on_the_device_counts_as_the_cpu_does(world, activations, layer):
    acts = activations[layer, "cpu"]
    unit_range = np.load(acts.path.parent / "unit_range.npy")
    thr_cpu, method, _ = unit_thresholds(acts, QUANTILE, unit_range, device="cpu", progress=False)
    thr_dev, _, _ = unit_thresholds(
        acts, QUANTILE, unit_range, device=DEVICE, progress=False, max_elements=1 << 16
    )
    assert method == "exact"
    np.testing.assert_array_equal(thr_dev, thr_cpu)

    ref = tally(acts, thr_cpu, world, device="cpu", progress=False)
    got = tally(acts, thr_cpu, world, device=DEVICE, progress=False, max_elements=1 << 16)
    flips, worst = _flipped(acts, thr_cpu, world, DEVICE)
    print(f"\n{layer}: {int(flips.sum())} mask pixels flipped by rounding, worst {worst:.1e} from threshold")
    assert worst <= REL, f"a mask pixel {worst:.1e} (relative) from its threshold differs: not rounding"
    np.testing.assert_array_equal(got.labels, ref.labels)
    assert (np.abs(got.both - ref.both) <= flips[None, :]).all()
    for a, b in ((got.units_cat_paper, ref.units_cat_paper), (got.units_cat_lite, ref.units_cat_lite)):
        assert (np.abs(a - b) <= flips[:, None]).all()


@pytest.mark.parametrize("layer", LAYERS)
def test_whole_chain_on_the_device_labels_units_as_the_cpu_does(world, activations, layer):
    ious = {}
    for name, device in (("cpu", "cpu"), ("device", DEVICE)):
        acts = activations[layer, name]
        unit_range = np.load(acts.path.parent / "unit_range.npy")
        thr, _, _ = unit_thresholds(acts, QUANTILE, unit_range, device=device, progress=False)
        ious[name] = tally(acts, thr, world, device=device, progress=False).iou("paper")
    ref = activations[layer, "cpu"][0:300].astype(np.float64)
    got = activations[layer, "device"][0:300].astype(np.float64)
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    best_cpu, best_dev = ious["cpu"].argmax(0), ious["device"].argmax(0)
    units = np.arange(ious["cpu"].shape[1])
    margin = ious["cpu"][best_cpu, units] - ious["cpu"][best_dev, units]
    differ = best_cpu != best_dev
    print(
        f"\n{layer}: activations within {rel:.1e} (relative norm); {int(differ.sum())} of {len(units)} units"
        f" labelled differently, CPU IoU margins {np.round(margin[differ], 4).tolist()}"
    )
    assert rel <= 1e-2
    assert (margin[differ] <= TIE).all(), "a unit's best label differs where the CPU's labels are no tie"
    np.testing.assert_allclose(ious["device"].max(0), ious["cpu"].max(0), atol=0.02)


def test_net2vec_ap_and_best_units_on_the_device_equal_the_cpus():
    """Net2Vec's single-unit baseline (one sort per unit, integer cumulative counts) runs on the device
    at full scale; with tied scores and concepts of different universes it must give the CPU's APs up
    to the order of the final float64 sum, and units whose CPU AP is the best (exact ties may go
    either way)."""
    from cnnscope.net2vec.classification import average_precision, best_units

    rng = np.random.default_rng(5)
    x = rng.integers(0, 40, (3000, 64)).astype(np.float32)  # many ties
    y = rng.random((3000, 200)) < 0.05
    valid = rng.random((3000, 200)) < 0.8
    units_cpu, ap_cpu = best_units(x, y, valid)
    units_dev, ap_dev = best_units(x, y, valid, torch.device(DEVICE))
    np.testing.assert_allclose(ap_dev, ap_cpu, rtol=1e-12)
    every = np.stack([average_precision(np.repeat(x[:, [u]], 200, 1), y, valid) for u in range(64)])
    np.testing.assert_allclose(every[units_dev, np.arange(200)], ap_cpu, rtol=1e-12)
    scores = x[:, units_cpu]
    np.testing.assert_allclose(
        average_precision(scores, y, valid, torch.device(DEVICE)),
        average_precision(scores, y, valid),
        rtol=1e-12,
    )
