"""Honest low-precision implementations of every normalization op, to calibrate the error model.

Each implementation in `HONEST` has the case-level interface of `oracles.evaluate`:

    impl(op, mode, inputs, attrs, dtype) -> {output name: array in the case's carrier dtype}

with the same input, attribute and output names (see `oracles.registry`). Unlike the oracle they
compute *in low precision for real*: float64 cases in float64, every other case in float32 (float16
and bfloat16 inputs are converted to float32, exactly), with numpy's IEEE arithmetic, correctly
rounded per operation; outputs are rounded once to the case's format with `oracles.dtypes.round_to`.
eps and the momentum are rounded to the working format, as a framework holding them in a tensor does.

They differ in *legitimate* algorithm choices, the ones `oracles.errormodel` claims to cover:

summation (every reduction, keepdims, vectorized over the reduction sets: the reduction axes are moved
last and the array reshaped to (sets, n))
    "sequential"  left to right, s = s + x[j] (numpy's cumsum is strictly sequential)
    "reversed"    right to left
    "pairwise"    recursive halving (zero-padded to a power of two; adding an exact zero is exact)
    "blocked8", "blocked16"   sequential partial sums of blocks, then a sequential sum of the partials
    "numpy"       numpy's own sum (pairwise with 8-way unrolled leaves)
statistics (centered ops)
    "two_pass"        mean = sum(x) / n, v = sum((x - mean)**2) / n_s
    "two_pass_recip"  the same with the divisions replaced by a multiplication by 1/n
    "welford"         Welford's update, sequential (m += d / k; M2 += d * (x - m)), v = M2 / n_s
    (uncentered ops: sum(x*x) with the two_pass / two_pass_recip division; welford falls back to
    two_pass there)
scale
    "rsqrt_mul"  r = 1 / sqrt(v + eps), xhat = c * r
    "div_sqrt"   xhat = c / sqrt(v + eps) (rstd reported as 1 / sqrt(v + eps))
    "newton"     r0 = 1 / sqrt(a) in the working format, then one Newton step
                 r = r0 * (1.5 - 0.5 * ((a * r0) * r0)), as rsqrt-plus-refinement kernels do;
                 for the conventions that are not a reciprocal square root ("outside") the reciprocal
                 of the denominator; "max_norm" as min(rsqrt(v), 1/eps)
    every eps convention of `oracles._core.EPS_MODES`, eps where the op puts it
output
    "centered"   y = (x - mu) * r * gamma + beta
    "folded"     y = x * scale + shift, scale = gamma * r, shift = beta - mu * scale
gradients (VJP and JVP of every op and mode)
    "closed"     dx = r * (z - mean(z) - xhat * sum(z * xhat) / n_s)            (eps inside / none)
                 ty = gamma * r * (dc - xhat * sum(xhat * dc) / n_s) + ...
    "generic"    dx = P(r z + r' sum(z c) 2 c / n_s), P = centering; r' of the eps convention
                 ty = gamma * (dc r + c r' 2/n_s sum(c dc)) + ...
    "scaled"     dx = (r / n) * (n z - sum(z) - xhat * sum(z * xhat))            (PyTorch's form)
running statistics (BatchNorm training)
    "weights"    new = (1 - w) * old + w * batch  (momentum_on "batch", PyTorch)
                 new = m * old + (1 - m) * batch  (momentum_on "running", Keras), m rounded
    "lerp"       new = old + w * (batch - old)    (TensorFlow's assign_moving_average)
    the unbiased variance as v * (n / (n - 1)); running statistics are rounded to the case's format
    after every step (they are stored in it).

Conventions other than the algorithm are the oracle's (biased variance normalizes, NaN in a set
poisons the set as IEEE arithmetic does, the kink of the max conventions goes to the floor branch
when sqrt(v) == eps / v == eps). None of the known-buggy algorithms is here (one-pass
E[x^2] - E[x]^2 variance, half-precision accumulation, eps outside the root where the op says inside):
those are the bug zoo's.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable, Mapping

import numpy as np

from oracles.dtypes import round_to

#: Working format of an honest implementation for each case format.
WORKING = {"float16": np.float32, "bfloat16": np.float32, "float32": np.float32, "float64": np.float64}

SUMMATIONS = ("sequential", "reversed", "pairwise", "blocked8", "blocked16", "numpy")
STATISTICS = ("two_pass", "two_pass_recip", "welford")
SCALES = ("rsqrt_mul", "div_sqrt", "newton")
OUTPUTS = ("centered", "folded")
GRADIENTS = ("closed", "generic", "scaled")
RUNNING = ("weights", "lerp")


# --------------------------------------------------------------------------------------------------
# summation over the last axis of a (sets, n) array, in the array's own format


def _sum_sequential(a: np.ndarray) -> np.ndarray:
    return np.cumsum(a, axis=1, dtype=a.dtype)[:, -1]


def _sum_reversed(a: np.ndarray) -> np.ndarray:
    return np.cumsum(a[:, ::-1], axis=1, dtype=a.dtype)[:, -1]


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    if a.shape[1] == n:
        return a
    return np.concatenate([a, np.zeros((a.shape[0], n - a.shape[1]), dtype=a.dtype)], axis=1)


def _sum_pairwise(a: np.ndarray) -> np.ndarray:
    n = a.shape[1]
    a = _pad(a, 1 << (n - 1).bit_length())
    while a.shape[1] > 1:
        a = a[:, 0::2] + a[:, 1::2]
    return a[:, 0]


def _sum_blocked(block: int) -> Callable[[np.ndarray], np.ndarray]:
    def s(a: np.ndarray) -> np.ndarray:
        sets, n = a.shape
        nb = -(-n // block)
        a = _pad(a, nb * block).reshape(sets, nb, block)
        partial = np.cumsum(a, axis=2, dtype=a.dtype)[:, :, -1]
        return np.cumsum(partial, axis=1, dtype=a.dtype)[:, -1]
    return s


def _sum_numpy(a: np.ndarray) -> np.ndarray:
    return np.sum(np.ascontiguousarray(a), axis=1, dtype=a.dtype)


_SUMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sequential": _sum_sequential,
    "reversed": _sum_reversed,
    "pairwise": _sum_pairwise,
    "blocked8": _sum_blocked(8),
    "blocked16": _sum_blocked(16),
    "numpy": _sum_numpy,
}


def _to_sets(a: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """(sets, n) array with the reduction axes last, and the keepdims shape of the result."""
    keep = [i for i in range(a.ndim) if i not in axes]
    t = np.transpose(a, keep + list(axes))
    n = prod(a.shape[i] for i in axes)
    out_shape = tuple(1 if i in axes else a.shape[i] for i in range(a.ndim))
    return np.ascontiguousarray(t).reshape(-1, n), out_shape


# --------------------------------------------------------------------------------------------------
# geometry: each op as reductions over axes of (a reshape of) its input, in the original layout


@dataclass
class Geometry:
    """One op's input as a normalization over `axes` of `x` (a reshape of the input, never a
    transpose), with the parameters reshaped to broadcast against `x`."""

    x: np.ndarray
    axes: tuple[int, ...]
    centered: bool
    divisor: str            # "mean" | "sum"
    eps_mode: str
    in_shape: tuple[int, ...]
    stat_shape: tuple[int, ...]
    param_shape: tuple[int, ...]   # broadcast shape of gamma / beta against x

    @property
    def n(self) -> int:
        return prod(self.x.shape[a] for a in self.axes)

    @property
    def ns(self) -> int:
        return self.n if self.divisor == "mean" else 1

    def param(self, a, w) -> np.ndarray | None:
        return None if a is None else np.asarray(a).astype(w).reshape(self.param_shape)

    def work(self, a, w) -> np.ndarray:
        """An array shaped like the input (dy, tx) in the working shape and format."""
        return np.asarray(a).astype(w).reshape(self.x.shape)

    def stat(self, s: np.ndarray) -> np.ndarray:
        return s.reshape(self.stat_shape)

    def param_axes(self) -> tuple[int, ...]:
        return tuple(i for i, (a, b) in enumerate(zip(self.x.shape, self.param_shape)) if b == 1 and a != 1)


def _channel_axis(ndim: int, layout: str) -> int:
    if layout not in ("channels_first", "channels_last"):
        raise ValueError(f"layout={layout!r} is invalid: expected channels_first or channels_last")
    return 1 if layout == "channels_first" else ndim - 1


def _trailing_k(ndim: int, attrs: Mapping) -> int:
    k, axis = attrs.get("normalized_ndim"), attrs.get("axis")
    return int(k) if k is not None else ndim - (int(axis) % ndim)


def _norm_axes(axes, ndim: int) -> tuple[int, ...]:
    return tuple(sorted(int(a) % ndim for a in axes))


def geometry(op: str, inputs: Mapping, attrs: Mapping, w) -> Geometry:
    """The reduction structure of `op` (written from the op definitions, independently of the
    oracle's working views)."""
    if op == "weight_norm":
        x = np.asarray(inputs["v"] if "v" in inputs else inputs["tv"])
    elif op == "batch_norm" and "xs" in inputs:
        x = np.asarray(inputs["xs"])[0]
    else:
        x = np.asarray(inputs["x"])
    shape, nd = x.shape, x.ndim
    xw = x.astype(w)
    if op in ("batch_norm", "instance_norm"):
        ch = _channel_axis(nd, attrs.get("layout", "channels_first"))
        if op == "batch_norm":
            axes = tuple(i for i in range(nd) if i != ch)
            stat = (shape[ch],)
        else:
            axes = tuple(i for i in range(1, nd) if i != ch)
            stat = (shape[0], shape[ch])
        pshape = tuple(shape[ch] if i == ch else 1 for i in range(nd))
        return Geometry(xw, axes, True, "mean", "inside", shape, stat, pshape)
    if op in ("layer_norm", "rms_norm"):
        k = _trailing_k(nd, attrs)
        axes = tuple(range(nd - k, nd))
        pshape = (1,) * (nd - k) + shape[nd - k:]
        return Geometry(xw, axes, op == "layer_norm", "mean", "inside", shape, shape[:nd - k], pshape)
    if op == "group_norm":
        g = int(attrs["num_groups"])
        ch = _channel_axis(nd, attrs.get("layout", "channels_first"))
        c = shape[ch]
        if ch == 1:
            ws = (shape[0], g, c // g) + shape[2:]
            axes = tuple(range(2, nd + 1))
            gax = 1
        else:
            ws = shape[:-1] + (g, c // g)
            axes = tuple(range(1, nd - 1)) + (nd,)
            gax = nd - 1
        per_channel = attrs.get("affine", "per_channel") == "per_channel"
        pshape = tuple(g if i == gax else (c // g if (i == gax + 1 and per_channel) else 1)
                       for i in range(nd + 1))
        return Geometry(xw.reshape(ws), axes, True, "mean", "inside", shape, (shape[0], g), pshape)
    if op == "mvn":
        axes = _norm_axes(attrs.get("axes", (0, 2, 3)), nd)
        stat = tuple(1 if i in axes else s for i, s in enumerate(shape))
        return Geometry(xw, axes, True, "mean", attrs.get("eps_mode", "outside"), shape, stat, (1,) * nd)
    if op == "l2_normalize":
        axes = _norm_axes(attrs.get("axes", (-1,)), nd)
        stat = tuple(1 if i in axes else s for i, s in enumerate(shape))
        return Geometry(xw, axes, False, "sum", attrs.get("eps_mode", "max_norm"), shape, stat, (1,) * nd)
    if op == "weight_norm":
        dim = int(attrs.get("dim", 0)) % nd
        axes = tuple(i for i in range(nd) if i != dim)  # none for a vector: ||v_i|| = |v_i|
        stat = tuple(1 if i in axes else s for i, s in enumerate(shape))
        pshape = tuple(shape[dim] if i == dim else 1 for i in range(nd))
        return Geometry(xw, axes, False, "sum", attrs.get("eps_mode", "none"), shape, stat, pshape)
    raise ValueError(f"op={op!r} is invalid: expected one of the oracle's ops")


# names of the parameters and their case-level inputs per op: (gamma name, beta name)
_PARAM_NAMES = {
    "batch_norm": ("gamma", "beta"), "layer_norm": ("gamma", "beta"), "group_norm": ("gamma", "beta"),
    "instance_norm": ("gamma", "beta"), "rms_norm": ("weight", None), "mvn": (None, None),
    "l2_normalize": (None, None), "weight_norm": ("g", None),
}
_DEFAULT_EPS = {"mvn": 1e-9, "l2_normalize": 1e-12, "weight_norm": 0.0}


# --------------------------------------------------------------------------------------------------
# the implementations


@dataclass(frozen=True)
class Honest:
    """One honest implementation: a choice of summation, statistics, scale, output form, gradient
    form and running-statistics update (module docstring). Call it like `oracles.evaluate`."""

    summation: str = "sequential"
    statistics: str = "two_pass"
    scale: str = "rsqrt_mul"
    output: str = "centered"
    gradient: str = "closed"
    running: str = "weights"

    def __post_init__(self):
        for value, allowed in ((self.summation, SUMMATIONS), (self.statistics, STATISTICS),
                               (self.scale, SCALES), (self.output, OUTPUTS), (self.gradient, GRADIENTS),
                               (self.running, RUNNING)):
            if value not in allowed:
                raise ValueError(f"{value!r} is invalid: expected one of {allowed}")

    # ---- building blocks -------------------------------------------------------------------------

    def sum(self, a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        """Sum over `axes` (keepdims) with this implementation's summation order."""
        t, out_shape = _to_sets(a, axes)
        return _SUMS[self.summation](t).reshape(out_shape)

    def _welford(self, x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        t, out_shape = _to_sets(x, axes)
        w = x.dtype.type
        m = np.zeros(t.shape[0], dtype=x.dtype)
        m2 = np.zeros(t.shape[0], dtype=x.dtype)
        for k in range(t.shape[1]):
            xk = t[:, k]
            d = xk - m
            m = m + d / w(k + 1)
            m2 = m2 + d * (xk - m)
        return m.reshape(out_shape), m2.reshape(out_shape)

    def stats(self, g: Geometry, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """(mean or None, centered values c, v) in the working format."""
        w = x.dtype.type
        n, ns = w(g.n), w(g.ns)
        if g.centered and self.statistics == "welford":
            mean, m2 = self._welford(x, g.axes)
            c = x - mean
            return mean, c, (m2 / ns if g.divisor == "mean" else m2)
        recip = self.statistics == "two_pass_recip"
        inv_n = w(1) / n
        mean = None
        c = x
        if g.centered:
            s = self.sum(x, g.axes)
            mean = s * inv_n if recip else s / n
            c = x - mean
        ss = self.sum(c * c, g.axes)
        if g.divisor == "sum":
            v = ss
        else:
            v = ss * inv_n if recip else ss / ns
        return mean, c, v

    def _rsqrt(self, a: np.ndarray) -> np.ndarray:
        """1/sqrt(a) by this implementation's scale algorithm (never a division of c)."""
        w = a.dtype.type
        r0 = w(1) / np.sqrt(a)
        if self.scale != "newton":
            return r0
        r1 = r0 * (w(1.5) - w(0.5) * ((a * r0) * r0))
        return np.where(np.isfinite(r0) & (r0 > 0), r1, r0)  # rsqrt(0) = inf, rsqrt(inf) = 0

    def scale_parts(self, g: Geometry, v: np.ndarray, eps) -> tuple[np.ndarray, np.ndarray | None]:
        """(r, d): r the scale; d the denominator when this implementation divides by it (else None)."""
        w = v.dtype.type
        e = w(eps)
        mode = g.eps_mode
        if mode == "outside":
            d = np.sqrt(v) + e
            return w(1) / d, (d if self.scale == "div_sqrt" else None)
        if mode == "max_norm":
            d = np.maximum(np.sqrt(v), e)
            if self.scale == "newton":
                return np.minimum(self._rsqrt(v), w(1) / e), None
            return w(1) / d, (d if self.scale == "div_sqrt" else None)
        a = {"inside": lambda: v + e, "max_sumsq": lambda: np.maximum(v, e), "none": lambda: v}[mode]()
        if self.scale == "div_sqrt":
            d = np.sqrt(a)
            return w(1) / d, d
        return self._rsqrt(a), None

    def rprime(self, g: Geometry, v: np.ndarray, r: np.ndarray, eps) -> np.ndarray:
        """dr/dv of the eps convention at the computed statistics (floor branch at the kink)."""
        w = v.dtype.type
        full = -(w(0.5) * r) * r * r
        if g.eps_mode in ("inside", "none"):
            return full
        if g.eps_mode == "outside":
            return -(w(0.5) * r) * r / np.sqrt(v)
        if g.eps_mode == "max_norm":
            return np.where(np.sqrt(v) > w(eps), full, w(0))
        return np.where(v > w(eps), full, w(0))

    def _normalize(self, g: Geometry, x, mean, c, r, d, gamma, beta):
        """(y, xhat) by the output form."""
        w = x.dtype.type
        if self.output == "folded":
            one = w(1)
            gm = one if gamma is None else gamma
            scale = gm / d if d is not None else gm * r
            y = x * scale
            if mean is not None or beta is not None:
                shift = (w(0) if beta is None else beta) - (w(0) if mean is None else mean * scale)
                y = y + shift
        else:
            y = c / d if d is not None else c * r
            if gamma is not None:
                y = y * gamma
            if beta is not None:
                y = y + beta
        xhat = c / d if d is not None else c * r
        return y, xhat

    # ---- forward -------------------------------------------------------------------------------

    def forward(self, g: Geometry, eps, gamma=None, beta=None, *, given=None) -> dict:
        """Working-format intermediates: mean, c, v, r, d, xhat, y (given=(mean, var): inference)."""
        x = g.x
        w = x.dtype.type
        with np.errstate(all="ignore"):
            if given is not None:
                mean, var = given
                c = x - mean
                v = var
            else:
                mean, c, v = self.stats(g, x)
            r, d = self.scale_parts(g, v, eps)
            y, xhat = self._normalize(g, x, mean, c, r, d, gamma, beta)
        return dict(mean=mean, c=c, v=v, r=r, d=d, xhat=xhat, y=y, w=w)

    # ---- gradients -----------------------------------------------------------------------------

    def vjp(self, g: Geometry, f: dict, dy: np.ndarray, gamma, *, given: bool, eps) -> np.ndarray:
        """dx (working shape) of sum(dy * y)."""
        w = f["w"]
        r, c, xhat, v = f["r"], f["c"], f["xhat"], f["v"]
        with np.errstate(all="ignore"):
            z = dy if gamma is None else dy * gamma
            if given:
                return z / f["d"] if f["d"] is not None else z * r
            ns = w(g.ns)
            closed_ok = g.eps_mode in ("inside", "none") and self.gradient != "generic"
            if closed_ok and self.gradient == "scaled" and g.divisor == "mean":
                n = w(g.n)
                szx = self.sum(z * xhat, g.axes)
                t = n * z - xhat * szx
                if g.centered:
                    t = t - self.sum(z, g.axes)
                return (r / n) * t
            if closed_ok:
                szx = self.sum(z * xhat, g.axes)
                t = z - xhat * (szx / ns)
                if g.centered:
                    t = t - self.sum(z, g.axes) / w(g.n)
                return r * t
            rp = self.rprime(g, v, r, eps)
            t = r * z + (rp * self.sum(z * c, g.axes) * (w(2) / ns)) * c
            if g.centered:
                t = t - self.sum(t, g.axes) / w(g.n)
            return t

    def jvp(self, g: Geometry, f: dict, tx, gamma, tgamma, tbeta, *, given: bool, eps) -> np.ndarray:
        """ty (working shape) along (tx, tgamma, tbeta)."""
        w = f["w"]
        r, c, xhat, v = f["r"], f["c"], f["xhat"], f["v"]
        with np.errstate(all="ignore"):
            if given:
                t = tx / f["d"] if f["d"] is not None else tx * r
            else:
                ns = w(g.ns)
                dc = tx - self.sum(tx, g.axes) / w(g.n) if g.centered else tx
                if g.eps_mode in ("inside", "none") and self.gradient != "generic":
                    t = r * (dc - xhat * (self.sum(xhat * dc, g.axes) / ns))
                else:
                    rp = self.rprime(g, v, r, eps)
                    dr = rp * ((w(2) / ns) * self.sum(c * dc, g.axes))
                    t = dc * r + c * dr
            if gamma is not None:
                t = t * gamma
            if tgamma is not None:
                t = t + tgamma * xhat
            if tbeta is not None:
                t = t + tbeta
        return t

    def param_grad(self, g: Geometry, full: np.ndarray, pshape) -> np.ndarray:
        axes = g.param_axes()
        out = self.sum(full, axes) if axes else full
        return out.reshape(pshape)

    # ---- running statistics --------------------------------------------------------------------

    def update_running(self, old: np.ndarray, batch: np.ndarray, attrs: Mapping, nbt: int) -> np.ndarray:
        w = batch.dtype.type
        m = attrs.get("momentum", 0.1)
        on = attrs.get("momentum_on", "batch")
        one = w(1)
        with np.errstate(all="ignore"):
            if m is None:
                wb = one / w(nbt + 1)
                keep = one - wb
            elif on == "batch":
                wb = w(m)
                keep = one - wb
            else:
                keep = w(m)
                wb = one - keep
            if self.running == "lerp":
                return old + wb * (batch - old)
            return keep * old + wb * batch

    # ---- the case-level interface --------------------------------------------------------------

    def __call__(self, op: str, mode: str, inputs: Mapping[str, np.ndarray], attrs: Mapping,
                 dtype: str) -> dict[str, np.ndarray]:
        """Outputs of one case, named as `oracles.evaluate` names them, rounded to `dtype`."""
        w = WORKING[dtype]
        if op == "batch_norm":
            out = self._batch_norm(mode, inputs, attrs, w, dtype)
        else:
            out = self._generic(op, mode, inputs, attrs, w)
        return {k: round_to(dtype, v) for k, v in out.items()}

    def _generic(self, op: str, mode: str, inputs: Mapping, attrs: Mapping, w) -> dict:
        g = geometry(op, inputs, attrs, w)
        gname, bname = _PARAM_NAMES[op]
        eps = attrs.get("eps", _DEFAULT_EPS.get(op))
        gamma = g.param(inputs.get(gname), w) if gname else None
        beta = g.param(inputs.get(bname), w) if bname else None
        f = self.forward(g, eps, gamma, beta)
        xname, yname = ("v", "w") if op == "weight_norm" else ("x", "y")
        if mode == "forward":
            out = {yname: f["y"].reshape(g.in_shape)}
            if op in ("layer_norm", "group_norm", "instance_norm"):
                out["mean"] = g.stat(f["mean"])
            if op in ("layer_norm", "group_norm", "instance_norm", "rms_norm"):
                out["rstd"] = g.stat(f["r"])
            return out
        if mode == "vjp":
            dy = g.work(inputs["d" + yname], w)
            out = {"d" + xname: self.vjp(g, f, dy, gamma, given=False, eps=eps).reshape(g.in_shape)}
            with np.errstate(all="ignore"):
                if gamma is not None:
                    out["d" + gname] = self.param_grad(g, dy * f["xhat"], np.shape(inputs[gname]))
                if beta is not None:
                    out["d" + bname] = self.param_grad(g, dy, np.shape(inputs[bname]))
            return out
        if mode == "jvp":
            tx = g.work(inputs["t" + xname], w)
            tg = g.param(inputs.get("t" + gname), w) if gname else None
            tb = g.param(inputs.get("t" + bname), w) if bname else None
            ty = self.jvp(g, f, tx, gamma, tg, tb, given=False, eps=eps)
            return {"t" + yname: ty.reshape(g.in_shape)}
        raise ValueError(f"mode={mode!r} is invalid for {op}")

    def _batch_norm(self, mode: str, inputs: Mapping, attrs: Mapping, w, dtype: str) -> dict:
        eps = attrs["eps"]
        if mode == "training_steps":
            xs = np.asarray(inputs["xs"])
            rm = np.asarray(inputs["running_mean"]).astype(w)
            rv = np.asarray(inputs["running_var"]).astype(w)
            steps = []
            for k in range(xs.shape[0]):
                step = dict(inputs, x=xs[k], running_mean=rm, running_var=rv)
                step.pop("xs")
                a = dict(attrs, num_batches_tracked=int(attrs.get("num_batches_tracked", 0)) + k)
                o = self._batch_norm("training", step, a, w, dtype)
                steps.append(o)
                # stored in the case's format between steps
                rm = round_to(dtype, o["running_mean"]).astype(w)
                rv = round_to(dtype, o["running_var"]).astype(w)
            return {k: np.stack([s[k] for s in steps]) for k in ("y", "mean", "var", "running_mean", "running_var")}
        g = geometry("batch_norm", inputs, attrs, w)
        gamma, beta = g.param(inputs.get("gamma"), w), g.param(inputs.get("beta"), w)
        state, kind = mode.split("_") if "_" in mode else (mode, "forward")
        given = None
        if state == "inference":
            given = (g.param(inputs["running_mean"], w), g.param(inputs["running_var"], w))
        f = self.forward(g, eps, gamma, beta, given=given)
        if kind == "forward":
            out = {"y": f["y"]}
            if state == "training":
                out.update(mean=g.stat(f["mean"]), var=g.stat(f["v"]), rstd=g.stat(f["r"]))
                if "running_mean" in inputs:
                    nbt = int(attrs.get("num_batches_tracked", 0))
                    with np.errstate(all="ignore"):
                        var = g.stat(f["v"])
                        if attrs.get("running_var_estimator", "unbiased") == "unbiased":
                            var = var * (w(g.n) / w(g.n - 1))
                    out["running_mean"] = self.update_running(
                        np.asarray(inputs["running_mean"]).astype(w), g.stat(f["mean"]), attrs, nbt)
                    out["running_var"] = self.update_running(
                        np.asarray(inputs["running_var"]).astype(w), var, attrs, nbt)
            return out
        if kind == "vjp":
            dy = g.work(inputs["dy"], w)
            out = {"dx": self.vjp(g, f, dy, gamma, given=given is not None, eps=eps)}
            with np.errstate(all="ignore"):
                if gamma is not None:
                    out["dgamma"] = self.param_grad(g, dy * f["xhat"], np.shape(inputs["gamma"]))
                if beta is not None:
                    out["dbeta"] = self.param_grad(g, dy, np.shape(inputs["beta"]))
            return out
        tx = g.work(inputs["tx"], w)
        ty = self.jvp(g, f, tx, gamma, g.param(inputs.get("tgamma"), w), g.param(inputs.get("tbeta"), w),
                      given=given is not None, eps=eps)
        return {"ty": ty}


# --------------------------------------------------------------------------------------------------
# the registry: every choice of each axis appears in at least one implementation


HONEST: dict[str, Honest] = {
    "naive": Honest("sequential", "two_pass", "rsqrt_mul", "centered", "closed", "weights"),
    "pairwise_div": Honest("pairwise", "two_pass", "div_sqrt", "centered", "generic", "lerp"),
    "reversed_recip_folded": Honest("reversed", "two_pass_recip", "rsqrt_mul", "folded", "scaled", "weights"),
    "welford_newton": Honest("sequential", "welford", "newton", "centered", "closed", "lerp"),
    "blocked8_div_folded": Honest("blocked8", "two_pass", "div_sqrt", "folded", "closed", "weights"),
    "blocked16_welford_folded": Honest("blocked16", "welford", "rsqrt_mul", "folded", "generic", "weights"),
    "numpy_sum": Honest("numpy", "two_pass", "rsqrt_mul", "centered", "scaled", "lerp"),
    "pairwise_recip_newton_folded": Honest("pairwise", "two_pass_recip", "newton", "folded", "generic", "weights"),
}
"""Registered honest implementations by name (each a callable `impl(op, mode, inputs, attrs, dtype)`)."""


__all__ = ["HONEST", "Honest", "Geometry", "geometry", "WORKING", "SUMMATIONS", "STATISTICS", "SCALES",
           "OUTPUTS", "GRADIENTS", "RUNNING"]
