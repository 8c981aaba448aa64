"""The normalization every op reduces to, in extended precision, with its VJP and JVP.

Every op in `oracles` maps its input to a *working view* (a reshape/transpose of the input, no copy of
meaning) in which it is an instance of one generic map over a set of reduction axes R:

    c   = x - mean_R(x)            (centered ops)      or  c = x           (RMS, L2)
    v   = sum_R(c**2) / n_s        n_s = |R| ("mean" divisor)  or  n_s = 1 ("sum" divisor)
    r   = rscale(v, eps)           the eps convention, see `EPS_MODES`
    xhat = c * r
    y   = gamma * xhat + beta      gamma, beta broadcast in the working view

with the variance always the *biased* (population) one: normalization divides by n. All arithmetic is
in the working type `work()` (`EXT`, >= 64-bit significand, unless the evaluation chose float64, see
`oracles.dtypes`); the statistics use the corrected two-pass algorithm (Chan, Golub and LeVeque
1983) so that their error is a few units of the working type's roundoff relative to the data's
spread, not to its magnitude (docs/error-model.md derives the oracle's own error).

NaN/Inf semantics, as IEEE arithmetic on the formula gives them: a NaN anywhere in a reduction set
makes every output of that set NaN, statistics included. A +-Inf in a set of a *centered* op makes
its outputs NaN too (x - mean is inf - inf), while the reported mean is the IEEE mean (+-inf, or NaN
for mixed signs). In an *uncentered* op (RMSNorm, L2, weight norm) a +-Inf makes the set's sum of
squares inf and its scale r = 0: finite elements give (signed) zero, infinite ones NaN. Gradients
(VJP/JVP) of any set holding a NaN or Inf are NaN. Sets without a non-finite value are unaffected;
non-finite gamma/beta act elementwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .dtypes import quiet, work
from .errors import require

#: eps conventions: how epsilon enters the scale r(v).
EPS_MODES = {
    "inside": "r = 1 / sqrt(v + eps)            (BatchNorm, LayerNorm, GroupNorm, RMSNorm, ...)",
    "outside": "r = 1 / (sqrt(v) + eps)          (ONNX MeanVarianceNormalization's function body)",
    "max_norm": "r = 1 / max(sqrt(v), eps)        (torch.nn.functional.normalize)",
    "max_sumsq": "r = 1 / sqrt(max(v, eps))        (tf.math.l2_normalize)",
    "none": "r = 1 / sqrt(v)                  (ONNX LpNormalization, weight norm)",
}


@dataclass(frozen=True)
class Norm:
    """How one op normalizes its working view: reduction axes, centering, divisor, eps convention."""

    axes: tuple[int, ...]
    centered: bool = True
    divisor: str = "mean"  # "mean": v = sum/n ; "sum": v = sum
    eps_mode: str = "inside"

    def __post_init__(self):
        require(self.divisor in ("mean", "sum"), "divisor", repr(self.divisor), "'mean' or 'sum'")
        require(self.eps_mode in EPS_MODES, "eps_mode", repr(self.eps_mode), f"one of {sorted(EPS_MODES)}")


def reduction_size(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def nonfinite_sets(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Boolean (keepdims) mask of reduction sets containing a NaN or an infinity."""
    return ~np.all(np.isfinite(x), axis=axes, keepdims=True)


# --------------------------------------------------------------------------------------------------
# statistics


StatsFn = Callable[[np.ndarray, "Norm"], "tuple[np.ndarray, np.ndarray]"]


def accurate_stats(x: np.ndarray, norm: Norm) -> tuple[np.ndarray, np.ndarray]:
    """(mean, v) over `norm.axes` (keepdims) in the working type; mean is 0 for uncentered ops.

    Centered: corrected two-pass. m0 = sum(x)/n; refine m = m0 + sum(x - m0)/n; with d = x - m,
    v = (sum(d**2) - sum(d)**2/n) / n_s. The refinement makes the mean's error a few ulps (of the
    working type) of |mean| plus ulps of the spread, and the correction term removes the
    first-order effect of what error remains (Chan, Golub, LeVeque, "Algorithms for computing the sample variance", 1983).
    Uncentered: v = sum(x**2) / n_s.
    """
    axes = norm.axes
    n = reduction_size(x.shape, axes)
    ns = n if norm.divisor == "mean" else 1
    with quiet(invalid="ignore", over="ignore"):
        if not norm.centered:
            return np.zeros((1,) * x.ndim, dtype=work()), np.sum(x * x, axis=axes, keepdims=True) / ns
        m = np.sum(x, axis=axes, keepdims=True) / n
        m = m + np.sum(x - m, axis=axes, keepdims=True) / n
        d = x - m
        sd = np.sum(d, axis=axes, keepdims=True)
        v = (np.sum(d * d, axis=axes, keepdims=True) - sd * sd / n) / ns
        v = np.maximum(v, 0)  # the correction can only leave a rounding-size negative value
    return m, v


def rscale(v: np.ndarray, eps, mode: str) -> np.ndarray:
    """r(v) for one eps convention (see `EPS_MODES`); 1/0 gives inf as IEEE does."""
    v = np.asarray(v, dtype=work())
    eps = np.asarray(eps, dtype=work())
    with quiet(divide="ignore", invalid="ignore"):
        if mode == "inside":
            return 1 / np.sqrt(v + eps)
        if mode == "outside":
            return 1 / (np.sqrt(v) + eps)
        if mode == "max_norm":
            return 1 / np.maximum(np.sqrt(v), eps)
        if mode == "max_sumsq":
            return 1 / np.sqrt(np.maximum(v, eps))
        return 1 / np.sqrt(v)


def rscale_derivative(v: np.ndarray, r: np.ndarray, eps, mode: str) -> np.ndarray:
    """dr/dv. At the kink of the max conventions (sqrt(v) == eps, resp. v == eps) the floor branch
    is taken (derivative 0); frameworks differ there, so a tie is a convention, not a bug."""
    v = np.asarray(v, dtype=work())
    eps = np.asarray(eps, dtype=work())
    with quiet(divide="ignore", invalid="ignore"):
        full = -0.5 * r * r * r
        if mode in ("inside", "none"):
            return full
        if mode == "outside":
            return -0.5 * r * r / np.sqrt(v)
        if mode == "max_norm":
            return np.where(np.sqrt(v) > eps, full, 0)
        return np.where(v > eps, full, 0)


@dataclass
class Forward:
    """Intermediates of one evaluation in the working view (all in the working type, statistics
    keepdims)."""

    x: np.ndarray
    norm: Norm
    eps: float
    n: int
    mean: np.ndarray
    v: np.ndarray
    r: np.ndarray
    c: np.ndarray
    xhat: np.ndarray
    y: np.ndarray
    bad: np.ndarray  # keepdims mask of the sets whose outputs the NaN rule makes NaN
    bad_grad: np.ndarray  # keepdims mask of the sets holding any non-finite value
    gamma: np.ndarray | None
    beta: np.ndarray | None
    stats_given: bool = False
    #: quantities derived from this evaluation and cached by the error model (`errormodel.
    #: stat_errors`, keyed by precision and working type); the arrays above are never modified
    memo: dict = field(default_factory=dict, repr=False, compare=False)


def forward(
    x: np.ndarray,
    norm: Norm,
    eps: float,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    *,
    stats: StatsFn = accurate_stats,
    given: tuple[np.ndarray, np.ndarray] | None = None,
) -> Forward:
    """Evaluate the generic normalization. `given=(mean, v)` uses fixed statistics (BatchNorm
    inference) instead of computing them; then the NaN rule is IEEE's elementwise one. Computes in
    `work()`; a `stats` function's results are converted to it."""
    t = work()
    x = np.asarray(x, dtype=t)
    n = reduction_size(x.shape, norm.axes)
    if given is None:
        mean, v = (np.asarray(a, dtype=t) for a in stats(x, norm))
        bad_grad = nonfinite_sets(x, norm.axes)
        bad = bad_grad if norm.centered else np.any(np.isnan(x), axis=norm.axes, keepdims=True)
    else:
        mean, v = (np.asarray(a, dtype=t) for a in given)
        bad = bad_grad = np.zeros((1,) * x.ndim, dtype=bool)
    r = rscale(v, eps, norm.eps_mode)
    with quiet(invalid="ignore", over="ignore"):
        c = x - mean if norm.centered else x
        xhat = c * r
        y = xhat
        if gamma is not None:
            y = y * np.asarray(gamma, dtype=t)
        if beta is not None:
            y = y + np.asarray(beta, dtype=t)
    if given is None and bad.any():
        nan = t("nan")
        with quiet(invalid="ignore", over="ignore"):
            ieee_mean = np.sum(x, axis=norm.axes, keepdims=True) / n if norm.centered else mean
        mean = np.where(bad, ieee_mean, mean)
        v = np.where(bad, nan, v)
        r = np.where(bad, nan, r)
        xhat = np.where(bad, nan, xhat)
        y = np.where(bad, nan, y)
    return Forward(x, norm, eps, n, mean, v, r, c, xhat, y, bad, bad_grad,
                   None if gamma is None else np.asarray(gamma, dtype=t),
                   None if beta is None else np.asarray(beta, dtype=t), given is not None)


def _center(t: np.ndarray, axes, centered: bool) -> np.ndarray:
    return t - np.mean(t, axis=axes, keepdims=True) if centered else t


def vjp(f: Forward, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of sum(dy * y): (dx, dgamma_full, dbeta_full), all in the working view's shape.

    dgamma_full = dy * xhat and dbeta_full = dy before summing over the parameter's broadcast axes
    (`unbroadcast`). With z = gamma*dy and r' = dr/dv:

        dx = P( r*z + r' * sum_R(z*c) * 2*c/n_s ),    P = centering over R (identity if uncentered)

    which for eps "inside" is the familiar r*(z - mean(z) - xhat*mean(z*xhat)). With given
    statistics (inference) the statistics are constants: dx = r*z.
    """
    wt = work()
    dy = np.asarray(dy, dtype=wt)
    axes, norm = f.norm.axes, f.norm
    with quiet(invalid="ignore", over="ignore", divide="ignore"):
        z = dy if f.gamma is None else dy * f.gamma
        if f.stats_given:
            dx = f.r * z
        else:
            ns = f.n if norm.divisor == "mean" else 1
            rp = rscale_derivative(f.v, f.r, f.eps, norm.eps_mode)
            t = f.r * z + rp * np.sum(z * f.c, axis=axes, keepdims=True) * (2 * f.c / ns)
            dx = _center(t, axes, norm.centered)
            dx = np.where(f.bad_grad, wt("nan"), dx)
        xhat = f.xhat if f.stats_given else np.where(f.bad_grad, wt("nan"), f.xhat)
        return dx, dy * xhat, dy


def jvp(f: Forward, tx: np.ndarray, tgamma=None, tbeta=None) -> np.ndarray:
    """Directional derivative of y along (tx, tgamma, tbeta) (working view):

        dc = P(tx);  dv = 2/n_s * sum_R(c*dc);  dr = r' dv
        ty = gamma*(dc*r + c*dr) + tgamma*xhat + tbeta
    """
    t = work()
    tx = np.asarray(tx, dtype=t)
    axes, norm = f.norm.axes, f.norm
    with quiet(invalid="ignore", over="ignore", divide="ignore"):
        if f.stats_given:
            d = tx * f.r
        else:
            ns = f.n if norm.divisor == "mean" else 1
            dc = _center(tx, axes, norm.centered)
            rp = rscale_derivative(f.v, f.r, f.eps, norm.eps_mode)
            dr = rp * (t(2) / ns) * np.sum(f.c * dc, axis=axes, keepdims=True)
            d = dc * f.r + f.c * dr
        ty = d if f.gamma is None else d * f.gamma
        if tgamma is not None:
            ty = ty + np.asarray(tgamma, dtype=t) * f.xhat
        if tbeta is not None:
            ty = ty + np.asarray(tbeta, dtype=t)
        if not f.stats_given:
            ty = np.where(f.bad_grad, t("nan"), ty)
    return ty


def unbroadcast(full: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `full` over the axes where a parameter of working-view shape `shape` broadcasts."""
    axes = tuple(i for i, (a, b) in enumerate(zip(full.shape, shape)) if b == 1 and a != 1)
    if not axes:
        return full
    with quiet(invalid="ignore", over="ignore"):  # NaN/inf terms propagate as IEEE sums do
        return np.sum(full, axis=axes, keepdims=True)
