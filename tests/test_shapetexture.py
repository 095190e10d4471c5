"""The shape/texture world: its cues, its stimulus sets, and the regime effect it exists to show."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SHARED
from test_steps import _step

from cnnscope.artifacts import DissectArtifact
from cnnscope.attribution import sanity
from cnnscope.attribution.localisation import CENTRE, localise, scaled_tolerance
from cnnscope.attribution.suite import attribute
from cnnscope.attribution.world_concepts import (
    CONTROL,
    WorldTcavParams,
    class_gradients,
    family_tcav,
    world_family,
)
from cnnscope.data import shapetexture
from cnnscope.data.broden import BrodenDataset
from cnnscope.data.packed import pack
from cnnscope.data.synthworld import WorldSpec, generate
from cnnscope.io import seal
from cnnscope.models.registry import LoadedModel
from cnnscope.report import page as sections
from cnnscope.report import tables
from cnnscope.report.inputs import reference_decisions
from cnnscope.shapebias import robustness
from cnnscope.shapebias.distortions import DISTORTIONS
from cnnscope.shapebias.evaluate import evaluate, evaluate_distortions, summary
from cnnscope.shapebias.stimuli import STIMULUS_SETS, load_rgb, single_cue, stimulus_sets
from cnnscope.training import WORLD_MEAN, WORLD_STD, TrainSpec, save_model, train

WORLD = shapetexture.CLASSES
# Margins of the measured facts of issue 26, below what was observed (2026-12-05, one training
# thread, the 400-image probe world; the tests below):
MARGIN_BIAS = 0.03  # shape bias, final - first snapshot at 50% clean accuracy: 0.994 - 0.928
MARGIN_DETECTORS = 4  # conv5 unique detectors, final - initialisation: standard 10 - 3, shape 9 - 3
MARGIN_UNITS = 20  # conv5 detector units, final - initialisation: standard 42 - 3, shape 36 - 3
MARGIN_ROTATED_UNITS = 1  # detector units, natural - rotated basis: standard 42 - 39, shape 36 - 24
# Margins of issue 27's facts (2026-12-05, same models): accuracy on edges, shape - standard model,
# 0.1875 - 0.0625; on texture-only images, standard - shape, 0.354 - 0.0625.
MARGIN_EDGES = 0.06
MARGIN_TEXTURE = 0.15
# In colour, pooled distorted accuracy under phase noise: standard 0.546 vs shape 0.288 (960 trials
# each); the margin is between the intervals (0.514 low vs 0.317 high).
MARGIN_PHASE = 0.15
# Issue 28's localisation facts (objects anywhere): pointing, guided backprop 1.0 and counterfactual
# Grad-CAM 0.03/0.08 vs the centre 0.44; energy in the mask, Grad-CAM 0.152/0.145 vs uniform 0.092.
MARGIN_POINTING = 0.3
MARGIN_ENERGY = 0.03
# Rank correlation with the trained model's map after the head and conv5 are randomised: Grad-CAM
# 0.18 / 0.24 (standard / shape), guided backprop 0.92 / 0.88.
MARGIN_RANDOMISED_GRADCAM = 0.4
MARGIN_RANDOMISED_GUIDED = 0.7
# TCAV of the world's textures, each class's own texture minus the other classes' (mean TCAV), conv3 /
# conv5 (2026-12-05): standard 0.696 - 0.356 / 0.637 - 0.380, shape 0.254 - 0.255 / 0.356 - 0.360;
# random control concepts significant in 0 / 0 and 0 / 3% of cells. The line between the regimes lies
# 0.13 from each side's closest gap (0.257 and -0.001).
MARGIN_TCAV_TEXTURE = 0.13
MARGIN_TCAV_CONTROLS = 0.1
MARGIN_ROTATED_IOU = (
    0.002  # mean best IoU, natural - rotated: standard 0.0513 - 0.0463, shape 0.0453 - 0.0368
)


def test_texture_agreement_follows_the_regime():
    _, shapes, textures = shapetexture.training_set(1600, 24, 0.9, seed=0)
    assert np.mean(shapes == textures) == pytest.approx(0.9, abs=0.03)
    assert np.bincount(shapes).tolist() == [100] * 16  # balanced classes
    _, shapes, textures = shapetexture.training_set(1600, 24, None, seed=0)
    assert np.mean(shapes == textures) == pytest.approx(1 / 16, abs=0.025)
    assert len(set(shapetexture.TEXTURES)) == 16


@pytest.fixture(scope="module")
def stimuli_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stimuli")
    shapetexture.write_stimuli(root, size=32, poses=5, singles=10, progress=False)
    return root


def test_world_stimuli_follow_the_published_layout(stimuli_root):
    sets = stimulus_sets(stimuli_root, WORLD)
    cc = sets["cue-conflict"]
    assert len(cc) == 1280 and len(sets["edges"]) == 160 and len(sets["silhouettes"]) == 160
    per_shape = pd.Series([s.shape for s in cc]).value_counts()
    assert (per_shape == 80).all() and len(per_shape) == 16
    assert sum(not s.conflict for s in cc) == 80


def test_a_cue_conflict_pose_differs_only_in_texture(stimuli_root):
    from PIL import Image

    d = stimuli_root / "stimuli/style-transfer-preprocessed-512/star"
    a = np.asarray(Image.open(d / "star2-circle2.png")).astype(int)
    b = np.asarray(Image.open(d / "star2-tee2.png")).astype(int)
    differs = (a != b).any(-1)
    assert 0.02 < differs.mean() < 0.5  # inside the star only; the background is shared


SNAPSHOTS = (0, 30, 100, 200, 300, 400)  # kept during training, besides the final model at STEPS
STEPS = 600


@pytest.fixture(scope="module")
def regimes(stimuli_root, tmp_path_factory) -> dict[str, dict]:
    """A world model of each regime, trained with snapshots (each saved as a checkpoint), and its
    training metrics and cue-conflict summary at every kept step (the final model's at ``STEPS``).
    Trained on one thread, as the train step does: the weights depend on the thread count."""
    root = tmp_path_factory.mktemp("regimes")
    out = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for regime in ("standard", "shape"):
        saved: dict[int, Path] = {}
        scores: dict[int, dict] = {}

        def keep(step: int, net: torch.nn.Module, regime=regime, saved=saved, scores=scores) -> None:
            saved[step] = root / f"{regime}_{step}.pt"
            save_model(net, "convnet", saved[step])
            loaded = LoadedModel(copy.deepcopy(net).eval(), WORLD_MEAN, WORLD_STD)
            scores[step] = summary(evaluate(loaded, stimuli_root, regime, WORLD, progress=False))

        spec = TrainSpec(regime=regime, steps=STEPS, image_size=32, n_train=2000, n_val=300, width=16)
        spec.snapshots = list(SNAPSHOTS)
        model, metrics = train(spec, progress=False, snapshot=keep)
        keep(STEPS, model)
        accuracy = {int(k): v["val_accuracy"] for k, v in metrics["snapshots"].items()}
        out[regime] = {
            "saved": saved,
            "cue": scores,
            "metrics": metrics,
            "accuracy": {**accuracy, STEPS: metrics["val_accuracy"]},
            "robustness": _robustness(LoadedModel(model.eval(), WORLD_MEAN, WORLD_STD), stimuli_root, regime),
            "model": LoadedModel(model.eval(), WORLD_MEAN, WORLD_STD),
        }
    torch.set_num_threads(before)
    return out


def _robustness(loaded: LoadedModel, root: Path, name: str) -> pd.DataFrame:
    """The final model's accuracy per distortion (in colour, as the default study), by the robustness
    step's code path: rows per distortion and level, then the per-curve summary."""
    originals = single_cue(root / STIMULUS_SETS["original"].folder, WORLD)
    decisions = evaluate_distortions(
        loaded, originals, load_rgb(originals), name, list(DISTORTIONS), 0, WORLD, progress=False, grey=False
    )
    rows = pd.concat([df.assign(experiment=DISTORTIONS[d].experiment) for d, df in decisions.items()])
    return robustness.curves(rows)


def test_shape_regime_gives_a_far_higher_shape_bias(regimes):
    """The world's purpose: texture is a shortcut in one regime and useless in the other."""
    std = {**regimes["standard"]["cue"][STEPS], **regimes["standard"]["metrics"]}
    shp = {**regimes["shape"]["cue"][STEPS], **regimes["shape"]["metrics"]}
    assert shp["shape_bias"] > std["shape_bias"] + 0.5, (std, shp)
    assert shp["val_accuracy_random_texture"] > 0.5, "the shape-regime model did not learn shapes"
    assert std["val_accuracy"] > 0.9 and std["val_accuracy_random_texture"] < 0.5
    assert min(std["cue_fraction"], shp["cue_fraction"]) > 0.5


def test_the_shape_model_reads_edges_and_the_standard_one_textures(regimes):
    """Issue 27, measured facts of the world (Geirhos et al. 2019, Fig. 2's types): on edges the shape
    model is the more accurate (30 vs 10 of 160 correct), on texture-only images the standard one
    (17 vs 3 of 48); the Wilson intervals do not overlap. Not asserted: silhouettes, where both are at
    chance (9 vs 14 of 160, shape vs standard; README says so)."""
    std, shp = regimes["standard"]["cue"][STEPS], regimes["shape"]["cue"][STEPS]
    assert shp["edge_accuracy"] > std["edge_accuracy"] + MARGIN_EDGES, (std, shp)
    assert std["texture_accuracy"] > shp["texture_accuracy"] + MARGIN_TEXTURE, (std, shp)
    assert min(std["original_accuracy"], shp["original_accuracy"]) > 0.8


def test_more_shape_bias_is_not_more_robustness_in_the_world(regimes):
    """Issue 27, a measured fact of the world, against the paper's claim: in colour, the standard
    (texture-biased) model keeps more accuracy under phase noise than the shape model (524 vs 276 of
    960 distorted trials at test scale; the Wilson intervals of the pooled distorted levels do not
    overlap). Not asserted: the shape model's edge under high-pass filtering (315 vs 261 of 1120),
    whose intervals overlap."""
    std, shp = regimes["standard"]["robustness"], regimes["shape"]["robustness"]

    def pooled(curves: pd.DataFrame, curve: str) -> tuple[float, float]:
        rows = curves[curves["curve"] == curve].iloc[1:]  # the distorted levels
        lo, hi = robustness.wilson(rows["correct"].sum(), rows["trials"].sum())
        return float(lo), float(hi)

    assert pooled(std, "phase")[0] > pooled(shp, "phase")[1] + MARGIN_PHASE, (std, shp)


def test_which_maps_point_at_the_object_better_than_the_centre(regimes):
    """Issue 28, measured facts of the world at test scale (objects placed anywhere, 64 images of
    32 px, the true class), against the centre point (pointing 0.44) and a uniform map (energy in the
    mask 0.092): guided backprop hits every object (1.0 in both regimes) and puts the most mass inside
    it (0.57, 0.68); counterfactual Grad-CAM, evidence against the class, points away (0.03, 0.08);
    Grad-CAM's coarse conv5 map (4 x 4 cells here) puts more mass inside the object than a uniform map
    (0.152, 0.145). Not asserted: Grad-CAM's pointing, no better than the centre at this scale (0.55,
    0.45); at the default study's 64 px it is (README)."""
    images, labels, masks = shapetexture.localisation_set(64, 32, seed=0, placement="anywhere")
    methods = ["gradcam", "guided_backprop", "counterfactual_gradcam"]
    for regime in ("standard", "shape"):
        loaded = regimes[regime]["model"]
        x = loaded.normalize(torch.from_numpy(images))
        maps, _ = attribute(loaded.module, "conv5", x, methods, torch.from_numpy(labels))
        table = localise(maps, torch.from_numpy(masks), torch.from_numpy(labels), scaled_tolerance(32))
        got = table.set_index("method")
        base = got.loc[CENTRE]
        assert got.loc["guided_backprop", "pointing"] > base["pointing"] + MARGIN_POINTING, got
        assert got.loc["counterfactual_gradcam", "pointing"] < base["pointing"] - MARGIN_POINTING, got
        assert got.loc["gradcam", "energy_mask"] > base["energy_mask"] + MARGIN_ENERGY, got
        assert got.loc["guided_backprop", "energy_mask"] > got.loc["gradcam", "energy_mask"] + MARGIN_ENERGY


def test_grad_cam_passes_the_randomisation_check_and_guided_backprop_does_not(regimes):
    """Issue 28, Adebayo et al.'s cascading randomisation, measured on the world at test scale (16
    originals, the trained model's classes): after the head and conv5 are re-initialised, Grad-CAM's
    maps have decorrelated from the trained model's while guided backprop's stay similar, as the paper
    found."""
    images, _, _ = shapetexture.localisation_set(16, 32, seed=1)
    for regime in ("standard", "shape"):
        loaded = regimes[regime]["model"]
        x = loaded.normalize(torch.from_numpy(images))
        with torch.no_grad():
            targets = loaded.module(x).argmax(1)
        methods = ["gradcam", "guided_backprop"]
        trained, _ = attribute(loaded.module, "conv5", x, methods, targets)
        for _, block, randomised in sanity.cascading(loaded.module):
            if block == "conv5":
                maps, _ = attribute(randomised, "conv5", x, methods, targets)
                rho = {m: float(np.nanmean(sanity.spearman(trained[m], maps[m]))) for m in methods}
                assert rho["gradcam"] < MARGIN_RANDOMISED_GRADCAM, rho
                assert rho["guided_backprop"] > MARGIN_RANDOMISED_GUIDED, rho
                break


def test_tcav_finds_the_standard_models_texture_shortcut_and_not_the_shape_models(regimes):
    """Issue 28, a measured fact of the world at test scale (the paper's settings: 50 images per concept,
    10 random counterparts of 10 images, 20 originals per class): the standard model's classes are
    sensitive to their own texture far more than to the other classes' textures, at conv3 and conv5;
    the shape model's are not, and the random control concepts are rarely significant. Not asserted:
    the shape model's own silhouettes (0.32 vs 0.38 at conv3, 0.53 vs 0.54 at conv5): silhouettes are
    far from the images it learned, so TCAV does not find the shape it uses (README)."""
    params = WorldTcavParams()
    family = world_family(32, params)
    for regime in ("standard", "shape"):
        loaded = regimes[regime]["model"]
        for layer in ("conv3", "conv5"):
            gradients = class_gradients(loaded, layer, 32, params)
            table = family_tcav(loaded, layer, family, gradients, params, ("texture", "shape")).table
            texture = table[table["cue"] == "texture"]
            gap = texture[texture["own"]]["tcav"].mean() - texture[~texture["own"]]["tcav"].mean()
            if regime == "standard":
                assert gap > MARGIN_TCAV_TEXTURE, (layer, gap)
            else:
                assert gap < MARGIN_TCAV_TEXTURE, (layer, gap)
            assert table[table["cue"] == CONTROL]["significant"].mean() < MARGIN_TCAV_CONTROLS


def test_shape_bias_grows_after_the_shape_model_first_classifies(regimes):
    """Issue 26, a measured fact of the world: the shape-regime model's shape bias at the end of
    training exceeds its value at the first snapshot with 50% clean accuracy."""
    shape = regimes["shape"]
    first = min(step for step, acc in shape["accuracy"].items() if acc >= 0.5)
    assert first < STEPS, shape["accuracy"]
    assert shape["cue"][STEPS]["shape_bias"] > shape["cue"][first]["shape_bias"] + MARGIN_BIAS, shape["cue"]


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    """A 400-image probe world at the models' 32 px, packed (the session's 60-image world is too
    small: the shape model's conv5 facts below flip on it)."""
    root = tmp_path_factory.mktemp("probe")
    generate(root / "world", WorldSpec(n_images=400, image_size=32, seed=3), progress=False)
    pack(BrodenDataset(root / "world"), root / "packed", progress=False)
    seal(root / "packed")
    return root / "packed"


def _detectors(root: Path, checkpoint: Path, packed_dir: str, out: str) -> dict[str, float]:
    """Conv5's unique detectors (top-label rule), detector units and mean best IoU, in the network's
    basis and (``rotated_``) in a random rotation, through the extract and dissect steps."""
    model = ("model=convnet", f"model.checkpoint={checkpoint}", "model.width=16")
    res = _step(
        "extract",
        *model,
        "layer=conv5",
        f"packed={packed_dir}",
        f"out={out}_acts",
        "progress=false",
        cwd=root,
    )
    assert res.returncode == 0, res.stderr
    res = _step(
        "dissect",
        f"activations={out}_acts",
        f"packed={packed_dir}",
        f"out={out}",
        "rotation_seed=0",
        "progress=false",
        cwd=root,
    )
    assert res.returncode == 0, res.stderr
    found = {}
    for prefix, d in (("", DissectArtifact(root / out)), ("rotated_", DissectArtifact(root / out).rotated)):
        detectors, units = pd.read_csv(d.detectors), pd.read_csv(d.units)
        found[f"{prefix}unique"] = int(detectors.loc[detectors["rule"] == "top_label", "unique"].sum())
        found[f"{prefix}units"] = int(units["detector"].sum())
        found[f"{prefix}iou"] = float(units["iou"].mean())
    return found


def test_training_makes_detectors_and_they_are_axis_aligned(regimes, probe, tmp_path):
    """Issue 26, measured facts of the world (Bau et al. 2017, Fig. 10 and §3.2): the random
    initialisation has far fewer conv5 detectors (unique and units) than the trained model, in both
    regimes, and a random rotation of the trained model's units has fewer detector units and a lower
    mean best IoU than its own basis. Not its unique detectors: the standard model has 13 in the
    rotated basis and 10 in its own (the default study too: 16 and 13), so that is not asserted."""
    counts = {
        (regime, step): _detectors(tmp_path, regimes[regime]["saved"][step], str(probe), f"{regime}{step}")
        for regime in regimes
        for step in (0, STEPS)
    }
    for regime in regimes:
        init, final = counts[(regime, 0)], counts[(regime, STEPS)]
        assert final["unique"] >= init["unique"] + MARGIN_DETECTORS, counts
        assert final["units"] >= init["units"] + MARGIN_UNITS, counts
        assert final["rotated_units"] <= final["units"] - MARGIN_ROTATED_UNITS, counts
        assert final["rotated_iou"] <= final["iou"] - MARGIN_ROTATED_IOU, counts


def test_stimuli_step_copies_a_local_checkout(tmp_path):
    res = _step(
        "stimuli",
        "source=local",
        f"path={SHARED / 'data' / 'texture-vs-shape'}",
        "out=tvs",
        "progress=false",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    sets = stimulus_sets(tmp_path / "tvs")
    assert len(sets["cue-conflict"]) == 1280
    assert (tmp_path / "tvs" / "raw-data" / "edge-experiment").is_dir()
    bad = _step("stimuli", "source=local", f"path={tmp_path}", "out=bad", cwd=tmp_path)
    assert bad.returncode == 2 and "is not a texture-vs-shape checkout" in bad.stdout + bad.stderr
    assert not (tmp_path / "bad").exists()


def test_report_section_pools_humans_and_lists_published_cnns(tmp_path):
    raw = SHARED / "data" / "texture-vs-shape" / "raw-data"
    refs = [
        str(raw / "style-transfer-512-nomask-experiment"),
        str(raw / "style-transfer-512-nomask-experiment-trained-CNNs"),
    ]
    decisions = [reference_decisions(r) for r in refs]
    table, per_class = tables.shape_bias({}, {}, decisions), tables.per_class(decisions)
    page = sections.Page(tmp_path)
    sections.shape_bias(page, table, per_class, "texture-vs-shape", {})
    saved = pd.read_csv(tmp_path / "tables" / "shape_bias.csv").set_index("decision-maker")
    assert saved.loc["humans", "shape_bias"] == pytest.approx(0.9587, abs=5e-5)
    assert saved.loc["resnet50", "shape_hits"] == 162
    assert len(pd.read_csv(tmp_path / "tables" / "shape_bias_per_class.csv")) == 3 * 16
    for fig in ("shape_bias", "shape_bias_box"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 10_000
        assert (tmp_path / "figures" / f"{fig}.svg").is_file()
    assert "Texture vs shape" in page.parts[0]


def test_report_compares_stimulus_types_and_robustness_with_the_published_raw_data(tmp_path):
    """Issue 27: the Fig. 2 analogue and the robustness section from every published experiment, read
    by the same code as a model's decisions (a world model's rows stand in for a study model)."""
    raw = SHARED / "data" / "texture-vs-shape" / "raw-data"
    folders = [
        f for f in sorted(raw.iterdir()) if f.is_dir() and f.name != "raw-data-from-generalisation-paper"
    ]
    folders += sorted((raw / "raw-data-from-generalisation-paper").iterdir())
    refs = [reference_decisions(str(f)) for f in folders]
    everyone = pd.concat(refs, ignore_index=True)
    types = tables.stimulus_types(everyone).set_index(["decision-maker", "type"])
    # Five observers on 160 originals, 48 textures; ten on 160 edges and silhouettes (na is wrong).
    assert types.loc[("humans", "original"), "trials"] == 5 * 160
    assert types.loc[("humans", "texture"), "trials"] == 5 * 48
    assert types.loc[("humans", "edges"), "trials"] == 10 * 160
    assert types.loc[("vgg", "original"), "accuracy"] == 1.0  # the paper kept images every CNN knew
    assert (types["ci_low"] <= types["accuracy"]).all() and (types["accuracy"] <= types["ci_high"]).all()
    assert (
        types.loc[("humans", "silhouettes"), "accuracy"] > types.loc[("alexnet", "greyscale"), "ci_low"] - 1
    )
    bias = tables.shape_bias({}, {}, refs)
    empty = everyone.iloc[:0]
    curves, summary = tables.robustness(empty, everyone)
    assert set(summary["decision-maker"]) == {"humans", "resnet50", "resnet50-train-60-epochs"}
    pairs = tables.bias_robustness(bias, summary).set_index("decision-maker")
    assert pairs.loc["resnet50", "distortions"] == "contrast highpass lowpass noise phase"
    assert pairs.loc["resnet50", "shape_bias"] == pytest.approx(0.2207, abs=5e-5)
    assert pairs.loc["resnet50-train-60-epochs", "mean_robustness"] > pairs.loc["resnet50", "mean_robustness"]
    page = sections.Page(tmp_path)
    sections.stimulus_types(page, tables.stimulus_types(everyone), {})
    sections.robustness(page, curves, summary, tables.bias_robustness(bias, summary), {}, set())
    for fig in ("stimulus_types", "robustness_curves", "shape_bias_robustness"):
        assert (tmp_path / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
        assert (tmp_path / "tables" / f"{fig}.csv").is_file(), fig


def test_stimuli_step_downloads_and_verifies_an_archive(tmp_path):
    """The real-stimuli download path, against a texture-vs-shape zip served on 127.0.0.1."""
    import hashlib
    import zipfile

    from test_download import _Server

    src = SHARED / "data" / "texture-vs-shape"
    zpath = tmp_path / "master.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file() and ("stimuli" in f.parts or "raw-data" in f.parts):
                zf.write(f, "texture-vs-shape-master" / f.relative_to(src))
    payload = zpath.read_bytes()
    with _Server(payload) as srv:
        res = _step(
            "stimuli",
            "source=download",
            f"url={srv.url}",
            f"sha256={hashlib.sha256(payload).hexdigest()}",
            f"size_bytes={len(payload)}",
            "cache_dir=cache",
            "out=tvs",
            "progress=false",
            cwd=tmp_path,
        )
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(stimulus_sets(tmp_path / "tvs")["cue-conflict"]) == 1280
    assert (tmp_path / "tvs" / "raw-data" / "style-transfer-512-nomask-experiment").is_dir()
    assert (
        tmp_path / "cache" / f"texture-vs-shape-{hashlib.sha256(payload).hexdigest()}.zip"
    ).read_bytes() == payload
