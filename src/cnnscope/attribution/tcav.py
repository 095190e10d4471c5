"""Testing with Concept Activation Vectors (Kim et al., ICML 2018, "Interpretability Beyond Feature
Attribution: Quantitative Testing with Concept Activation Vectors").

Let ``f_l(x)`` be the output of layer ``l`` for image ``x`` (flattened to ``D`` numbers) and
``h_{l,k}`` the rest of the network up to class ``k``'s logit (the pre-softmax score, as the paper and
captum's ``TCAV`` use), so that ``logit_k(x) = h_{l,k}(f_l(x))``.

* *Concept activation vector* (CAV): a linear classifier is fitted to tell ``f_l`` of a concept's
  images (label 1) from ``f_l`` of random images (label 0); the CAV ``v_C^l`` is the unit normal of its
  decision boundary, pointing towards the concept. Here the classifier is L2-regularised logistic
  regression on the raw activations (not standardised, so that the direction lives in the layer's own
  space, where the gradients are), minimising (:func:`fit_cav`)::

      J(w, b) = 1/n sum_i log(1 + exp(-y_i (w . x_i + b))) + l2/2 ||w||^2,   y_i = +1 / -1,

  ``n`` the number of concept and random images together; the bias is not penalised. This is
  scikit-learn's ``LogisticRegression(C=1 / (n * l2))`` (and ``SGDClassifier(loss="log_loss",
  alpha=l2)``'s objective), solved exactly by Newton's method instead of by stochastic gradients.
* *Conceptual sensitivity*: the directional derivative of the logit along the CAV,
  ``S_{C,k,l}(x) = grad h_{l,k}(f_l(x)) . v_C^l`` (eq. 2).
* *TCAV score*: the fraction of class ``k``'s inputs whose logit rises along the concept,
  ``TCAV_Q = |{x in X_k : S_{C,k,l}(x) > 0}| / |X_k|`` (eq. 3); a zero derivative does not count.
* *Significance* (the paper's section 3.2): the CAV is fitted ``R`` times, against ``R`` different
  random sets, and ``R`` random CAVs are fitted the same way with one more random set in the concept's
  place. A two-sided Student's t-test (pooled variance, as the reference code's
  ``scipy.stats.ttest_ind``) compares the ``R`` TCAV scores of the concept with the ``R`` of the random
  CAVs. A table of classes x concepts tests every cell, so the p-values are Bonferroni-corrected over
  the cells, ``p_bonferroni = min(1, p * n_classes * n_concepts)``, and a cell is significant when that
  is below ``alpha``.

  The ``R`` scores of one concept all share its image set, and the null's all share one random set;
  the t-test takes them as independent samples. When the shared set is no larger than the random
  counterparts this makes the test anti-conservative: in a small synthetic world (the tanh network of
  ``tests/test_tcav.py``, ``R = 8``, one class, 100 draws) a concept drawn like the random images came
  out significant at ``alpha = 0.05`` in 35% of the draws with sets of 20 images each and in 41% with
  sets of 100, but in 4% with the concept and ``randoms[0]`` of 200 images and the counterparts of 20.
  This is the paper's procedure, kept as it is: give the concepts and ``randoms[0]`` many more images
  than each counterpart.

Where this differs from the authors' reference code (``tensorflow/tcav``):

* the reference fits scikit-learn linear classifiers (stochastic or iterative solvers with their own
  stopping rules and random shuffles); here the same kind of boundary comes from one deterministic, converged
  Newton solve, so the same activations give bit-identical CAVs;
* the reference reports the classifier's accuracy on held-out images; here
  ``cav_accuracy`` is its accuracy on the images it was fitted to (the training accuracy), which is
  optimistic: with more dimensions than images any two sets are separable, and it is usually 1.0. It is a
  check that the fit worked, not evidence that the concept is learnt; the t-test is that evidence;
* Bonferroni's ``m`` here is the table's number of cells (every class and concept tested at once),
  which is at least as conservative as correcting per class or per concept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from cnnscope.bounds import bounded, check_params
from cnnscope.errors import CnnscopeError
from cnnscope.models.layers import evaluating, resolve_layer

BETA_EPS = 1e-15  # the continued fraction has converged when a factor is this close to 1
BETA_TINY = 1e-300  # Lentz's guard against a zero denominator
BETA_MAX_TERMS = 10_000  # far more than any sample size needs (about sqrt(nu) terms)


def _run_tapped(
    model: nn.Module, layer: str, x: torch.Tensor, batch: int, targets: torch.Tensor | None
) -> torch.Tensor:
    """The layer's flattened outputs (``targets is None``) or the gradients of each image's target logit
    with respect to them, batch by batch on the model's device, returned on the CPU.

    Like :class:`cnnscope.attribution.base._Tap`, the hook hands the rest of the network a copy of the
    layer's output: an in-place operation after the layer (``ReLU(inplace=True)``) changes the copy, not
    the recorded value, and the gradient is taken at the value before it. The recorded value is a leaf
    of its own graph, so the gradient needs no parameter to require one and no ``.grad`` is touched."""
    module = resolve_layer(model, layer, type(model).__name__)
    device = next((p.device for p in model.parameters()), x.device)
    taps: list[torch.Tensor] = []

    def tap(hooked: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(targets is not None)
        taps.append(leaf)
        return leaf.clone()

    handle = module.register_forward_hook(tap)
    out = []
    try:
        with evaluating(model):
            for a in range(0, len(x), batch):
                taps.clear()
                xb = x[a : a + batch].to(device)
                if targets is None:
                    with torch.no_grad():
                        model(xb)
                    out.append(taps[0].flatten(1).float().cpu())
                    continue
                with torch.enable_grad():
                    logits = model(xb)
                    t = targets[a : a + batch].to(device=logits.device, dtype=torch.long)
                    # In eval mode each image's logit depends on its own layer output only, so the
                    # gradient of the batch's sum is every image's own gradient.
                    (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), taps[0])
                out.append(grad.flatten(1).float().cpu())
    finally:
        handle.remove()
    return torch.cat(out)


def layer_activations(model: nn.Module, layer: str, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """``(N, D)`` float32: the output of ``layer`` for each (already normalised) image, flattened; the
    model runs in eval mode (its mode is restored after), without gradients."""
    return _run_tapped(model, layer, x, batch, None)


def layer_gradients(
    model: nn.Module, layer: str, x: torch.Tensor, targets: torch.Tensor, batch: int = 64
) -> torch.Tensor:
    """``(N, D)`` float32: ``d logit_{targets_i}(x_i) / d f_l(x_i)``, the gradient of each image's target
    logit (pre-softmax, as TCAV and captum's ``TCAV``) with respect to the layer's flattened output."""
    targets = torch.as_tensor(targets)
    if targets.shape != (len(x),):
        raise CnnscopeError(f"need one target per image ({len(x)}), got shape {tuple(targets.shape)}")
    return _run_tapped(model, layer, x, batch, targets)


def _check(what: str, t: torch.Tensor, dim: int | None, min_rows: int) -> int:
    """Refuse a set of activations or gradients that is not ``(N >= min_rows, dim)`` or not finite;
    returns its ``D``."""
    if t.dim() != 2:
        raise CnnscopeError(f"{what} must be an (N, D) tensor, got shape {tuple(t.shape)}")
    if len(t) < min_rows:
        raise CnnscopeError(f"{what} has {len(t)} rows; it needs at least {min_rows}")
    if dim is not None and t.shape[1] != dim:
        raise CnnscopeError(f"{what} has {t.shape[1]} dimensions where the others have {dim}")
    if not torch.isfinite(t).all():
        raise CnnscopeError(f"{what} holds non-finite values (NaN or inf)")
    return t.shape[1]


def fit_cav(
    concept: torch.Tensor, random: torch.Tensor, l2: float = 0.01, steps: int = 100
) -> tuple[torch.Tensor, float]:
    """The concept activation vector of ``(N_c, D)`` concept activations against ``(N_r, D)`` random
    ones, and the classifier's accuracy on them.

    Minimises ``J(w, b) = 1/n sum_i log(1 + exp(-y_i (w . x_i + b))) + l2/2 ||w||^2`` (``y = +1`` for
    the concept, ``-1`` for random; ``n = N_c + N_r``; the bias unpenalised), i.e. scikit-learn's
    ``LogisticRegression(C=1 / (n * l2))``, on the raw activations. The minimiser's ``w`` is a
    combination of the centred activations (set the gradient to zero), so with ``x_i - mean = R^T Q^T``
    (a thin QR of the ``D x n`` centred activations) ``w = Q beta`` with ``||w|| = ||beta||``: Newton's
    method with a backtracking line search solves the same problem in at most ``n + 1`` unknowns, in
    float64, to convergence, the same way every time, however large ``D``.

    Returns ``(v, accuracy)``: ``v = w / ||w||``, ``(D,)`` float64, the unit normal of the boundary
    pointing towards the concept (the bias is no part of it); ``accuracy`` is the fraction of the
    ``n`` activations on the right side of the boundary, the *training* accuracy (the reference code
    reports a held-out one)."""
    if not l2 > 0:
        raise CnnscopeError(f"l2={l2} must be positive: without it separable sets have no CAV")
    dim = _check("the concept's activations", concept, None, 1)
    _check("the random activations", random, dim, 1)
    x = torch.cat([concept, random]).double()
    n = len(x)
    y = torch.cat([torch.ones(len(concept)), -torch.ones(len(random))]).double()
    q, r = torch.linalg.qr((x - x.mean(0)).T)  # centred: the bias does not fight the weights
    z = torch.cat([r.T, torch.ones(n, 1, dtype=torch.float64)], 1)  # the last unknown is the bias
    penalty = torch.full((z.shape[1],), float(l2), dtype=torch.float64)
    penalty[-1] = 0.0
    theta = torch.zeros(z.shape[1], dtype=torch.float64)
    theta[-1] = math.log(len(concept) / len(random))  # the optimum for beta = 0

    def objective(th: torch.Tensor) -> torch.Tensor:
        margins = y * (z @ th)
        return torch.logaddexp(torch.zeros_like(margins), -margins).mean() + 0.5 * (penalty * th * th).sum()

    for _ in range(steps):
        s = torch.sigmoid(-y * (z @ theta))  # each image's probability of the wrong label
        grad = z.T @ (-y * s) / n + penalty * theta
        hessian = (z.T * (s * (1 - s))) @ z / n + torch.diag(penalty)
        delta = torch.linalg.solve(hessian, -grad)
        if delta.abs().max() <= 1e-10 * (1 + theta.abs().max()):
            theta = theta + delta  # in Newton's quadratic phase: this step leaves an error ~1e-20
            break
        j, slope, t = objective(theta), float(grad @ delta), 1.0
        # Armijo's condition, with room for rounding so that the last steps are not refused.
        while objective(theta + t * delta) > j + 0.25 * t * slope + 1e-15 * abs(j):
            t /= 2
        theta = theta + t * delta
    else:
        raise CnnscopeError(f"the CAV's logistic regression did not converge in {steps} Newton steps")
    w = q @ theta[:-1]
    norm = torch.linalg.vector_norm(w)
    if norm == 0:
        raise CnnscopeError("the concept's activations cannot be told from the random ones: no CAV")
    accuracy = ((z @ theta > 0) == (y > 0)).double().mean()
    return w / norm, float(accuracy)


def directional_scores(gradients: torch.Tensor, cavs: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` gradients x ``(K, D)`` CAVs -> ``(K,)`` float64 TCAV scores: for each CAV, the
    fraction of the ``N`` inputs whose directional derivative ``S = grad . v`` is positive (Kim et al.
    eq. 2-3; zero is not). The products are taken in float64 so that a sign is not an accident of
    float32 rounding."""
    return (gradients.double() @ cavs.double().T > 0).double().mean(0)


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (Numerical Recipes' ``betacf``, by the
    modified Lentz method); it converges fast for ``x < (a + 1) / (a + b + 2)``."""
    qab, qap, qam = a + b, a + 1, a - 1

    def guard(v: float) -> float:
        return v if abs(v) >= BETA_TINY else BETA_TINY

    c, d = 1.0, 1 / guard(1 - qab * x / qap)
    h = d
    for m in range(1, BETA_MAX_TERMS + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))  # the even step
        d, c = 1 / guard(1 + aa * d), guard(1 + aa / c)
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))  # the odd step
        d, c = 1 / guard(1 + aa * d), guard(1 + aa / c)
        step = d * c
        h *= step
        if abs(step - 1) < BETA_EPS:
            return h
    raise CnnscopeError(f"the incomplete beta function I_x({a}, {b}) at x={x} did not converge")


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``, given ``x`` and ``y = 1 - x`` apart so
    that neither loses digits to the subtraction; from whichever side its continued fraction
    converges on, so that a tiny value keeps its relative precision."""
    if x <= 0:
        return 0.0
    if y <= 0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, y) / b


def ttest_ind(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Student's two-sample t-test with pooled variance, two-sided: ``(t, p)``, as
    ``scipy.stats.ttest_ind``'s default (which TCAV's reference code calls; scipy is no runtime
    dependency of cnnscope).

    ``t = (mean_a - mean_b) / sqrt(s^2 (1/n_a + 1/n_b))``, ``s^2`` the pooled variance with
    ``nu = n_a + n_b - 2`` degrees of freedom, and ``p = I_{nu / (nu + t^2)}(nu / 2, 1 / 2)``, the
    Student t distribution's two tails. Two constant samples: ``t = 0, p = 1`` when they are equal
    (scipy: NaN), ``t = +-inf, p = 0`` when they are not."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    dof = len(a) + len(b) - 2
    if min(len(a), len(b)) < 1 or dof < 1:
        raise CnnscopeError(
            f"a t-test needs two samples of 3 values or more together, got {len(a)} and {len(b)}"
        )
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        diff = a[0] - b[0]
        return (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    pooled = (((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / dof
    t = float((a.mean() - b.mean()) / math.sqrt(pooled * (1 / len(a) + 1 / len(b))))
    return t, _betainc(dof / 2, 0.5, dof / (dof + t * t), t * t / (dof + t * t))


@dataclass
class TcavParams:
    """How to test concepts: the paper's repeated CAVs and its significance test."""

    randoms: int = bounded(10, 2)  # random counterparts per concept (the paper's repeated CAVs)
    alpha: float = bounded(0.05, 0, 1, open_lo=True, open_hi=True)  # significance, before Bonferroni
    l2: float = bounded(0.01, 0, open_lo=True)  # the CAV's L2 penalty (see fit_cav)


COLUMNS = [
    "class",
    "concept",
    "tcav",
    "tcav_std",
    "random_tcav",
    "p",
    "p_bonferroni",
    "significant",
    "cav_accuracy",
]


def _fit_against(
    concept: torch.Tensor, randoms: list[torch.Tensor], l2: float
) -> tuple[torch.Tensor, list[float]]:
    """``(R, D)`` CAVs of one concept against each random set, and their accuracies."""
    fits = [fit_cav(concept, r, l2) for r in randoms]
    return torch.stack([v for v, _ in fits]), [acc for _, acc in fits]


def tcav(
    concepts: dict[str, torch.Tensor],
    randoms: list[torch.Tensor],
    gradients: dict[str, torch.Tensor],
    params: TcavParams,
) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """The TCAV table of every class and concept, with the CAVs behind it.

    ``concepts``: concept name -> ``(N_c, D)`` layer activations of its images; ``randoms``: at least
    ``params.randoms + 1`` sets of ``(N_r, D)`` activations of random images (the first ``R + 1`` are
    used: ``randoms[0]`` stands in for a concept to make the null distribution, ``randoms[1:]`` are the
    counterparts); ``gradients``: class name -> ``(N_k, D)`` gradients of that class's logit for its
    images (:func:`layer_gradients`).

    Returns one row per (class, concept), classes and concepts in the given order: ``tcav`` and
    ``tcav_std`` (the mean and sample standard deviation of the ``R`` TCAV scores), ``random_tcav``
    (the mean of the ``R`` random CAVs' scores), ``p`` (the two-sided t-test between the two),
    ``p_bonferroni`` (times the table's cells, at most 1), ``significant`` (``p_bonferroni < alpha``)
    and ``cav_accuracy`` (the mean training accuracy of the concept's CAVs); and the CAVs, concept name
    -> ``(R, D)``, and ``"random"`` -> the ``(R, D)`` random CAVs. The same inputs give bit-identical
    outputs."""
    check_params(params)
    n = params.randoms
    if not concepts or not gradients:
        raise CnnscopeError("TCAV needs at least one concept and one class")
    if "random" in concepts:
        raise CnnscopeError("no concept may be called 'random': that name is the random CAVs'")
    if len(randoms) < n + 1:
        raise CnnscopeError(f"TCAV with randoms={n} needs {n + 1} random sets, got {len(randoms)}")
    dim = _check("random set 0", randoms[0], None, 2)
    for i, acts in enumerate(randoms[1 : n + 1], start=1):
        _check(f"random set {i}", acts, dim, 2)
    for name, acts in concepts.items():
        _check(f"concept {name!r}", acts, dim, 2)
    for name, grads in gradients.items():
        _check(f"the gradients of class {name!r}", grads, dim, 1)

    counterparts = randoms[1 : n + 1]
    random_cavs, _ = _fit_against(randoms[0], counterparts, params.l2)
    fitted = {name: _fit_against(acts, counterparts, params.l2) for name, acts in concepts.items()}
    cells = len(gradients) * len(concepts)
    rows = []
    for cls, grads in gradients.items():
        null = directional_scores(grads, random_cavs).numpy()
        for name, (cavs, accuracies) in fitted.items():
            scores = directional_scores(grads, cavs).numpy()
            _, p = ttest_ind(scores, null)
            p_bonferroni = min(1.0, p * cells)
            rows.append(
                {
                    "class": cls,
                    "concept": name,
                    "tcav": float(scores.mean()),
                    "tcav_std": float(scores.std(ddof=1)),
                    "random_tcav": float(null.mean()),
                    "p": p,
                    "p_bonferroni": p_bonferroni,
                    "significant": p_bonferroni < params.alpha,
                    "cav_accuracy": float(np.mean(accuracies)),
                }
            )
    cavs_out = {name: cavs for name, (cavs, _) in fitted.items()}
    cavs_out["random"] = random_cavs
    return pd.DataFrame(rows, columns=COLUMNS), cavs_out
