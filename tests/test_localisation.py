"""Localisation scores on hand-made maps and masks: the pointing game's hit, miss and tolerance edge,
the energy share, bounding boxes, and the baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnnscope.attribution import localisation as loc
from cnnscope.data import shapetexture


def _mask(h: int, w: int, *pixels: tuple[int, int]) -> torch.Tensor:
    m = torch.zeros(1, h, w, dtype=torch.bool)
    for v, u in pixels:
        m[0, v, u] = True
    return m


def test_pointing_hit_miss_and_the_tolerance_edge():
    mask = _mask(40, 40, (10, 10))
    point = lambda u, v: torch.tensor([[u, v]])  # noqa: E731
    assert loc.pointing_hits(point(10, 10), mask, 15).item()  # on the object
    assert loc.pointing_hits(point(24, 10), mask, 15).item()  # 14 px away: inside
    assert not loc.pointing_hits(point(25, 10), mask, 15).item()  # exactly 15 px: outside (strict)
    assert not loc.pointing_hits(point(19, 22), mask, 15).item()  # 9² + 12² = 15²: on the edge, outside
    assert loc.pointing_hits(point(19, 21), mask, 15).item()  # 9² + 11² < 15²


def test_pointing_uses_the_first_maximum_of_each_map():
    maps = torch.zeros(2, 4, 5)
    maps[0, 1, 3] = 1.0
    maps[1, 2, 0] = maps[1, 3, 4] = 2.0  # a tie: the first in row-major order
    assert loc.maximisers(maps).tolist() == [[3, 1], [0, 2]]


def test_energy_share_inside_a_region_and_boxes():
    maps = torch.zeros(2, 3, 3)
    maps[0, 0, 0], maps[0, 2, 2] = 3.0, 1.0
    region = _mask(3, 3, (0, 0)).expand(2, 3, 3)
    share = loc.energy_share(maps, region)
    assert share[0].item() == pytest.approx(0.75) and math.isnan(share[1].item())  # an all-zero map
    ell = _mask(5, 6, (1, 1), (2, 1), (3, 1), (3, 2), (3, 4))
    box = loc.boxes(ell)[0]
    assert box.sum().item() == 3 * 4 and box[1:4, 1:5].all()
    assert not loc.boxes(torch.zeros(1, 4, 4, dtype=torch.bool)).any()


def test_localise_reports_each_method_and_the_centre_baseline():
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True  # an object in the corner: the centre point misses it
    masks[3] = False
    masks[3, 14:18, 14:18] = True  # ... except in the last image, of class 1
    labels = torch.tensor([0, 0, 0, 1])
    on = torch.zeros(4, 32, 32)
    on[:, 3, 3] = 1.0  # always points at the corner: hits 3 of 4 (the last object is central)
    table = loc.localise({"corner": on}, masks, labels, tolerance=loc.scaled_tolerance(32)).set_index(
        "method"
    )
    assert loc.scaled_tolerance(224) == 15 and loc.scaled_tolerance(32) == pytest.approx(15 * 32 / 224)
    assert table.loc["corner", "pointing"] == 0.75
    assert table.loc["corner", "pointing_class_mean"] == 0.5  # class 0: 3/3, class 1: 0/1
    assert table.loc["corner", "energy_mask"] == 0.75 and table.loc["corner", "energy_box"] == 0.75
    base = table.loc[loc.CENTRE]
    assert base["pointing"] == 0.25 and base["pointing_class_mean"] == 0.5
    assert base["energy_mask"] == pytest.approx(16 / 1024)


def test_the_worlds_localisation_set_has_exact_masks():
    images, labels, masks = shapetexture.localisation_set(32, 32, seed=0)
    assert images.shape == (32, 32, 32, 3) and masks.shape == (32, 32, 32)
    assert np.bincount(labels).tolist() == [2] * 16
    assert all(0.02 < m.mean() < 0.6 for m in masks)
    again = shapetexture.localisation_set(32, 32, seed=0)
    np.testing.assert_array_equal(images, again[0])
    # Inside the mask the object's texture, outside the grey background (r = g = b).
    grey = (images[..., 0] == images[..., 1]) & (images[..., 1] == images[..., 2])
    assert grey[~masks].all() and not grey[masks].all()
    # Anywhere: smaller objects whose centres spread wider, so the image centre misses more of them.
    _, _, far = shapetexture.localisation_set(256, 32, seed=0, placement="anywhere")
    _, _, near = shapetexture.localisation_set(256, 32, seed=0)
    assert far.mean() < near.mean()
    centre = torch.tensor([[16, 16]]).expand(256, 2)
    hit_far = loc.pointing_hits(centre, torch.from_numpy(far), loc.scaled_tolerance(32)).double().mean()
    hit_near = loc.pointing_hits(centre, torch.from_numpy(near), loc.scaled_tolerance(32)).double().mean()
    assert hit_far < hit_near - 0.2


def test_probe_object_masks_are_the_object_labels_pixels_upsampled(packed):
    """Every pixel of a labelled object, in any mask layer, at the image's size (the masks are at half
    resolution: each mask pixel becomes a 2 x 2 block); images without an object have an empty mask."""
    from cnnscope.data.packed import read_labels

    idx = np.arange(len(packed))
    h, w = packed.images.shape[1:3]
    masks = loc.probe_object_masks(packed, idx, (h, w))
    assert masks.shape == (len(idx), h, w) and masks.dtype == torch.bool
    labels = read_labels(np.asarray(packed.masks), 0, len(packed), torch.device("cpu")).numpy()
    objects = {
        n
        for n in range(packed.n_label_slots)
        if packed.label_category()[n] == packed.categories.index("object")
    }
    half = np.isin(labels, list(objects)).any(1)
    assert half.shape[1:] == (h // 2, w // 2) and half.any() and not half.all(axis=(1, 2)).any()
    assert np.array_equal(masks.numpy(), half.repeat(2, 1).repeat(2, 2))
    assert not masks.flatten(1).any(1).all()  # the texture swatches show no object


def test_no_object_category_no_probe_masks(packed):
    class NoObjects:
        categories = [c for c in packed.categories if c != "object"]

    assert loc.probe_object_masks(NoObjects(), np.arange(2), (8, 8)) is None
