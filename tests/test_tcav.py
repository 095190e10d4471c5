"""TCAV: scores by hand, the CAV against scikit-learn, the t-test against scipy, the layer's activations
and gradients against autograd, the whole against captum's ``TCAV``, and its significance test on a
null and on a planted concept."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression
from torch import nn

from cnnscope.attribution import tcav
from cnnscope.errors import CnnscopeError


class _Net(nn.Module):
    """conv-relu-conv-relu-avgpool-linear, 3 classes; the ReLUs are in place, so a hook that kept the
    layer's output without copying it would see it rectified."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(4)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def _net() -> _Net:
    torch.manual_seed(0)
    return _Net()


def _images(n: int, seed: int, colour: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """``n`` noise images of 16 x 16 pixels, shifted by ``colour`` per channel (a 'concept')."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g) + torch.tensor(colour)[:, None, None]


def test_directional_scores_by_hand():
    grads = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0], [0.0, -2.0]])
    cavs = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # S for the first CAV: 1, 0 (not positive), -1, 0 -> 1 of 4; for the second: .6, .8, .2, -1.6 -> 3 of 4.
    scores = tcav.directional_scores(grads, cavs)
    assert scores.tolist() == [0.25, 0.75]
    assert tcav.directional_scores(grads, -cavs).tolist() == [0.25, 0.25]  # the zeros on neither side


def _blobs(n: int, dim: int, axis: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    concept = torch.randn(n, dim, generator=g)
    concept[:, axis] += shift
    return concept, torch.randn(n, dim, generator=g)


def test_fit_cav_finds_the_axis_that_separates_two_blobs():
    concept, random = _blobs(30, 10, axis=3, shift=8.0, seed=0)
    v, accuracy = tcav.fit_cav(concept, random)
    assert v.shape == (10,) and v.dtype == torch.float64
    assert torch.linalg.vector_norm(v).item() == pytest.approx(1.0, abs=1e-12)
    assert v[3] > 0.95  # the cosine with +e_3: towards the concept
    assert accuracy == 1.0
    w, accuracy_swapped = tcav.fit_cav(random, concept)
    torch.testing.assert_close(w, -v, rtol=0, atol=1e-9)  # the same boundary, seen from the other side
    assert accuracy_swapped == 1.0
    again, _ = tcav.fit_cav(concept, random)
    assert torch.equal(again, v)  # deterministic


@pytest.mark.parametrize(
    ("n_concept", "n_random", "dim", "shift", "l2"), [(30, 30, 10, 1.0, 0.01), (12, 25, 300, 0.5, 0.1)]
)
def test_fit_cav_is_scikit_learns_logistic_regression(n_concept, n_random, dim, shift, l2):
    """``J = 1/n sum log(1 + exp(-y (w.x + b))) + l2/2 ||w||^2`` is ``C sum log(...) + 1/2 ||w||^2``
    over ``n l2``, so ``C = 1 / (n l2)``: the same minimiser, so the same direction to solver precision
    (a wrong scaling of ``l2`` moves it by far more than the tolerance). Overlapping blobs, and more
    dimensions than images."""
    g = torch.Generator().manual_seed(1)
    concept = torch.randn(n_concept, dim, generator=g) + shift
    random = torch.randn(n_random, dim, generator=g) * 2
    v, accuracy = tcav.fit_cav(concept, random, l2=l2)
    x = torch.cat([concept, random]).double().numpy()
    y = np.r_[np.ones(n_concept), np.zeros(n_random)]
    lr = LogisticRegression(C=1 / (len(x) * l2), tol=1e-12, max_iter=100_000).fit(x, y)
    w = lr.coef_[0] / np.linalg.norm(lr.coef_[0])
    assert float(v.numpy() @ w) > 1 - 1e-8
    assert accuracy == pytest.approx(lr.score(x, y))
    wrong = LogisticRegression(C=1 / l2, tol=1e-12, max_iter=100_000).fit(x, y).coef_[0]
    assert float(v.numpy() @ wrong / np.linalg.norm(wrong)) < 1 - 1e-6  # the scaling matters


def test_ttest_ind_is_scipys():
    rng = np.random.default_rng(0)
    cases = [
        (10, 10, 0.0),
        (10, 10, 5.0),
        (3, 7, 0.01),
        (50, 80, 40.0),
        (2, 2, 1.0),
        (10, 10, 1e-6),
        (200, 300, 0.3),
    ]
    ps = []
    for n_a, n_b, shift in cases:
        a, b = rng.normal(size=n_a), rng.normal(size=n_b) + shift
        if shift == 1e-6:
            b += a.mean() - b.mean() + shift  # means almost equal: p near 1
        t, p = tcav.ttest_ind(a, b)
        want = stats.ttest_ind(a, b)
        assert t == pytest.approx(want.statistic, rel=1e-9)
        assert p == pytest.approx(want.pvalue, rel=1e-9)
        ps.append(p)
    assert min(ps) < 1e-100 and max(ps) > 0.99  # tiny tails and p near 1 among them
    assert tcav.ttest_ind(np.full(4, 0.3), np.full(6, 0.3)) == (0.0, 1.0)
    assert tcav.ttest_ind(np.full(4, 0.3), np.full(6, 0.5)) == (-np.inf, 0.0)
    assert tcav.ttest_ind(np.full(4, 0.7), np.full(6, 0.5)) == (np.inf, 0.0)
    with pytest.raises(CnnscopeError, match="t-test"):
        tcav.ttest_ind(np.ones(1), np.zeros(1))


def test_layer_activations_and_gradients_despite_in_place_relu():
    model = _net().train()
    x, targets = _images(7, seed=1), torch.tensor([0, 1, 2, 2, 1, 0, 1])
    seen = []
    handle = model.conv2.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    model.train()
    acts = tcav.layer_activations(model, "conv2", x)
    assert acts.shape == (7, 6 * 16 * 16) and acts.dtype == torch.float32
    assert torch.equal(acts, seen[0].flatten(1))
    batched = tcav.layer_activations(model, "conv2", x, batch=3)
    torch.testing.assert_close(batched, acts, rtol=0, atol=1e-6)  # convolution sums per batch size
    assert (acts < 0).any()  # before the in-place ReLU

    # By hand: the layer's output as a leaf, and the rest of the network (out of place) from it.
    h = model.conv2(model.relu1(model.conv1(x))).detach().requires_grad_()
    logits = model.fc(model.pool(torch.relu(h)).flatten(1))
    (want,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), h)
    grads = tcav.layer_gradients(model, "conv2", x, targets, batch=3)
    torch.testing.assert_close(grads, want.flatten(1), rtol=1e-6, atol=1e-7)
    assert grads.abs().sum() > 0
    assert model.training  # the mode is restored
    assert all(p.grad is None for p in model.parameters())  # no gradient left on the weights
    with pytest.raises(CnnscopeError, match="one target per image"):
        tcav.layer_gradients(model, "conv2", x, targets[:3])


def test_directional_scores_are_captums_sign_count(tmp_path):
    """captum's ``TCAV`` with a classifier that hands it our CAVs gives our scores.

    captum trains one classifier per experimental set ``[concept, random]``, whose data loader labels
    each activation with its concept's id; ``weights()`` has one row per entry of ``classes()``, and
    captum reorders its scores ``mean(attribs @ row > 0)`` into the set's concept order by matching
    ``classes()`` with the concepts' ids. Here ``classes()`` lists the random concept first, with row
    ``-v``, then the concept with row ``v``; so the set's first score is ours, the second its mirror."""
    pytest.importorskip("captum")
    from captum.concept import TCAV, Concept
    from captum.concept._utils.classifier import Classifier
    from torch.utils.data import DataLoader

    model = _net().eval()
    images = {
        "red": _images(12, seed=10, colour=(1.5, -0.5, -0.5)),
        "green": _images(12, seed=11, colour=(-0.5, 1.5, -0.5)),
        "random1": _images(12, seed=12),
        "random2": _images(12, seed=13),
    }
    ids = {name: i for i, name in enumerate(images)}
    acts = {name: tcav.layer_activations(model, "conv2", x) for name, x in images.items()}
    cavs = {(c, r): tcav.fit_cav(acts[c], acts[r]) for c in ("red", "green") for r in ("random1", "random2")}
    by_id = {ids[c] * 10 + ids[r]: fit for (c, r), fit in cavs.items()}

    class OurCAVs(Classifier):
        def __init__(self) -> None:
            self.v: torch.Tensor | None = None
            self.ids: list[int] = []

        def train_and_eval(self, dataloader, **kwargs):
            inputs, labels = zip(*dataloader, strict=True)
            x, y = torch.cat(inputs), torch.cat(labels)
            concept, random = sorted(set(y.tolist()))  # the concepts' ids are below the randoms'
            name = {i: n for n, i in ids.items()}
            # captum's activations of each set are ours.
            torch.testing.assert_close(x[y == concept], acts[name[concept]], rtol=0, atol=1e-6)
            torch.testing.assert_close(x[y == random], acts[name[random]], rtol=0, atol=1e-6)
            self.v, accuracy = by_id[concept * 10 + random]
            self.ids = [random, concept]
            return {"accs": torch.tensor(accuracy)}

        def weights(self) -> torch.Tensor:
            return torch.stack([-self.v, self.v])

        def classes(self) -> list[int]:
            return self.ids

    concepts = {name: Concept(ids[name], name, DataLoader(x, batch_size=5)) for name, x in images.items()}
    sets = [[concepts[c], concepts[r]] for c, r in cavs]
    interpreter = TCAV(model, ["conv2"], classifier=OurCAVs(), save_path=str(tmp_path / "cav"))
    checked = []
    for target in (0, 2):
        inputs = _images(20, seed=20 + target)
        grads = tcav.layer_gradients(model, "conv2", inputs, torch.full((20,), target))
        scores = interpreter.interpret(inputs, sets, target=target)
        for (c, r), (v, _) in cavs.items():
            ours = tcav.directional_scores(grads, v[None])[0].item()
            sign_count = scores[f"{ids[c]}-{ids[r]}"]["conv2"]["sign_count"]
            assert sign_count[0].item() == pytest.approx(ours, abs=1e-6)
            assert sign_count[1].item() == pytest.approx(1 - ours, abs=1e-6)  # no derivative is 0
            checked.append(ours)
    assert len(checked) == 8 and len(set(checked)) > 2  # the scores are not all 0 or 1


def _mlp(seed: int, shift: torch.Tensor) -> nn.Module:
    """A feature layer, tanh and a 2-class head: class 0's logit rises along the layer direction ``u``
    in which the input ``shift`` moves the features, class 1's falls along it."""
    torch.manual_seed(seed)
    model = nn.Sequential(OrderedDict(features=nn.Linear(8, 12), act=nn.Tanh(), head=nn.Linear(12, 2)))
    with torch.no_grad():
        u = model.features.weight @ shift
        u /= torch.linalg.vector_norm(u)
        model.head.weight[0] = 3 * u
        model.head.weight[1] = -3 * u
    return model.eval()


def _study(seed: int, planted: bool) -> pd.DataFrame:
    """TCAV of a null concept (and of a planted one) for the two classes of :func:`_mlp`.

    The concept sets and ``randoms[0]`` hold 200 images, the counterparts 20: the ``R`` scores of one
    concept share its image set (and the null's share ``randoms[0]``), and a large shared set keeps
    that from making them alike, which the t-test, taking them as independent, cannot allow for (with
    sets of equal size over a third of the null cells come out significant here: see the module)."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.zeros(8)
    shift[0] = 2.0
    model = _mlp(seed, shift)

    def acts(n: int, offset: torch.Tensor | float = 0.0) -> torch.Tensor:
        return tcav.layer_activations(model, "features", torch.randn(n, 8, generator=g) + offset)

    params = tcav.TcavParams(randoms=8)
    randoms = [acts(200)] + [acts(20) for _ in range(params.randoms)]
    concepts = {"null": acts(200)}
    if planted:
        concepts["planted"] = acts(200, shift)
    x = torch.randn(30, 8, generator=g)
    gradients = {
        k: tcav.layer_gradients(model, "features", x, torch.full((30,), c))
        for c, k in enumerate(("up", "down"))
    }
    table, cavs = tcav.tcav(concepts, randoms, gradients, params)
    again, cavs_again = tcav.tcav(concepts, randoms, gradients, params)
    pd.testing.assert_frame_equal(table, again, check_exact=True)
    assert cavs.keys() == cavs_again.keys() and all(torch.equal(cavs[k], cavs_again[k]) for k in cavs)
    assert {k: tuple(v.shape) for k, v in cavs.items()} == {k: (8, 12) for k in [*concepts, "random"]}
    return table


def test_a_planted_concept_is_significant_and_a_null_one_is_not():
    table = _study(0, planted=True).set_index(["class", "concept"])
    assert list(table.columns) == tcav.COLUMNS[2:]
    up, down = table.loc[("up", "planted")], table.loc[("down", "planted")]
    assert up["tcav"] > 0.95 and down["tcav"] < 0.05
    assert up["significant"] and down["significant"]
    assert up["cav_accuracy"] > table.loc[("up", "null"), "cav_accuracy"]
    assert (table["p_bonferroni"] == np.minimum(1, table["p"] * 4)).all()  # 2 classes x 2 concepts
    assert not table.loc[(slice(None), "null"), "significant"].any()

    # Concepts drawn like the random images: over several worlds, hardly a cell is significant.
    nulls = pd.concat([_study(seed, planted=False) for seed in range(1, 9)])
    assert len(nulls) == 16 and nulls["significant"].sum() <= 1
    assert nulls["p"].median() > 0.2


def test_tcav_refuses_what_it_cannot_test():
    g = torch.Generator().manual_seed(0)
    sets = [torch.randn(5, 4, generator=g) for _ in range(4)]
    grads = {"a": torch.randn(6, 4, generator=g)}
    params = tcav.TcavParams(randoms=3)
    tcav.tcav({"c": sets[0]}, sets, grads, params)  # enough to work
    with pytest.raises(CnnscopeError, match="needs 4 random sets, got 3"):
        tcav.tcav({"c": sets[0]}, sets[:3], grads, params)
    bad = sets[0].clone()
    bad[2, 1] = float("nan")
    with pytest.raises(CnnscopeError, match="concept 'c' holds non-finite"):
        tcav.tcav({"c": bad}, sets, grads, params)
    with pytest.raises(CnnscopeError, match="class 'a' holds non-finite"):
        tcav.tcav({"c": sets[0]}, sets, {"a": grads["a"] / 0}, params)
    with pytest.raises(CnnscopeError, match="has 1 rows; it needs at least 2"):
        tcav.tcav({"c": sets[0][:1]}, sets, grads, params)
    with pytest.raises(CnnscopeError, match="has 3 dimensions where the others have 4"):
        tcav.tcav({"c": sets[0][:, :3]}, sets, grads, params)
    with pytest.raises(CnnscopeError, match="randoms=1 is out of range"):
        tcav.tcav({"c": sets[0]}, sets, grads, tcav.TcavParams(randoms=1))
    with pytest.raises(CnnscopeError, match="'random'"):
        tcav.tcav({"random": sets[0]}, sets, grads, params)


def test_label_presence_is_what_net2vec_counts(packed):
    from cnnscope.net2vec.concepts import concept_stats, label_presence

    acts = np.zeros((len(packed), 1, 2, 2), np.float32)
    stats = concept_stats(acts, packed, 7, torch.device("cpu"), progress=False)
    present = label_presence(packed, batch_size=5)
    assert present.shape == stats.present.shape and present.any()
    assert np.array_equal(present, stats.present)


def test_probe_concepts_are_images_that_carry_the_label(packed):
    from cnnscope.attribution.probe_concepts import concept_name, probe_family
    from cnnscope.attribution.world_concepts import WorldTcavParams
    from cnnscope.net2vec.concepts import label_presence

    params = WorldTcavParams(concept_images=5, random_images=3, controls=1, tcav=tcav.TcavParams(randoms=2))
    size = packed.images.shape[1]
    family = probe_family(packed, size, params, min_images=4)
    present = label_presence(packed)
    counts = present.sum(0)
    named = {concept_name(packed, label): label for label in range(1, packed.n_label_slots)}
    wanted = {n for n, label in named.items() if counts[label] >= 4 and packed.label_category()[label] >= 0}
    assert set(family.concepts) == wanted and wanted
    for name, images in family.concepts.items():
        positives = packed.images[present[:, named[name]]].reshape(-1, size * size * 3)
        assert len(images) == min(5, counts[named[name]])
        for image in images.reshape(len(images), -1):  # each one of the label's images, unchanged
            assert (positives == image).all(1).any(), name
    assert [len(s) for s in family.stand_ins] == [5, 5] and [len(s) for s in family.counterparts] == [3, 3]
    again = probe_family(packed, size, params, min_images=4)
    assert all(np.array_equal(again.concepts[k], v) for k, v in family.concepts.items())
    small = probe_family(packed, 12, params, min_images=4)
    assert all(v.shape[1:] == (12, 12, 3) and v.dtype == np.uint8 for v in small.concepts.values())


def test_resize_keeps_a_flat_image_flat_and_an_image_at_its_size_as_it_is():
    from cnnscope.attribution.probe_concepts import resize

    flat = np.full((2, 20, 20, 3), 77, np.uint8)
    assert (resize(flat, 8) == 77).all() and resize(flat, 8).shape == (2, 8, 8, 3)
    noise = np.random.default_rng(0).integers(0, 256, (1, 9, 9, 3), dtype=np.uint8)
    assert np.array_equal(resize(noise, 9), noise)


def test_net2vec_agreement_by_hand():
    """K = 2 units at 2 positions (D = 4, channel-major); Net2Vec's direction w / scale = (1, 0)."""
    from cnnscope.attribution.probe_concepts import net2vec_agreement

    d = np.array([2.0, 0.0]) / np.array([2.0, 1.0])
    cavs = {
        "object:a": torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]]),  # pooled (2, 0): cos 1; (0, 2): cos 0
        "random": torch.tensor([[1.0, 0, 1, 0], [-1, -1, 0, 0]]),  # pooled (1, 1): 1/sqrt 2; (-2, 0): -1
    }
    grads = {"a": torch.tensor([[1.0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 5, 5]])}  # . (1, 1, 0, 0): 2, -1, 0
    table = pd.DataFrame({"class": ["a", "a"], "concept": ["object:a", "object:b"], "tcav": [0.8, 0.4]})
    agreement, per_row = net2vec_agreement(table, cavs, grads, {"object:a": d, "object:zz": d})
    assert list(agreement["concept"]) == ["object:a"]  # a concept without CAVs is not compared
    row = agreement.iloc[0]
    assert row["cosine"] == pytest.approx(0.5) and row["cosine_std"] == pytest.approx(np.sqrt(0.5))
    assert row["random_abs_cosine"] == pytest.approx((1 / np.sqrt(2) + 1) / 2)
    assert row["net2vec_tcav"] == pytest.approx(1 / 3) and row["tcav"] == pytest.approx(0.8)
    assert row["same_side"] == 0.0 and row["category"] == "object"
    assert per_row.iloc[0] == pytest.approx(1 / 3) and np.isnan(per_row.iloc[1])
    with pytest.raises(CnnscopeError, match="3 units but the layer's activations 4 numbers"):
        net2vec_agreement(table, cavs, grads, {"object:a": np.ones(3)})


def test_net2vec_directions_undo_the_standardisation(packed):
    from cnnscope.attribution.probe_concepts import concept_name, net2vec_directions

    label = int(np.flatnonzero(packed.label_category() >= 0)[0])
    emb = {"cls_labels": np.array([label]), "cls_weight": np.array([[3.0, -1.0]])}
    emb["cls_scale"] = np.array([2.0, 4.0])
    assert np.allclose(net2vec_directions(emb, packed)[concept_name(packed, label)], [1.5, -0.25])
