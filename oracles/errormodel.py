"""How far an honest implementation may stray: per-element error bounds and the error/bound ratio.

An *honest* implementation computes the exact formula of `_core` in floating point: statistics by any
summation order (recursive, pairwise, blocked, reversed), by Welford's update or by the two-pass
algorithm; the scale r by sqrt then divide, rsqrt, or the reciprocal; y by (x - mu) * r * gamma + beta
or by the folded x * scale + shift. It reads its inputs exactly (they are representable in the case's
format), accumulates in the `accum` format, does elementwise math in `elementwise`, and rounds its
outputs to the case's `dtype`. The bounds below are first-order worst-case bounds for every such
algorithm, with modest safety factors; docs/error-model.md gives the derivation term by term.

Notation (per reduction set R of n elements, in the working view of `_core`):
    u_a, u_e, u_o   unit roundoffs of accumulation, elementwise and output formats
    eta_*           smallest subnormals (absolute error floor of underflow)
    g(k, u)         = k*u / (1 - k*u), Higham's gamma_k (inf when k*u >= 1)
    M = max_R |x|,  Rng = max_R |x - mu|

Statistics (computed from data):
    e_mu = g(2n+2, u_a) * M + (n+9) eta_a / 4                          |mu^ - mu|
    D_v  = g(n+4, u_a) * v + 4 e_mu Rng + e_mu**2 + (n+2) eta_a         |v^ - v|  (centered)
    D_v  = g(2n+2, u_a) * v + (n+2) eta_a / n_s + eta_a                 (uncentered: mean square/sum)
Scale r = rscale(v, eps): r is decreasing in v and eps, so the honest r^ lies between
    r(v + D_v, eps(1+u_eps)) and r(max(v - D_v, 0), eps(1-u_eps)),
    rho_r = that interval's largest relative deviation from r, then + g(5, u_e) (1 + rho_r)
    (eps add, sqrt, divide or rsqrt with its refinement).
Normalized value and output:
    Dc_i    = e_mu + g(2, u_e) (|x_i| + |mu|)                          error of the centered value
    Dxhat_i = r Dc_i (1 + rho_r) + |c_i| r rho_r + g(1, u_e)|xhat_i| + eta_e
    B(y_i)  = [|gamma| Dxhat_i + g(2, u_e)(|gamma xhat_i| + |beta|) + 3 eta_e
               + eta_e (|x_i| + |mu|)](1 + u_o) + u_o|y_i| + eta_o       (last term: folded scale underflow)
With given statistics (BatchNorm inference) e_mu = D_v = 0.

A bound of +inf marks an element no honest implementation can pin down, and any value, NaN
included, agrees there (`error_ratio`):
  - the scale is infinite (zero variance with eps = 0, a variance below the summation error with
    eps = 0) or its derivative is (eps outside the root at v = 0, for gradients);
  - an intermediate of one of the algorithms above may overflow the working format although the
    output does not (`_stat_overflow`, `_grad_overflow`, the folded form's x * scale, a parameter
    gradient's terms, a running statistic stored as inf by the previous step). Typical: float32
    LayerNorm of values near 1e20 (sum of squares = inf), float32 gradients with r**3 = inf.
Where the reference is NaN outside those sets, the NaN comes from a non-finite input and the bound is
0 (`_pin_nan`): a finite output there is a NaN-pattern difference.

Calibration: tests/oracles/test_calibration.py runs honest float32/float64 implementations of every
op and mode (tests/oracles/honest.py) on hostile regimes; benchmarks/calibration.py prints the ratios.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import _core, _fused
from ._core import Forward, rscale, rscale_derivative, unbroadcast
from .dtypes import DEFAULT_ACCUMULATION, DTYPES, EXT, dtype as _dtype, quiet, work, working

#: +inf as a Python float: numpy treats it as a weak scalar, so it takes the working type of the
#: arrays it meets (an `EXT` constant here would turn a float64 evaluation into a longdouble one).
INF = float("inf")


@dataclass(frozen=True)
class Precision:
    """The formats an honest implementation uses: inputs/outputs, accumulation, elementwise, eps.

    `Precision.of("float16")` gives the defaults: half formats accumulate and compute elementwise in
    float32, the others in their own format; eps is rounded to the elementwise format.

    `ftz`: the implementation flushes subnormal inputs and results to zero (FTZ/DAZ, as
    TensorFlow's CPU thread pools do). Every absolute underflow floor of the model (eta, half a
    subnormal spacing per rounding) then becomes the format's smallest *normal* number: a value
    below it may be read or produced as zero.
    """

    dtype: str
    accum: str
    elementwise: str
    eps_format: str
    ftz: bool = False

    @classmethod
    def of(cls, dtype: str, *, accum: str | None = None, elementwise: str | None = None,
           eps_format: str | None = None, ftz: bool = False) -> "Precision":
        _dtype(dtype)
        accum = accum or DEFAULT_ACCUMULATION[dtype]
        elementwise = elementwise or accum
        return cls(dtype, _dtype(accum).name, _dtype(elementwise).name,
                   _dtype(eps_format or elementwise).name, bool(ftz))

    def _eta(self, name: str) -> np.floating:
        d = _dtype(name)
        return work()(2 * d.tiny if self.ftz else d.eta)

    @property
    def u_a(self): return work()(_dtype(self.accum).u)

    @property
    def u_e(self): return work()(_dtype(self.elementwise).u)

    @property
    def u_o(self): return work()(_dtype(self.dtype).u)

    @property
    def u_eps(self): return work()(_dtype(self.eps_format).u)

    @property
    def working_type(self) -> type:
        """The type an oracle evaluation for this precision works in: numpy.float64 when every
        format (inputs/outputs, accumulation, elementwise, eps) is float32 or narrower, else `EXT`.

        The oracle's own error must stay far below the finest of these formats' unit roundoffs:
        float64's 2**-53 is 2**29 below float32's 2**-24 (and more below the half formats'), while
        a format as fine as float64 needs `EXT` (docs/error-model.md, "The oracle's own error")."""
        formats = (self.dtype, self.accum, self.elementwise, self.eps_format)
        coarse = all(DTYPES[f].p <= DTYPES["float32"].p for f in formats)
        return np.float64 if coarse else EXT

    @property
    def eta_eps(self): return self._eta(self.eps_format)

    @property
    def eta_a(self): return self._eta(self.accum)

    @property
    def eta_e(self): return self._eta(self.elementwise)

    @property
    def eta_o(self): return self._eta(self.dtype)


def g(k, u) -> np.floating:
    """Higham's gamma_k = k u / (1 - k u); +inf when k u >= 1 (in the working type)."""
    t = work()
    ku = t(k) * t(u)
    return ku / (1 - ku) if ku < 1 else t(INF)


def _clean(b: np.ndarray) -> np.ndarray:
    """NaN in a bound (inf * 0 and the like) means 'unconstrained'."""
    b = np.asarray(b, dtype=work())
    return np.where(np.isnan(b), INF, b)


def _out(pre: np.ndarray, value: np.ndarray, p: Precision) -> np.ndarray:
    """Add the final rounding to the output format."""
    with quiet(invalid="ignore", over="ignore"):
        return _clean(pre * (1 + p.u_o) + p.u_o * np.abs(value) + p.eta_o)


@dataclass
class StatErrors:
    """Bounds on the statistics an honest implementation computes (keepdims, working view)."""

    e_mu: np.ndarray
    d_v: np.ndarray
    rho_r: np.ndarray
    dc: np.ndarray     # error of the centered value, per element
    dxhat: np.ndarray  # error of xhat, per element
    free: np.ndarray   # keepdims mask of unconstrained sets: r infinite, or an intermediate overflows
    free_x: np.ndarray  # per element: free, or (given statistics) x - mu overflows


def _limit(p: Precision, k: int) -> np.floating:
    """Magnitude above which a quantity computed with k roundings in the accumulation format (a
    reduction) and a few in the elementwise format may round to infinity, stored in the smaller
    of the two formats. (The k roundings are the accumulation's: charging them at the elementwise
    unit roundoff made every set of a half-elementwise path with n >= 2048 'overflow'.)"""
    return _limit_in(p, k, work())


@functools.lru_cache(maxsize=4096)
def _limit_in(p: Precision, k: int, t: type) -> np.floating:
    """`_limit` in working type `t` (a function of its arguments only: cached)."""
    thr = min(overflow_threshold(p.accum), overflow_threshold(p.elementwise))
    return thr / ((1 + g(k, p.u_a)) * (1 + g(4, p.u_e)))


def _big(a, lim) -> np.ndarray:
    """a >= lim for finite a: an overflow due to magnitude (an infinite a comes from a non-finite
    input, which the NaN rule or IEEE propagation handles, not from an overflow)."""
    a = np.asarray(a)
    return np.isfinite(a) & (a >= lim)


def _stat_overflow(f: Forward, p: Precision) -> np.ndarray:
    """Keepdims mask of the sets where an honest algorithm's statistics may overflow.

    Derivation. The algorithms of the module docstring form these intermediates (exact values;
    each is computed with at most n + 4 roundings, hence the margin of `_limit`):
      - partial sums of x (mean by any summation order, Welford's running mean): |.| <= n M;
      - the squares and the partial sums of squares, sum_R c**2 = n_s v (two-pass, sum * 1/n),
        and Welford's increments d * (x - m) <= (2 Rng)**2 (d = x - m_old, |m_old| within the data);
      - uncentered: the squares x**2 and their sums, <= n_s v.
    Where one of them reaches the working format's overflow threshold, an honest implementation
    returns inf, 0 or NaN (e.g. float32 LayerNorm of values near 1e20: sum c**2 = inf, r = 0,
    y = beta), which no first-order term describes: such a set is unconstrained. Sets with a
    non-finite input follow the NaN rule instead. (Given statistics: see `stat_errors`, x - mu_r.)
    """
    norm, n = f.norm, f.n
    ns = n if norm.divisor == "mean" else 1
    if f.stats_given:
        return np.zeros(np.shape(f.v), dtype=bool)
    with quiet(invalid="ignore", over="ignore"):
        big_m = np.max(np.abs(f.x), axis=norm.axes, keepdims=True)
        lim = _limit(p, n + 4)
        ovf = ns * f.v >= lim
        if norm.centered:
            rng = np.max(np.abs(f.c), axis=norm.axes, keepdims=True)
            ovf = ovf | (n * big_m >= lim) | (4 * rng * rng >= lim)
        else:
            ovf = ovf | (big_m * big_m >= lim)
    return ovf & ~f.bad_grad


def stat_errors(f: Forward, p: Precision) -> StatErrors:
    """The statistics' error bounds (module docstring) for one evaluation (computed once per
    evaluation, precision and working type: the bounds of every output share them)."""
    key = ("stat_errors", p, work())
    if key not in f.memo:
        f.memo[key] = _stat_errors(f, p)
    return f.memo[key]


@dataclass
class SetErrors:
    """The per-set part of `StatErrors` (keepdims, working view): what the fused kernel needs."""

    e_mu: np.ndarray
    d_v: np.ndarray
    rho_r: np.ndarray
    free: np.ndarray


def set_errors(f: Forward, p: Precision) -> SetErrors:
    """The statistics' per-set error bounds (module docstring), cached like `stat_errors`."""
    key = ("set_errors", p, work())
    if key not in f.memo:
        f.memo[key] = _set_errors(f, p)
    return f.memo[key]


def _set_errors(f: Forward, p: Precision) -> SetErrors:
    norm, n = f.norm, f.n
    ns = n if norm.divisor == "mean" else 1
    ua, ue = p.u_a, p.u_e
    zero = np.zeros_like(f.v)
    ovf = _stat_overflow(f, p)
    with quiet(invalid="ignore", over="ignore", divide="ignore"):
        if f.stats_given:
            e_mu, d_v = zero, zero
        elif norm.centered:
            big_m = np.max(np.abs(f.x), axis=norm.axes, keepdims=True)
            rng = np.max(np.abs(f.c), axis=norm.axes, keepdims=True)
            # underflow floor: two-pass rounds once below the smallest normal (sums of subnormals
            # are exact), but Welford's m += d / k rounds at every step, eta_a / 2 each, and the
            # error of step k reaches m_n damped by k / n: sum_k (eta_a / 2) k / n = (n+1) eta_a / 4
            e_mu = g(2 * n + 2, ua) * big_m + (n + 9) * p.eta_a / 4
            d_v = g(n + 4, ua) * f.v + 4 * e_mu * rng + e_mu * e_mu + (n + 2) * p.eta_a
        else:
            e_mu = zero
            d_v = g(2 * n + 2, ua) * f.v + (n + 2) * p.eta_a / ns + p.eta_a
        if ue > ua and not f.stats_given:
            # an elementwise format coarser than the accumulator: the mean is materialized in it
            # (one rounding, u_e |mu|) and the deviations and their squares are formed in it
            # before being accumulated (g(2, u_e) v); e.g. tf.nn in bfloat16
            e_mu = e_mu + ue * np.abs(f.mean) + p.eta_e
            d_v = d_v + g(2, ue) * f.v + 2 * p.eta_e
        rho = _scale_deviation(f, d_v, p)
        rho = rho + g(5, ue) * (1 + rho)
        e_mu, d_v, rho = (np.where(ovf, INF, a) for a in (e_mu, d_v, rho))
    return SetErrors(e_mu, d_v, rho, ovf | np.isinf(f.r))


def _stat_errors(f: Forward, p: Precision) -> StatErrors:
    se = set_errors(f, p)
    norm, ue = f.norm, p.u_e
    e_mu, d_v, rho, free = se.e_mu, se.d_v, se.rho_r, se.free
    with quiet(invalid="ignore", over="ignore", divide="ignore"):
        ax = np.abs(f.x)
        if norm.centered:
            dc = e_mu + g(2, ue) * (ax + np.abs(f.mean))
        else:
            dc = np.zeros_like(ax)
        dxhat = f.r * dc * (1 + rho) + np.abs(f.c) * f.r * rho + g(1, ue) * np.abs(f.xhat) + p.eta_e
        free_x = free
        if f.stats_given:
            # c = x - mu_r may overflow (finite x and mu_r of opposite signs near the format's
            # maximum): that element is unconstrained (elementwise, as IEEE is with given statistics)
            c_ovf = _big(ax + np.abs(f.mean), _limit(p, 1))
            free_x = free | c_ovf
            dxhat = np.where(c_ovf, INF, dxhat)
        # xhat itself may overflow although what is made of it does not: with given statistics
        # (x far from mu_r, running_var + eps tiny) or a tiny eps, an honest y = xhat * gamma + beta
        # with a small gamma, a JVP's tgamma * xhat or a VJP's dy * xhat passes through inf
        # (measured: BatchNorm inference JVP in float32, |x - mu_r| r ~ 4e39): unconstrained there.
        xhat_ovf = _big(np.abs(f.c) * f.r * (1 + rho), _limit(p, 2))
        free_x = free_x | xhat_ovf
        dxhat = np.where(xhat_ovf, INF, dxhat)
    return StatErrors(e_mu, d_v, rho, dc, _clean(dxhat), free, free_x)


def _scale_deviation(f: Forward, d_v: np.ndarray, p: Precision) -> np.ndarray:
    """The largest relative deviation of r = rscale(v, eps) over v +- D_v and eps rounded to its
    format (keepdims, working type): rho_r before the rounding term of r itself.

    eps rounded to its format lies in [eps (1 - u_eps) - eta_eps / 2, eps (1 + u_eps) + eta_eps / 2]
    (relative u_eps, or half a subnormal spacing below the normal range); r decreases in v and eps,
    so the honest r lies between r_lo = r(v + D_v, eps_hi) and r_hi = r(max(v - D_v, 0), eps_lo).

    Computed in EXT whatever the working type: r_hi / r - 1 and 1 - r_lo / r are differences of
    numbers near 1, whose rounding error is a few units of the computing type's unit roundoff in
    absolute terms, while rho_r can be as small as g(5, u_e) ~ 2**-21.7 (float32 elementwise). In
    float64 that would be ~1e-9 of the bound; in EXT it is ~2**-42. There is one value per
    reduction set, so this costs little (v, D_v and eps are converted exactly)."""
    t = work()
    with working(EXT), quiet(invalid="ignore", over="ignore", divide="ignore"):
        v, dv, eps = np.asarray(f.v, dtype=EXT), np.asarray(d_v, dtype=EXT), EXT(f.eps)
        eps_lo = np.maximum(eps * (1 - p.u_eps) - p.eta_eps / 2, 0)
        eps_hi = eps * (1 + p.u_eps) + p.eta_eps / 2
        r = rscale(v, eps, f.norm.eps_mode)  # f.r in EXT (bitwise f.r when working in EXT)
        r_hi = rscale(np.maximum(v - dv, 0), eps_lo, f.norm.eps_mode)
        r_lo = rscale(v + dv, eps_hi, f.norm.eps_mode)
        rho = np.maximum(r_hi / r - 1, 1 - r_lo / r)
        rho = np.where(np.isfinite(r_hi) & np.isfinite(f.r) & (f.r > 0), rho, INF)
        return rho.astype(t)  # past float64's range only in contrived cases: the range guard raises


def forward_bounds(f: Forward, p: Precision) -> dict[str, np.ndarray]:
    """Bounds for y and the statistics (keys "y", "mean", "v", "r"; working view, stats keepdims).

    In float64 the bound of y is one pass of the fused kernel `_fused` (the same operations as the
    numpy code below, bitwise the same results)."""
    if _fused.active(work()):
        return _forward_bounds_fused(f, p)
    s = stat_errors(f, p)
    ue = p.u_e
    with quiet(invalid="ignore", over="ignore"):
        ag = 1 if f.gamma is None else np.abs(f.gamma)
        ab = 0 if f.beta is None else np.abs(f.beta)
        ax, am = np.abs(f.x), np.abs(f.mean)
        pre = ag * s.dxhat + g(2, ue) * (ag * np.abs(f.xhat) + ab) + 3 * p.eta_e
        # Folded form y = x * scale + shift, scale = gamma * r, shift = beta - mu * scale:
        # (1) scale may underflow (|gamma| r below the smallest normal), an absolute error of at
        #     most eta_e / 2 that x * scale and mu * scale multiply by |x| and |mu|;
        # (2) x * scale, mu * scale and shift may overflow although y does not (|mu| r |gamma| is
        #     |mu| / std times |gamma|, 1e7 * |gamma| for a float32 large-mean set): unconstrained.
        pre = pre + (ax + am) * p.eta_e
        fold_free = _big(np.maximum(ax, am) * f.r * ag + ab, _limit(p, 3)) | _big(f.r * ag, _limit(p, 1))
        y = _out(np.where(fold_free, INF, pre), f.y, p)
    return {"y": _pin_nan(_zero_where_bad(f, y), f.y, s.free_x | fold_free), **_stat_bounds(f, p, s)}


def _forward_bounds_fused(f: Forward, p: Precision) -> dict[str, np.ndarray]:
    """`forward_bounds` with the bound of y from `_fused` (the per-set bounds as in numpy)."""
    s = set_errors(f, p)
    ue = p.u_e
    zero = _decided_sets(f)
    with quiet(invalid="ignore", over="ignore", divide="ignore"):
        y = _fused.kernels().y_bound(
            f.x, f.c, f.xhat, f.y, 1.0 if f.gamma is None else f.gamma, 0.0 if f.beta is None else f.beta,
            f.mean, f.r, s.e_mu, s.rho_r, s.free, False if zero is None else zero, g(1, ue), g(2, ue),
            p.eta_e, 3 * p.eta_e, p.u_o,
            p.eta_o, _limit(p, 1), _limit(p, 2), _limit(p, 3), f.norm.centered, f.stats_given)
    return {"y": y, **_stat_bounds(f, p, s)}


def _stat_bounds(f: Forward, p: Precision, s) -> dict[str, np.ndarray]:
    """The bounds of the statistics outputs "mean", "v", "r" (keepdims) from the set errors `s`."""
    with quiet(invalid="ignore", over="ignore"):
        out = {
            "mean": _out(s.e_mu + p.u_a * np.abs(f.mean), f.mean, p),
            "v": _out(s.d_v, f.v, p),
            "r": _out(f.r * s.rho_r, f.r, p),
        }
    values = {"mean": f.mean, "v": f.v, "r": f.r}
    bounds = {k: _pin_nan(_zero_where_bad(f, b), values[k], s.free) for k, b in out.items()}
    if norm_has_inf_mean(f):
        # The mean of a set holding an infinity (and no NaN) is algorithm-dependent: a sum gives
        # +-inf (the reference), Welford's m += (x - m)/k gives inf - inf = NaN after the infinity.
        inf_only = f.bad_grad & ~np.any(np.isnan(f.x), axis=f.norm.axes, keepdims=True)
        bounds["mean"] = np.where(inf_only, INF, bounds["mean"])
    return bounds


def norm_has_inf_mean(f: Forward) -> bool:
    return f.norm.centered and not f.stats_given and bool(f.bad_grad.any())


def _pin_nan(b: np.ndarray, value: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Bound 0 where the reference is NaN outside the unconstrained sets `free`.

    Such a NaN comes from a non-finite input (the NaN rule of `_core`, a NaN or infinite
    parameter, cotangent, tangent or given statistic): a non-NaN output there is a NaN-pattern
    difference, as `error_ratio` judged every NaN reference before unconstrained sets existed.
    Inside `free` sets the reference's NaN is an undefined form (0 * inf with r = inf, r' = inf)
    or an overflow, and the bound stays +inf: any value agrees. (Infinite references are left
    alone: with an infinite parameter the folded form gives NaN where the centered one gives inf.)"""
    value = np.asarray(value)
    nan = np.isnan(value)
    if not nan.any():
        return b
    shape = np.broadcast_shapes(np.shape(b), value.shape, np.shape(free))
    pin = np.broadcast_to(nan, shape) & ~np.broadcast_to(free, shape)
    return np.where(pin, 0.0, np.broadcast_to(b, shape)) if pin.any() else b


def _zero_where_bad(f: Forward, b: np.ndarray, *, grad: bool = False) -> np.ndarray:
    """Bound 0 in the sets the NaN rule decides (`_core`): their outputs are exactly determined
    (NaN, the IEEE mean, or, for an infinity in an uncentered set, r = 0 and a zero output), so a
    finite framework output where NaN is due, or a nonzero one where zero is, is a difference.
    Gradients (`grad`) use the wider set of sets holding any non-finite value."""
    mask = _decided_sets(f, grad=grad)
    if mask is None:
        return b
    return np.where(np.broadcast_to(mask, np.broadcast_shapes(mask.shape, b.shape)), 0.0, b)


def _decided_sets(f: Forward, *, grad: bool = False) -> np.ndarray | None:
    """The keepdims mask of the sets whose bounds `_zero_where_bad` sets to 0, or None when there
    are none (given statistics, or no set the NaN rule decides)."""
    mask = f.bad_grad if (grad or not f.norm.centered) else f.bad
    return None if f.stats_given or not mask.any() else mask


def _rp_relative(f: Forward, s: StatErrors) -> np.ndarray:
    """Relative error bound of |dr/dv| given rho_r (and D_v for the 'outside' convention):
    (1 + rho)**3 - 1, resp. (1 + rho)**2 / sqrt(q) - 1 with q = max(1 - D_v / v, 0), written
    without the cancellation of the "- 1" (rho is often ~2**-21: in float64 the literal forms
    would err by ~1e-9 of the result)."""
    rho = s.rho_r
    with quiet(invalid="ignore", divide="ignore", over="ignore"):
        if f.norm.eps_mode == "outside":
            dq = np.minimum(s.d_v / f.v, 1)  # 1 - q (NaN stays NaN: 0/0 at v = D_v = 0)
            sq = np.sqrt(1 - dq)
            # (1 + rho)**2 / sq - 1 = (rho (2 + rho) + (1 - sq)) / sq,  1 - sq = dq / (1 + sq)
            return _clean((rho * (2 + rho) + dq / (1 + sq)) / sq)
        return rho * (3 + rho * (3 + rho))


def _rp_abs(f: Forward, s: StatErrors) -> np.ndarray:
    """|dr/dv| at the oracle's point; near a max() kink an honest implementation may take either
    branch, so the full -r**3/2 branch is used wherever v is within D_v of the kink."""
    rp = np.abs(rscale_derivative(f.v, f.r, f.eps, f.norm.eps_mode))
    if f.norm.eps_mode in ("max_norm", "max_sumsq"):
        eps = work()(f.eps)
        kink = eps ** 2 if f.norm.eps_mode == "max_norm" else eps
        near = np.abs(f.v - kink) <= s.d_v + 4 * eps * 2.0 ** -20
        rp = np.where(near, 0.5 * f.r ** 3, rp)
    return rp


def _nonfinite_grad_inputs(f: Forward, *elementwise) -> np.ndarray:
    """Mask (working view) of the gradient outputs that depend on a non-finite value.

    A gradient at a non-finite input is undefined, and honest algorithms disagree there: with an
    infinity in x, gamma, dy or a tangent the centering and the sums give +-inf or NaN depending on
    their order and form (inf - inf), and an uncentered set's xhat = x * 0 = 0 makes
    dgamma = sum(dy * xhat) finite where the closed form with NaN says NaN. Measured: the
    calibration's honest implementations return +-inf, NaN and 0 at such elements. They are
    unconstrained: any value agrees. The set rule applies: one non-finite value in x, in
    gamma*dy or in the input tangent reaches the whole set through the statistics and the centering;
    `elementwise` arrays (tangents of gamma/beta) reach only their own elements."""
    x_bad = ~np.isfinite(f.x)
    if f.gamma is not None:
        x_bad = x_bad | ~np.isfinite(np.broadcast_to(f.gamma, f.x.shape))
    m = np.zeros(f.x.shape, dtype=bool)
    for a in elementwise[:1]:  # dy / tx: set-level
        if a is not None:
            x_bad = x_bad | ~np.isfinite(np.broadcast_to(np.asarray(a, dtype=work()), f.x.shape))
    if not f.stats_given:
        m = np.broadcast_to(np.any(x_bad, axis=f.norm.axes, keepdims=True), f.x.shape) | x_bad
    else:
        m = x_bad
    for a in elementwise[1:]:
        if a is not None:
            m = m | ~np.isfinite(np.broadcast_to(np.asarray(a, dtype=work()), f.x.shape))
    return m


def vjp_bounds(f: Forward, dy: np.ndarray, p: Precision, *, dx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Bounds for the VJP outputs: "x" (working view), "gamma_full"/"beta_full" pre-reduction parts
    are reduced by the caller with `param_grad_bounds`. `dx`: `_core.vjp(f, dy)[0]` if the caller
    has it (else computed here)."""
    s = stat_errors(f, p)
    dy = np.asarray(dy, dtype=work())
    n, norm, ua, ue = f.n, f.norm, p.u_a, p.u_e
    ns = n if norm.divisor == "mean" else 1
    if dx is None:
        dx, _, _ = _core.vjp(f, dy)
    with quiet(invalid="ignore", over="ignore", divide="ignore"):
        z = np.abs(dy) * (1 if f.gamma is None else np.abs(f.gamma))
        if f.stats_given:
            free = s.free_x | _big(z, _limit(p, 1))
            pre = z * f.r * (s.rho_r + g(2, ue)) + p.eta_e
        else:
            ac = np.abs(f.c)
            rp = _rp_abs(f, s)
            rho_rp = _rp_relative(f, s)
            t1 = f.r * z
            szc = np.sum(z * ac, axis=norm.axes, keepdims=True)
            t2 = rp * szc * 2 * ac / ns
            free = s.free_x | _grad_overflow(f, p, rp, szc, z)
            szdc = np.sum(z * s.dc, axis=norm.axes, keepdims=True)
            e = (g(2 * n + 4, ua) * (t1 + t2) + s.rho_r * t1 + rho_rp * t2
                 + (1 + rho_rp) * rp * (2 / ns) * (szdc * ac + szc * s.dc) + g(1, ue) * t1
                 + _RP_UNDERFLOW * p.eta_e * szc * (2 / ns) * ac)
            if norm.centered:
                mean = lambda a: np.mean(a, axis=norm.axes, keepdims=True)  # noqa: E731
                pre = e + mean(e) + g(2 * n + 2, ua) * (t1 + t2 + mean(t1 + t2))
            else:
                pre = e
            pre = pre + (n + 4) * p.eta_e
        out = {"x": _out(np.where(free, INF, pre), dx, p)}
    undefined = _nonfinite_grad_inputs(f, dy)
    return {k: np.where(undefined, INF, _pin_nan(_zero_where_bad(f, b, grad=True), dx, free))
            for k, b in out.items()}


#: Absolute error of r' = -r**3 / 2 (or -r**2 / (2 sqrt v)) from underflow, in units of eta_e: the
#: product of three factors may go subnormal at each of its two multiplications (eta_e / 2 each,
#: the first one then scaled by a factor r < 1, since r**3 underflows only when r is small), and the
#: halving once more (eta_e / 2): at most 1.5 eta_e, rounded up to 2. An honest float32 gradient
#: meets it with |x| ~ 1e19 (r ~ 1e-19, r**3 = 0 in float32) where r' * sum(z c) * c is O(r z).
_RP_UNDERFLOW = 2


def _grad_overflow(f: Forward, p: Precision, rp: np.ndarray, s_abs: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Mask of the sets (or elements) where an honest gradient algorithm may overflow or meet an
    undefined form, beyond the statistics' own (`_stat_overflow`).

    `rp` = |r'|, `s_abs` = sum_R |t| |c| (t = |gamma dy| for the VJP, |P(tx)| for the JVP). The
    gradient forms covered (`_core.vjp`/`_core.jvp`, and the closed forms with xhat) compute
    r' = -r**3 / 2 (a product of three r's), t * c and its sum, t * xhat and its sum (<= r s_abs),
    r' * sum(t c) (then times 2 / n_s), r * t and, centering, its sum over the set (<= n r max t),
    and n * t (PyTorch's (r / n) (n z - sum z - xhat sum(z xhat))). Each with a few roundings;
    where one reaches the overflow threshold the output is not pinned down, in the whole set since
    the centering spreads an inf - inf. r' infinite (eps "outside" with v = 0: the root is not
    differentiable there) is an undefined form, likewise unconstrained.
    """
    norm, n = f.norm, f.n
    ns = n if norm.divisor == "mean" else 1
    lim = _limit(p, n + 6)
    with quiet(invalid="ignore", over="ignore"):
        wt = work()
        r = np.where(np.isfinite(f.r), f.r, 0.0)
        tmax = np.max(t, axis=norm.axes, keepdims=True)
        return (np.isinf(rp) | _big(0.5 * r * r * r, lim) | _big(s_abs, lim) | _big(r * s_abs, lim)
                | _big(rp * s_abs * max(wt(1), wt(2) / wt(ns)), lim) | _big(n * np.maximum(r, 1) * tmax, lim)
                | _big(t, lim))


def param_grad_bounds(f: Forward, dy: np.ndarray, p: Precision, work_shape: tuple[int, ...],
                      which: str) -> np.ndarray:
    """Bound for d gamma (`which`="gamma": sum of dy*xhat) or d beta ("beta": sum of dy) over the
    parameter's broadcast axes, in the parameter's working shape."""
    s = stat_errors(f, p)
    t = work()
    dy = np.asarray(dy, dtype=t)
    ady = np.abs(dy)
    xhat = f.xhat if f.stats_given else np.where(f.bad_grad, t("nan"), f.xhat)  # as `_core.vjp`
    with quiet(invalid="ignore", over="ignore"):
        full = ady * np.abs(xhat) if which == "gamma" else ady
        total = unbroadcast(full, work_shape)
        count = full.size // max(total.size, 1)
        pre = g(count + 2, p.u_a) * total
        if which == "gamma":
            pre = pre + unbroadcast(ady * s.dxhat, work_shape)
            value = unbroadcast(dy * xhat, work_shape)
        else:
            value = unbroadcast(dy, work_shape)
        b = _out(pre + count * p.eta_a, value, p)
    if not f.stats_given and f.bad_grad.any():
        b = np.where(np.isnan(value), 0.0, b)
    # unconstrained: a sum whose terms or partial sums may overflow (sum |dy xhat| reaches the
    # threshold although the sum itself need not), and for gamma a sum over an unconstrained set
    free = _big(total, _limit(p, count + 2))
    if which == "gamma":
        free = free | (unbroadcast(np.broadcast_to(s.free_x, f.x.shape).astype(t), work_shape) > 0)
    b = _pin_nan(np.where(free, INF, b), value, free)
    # a sum over an element whose gradient inputs are not finite is undefined (see above)
    undefined = unbroadcast(_nonfinite_grad_inputs(f, dy).astype(t), work_shape) > 0
    return np.where(undefined, INF, b)


def jvp_bounds(f: Forward, tx, tgamma, tbeta, p: Precision, *, ty: np.ndarray | None = None) -> np.ndarray:
    """Bound for the JVP output ty (working view); tangents in working broadcast shapes or None.
    `ty`: `_core.jvp(f, tx, tgamma, tbeta)` if the caller has it (else computed here)."""
    s = stat_errors(f, p)
    tx = np.asarray(tx, dtype=work())
    n, norm, ua, ue = f.n, f.norm, p.u_a, p.u_e
    ns = n if norm.divisor == "mean" else 1
    if ty is None:
        ty = _core.jvp(f, tx, tgamma, tbeta)
    with quiet(invalid="ignore", over="ignore", divide="ignore"):
        ag = 1 if f.gamma is None else np.abs(f.gamma)
        atx = np.abs(tx)
        if f.stats_given:
            core = f.r * atx
            e = core * (s.rho_r + g(2, ue))
            free = s.free_x
        else:
            mean = lambda a: np.mean(a, axis=norm.axes, keepdims=True)  # noqa: E731
            dc = tx - mean(tx) if norm.centered else tx
            adc = np.abs(dc)
            ddc = g(2 * n + 2, ua) * (atx + mean(atx)) if norm.centered else np.zeros_like(atx)
            ac = np.abs(f.c)
            rp = _rp_abs(f, s)
            rho_rp = _rp_relative(f, s)
            a_ = f.r * adc
            scd = np.sum(ac * adc, axis=norm.axes, keepdims=True)
            bt = ac * rp * (2 / ns) * scd
            cross = np.sum(ac * ddc + adc * s.dc, axis=norm.axes, keepdims=True)
            core = a_ + bt
            free = s.free_x | _grad_overflow(f, p, rp, scd, atx)
            e = (g(2 * n + 4, ua) * core + s.rho_r * a_ + rho_rp * bt + f.r * (1 + s.rho_r) * ddc
                 + (1 + rho_rp) * rp * (2 / ns) * (ac * cross + s.dc * scd) + g(2, ue) * core
                 + _RP_UNDERFLOW * p.eta_e * (2 / ns) * scd * ac)
        pre = ag * e
        terms = ag * core
        if tgamma is not None:
            atg = np.abs(np.asarray(tgamma, dtype=work()))
            pre = pre + atg * s.dxhat
            terms = terms + atg * np.abs(f.xhat)
        if tbeta is not None:
            terms = terms + np.abs(np.asarray(tbeta, dtype=work()))
        pre = pre + g(3, ue) * terms + (n + 4) * p.eta_e
        b = _out(np.where(free, INF, pre), ty, p)
        undefined = _nonfinite_grad_inputs(f, tx, tgamma, tbeta)
        return np.where(undefined, INF, _pin_nan(_zero_where_bad(f, b, grad=True), ty, free))


def running_bound(old, old_bound, stat, stat_bound, weight: float, p: Precision) -> np.ndarray:
    """Bound for new = (1 - w) * old + w * stat given bounds on old and stat (per channel).

    Terms: the propagated bounds (1-w)*B_old + w*B_stat; three roundings of the update
    g(3, u_e)((1-w)|old| + w|stat|), each of which may also be an underflow (3 eta_e / 2: running
    statistics of subnormal data); the weight's own error times |stat^ - old^| (below); and the final
    rounding to the output format.

    The weight's error, u_e (1 + 2w) |stat - old|. The weight w^ the implementation uses differs
    from w by at most u_e: with momentum_on "batch" (and the cumulative 1/k) w^ = fl(w), off by
    u_e w; with "running" the given m = 1 - w is rounded (u_e (1 - w)) and w^ = fl(1 - m^) rounds
    again (u_e w). E.g. Keras' m = 0.999 in float32: w^ = 1 - fl(0.999) is 2**-10 relative off w =
    0.001, which the earlier term u_e w |stat - old| missed 10-fold (a running mean starting at 0).
    The update may also be computed as old + w^ (stat - old) (TensorFlow's assign_moving_average):
    the rounding of stat - old and of the product add 2 u_e w |stat - old|, while (1-w) old + w stat
    stays within the three roundings above. The weight's error multiplies the implementation's own
    |stat^ - old^| <= |stat - old| + B_stat + B_old, so the term is u_e (1 + 2w) (|stat - old| +
    B_stat + B_old): second order where w >> u_e (w B_stat and (1-w) B_old dominate), but the
    whole of it for w ~ u_e or below, and it keeps the bound well-conditioned where stat ~ old (a
    batch mean near 0: |stat - old| alone carries the reference's own relative error).
    """
    t = work()
    old, stat = np.asarray(old, dtype=t), np.asarray(stat, dtype=t)
    old_bound, stat_bound = np.asarray(old_bound, dtype=t), np.asarray(stat_bound, dtype=t)
    w = t(weight)
    with quiet(invalid="ignore", over="ignore"):
        new = (1 - w) * old + w * stat
        pre = ((1 - w) * old_bound + w * stat_bound + g(3, p.u_e) * ((1 - w) * np.abs(old) + w * np.abs(stat))
               + max(p.u_e, p.u_eps) * (1 + 2 * w) * (np.abs(stat - old) + stat_bound + old_bound)
               + 3 * p.eta_e / 2)
        # The old value is stored in the output format (a previous step's output): where it may
        # have overflowed to inf (|old| + its bound reaches the threshold), the update gives inf or
        # NaN (inf - inf in old + w * (stat - old)): unconstrained.
        stored_inf = _big(np.abs(old) + old_bound, overflow_threshold(p.dtype))
        b = _out(np.where(stored_inf, INF, pre), new, p)
    # a NaN from a NaN old value or a NaN-rule statistic is determined; an unconstrained statistic
    # (stat_bound = inf) leaves the new value unconstrained
    return _pin_nan(b, new, np.isinf(stat_bound) | np.isinf(old_bound))


# --------------------------------------------------------------------------------------------------
# comparison


def overflow_threshold(dtype: str, t: type | None = None) -> np.floating:
    """Smallest magnitude that rounds to infinity in `dtype` (max + half an ulp), in type `t`
    (default: the working type). Exact in float64 for every format but float64, whose threshold
    2**1024 (1 - 2**-54) float64 rounds to inf (no finite float64 value reaches it)."""
    return _overflow_threshold(dtype, t or work())


@functools.lru_cache(maxsize=None)
def _overflow_threshold(dtype: str, t: type) -> np.floating:
    d = _dtype(dtype)
    top = EXT(2) ** int(np.ceil(np.log2(d.max)))
    with np.errstate(over="ignore"):
        return t(top * (1 - EXT(d.u) / 2))


def _judging_type(*arrays) -> type:
    """The type `error_ratio` judges in: `EXT` when a reference or bound is `EXT` (a float64 or
    EXT evaluation), numpy.float64 otherwise (an evaluation in float64: converting a float32 or
    half `actual` to it is exact, and |actual - ref| / bound then errs by a few 2**-53)."""
    return EXT if any(np.asarray(a).dtype == EXT for a in arrays) else np.float64


def error_ratio(actual, ref, bound, dtype: str) -> np.ndarray:
    """Per-element |actual - ref| / bound (<= 1 means agreement), in the reference's working type
    (`_judging_type`: EXT for EXT references, else float64).

    Rules: NaN in both, or an unconstrained element (bound = inf, whatever the reference: a NaN
    reference there is an undefined form such as 0 * inf, which an honest implementation may
    evaluate to anything), gives 0; NaN in exactly one gives inf (a NaN-pattern difference); an
    infinite `actual` agrees where ref +- bound reaches the format's overflow threshold on the
    side of its sign; zero error with zero bound gives 0.
    """
    t = _judging_type(ref, bound)
    if _fused.active(t):
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # (and for the cast to float64)
            return _fused.kernels().ratio(actual, ref, bound, overflow_threshold(dtype, t))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        # an EXT `actual` beyond float64's range (only unrounded values can be) becomes +-inf
        a = np.asarray(actual).astype(t)
        ref = np.asarray(ref, dtype=t)
        bound = np.asarray(bound, dtype=t)
        a, ref, bound = np.broadcast_arrays(a, ref, bound)
        err = np.abs(a - ref)
        ratio = np.where(err == 0, 0.0, err / bound)
        if np.isfinite(err).all() and np.isfinite(bound).all():
            # the usual case: actual and ref finite (else err is not), bound finite: none of the
            # rules below applies (they all need a NaN or an infinity)
            return ratio
        thr = overflow_threshold(dtype, t)
        # the interval ref +- bound reaches the threshold on the side of actual's infinity (not
        # sign(ref) == sign(actual): with a bound larger than |ref| either sign is honest)
        reach = np.where(a > 0, ref + bound >= thr, ref - bound <= -thr)
        ovf_ok = np.isinf(a) & np.isfinite(ref) & reach
        ratio = np.where(ovf_ok, 0.0, ratio)
        an, rn = np.isnan(a), np.isnan(ref)
        ratio = np.where(an & rn, 0.0, ratio)
        ratio = np.where(an ^ rn, INF, ratio)
        ratio = np.where(np.isinf(bound), 0.0, ratio)
        ratio = np.where(np.isinf(a) & np.isinf(ref) & (a == ref), 0.0, ratio)
    return ratio


def nan_mismatch(actual, ref, bound=None) -> np.ndarray:
    """Elements where exactly one of actual/ref is NaN (unconstrained elements excluded)."""
    t = _judging_type(ref) if bound is None else _judging_type(ref, bound)
    m = np.isnan(np.asarray(actual).astype(t)) ^ np.isnan(np.asarray(ref, dtype=t))
    if bound is not None:
        m &= ~np.isinf(np.asarray(bound, dtype=t))
    return m
