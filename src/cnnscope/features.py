"""Feature extraction: one layer's activations over the packed probe set, streamed to disk.

The extract step stores what dissection needs and nothing more, in a form that does not depend on
any dissection setting (so changing the quantile or IoU mode never reruns extraction):

* ``activations.npy`` -- ``float16 (N, C, h, w)``, memory-mapped (a quarter of NetDissect-Lite's
  float64 dumps); values beyond float16's range fail loudly, with the fix (``store_dtype=float32``);
* ``maxima.npy``      -- ``float32 (N, C)``, each unit's maximum per image (top-image galleries);
* ``unit_range.npy``  -- ``float32 (2, C)``, each unit's min and max over everything (histograms).

The forward pass stops right after the requested layer, runs under ``torch.inference_mode``, batched,
channels-last, on the GPU when there is one (under autocast, fed from pinned memory) and on the CPU
otherwise. The next batch is read in a background thread while the current one runs, and images and
activations move with ``pread``/``pwrite`` (:mod:`cnnscope.rows`), so host memory stays at a few
batches however large the probe set.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnscope.artifacts import ExtractArtifact
from cnnscope.bounds import choice, positive
from cnnscope.checkpoint import CHECKPOINT_S
from cnnscope.errors import CnnscopeError
from cnnscope.io import atomic_file, read_json, write_json
from cnnscope.models.layers import resolve_layer
from cnnscope.models.registry import LoadedModel
from cnnscope.progress import track
from cnnscope.rows import Rows, RowWriter, read_rows

FLOAT16_MAX = float(np.finfo(np.float16).max)
log = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised by the capture hook: nothing after the requested layer needs to run."""


class LayerCapture:
    """Context manager: a forward hook that keeps one module's output (and leaves no hook behind).

    ``keep_graph`` keeps the copy attached to autograd (to optimise an input through it).
    """

    def __init__(self, layer: nn.Module, stop: bool = True, keep_graph: bool = False) -> None:
        self.layer, self.stop, self.keep_graph = layer, stop, keep_graph
        self.output: torch.Tensor | None = None
        self._handle = None

    def _hook(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise CnnscopeError(
                f"layer output must be a (batch, channels, height, width) tensor to dissect, got "
                f"{type(output).__name__} {getattr(output, 'shape', '')}; choose a conv layer"
            )
        kept = output if self.keep_graph else output.detach()
        self.output = kept.to(torch.float32, copy=True)  # a later in-place op cannot touch it
        if self.stop:
            raise _StopForward

    def __enter__(self) -> LayerCapture:
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with contextlib.suppress(_StopForward):
            model(x)
        assert self.output is not None, "the hooked layer was not reached by the forward pass"
        return self.output


def top_images(maxima: np.ndarray, unit: int, k: int) -> np.ndarray:
    """The indices of ``unit``'s ``k`` top-activating images, by its maximum per image (``maxima.npy``),
    ties in image order: the images the report's galleries and the unit's projections show."""
    return np.argsort(-np.asarray(maxima[:, unit]), kind="stable")[:k]


def _checkpoint(
    out: Path, acts: RowWriter, maxima: RowWriter, done: int, lo: torch.Tensor, hi: torch.Tensor
) -> None:
    """Make the arrays durable, then record (atomically) how many images they hold."""
    acts.sync()
    maxima.sync()
    with atomic_file(ExtractArtifact(out).progress) as tmp:
        write_json(tmp, {"done": done, "shape": acts.shape, "lo": lo.tolist(), "hi": hi.tolist()})


def _progress(path: Path) -> dict | None:
    """What a killed run's :func:`_checkpoint` recorded, or None (none, or unreadable: start over)."""
    if not path.is_file():
        return None
    try:
        state = read_json(path)
        if not all(k in state for k in ("done", "shape", "lo", "hi")):
            raise ValueError("keys missing")
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:
        log.info("extract: %s is unreadable (%s); starting over", path, e)
        return None
    return state


def _prefetched(
    images: Rows, starts: range, batch_size: int, pin: bool
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, uint8 batch)`` for each start, the next batch read by a background thread meanwhile.

    ``pin``: the batch is in page-locked memory, so its copy to the GPU can run asynchronously.
    """

    def load(a: int) -> torch.Tensor:
        batch = read_rows(images, a, a + batch_size)
        return batch.pin_memory() if pin else batch

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, starts[0]) if len(starts) else None
        for i, a in enumerate(starts):
            batch = pending.result()
            if i + 1 < len(starts):
                pending = pool.submit(load, starts[i + 1])
            yield a, batch


StoreDtype = choice("StoreDtype", ("float16", "float32"))  # what .npy holds (it has no bfloat16)


@dataclass
class ExtractParams:
    """How a layer's activations are computed and stored (the extract step's settings)."""

    batch_size: int = positive(64)
    amp: bool = True  # autocast on the GPU
    store_dtype: StoreDtype = StoreDtype.float16


def extract_layer(
    loaded: LoadedModel,
    layer: str,
    images: Rows,
    out: str | Path,
    params: ExtractParams | None = None,
    device: torch.device | str = "cpu",
    model_name: str = "model",
    progress: bool = True,
    checkpoint_s: float = CHECKPOINT_S,
    image_names: Sequence[str] | None = None,
) -> dict:
    """Run ``loaded`` over ``images`` (``uint8 (N, H, W, 3)``: an array or a
    :class:`~cnnscope.rows.RowReader`) and write the layer's arrays to ``out``.

    Every ``checkpoint_s`` seconds the arrays are synced and ``progress.json`` records how many images
    are done; called again on the same ``out`` (a killed job's work directory) it continues from there.
    The model is converted to channels-last in place (it is loaded for extraction): the images are
    stored that way, and both cuDNN and oneDNN run convolutions faster in it. A non-finite activation
    stops the run, naming the first image that has one (from ``image_names`` when given).
    """
    out, device = Path(out), torch.device(device)
    p = params or ExtractParams()
    batch_size, amp, store_dtype = p.batch_size, p.amp, str(p.store_dtype)
    module = resolve_layer(loaded.module, layer, model_name)
    n = len(images)
    acts = maxima = None
    lo = hi = None
    files = ExtractArtifact(out)
    start, progress_file = 0, files.progress
    state = _progress(progress_file)
    if state is not None:
        acts = RowWriter(files.activations, state["shape"], store_dtype, mode="r+")
        maxima = RowWriter(files.maxima, state["shape"][:2], np.float32, mode="r+")
        start = state["done"]
        lo, hi = (torch.tensor(state[k], device=device) for k in ("lo", "hi"))
        log.info("extract: resuming %s at image %d of %d", layer, start, n)
    last_checkpoint = time.monotonic()
    cuda = device.type == "cuda"
    loaded.module.to(memory_format=torch.channels_last)
    with LayerCapture(module) as cap, torch.inference_mode():
        batches = range(start, n, batch_size)
        for a, batch in track(
            _prefetched(images, batches, batch_size, pin=cuda),
            f"extract {layer}",
            enabled=progress,
            total=len(batches),
        ):
            x = loaded.normalize(batch.to(device, non_blocking=True))
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=amp and cuda):
                y = cap(loaded.module, x)
            if acts is None:
                shape = (n, *y.shape[1:])
                acts = RowWriter(files.activations, shape, store_dtype)
                maxima = RowWriter(files.maxima, shape[:2], np.float32)
            # One reduction and one sync serve both checks: the peak is NaN or Inf where a value is.
            peak = y.flatten(1).abs().amax(1)
            worst = peak.max().item()
            if not math.isfinite(worst):
                i = a + int((~torch.isfinite(peak)).nonzero()[0, 0])
                name = f"{image_names[i]} (index {i})" if image_names is not None else f"index {i}"
                raise CnnscopeError(
                    f"{model_name} {layer}: non-finite activations (NaN or Inf) on image {name}; "
                    "check the model's weights and that image"
                )
            if store_dtype == "float16" and worst > FLOAT16_MAX:
                raise CnnscopeError(
                    f"{model_name} {layer}: activations exceed float16's range ({FLOAT16_MAX}); "
                    "rerun extraction with store_dtype=float32"
                )
            flat = y.flatten(2)
            bmin, bmax = flat.amin(dim=(0, 2)), flat.amax(dim=(0, 2))
            lo = bmin if lo is None else torch.minimum(lo, bmin)
            hi = bmax if hi is None else torch.maximum(hi, bmax)
            maxima.write(a, flat.amax(2).cpu().numpy())
            acts.write(a, y.to(getattr(torch, store_dtype)).cpu().numpy())
            if time.monotonic() - last_checkpoint >= checkpoint_s:
                _checkpoint(out, acts, maxima, a + len(y), lo, hi)
                last_checkpoint = time.monotonic()
    shape = list(acts.shape)
    acts.close()
    maxima.close()
    np.save(files.unit_range, torch.stack([lo, hi]).cpu().numpy())
    progress_file.unlink(missing_ok=True)
    return {"n_images": n, "shape": shape, "dtype": store_dtype, "layer": layer}
