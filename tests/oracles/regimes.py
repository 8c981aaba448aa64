"""Input generators by numerical regime, for every op and mode of `oracles.registry`.

`make_inputs(op, mode, dtype, regime, rng, *, max_elements=20_000) -> (inputs, attrs)` builds one
case: a shape for the op, its attributes (eps, layout, axes, groups, momentum conventions, ...), and
inputs named as `oracles.evaluate` names them, every float input exactly representable in `dtype`
(rounded with `oracles.dtypes.round_to`, in the format's carrier dtype). Data are drawn per reduction
set as x = loc + scale * z (z standard normal), with (loc, scale) per set from the regime:

    well_conditioned  scale 10**U(-2, 2), |loc| a few scales
    large_mean        |loc| / scale = R, R log-uniform in [1e2, 1e8] capped at 2**(p-1) (p the
                      format's precision: the spread stays at least one ulp of the mean, so float16
                      reaches R ~ 1e3 and bfloat16 R ~ 1e2 only)
    constant          scale 0 (zero-variance sets), eps > 0 or eps = 0 half of the time each
    var_near_eps      scale**2 = eps * 10**U(-1, 1), eps > 0
    tiny              magnitudes from the smallest subnormal to 10 * the smallest normal
    huge              magnitudes from sqrt(max) to max / 8 (their squares overflow the format)
    mixed             each set draws its own regime (constant, wide range of scales, large mean,
                      variance near eps); half of the cases also scale the data by 10**U(-3, 3)
                      per index along one axis (channels of very different scales in one set)
    size_one          batch, spatial or normalized dims of 1 where the op allows (n = 1 included)
    long              reduction length from 1,000 to 20,000 (capped by `max_elements`)

eps is drawn from {0} and float32-representable values in [1e-12, 0.1] (decades and log-uniform),
and now and then a decimal float32 cannot represent (1e-5 as a double);
gamma/beta (weight, g) include absent, ones, 0, negative and huge values (kept such that the output
stays in the format's range most of the time); the momentum from [0, 1] (decimal values included,
which the working format rounds) and None. Cotangents and tangents are N(0, 1) times a random scale,
now and then on a large common offset.
"""

from __future__ import annotations

from math import prod
from typing import Mapping

import numpy as np

from oracles.dtypes import DTYPES, round_to
from oracles.registry import OPS

from .honest import geometry

REGIMES = ("well_conditioned", "large_mean", "constant", "var_near_eps", "tiny", "huge", "mixed",
           "size_one", "long")
DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")
EPS_DECADES = tuple(float(np.float32(10.0 ** k)) for k in range(-12, 0))

_EPS_MODES = {"mvn": ("inside", "outside", "none"),
              "l2_normalize": ("none", "inside", "max_norm", "max_sumsq"),
              "weight_norm": ("none", "inside", "max_norm", "max_sumsq")}
_LAYOUTS = ("channels_first", "channels_last")


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(10.0 ** rng.uniform(np.log10(lo), np.log10(hi)))


def _split(rng: np.random.Generator, n: int, k: int, *, ones: bool = False) -> list[int]:
    """k positive dims whose product is about n (exactly n when k == 1)."""
    if k == 0:
        return []
    if k == 1:
        return [max(1, int(n))]
    share = rng.dirichlet(np.ones(k)) * np.log(max(n, 1))
    dims = [max(1, int(round(np.exp(s)))) for s in share]
    if ones:  # size_one: put extra dims of 1 in
        dims = [1 if rng.random() < 0.5 else d for d in dims]
    return dims


def draw_eps(rng: np.random.Generator, *, positive: bool = False, zero_p: float = 0.15) -> float:
    """0 (unless `positive`), a float32 decade in [1e-12, 0.1], a float32 log-uniform value, or
    (one time in ten) a decimal such as 1e-5 that float32 does not represent (PyTorch passes its
    eps as a double; a float32 kernel rounds it, which the error model's u_eps term covers)."""
    if not positive and rng.random() < zero_p:
        return 0.0
    t = rng.random()
    if t < 0.1:
        return float(10.0 ** int(rng.integers(-12, 0)))
    if t < 0.55:
        return EPS_DECADES[rng.integers(len(EPS_DECADES))]
    return float(np.float32(_loguniform(rng, 1e-12, 0.1)))


# --------------------------------------------------------------------------------------------------
# shapes and attributes per op


def _shape_and_attrs(op: str, mode: str, rng, n: int, sets: int, size_one: bool) -> tuple[tuple, dict]:
    """(x shape, attrs without eps) for about `sets` reduction sets of about `n` elements."""
    o = size_one
    if op == "batch_norm":
        s = int(rng.integers(0, 3))
        dims = _split(rng, n, 1 + s, ones=o)
        if o:
            dims[0] = 1
        c = max(1, min(sets, 8))
        layout = _LAYOUTS[rng.integers(2)]
        shape = (dims[0], c, *dims[1:]) if layout == "channels_first" else (dims[0], *dims[1:], c)
        return shape, {"layout": layout}
    if op in ("layer_norm", "rms_norm"):
        lead = _split(rng, sets, int(rng.integers(0, 3)), ones=o)
        k = int(rng.integers(1, 4))
        norm = _split(rng, n, k, ones=o)
        shape = tuple(lead + norm)
        if rng.random() < 0.5:
            return shape, {"normalized_ndim": k}
        return shape, {"axis": len(lead) if rng.random() < 0.5 else -k}
    if op == "group_norm":
        g = int(rng.integers(1, 5))
        cpg = int(rng.integers(1, 5)) if not o else int(rng.integers(1, 3))
        s = int(rng.integers(0, 3))
        sp = _split(rng, max(1, n // cpg), s, ones=o)
        nb = 1 if o else max(1, min(4, sets // g))
        layout = _LAYOUTS[rng.integers(2)]
        c = g * cpg
        shape = (nb, c, *sp) if layout == "channels_first" else (nb, *sp, c)
        return shape, {"num_groups": g, "layout": layout,
                       "affine": "per_channel" if rng.random() < 0.7 else "per_group"}
    if op == "instance_norm":
        s = int(rng.integers(1, 3))
        sp = _split(rng, n, s, ones=o)
        nb, c = _split(rng, sets, 2, ones=o)
        layout = _LAYOUTS[rng.integers(2)]
        shape = (nb, c, *sp) if layout == "channels_first" else (nb, *sp, c)
        return shape, {"layout": layout}
    if op in ("mvn", "l2_normalize"):
        rank = int(rng.integers(1, 5))
        na = int(rng.integers(1, rank + 1))
        axes = sorted(rng.choice(rank, size=na, replace=False).tolist())
        red = iter(_split(rng, n, na, ones=o))
        other = iter(_split(rng, sets, rank - na, ones=o))
        shape = tuple(next(red) if i in axes else next(other) for i in range(rank))
        axes = [a - rank if rng.random() < 0.3 else a for a in axes]
        return shape, {"axes": axes, "eps_mode": _EPS_MODES[op][rng.integers(len(_EPS_MODES[op]))]}
    if op == "weight_norm":
        rank = int(rng.integers(1, 5))
        dim = int(rng.integers(0, rank))
        if rank == 1:  # one norm per element: w = g * sign(v)
            shape = (max(1, min(sets * n, 64)),)
        else:
            red = iter(_split(rng, n, rank - 1, ones=o))
            shape = tuple(max(1, min(sets, 16)) if i == dim else next(red) for i in range(rank))
        if rng.random() < 0.3:
            dim -= rank
        return shape, {"dim": dim, "eps_mode": _EPS_MODES[op][rng.integers(len(_EPS_MODES[op]))]}
    raise ValueError(f"op={op!r} is invalid: expected one of {sorted(OPS)}")


# --------------------------------------------------------------------------------------------------
# per-set location and scale


def _set_params(regime: str, dtype: str, rng, shape: tuple[int, ...], eps: float):
    """(loc, scale) arrays of keepdims `shape` (one value per reduction set) for `regime`."""
    d = DTYPES[dtype]
    size = prod(shape)

    def u(lo, hi):
        return 10.0 ** rng.uniform(lo, hi, size)

    def sign():
        return rng.choice([-1.0, 1.0], size)

    lmax, lmin = np.log10(d.max), np.log10(d.eta)
    if regime in ("well_conditioned", "size_one"):
        scale = u(-2, 2)
        loc = scale * rng.normal(0, 2, size) * (rng.random(size) < 0.7)
    elif regime == "long":
        scale = u(-2, 1)
        loc = scale * u(-1, 2) * sign() * (rng.random(size) < 0.7)
    elif regime == "large_mean":
        rmax = min(1e8, 2.0 ** (d.p - 1))
        rlo = min(1e2, rmax / 4)
        ratio = 10.0 ** rng.uniform(np.log10(rlo), np.log10(rmax), size)
        scale = u(-2, 1)
        loc = ratio * scale * sign()
    elif regime == "constant":
        scale = np.zeros(size)
        loc = u(-3, 3) * sign() * (rng.random(size) < 0.9)
    elif regime == "var_near_eps":
        scale = np.sqrt(eps * u(-1, 1))
        loc = scale * rng.normal(0, 3, size) * (rng.random(size) < 0.5)
    elif regime == "tiny":
        scale = u(lmin, np.log10(d.tiny) + 1)
        loc = scale * rng.normal(0, 2, size) * (rng.random(size) < 0.5)
    elif regime == "huge":
        scale = u(lmax / 2, lmax - np.log10(8))
        loc = scale * rng.uniform(-2, 2, size) * (rng.random(size) < 0.7)
    elif regime == "mixed":
        lo, hi = (-4, 3) if dtype == "float16" else (-8, 8)
        scale = u(lo, hi)
        kind = rng.integers(0, 4, size)
        scale = np.where(kind == 0, 0.0, scale)                         # constant sets
        ratio = 10.0 ** rng.uniform(1, np.log10(min(1e6, 2.0 ** (d.p - 2))), size)
        loc = np.where(kind == 1, ratio * scale, scale * rng.normal(0, 1, size)) * sign()
        loc = np.where(kind == 0, u(lo, hi) * sign(), loc)
        if eps > 0:
            scale = np.where(kind == 3, np.sqrt(eps * u(-1, 1)), scale)  # variance near eps
    else:
        raise ValueError(f"regime={regime!r} is invalid: expected one of {REGIMES}")
    limit = d.max / 4
    return (np.clip(loc, -limit, limit).reshape(shape), np.minimum(scale, limit).reshape(shape))


def _data(dtype: str, rng, loc, scale, work_shape, in_shape, *, spread: bool = False) -> np.ndarray:
    """x = loc + scale * z, rounded to `dtype`; `spread`: z also scaled by 10**U(-3, 3) per index
    along one random axis (channels of very different scales inside one reduction set)."""
    d = DTYPES[dtype]
    z = rng.standard_normal(work_shape)
    if spread:
        ax = int(rng.integers(len(work_shape)))
        shape = [1] * len(work_shape)
        shape[ax] = work_shape[ax]
        z = z * 10.0 ** rng.uniform(-3, 3, shape)
    with np.errstate(over="ignore", invalid="ignore"):
        x = loc + scale * z
    x = np.clip(x, -d.max, d.max).reshape(in_shape)
    return round_to(dtype, x)


def _param(dtype: str, rng, shape, n: int, *, center: float) -> np.ndarray | None:
    """gamma-like (center 1) or beta-like (center 0) parameter: absent, ones/zeros, typical, with
    zeros, negative or huge entries."""
    d = DTYPES[dtype]
    kind = rng.choice(["absent", "plain", "typical", "zeros", "negative", "huge"],
                      p=[0.15, 0.1, 0.4, 0.1, 0.15, 0.1])
    if kind == "absent":
        return None
    size = prod(shape)
    if kind == "plain":
        p = np.full(size, center)
    else:
        p = center + rng.normal(0, 1, size)
        if kind == "zeros":
            p = np.where(rng.random(size) < 0.5, 0.0, p)
        elif kind == "negative":
            p = -np.abs(p) - (rng.random(size) < 0.5) * rng.exponential(1, size)
        elif kind == "huge":
            top = min(np.log10(d.max) - np.log10(8 * max(1.0, min(np.sqrt(n), 100.0))), np.log10(d.max) / 3)
            p = p * 10.0 ** rng.uniform(1, max(1.5, top), size)
    return round_to(dtype, p.reshape(shape))


def _tangent(dtype: str, rng, shape) -> np.ndarray:
    """N(0, 1) times a random scale; three times in ten on a common offset up to 1000 times the
    spread (cancellation in mean(dy) and mean(tx))."""
    t = rng.standard_normal(shape)
    if rng.random() < 0.3:
        t = t + rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(0, 3)
    return round_to(dtype, t * 10.0 ** rng.uniform(-2, 2))


def _running(dtype: str, rng, loc, scale, eps: float, regime: str) -> tuple[np.ndarray, np.ndarray]:
    """Running mean and variance per channel, plausible for the regime."""
    d = DTYPES[dtype]
    loc, scale = loc.ravel(), scale.ravel()
    if rng.random() < 0.25:  # the initial state of PyTorch and Keras
        return round_to(dtype, np.zeros(loc.shape)), round_to(dtype, np.ones(loc.shape))
    rm = loc + scale * rng.normal(0, 0.3, loc.shape)
    if regime == "var_near_eps" or (regime == "mixed" and rng.random() < 0.3 and eps > 0):
        rv = eps * 10.0 ** rng.uniform(-1, 1, loc.shape)
    else:
        with np.errstate(over="ignore"):
            rv = scale * scale * 10.0 ** rng.uniform(-0.5, 0.5, loc.shape)
    rv = np.minimum(rv, d.max)
    return round_to(dtype, np.clip(rm, -d.max, d.max)), round_to(dtype, rv)


# --------------------------------------------------------------------------------------------------
# the generator


def make_inputs(op: str, mode: str, dtype: str, regime: str, rng: np.random.Generator, *,
                max_elements: int = 20_000) -> tuple[dict[str, np.ndarray], dict]:
    """One case's (inputs, attrs) for `op`/`mode` in `dtype` and `regime` (module docstring).

    Raises ValueError for an unknown op, mode, dtype or regime.
    """
    if op not in OPS or mode not in OPS[op].modes:
        raise ValueError(f"op/mode={op}/{mode} is invalid: expected one of {list(OPS)} with its modes")
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype={dtype!r} is invalid: expected one of {DTYPE_NAMES}")
    if regime not in REGIMES:
        raise ValueError(f"regime={regime!r} is invalid: expected one of {REGIMES}")
    steps = int(rng.integers(1, 4)) if mode == "training_steps" else 1
    budget = max(1, max_elements // steps)
    if regime == "long":
        n = int(_loguniform(rng, min(1000, budget), min(20_000, budget)))
        sets = int(rng.integers(1, 4))
    elif regime == "size_one":
        n = int(rng.choice([1, 1, 2, 3, 5, 8]))
        sets = int(rng.integers(1, 5))
    else:
        n = int(_loguniform(rng, 1, 300)) if rng.random() < 0.9 else int(_loguniform(rng, 300, 3000))
        sets = int(_loguniform(rng, 1, 24))
    n = max(1, min(n, budget))
    sets = max(1, min(sets, budget // n))
    shape, attrs = _shape_and_attrs(op, mode, rng, n, sets, regime == "size_one")
    fixed = -1
    if op == "group_norm":  # channels must stay a multiple of num_groups
        fixed = 1 if attrs["layout"] == "channels_first" else len(shape) - 1
    while prod(shape) * steps > max_elements:  # the split may overshoot: halve the largest dim
        i = int(np.argmax([0 if j == fixed else s for j, s in enumerate(shape)]))
        shape = tuple(max(1, s // 2) if j == i else s for j, s in enumerate(shape))

    if regime == "var_near_eps":
        eps = draw_eps(rng, positive=True)
        if dtype in ("float16", "bfloat16") and eps < 1e-8:
            eps = float(np.float32(_loguniform(rng, 1e-8, 0.1)))
    elif regime == "constant":
        eps = 0.0 if rng.random() < 0.5 else draw_eps(rng, positive=True)
    elif regime == "tiny":
        eps = 0.0 if rng.random() < 0.5 else draw_eps(rng, positive=True)
    else:
        eps = draw_eps(rng)
    attrs["eps"] = eps

    placeholder = np.zeros(shape)
    gin = {"v": placeholder} if op == "weight_norm" else {"x": placeholder}
    g = geometry(op, gin, attrs, np.float64)
    n_red = g.n
    stat_shape = tuple(1 if i in g.axes else s for i, s in enumerate(g.x.shape))
    loc, scale = _set_params(regime, dtype, rng, stat_shape, eps)

    inputs: dict[str, np.ndarray] = {}
    xname = "v" if op == "weight_norm" else "x"
    spread = regime == "mixed" and rng.random() < 0.5
    if mode == "training_steps":
        inputs["xs"] = np.stack([_data(dtype, rng, loc, scale, g.x.shape, shape, spread=spread)
                                 for _ in range(steps)])
    else:
        inputs[xname] = _data(dtype, rng, loc, scale, g.x.shape, shape, spread=spread)

    pshape = g.param_shape
    if op == "group_norm":
        c = shape[1 if attrs["layout"] == "channels_first" else -1]
        pshape_case = (c,) if attrs["affine"] == "per_channel" else (attrs["num_groups"],)
    elif op in ("batch_norm", "instance_norm"):
        pshape_case = (shape[1 if attrs["layout"] == "channels_first" else -1],)
    elif op in ("layer_norm", "rms_norm"):
        k = len(shape) - len(g.stat_shape)
        pshape_case = shape[len(shape) - k:]
    elif op == "weight_norm":
        dim = attrs["dim"] % len(shape)
        pshape_case = (shape[dim],) if rng.random() < 0.5 else pshape
    else:
        pshape_case = None

    gname, bname = {"rms_norm": ("weight", None), "weight_norm": ("g", None),
                    "mvn": (None, None), "l2_normalize": (None, None)}.get(op, ("gamma", "beta"))
    if gname:
        p = _param(dtype, rng, pshape_case, n_red, center=1.0)
        if p is None and op == "weight_norm":
            p = round_to(dtype, np.ones(pshape_case))
        if p is not None:
            inputs[gname] = p
    if bname:
        p = _param(dtype, rng, pshape_case, n_red, center=0.0)
        if p is not None:
            inputs[bname] = p

    if op == "batch_norm":
        state = mode.split("_")[0]
        with_running = (state == "inference" or mode == "training_steps"
                        or (mode == "training" and rng.random() < 0.7))
        if with_running:
            rm, rv = _running(dtype, rng, loc, scale, eps, regime)
            inputs["running_mean"], inputs["running_var"] = rm, rv
        if mode in ("training", "training_steps"):
            r = rng.random()
            if r < 0.15:
                momentum = None
            elif r < 0.5:
                momentum = float(rng.choice([0.0, 1.0, 0.1, 0.01, 0.9, 0.99, 0.999]))
            else:
                momentum = float(rng.random())
            attrs["momentum"] = momentum
            attrs["momentum_on"] = "batch" if rng.random() < 0.5 else "running"
            attrs["running_var_estimator"] = ("biased" if n_red < 2 or rng.random() < 0.4 else "unbiased")
            attrs["num_batches_tracked"] = int(rng.integers(0, 1000)) if rng.random() < 0.5 else 0

    kind = mode.split("_")[-1]
    if kind == "vjp":
        inputs["dw" if op == "weight_norm" else "dy"] = _tangent(dtype, rng, shape)
    elif kind == "jvp":
        inputs["t" + xname] = _tangent(dtype, rng, shape)
        for name in (gname, bname):
            if name and name in inputs and rng.random() < 0.7:
                inputs["t" + name] = _tangent(dtype, rng, inputs[name].shape)
    return inputs, attrs


def case_summary(op: str, mode: str, dtype: str, regime: str, inputs: Mapping, attrs: Mapping,
                 seed=None) -> str:
    """One line naming the case: op/mode, dtype, regime, input shapes, attrs and seed."""
    shapes = " ".join(f"{k}{list(np.shape(v))}" for k, v in inputs.items())
    return f"{op}/{mode} {dtype} regime={regime} {shapes} attrs={dict(attrs)} seed={seed}"


__all__ = ["REGIMES", "DTYPE_NAMES", "EPS_DECADES", "make_inputs", "draw_eps", "case_summary"]
