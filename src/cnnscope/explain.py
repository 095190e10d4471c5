"""Attribution maps for a researcher's own images: what ``cnnscope explain`` writes.

The maps come from :func:`cnnscope.attribution.suite.attribute`, the code the study's attribution step
runs, so a map on this page is the map the study would compute for the same image and class. Every
input is checked (methods, layer, images, target, class names) before any model work or any file, and
the output directory is written with :func:`cnnscope.io.atomic_dir`, so a failure leaves nothing.

The output directory holds ``maps.npz`` (one float32 ``(N, size, size)`` array in [0, 1] per method),
``inputs/<stem>.png`` (each image as the model saw it: resized and cropped), ``overlays/<stem>__<method>.png``
(the map over the image), ``predictions.csv``, ``index.html`` (one page, opening from disk), and each
image's *response profile* (the filter-visualisation seed's check of what a unit detects: feed an image
and plot the layer's mean activation per unit): ``responses.csv`` (image, unit, mean activation, rank,
and the unit's dissection label when given) and ``profiles/<stem>.png``.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import matplotlib
import numpy as np
import pandas as pd
import torch
from PIL import Image

from cnnscope import plots
from cnnscope.artifacts import PAGE, AttributionArtifact
from cnnscope.attribution.suite import DISPLAY_NAMES, METHODS, TRAINED, MethodParams, attribute
from cnnscope.data.rgb import read_rgb
from cnnscope.errors import CnnscopeError
from cnnscope.features import LayerCapture
from cnnscope.io import atomic_dir
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import LoadedModel

log = logging.getLogger("cnnscope")
MAPS = AttributionArtifact(".").maps.name  # the maps file, in the attribution step's format

OVERLAY_ALPHA = 0.5  # the map's weight in the overlay, as in the report's attribution gallery
OVERLAY_CMAP = "jet"
PROFILE_TOP = 5  # units named in each response profile

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;line-height:1.4}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;font-size:13px;vertical-align:top}
th{background:#f3f3f3}img{display:block;width:160px;height:160px}img.wide{width:336px}
.meta{color:#555;font-size:13px}
"""


def load_images(paths: Sequence[Path], size: int) -> np.ndarray:
    """``uint8 (N, size, size, 3)`` RGB: each image's short side resized to ``size`` (bilinear), then
    centre-cropped, so the model sees the whole central square undistorted. The EXIF orientation is
    applied first, so a phone photo is explained the way up it is viewed, and every mode is read with
    its real intensities (:mod:`cnnscope.data.rgb`). Every file is read before the caller does any
    model work, and a missing or unreadable one fails naming it."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        rgb = read_rgb(path, transpose=True)
        w, h = rgb.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        left, top = (nw - size) // 2, (nh - size) // 2
        resized = rgb.resize((nw, nh), Image.BILINEAR)
        out[i] = np.asarray(resized.crop((left, top, left + size, top + size)))
    return out


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """Each path's stem, with ``_2``, ``_3``, ... added to repeats (compared case-insensitively, for
    file systems that are), so images from different folders never overwrite each other's files."""
    used: set[str] = set()
    stems = []
    for path in paths:
        stem, n = path.stem, 1
        while stem.lower() in used:
            n += 1
            stem = f"{path.stem}_{n}"
        used.add(stem.lower())
        stems.append(stem)
    return stems


def overlay(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """``uint8 (H, W, 3)``: the image blended with the ``(H, W)`` map in [0, 1] as a colormap."""
    colors = matplotlib.colormaps[OVERLAY_CMAP](saliency)[..., :3]
    blended = (1 - OVERLAY_ALPHA) * image / 255 + OVERLAY_ALPHA * colors
    return (blended * 255).round().astype(np.uint8)


def _check_inputs(
    loaded: LoadedModel,
    layer: str,
    images: Sequence[Path],
    methods: Sequence[str],
    size: int,
    batch_size: int,
) -> None:
    """Refuse bad arguments before any image is read or any model work is done."""
    if not images:
        raise CnnscopeError("no images given; name at least one image file")
    if not methods:
        raise CnnscopeError(f"no attribution methods given; valid: {', '.join(METHODS)}")
    valid = [m for m in METHODS if m not in TRAINED]
    unknown = [m for m in methods if m not in valid]
    if unknown:
        raise CnnscopeError(
            f"unknown attribution method(s) {unknown}; valid: {', '.join(valid)} "
            f"({', '.join(sorted(TRAINED))} need an attention trained by a study's lcam step)"
        )
    if batch_size < 1 or size < 1:
        raise CnnscopeError(f"batch_size={batch_size} and size={size} must both be at least 1")
    resolve_layer(loaded.module, layer, loaded.meta.get("arch", type(loaded.module).__name__))


def _check_classes(
    num_classes: int, class_names: Sequence[str] | None, target: int | None, arch: str
) -> None:
    if class_names is not None and len(class_names) != num_classes:
        raise CnnscopeError(
            f"{len(class_names)} class names given, but {arch} has {num_classes} classes; "
            "give one name per output of the model, in its order"
        )
    if target is not None and not 0 <= target < num_classes:
        raise CnnscopeError(f"target class {target} is not one of {arch}'s classes 0..{num_classes - 1}")


def _check_units(units: int, unit_labels: Sequence[str] | None, layer: str, arch: str) -> None:
    if unit_labels is not None and len(unit_labels) != units:
        raise CnnscopeError(
            f"{len(unit_labels)} unit labels given, but layer {layer!r} of {arch} has {units} units; "
            "give the dissection of this model's layer"
        )


def _responses(profile: np.ndarray, stems: Sequence[str], unit_labels: Sequence[str] | None) -> pd.DataFrame:
    """Long table: each image's mean activation per unit, its rank in the image (1: the highest)."""
    n, units = profile.shape
    rank = np.empty_like(profile, dtype=np.int64)
    rank[np.arange(n)[:, None], np.argsort(-profile, axis=1, kind="stable")] = np.arange(1, units + 1)
    return pd.DataFrame(
        {
            "image": np.repeat(list(stems), units),
            "unit": np.tile(np.arange(units), n),
            "mean_activation": profile.ravel(),
            "rank": rank.ravel(),
            "label": np.tile(list(unit_labels), n) if unit_labels is not None else "",
        }
    )


def _class_label(index: int, class_names: Sequence[str] | None) -> str:
    return f"{index} ({class_names[index]})" if class_names is not None else str(index)


def _page(
    title: str,
    rows: pd.DataFrame,
    stems: Sequence[str],
    methods: Sequence[str],
    class_names: Sequence[str] | None,
) -> str:
    """The HTML of ``index.html``: a row per image (its prediction, the input, an overlay per method)."""

    def img(src: str, alt: str, css: str = "") -> str:
        kind = f" class='{css}'" if css else ""
        return f"<img{kind} src='{html.escape(quote(src))}' alt='{html.escape(alt)}'>"

    head = "".join(f"<th>{html.escape(DISPLAY_NAMES[m])}</th>" for m in methods)
    body = []
    for stem, r in zip(stems, rows.itertuples(), strict=True):
        predicted = html.escape(_class_label(r.predicted, class_names))
        explained = html.escape(_class_label(r.explained, class_names))
        caption = (
            f"<b>{html.escape(r.image)}</b><br>predicted {predicted}, p={r.probability:.3f}<br>"
            f"explained {explained}, p={r.explained_probability:.3f}"
        )
        cells = "".join(
            f"<td>{img(f'overlays/{stem}__{m}.png', f'{DISPLAY_NAMES[m]} of {stem}')}</td>" for m in methods
        )
        cells += f"<td>{img(f'profiles/{stem}.png', f'response profile of {stem}', 'wide')}</td>"
        body.append(
            f"<tr><td class='meta'>{caption}</td><td>{img(f'inputs/{stem}.png', stem)}</td>{cells}</tr>"
        )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><p class='meta'>Each map is "
        "scaled to [0, 1] per image and drawn over the image as the model saw it (short side resized, "
        f"centre-cropped). Maps: <a href='{MAPS}'>{MAPS}</a>; predictions: "
        "<a href='predictions.csv'>predictions.csv</a>. "
        "The response profile is the layer's mean activation per unit for the image, its top units "
        "named (and labelled by a dissection when one is given): <a href='responses.csv'>responses.csv</a>."
        f"</p><table><tr><th>image</th><th>input</th>{head}<th>response profile</th></tr>\n"
        + "\n".join(body)
        + "\n</table></body></html>\n"
    )


def explain(
    loaded: LoadedModel,
    layer: str,
    images: Sequence[Path],
    methods: Sequence[str],
    out: Path,
    size: int = 224,
    class_names: Sequence[str] | None = None,
    target: int | None = None,
    batch_size: int = 16,
    params: MethodParams | None = None,
    unit_labels: Sequence[str] | None = None,
) -> Path:
    """Explain each image's predicted class (or ``target`` for all) with every method, into ``out``.

    ``loaded.module`` must be in eval mode (as :func:`~cnnscope.models.registry.load_model` leaves
    it), so a prediction does not depend on the other images of its batch. ``layer`` is the
    class-activation layer (the last conv block); ``params``: the settings of the methods that have
    any (default: the study's defaults); ``unit_labels``: a label per unit of ``layer`` (a dissection's),
    which the response profiles name their top units by. Returns ``out``.
    """
    methods = list(dict.fromkeys(methods))  # a method named twice is computed and drawn once
    _check_inputs(loaded, layer, images, methods, size, batch_size)
    arch = loaded.meta.get("arch", type(loaded.module).__name__)
    pixels = load_images(images, size)
    device = next(loaded.module.parameters()).device
    maps: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    predicted, probability, explained, explained_probability, responses = [], [], [], [], []
    tapped = resolve_layer(loaded.module, layer, arch)
    for start in range(0, len(pixels), batch_size):
        x = loaded.normalize(torch.from_numpy(pixels[start : start + batch_size]).to(device))
        with torch.no_grad(), LayerCapture(tapped, stop=False) as cap:
            probs = loaded.module(x).softmax(1)
        responses.append(cap.output.mean((2, 3)).cpu().numpy())
        _check_classes(probs.shape[1], class_names, target, arch)
        _check_units(responses[-1].shape[1], unit_labels, layer, arch)
        top = probs.argmax(1)
        targets = top if target is None else torch.full_like(top, target)
        bad = torch.nonzero(~probs.isfinite().all(1)).flatten().tolist()
        if bad:
            raise CnnscopeError(f"{arch} gives non-finite class probabilities for {images[start + bad[0]]}")
        batch_maps, _ = attribute(loaded.module, layer, x, methods, targets, params=params)
        for m, v in batch_maps.items():
            v = v.detach().float().cpu().numpy()
            bad = np.flatnonzero(~np.isfinite(v).all((1, 2)))
            if len(bad):
                raise CnnscopeError(
                    f"{DISPLAY_NAMES[m]} gives a non-finite map for {images[start + bad[0]]} "
                    f"(model {arch}, layer {layer!r}); nothing was written"
                )
            maps[m].append(v)
        predicted += top.tolist()
        probability += probs.gather(1, top[:, None])[:, 0].tolist()
        explained += targets.tolist()
        explained_probability += probs.gather(1, targets[:, None])[:, 0].tolist()

    stems = unique_stems(images)
    rows = pd.DataFrame(
        {
            "image": [str(p) for p in images],
            "stem": stems,
            "predicted": predicted,
            "predicted_name": [class_names[c] for c in predicted] if class_names is not None else "",
            "probability": probability,
            "explained": explained,
            "explained_name": [class_names[c] for c in explained] if class_names is not None else "",
            "explained_probability": explained_probability,
        }
    )
    arrays = {m: np.concatenate(v).astype(np.float32) for m, v in maps.items()}
    profile = np.concatenate(responses)  # (N, units)
    with atomic_dir(out) as tmp:
        np.savez_compressed(tmp / MAPS, **arrays)
        (tmp / "inputs").mkdir()
        (tmp / "overlays").mkdir()
        for i, stem in enumerate(stems):
            Image.fromarray(pixels[i]).save(tmp / "inputs" / f"{stem}.png")
            for m in methods:
                Image.fromarray(overlay(pixels[i], arrays[m][i])).save(tmp / "overlays" / f"{stem}__{m}.png")
        rows.to_csv(tmp / "predictions.csv", index=False)
        _responses(profile, stems, unit_labels).to_csv(tmp / "responses.csv", index=False)
        (tmp / "profiles").mkdir()
        for i, stem in enumerate(stems):
            title = f"{stem}: mean activation per unit of {layer}"
            plots.response_profile(
                profile[i], unit_labels, PROFILE_TOP, title, tmp / "profiles" / f"{stem}.png"
            )
        title = f"cnnscope explain: {arch}, layer {layer}"
        (tmp / PAGE).write_text(_page(title, rows, stems, methods, class_names))
    log.info("explain: %d methods on %d images of %s -> %s", len(methods), len(images), arch, out)
    return Path(out)
