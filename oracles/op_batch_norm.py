"""BatchNorm: inference, training, multi-step training, gradients, and the inference affine map.

Layouts: "channels_first" (N, C, *spatial) and "channels_last" (N, *spatial, C); rank >= 2.
Statistics are per channel over the N*prod(spatial) = n elements of that channel.

Inference (running statistics mu_r, var_r fixed):
    y = gamma * (x - mu_r) / sqrt(var_r + eps) + beta
Training (batch statistics; the *biased* variance normalizes):
    mu = mean(x), var = mean((x - mu)**2)
    y = gamma * (x - mu) / sqrt(var + eps) + beta
    running statistics updated with the batch mean and `running_var_estimator`'s variance
    (biased: var; unbiased: var * n / (n - 1)) by the momentum convention `momentum_on`:
      "batch"   : new = (1 - m) * old + m * batch      (PyTorch; m = 0.1 by default)
      "running" : new = m * old + (1 - m) * batch      (Keras/TensorFlow, ONNX; m = 0.99 / 0.9)
    momentum=None is the cumulative average (PyTorch): with k = num_batches_tracked + 1 batches
    seen, new = (1 - 1/k) * old + (1/k) * batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _core
from ._core import Norm, accurate_stats
from ._view import View, as_array, channels_first_perm, check_eps, check_int, check_param, grads, tangent
from .dtypes import quiet, work
from .errors import require

MOMENTUM_ON = ("batch", "running")
ESTIMATORS = ("biased", "unbiased")


def view(x, gamma=None, beta=None, *, layout: str = "channels_first") -> View:
    """Working view: (N, C, L) with statistics over axes (0, 2), parameters shaped (1, C, 1)."""
    x = as_array("x", x, ndim_min=2)
    perm = channels_first_perm(x.ndim, layout)
    xc = x if perm is None else np.transpose(x, perm)
    n_, c = xc.shape[0], xc.shape[1]
    check_param("gamma", gamma, (c,))
    check_param("beta", beta, (c,))
    w = xc.astype(work()).reshape(n_, c, -1)
    v = View(w, Norm(axes=(0, 2)), perm, xc.shape, (c,))
    v.add_param("gamma", gamma, (1, c, 1))
    v.add_param("beta", beta, (1, c, 1))
    return v


def _check_running(name: str, a, c: int, *, nonneg: bool) -> None:
    check_param(name, a, (c,))
    if nonneg and a is not None:
        a = np.asarray(a, dtype=work())
        if np.any(a < 0):
            require(False, name, f"array with minimum {np.nanmin(a)}", "values >= 0")


def _inference_forward(x, running_mean, running_var, gamma, beta, eps, layout):
    v = view(x, gamma, beta, layout=layout)
    c = v.x.shape[1]
    _check_running("running_mean", running_mean, c, nonneg=False)
    _check_running("running_var", running_var, c, nonneg=True)
    require(running_mean is not None and running_var is not None, "running_mean/running_var", None,
            "arrays of shape (C,) for inference")
    eps = check_eps(eps)
    given = (np.asarray(running_mean, dtype=work()).reshape(1, c, 1),
             np.asarray(running_var, dtype=work()).reshape(1, c, 1))
    return v, _core.forward(v.x, v.norm, eps, v.gamma, v.beta, given=given)


def batch_norm_inference(x, running_mean, running_var, gamma=None, beta=None, *, eps: float,
                         layout: str = "channels_first") -> np.ndarray:
    """Inference-time BatchNorm with fixed running statistics; returns y (x's shape, in the
    working type: EXT unless set by `oracles.dtypes.working`).

    Raises OracleInputError for negative running_var or eps, shape mismatches, unknown layout.
    """
    v, f = _inference_forward(x, running_mean, running_var, gamma, beta, eps, layout)
    return v.back(f.y)


@dataclass(frozen=True)
class BatchNormTraining:
    """One training step: output, batch statistics, updated running statistics (working-type
    arrays, EXT by default).

    `var` is the biased batch variance (what normalizes), `rstd` = 1/sqrt(var + eps).
    running_mean/running_var are None when no running statistics were given.
    """

    y: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    rstd: np.ndarray
    running_mean: np.ndarray | None
    running_var: np.ndarray | None


def check_momentum(momentum, momentum_on, running_var_estimator) -> None:
    if momentum is not None:
        ok = isinstance(momentum, (int, float, np.floating, np.integer)) and not isinstance(momentum, (bool, np.bool_))
        require(ok and 0.0 <= float(momentum) <= 1.0, "momentum", repr(momentum),
                "a number in [0, 1] or None (cumulative average)")
    require(momentum_on in MOMENTUM_ON, "momentum_on", repr(momentum_on), f"one of {MOMENTUM_ON}")
    require(running_var_estimator in ESTIMATORS, "running_var_estimator", repr(running_var_estimator),
            f"one of {ESTIMATORS}")


def update_running(old, batch, *, momentum, momentum_on: str, num_batches_tracked: int) -> np.ndarray:
    """One running-statistic update (see the module docstring for the conventions)."""
    t = work()
    old = np.asarray(old, dtype=t)
    if momentum is None:
        w_batch = t(1) / t(num_batches_tracked + 1)
    elif momentum_on == "batch":
        w_batch = t(float(momentum))
    else:
        w_batch = 1 - t(float(momentum))
    with quiet(invalid="ignore", over="ignore"):
        return (1 - w_batch) * old + w_batch * batch


def momentum_weight(momentum, momentum_on: str, num_batches_tracked: int) -> float:
    """The weight w of the batch statistic in new = (1-w)*old + w*batch."""
    if momentum is None:
        return 1.0 / (num_batches_tracked + 1)
    return float(momentum) if momentum_on == "batch" else 1.0 - float(momentum)


def _training_forward(x, gamma, beta, eps, layout, stats):
    v = view(x, gamma, beta, layout=layout)
    eps = check_eps(eps)
    return v, _core.forward(v.x, v.norm, eps, v.gamma, v.beta, stats=stats)


def running_var_factor(n: int, running_var_estimator: str) -> np.floating:
    """n/(n-1) for the unbiased estimator (n >= 2 required), 1 for the biased one."""
    if running_var_estimator == "biased":
        return work()(1)
    require(n >= 2, "reduction size n", n,
            "n >= 2 for the unbiased running-variance estimator (n/(n-1) is undefined at n=1)")
    t = work()
    return t(n) / t(n - 1)


def batch_norm_training(x, gamma=None, beta=None, running_mean=None, running_var=None, *, eps: float,
                        momentum: float | None = 0.1, momentum_on: str = "batch",
                        running_var_estimator: str = "unbiased", num_batches_tracked: int = 0,
                        layout: str = "channels_first", _stats=accurate_stats) -> BatchNormTraining:
    """Training-mode BatchNorm: normalize with batch statistics and update the running ones.

    Conventions are explicit: `momentum_on` ("batch" | "running"), `running_var_estimator`
    ("biased" | "unbiased"), momentum=None for the cumulative average over
    `num_batches_tracked` + 1 batches. Raises OracleInputError for invalid values, for the unbiased
    estimator with n = 1, and for running statistics of the wrong shape or negative variance.
    """
    check_momentum(momentum, momentum_on, running_var_estimator)
    num_batches_tracked = check_int("num_batches_tracked", num_batches_tracked, minimum=0)
    v, f = _training_forward(x, gamma, beta, eps, layout, _stats)
    c = v.x.shape[1]
    _check_running("running_mean", running_mean, c, nonneg=False)
    _check_running("running_var", running_var, c, nonneg=True)
    require((running_mean is None) == (running_var is None), "running_mean/running_var",
            "one given", "both or neither")
    rm = rv = None
    if running_mean is not None:
        factor = running_var_factor(f.n, running_var_estimator)
        kw = dict(momentum=momentum, momentum_on=momentum_on, num_batches_tracked=num_batches_tracked)
        rm = update_running(running_mean, v.stat(f.mean), **kw)
        rv = update_running(running_var, v.stat(f.v) * factor, **kw)
    return BatchNormTraining(v.back(f.y), v.stat(f.mean), v.stat(f.v), v.stat(f.r), rm, rv)


def batch_norm_training_steps(xs, gamma=None, beta=None, running_mean=None, running_var=None, *,
                              eps: float, momentum: float | None = 0.1, momentum_on: str = "batch",
                              running_var_estimator: str = "unbiased", num_batches_tracked: int = 0,
                              layout: str = "channels_first",
                              _stats=accurate_stats) -> list[BatchNormTraining]:
    """K successive training steps over the batches xs[0..K-1] (xs: one array of shape (K, *x)).

    Step k starts from the running statistics step k-1 produced (and num_batches_tracked + k);
    returns one `BatchNormTraining` per step, so the running statistics after each step are
    `[s.running_mean for s in steps]`.
    """
    xs = as_array("xs", xs, ndim_min=3)
    require(running_mean is not None and running_var is not None, "running_mean/running_var", None,
            "arrays of shape (C,) for multi-step training")
    out = []
    rm, rv = running_mean, running_var
    for k in range(xs.shape[0]):
        s = batch_norm_training(xs[k], gamma, beta, rm, rv, eps=eps, momentum=momentum,
                                momentum_on=momentum_on, running_var_estimator=running_var_estimator,
                                num_batches_tracked=num_batches_tracked + k, layout=layout, _stats=_stats)
        out.append(s)
        rm, rv = s.running_mean, s.running_var
    return out


# --------------------------------------------------------------------------------------------------
# gradients


def batch_norm_inference_vjp(x, running_mean, running_var, gamma, beta, dy, *, eps: float,
                             layout: str = "channels_first") -> dict[str, np.ndarray]:
    """VJP of inference BatchNorm: {"x": gamma*r*dy, "gamma": sum(dy*xhat), "beta": sum(dy)}."""
    v, f = _inference_forward(x, running_mean, running_var, gamma, beta, eps, layout)
    return grads(v, f, dy)


def batch_norm_training_vjp(x, gamma, beta, dy, *, eps: float, layout: str = "channels_first"):
    """VJP of training BatchNorm's output y (through the batch statistics); see `_core.vjp`."""
    v, f = _training_forward(x, gamma, beta, eps, layout, accurate_stats)
    return grads(v, f, dy)


def batch_norm_inference_jvp(x, running_mean, running_var, gamma, beta, tx, tgamma=None, tbeta=None,
                             *, eps: float, layout: str = "channels_first") -> np.ndarray:
    """JVP of inference BatchNorm: gamma*r*tx + tgamma*xhat + tbeta."""
    v, f = _inference_forward(x, running_mean, running_var, gamma, beta, eps, layout)
    return tangent(v, f, tx, tgamma, tbeta)


def batch_norm_training_jvp(x, gamma, beta, tx, tgamma=None, tbeta=None, *, eps: float,
                            layout: str = "channels_first") -> np.ndarray:
    """JVP of training BatchNorm's output y; see `_core.jvp`."""
    v, f = _training_forward(x, gamma, beta, eps, layout, accurate_stats)
    return tangent(v, f, tx, tgamma, tbeta)


# --------------------------------------------------------------------------------------------------
# inference BatchNorm as an affine map


def affine_params(running_mean, running_var, gamma=None, beta=None, *, eps: float):
    """(scale, offset) per channel with y = scale * x + offset (inference BatchNorm):

        scale = gamma / sqrt(var_r + eps),  offset = beta - mu_r * scale
    """
    c = np.asarray(running_mean).shape[0] if np.ndim(running_mean) == 1 else -1
    require(c >= 0, "running_mean.ndim", np.ndim(running_mean), "1")
    _check_running("running_var", running_var, c, nonneg=True)
    check_param("gamma", gamma, (c,))
    check_param("beta", beta, (c,))
    eps = check_eps(eps)
    t = work()
    g = np.ones(c, dtype=t) if gamma is None else np.asarray(gamma, dtype=t)
    b = np.zeros(c, dtype=t) if beta is None else np.asarray(beta, dtype=t)
    scale = g / np.sqrt(np.asarray(running_var, dtype=t) + t(eps))
    return scale, b - np.asarray(running_mean, dtype=t) * scale


def fold_into_affine(weight, bias, running_mean, running_var, gamma=None, beta=None, *, eps: float):
    """Fold inference BatchNorm into the affine layer before it.

    The layer computes h = weight @ u + bias (weight: (C, in), bias: (C,) or None) and BatchNorm
    normalizes h's C channels; returns (weight', bias') with
    BN(weight @ u + bias) == weight' @ u + bias' for every u:
        weight' = scale[:, None] * weight,  bias' = scale * bias + offset.
    """
    w = as_array("weight", weight, ndim_min=2)
    scale, offset = affine_params(running_mean, running_var, gamma, beta, eps=eps)
    require(w.shape[0] == scale.shape[0], "weight.shape[0]", w.shape[0], f"{scale.shape[0]} (channels)")
    b = np.zeros(w.shape[0], dtype=work()) if bias is None else np.asarray(bias, dtype=work())
    check_param("bias", bias, (w.shape[0],))
    return scale.reshape((-1,) + (1,) * (w.ndim - 1)) * w.astype(work()), scale * b + offset


def _channel_shape(x: np.ndarray, layout: str) -> tuple[int, ...]:
    perm = channels_first_perm(x.ndim, layout)
    shape = [1] * x.ndim
    shape[1 if perm is None else x.ndim - 1] = -1
    return tuple(shape)


def ibp(lower, upper, running_mean, running_var, gamma=None, beta=None, *, eps: float,
        layout: str = "channels_first"):
    """Interval bound propagation through inference BatchNorm; exact (componentwise).

    For a box lower <= x <= upper (elementwise), returns (y_lo, y_hi): since y = scale*x + offset,
    y_lo = scale*lower + offset where scale >= 0 and scale*upper + offset where scale < 0, and
    symmetrically for y_hi. Both are attained at corners of the box.
    """
    lo = as_array("lower", lower, ndim_min=2)
    hi = as_array("upper", upper, ndim_min=2)
    require(lo.shape == hi.shape, "upper.shape", hi.shape, f"lower.shape {lo.shape}")
    require(bool(np.all(lo <= hi)), "lower", "values above upper", "lower <= upper elementwise")
    scale, offset = affine_params(running_mean, running_var, gamma, beta, eps=eps)
    shp = _channel_shape(lo, layout)
    s, o = scale.reshape(shp), offset.reshape(shp)
    a, b = s * lo.astype(work()) + o, s * hi.astype(work()) + o
    return np.minimum(a, b), np.maximum(a, b)


def derivative_bounds(dlower, dupper, running_mean, running_var, gamma=None, beta=None, *,
                      eps: float, layout: str = "channels_first"):
    """Bounds on d(BN(x(t)))/dt given bounds [dlower, dupper] on dx/dt: BN's Jacobian is
    diag(scale), so the result is scale * [dlower, dupper] (endpoints swapped where scale < 0)."""
    lo = as_array("dlower", dlower, ndim_min=2)
    hi = as_array("dupper", dupper, ndim_min=2)
    require(lo.shape == hi.shape, "dupper.shape", hi.shape, f"dlower.shape {lo.shape}")
    require(bool(np.all(lo <= hi)), "dlower", "values above dupper", "dlower <= dupper elementwise")
    scale, _ = affine_params(running_mean, running_var, gamma, beta, eps=eps)
    s = scale.reshape(_channel_shape(lo, layout))
    a, b = s * lo.astype(work()), s * hi.astype(work())
    return np.minimum(a, b), np.maximum(a, b)


def second_derivative_bounds(d2lower, d2upper, running_mean, running_var, gamma=None, beta=None, *,
                             eps: float, layout: str = "channels_first"):
    """Bounds on the second derivative of BN(x(t)) given bounds on x''(t): an affine map passes
    x'' through its scale (its own second derivative is zero), so this equals `derivative_bounds`
    of the x'' bounds; for a straight line x(t) (x'' = 0) the result is exactly [0, 0]."""
    return derivative_bounds(d2lower, d2upper, running_mean, running_var, gamma, beta, eps=eps,
                             layout=layout)
