"""The 16 entry-level classes of the cue-conflict experiments and their ImageNet-1k indices.

These are the facts of Geirhos et al. (ICLR 2019) and their published toolbox (model-vs-human):
which ImageNet classes make up each of the 16 categories (207 indices, no overlaps). A model with a
1000-way ImageNet head decides among the 16 by the toolbox's rule: softmax over the 1000 logits,
the **mean** probability over each category's indices, then the argmax over the 16 means.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

CLASSES: tuple[str, ...] = (
    "airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat",
    "chair", "clock", "dog", "elephant", "keyboard", "knife", "oven", "truck",
)  # fmt: skip

IMAGENET_INDICES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (
        8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89, 90, 91,
        92, 93, 94, 95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135, 136, 137, 138, 139,
        140, 141, 142, 143, 144, 145
    ),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": (
        152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169,
        170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187,
        188, 189, 190, 191, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 205, 206, 207,
        208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 225,
        226, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239, 240, 241, 243, 244, 245,
        246, 247, 248, 249, 250, 252, 253, 254, 255, 256, 257, 259, 261, 262, 263, 265, 266, 267,
        268
    ),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}  # fmt: skip


def aggregate(probabilities: torch.Tensor) -> torch.Tensor:
    """``(N, 1000)`` ImageNet probabilities -> ``(N, 16)`` mean probability per category."""
    if probabilities.shape[-1] != 1000:
        raise ValueError(f"expected 1000 ImageNet probabilities, got {probabilities.shape[-1]}")
    return torch.stack([probabilities[:, list(IMAGENET_INDICES[c])].mean(1) for c in CLASSES], dim=1)


def head_problem(
    outputs: int, classes: Sequence[str], class_names: Sequence[str] | None = None
) -> str | None:
    """Why a head with ``outputs`` logits (named ``class_names``, when known) cannot decide among
    ``classes``; ``None`` when it can (see :func:`decide`)."""
    if class_names is not None and len(class_names) != outputs:
        return f"its classes file names {len(class_names)} classes but it has {outputs} outputs"
    if class_names is not None and set(classes) <= set(class_names):
        return None
    if outputs == len(classes) or (outputs == 1000 and tuple(classes) == CLASSES):
        return None
    return (
        f"it has {outputs} outputs; cue-conflict decisions need a head whose classes file names all "
        f"{len(classes)} classes, one logit per class in their order ({len(classes)}), or, for the 16 "
        "ImageNet categories, the 1000 ImageNet classes"
    )


def decide(
    logits: torch.Tensor, classes: Sequence[str] = CLASSES, class_names: Sequence[str] | None = None
) -> list[str]:
    """The decision per image among ``classes``: a head whose ``class_names`` include them all decides
    by the argmax over those classes' logits (any order; other classes ignored); a head with one logit
    per class is used directly, in the order of ``classes``; 1000 ImageNet logits (for the 16 ImageNet
    categories) go through :func:`aggregate`."""
    problem = head_problem(logits.shape[-1], classes, class_names)
    if problem is not None:
        raise ValueError(problem)
    if class_names is not None and set(classes) <= set(class_names):
        idx = logits[:, [list(class_names).index(c) for c in classes]].argmax(1)
    elif logits.shape[-1] == len(classes):
        idx = logits.argmax(1)
    else:
        idx = aggregate(logits.float().softmax(1)).argmax(1)
    return [classes[i] for i in idx.tolist()]
