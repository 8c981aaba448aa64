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
    e_mu = g(2n+2, u_a) * M + 2 eta_a                                  |mu^ - mu|
    D_v  = g(n+4, u_a) * v + 4 e_mu Rng + e_mu**2 + (n+2) eta_a         |v^ - v|  (centered)
    D_v  = g(2n+2, u_a) * v + (n+2) eta_a / n_s + eta_a                 (uncentered: mean square/sum)
Scale r = rscale(v, eps): r is decreasing in v and eps, so the honest r^ lies between
    r(v + D_v, eps(1+u_eps)) and r(max(v - D_v, 0), eps(1-u_eps)),
    rho_r = that interval's largest relative deviation from r, then + g(5, u_e) (1 + rho_r)
    (eps add, sqrt, divide or rsqrt with its refinement).
Normalized value and output:
    Dc_i    = e_mu + g(2, u_e) (|x_i| + |mu|)                          error of the centered value
    Dxhat_i = r Dc_i (1 + rho_r) + |c_i| r rho_r + g(1, u_e)|xhat_i| + eta_e
    B(y_i)  = [|gamma| Dxhat_i + g(2, u_e)(|gamma xhat_i| + |beta|) + 3 eta_e](1 + u_o) + u_o|y_i| + eta_o
With given statistics (BatchNorm inference) e_mu = D_v = 0.

A bound of +inf marks an element no honest implementation can pin down (e.g. zero variance with
eps = 0, or a variance below the summation error with eps = 0): any value, NaN included, agrees there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _core
from ._core import Forward, rscale, rscale_derivative, unbroadcast
from .dtypes import DEFAULT_ACCUMULATION, EXT, dtype as _dtype

INF = EXT("inf")


@dataclass(frozen=True)
class Precision:
    """The formats an honest implementation uses: inputs/outputs, accumulation, elementwise, eps.

    `Precision.of("float16")` gives the defaults: half formats accumulate and compute elementwise in
    float32, the others in their own format; eps is rounded to the elementwise format.
    """

    dtype: str
    accum: str
    elementwise: str
    eps_format: str

    @classmethod
    def of(cls, dtype: str, *, accum: str | None = None, elementwise: str | None = None,
           eps_format: str | None = None) -> "Precision":
        _dtype(dtype)
        accum = accum or DEFAULT_ACCUMULATION[dtype]
        elementwise = elementwise or accum
        return cls(dtype, _dtype(accum).name, _dtype(elementwise).name,
                   _dtype(eps_format or elementwise).name)

    @property
    def u_a(self): return EXT(_dtype(self.accum).u)

    @property
    def u_e(self): return EXT(_dtype(self.elementwise).u)

    @property
    def u_o(self): return EXT(_dtype(self.dtype).u)

    @property
    def u_eps(self): return EXT(_dtype(self.eps_format).u)

    @property
    def eta_a(self): return EXT(_dtype(self.accum).eta)

    @property
    def eta_e(self): return EXT(_dtype(self.elementwise).eta)

    @property
    def eta_o(self): return EXT(_dtype(self.dtype).eta)


def g(k, u) -> EXT:
    """Higham's gamma_k = k u / (1 - k u); +inf when k u >= 1."""
    ku = EXT(k) * EXT(u)
    return ku / (1 - ku) if ku < 1 else INF


def _clean(b: np.ndarray) -> np.ndarray:
    """NaN in a bound (inf * 0 and the like) means 'unconstrained'."""
    b = np.asarray(b, dtype=EXT)
    return np.where(np.isnan(b), INF, b)


def _out(pre: np.ndarray, value: np.ndarray, p: Precision) -> np.ndarray:
    """Add the final rounding to the output format."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _clean(pre * (1 + p.u_o) + p.u_o * np.abs(value) + p.eta_o)


@dataclass
class StatErrors:
    """Bounds on the statistics an honest implementation computes (keepdims, working view)."""

    e_mu: np.ndarray
    d_v: np.ndarray
    rho_r: np.ndarray
    dc: np.ndarray     # error of the centered value, per element
    dxhat: np.ndarray  # error of xhat, per element


def stat_errors(f: Forward, p: Precision) -> StatErrors:
    """The statistics' error bounds (module docstring) for one evaluation."""
    norm, n = f.norm, f.n
    ns = n if norm.divisor == "mean" else 1
    ua, ue = p.u_a, p.u_e
    zero = np.zeros_like(f.v)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ax = np.abs(f.x)
        if f.stats_given:
            e_mu, d_v = zero, zero
        elif norm.centered:
            big_m = np.max(ax, axis=norm.axes, keepdims=True)
            rng = np.max(np.abs(f.c), axis=norm.axes, keepdims=True)
            e_mu = g(2 * n + 2, ua) * big_m + 2 * p.eta_a
            d_v = g(n + 4, ua) * f.v + 4 * e_mu * rng + e_mu * e_mu + (n + 2) * p.eta_a
        else:
            e_mu = zero
            d_v = g(2 * n + 2, ua) * f.v + (n + 2) * p.eta_a / ns + p.eta_a
        eps = EXT(f.eps)
        r_hi = rscale(np.maximum(f.v - d_v, 0), eps * (1 - p.u_eps), norm.eps_mode)
        r_lo = rscale(f.v + d_v, eps * (1 + p.u_eps), norm.eps_mode)
        rho = np.maximum(r_hi / f.r - 1, 1 - r_lo / f.r)
        rho = np.where(np.isfinite(r_hi) & np.isfinite(f.r) & (f.r > 0), rho, INF)
        rho = rho + g(5, ue) * (1 + rho)
        if norm.centered:
            dc = e_mu + g(2, ue) * (ax + np.abs(f.mean))
        else:
            dc = np.zeros_like(ax)
        dxhat = f.r * dc * (1 + rho) + np.abs(f.c) * f.r * rho + g(1, ue) * np.abs(f.xhat) + p.eta_e
    return StatErrors(e_mu, d_v, rho, dc, _clean(dxhat))


def forward_bounds(f: Forward, p: Precision) -> dict[str, np.ndarray]:
    """Bounds for y and the statistics (keys "y", "mean", "v", "r"; working view, stats keepdims)."""
    s = stat_errors(f, p)
    ue = p.u_e
    with np.errstate(invalid="ignore", over="ignore"):
        ag = 1 if f.gamma is None else np.abs(f.gamma)
        ab = 0 if f.beta is None else np.abs(f.beta)
        pre = ag * s.dxhat + g(2, ue) * (ag * np.abs(f.xhat) + ab) + 3 * p.eta_e
        out = {
            "y": _out(pre, f.y, p),
            "mean": _out(s.e_mu + p.u_a * np.abs(f.mean), f.mean, p),
            "v": _out(s.d_v, f.v, p),
            "r": _out(f.r * s.rho_r, f.r, p),
        }
    return {k: _zero_where_bad(f, b) for k, b in out.items()}


def _zero_where_bad(f: Forward, b: np.ndarray) -> np.ndarray:
    """Where the oracle's output is NaN by the NaN rule the bound is moot; make it 0, not inf, so
    that a finite framework output there is judged a NaN-pattern difference."""
    if f.stats_given or not f.bad.any():
        return b
    return np.where(np.broadcast_to(f.bad, np.broadcast_shapes(f.bad.shape, b.shape)), EXT(0), b)


def _rp_relative(f: Forward, s: StatErrors) -> np.ndarray:
    """Relative error bound of |dr/dv| given rho_r (and D_v for the 'outside' convention)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if f.norm.eps_mode == "outside":
            q = np.maximum(1 - s.d_v / f.v, 0)
            return _clean((1 + s.rho_r) ** 2 / np.sqrt(q) - 1)
        return (1 + s.rho_r) ** 3 - 1


def _rp_abs(f: Forward, s: StatErrors) -> np.ndarray:
    """|dr/dv| at the oracle's point; near a max() kink an honest implementation may take either
    branch, so the full -r**3/2 branch is used wherever v is within D_v of the kink."""
    rp = np.abs(rscale_derivative(f.v, f.r, f.eps, f.norm.eps_mode))
    if f.norm.eps_mode in ("max_norm", "max_sumsq"):
        kink = EXT(f.eps) ** 2 if f.norm.eps_mode == "max_norm" else EXT(f.eps)
        near = np.abs(f.v - kink) <= s.d_v + 4 * EXT(f.eps) * 2.0 ** -20
        rp = np.where(near, 0.5 * f.r ** 3, rp)
    return rp


def vjp_bounds(f: Forward, dy: np.ndarray, p: Precision) -> dict[str, np.ndarray]:
    """Bounds for the VJP outputs: "x" (working view), "gamma_full"/"beta_full" pre-reduction parts
    are reduced by the caller with `param_grad_bounds`."""
    s = stat_errors(f, p)
    dy = np.asarray(dy, dtype=EXT)
    n, norm, ua, ue = f.n, f.norm, p.u_a, p.u_e
    ns = n if norm.divisor == "mean" else 1
    dx, _, _ = _core.vjp(f, dy)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        z = np.abs(dy) * (1 if f.gamma is None else np.abs(f.gamma))
        if f.stats_given:
            pre = z * f.r * (s.rho_r + g(2, ue)) + p.eta_e
        else:
            ac = np.abs(f.c)
            rp = _rp_abs(f, s)
            rho_rp = _rp_relative(f, s)
            t1 = f.r * z
            szc = np.sum(z * ac, axis=norm.axes, keepdims=True)
            t2 = rp * szc * 2 * ac / ns
            szdc = np.sum(z * s.dc, axis=norm.axes, keepdims=True)
            e = (g(2 * n + 4, ua) * (t1 + t2) + s.rho_r * t1 + rho_rp * t2
                 + (1 + rho_rp) * rp * (2 / ns) * (szdc * ac + szc * s.dc) + g(1, ue) * t1)
            if norm.centered:
                mean = lambda a: np.mean(a, axis=norm.axes, keepdims=True)  # noqa: E731
                pre = e + mean(e) + g(2 * n + 2, ua) * (t1 + t2 + mean(t1 + t2))
            else:
                pre = e
            pre = pre + (n + 4) * p.eta_e
        out = {"x": _out(pre, dx, p)}
    return {k: _zero_where_bad(f, b) for k, b in out.items()}


def param_grad_bounds(f: Forward, dy: np.ndarray, p: Precision, work_shape: tuple[int, ...],
                      which: str) -> np.ndarray:
    """Bound for d gamma (`which`="gamma": sum of dy*xhat) or d beta ("beta": sum of dy) over the
    parameter's broadcast axes, in the parameter's working shape."""
    s = stat_errors(f, p)
    dy = np.asarray(dy, dtype=EXT)
    ady = np.abs(dy)
    with np.errstate(invalid="ignore", over="ignore"):
        full = ady * np.abs(f.xhat) if which == "gamma" else ady
        total = unbroadcast(full, work_shape)
        count = full.size // max(total.size, 1)
        pre = g(count + 2, p.u_a) * total
        if which == "gamma":
            pre = pre + unbroadcast(ady * s.dxhat, work_shape)
            value = unbroadcast(dy * f.xhat, work_shape)
        else:
            value = unbroadcast(dy, work_shape)
        b = _out(pre + count * p.eta_a, value, p)
    if not f.stats_given and f.bad.any():
        b = np.where(np.isnan(value), EXT(0), b)
    return b


def jvp_bounds(f: Forward, tx, tgamma, tbeta, p: Precision) -> np.ndarray:
    """Bound for the JVP output ty (working view); tangents in working broadcast shapes or None."""
    s = stat_errors(f, p)
    tx = np.asarray(tx, dtype=EXT)
    n, norm, ua, ue = f.n, f.norm, p.u_a, p.u_e
    ns = n if norm.divisor == "mean" else 1
    ty = _core.jvp(f, tx, tgamma, tbeta)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ag = 1 if f.gamma is None else np.abs(f.gamma)
        atx = np.abs(tx)
        if f.stats_given:
            core = f.r * atx
            e = core * (s.rho_r + g(2, ue))
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
            e = (g(2 * n + 4, ua) * core + s.rho_r * a_ + rho_rp * bt + f.r * (1 + s.rho_r) * ddc
                 + (1 + rho_rp) * rp * (2 / ns) * (ac * cross + s.dc * scd) + g(2, ue) * core)
        pre = ag * e
        terms = ag * core
        if tgamma is not None:
            atg = np.abs(np.asarray(tgamma, dtype=EXT))
            pre = pre + atg * s.dxhat
            terms = terms + atg * np.abs(f.xhat)
        if tbeta is not None:
            terms = terms + np.abs(np.asarray(tbeta, dtype=EXT))
        pre = pre + g(3, ue) * terms + (n + 4) * p.eta_e
        return _zero_where_bad(f, _out(pre, ty, p))


def running_bound(old, old_bound, stat, stat_bound, weight: float, p: Precision) -> np.ndarray:
    """Bound for new = (1 - w) * old + w * stat given bounds on old and stat (per channel).

    Terms: the propagated bounds (1-w)*B_old + w*B_stat; three roundings of the update
    g(3, u_e)((1-w)|old| + w|stat|); the momentum itself rounded to the elementwise format,
    u_e * w * |stat - old|; and the final rounding to the output format.
    """
    old, stat = np.asarray(old, dtype=EXT), np.asarray(stat, dtype=EXT)
    w = EXT(weight)
    with np.errstate(invalid="ignore", over="ignore"):
        new = (1 - w) * old + w * stat
        pre = ((1 - w) * old_bound + w * stat_bound + g(3, p.u_e) * ((1 - w) * np.abs(old) + w * np.abs(stat))
               + p.u_e * w * np.abs(stat - old))
        return _out(pre, new, p)


# --------------------------------------------------------------------------------------------------
# comparison


def overflow_threshold(dtype: str) -> EXT:
    """Smallest magnitude that rounds to infinity in `dtype` (max + half an ulp)."""
    d = _dtype(dtype)
    top = EXT(2) ** int(np.ceil(np.log2(d.max)))
    return top * (1 - EXT(d.u) / 2)


def error_ratio(actual, ref, bound, dtype: str) -> np.ndarray:
    """Per-element |actual - ref| / bound in EXT (<= 1 means agreement).

    Rules: NaN in both, or an unconstrained element (bound = inf), gives 0; NaN in exactly one
    gives inf (a NaN-pattern difference); an infinite `actual` agrees where ref +- bound reaches
    the format's overflow threshold with the same sign; zero error with zero bound gives 0.
    """
    a = np.asarray(actual).astype(EXT)
    ref = np.asarray(ref, dtype=EXT)
    bound = np.asarray(bound, dtype=EXT)
    a, ref, bound = np.broadcast_arrays(a, ref, bound)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.abs(a - ref)
        ratio = np.where(err == 0, EXT(0), err / bound)
        thr = overflow_threshold(dtype)
        ovf_ok = np.isinf(a) & np.isfinite(ref) & (np.sign(a) == np.sign(ref)) & (np.abs(ref) + bound >= thr)
        ratio = np.where(ovf_ok, EXT(0), ratio)
        an, rn = np.isnan(a), np.isnan(ref)
        ratio = np.where(an & rn, EXT(0), ratio)
        ratio = np.where(an ^ rn, INF, ratio)
        ratio = np.where(np.isinf(bound) & ~rn, EXT(0), ratio)
        ratio = np.where(np.isinf(a) & np.isinf(ref) & (a == ref), EXT(0), ratio)
    return ratio


def nan_mismatch(actual, ref, bound=None) -> np.ndarray:
    """Elements where exactly one of actual/ref is NaN (unconstrained elements excluded)."""
    a = np.asarray(actual).astype(EXT)
    ref = np.asarray(ref, dtype=EXT)
    m = np.isnan(a) ^ np.isnan(ref)
    if bound is not None:
        m &= ~(np.isinf(np.asarray(bound, dtype=EXT)) & ~np.isnan(ref))
    return m
