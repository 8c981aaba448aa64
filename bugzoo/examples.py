"""Example cases inside and outside each variant's trigger regime.

`examples(variant, mode, dtype, inside=True, seed=0)` builds (with a seeded numpy generator) a case
for which the variant's output differs from the correct op by more than the oracle's error bound
(inside), or one for which it provably agrees within the bound (outside). Every float input is
exactly representable in `dtype` (rounded with `oracles.dtypes.round_to`). Returns None where a
variant has no outside regime for that mode and format (the reason is in `NO_OUTSIDE`).

The comments give the numerics behind each choice: the bug's relative effect against the unit
roundoff u of the format (float16 2**-11, bfloat16 2**-8, float32 2**-24, float64 2**-53) and the
bound's own terms (statistics accumulated in float32 for half formats).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from oracles import registry
from oracles.dtypes import dtype as _dtype, round_to

from .variant import Variant


@dataclass(frozen=True)
class Example:
    """A case for one variant: inputs and attrs for `oracles.evaluate` and `Variant.evaluate`."""

    inputs: dict = field(repr=False)
    attrs: dict
    note: str


#: (variant name, reason) for the variants without an outside regime in some modes or formats.
NO_OUTSIDE = {
    "batch_stats_at_inference": "gradients (inference_vjp/jvp) always differ: batch statistics "
                                "depend on x, running statistics do not",
    "unbiased_variance_normalizes": "float32/float64: agreement needs n >> 1/u (n ~ 1e8+)",
    "running_var_estimator_swapped": "float32/float64: agreement needs n >> 1/u (n ~ 1e8+)",
    "rms_norm_subtracts_mean": "gradients (vjp/jvp) differ even for a zero-mean input: the "
                               "centering projects the tangent and the cotangent",
    "weight_norm_wrong_dim": "reducing over `dim` and over the other dims coincide only for a "
                             "single element (a vector's correct norm is per element, |v_i|)",
}


def _u(dtype: str) -> float:
    return _dtype(dtype).u


# --------------------------------------------------------------------------------------------------
# shapes and reduction sets


#: default shape of the main input per op (channels_first), and its attrs.
SHAPES = {
    "batch_norm": ((4, 3, 5), {}),                         # n = N*L = 20 per channel
    "layer_norm": ((3, 4, 5), {"normalized_ndim": 2}),    # n = 20 per row
    "group_norm": ((2, 6, 5), {"num_groups": 3}),         # n = 2*5 = 10 per group
    "instance_norm": ((2, 3, 8), {}),                     # n = 8
    "rms_norm": ((3, 16), {"normalized_ndim": 1}),        # n = 16
    "mvn": ((2, 3, 4, 4), {"axes": (0, 2, 3)}),           # n = 32 per channel
    "l2_normalize": ((3, 8), {"axes": (-1,)}),            # n = 8
    "weight_norm": ((4, 6), {"dim": 0}),                  # n = 6 per output row
}


def _sets_shape(op: str, shape: tuple[int, ...], attrs: dict) -> tuple[tuple[int, int], Callable]:
    """(shape (S, n) of the reduction sets, function mapping an (S, n) array to op's layout)."""
    if op in ("batch_norm", "mvn"):  # per channel (mvn: axes (0, 2, 3)): (C, N, L...) -> (N, C, L...)
        c = shape[1]
        rest = (shape[0],) + tuple(shape[2:])
        return (c, int(np.prod(rest))), lambda a: np.moveaxis(a.reshape((c,) + rest), 0, 1)
    if op == "group_norm":  # (N, G, C/G * L) is a reshape of (N, C, L)
        g = attrs["num_groups"]
        return (shape[0] * g, int(np.prod(shape)) // (shape[0] * g)), lambda a: a.reshape(shape)
    if op == "instance_norm":
        return (shape[0] * shape[1], int(np.prod(shape[2:]))), lambda a: a.reshape(shape)
    if op in ("layer_norm", "rms_norm"):
        k = attrs.get("normalized_ndim", 1)
        q = int(np.prod(shape[len(shape) - k:]))
        return (int(np.prod(shape)) // q, q), lambda a: a.reshape(shape)
    if op == "l2_normalize":
        return (int(np.prod(shape[:-1])), shape[-1]), lambda a: a.reshape(shape)
    dim = attrs.get("dim", 0)  # weight_norm: one set per index of `dim`
    moved = (shape[dim],) + tuple(s for i, s in enumerate(shape) if i != dim)
    return (shape[dim], int(np.prod(moved[1:]))), lambda a: np.moveaxis(a.reshape(moved), 0, dim)


def _per_set(op, shape, attrs, fill, rng) -> np.ndarray:
    """An input of `shape` whose reduction set s holds fill(s, n, rng) (n values)."""
    (s_count, n), to_layout = _sets_shape(op, shape, attrs)
    return to_layout(np.stack([fill(s, n, rng) for s in range(s_count)]))


def _normal(loc=0.0, scale=1.0):
    return lambda s, n, rng: loc + scale * rng.standard_normal(n)


def _plus_minus(means, spreads):
    """Set s: half its values means[s] + spreads[s], half means[s] - spreads[s] (shuffled): mean
    and biased variance exactly means[s] and spreads[s]**2 (n even)."""
    def fill(s, n, rng):
        sign = np.array([1.0, -1.0] * (n // 2))
        rng.shuffle(sign)
        return means[s % len(means)] + spreads[s % len(spreads)] * sign
    return fill


def _symmetric(values):
    """Set s: pairs (a, -a) with a drawn from `values`: the mean is exactly 0."""
    def fill(s, n, rng):
        a = rng.choice(np.asarray(values, dtype=float), size=n // 2)
        out = np.concatenate([a, -a])
        rng.shuffle(out)
        return out
    return fill


# --------------------------------------------------------------------------------------------------
# assembling a case


def _param_shapes(op: str, x_shape: tuple[int, ...], attrs: dict) -> dict[str, tuple[int, ...]]:
    if op in ("batch_norm", "group_norm", "instance_norm"):
        return {"gamma": (x_shape[1],), "beta": (x_shape[1],)}
    if op in ("layer_norm", "rms_norm"):
        k = attrs.get("normalized_ndim", 1)
        ps = tuple(x_shape[len(x_shape) - k:])
        return {"gamma": ps, "beta": ps} if op == "layer_norm" else {"weight": ps}
    if op == "weight_norm":
        return {"g": (x_shape[attrs.get("dim", 0) % len(x_shape)],)}
    return {}


def _assemble(op, mode, dtype, rng, x, attrs, *, running=None, params=True) -> dict:
    """inputs for (op, mode): x, random gamma/beta (representable), cotangent or tangents,
    running statistics when given."""
    d = registry.op_def(op)
    r = lambda a: round_to(dtype, np.asarray(a, dtype=np.float64))  # noqa: E731
    inputs = {}
    steps = mode == "training_steps"
    base_shape = x.shape[1:] if steps else x.shape
    inputs["xs" if steps else d.x_name] = np.ascontiguousarray(r(x))
    pshapes = _param_shapes(op, base_shape, attrs)
    for name, shape in pshapes.items():
        if params or name == "g":
            lo, hi = (-0.5, 0.5) if name == "beta" else (0.5, 1.5)
            inputs[name] = np.ascontiguousarray(r(rng.uniform(lo, hi, shape)))
    if running is not None:
        inputs["running_mean"], inputs["running_var"] = r(running[0]), r(running[1])
    kind = mode.rsplit("_", 1)[-1]
    if kind == "vjp":
        inputs["dy" if op == "batch_norm" else "d" + d.y_name] = r(rng.standard_normal(base_shape))
    elif kind == "jvp":
        inputs["t" + d.x_name] = r(rng.standard_normal(base_shape))
        for name, shape in pshapes.items():
            if name in inputs:
                inputs["t" + name] = r(rng.standard_normal(shape))
    return inputs


def _case(op, mode, dtype, rng, fill, *, shape=None, attrs=None, running=None, note="") -> Example:
    shape0, attrs0 = SHAPES[op]
    shape = shape or shape0
    a = dict(attrs0)
    a.update(attrs or {})
    if mode == "training_steps":  # K = 2 batches
        x = np.stack([_per_set(op, shape, a, fill, rng) for _ in range(2)])
    else:
        x = _per_set(op, shape, a, fill, rng)
    if op == "batch_norm" and running is None:  # inference needs them; training updates them
        c = shape[1]
        running = (rng.uniform(-1, 1, c), rng.uniform(0.5, 2.0, c))
    return Example(_assemble(op, mode, dtype, rng, x, a, running=running), a, note)


# --------------------------------------------------------------------------------------------------
# per variant


def _eps_family(v: Variant, mode, dtype, rng, inside):
    op = v.op
    if inside:
        if op == "l2_normalize":
            # ||x|| ~ 0.28 (8 values of spread 0.1) below the floor eps = 1: the floor (or its
            # absence) decides the scale, a factor ~3.5
            return _case(op, mode, dtype, rng, _normal(0, 0.1), attrs={"eps": 1.0},
                         note="norm below eps")
        # var ~ 0.01 = eps (RMSNorm: mean(x**2) ~ 0.01, hence a zero location): sqrt(var + eps)
        # vs sqrt(var) + eps differ by ~25%, vs eps**2 or 0 by ~40%: far beyond any bound
        c = SHAPES[op][0][1]
        running = (np.full(c, 0.5), np.array([0.01, 0.02, 0.005, 0.01, 0.01, 0.01])[:c])
        loc = 0.0 if op == "rms_norm" else 0.5
        return _case(op, mode, dtype, rng, _normal(loc, 0.1), attrs={"eps": 0.01},
                     running=running if op == "batch_norm" else None, note="var ~ eps = 0.01")
    # Outside: var ~ 1 and eps = u * 1e-6, so the bug changes the scale by a relative ~eps (eps
    # outside the root: eps/std - eps/(2 var); dropped: eps/(2 var); squared: less), a millionth
    # of the output's rounding unit; the bound is at least ~u relative.
    eps = _u(dtype) * 1e-6
    if op == "l2_normalize":
        return _case(op, mode, dtype, rng, _normal(0, 1), attrs={"eps": eps}, note="norm >> eps")
    return _case(op, mode, dtype, rng, _normal(0.5, 1.0), attrs={"eps": eps}, note="var ~ 1 >> eps")


def _l2_added(v, mode, dtype, rng, inside):
    if inside:
        # ||x|| ~ 0.28 against eps = 0.1 (above the max_norm floor): x/(||x|| + eps) is ~35% off
        return _case("l2_normalize", mode, dtype, rng, _normal(0, 0.1), attrs={"eps": 0.1},
                     note="norm ~ 3 eps")
    eps = _u(dtype) * 1e-6  # relative change eps/||x|| ~ u * 1e-6 / 2.8
    return _case("l2_normalize", mode, dtype, rng, _normal(0, 1), attrs={"eps": eps}, note="norm >> eps")


def _l2_swapped(v, mode, dtype, rng, inside):
    if inside:
        # ||x|| ~ 0.028: max_norm's floor eps = 0.01 is inactive, max_sumsq's floor sqrt(eps) = 0.1
        # on the norm is active: a factor ~3.5 either way
        return _case("l2_normalize", mode, dtype, rng, _normal(0, 0.01), attrs={"eps": 0.01},
                     note="eps < norm < sqrt(eps)")
    # ||x|| ~ 2.8 is above both floors (1e-4 and 1e-2): both conventions give 1/||x|| exactly
    return _case("l2_normalize", mode, dtype, rng, _normal(0, 1), attrs={"eps": 1e-4},
                 note="norm above both floors")


def _bn_exact(mode, dtype, rng, *, biased=True, extra=None):
    """BatchNorm batches whose mean and biased variance are exactly the running statistics
    (values m +- s per channel, dyadic so every value is exact in bfloat16)."""
    means, spreads = np.array([1.5, -0.5, 2.0]), np.array([0.5, 1.0, 0.25])
    attrs = {"eps": 1e-5}
    if biased:
        attrs["running_var_estimator"] = "biased"
    attrs.update(extra or {})
    return _case("batch_norm", mode, dtype, rng, _plus_minus(means, spreads), attrs=attrs,
                 running=(means, spreads ** 2), note="batch stats == running stats")


def _bn_state(v: Variant, mode, dtype, rng, inside):
    if inside:
        # running (0, 1) against batches of mean ~2 and std ~3: the statistics differ by O(1)
        attrs = {"eps": 1e-5}
        if v.name == "running_var_estimator_swapped":
            # n = 4: the estimators differ by 4/3; momentum 0.5 gives it half weight
            return _case("batch_norm", mode, dtype, rng, _normal(2, 3), shape=(2, 3, 2),
                         attrs={"eps": 1e-5, "momentum": 0.5}, running=(np.zeros(3), np.ones(3)),
                         note="n = 4, momentum 0.5")
        return _case("batch_norm", mode, dtype, rng, _normal(2, 3), attrs=attrs,
                     running=(np.zeros(3), np.ones(3)), note="running stats far from the batch's")
    if v.name == "momentum_inverted":
        # momentum 0.5: both conventions give new = (old + batch)/2
        return _case("batch_norm", mode, dtype, rng, _normal(2, 3), attrs={"eps": 1e-5, "momentum": 0.5},
                     running=(np.zeros(3), np.ones(3)), note="momentum 0.5")
    if v.name == "running_var_estimator_swapped":
        if dtype not in ("float16", "bfloat16"):
            return None
        # n = 16384: running_var differs by w * var/(n-1) ~ 6e-6 relative, below u/50 of float16
        return _case("batch_norm", mode, dtype, rng, _normal(0, 1), shape=(16, 2, 1024),
                     attrs={"eps": 1e-5}, running=(np.zeros(2), np.ones(2)), note="n = 16384")
    if v.name == "batch_stats_at_inference" and mode != "inference":
        return None
    return _bn_exact(mode, dtype, rng)


#: small-reduction shapes (n = 4 per set) and large ones (n = 16384) per op
SMALL = {"batch_norm": ((2, 3, 2), {}), "layer_norm": ((3, 4), {"normalized_ndim": 1}),
         "group_norm": ((2, 4, 2), {"num_groups": 2}), "instance_norm": ((2, 3, 4), {}),
         "mvn": ((2, 3, 2, 1), {"axes": (0, 2, 3)})}
LARGE = {"batch_norm": ((16, 2, 1024), {}), "layer_norm": ((2, 16384), {"normalized_ndim": 1}),
         "group_norm": ((1, 4, 8192), {"num_groups": 2}), "instance_norm": ((1, 2, 16384), {}),
         "mvn": ((16, 2, 32, 32), {"axes": (0, 2, 3)})}


def _unbiased(v: Variant, mode, dtype, rng, inside):
    op = v.op
    if inside:
        # n = 4: the scale changes by sqrt(3/4), 13%
        shape, attrs = SMALL[op]
        return _case(op, mode, dtype, rng, _normal(0, 1), shape=shape, attrs={**attrs, "eps": 1e-5},
                     note="n = 4")
    if dtype not in ("float16", "bfloat16"):
        return None
    # n = 16384: the scale changes by 1/(2n) = 3e-5 relative, below u/16 of float16; the bound's
    # statistics term g(n + 4, 2**-24) ~ 1e-3 is larger still
    shape, attrs = LARGE[op]
    return _case(op, mode, dtype, rng, _normal(0, 1), shape=shape, attrs={**attrs, "eps": 1e-5},
                 note="n = 16384")


#: n = 8 per reduction set for the one-pass cases
EIGHT = {"batch_norm": ((2, 3, 4), {}), "layer_norm": ((3, 8), {"normalized_ndim": 1}),
         "group_norm": ((2, 4, 4), {"num_groups": 2}), "instance_norm": ((2, 3, 8), {}),
         "rms_norm": ((3, 8), {"normalized_ndim": 1}), "mvn": ((2, 3, 2, 2), {"axes": (0, 2, 3)}),
         "l2_normalize": ((3, 8), {"axes": (-1,)})}


def _one_ulp_apart(s, n, rng):
    """float16 set: 3 values M and 5 values M + ulp(M) (shuffled), M in {1500, 1900, 1000}: the
    largest |mean|/spread float16 allows (~2**11). In float32, E[x^2] ~ 2**21..2**22 carries
    2**-3..2**-2 absolute rounding error from fl(mean**2) and the sums, against a variance
    15/64 ulp**2 (~0.23 or ~0.06): the one-pass variance is off by tens of percent, while the
    bound's D_v ~ 4 * g(18, 2**-24) * M * ulp is ~1e-3."""
    m = (1500.0, 1900.0, 1000.0)[s % 3]
    ulp = 1.0 if m >= 1024 else 0.5
    out = np.array([m] * 3 + [m + ulp] * (n - 3))
    rng.shuffle(out)
    return out


def _one_pass(v: Variant, mode, dtype, rng, inside):
    op = v.op
    shape, attrs = EIGHT[op]
    attrs = {**attrs, "eps": 1e-5}
    if not inside:
        if v.name == "one_pass_variance_low_precision":
            # small integers in +-pairs: E[x] = 0 and E[x^2] exact in the half format
            return _case(op, mode, dtype, rng, _symmetric([1, 2, 3]), shape=shape, attrs=attrs,
                         note="exact small integers, mean 0")
        # mean ~ 0, std ~ 1: E[x^2] ~ var, so the one-pass error ~n u_accum var is inside the bound
        return _case(op, mode, dtype, rng, _normal(0, 1), shape=shape, attrs=attrs, note="mean ~ 0")
    if v.name == "one_pass_variance_low_precision":
        # mean 10, std 0.25: E[x^2] ~ 100 carries ~u_half * 100 * (a few) absolute error (float16
        # ~0.1, bfloat16 ~1) against var 0.0625
        return _case(op, mode, dtype, rng, _normal(10, 0.25), shape=shape, attrs=attrs,
                     note="mean 10, std 0.25")
    if dtype == "float16":
        return _case(op, mode, dtype, rng, _one_ulp_apart, shape=shape, attrs=attrs,
                     note="values one float16 ulp apart around 1000-1900")
    # float32: |mean|/std = 2**14: the cancellation error ~2**-24 * 2**28 var = 16 var makes the
    # variance garbage (or negative); the bound's D_v/var ~ 8 n 2**-24 * 2**14 = 0.06.
    # float64: |mean|/std = 2**28: error ~2**-53 * 2**56 var = 8 var; D_v/var ~ 2e-6.
    loc = {"float32": 2.0 ** 14, "float64": 2.0 ** 28}[dtype]
    return _case(op, mode, dtype, rng, _normal(loc, 1.0), shape=shape, attrs=attrs,
                 note=f"mean {loc:g}, std 1")


def _low_precision(v: Variant, mode, dtype, rng, inside):
    op = v.op
    if inside:
        # n = 4096 values in [1, 2): a sequential float16 sum stagnates at 2048 + ... (spacing 2
        # there, adding ~1.5 rounds to +2 or +0), bfloat16 already at 256; the mean is off by
        # percents where the bound (float32 accumulation) allows ~1e-3
        shapes = {"batch_norm": ((64, 2, 64), {}), "layer_norm": ((2, 4096), {"normalized_ndim": 1}),
                  "group_norm": ((1, 4, 2048), {"num_groups": 2}), "instance_norm": ((1, 2, 4096), {}),
                  "rms_norm": ((2, 4096), {"normalized_ndim": 1}),
                  "mvn": ((4, 2, 32, 32), {"axes": (0, 2, 3)}), "l2_normalize": ((2, 4096), {"axes": (-1,)})}
        shape, attrs = shapes[op]
        return _case(op, mode, dtype, rng, lambda s, n, r: r.uniform(1, 2, n), shape=shape,
                     attrs={**attrs, "eps": 1e-5}, note="n = 4096 values in [1, 2)")
    # n = 8 small integers in +-pairs: every sum, square and quotient is exact in float16 and
    # bfloat16 (integers <= 72, mean 0, variance a multiple of 1/8), so the half-precision
    # statistics are exact
    shape, attrs = EIGHT[op]
    running = (np.zeros(3), np.ones(3)) if op == "batch_norm" else None
    return _case(op, mode, dtype, rng, _symmetric([1, 2, 3]), shape=shape,
                 attrs={**attrs, "eps": 1e-5}, running=running, note="exact small integers")


def _nan(v: Variant, mode, dtype, rng, inside):
    ex = _case(v.op, mode, dtype, rng, _normal(0.5, 1.0), attrs={"eps": 1e-5},
               note="a NaN in one reduction set" if inside else "all finite")
    if inside:
        name = "xs" if mode == "training_steps" else registry.op_def(v.op).x_name
        x = np.array(ex.inputs[name])
        x.flat[0] = np.nan  # element 0 lies in the first reduction set (and channel)
        ex.inputs[name] = x
    return ex


def _gn(v: Variant, mode, dtype, rng, inside):
    # channel c has mean c: interleaved groups mix channels of different means
    shape = (2, 6, 5)

    def per_channel(s, n, r):
        return r.standard_normal(n)
    x_attrs = {"eps": 1e-5, "num_groups": 3 if inside else (1 if rng.integers(2) == 0 else 6)}
    ex = _case("group_norm", mode, dtype, rng, per_channel, shape=shape, attrs=x_attrs,
               note="G = 3 of C = 6" if inside else f"G = {x_attrs['num_groups']}")
    x = np.array(ex.inputs["x"], dtype=np.float64) + np.arange(6).reshape(1, 6, 1)
    ex.inputs["x"] = round_to(dtype, x)
    return ex


def _ln(v: Variant, mode, dtype, rng, inside):
    # rows (last-axis vectors) of different means: statistics over the last axis only differ
    nd = 2 if inside else 1
    ex = _case("layer_norm", mode, dtype, rng, _normal(0, 1), attrs={"eps": 1e-5, "normalized_ndim": nd},
               note=f"normalized_ndim = {nd}")
    x = np.array(ex.inputs["x"], dtype=np.float64) + np.arange(4).reshape(1, 4, 1)
    ex.inputs["x"] = round_to(dtype, x)
    return ex


def _rms(v: Variant, mode, dtype, rng, inside):
    if inside:  # mean 1 against spread 0.5: the centered scale is ~2x the RMS one
        return _case("rms_norm", mode, dtype, rng, _normal(1, 0.5), attrs={"eps": 1e-5}, note="mean 1")
    if mode != "forward":
        return None
    # +-pairs: the mean is exactly 0, so subtracting it changes nothing
    vals = round_to(dtype, np.linspace(0.25, 2.0, 8))
    return _case("rms_norm", mode, dtype, rng, _symmetric(vals), attrs={"eps": 1e-5}, note="mean exactly 0")


def _wn(v: Variant, mode, dtype, rng, inside):
    if inside:
        return _case("weight_norm", mode, dtype, rng, _normal(0, 1), note="v of shape (4, 6)")
    return None


_BUILDERS = {
    "eps_outside_sqrt": _eps_family, "eps_dropped": _eps_family, "eps_squared": _eps_family,
    "l2_eps_added_to_norm": _l2_added, "l2_eps_convention_swapped": _l2_swapped,
    "training_uses_running_stats": _bn_state, "running_stats_not_updated": _bn_state,
    "batch_stats_at_inference": _bn_state, "running_var_estimator_swapped": _bn_state,
    "momentum_inverted": _bn_state,
    "unbiased_variance_normalizes": _unbiased,
    "one_pass_variance": _one_pass, "one_pass_variance_clamped": _one_pass,
    "one_pass_variance_low_precision": _one_pass,
    "low_precision_accumulation": _low_precision,
    "nan_spreads": _nan,
    "group_norm_interleaved": _gn, "layer_norm_last_axis_only": _ln,
    "rms_norm_subtracts_mean": _rms, "weight_norm_wrong_dim": _wn,
}


def examples(v: Variant, mode: str, dtype: str, *, inside: bool = True, seed: int = 0) -> Example | None:
    """A case for variant `v` in `mode` and `dtype`: inside its trigger regime (the variant exceeds
    the oracle's bound) or outside it (it agrees); None where there is no outside regime."""
    if not v.applies(mode, dtype):
        raise ValueError(f"{v!r} does not apply to mode {mode!r} in {dtype}")
    rng = np.random.default_rng(seed)
    return _BUILDERS[v.name](v, mode, dtype, rng, inside)


def ratio_table(seed: int = 0) -> list[tuple[str, str, str, str, float, float | None]]:
    """(name, op, mode, dtype, max ratio inside, max ratio outside or None) for every variant,
    mode and format: the numbers behind tests/bugzoo (`python -m bugzoo` prints them)."""
    from oracles import evaluate

    def worst(v, mode, dtype, ex):
        ev = evaluate(v.op, mode, ex.inputs, ex.attrs, dtype)
        r = ev.ratios(v.evaluate(mode, ex.inputs, ex.attrs, dtype), dtype)
        return max(float(np.max(a)) for a in r.values() if a.size)

    from .catalog import VARIANTS

    rows = []
    for v in VARIANTS:
        for mode in v.modes:
            for dtype in v.dtypes:
                out = examples(v, mode, dtype, inside=False, seed=seed)
                rows.append((v.name, v.op, mode, dtype,
                             worst(v, mode, dtype, examples(v, mode, dtype, seed=seed)),
                             None if out is None else worst(v, mode, dtype, out)))
    return rows

