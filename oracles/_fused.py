"""Fused float64 kernels for the error model's per-element passes (numba-compiled loops).

Why. On a large set the error model's numpy code makes some sixty passes over float64 arrays the
size of the input (every `np.abs`, product, `np.where` and `_clean` is one pass with its own
temporary): about 40 ns per element and precision, the largest cost of a campaign (profiles in
docs/error-model.md, "Speed"). The kernels here compute the same per-element formulas in one pass.

What they compute. Exactly what the numpy code of `errormodel` computes, operation for operation:
each kernel is the scalar transcription of a stretch of numpy code, same operations in the same
order, so each float64 result is the same correctly rounded IEEE operation sequence and the results
are bitwise those of the numpy code (tests/oracles/test_fused.py checks this on generated inputs,
every op and regime). Compiled without fast-math (no reassociation, no contraction into FMA).

Scope. float64 only: `EXT` (numpy.longdouble) has no numba type, so an EXT evaluation keeps the numpy
code. `errormodel` calls a kernel only when `active()` holds: numba importable, not disabled by
`NORMFUZZ_NO_JIT=1` (or `disabled()`), and the evaluation working in float64.

Floating-point status. A compiled loop called from Python is not a numpy ufunc, so numpy does not
read the processor's status flags after it: `_Kernels._run` clears them before the loop and reads
them after it (libm's `feclearexcept` / `fetestexcept`) and applies the current `numpy.errstate` as
numpy does (`_check_status`). Inside `dtypes.range_guard` an overflow or underflow in a kernel
therefore raises FloatingPointError and the evaluation moves to EXT, as it does for the numpy code.
Off x86-64, and for operands of more than 4 axes, the kernels run as numba ufuncs, which numpy checks
itself. (The compiler may skip an operation whose result a branch discards, so a flag the numpy code
raises on such a discarded value may not be raised here; the evaluation then stays in float64, whose
every *used* intermediate stayed in range: that is what the guard is for.)

Compilation. The first use in a process compiles the kernels (one signature each, about 6 s, once
per machine) or loads them from numba's cache (`cache=True`: `oracles/__pycache__`, or numba's user
cache folder when that is read-only; about 0.5 s with numba's import).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import warnings
from typing import Iterator

import numpy as np

#: Setting this environment variable to 1 makes the error model use its numpy code only.
DISABLE_ENV = "NORMFUZZ_NO_JIT"

_DISABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("normfuzz_fused_disabled", default=False)

_INF = math.inf


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within: the error model uses its numpy code (for tests comparing the two)."""
    token = _DISABLED.set(True)
    try:
        yield
    finally:
        _DISABLED.reset(token)


def active(t: type) -> bool:
    """Whether the kernels serve an evaluation working in type `t`."""
    return t is np.float64 and not _DISABLED.get() and kernels() is not None


def available() -> bool:
    """numba is importable and the kernels compiled (whatever `NORMFUZZ_NO_JIT` says)."""
    return _compiled() is not None


def kernels():
    """The compiled kernels (a namespace), or None when disabled or numba is missing."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    return _compiled()


# --------------------------------------------------------------------------------------------------
# scalar formulas (transcriptions of errormodel's numpy code; see each kernel's docstring)


def _y_bound(x, c, xhat, y, gamma, beta, mean, r, e_mu, rho, free, zero, g1, g2, eta_e, eta3, u_o,
             eta_o, lim1, lim2, lim3, centered, given):  # pragma: no cover (compiled)
    """Bound of one output element y of `errormodel.forward_bounds`, with the per-element part of
    `errormodel._stat_errors` (dc, dxhat, free_x) inlined. Arguments: the Forward's arrays (gamma 1
    and beta 0 when absent), the set's e_mu and rho (inf where the statistics overflow), its `free`
    mask, `zero` (`_zero_where_bad`'s mask, False where it does not apply), g1 = g(1, u_e),
    g2 = g(2, u_e), eta3 = 3 eta_e, the limits `_limit(p, k)` for k = 1, 2, 3."""
    ax = abs(x)
    am = abs(mean)
    # _stat_errors
    if centered:
        dc = e_mu + g2 * (ax + am)
    else:
        dc = 0.0
    ac = abs(c)
    dxhat = r * dc * (1.0 + rho) + ac * r * rho + g1 * abs(xhat) + eta_e
    free_x = free
    if given:
        s = ax + am
        if math.isfinite(s) and s >= lim1:
            free_x = True
            dxhat = _INF
    t = ac * r * (1.0 + rho)
    if math.isfinite(t) and t >= lim2:
        free_x = True
        dxhat = _INF
    if math.isnan(dxhat):
        dxhat = _INF
    # forward_bounds
    ag = abs(gamma)
    ab = abs(beta)
    pre = ag * dxhat + g2 * (ag * abs(xhat) + ab) + eta3
    pre = pre + (ax + am) * eta_e
    if ax != ax or am != am:
        mx = math.nan
    elif ax >= am:
        mx = ax
    else:
        mx = am
    f1 = mx * r * ag + ab
    f2 = r * ag
    fold_free = (math.isfinite(f1) and f1 >= lim3) or (math.isfinite(f2) and f2 >= lim1)
    if fold_free:
        pre = _INF
    # _out, _clean
    b = pre * (1.0 + u_o) + u_o * abs(y) + eta_o
    if math.isnan(b):
        b = _INF
    # _zero_where_bad, _pin_nan
    if zero:
        b = 0.0
    if math.isnan(y) and not (free_x or fold_free):
        b = 0.0
    return b


def _ratio(a, ref, bound, thr):  # pragma: no cover (compiled)
    """`errormodel.error_ratio` of one element (judging in float64); the rules in their numpy
    order, the last applicable one winning."""
    err = abs(a - ref)
    if err == 0:
        q = 0.0
    else:
        q = err / bound
    a_inf = math.isinf(a)
    if a_inf and math.isinf(ref) and a == ref:
        return 0.0
    if math.isinf(bound):
        return 0.0
    an = math.isnan(a)
    rn = math.isnan(ref)
    if an != rn:
        return _INF
    if an and rn:
        return 0.0
    if a_inf and math.isfinite(ref):
        if a > 0:
            reach = ref + bound >= thr
        else:
            reach = ref - bound <= -thr
        if reach:
            return 0.0
    return q


def _summary(ratio, bound, a, ref):  # pragma: no cover (compiled)
    """One pass over flat arrays for `fuzz.compare.check_output`: (index of the first largest ratio,
    as numpy.argmax: a NaN is largest; elements with ratio > 1; elements with an infinite bound;
    whether a and ref are all finite)."""
    n = ratio.size
    imax = 0
    best = ratio[0] if n else 0.0
    seen_nan = n > 0 and best != best
    exceeding = 0
    unconstrained = 0
    finite = True
    for i in range(n):
        q = ratio[i]
        if not seen_nan:
            if q != q:
                seen_nan = True
                imax = i
            elif q > best:
                best = q
                imax = i
        if q > 1.0:
            exceeding += 1
        if math.isinf(bound[i]):
            unconstrained += 1
        if finite and not (math.isfinite(a[i]) and math.isfinite(ref[i])):
            finite = False
    return imax, exceeding, unconstrained, finite


def _row(a, i, j, m):  # pragma: no cover (compiled)
    """Row (i, j, m) of a 4-d array that broadcasts against the output (axes of length 1 stand for
    any index), and the step of the last axis (0 when it broadcasts)."""
    return (a[i if a.shape[0] > 1 else 0, j if a.shape[1] > 1 else 0, m if a.shape[2] > 1 else 0],
            1 if a.shape[3] > 1 else 0)


def _y_bound_loop(out, x, c, xhat, y, gamma, beta, mean, r, e_mu, rho, free, zero, g1, g2, eta_e, eta3,
                  u_o, eta_o, lim1, lim2, lim3, centered, given):  # pragma: no cover (compiled)
    """`_y_bound` over 4-d arrays broadcasting against `out`, into `out`."""
    n0, n1, n2, n3 = out.shape
    for i in range(n0):
        for j in range(n1):
            for m in range(n2):
                o = out[i, j, m]
                xr, sx = _row_c(x, i, j, m)
                cr, sc = _row_c(c, i, j, m)
                hr, sh = _row_c(xhat, i, j, m)
                yr, sy = _row_c(y, i, j, m)
                gr, sg = _row_c(gamma, i, j, m)
                br, sb = _row_c(beta, i, j, m)
                mr, sm = _row_c(mean, i, j, m)
                rr, sr = _row_c(r, i, j, m)
                er, se = _row_c(e_mu, i, j, m)
                pr, sp = _row_c(rho, i, j, m)
                fr, sf = _row_c(free, i, j, m)
                zr, sz = _row_c(zero, i, j, m)
                for k in range(n3):
                    o[k] = _y_bound_c(xr[k * sx], cr[k * sc], hr[k * sh], yr[k * sy], gr[k * sg], br[k * sb],
                                      mr[k * sm], rr[k * sr], er[k * se], pr[k * sp], fr[k * sf], zr[k * sz],
                                      g1, g2, eta_e, eta3, u_o, eta_o, lim1, lim2, lim3, centered, given)


def _ratio_loop(out, a, ref, bound, thr):  # pragma: no cover (compiled)
    """`_ratio` over 4-d arrays broadcasting against `out`, into `out`."""
    n0, n1, n2, n3 = out.shape
    for i in range(n0):
        for j in range(n1):
            for m in range(n2):
                o = out[i, j, m]
                ar, sa = _row_c(a, i, j, m)
                rr, sr = _row_c(ref, i, j, m)
                br, sb = _row_c(bound, i, j, m)
                for k in range(n3):
                    o[k] = _ratio_c(ar[k * sa], rr[k * sr], br[k * sb], thr)


class _Kernels:
    """The compiled kernels. `y_bound(*args)` and `ratio(a, ref, bound, thr)` take arrays that
    broadcast together (as the numpy code's operands do) and return the float64 result array;
    `summary` is `_summary` compiled."""

    def __init__(self, numba):
        global _y_bound_c, _ratio_c, _row_c
        _y_bound_c = numba.njit(cache=True, inline="always", error_model="numpy")(_y_bound)
        _ratio_c = numba.njit(cache=True, inline="always", error_model="numpy")(_ratio)
        _row_c = numba.njit(cache=True, inline="always")(_row)
        # One signature each, compiled when the kernels are first needed (or loaded from the cache):
        # strided ('A') read-only arrays accept every operand (C-contiguous, transposed, broadcast),
        # so no operand layout makes numba compile another specialization in the middle of a run.
        t = numba.types
        f8, b1 = t.float64, t.boolean

        def arr(dtype, ndim, readonly=True):
            return t.Array(dtype, ndim, "A", readonly=readonly)

        out4 = arr(f8, 4, readonly=False)
        self._y_loop = numba.njit([(out4, *[arr(f8, 4)] * 10, arr(b1, 4), arr(b1, 4), *[f8] * 9, b1, b1)],
                                  cache=True, error_model="numpy")(_y_bound_loop)
        self._ratio_loop = numba.njit([(out4, arr(a, 4), arr(f8, 4), arr(f8, 4), f8) for a in (t.float32, f8)],
                                      cache=True, error_model="numpy")(_ratio_loop)
        self.summary = numba.njit([(arr(f8, 1), arr(f8, 1), arr(a, 1), arr(f8, 1)) for a in (t.float32, f8)],
                                  cache=True)(_summary)
        self._numba = numba

    @functools.cached_property
    def _y_ufunc(self):
        """The ufunc form of `_y_bound`, for operands of more than 4 axes (slower: numpy's general
        iterator; compiled on first use)."""
        sig = "float64(" + ", ".join(["float64"] * 10 + ["boolean"] * 2 + ["float64"] * 9 + ["boolean"] * 2) + ")"
        return self._numba.vectorize([sig], nopython=True, cache=True)(_y_bound)

    @functools.cached_property
    def _ratio_ufunc(self):
        """The ufunc form of `_ratio` (see `_y_ufunc`)."""
        return self._numba.vectorize(["float64(float64, float64, float64, float64)"], nopython=True,
                                     cache=True)(_ratio)

    def y_bound(self, *args):
        arrays = [np.asarray(a, dtype=bool if i in (10, 11) else np.float64) for i, a in enumerate(args[:12])]
        return self._run(self._y_loop, "_y_ufunc", arrays, args[12:])

    def ratio(self, a, ref, bound, thr):
        a = np.asarray(a)
        if a.dtype not in (np.float32, np.float64):  # (half formats exactly; EXT rounded, +-inf beyond range)
            a = a.astype(np.float64)
        return self._run(self._ratio_loop, "_ratio_ufunc",
                         [a, np.asarray(ref, dtype=np.float64), np.asarray(bound, dtype=np.float64)], (thr,))

    def _run(self, loop, ufunc, arrays, scalars):
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        scalars = tuple(bool(v) if isinstance(v, (bool, np.bool_)) else float(v) for v in scalars)
        out = np.empty(shape, dtype=np.float64)
        keep = [d for d, n in enumerate(shape) if n != 1]  # (axes of length 1 everywhere: dropped, so
        if len(keep) > 4 or _FENV is None:                 # that (N, C, 1) loops over C, not over 1)
            return getattr(self, ufunc)(*arrays, *scalars, out=out)
        views = []
        for a in [out] + arrays:  # (reshapes that drop or add axes of length 1: views, no copy)
            full = (1,) * (len(shape) - a.ndim) + a.shape
            views.append(a.reshape((1,) * (4 - len(keep)) + tuple(full[d] for d in keep)))
        _FENV.feclearexcept(_FE_ALL)
        loop(*views, *scalars)
        _check_status(_FENV.fetestexcept(_FE_ALL), loop.__name__)
        return out


# The processor's floating-point status flags, read through C99 <fenv.h> (glibc's libm, x86-64
# values): a compiled loop called directly is not a numpy ufunc, so numpy does not read them.
_FE = {"invalid": 0x01, "divide": 0x04, "over": 0x08, "under": 0x10}
_FE_ALL = sum(_FE.values())
_NAMES = {"invalid": "invalid value", "divide": "divide by zero", "over": "overflow", "under": "underflow"}


def _libm():
    import ctypes
    import ctypes.util
    import platform
    if platform.machine() not in ("x86_64", "AMD64"):
        return None  # the flag values above are x86's: elsewhere the ufunc forms keep numpy's checks
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        lib.fetestexcept.restype = lib.feclearexcept.restype = ctypes.c_int
        return lib
    except (OSError, AttributeError):
        return None


_FENV = _libm()


def _check_status(flags: int, where: str) -> None:
    """Apply the current `numpy.errstate` to the flags a compiled loop raised, as numpy does after a
    ufunc loop: 'raise' raises FloatingPointError, 'warn' (and 'print', 'log', 'call') warns."""
    if not flags:
        return
    modes = np.geterr()
    for cond, bit in _FE.items():
        if flags & bit and modes[cond] != "ignore":
            msg = f"{_NAMES[cond]} encountered in {where}"
            if modes[cond] == "raise":
                raise FloatingPointError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=4)


_y_bound_c = _ratio_c = _row_c = None  # the compiled helpers, set by _Kernels


@functools.lru_cache(maxsize=None)
def _compiled():
    try:
        import numba
    except ImportError as e:  # a declared dependency: only a broken installation lacks it
        warnings.warn(f"normfuzz: numba unavailable ({e}); the error model runs its numpy code (slower)",
                      RuntimeWarning, stacklevel=3)
        return None
    return _Kernels(numba)
