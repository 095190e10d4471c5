"""The image distortions of Geirhos et al.'s robustness experiments, at the published levels.

Geirhos et al. (NeurIPS 2018, "Generalisation in humans and deep neural networks") measured humans
and CNNs on greyscale images under parametric distortions, and Geirhos et al. (ICLR 2019, §3.3, Fig. 6)
compared ResNet-50 trained on ImageNet and on Stylized-ImageNet under the same ones. As in both papers,
every image is first converted to greyscale (luminance ``0.2125 R + 0.7154 G + 0.0721 B``, the weights
of ``skimage.color.rgb2gray`` that their code calls), values in [0, 1]; each distortion then maps a
greyscale image ``x`` to one at level ``l`` (the raw data's ``condition``), clipped to [0, 1]:

* ``contrast``: ``(1 - c)/2 + c·x`` at contrast ``c`` (labels ``c100`` … ``c01``: percent); the mean
  moves towards mid grey and the standard deviation scales by ``c``.
* ``noise``: contrast first reduced to 30%, then uniform noise ``U(-w, w)`` added per pixel (width
  ``w``). Its level 0 is therefore the 30%-contrast image, as in the papers, not the input.
* ``lowpass``: a Gaussian blur of standard deviation ``σ`` pixels, the image padded with the papers'
  background grey 0.4423 (their images' mean).
* ``highpass``: ``x - blur_σ(x)``, shifted so that its mean is that grey again; ``σ = inf`` is the
  undistorted image.
* ``phase``: uniform phase noise ``U(-w°, w°)`` added to every spatial frequency's phase, the
  amplitude spectrum kept. The noise is drawn antisymmetric (``φ(-f) = -φ(f)``) so that the inverse
  transform is real and the amplitude spectrum is kept exactly; the papers' code added independent
  noise to every frequency and kept the real part, which also perturbs the amplitudes. Antisymmetry
  leaves the zero frequency alone, so the image keeps its mean.
* ``rotation``: by 0, 90, 180 or 270 degrees.

Eidolon distortions (Koenderink et al. 2017; reach, coherence, grain) are not generated: a faithful
eidolon needs their scale-space "eidolon factory" (a DOG pyramid with partially coherent disarray at
every scale), which is more than a formula; the human eidolon data are still analysed
(:mod:`cnnscope.shapebias.robustness`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

GREY_WEIGHTS = (0.2125, 0.7154, 0.0721)  # skimage.color.rgb2gray, as the papers' code converts
BACKGROUND_GREY = 0.4423  # the papers' images' mean grey: the blur's padding, the high-pass mean
NOISE_CONTRAST = 0.3  # the noise experiment reduces contrast to 30% before adding noise
TRUNCATE = 4.0  # the blur kernel's radius in standard deviations (scipy.ndimage's default)


def greyscale(rgb: np.ndarray) -> np.ndarray:
    """``uint8 (..., H, W, 3)`` (or float in [0, 1]) -> float64 luminance ``(..., H, W)`` in [0, 1]."""
    x = rgb.astype(np.float64) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    return x @ np.asarray(GREY_WEIGHTS)


def to_uint8_rgb(grey: np.ndarray) -> np.ndarray:
    """Float greyscale ``(..., H, W)`` in [0, 1] -> ``uint8 (..., H, W, 3)``, as the images are stored."""
    return np.repeat((np.clip(grey, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def contrast(x: np.ndarray, c: float) -> np.ndarray:
    """Contrast ``c`` in [0, 1] about mid grey: ``(1 - c)/2 + c·x``."""
    return (1 - c) / 2 + c * x


def uniform_noise(x: np.ndarray, width: float, rng: np.random.Generator) -> np.ndarray:
    """Contrast reduced to 30%, then ``U(-width, width)`` added per pixel, clipped to [0, 1]."""
    noisy = contrast(x, NOISE_CONTRAST) + rng.uniform(-width, width, size=x.shape)
    return np.clip(noisy, 0, 1)


@functools.lru_cache(maxsize=32)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """``(n, n)``: entry ``[i, j]`` is the normalised Gaussian kernel's weight ``k(i - j)`` (zero past
    its truncation radius), so that ``x @ M`` blurs the rows of ``x`` with the padding left out."""
    radius = int(TRUNCATE * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    return (
        np.where(np.abs(d) <= radius, np.exp(-0.5 * (d / sigma) ** 2), 0.0)
        / np.exp(-0.5 * (taps / sigma) ** 2).sum()
    )


def gaussian_blur(x: np.ndarray, sigma: float, cval: float = BACKGROUND_GREY) -> np.ndarray:
    """Separable Gaussian blur of ``(..., H, W)`` with standard deviation ``sigma`` pixels, the image
    padded with ``cval`` and the kernel truncated at ``TRUNCATE·σ`` (``scipy.ndimage.gaussian_filter``
    with ``mode="constant"``; ``σ = 0`` is the identity). Each pass is a product with a banded matrix,
    the padding's share added as ``cval`` times the kernel weight that falls outside the image: memory
    stays that of the images however wide the kernel (at σ = 40 it spans 321 pixels)."""
    if sigma == 0:
        return x.copy()
    h, w = x.shape[-2:]
    rows, cols = _blur_matrix(h, sigma), _blur_matrix(w, sigma)
    across = x @ cols + cval * (1 - cols.sum(0))
    return rows @ across + cval * (1 - rows.sum(0))[:, None]


def low_pass(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma``, clipped to [0, 1]."""
    return np.clip(gaussian_blur(x, sigma), 0, 1)


def high_pass(x: np.ndarray, sigma: float) -> np.ndarray:
    """``x - blur_σ(x)``, shifted to the background grey's mean, clipped; ``σ = inf``: ``x``."""
    if math.isinf(sigma):
        return x.copy()
    detail = x - gaussian_blur(x, sigma)
    mean = detail.mean(axis=(-2, -1), keepdims=True)
    return np.clip(detail + (BACKGROUND_GREY - mean), 0, 1)


def _positive(n: int) -> np.ndarray:
    """The indices of the strictly positive frequencies of an ``n``-point FFT (not 0, not Nyquist)."""
    k = np.arange(n)
    return (k > 0) & (2 * k < n)


def _self_conjugate(n: int) -> np.ndarray:
    """The indices equal to their own negation: 0, and Nyquist for even ``n``."""
    k = np.arange(n)
    return (k == 0) | (2 * k == n)


def _negated(a: np.ndarray) -> np.ndarray:
    """``a`` at the negated frequency: ``out[..., i, j] = a[..., -i mod H, -j mod W]``."""
    return np.roll(np.flip(a, axis=(-2, -1)), shift=(1, 1), axis=(-2, -1))


def scramble_phase(x: np.ndarray, width: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``U(-width°, width°)`` to the phase of every spatial frequency of ``(..., H, W)`` (the same
    noise for every leading index, e.g. colour channel), keeping
    the amplitude spectrum exactly; not clipped. One half of the frequencies draws the noise and the
    other half takes its negation (``φ(-f) = -φ(f)``), so the image stays real; the self-conjugate
    frequencies (zero, Nyquist) keep their phase."""
    h, w = x.shape[-2:]
    half = _positive(h)[:, None] | (_self_conjugate(h)[:, None] & _positive(w)[None, :])
    drawn = np.where(
        half, rng.uniform(-1, 1, size=(h, w)) * math.radians(width), 0.0
    )  # one for every channel
    noise = drawn - _negated(drawn)
    return np.real(np.fft.ifft2(np.fft.fft2(x) * np.exp(1j * noise)))


def phase_noise(x: np.ndarray, width: float, rng: np.random.Generator) -> np.ndarray:
    """Phase scrambling of width ``width`` degrees, clipped to [0, 1]."""
    return np.clip(scramble_phase(x, width, rng), 0, 1)


def rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    """Rotation of ``(..., H, W)`` counter-clockwise by a multiple of 90 degrees."""
    if degrees % 90:
        raise ValueError(f"rotation by {degrees} degrees: only multiples of 90 keep the image whole")
    return np.rot90(x, k=int(degrees // 90) % 4, axes=(-2, -1)).copy()


@dataclass(frozen=True)
class Distortion:
    """One distortion: the raw data's experiment name, its levels as the raw data label them (the
    undistorted level first, then harder and harder), a label's numeric level, and the map
    ``apply(x, level, rng)`` of greyscale images ``(N, H, W)``. ``monotone``: accuracy is expected to
    fall along the levels (rotation's levels are no such order)."""

    experiment: str
    levels: tuple[str, ...]
    value: Callable[[str], float]
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    monotone: bool = True


def _percent(label: str) -> float:
    """``c05`` -> 0.05 (the contrast experiment's labels)."""
    return int(str(label).lstrip("c")) / 100


# The distortions cnnscope generates, at the levels of the published experiments (their conditions).
DISTORTIONS: dict[str, Distortion] = {
    "noise": Distortion(
        "noise",
        ("0.0", "0.03", "0.05", "0.1", "0.2", "0.35", "0.6", "0.9"),
        float,
        uniform_noise,
    ),
    "contrast": Distortion(
        "contrast-png",
        ("c100", "c50", "c30", "c15", "c10", "c05", "c03", "c01"),
        _percent,
        lambda x, c, rng: np.clip(contrast(x, c), 0, 1),
    ),
    "lowpass": Distortion(
        "lowpass", ("0", "1", "3", "5", "7", "10", "15", "40"), float, lambda x, s, rng: low_pass(x, s)
    ),
    "highpass": Distortion(
        "highpass",
        ("inf", "3.0", "1.5", "1.0", "0.7", "0.55", "0.45", "0.4"),
        float,
        lambda x, s, rng: high_pass(x, s),
    ),
    "phase": Distortion("phase-scrambling", ("0", "30", "60", "90", "120", "150", "180"), float, phase_noise),
    "rotation": Distortion(
        "rotation", ("0", "90", "180", "270"), float, lambda x, d, rng: rotate(x, d), monotone=False
    ),
}


def distort(
    images: np.ndarray, distortion: str, label: str, seed: int = 0, first: int = 0, grey: bool = True
) -> np.ndarray:
    """``uint8 (N, H, W, 3)`` images under ``distortion`` at level ``label``: made greyscale first, as
    the papers did (``grey``), or, a named variant, in colour, each channel distorted alike (the same
    phase noise in every channel, so colours stay coherent; uniform noise drawn per channel). Image
    ``i`` draws its noise from a generator seeded by (``seed``, distortion, level, ``first + i``):
    every model sees the same noise, however the images are batched."""
    d = DISTORTIONS[distortion]
    key = [seed, list(DISTORTIONS).index(distortion), d.levels.index(label)]
    x = greyscale(images) if grey else np.moveaxis(images.astype(np.float64) / 255.0, -1, 1)
    value = d.value(label)
    out = np.stack([d.apply(g, value, np.random.default_rng([*key, first + i])) for i, g in enumerate(x)])
    if grey:
        return to_uint8_rgb(out)
    return (np.clip(np.moveaxis(out, 1, -1), 0, 1) * 255).round().astype(np.uint8)
