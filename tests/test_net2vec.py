"""Net2Vec on planted layers whose answers are known, and its parts on hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from cnnscope.checkpoint import Checkpoint
from cnnscope.data.packed import PackedDataset
from cnnscope.dissection import tally
from cnnscope.net2vec import classification, segmentation
from cnnscope.net2vec.concepts import concept_stats
from cnnscope.net2vec.embedding import nearest, top_k, units_for_mass
from cnnscope.net2vec.segmentation import Problem, SegmentationParams, unit_scale

CPU = torch.device("cpu")
LABELS = [
    {"number": 1, "name": "pair", "primary": "object", "categories": ["object"]},
    {"number": 2, "name": "solo", "primary": "object", "categories": ["object"]},
    {"number": 3, "name": "speck", "primary": "part", "categories": ["part"]},
    {"number": 4, "name": "sky", "primary": "scene", "categories": ["scene"]},
]
PAIR, SOLO, SPECK, SKY = 1, 2, 3, 4
THRESHOLD = 0.5  # every unit's dissection threshold in the planted layer


def planted(n: int = 200, s: int = 10, seed: int = 0, splits: list[str] | None = None):
    """A layer of 6 units at mask resolution over ``n`` images (every fifth one in val):

    * ``pair`` (object): a rectangle that units 0 and 1 split by a chequerboard, so each unit alone
      covers half of it and only their sum covers it all;
    * ``solo`` (object): a square that unit 2 fires on exactly;
    * ``speck`` (part): one pixel of 100 (1%); unit 3 fires on it and on five random other pixels, so
      a pixel where unit 3 fires is the speck one time in six: never likely enough to call without
      the balancing (the optimum predicts nothing), always worth calling with it (IoU 1/6);
    * ``sky`` (scene, image level) on every third image; unit 5 is raised uniformly on those images;
    * unit 4 is noise, and every unit has N(0, 0.1) noise.
    """
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, 2, s, s), np.uint16)
    acts = rng.normal(0, 0.1, (n, 6, s, s)).astype(np.float32)
    checker = (np.indices((s, s)).sum(0) % 2).astype(bool)
    for i in range(n):
        y0, x0 = rng.integers(0, s - 4, 2)
        h, w = rng.integers(2, 5, 2)
        pair = np.zeros((s, s), bool)
        pair[y0 : y0 + h, x0 : x0 + w] = True
        y1, x1 = rng.integers(0, s - 3, 2)
        solo = np.zeros((s, s), bool)
        solo[y1 : y1 + 3, x1 : x1 + 3] = True
        solo &= ~pair
        masks[i, 0][pair] = PAIR
        masks[i, 0][solo] = SOLO
        acts[i, 0][pair & checker] += 1
        acts[i, 1][pair & ~checker] += 1
        acts[i, 2][solo] += 1
        cells = rng.choice(s * s, 6, replace=False)
        masks[i, 1].flat[cells[0]] = SPECK
        acts[i, 3].flat[cells] += 1
    scalars = np.zeros((n, 1), np.int32)
    scalars[::3, 0] = SKY
    acts[::3, 5] += 0.5
    meta = {
        "n_images": n,
        "mask_size": [s, s],
        "image_size": [2 * s, 2 * s],
        "categories": ["object", "part", "scene"],
        "labels": LABELS,
        "splits": splits or ["val" if i % 5 == 0 else "train" for i in range(n)],
    }
    data = PackedDataset(Path("."), meta, np.zeros((n, 2 * s, 2 * s, 3), np.uint8), masks, scalars)
    return data, acts


def _problem(data, acts, labels, params: SegmentationParams, max_elements: int = 1 << 22) -> Problem:
    stats = concept_stats(acts, data, 64, CPU, progress=False)
    scale = unit_scale(np.full(acts.shape[1], THRESHOLD, np.float32), params.scaling)
    return Problem.build(acts, data, stats, np.asarray(labels), scale, CPU, max_elements, params.batch_size)


def _fit(data, acts, labels, **kw):
    params = SegmentationParams(**kw)
    problem = _problem(data, acts, labels, params)
    weight, bias, _ = segmentation.train(problem, params, progress=False)
    thr = np.full(acts.shape[1], THRESHOLD, np.float32)
    single = tally(acts, thr, data, progress=False).iou()[problem.labels].argmax(1)
    scores = segmentation.evaluate(problem, weight, bias, single, thr, params.top_k, progress=False)
    return weight, dict(zip(scores.variants, scores.iou(), strict=True)), single


@pytest.fixture(scope="module")
def fitted():
    data, acts = planted()
    return _fit(data, acts, [PAIR, SOLO, SPECK])


def test_concepts_and_their_images():
    data, acts = planted()
    stats = concept_stats(acts, data, 7, CPU, progress=False)
    assert stats.concepts("segmentation", 1).tolist() == [PAIR, SOLO, SPECK]
    assert stats.concepts("classification", 1).tolist() == [PAIR, SOLO, SPECK, SKY]
    np.testing.assert_allclose(stats.means, acts.mean((2, 3)), rtol=1e-5, atol=1e-7)
    # sky images are the scene category's only images; every image has object and part pixels
    np.testing.assert_array_equal(stats.universe(np.array([SKY]))[:, 0], np.arange(200) % 3 == 0)
    assert stats.universe(np.array([PAIR, SPECK])).all()
    assert stats.train_pixels[SPECK] == 160  # one pixel in each of the 160 train images


def test_a_concept_split_over_two_units_needs_both(fitted):
    weight, iou, single = fitted
    assert single[0] in (0, 1)
    assert iou["net2vec"][0] >= 0.9
    assert iou["single"][0] <= 0.6
    assert iou["top1"][0] <= 0.6 and iou["top2"][0] >= 0.9  # how many units the concept needs
    mass = np.abs(weight[0])
    assert mass[[0, 1]].sum() >= 0.8 * mass.sum()
    assert units_for_mass(weight[:1], 0.8)[0] == 2


def test_a_concept_equal_to_one_unit_stays_on_it(fitted):
    weight, iou, single = fitted
    assert single[1] == 2
    assert iou["single"][1] >= 0.99
    assert iou["net2vec"][1] >= iou["single"][1] - 0.01
    mass = np.abs(weight[1])
    assert mass.argmax() == 2 and mass[2] >= 0.6 * mass.sum()


def test_balancing_finds_a_rare_concept():
    data, acts = planted()
    _, balanced, _ = _fit(data, acts, [SPECK], epochs=20)
    _, plain, _ = _fit(data, acts, [SPECK], epochs=20, balance=False)
    # Balanced: call the six pixels where unit 3 fires, the speck among them: IoU 1/6.
    assert balanced["net2vec"][0] >= 0.15
    assert plain["net2vec"][0] <= 0.02


def test_training_all_concepts_at_once_equals_each_alone(fitted):
    data, acts = planted()
    together = fitted[0]
    for row, label in enumerate([PAIR, SOLO, SPECK]):
        alone, _, _ = _fit(data, acts, [label])
        np.testing.assert_allclose(alone[0], together[row], rtol=1e-4, atol=1e-5)


def test_batches_bounded_by_max_elements_change_nothing_but_the_batch():
    data, acts = planted(n=40)
    params = SegmentationParams(batch_size=8)
    small = _problem(data, acts, [PAIR, SOLO], params, max_elements=1800)
    assert small.batch_size == 3  # 1800 // (6 units x 100 activations)
    assert _problem(data, acts, [PAIR, SOLO], params).batch_size == 8


def test_a_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    data, acts = planted(n=60)
    params = SegmentationParams(batch_size=8, epochs=3)
    problem = _problem(data, acts, [PAIR, SOLO, SPECK], params)
    whole, whole_bias, whole_losses = segmentation.train(problem, params, progress=False)

    calls = {"n": 0}
    batch = Problem.batch

    def dies(self, *args):
        calls["n"] += 1
        if calls["n"] == 9:  # in the second epoch, mid-way
            raise KeyboardInterrupt
        return batch(self, *args)

    ckpt = Checkpoint(tmp_path / "train.ckpt", every_s=0)
    monkeypatch.setattr(Problem, "batch", dies)
    with pytest.raises(KeyboardInterrupt):
        segmentation.train(problem, params, progress=False, checkpoint=ckpt)
    monkeypatch.setattr(Problem, "batch", batch)
    assert ckpt.load()["epoch"] == 1
    weight, bias, losses = segmentation.train(problem, params, progress=False, checkpoint=ckpt)
    np.testing.assert_array_equal(weight, whole)
    np.testing.assert_array_equal(bias, whole_bias)
    assert losses == whole_losses


def test_single_unit_set_iou_is_dissections_iou():
    """Scored on every image, the single-unit baseline is the tally's paper-mode IoU: the same images
    (those carrying the concept's category), the same masks."""
    data, acts = planted(n=30, splits=["val"] * 30)
    thr = np.full(6, THRESHOLD, np.float32)
    params = SegmentationParams()
    labels = np.array([PAIR, SOLO, SPECK])
    problem = _problem(data, acts, labels, params)
    ref = tally(acts, thr, data, progress=False).iou("paper")
    units = np.array([1, 2, 3])
    w = np.zeros((3, 6), np.float32)
    scores = segmentation.evaluate(problem, w, np.zeros(3, np.float32), units, thr, [1], progress=False)
    np.testing.assert_allclose(scores.iou()[0], ref[labels, units], rtol=1e-12)


@pytest.mark.parametrize(("grid", "size"), [((3, 5), (6, 10)), ((7, 7), (112, 112)), ((4, 4), (4, 4))])
def test_upsampling_is_dissections_bilinear_and_down_its_transpose(grid, size):
    up = segmentation.Upsampling.between(grid, size, CPU)
    z = torch.randn(5, *grid)
    ref = torch.nn.functional.interpolate(z[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(up.up(z), ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(5, *size)
    torch.testing.assert_close((up.up(z) * g).sum(), (z * up.down(g)).sum(), rtol=1e-4, atol=1e-4)


def _dense_loss(problem: Problem, a: int, rows: np.ndarray, weight, bias, pos, neg):
    """The definition, densely and through autograd: every concept at every pixel, weighted
    ``pos``/``neg``, 0 where the image does not carry the concept's category, over the batch's pixels."""
    x = torch.as_tensor(np.asarray(problem.acts[a : a + problem.batch_size]))[rows].float()
    pix = torch.as_tensor(problem.data.masks[a : a + problem.batch_size].astype(np.int64))[rows]
    up = torch.nn.functional.interpolate(
        x / problem.scale_tensor.view(1, -1, 1, 1), size=problem.size, mode="bilinear", align_corners=False
    )
    z = torch.einsum("lk,bkhw->blhw", weight, up) + bias.view(1, -1, 1, 1)
    labels = torch.as_tensor(problem.labels)
    y = (pix[:, :, None] == labels.view(1, 1, -1, 1, 1)).any(1).float()  # (B, L, H, W)
    valid = torch.as_tensor(problem.universe[a + rows]).float()[:, :, None, None]
    w = valid * (y * pos.view(1, -1, 1, 1) + (1 - y) * neg.view(1, -1, 1, 1))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y, weight=w, reduction="sum")
    return loss / (len(x) * y[0, 0].numel())


@pytest.mark.parametrize("balance", [True, False])
def test_loss_and_gradients_are_the_dense_definitions(balance):
    """On a layer coarser than the masks, with pairs outside a concept's category, logits from about -40
    to 45 and dense buffers of three maps (several chunks per batch)."""
    data, acts = planted(n=20)
    acts = np.ascontiguousarray(acts[:, :, ::2, ::2] * 5)  # 5 x 5 grid under 10 x 10 masks
    params = SegmentationParams(batch_size=8, balance=balance)
    problem = _problem(data, acts, [PAIR, SOLO, SPECK], params)
    problem.universe = problem.universe.copy()
    problem.universe[::3, 1] = False  # solo's category missing from every third image
    problem.chunk = 3 * 100
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 6, generator=gen) * 2
    bias = torch.randn(3, generator=gen)
    alpha = torch.as_tensor(problem.alpha, dtype=torch.float32)
    pos, neg = (1 - alpha, alpha) if balance else (torch.ones(3), torch.ones(3))
    a, rows = problem.blocks("train")[0]
    batch = problem.batch(a, rows, problem.lut())
    assert len(batch.pairs) < 3 * len(rows)  # the missing-category pairs are left out
    loss, g_w, g_b = segmentation.loss_and_grad(problem, batch, weight, bias, pos, neg)
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    ref = _dense_loss(problem, a, rows, w, b, pos, neg)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_w, w.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_b, b.grad, rtol=1e-4, atol=1e-6)


def test_evaluation_counts_are_the_dense_counts():
    """Upsampling only the maps that can cross their threshold changes no count: the set-IoU sums
    equal a dense pass over every pair and pixel, for the single units and the combinations."""
    data, acts = planted(n=30, splits=["val"] * 30)
    acts = np.ascontiguousarray(acts[:, :, ::2, ::2])  # 5 x 5 grid under 10 x 10 masks
    params = SegmentationParams()
    problem = _problem(data, acts, [PAIR, SOLO, SPECK], params)
    problem.universe = problem.universe.copy()
    problem.universe[::4, 0] = False
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(3, 6, generator=gen)
    bias = torch.tensor([-1.0, -3.0, -0.5])
    units, thr = np.array([0, 2, 3]), np.full(6, THRESHOLD, np.float32)
    scores = segmentation.evaluate(problem, weight.numpy(), bias.numpy(), units, thr, [2], progress=False)

    x = torch.as_tensor(acts)
    pix = torch.as_tensor(data.masks.astype(np.int64))
    y = (pix[:, :, None] == torch.tensor([PAIR, SOLO, SPECK]).view(1, 1, -1, 1, 1)).any(1)
    valid = torch.as_tensor(problem.universe)[:, :, None, None]
    up = torch.nn.functional.interpolate(x / THRESHOLD, size=(10, 10), mode="bilinear")
    single = up[:, units] > 1  # each concept's unit over its threshold (scale = threshold)
    top2 = segmentation.top_k(weight, 2)
    preds = [single] + [
        torch.einsum("lk,bkhw->blhw", w, up) + bias.view(1, -1, 1, 1) > 0 for w in (weight, top2)
    ]
    for v, pred in enumerate(preds):
        pred = pred & valid
        np.testing.assert_array_equal(scores.predicted[v], pred.sum((0, 2, 3)).double().numpy())
        np.testing.assert_array_equal(scores.inter[v], (pred & y).sum((0, 2, 3)).double().numpy())
    np.testing.assert_array_equal(scores.truth, (y & valid).sum((0, 2, 3)).double().numpy())
    fires = preds[1].flatten(2).any(2)  # the combination's maps with a pixel: some, not all
    assert fires.any() and not fires.all() and (scores.inter[1] > 0).any()


def test_unit_scale():
    np.testing.assert_array_equal(unit_scale(np.array([2.0, 0.0, -1.0]), "threshold"), [2, 1, 1])
    np.testing.assert_array_equal(unit_scale(np.array([2.0, 0.0]), "none"), [1, 1])


def test_classification_finds_the_image_level_concept():
    data, acts = planted()
    stats = concept_stats(acts, data, 64, CPU, progress=False)
    train, val = stats.split == "train", stats.split == "val"
    labels = np.array([SKY])
    y = stats.present[:, labels]
    valid = np.ones_like(y)  # every image, so that sky has negatives
    x = classification.standardize(stats.means, train)
    w, b = classification.fit_weights(
        torch.as_tensor(x[train]),
        torch.as_tensor(y[train]),
        torch.as_tensor(valid[train]),
        classification.ClassificationParams(),
    )
    units, ap = classification.best_units(stats.means[train], y[train], valid[train])
    assert units[0] == 5 and ap[0] == pytest.approx(1.0)
    assert classification.average_precision(x[val] @ w.T + b, y[val])[0] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_is_sklearns(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, (80, 5)).astype(float)  # many ties
    y = rng.random((80, 5)) < 0.3
    valid = rng.random((80, 5)) < 0.8
    ours = classification.average_precision(scores, y, valid)
    for m in range(5):
        v = valid[:, m]
        assert ours[m] == pytest.approx(average_precision_score(y[v, m], scores[v, m]), abs=1e-12)


def test_best_units_picks_the_highest_ap_unit():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 7))
    y = rng.random((60, 4)) < 0.4
    valid = rng.random((60, 4)) < 0.9
    units, ap = classification.best_units(x, y, valid)
    every = np.stack(
        [classification.average_precision(np.repeat(x[:, [u]], 4, 1), y, valid) for u in range(7)]
    )
    np.testing.assert_array_equal(units, every.argmax(0))
    np.testing.assert_allclose(ap, every.max(0))


def test_top_k_keeps_the_largest_magnitudes():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5], [1.0, 0.0, 0.0, -0.2]])
    np.testing.assert_allclose(top_k(w, 2).numpy(), [[0, -3.0, 2.0, 0], [1.0, 0, 0, -0.2]])
    np.testing.assert_array_equal(top_k(w, 9).numpy(), w.numpy())


def test_units_for_mass_by_hand():
    w = np.array([[4.0, -3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 5.0, 0.0, 0.0]])
    # 4+3 = 70% < 80% <= 4+3+2 = 90%; 4 equal units reach 75% with 3, 100% with 4 (and 50% with 2)
    np.testing.assert_array_equal(units_for_mass(w, 0.8), [3, 4, 0, 1])
    np.testing.assert_array_equal(units_for_mass(w[1:2], 0.5), [2])


def test_nearest_concepts_by_cosine():
    w = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    table = nearest(w, ["a", "b", "c", "d"], n=2)
    first = table[table["rank"] == 1].set_index("concept")["neighbour"].to_dict()
    assert first == {"a": "b", "b": "a", "c": "b", "d": "c"}
    assert len(table) == 8


def test_sgd_and_adam_both_train():
    data, acts = planted(n=100)
    for optimizer, lr in (("sgd", 1.0), ("adam", 0.05)):
        _, iou, _ = _fit(data, acts, [SOLO], optimizer=optimizer, lr=lr, batch_size=16, epochs=6)
        assert iou["net2vec"][0] >= 0.9, optimizer
