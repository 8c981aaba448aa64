"""An independent high-precision reference for every normalization op, written from the definitions.

This module exists to check `oracles` and therefore shares no code with it (it never imports it) and
is organised differently on purpose. The oracle reshapes each op into one working view and computes in
numpy.longdouble with a corrected two-pass algorithm; this reference assigns every element to its
reduction set by an explicit *key* of its multi-index (BatchNorm: the channel; LayerNorm: the leading
index; GroupNorm: (sample, group); ...) and evaluates the textbook formula with mpmath at `dps`
decimal digits (60 by default, about 200 bits) on numpy object arrays of mpf, one element at a time.

Inputs are converted exactly (`to_mp`): every float16, bfloat16 (float32 carrier), float32, float64 and
longdouble value is a dyadic rational with at most 64 significant bits (113 where longdouble is
IEEE quad), fewer than the working precision's. Statistics are
mean = fsum(x)/n and the biased variance fsum((x - mean)**2)/n_s: at 200 bits their relative error is
about 1e-60, so a comparison with the oracle measures the oracle's error alone.

Non-finite values follow extended-real arithmetic on the exact formula, as IEEE arithmetic would:
inf - inf, 0 * inf and anything with NaN give NaN; a division by zero (v + eps = 0) gives +inf; 1/inf
gives 0. The reference has no NaN *convention* of its own: where it says NaN or inf the formula is
undefined or infinite there.

Public functions take numpy arrays (or object arrays of mpf) and keyword-only conventions with *no
defaults*: every convention is spelled out by the caller. Each returns a dict of object arrays of mpf
named and shaped like the outputs of `oracles.evaluate`. `evaluate(op, mode, inputs, attrs)` maps the
case-level names onto them (forward modes only; gradients are checked by finite differences of these
functions, see `jvp_fd`). `parts(op, inputs, attrs)` returns the per-element intermediates
(centered value, scale r, ...) of one evaluation, which the gradient tests use to size tolerances.
`compare(actual, ref, bound, limit=...)` checks an oracle output against a reference, in mpmath.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Mapping

import mpmath
import numpy as np
from mpmath import mp, mpf

DPS = 60
_LD_BITS = np.finfo(np.longdouble).nmant + 1  # 64 (x86 extended) or 113 (IEEE quad)

__all__ = ["DPS", "FORWARD_MODES", "OUTPUT_OF", "Comparison", "Parts", "compare", "evaluate", "parts", "jvp_fd",
           "to_mp", "rscale", "batch_norm_inference", "batch_norm_training", "batch_norm_training_steps",
           "layer_norm", "rms_norm", "group_norm", "instance_norm", "mvn", "l2_normalize", "weight_norm"]


@contextmanager
def _prec(dps: int | None):
    """Work at `dps` digits, or at the caller's current precision when dps is None."""
    if dps is None:
        yield
    else:
        with mp.workdps(dps):
            yield


# --------------------------------------------------------------------------------------------------
# conversion


def _scalar_to_mp(a: np.longdouble) -> mpf:
    if np.isnan(a):
        return mpf("nan")
    if np.isinf(a):
        return mpf("inf") if a > 0 else mpf("-inf")
    m, e = np.frexp(a)  # a = m * 2**e, 0.5 <= |m| < 1; m * 2**_LD_BITS is an integer
    return mpmath.ldexp(mpf(int(np.ldexp(m, _LD_BITS))), int(e) - _LD_BITS)


def to_mp(a, *, dps: int | None = DPS) -> np.ndarray:
    """Exact conversion of a numeric array to an object array of mpf (object arrays pass through).

    Exact because every value has at most `_LD_BITS` significant bits and the working precision
    has at least as many (checked); `dps=None` converts at the caller's precision.
    """
    a = np.asarray(a)
    if a.dtype == object:
        return a
    with _prec(dps):
        assert mp.prec >= _LD_BITS, f"to_mp needs {_LD_BITS} bits of working precision, has {mp.prec}"
        e = a.astype(np.longdouble)
        out = np.empty(e.shape, dtype=object)
        for idx in np.ndindex(e.shape):
            out[idx] = _scalar_to_mp(e[idx])
    return out


def _isnan(a) -> bool:
    return mpmath.isnan(a)


# --------------------------------------------------------------------------------------------------
# the definitions


def rscale(v, eps, eps_mode: str):
    """The scale r(v) for one eps convention (v: the variance, or the sum of squares for L2):

        inside     1 / sqrt(v + eps)
        outside    1 / (sqrt(v) + eps)
        max_norm   1 / max(sqrt(v), eps)
        max_sumsq  1 / sqrt(max(v, eps))
        none       1 / sqrt(v)
    A zero denominator gives +inf, a NaN v gives NaN.
    """
    if _isnan(v):
        return mpf("nan")
    eps = mpf(eps)
    if eps_mode == "inside":
        den = mpmath.sqrt(v + eps)
    elif eps_mode == "outside":
        den = mpmath.sqrt(v) + eps
    elif eps_mode == "max_norm":
        s = mpmath.sqrt(v)
        den = s if s > eps else eps
    elif eps_mode == "max_sumsq":
        den = mpmath.sqrt(v if v > eps else eps)
    elif eps_mode == "none":
        den = mpmath.sqrt(v)
    else:
        raise ValueError(f"eps_mode={eps_mode!r} is not one of inside/outside/max_norm/max_sumsq/none")
    return mpf("inf") if den == 0 else 1 / den


@dataclass
class Parts:
    """Per-element intermediates of one normalization, object arrays shaped like x.

    key: the element's reduction-set key; n: its set's size; ns: the variance divisor (n or 1);
    mean, v, r: its set's statistics; c = x - mean (x for uncentered ops); xhat = c * r;
    gamma, beta: the affine parameters applied to it (None when absent); y = gamma * xhat + beta;
    pidx: the flat index (into the parameter arrays, raveled) of the parameter entry it uses
    (None for ops without parameters).
    `stats` maps each key to (mean, v, r, n). `given` is True for fixed statistics (BN inference).
    """

    key: np.ndarray
    n: np.ndarray
    ns: np.ndarray
    mean: np.ndarray
    v: np.ndarray
    r: np.ndarray
    c: np.ndarray
    xhat: np.ndarray
    gamma: np.ndarray | None
    beta: np.ndarray | None
    pidx: np.ndarray | None
    y: np.ndarray
    stats: dict
    centered: bool
    eps: float
    eps_mode: str
    given: bool = False


def _normalize(x: np.ndarray, key_of: Callable, *, centered: bool, divisor: str, eps, eps_mode: str,
               gamma=None, beta=None, param_index: Callable | None = None,
               given: Mapping | None = None) -> Parts:
    """Normalize every reduction set {i : key_of(i) == k} of x (an object array of mpf).

    mean_k = sum(x_i)/n_k (0 if not centered), v_k = sum((x_i - mean_k)**2) / n_s (n_s = n_k for
    divisor "mean", 1 for "sum"), r_k = rscale(v_k, eps);
    y_i = gamma[p(i)] * (x_i - mean_k) * r_k + beta[p(i)] with p = `param_index` and gamma, beta
    raveled parameter arrays (or None). `given` maps keys to fixed (mean, var) (BatchNorm inference).
    """
    gamma = None if gamma is None else to_mp(gamma, dps=None).reshape(-1)
    beta = None if beta is None else to_mp(beta, dps=None).reshape(-1)
    members: dict = {}
    for idx in np.ndindex(x.shape):
        members.setdefault(key_of(idx), []).append(idx)
    stats = {}
    for k, idxs in members.items():
        vals = [x[i] for i in idxs]
        n = len(vals)
        if given is not None:
            mean, v = given[k]
        else:
            mean = mpmath.fsum(vals) / n if centered else mpf(0)
            v = mpmath.fsum((a - mean) ** 2 for a in vals) / (n if divisor == "mean" else 1)
        stats[k] = (mean, v, rscale(v, eps, eps_mode), n)
    shape = x.shape
    out = {name: np.empty(shape, dtype=object) for name in ("key", "n", "ns", "mean", "v", "r", "c", "xhat", "y")}
    gam = None if gamma is None else np.empty(shape, dtype=object)
    bet = None if beta is None else np.empty(shape, dtype=object)
    pidx = None if param_index is None else np.empty(shape, dtype=object)
    for idx in np.ndindex(shape):
        k = key_of(idx)
        mean, v, r, n = stats[k]
        c = x[idx] - mean
        xhat = c * r
        y = xhat
        if pidx is not None:
            pidx[idx] = param_index(idx)
        if gam is not None:
            gam[idx] = gamma[pidx[idx]]
            y = gam[idx] * y
        if bet is not None:
            bet[idx] = beta[pidx[idx]]
            y = y + bet[idx]
        for name, val in (("key", k), ("n", n), ("ns", n if divisor == "mean" else 1), ("mean", mean),
                          ("v", v), ("r", r), ("c", c), ("xhat", xhat), ("y", y)):
            out[name][idx] = val
    return Parts(out["key"], out["n"], out["ns"], out["mean"], out["v"], out["r"], out["c"], out["xhat"],
                 gam, bet, pidx, out["y"], stats, centered, eps, eps_mode, given is not None)


def _objects(values: list) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _stat_array(p: Parts, keys: list, which: int) -> np.ndarray:
    """Statistic `which` (0 mean, 1 v, 2 r) of each key, as a 1-D object array over `keys`."""
    return _objects([p.stats[k][which] for k in keys])


def _grid(shape) -> list:
    return list(np.ndindex(*shape))


def _channel_axis(ndim: int, layout: str) -> int:
    if layout == "channels_first":
        return 1
    if layout == "channels_last":
        return ndim - 1
    raise ValueError(f"layout={layout!r} is not channels_first/channels_last")


# --------------------------------------------------------------------------------------------------
# batch_norm


def _bn_parts(x, gamma, beta, *, eps, layout, given=None) -> tuple[Parts, int, int]:
    x = to_mp(x, dps=None)
    ca = _channel_axis(x.ndim, layout)
    C = x.shape[ca]
    p = _normalize(x, lambda i: i[ca], centered=True, divisor="mean", eps=eps, eps_mode="inside",
                   gamma=gamma, beta=beta, param_index=lambda i: i[ca], given=given)
    return p, C, x.size // C


def batch_norm_inference(x, running_mean, running_var, gamma, beta, *, eps, layout, dps=DPS) -> dict:
    """y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta, per channel."""
    with _prec(dps):
        rm, rv = to_mp(running_mean, dps=None), to_mp(running_var, dps=None)
        p, _, _ = _bn_parts(x, gamma, beta, eps=eps, layout=layout,
                            given={c: (rm[c], rv[c]) for c in range(rm.shape[0])})
        return {"y": p.y}


def _batch_weight(momentum, momentum_on: str, batches_seen: int):
    """Weight w of the batch statistic in the update, literally per convention:
    'batch' (PyTorch): new = (1 - m) old + m batch; 'running' (Keras/ONNX): new = m old + (1 - m) batch;
    momentum None (PyTorch cumulative average over k = batches_seen batches): new = old + (batch - old)/k."""
    if momentum is None:
        return mpf(1) / batches_seen
    m = mpf(momentum)
    if momentum_on == "batch":
        return m
    if momentum_on == "running":
        return 1 - m
    raise ValueError(f"momentum_on={momentum_on!r}")


def _update(old, batch, momentum, momentum_on: str, batches_seen: int):
    if momentum is None:
        return old + (batch - old) / batches_seen
    m = mpf(momentum)
    if momentum_on == "batch":
        return (1 - m) * old + m * batch
    if momentum_on == "running":
        return m * old + (1 - m) * batch
    raise ValueError(f"momentum_on={momentum_on!r}")


def batch_norm_training(x, gamma, beta, running_mean, running_var, *, eps, layout, momentum, momentum_on,
                        running_var_estimator, num_batches_tracked, dps=DPS) -> dict:
    """Batch statistics per channel (biased variance normalizes), y, rstd, and the running update.

    The running variance is updated with var (biased) or var * n / (n - 1) (unbiased; n >= 2).
    This step is batch number num_batches_tracked + 1 (matters for momentum=None).
    """
    with _prec(dps):
        p, C, n = _bn_parts(x, gamma, beta, eps=eps, layout=layout)
        keys = list(range(C))
        out = {"y": p.y, "mean": _stat_array(p, keys, 0), "var": _stat_array(p, keys, 1),
               "rstd": _stat_array(p, keys, 2)}
        if running_mean is not None:
            rm, rv = to_mp(running_mean, dps=None), to_mp(running_var, dps=None)
            if running_var_estimator == "biased":
                unb = out["var"]
            elif running_var_estimator == "unbiased":
                if n < 2:
                    raise ValueError("unbiased running variance needs n >= 2")
                unb = _objects([s * n / (n - 1) for s in out["var"]])
            else:
                raise ValueError(f"running_var_estimator={running_var_estimator!r}")
            k = num_batches_tracked + 1
            out["running_mean"] = _objects([_update(rm[c], out["mean"][c], momentum, momentum_on, k)
                                            for c in keys])
            out["running_var"] = _objects([_update(rv[c], unb[c], momentum, momentum_on, k) for c in keys])
        return out


def batch_norm_training_steps(xs, gamma, beta, running_mean, running_var, *, eps, layout, momentum,
                              momentum_on, running_var_estimator, num_batches_tracked, dps=DPS) -> dict:
    """K training steps over xs[0..K-1]; step k starts from step k-1's running statistics and is
    batch number num_batches_tracked + k + 1. Returns y, mean, var, running_mean, running_var stacked."""
    with _prec(dps):
        xs = to_mp(xs, dps=None)
        rm, rv = to_mp(running_mean, dps=None), to_mp(running_var, dps=None)
        steps = []
        for k in range(xs.shape[0]):
            s = batch_norm_training(xs[k], gamma, beta, rm, rv, eps=eps, layout=layout, momentum=momentum,
                                    momentum_on=momentum_on, running_var_estimator=running_var_estimator,
                                    num_batches_tracked=num_batches_tracked + k, dps=None)
            steps.append(s)
            rm, rv = s["running_mean"], s["running_var"]
        return {name: np.stack([s[name] for s in steps])
                for name in ("y", "mean", "var", "running_mean", "running_var")}


# --------------------------------------------------------------------------------------------------
# layer_norm, rms_norm (trailing dimensions)


def _trailing_k(ndim: int, normalized_ndim, axis) -> int:
    if (normalized_ndim is None) == (axis is None):
        raise ValueError("give exactly one of normalized_ndim and axis")
    if axis is not None:
        return ndim - (axis % ndim)
    return int(normalized_ndim)


def _trailing_parts(x, gamma, beta, *, eps, normalized_ndim, axis, centered) -> tuple[Parts, tuple]:
    x = to_mp(x, dps=None)
    k = _trailing_k(x.ndim, normalized_ndim, axis)
    lead = x.ndim - k
    trailing = x.shape[lead:]
    p = _normalize(x, lambda i: i[:lead], centered=centered, divisor="mean", eps=eps, eps_mode="inside",
                   gamma=gamma, beta=beta, param_index=lambda i: int(np.ravel_multi_index(i[lead:], trailing)))
    return p, x.shape[:lead]


def layer_norm(x, gamma, beta, *, eps, normalized_ndim=None, axis=None, dps=DPS) -> dict:
    """Per leading index over the trailing k dims (k = normalized_ndim, or rank - axis):
    y = gamma * (x - mean) / sqrt(var + eps) + beta; also mean and rstd of shape lead."""
    with _prec(dps):
        p, lead = _trailing_parts(x, gamma, beta, eps=eps, normalized_ndim=normalized_ndim, axis=axis,
                                  centered=True)
        keys = _grid(lead)
        return {"y": p.y, "mean": _stat_array(p, keys, 0).reshape(lead),
                "rstd": _stat_array(p, keys, 2).reshape(lead)}


def rms_norm(x, weight, *, eps, normalized_ndim=None, axis=None, dps=DPS) -> dict:
    """y = weight * x / sqrt(mean(x**2) + eps) over the trailing k dims; also rstd (shape lead)."""
    with _prec(dps):
        p, lead = _trailing_parts(x, weight, None, eps=eps, normalized_ndim=normalized_ndim, axis=axis,
                                  centered=False)
        return {"y": p.y, "rstd": _stat_array(p, _grid(lead), 2).reshape(lead)}


# --------------------------------------------------------------------------------------------------
# group_norm, instance_norm


def _group_parts(x, gamma, beta, *, num_groups, eps, layout, affine) -> tuple[Parts, tuple]:
    x = to_mp(x, dps=None)
    ca = _channel_axis(x.ndim, layout)
    C = x.shape[ca]
    if C % num_groups:
        raise ValueError(f"num_groups={num_groups} does not divide channels={C}")
    per = C // num_groups
    if affine == "per_channel":
        pidx = lambda i: i[ca]  # noqa: E731
    elif affine == "per_group":
        pidx = lambda i: i[ca] // per  # noqa: E731
    else:
        raise ValueError(f"affine={affine!r}")
    p = _normalize(x, lambda i: (i[0], i[ca] // per), centered=True, divisor="mean", eps=eps,
                   eps_mode="inside", gamma=gamma, beta=beta, param_index=pidx)
    return p, (x.shape[0], num_groups)


def group_norm(x, gamma, beta, *, num_groups, eps, layout, affine, dps=DPS) -> dict:
    """Per sample and group of C/G contiguous channels (all spatial positions): normalize, then the
    affine per channel ((C,) parameters) or per group ((G,)); mean and rstd of shape (N, G)."""
    with _prec(dps):
        p, sshape = _group_parts(x, gamma, beta, num_groups=num_groups, eps=eps, layout=layout, affine=affine)
        keys = _grid(sshape)
        return {"y": p.y, "mean": _stat_array(p, keys, 0).reshape(sshape),
                "rstd": _stat_array(p, keys, 2).reshape(sshape)}


def _instance_parts(x, gamma, beta, *, eps, layout) -> tuple[Parts, tuple]:
    x = to_mp(x, dps=None)
    ca = _channel_axis(x.ndim, layout)
    p = _normalize(x, lambda i: (i[0], i[ca]), centered=True, divisor="mean", eps=eps, eps_mode="inside",
                   gamma=gamma, beta=beta, param_index=lambda i: i[ca])
    return p, (x.shape[0], x.shape[ca])


def instance_norm(x, gamma, beta, *, eps, layout, dps=DPS) -> dict:
    """Per sample and channel over the spatial positions; mean and rstd of shape (N, C)."""
    with _prec(dps):
        p, sshape = _instance_parts(x, gamma, beta, eps=eps, layout=layout)
        keys = _grid(sshape)
        return {"y": p.y, "mean": _stat_array(p, keys, 0).reshape(sshape),
                "rstd": _stat_array(p, keys, 2).reshape(sshape)}


# --------------------------------------------------------------------------------------------------
# mvn, l2_normalize, weight_norm (explicit axes)


def _axes_key(ndim: int, axes) -> Callable:
    red = {a % ndim for a in axes}
    keep = [d for d in range(ndim) if d not in red]
    return lambda i: tuple(i[d] for d in keep)


def _mvn_parts(x, *, axes, eps, eps_mode) -> Parts:
    x = to_mp(x, dps=None)
    return _normalize(x, _axes_key(x.ndim, axes), centered=True, divisor="mean", eps=eps, eps_mode=eps_mode)


def mvn(x, *, axes, eps, eps_mode, dps=DPS) -> dict:
    """Mean-variance normalization over `axes`: (x - mean) * rscale(var, eps, eps_mode)."""
    with _prec(dps):
        return {"y": _mvn_parts(x, axes=axes, eps=eps, eps_mode=eps_mode).y}


def _l2_parts(x, *, axes, eps, eps_mode) -> Parts:
    x = to_mp(x, dps=None)
    return _normalize(x, _axes_key(x.ndim, axes), centered=False, divisor="sum", eps=eps, eps_mode=eps_mode)


def l2_normalize(x, *, axes, eps, eps_mode, dps=DPS) -> dict:
    """x * rscale(sum_axes(x**2), eps, eps_mode)."""
    with _prec(dps):
        return {"y": _l2_parts(x, axes=axes, eps=eps, eps_mode=eps_mode).y}


def _weight_parts(v, g, *, dim, eps, eps_mode) -> Parts:
    """w = g[j] * v / ||v_j|| where v_j is the slice of v at index j of dimension `dim` (the norm runs
    over every other dimension). For 1-D v that is the norm over no dimension, |v_i|."""
    v = to_mp(v, dps=None)
    d = dim % v.ndim
    if np.size(g) != v.shape[d]:
        raise ValueError(f"g has {np.size(g)} entries, v.shape[{d}] = {v.shape[d]}")
    key = (lambda i: i[d]) if v.ndim > 1 else (lambda i: i)
    return _normalize(v, key, centered=False, divisor="sum", eps=eps, eps_mode=eps_mode, gamma=g,
                      param_index=lambda i: i[d])


def weight_norm(v, g, *, dim, eps, eps_mode, dps=DPS) -> dict:
    """w = g * v / ||v|| with the norm over every dim except `dim` (and the eps convention)."""
    with _prec(dps):
        return {"w": _weight_parts(v, g, dim=dim, eps=eps, eps_mode=eps_mode).y}


# --------------------------------------------------------------------------------------------------
# case-level dispatch


#: forward modes of each op, and the name of the output that gradients differentiate.
FORWARD_MODES = {
    "batch_norm": ("inference", "training", "training_steps"),
    "layer_norm": ("forward",), "rms_norm": ("forward",), "group_norm": ("forward",),
    "instance_norm": ("forward",), "mvn": ("forward",), "l2_normalize": ("forward",),
    "weight_norm": ("forward",),
}
OUTPUT_OF = {op: "w" if op == "weight_norm" else "y" for op in FORWARD_MODES}


def evaluate(op: str, mode: str, inputs: Mapping, attrs: Mapping, *, dps: int | None = DPS) -> dict:
    """Reference outputs for one forward case, in the names and shapes of `oracles.evaluate`.

    `attrs` must name every convention of the op (no defaults here): batch_norm eps, layout (and for
    training momentum, momentum_on, running_var_estimator, num_batches_tracked); layer_norm/rms_norm eps
    and normalized_ndim or axis; group_norm eps, num_groups, layout, affine; instance_norm eps, layout;
    mvn and l2_normalize eps, axes, eps_mode; weight_norm eps, dim, eps_mode.
    """
    i, a = inputs, attrs
    if op == "batch_norm":
        if mode == "inference":
            return batch_norm_inference(i["x"], i["running_mean"], i["running_var"], i.get("gamma"),
                                        i.get("beta"), eps=a["eps"], layout=a["layout"], dps=dps)
        kw = dict(eps=a["eps"], layout=a["layout"], momentum=a["momentum"], momentum_on=a["momentum_on"],
                  running_var_estimator=a["running_var_estimator"],
                  num_batches_tracked=a["num_batches_tracked"], dps=dps)
        if mode == "training":
            return batch_norm_training(i["x"], i.get("gamma"), i.get("beta"), i.get("running_mean"),
                                       i.get("running_var"), **kw)
        if mode == "training_steps":
            return batch_norm_training_steps(i["xs"], i.get("gamma"), i.get("beta"), i["running_mean"],
                                             i["running_var"], **kw)
        raise ValueError(f"batch_norm mode {mode!r} is not a forward mode")
    if mode != "forward":
        raise ValueError(f"{op} mode {mode!r} is not a forward mode")
    trailing = dict(normalized_ndim=a.get("normalized_ndim"), axis=a.get("axis"))
    if op == "layer_norm":
        return layer_norm(i["x"], i.get("gamma"), i.get("beta"), eps=a["eps"], dps=dps, **trailing)
    if op == "rms_norm":
        return rms_norm(i["x"], i.get("weight"), eps=a["eps"], dps=dps, **trailing)
    if op == "group_norm":
        return group_norm(i["x"], i.get("gamma"), i.get("beta"), num_groups=a["num_groups"], eps=a["eps"],
                          layout=a["layout"], affine=a["affine"], dps=dps)
    if op == "instance_norm":
        return instance_norm(i["x"], i.get("gamma"), i.get("beta"), eps=a["eps"], layout=a["layout"], dps=dps)
    if op == "mvn":
        return mvn(i["x"], axes=a["axes"], eps=a["eps"], eps_mode=a["eps_mode"], dps=dps)
    if op == "l2_normalize":
        return l2_normalize(i["x"], axes=a["axes"], eps=a["eps"], eps_mode=a["eps_mode"], dps=dps)
    if op == "weight_norm":
        return weight_norm(i["v"], i["g"], dim=a["dim"], eps=a["eps"], eps_mode=a["eps_mode"], dps=dps)
    raise ValueError(f"unknown op {op!r}")


def parts(op: str, inputs: Mapping, attrs: Mapping, *, state: str = "training", dps: int | None = DPS) -> Parts:
    """Per-element intermediates of the forward map that `op`'s gradients differentiate.

    For batch_norm, `state` "inference" uses the running statistics, "training" the batch ones.
    """
    i, a = inputs, attrs
    with _prec(dps):
        if op == "batch_norm":
            given = None
            if state == "inference":
                rm, rv = to_mp(i["running_mean"], dps=None), to_mp(i["running_var"], dps=None)
                given = {c: (rm[c], rv[c]) for c in range(rm.shape[0])}
            return _bn_parts(i["x"], i.get("gamma"), i.get("beta"), eps=a["eps"], layout=a["layout"],
                             given=given)[0]
        trailing = dict(normalized_ndim=a.get("normalized_ndim"), axis=a.get("axis"))
        if op == "layer_norm":
            return _trailing_parts(i["x"], i.get("gamma"), i.get("beta"), eps=a["eps"], centered=True,
                                   **trailing)[0]
        if op == "rms_norm":
            return _trailing_parts(i["x"], i.get("weight"), None, eps=a["eps"], centered=False, **trailing)[0]
        if op == "group_norm":
            return _group_parts(i["x"], i.get("gamma"), i.get("beta"), num_groups=a["num_groups"],
                                eps=a["eps"], layout=a["layout"], affine=a["affine"])[0]
        if op == "instance_norm":
            return _instance_parts(i["x"], i.get("gamma"), i.get("beta"), eps=a["eps"], layout=a["layout"])[0]
        if op == "mvn":
            return _mvn_parts(i["x"], axes=a["axes"], eps=a["eps"], eps_mode=a["eps_mode"])
        if op == "l2_normalize":
            return _l2_parts(i["x"], axes=a["axes"], eps=a["eps"], eps_mode=a["eps_mode"])
        if op == "weight_norm":
            return _weight_parts(i["v"], i["g"], dim=a["dim"], eps=a["eps"], eps_mode=a["eps_mode"])
    raise ValueError(f"unknown op {op!r}")


def jvp_fd(f: Callable[[dict], np.ndarray], inputs: Mapping, tangents: Mapping, *, h: str = "1e-20",
           dps: int = 80) -> np.ndarray:
    """Central difference (f(p + h t) - f(p - h t)) / (2 h) at `dps` digits: the directional
    derivative J t with truncation error h**2/6 * |f'''| and rounding error ~10**-dps / h.

    `f` maps a dict of object arrays (the perturbed `inputs`) to one object array and must compute at
    the caller's precision (pass dps=None to this module's functions); `tangents` holds a direction
    for some of the inputs (the others stay fixed).
    """
    with mp.workdps(dps):
        hh = mpf(h)
        base = {k: to_mp(v, dps=None) for k, v in inputs.items() if v is not None}
        tan = {k: to_mp(v, dps=None) for k, v in tangents.items() if v is not None}
        plus = dict(base)
        minus = dict(base)
        for k, t in tan.items():
            plus[k] = base[k] + hh * t
            minus[k] = base[k] - hh * t
        return (f(plus) - f(minus)) / (2 * hh)


# --------------------------------------------------------------------------------------------------
# comparing an oracle's output with the reference


@dataclass
class Comparison:
    """An oracle output against this reference, element by element.

    worst: the largest |oracle - reference| / bound over the elements with a finite bound and a
    finite reference (0 if none); checked: how many such elements; unconstrained: elements skipped
    because their bound is +inf (no honest implementation is pinned down there); undefined: elements
    where both the oracle and the reference are NaN/infinite (equal infinities, or the oracle NaN where
    the formula is undefined or infinite); failures: (index, reason) for every element breaking the
    rules of `compare`.
    """

    worst: float = 0.0
    worst_index: tuple | None = None
    checked: int = 0
    unconstrained: int = 0
    undefined: int = 0
    failures: list = None

    def __post_init__(self):
        if self.failures is None:
            self.failures = []


def compare(actual, ref: np.ndarray, bound, *, limit: float, dps: int = DPS) -> Comparison:
    """Check |actual - ref| <= limit * bound per element, in mpmath (no rounding of the difference).

    Rules, per element (a = the oracle's value, r = the reference, b = the bound):
      - a NaN: r must be NaN or infinite (the formula undefined there); otherwise a failure.
      - r NaN or infinite, a not NaN: a == r (same infinity) passes; otherwise a failure unless
        b = +inf (unconstrained: the oracle's value then judges nothing).
      - r finite, b = +inf: skipped (counted as unconstrained).
      - r finite, b finite: the ratio |a - r| / b must be <= limit (an infinite a fails).
    """
    a_all = np.asarray(actual)
    b_all = np.asarray(bound)
    out = Comparison()
    if a_all.shape != ref.shape or b_all.shape != ref.shape:
        out.failures.append(((), f"shapes: oracle {a_all.shape}, bound {b_all.shape}, reference {ref.shape}"))
        return out
    with mp.workdps(dps):
        a_mp = to_mp(a_all, dps=None)
        for idx in np.ndindex(ref.shape):
            a, r, b = a_mp[idx], ref[idx], b_all[idx]
            b_inf = bool(np.isinf(b)) or bool(np.isnan(b))
            if mpmath.isnan(a):
                if mpmath.isfinite(r):
                    out.failures.append((idx, f"oracle NaN where the reference is {mpmath.nstr(r, 20)}"))
                else:
                    out.undefined += 1
                continue
            if not mpmath.isfinite(r):
                if a == r:
                    out.undefined += 1
                elif b_inf:
                    out.unconstrained += 1
                else:
                    out.failures.append((idx, f"reference {r} but oracle {mpmath.nstr(a, 20)} with bound {b}"))
                continue
            if b_inf:
                out.unconstrained += 1
                continue
            out.checked += 1
            if not mpmath.isfinite(a):
                out.failures.append((idx, f"oracle {a} where the reference is {mpmath.nstr(r, 20)}"))
                continue
            err = abs(a - r)
            bm = _scalar_to_mp(np.longdouble(b))
            if err == 0:
                ratio = 0.0
            elif bm == 0:
                ratio = float("inf")
            else:
                ratio = float(err / bm)
            if out.worst_index is None or ratio > out.worst:
                out.worst, out.worst_index = ratio, idx
            if ratio > limit:
                out.failures.append((idx, f"|oracle - reference| / bound = {ratio:.3g} > {limit:g}: oracle "
                                          f"{mpmath.nstr(a, 22)}, reference {mpmath.nstr(r, 22)}, bound {b}"))
    return out
