"""Case generation: Hypothesis draws a `CaseSpec` (parameters and a seed), numpy materializes it.

    case_specs(ops=..., modes=..., dtypes=..., regimes=...)  -> SearchStrategy[CaseSpec]
    materialize(spec)                                        -> Case (fuzz.case)

Hypothesis draws everything that shapes a case (op and mode, dtype, regime, shape, attributes,
which optional inputs are present and of which kind, and a seed); `materialize` builds every array
from `numpy.random.default_rng(spec.seed)` with vectorized numpy (element-by-element array
strategies are far too slow). A spec is small, JSON-serializable (`to_dict` / `from_dict`) and
deterministic: the same spec gives the same `Case` (same id) on every machine with the same numpy.
Shrinking lowers the drawn integers, so it moves to smaller shapes, fewer steps, the first op/mode,
float32, the simplest regime (`REGIMES` is ordered simplest first), absent parameters, seed 0.

Names follow `oracles.registry`: inputs x (xs for batch_norm training_steps, v and g for
weight_norm), gamma/beta (weight for rms_norm), running_mean/running_var, dy/dw (vjp), tx/tv and
tgamma/tbeta/tweight/tg (jvp); attrs eps, layout, momentum, momentum_on, running_var_estimator,
num_batches_tracked, num_groups, affine, normalized_ndim or axis, axes, eps_mode, dim. Every float
input is exactly representable in the case's format (rounded with `oracles.dtypes.round_to`;
bfloat16 in float32 carriers).

Data are drawn per reduction set (the elements one statistic summarizes: a channel for BatchNorm, a
(sample, group) for GroupNorm, a row for LayerNorm, ...) as x = loc + scale * z, where z is standard
normal *standardized within the set* (mean 0 and biased standard deviation 1 exactly, before
rounding; z = +-1 for one-element sets), so the set's mean is loc and its spread is scale. The
regimes choose (loc, scale) per set:

    well_conditioned  scale 10**U(-2, 2), |loc| a few scales (zero 30% of the time)
    size_one          well_conditioned data; dims of 1 where the op's semantics care: batch N = 1 or
                      spatial dims of 1 (BatchNorm), spatial 1 (InstanceNorm), N, channels per group
                      or spatial 1 (GroupNorm), normalized dims / reduction axes of 1 (LayerNorm,
                      RMSNorm, MVN, L2; weight_norm of a vector is one element per set anyway)
    constant          scale 0: every reduction set constant (zero variance); the constant is 0 for a
                      quarter of the sets (half for the uncentered ops, where 0 is the degenerate
                      value); eps = 0 is favoured (then 1/sqrt(0) = inf)
    var_near_eps      the quantity eps is compared with is within 10**+-0.8 of eps (eps > 0): the
                      variance for eps inside the root (and max(v, eps)), the root of it for eps
                      outside the root (and max(sqrt(v), eps)); for the sum-of-squares ops (l2,
                      weight_norm) v is the sum over the set. eps is drawn so that the data stay in
                      the format's normal range (float16: eps >= ~2e-8, more with eps outside the
                      root); eps_mode "none" (eps unused) is not drawn. BatchNorm inference modes:
                      running_var within 10**+-0.95 of eps (the data's variance also near eps), eps
                      large enough for running_var to stay normal (float16: eps >= 5.5e-4).
    large_mean        |loc| / scale = R, R log-uniform in [R_lo, R_hi]: R_hi = min(1e8, 2**(p-2))
                      keeps the spread at two ulps of the mean or more (p: the format's precision
                      bits), so float16 reaches 512, bfloat16 only 64, float32 4.2e6, float64 1e8;
                      R_lo = min(128, R_hi / 2). (`large_mean_ratios(dtype)`)
    tiny              scale from the smallest subnormal to 2 * the smallest normal, |x| clipped to 10
                      * the smallest normal; eps = 0 favoured
    huge              scale from 2 * sqrt(max) to max / 16 (every set holds an element whose square
                      overflows the format; z clipped to +-4 so no input overflows)
    mixed             each set draws its own kind among well_conditioned, constant, large_mean,
                      var_near_eps (when eps > 0 and used), tiny and huge; half of the cases also
                      scale z by 10**U(-3, 3) per index along one reduction axis (channels of very
                      different scales inside one set)
    long              reduction length from 4,096 to 20,000 (ignores max_elements; total elements
                      up to max_long_elements = 65,536); scale 10**U(-2, 1), |loc| up to 100 scales
    nonfinite         well_conditioned data with 1 to 3 NaN / +inf / -inf at positions drawn from
                      the seed (index 0 or the last index a third of the time) in the data input,
                      and a quarter of the time one more in another float input (never -inf in
                      running_var, which would be an invalid input)
    invalid           an input the oracle rejects (`OracleInputError`): a negative running_var entry
                      (BatchNorm modes that take running statistics: inference, training with
                      running statistics, training_steps, inference_vjp, inference_jvp; no other op
                      has an input that can be invalid by value). Negative eps or a momentum outside
                      [0, 1] are attributes, refused by framework wrappers, and not generated.

`DEFAULT_REGIMES` is the default campaign mix (weights): every regime, nonfinite included, and
invalid at weight 1 (it only applies to the five BatchNorm modes above, so it is rarer still).

Parameters: gamma / beta / weight / g are absent (None) or of a kind in `PARAM_KINDS`: "default"
(ones / zeros), "random" (center + N(0, 1)), "zero" (half the entries 0, at least one),
"negative" (all negative), "huge" (|p| from sqrt(max) to max / 2: outputs may overflow, by design).
Running statistics (`RUNNING_KINDS`): "init" (0 and 1), "plausible" (near the data's per-channel
mean and variance), "zero_var" (some channels' variance 0), "tiny_var" (some channels' variance
subnormal or barely normal). Cotangents and tangents are N(0, 1) times 10**U(-2, 2).

eps: 0, the op's API defaults (1e-5, 1e-3, ...; rms_norm also the format's machine epsilon, torch's
eps=None), or float32 values in [1e-12, 0.1] log-uniform (uniform over float32 bit patterns).
momentum: common values (0.1, 0.99, 0.9, 0.01, 0, 1), None (cumulative average), or uniform in
[0, 1]. The unbiased running-variance estimator is drawn only where the set has >= 2 elements.
"""

from __future__ import annotations

import json
import math
import struct
import types
from dataclasses import dataclass, field
from math import prod
from typing import Any, Mapping, Sequence

import numpy as np
from hypothesis import strategies as st

from oracles.dtypes import DTYPES, round_to
from oracles.registry import OPS, modes as _oracle_modes

from .case import Case

__all__ = [
    "REGIMES", "DEFAULT_REGIMES", "DTYPE_NAMES", "PARAM_KINDS", "RUNNING_KINDS", "CaseSpec",
    "case_specs", "selection", "materialize", "materialize_family", "reduction_length", "large_mean_ratios", "applicable_regimes",
]

#: Regimes, simplest first (shrinking moves toward the first).
REGIMES = ("well_conditioned", "size_one", "constant", "var_near_eps", "large_mean", "tiny", "huge",
           "mixed", "long", "nonfinite", "invalid")

#: The default campaign mix: regime -> relative weight.
DEFAULT_REGIMES: Mapping[str, int] = types.MappingProxyType({
    "well_conditioned": 3, "size_one": 2, "constant": 2, "var_near_eps": 2, "large_mean": 2,
    "tiny": 1, "huge": 1, "mixed": 2, "long": 1, "nonfinite": 2, "invalid": 1,
})

#: Formats, in shrinking order (float32 is the simplest).
DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16")

PARAM_KINDS = ("default", "random", "zero", "negative", "huge")
RUNNING_KINDS = ("init", "plausible", "zero_var", "tiny_var")
LAYOUTS = ("channels_first", "channels_last")
AFFINE = ("per_channel", "per_group")
#: eps conventions per op that has several (first: the op's default in `oracles.registry`).
EPS_MODES = {"mvn": ("outside", "inside", "none"),
             "l2_normalize": ("max_norm", "max_sumsq", "inside", "none"),
             "weight_norm": ("none", "inside", "max_norm", "max_sumsq")}
#: API default eps of the frameworks, per op (rms_norm adds the format's machine epsilon).
API_EPS = {"batch_norm": (1e-5, 1e-3), "layer_norm": (1e-5, 1e-3, 1e-6, 1e-12),
           "group_norm": (1e-5, 1e-3), "instance_norm": (1e-5, 1e-3), "rms_norm": (1e-6, 1e-5),
           "mvn": (1e-9,), "l2_normalize": (1e-12,), "weight_norm": (0.0, 1e-12)}
MOMENTA = (0.1, 0.99, 0.9, 0.01, 0.0, 1.0, None)
EPS_RANGE = (1e-12, 0.1)
#: Reduction length of the "long" regime, and its default total element budget.
LONG_REDUCTION = (4096, 20_000)
MAX_LONG_ELEMENTS = 65_536

_CENTERED = {"batch_norm", "layer_norm", "group_norm", "instance_norm", "mvn"}
_SUM_DIVISOR = {"l2_normalize", "weight_norm"}
_GAMMA = {"batch_norm": "gamma", "layer_norm": "gamma", "group_norm": "gamma", "instance_norm": "gamma",
          "rms_norm": "weight", "weight_norm": "g"}
_BETA = {"batch_norm": "beta", "layer_norm": "beta", "group_norm": "beta", "instance_norm": "beta"}
_INVALID_MODES = {("batch_norm", m) for m in ("inference", "training", "training_steps", "inference_vjp",
                                              "inference_jvp")}
_SPEC_FIELDS = ("op", "mode", "dtype", "regime", "shape", "attrs", "gamma", "beta", "running",
                "tangents", "steps", "param_keepdims", "seed")


def _choices(what: str, given: object, valid: Sequence) -> ValueError:
    return ValueError(f"{what}={given!r} is invalid: expected one of {list(valid)}")


# --------------------------------------------------------------------------------------------------
# The spec


@dataclass(frozen=True)
class CaseSpec:
    """Everything Hypothesis draws for one case; `materialize(spec)` builds the `Case`.

    shape: x's shape (v for weight_norm; one step of xs for training_steps, which has `steps` of
    them). attrs: the Case attrs, in the oracle's names (axes as tuples). gamma, beta: the kind
    (`PARAM_KINDS`) of the op's scale (gamma, weight or g) and shift parameters, None when absent.
    running: the kind (`RUNNING_KINDS`) of BatchNorm's running statistics, None when absent.
    tangents: case names of the parameters that get a tangent (jvp modes). param_keepdims:
    weight_norm's g has v's rank (size 1 except at dim) instead of shape (out,). seed: numpy's seed.
    Construction checks names and kinds and raises ValueError listing the valid choices.
    """

    op: str
    mode: str
    dtype: str
    regime: str
    shape: tuple[int, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    gamma: str | None = None
    beta: str | None = None
    running: str | None = None
    tangents: tuple[str, ...] = ()
    steps: int = 1
    param_keepdims: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise _choices("op", self.op, list(OPS))
        if self.mode not in OPS[self.op].modes:
            raise _choices(f"mode (of {self.op})", self.mode, OPS[self.op].modes)
        if self.dtype not in DTYPE_NAMES:
            raise _choices("dtype", self.dtype, DTYPE_NAMES)
        if self.regime not in REGIMES:
            raise _choices("regime", self.regime, REGIMES)
        for name in ("gamma", "beta"):
            if getattr(self, name) not in (None, *PARAM_KINDS):
                raise _choices(name, getattr(self, name), (None, *PARAM_KINDS))
        if self.running not in (None, *RUNNING_KINDS):
            raise _choices("running", self.running, (None, *RUNNING_KINDS))
        op = self.op
        if self.gamma is not None and op not in _GAMMA:
            raise ValueError(f"gamma={self.gamma!r} is invalid: {op} has no scale parameter (expected None)")
        if self.gamma is None and op == "weight_norm":
            raise _choices("gamma (weight_norm's g is required)", None, PARAM_KINDS)
        if self.beta is not None and op not in _BETA:
            raise ValueError(f"beta={self.beta!r} is invalid: {op} has no shift parameter (expected None)")
        if self.running is not None and op != "batch_norm":
            raise ValueError(f"running={self.running!r} is invalid: only batch_norm has running statistics")
        present = {n for n, k in ((_GAMMA.get(op), self.gamma), (_BETA.get(op), self.beta)) if k is not None}
        extra = sorted(set(self.tangents) - present) if self.mode.endswith("jvp") else list(self.tangents)
        if extra:
            raise ValueError(f"tangents={tuple(self.tangents)} is invalid: expected a subset of the present "
                             f"parameters {sorted(present)} in a jvp mode")
        if self.param_keepdims and op != "weight_norm":
            raise ValueError(f"param_keepdims=True is invalid for {op}: only weight_norm's g has that form")
        shape = tuple(self.shape)
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
            raise ValueError(f"shape={shape!r} is invalid: expected a non-empty tuple of ints >= 1")
        steps, seed = self.steps, self.seed
        if not isinstance(steps, int) or steps < 1 or (steps != 1 and self.mode != "training_steps"):
            raise ValueError(f"steps={steps!r} is invalid: expected 1, or an int >= 1 for training_steps")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise ValueError(f"seed={seed!r} is invalid: expected an int in [0, 2**64)")
        attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in sorted(dict(self.attrs).items())}
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "attrs", attrs)
        object.__setattr__(self, "tangents", tuple(self.tangents))

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (tuples as lists); `from_dict` inverts it exactly."""
        d = {name: getattr(self, name) for name in _SPEC_FIELDS}
        d["shape"] = list(self.shape)
        d["attrs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.attrs.items()}
        d["tangents"] = list(self.tangents)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CaseSpec:
        """The spec `to_dict` wrote; raises ValueError for unknown or missing fields."""
        unknown = sorted(set(d) - set(_SPEC_FIELDS))
        if unknown:
            raise ValueError(f"CaseSpec fields {unknown} are unknown: expected fields among {list(_SPEC_FIELDS)}")
        missing = [k for k in ("op", "mode", "dtype", "regime", "shape") if k not in d]
        if missing:
            raise ValueError(f"CaseSpec fields {missing} are missing")
        kw = dict(d)
        kw["shape"] = tuple(kw["shape"])
        kw["tangents"] = tuple(kw.get("tangents", ()))
        kw["attrs"] = dict(kw.get("attrs", {}))
        return cls(**kw)


# --------------------------------------------------------------------------------------------------
# Geometry: the reduction sets of an op as axes of a reshaped (never transposed) x


@dataclass(frozen=True)
class _Geo:
    work: tuple[int, ...]          # x reshaped so that every reduction set is a set of axes
    axes: tuple[int, ...]          # reduction axes in `work`
    param_shape: tuple[int, ...]   # shape of gamma/beta/weight (weight_norm: g as (out,))
    eps_mode: str

    @property
    def n(self) -> int:
        return prod(self.work[a] for a in self.axes)


def _channel_axis(shape, attrs) -> int:
    return 1 if attrs.get("layout", "channels_first") == "channels_first" else len(shape) - 1


def _geometry(op: str, shape: tuple[int, ...], attrs: Mapping) -> _Geo:
    r = len(shape)
    if op in ("batch_norm", "instance_norm"):
        ch = _channel_axis(shape, attrs)
        skip = (ch,) if op == "batch_norm" else (0, ch)
        return _Geo(shape, tuple(i for i in range(r) if i not in skip), (shape[ch],), "inside")
    if op == "group_norm":
        g = attrs["num_groups"]
        ch = _channel_axis(shape, attrs)
        c = shape[ch]
        if not isinstance(g, int) or g < 1 or c % g:
            raise ValueError(f"num_groups={g!r} does not divide channels={c}")
        pshape = (c,) if attrs.get("affine", "per_channel") == "per_channel" else (g,)
        if ch == 1:  # (N, G, C/G, *spatial)
            return _Geo((shape[0], g, c // g, *shape[2:]), tuple(range(2, r + 1)), pshape, "inside")
        return _Geo((*shape[:-1], g, c // g), tuple(range(1, r - 1)) + (r,), pshape, "inside")
    if op in ("layer_norm", "rms_norm"):
        k = attrs["normalized_ndim"] if "normalized_ndim" in attrs else r - attrs["axis"] % r
        return _Geo(shape, tuple(range(r - k, r)), shape[r - k:], "inside")
    if op in ("mvn", "l2_normalize"):
        return _Geo(shape, tuple(sorted(a % r for a in attrs["axes"])), (), attrs["eps_mode"])
    if op == "weight_norm":
        dim = attrs["dim"] % r
        return _Geo(shape, tuple(i for i in range(r) if i != dim), (shape[dim],), attrs["eps_mode"])
    raise _choices("op", op, list(OPS))


def reduction_length(spec: CaseSpec) -> int:
    """Elements per reduction set (per step for training_steps); 1 for weight_norm of a vector."""
    return _geometry(spec.op, spec.shape, spec.attrs).n


def large_mean_ratios(dtype: str) -> tuple[float, float]:
    """(R_lo, R_hi): the range of |mean| / spread the large_mean regime draws for `dtype`.

    R_hi = min(1e8, 2**(p-2)) keeps the spread at >= 2 ulps of the mean (p: precision bits);
    R_lo = min(128, R_hi / 2).
    """
    if dtype not in DTYPES:
        raise _choices("dtype", dtype, DTYPE_NAMES)
    hi = min(1e8, 2.0 ** (DTYPES[dtype].p - 2))
    return min(128.0, hi / 2), hi


def _q_is_root(eps_mode: str) -> bool:
    """eps is compared with sqrt(v) (outside, max_norm), not v (inside, max_sumsq, none)."""
    return eps_mode in ("outside", "max_norm")


def _eps_floor(dtype: str, op: str, eps_mode: str, n: int, given_stats: bool = False) -> float:
    """Smallest eps for var_near_eps that keeps the data's spread in the format's normal range
    (or, failing that with eps <= 0.1, at 16 subnormal ulps); with `given_stats` (BatchNorm
    inference) also the running variance, down to eps * 10**-0.95, in the normal range."""
    d = DTYPES[dtype]
    if given_stats:
        return max(_eps_floor(dtype, op, eps_mode, n), min(1.01 * d.tiny * 10**0.95, EPS_RANGE[1]))
    n_div = n if op in _SUM_DIVISOR else 1
    lo_q = 10.0 ** -0.8
    for s_min in (d.tiny, 16 * d.eta):
        v_min = s_min * s_min * n_div
        q_min = math.sqrt(v_min) if _q_is_root(eps_mode) else v_min
        floor = 1.01 * q_min / lo_q
        if floor <= EPS_RANGE[1]:
            break
    return max(EPS_RANGE[0], min(floor, EPS_RANGE[1]))


# --------------------------------------------------------------------------------------------------
# The strategy


def _f32_bits(x: float, up: bool) -> int:
    """Bit pattern of the float32 nearest x from above (up) or below."""
    b = struct.unpack("<I", struct.pack("<f", x))[0]
    v = struct.unpack("<f", struct.pack("<I", b))[0]
    if up and v < x:
        b += 1
    if not up and v > x:
        b -= 1
    return b


def _loguniform_f32(lo: float, hi: float) -> st.SearchStrategy[float]:
    """float32 values in [lo, hi] (lo > 0), uniform over bit patterns: about log-uniform."""
    return st.integers(_f32_bits(lo, True), _f32_bits(hi, False)).map(
        lambda b: struct.unpack("<f", struct.pack("<I", b))[0])


def _eps_strategy(op: str, dtype: str, regime: str, eps_mode: str, n: int,
                  given_stats: bool = False) -> st.SearchStrategy[float]:
    defaults = API_EPS[op]
    if op == "rms_norm":
        defaults = defaults + (2.0 ** (1 - DTYPES[dtype].p),)
    if regime == "var_near_eps":
        floor = _eps_floor(dtype, op, eps_mode, n, given_stats)
        ok = tuple(e for e in defaults if e >= floor)
        cont = _loguniform_f32(floor, EPS_RANGE[1])
        return st.one_of(st.sampled_from(ok), cont) if ok else cont
    base = st.one_of(st.sampled_from(tuple(dict.fromkeys(defaults + (0.0,)))), _loguniform_f32(*EPS_RANGE))
    if regime in ("constant", "tiny"):
        return st.one_of(st.just(0.0), base)
    return base


def _reduction_dims(draw, k: int, *, lo: int, hi: int, long: bool, cap: int | None = None) -> list[int]:
    """k dims whose product lies in [lo, hi] (lo <= hi; the product is 1 when k == 0)."""
    if k == 0:
        return []
    if long:
        target = draw(st.integers(lo, hi))
        first = [draw(st.integers(1, 4)) for _ in range(k - 1)]
        p = prod(first)
        return first + [max(-(-lo // p), target // p)]
    dims: list[int] = []
    for i in range(k):
        rem = max(1, hi // prod(dims))
        if i == 0 and cap is not None:
            rem = min(rem, cap)
        dims.append(draw(st.integers(1, rem)))
    if prod(dims) < lo:
        dims[-1] = -(-lo // prod(dims[:-1]))
    return dims


def _set_dims(draw, k: int, budget: int, cap: int = 64) -> list[int]:
    dims: list[int] = []
    for _ in range(k):
        dims.append(draw(st.integers(1, max(1, min(cap, budget // max(1, prod(dims)))))))
    return dims


def _size_one(draw, dims: list[int], caring: list[int]) -> None:
    """Set a non-empty subset (drawn) of the positions `caring` of `dims` to 1."""
    if not caring:
        return
    mask = draw(st.integers(1, 2 ** len(caring) - 1))
    for j, i in enumerate(caring):
        if mask >> j & 1:
            dims[i] = 1


@dataclass(frozen=True)
class _Config:
    pairs: tuple[tuple[str, str], ...]
    dtypes: tuple[str, ...]
    regimes: Mapping[tuple[str, str], tuple[str, ...]]  # weighted (repeated) per pair
    max_elements: int
    max_reduction: int
    max_long_elements: int
    min_elements: int = 1


def _draw_shape(draw, op: str, regime: str, attrs: dict, *, total: int, n_lo: int, n_hi: int,
                long: bool) -> tuple[int, ...]:
    """x's shape for `op`, filling structural attrs (layout, groups, axes, ...) into `attrs`."""
    size_one = regime == "size_one"
    red_kw = dict(lo=n_lo, hi=n_hi, long=long)
    if op == "batch_norm":
        rank = draw(st.integers(2, 5))
        layout = attrs["layout"] = draw(st.sampled_from(LAYOUTS))
        red = _reduction_dims(draw, rank - 1, **red_kw)          # N, *spatial
        if size_one:
            _size_one(draw, red, list(range(len(red))))
        (c,) = _set_dims(draw, 1, total // prod(red))
        return (red[0], c, *red[1:]) if layout == "channels_first" else (*red, c)
    if op == "instance_norm":
        rank = draw(st.integers(3, 5))
        layout = attrs["layout"] = draw(st.sampled_from(LAYOUTS))
        sp = _reduction_dims(draw, rank - 2, **red_kw)
        if size_one:
            _size_one(draw, sp, list(range(len(sp))))
        nb, c = _set_dims(draw, 2, total // prod(sp))
        return (nb, c, *sp) if layout == "channels_first" else (nb, *sp, c)
    if op == "group_norm":
        rank = draw(st.integers(2, 5))
        layout = attrs["layout"] = draw(st.sampled_from(LAYOUTS))
        # long: keep >= 2 * 4096 elements per group (the reduction's range); else >= n_lo
        g = attrs["num_groups"] = draw(st.integers(1, max(1, min(8, total // (2 * n_lo if long else n_lo)))))
        attrs["affine"] = draw(st.sampled_from(AFFINE))
        hi = min(n_hi, max(n_lo, total // g))
        red = _reduction_dims(draw, rank - 1, lo=n_lo, hi=hi, long=long, cap=16)  # C/G, *spatial
        (nb,) = _set_dims(draw, 1, total // (prod(red) * g))
        dims = [nb] + red
        if size_one:
            _size_one(draw, dims, list(range(len(dims))))
        nb, cpg, *sp = dims
        c = g * cpg
        return (nb, c, *sp) if layout == "channels_first" else (nb, *sp, c)
    if op in ("layer_norm", "rms_norm"):
        rank = draw(st.integers(1, 5))
        k = draw(st.integers(1, rank))
        red = _reduction_dims(draw, k, **red_kw)
        if size_one:
            _size_one(draw, red, list(range(k)))
        lead = _set_dims(draw, rank - k, total // prod(red))
        form = draw(st.sampled_from(("normalized_ndim", "axis", "negative_axis")))
        if form == "normalized_ndim":
            attrs["normalized_ndim"] = k
        else:
            attrs["axis"] = rank - k if form == "axis" else -k
        return tuple(lead + red)
    if op in ("mvn", "l2_normalize"):
        rank = draw(st.integers(1, 4))
        mask = draw(st.integers(1, 2 ** rank - 1))
        axes = [i for i in range(rank) if mask >> i & 1]
        red = _reduction_dims(draw, len(axes), **red_kw)
        if size_one:
            _size_one(draw, red, list(range(len(red))))
        other = _set_dims(draw, rank - len(axes), total // prod(red))
        negative = draw(st.booleans())
        attrs["axes"] = tuple(a - rank for a in axes) if negative else tuple(axes)
        attrs["eps_mode"] = draw(st.sampled_from(_eps_modes(op, regime)))
        it_r, it_o = iter(red), iter(other)
        return tuple(next(it_r) if i in axes else next(it_o) for i in range(rank))
    if op == "weight_norm":
        rank = draw(st.integers(2 if (long or n_lo > 1) else 1, 4))
        dim = draw(st.integers(0, rank - 1))
        red = _reduction_dims(draw, rank - 1, **red_kw)
        if size_one:
            _size_one(draw, red, list(range(len(red))))
        (out,) = _set_dims(draw, 1, total // prod(red))
        attrs["dim"] = dim - rank if draw(st.booleans()) else dim
        attrs["eps_mode"] = draw(st.sampled_from(_eps_modes(op, regime)))
        it_r = iter(red)
        return tuple(out if i == dim else next(it_r) for i in range(rank))
    raise _choices("op", op, list(OPS))


def _free_axis(op: str, shape: tuple[int, ...], attrs: Mapping) -> int:
    """The axis `_grow` stretches: one that no reduction set spans where the op has one (BatchNorm's
    channels, the batch of InstanceNorm and GroupNorm, a leading dim of LayerNorm and RMSNorm, an
    axis outside MVN's and L2's axes, weight norm's output dim), else axis 0."""
    r = len(shape)
    if op == "batch_norm":
        return _channel_axis(shape, attrs)
    if op in ("instance_norm", "group_norm"):
        return 0
    if op == "weight_norm":
        return attrs["dim"] % r
    reduced = set(_geometry(op, shape, attrs).axes)
    return next((i for i in range(r) if i not in reduced), 0)


def _grow(op: str, shape: tuple[int, ...], attrs: Mapping, least: int) -> tuple[int, ...]:
    """`shape` with its free axis (`_free_axis`) stretched so that it has at least `least` elements
    (the drawn dims elsewhere are kept: large cases keep the drawn reduction sets' geometry)."""
    if prod(shape) >= least:
        return shape
    a = _free_axis(op, shape, attrs)
    rest = prod(shape) // shape[a]
    dims = list(shape)
    dims[a] = -(-least // rest)
    return tuple(dims)


def _eps_modes(op: str, regime: str) -> tuple[str, ...]:
    ms = EPS_MODES[op]
    return tuple(m for m in ms if m != "none") if regime == "var_near_eps" else ms


@st.composite
def _specs(draw, cfg: _Config) -> CaseSpec:
    op, mode = draw(st.sampled_from(cfg.pairs))
    dtype = draw(st.sampled_from(cfg.dtypes))
    regime = draw(st.sampled_from(cfg.regimes[(op, mode)]))
    long = regime == "long"
    budget = cfg.max_long_elements if long else cfg.max_elements
    steps = 1
    if mode == "training_steps":
        kmax = budget // (2 * LONG_REDUCTION[0]) if long else budget // 2
        steps = draw(st.integers(1, max(1, min(4, kmax))))
    total = budget // steps
    if long:
        n_lo, n_hi = LONG_REDUCTION[0], min(LONG_REDUCTION[1], total // 2)
    else:
        needs_two = regime == "large_mean" or (regime == "var_near_eps" and op in _CENTERED)
        n_lo, n_hi = (2 if needs_two else 1), min(cfg.max_reduction, total)
    attrs: dict[str, Any] = {}
    shape = _draw_shape(draw, op, regime, attrs, total=total, n_lo=n_lo, n_hi=n_hi, long=long)
    if not long and cfg.min_elements > 1:
        shape = _grow(op, shape, attrs, -(-cfg.min_elements // steps))
    geo = _geometry(op, shape, attrs)
    attrs["eps"] = draw(_eps_strategy(op, dtype, regime, geo.eps_mode, geo.n, mode.startswith("inference")))

    running = None
    if op == "batch_norm":
        state, _, kind = mode.partition("_")
        if regime in ("var_near_eps", "invalid"):
            kinds: tuple = ("plausible",)
        else:
            kinds = RUNNING_KINDS
        if state == "inference" or mode == "training_steps":
            running = draw(st.sampled_from(kinds))
        elif mode == "training":
            running = draw(st.sampled_from(kinds if regime == "invalid" else (None, *kinds)))
        if mode in ("training", "training_steps") and running is not None:
            m = draw(st.one_of(st.sampled_from(MOMENTA), st.floats(0.0, 1.0).map(abs)))
            attrs["momentum"] = m
            attrs["momentum_on"] = draw(st.sampled_from(("batch", "running")))
            estimators = ("unbiased", "biased") if geo.n >= 2 else ("biased",)
            attrs["running_var_estimator"] = draw(st.sampled_from(estimators))
            attrs["num_batches_tracked"] = draw(st.one_of(st.just(0), st.integers(1, 1000)))

    gamma = beta = None
    keepdims = False
    if op == "weight_norm":
        gamma = draw(st.sampled_from(PARAM_KINDS))
        keepdims = len(shape) >= 2 and draw(st.booleans())
    elif op in _GAMMA:
        gamma = draw(st.sampled_from((None, *PARAM_KINDS)))
    if op in _BETA:
        beta = draw(st.sampled_from((None, *PARAM_KINDS)))
    tangents: list[str] = []
    if mode.endswith("jvp"):
        for name, kind in ((_GAMMA.get(op), gamma), (_BETA.get(op), beta)):
            if kind is not None and draw(st.booleans()):
                tangents.append(name)
    seed = draw(st.integers(0, 2**32 - 1))
    return CaseSpec(op, mode, dtype, regime, shape, attrs, gamma, beta, running, tuple(tangents), steps,
                    keepdims, seed)


def applicable_regimes(op: str, mode: str) -> tuple[str, ...]:
    """The regimes `case_specs` can draw for (op, mode): every regime but "invalid", which needs an
    input the oracle validates by value (BatchNorm's running_var)."""
    return tuple(r for r in REGIMES if r != "invalid" or (op, mode) in _INVALID_MODES)


def case_specs(*, ops: Sequence[str] | None = None, modes: Sequence[str] | None = None,
               dtypes: Sequence[str] | None = None,
               regimes: Sequence[str] | Mapping[str, int] | None = None,
               max_elements: int = 4096, max_reduction: int | None = None,
               max_long_elements: int = MAX_LONG_ELEMENTS, min_elements: int = 1) -> st.SearchStrategy[CaseSpec]:
    """Strategy for `CaseSpec`s of the oracle's (op, mode) pairs (module docstring for the regimes).

    ops, modes, dtypes: restrict to these (None: all); a mode applies to every selected op that has
    it. regimes: a sequence (equal weights) or a mapping regime -> positive int weight; None is
    `DEFAULT_REGIMES`. A pair draws only the regimes that apply to it (`applicable_regimes`).
    max_elements: the most elements of the data input (xs: all steps together); max_reduction: the
    longest reduction set (default max_elements); the "long" regime ignores both and uses
    reduction lengths of 4,096 to 20,000 within max_long_elements (>= 8,192). min_elements: the
    fewest elements of the data input (large-case campaigns): a drawn shape with fewer has one
    axis that no reduction set spans stretched (`_grow`; "long" cases are left as drawn), so a
    case may then exceed max_elements by less than one slice of that axis.
    Raises ValueError at once for an unknown name or an empty selection, listing the valid choices.
    """
    return _specs(_config(ops=ops, modes=modes, dtypes=dtypes, regimes=regimes, max_elements=max_elements,
                          max_reduction=max_reduction, max_long_elements=max_long_elements,
                          min_elements=min_elements))


def selection(*, ops: Sequence[str] | None = None, modes: Sequence[str] | None = None,
              dtypes: Sequence[str] | None = None,
              regimes: Sequence[str] | Mapping[str, int] | None = None) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The (op, mode) pairs and the dtypes that `case_specs` with these selections draws (a pair
    no selected regime applies to is not drawn); ValueError as `case_specs`."""
    cfg = _config(ops=ops, modes=modes, dtypes=dtypes, regimes=regimes)
    return cfg.pairs, cfg.dtypes


def _config(*, ops, modes, dtypes, regimes, max_elements: int = 4096, max_reduction: int | None = None,
            max_long_elements: int = MAX_LONG_ELEMENTS, min_elements: int = 1) -> _Config:
    """`case_specs`'s arguments, validated, as the `_Config` its strategy draws from."""
    for name, value in (("ops", ops), ("modes", modes), ("dtypes", dtypes), ("regimes", regimes)):
        if isinstance(value, str):
            raise ValueError(f"{name}={value!r} is a str: expected a sequence of names, e.g. [{value!r}]")
    all_pairs = _oracle_modes()
    if ops is not None:
        ops = list(ops)
        for o in ops:
            if o not in OPS:
                raise _choices("op", o, list(OPS))
    if modes is not None:
        modes = list(modes)
        valid_modes = list(dict.fromkeys(m for _, m in all_pairs))
        for m in modes:
            if m not in valid_modes:
                raise _choices("mode", m, valid_modes)
    pairs = [(o, m) for o, m in all_pairs if (ops is None or o in ops) and (modes is None or m in modes)]
    if not pairs:
        raise ValueError(f"ops={ops} with modes={modes} select no (op, mode) pair: expected pairs among {all_pairs}")
    if dtypes is None:
        dts = DTYPE_NAMES
    else:
        dts = tuple(dtypes)
        for d in dts:
            if d not in DTYPE_NAMES:
                raise _choices("dtype", d, DTYPE_NAMES)
        if not dts:
            raise ValueError(f"dtypes=[] is empty: expected some of {list(DTYPE_NAMES)}")
        dts = tuple(d for d in DTYPE_NAMES if d in dts)
    if regimes is None:
        weights = dict(DEFAULT_REGIMES)
    elif isinstance(regimes, Mapping):
        weights = dict(regimes)
    else:
        weights = {r: 1 for r in regimes}
    for r, w in weights.items():
        if r not in REGIMES:
            raise _choices("regime", r, REGIMES)
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            raise ValueError(f"weight {w!r} of regime {r!r} is invalid: expected an int >= 1")
    if not weights:
        raise ValueError(f"regimes is empty: expected some of {list(REGIMES)}")
    for name, value, least in (("max_elements", max_elements, 8), ("max_long_elements", max_long_elements, 8192)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name}={value!r} is invalid: expected an int >= {least}")
    if not isinstance(min_elements, int) or isinstance(min_elements, bool) or not 1 <= min_elements <= max_elements:
        raise ValueError(f"min_elements={min_elements!r} is invalid: expected an int in [1, max_elements={max_elements}]")
    if max_reduction is None:
        max_reduction = max_elements
    if not isinstance(max_reduction, int) or isinstance(max_reduction, bool) or max_reduction < 2:
        raise ValueError(f"max_reduction={max_reduction!r} is invalid: expected an int >= 2")

    per_pair = {}
    for pair in pairs:
        allowed = [r for r in REGIMES if r in weights and r in applicable_regimes(*pair)]
        if allowed:
            per_pair[pair] = tuple(r for r in allowed for _ in range(weights[r]))
    if not per_pair:
        raise ValueError(f"regimes={sorted(weights)} apply to none of the pairs {pairs}: 'invalid' applies "
                         f"only to {sorted(_INVALID_MODES)}")
    return _Config(tuple(p for p in pairs if p in per_pair), dts, per_pair, max_elements, max_reduction,
                   max_long_elements, min_elements)


# --------------------------------------------------------------------------------------------------
# Materialization


def _loguni(rng, lo: float, hi: float, size) -> np.ndarray:
    return 10.0 ** rng.uniform(lo, hi, size)


def _sign(rng, size) -> np.ndarray:
    return np.where(rng.random(size) < 0.5, -1.0, 1.0)


_KIND_CODES = ("well_conditioned", "constant", "large_mean", "var_near_eps", "tiny", "huge", "long")


def _kind_params(kind: str, spec: CaseSpec, geo: _Geo, rng, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(loc, scale) for m sets of one kind."""
    d = DTYPES[spec.dtype]
    centered = spec.op in _CENTERED
    if kind == "well_conditioned":
        s = _loguni(rng, -2, 2, m)
        return s * rng.normal(0, 2, m) * (rng.random(m) < 0.7), s
    if kind == "long":
        s = _loguni(rng, -2, 1, m)
        return s * _loguni(rng, -1, 2, m) * _sign(rng, m) * (rng.random(m) < 0.7), s
    if kind == "constant":
        p_zero = 0.25 if centered else 0.5
        return _loguni(rng, -3, 3, m) * _sign(rng, m) * (rng.random(m) >= p_zero), np.zeros(m)
    if kind == "large_mean":
        lo, hi = large_mean_ratios(spec.dtype)
        ratio = _loguni(rng, math.log10(lo), math.log10(hi), m)
        s = _loguni(rng, -2, 1, m)
        return ratio * s * _sign(rng, m), s
    if kind == "var_near_eps":
        eps = float(spec.attrs["eps"])
        q = eps * _loguni(rng, -0.8, 0.8, m)
        v = q * q if _q_is_root(geo.eps_mode) else q
        s = np.sqrt(v / (geo.n if spec.op in _SUM_DIVISOR else 1))
        loc = s * np.clip(rng.normal(0, 3, m), -10, 10) * (rng.random(m) < 0.5) if centered else np.zeros(m)
        return loc, s
    if kind == "tiny":
        s = _loguni(rng, math.log10(d.eta), math.log10(2 * d.tiny), m)
        loc = s * rng.normal(0, 2, m) * (rng.random(m) < 0.5)
        return (loc if geo.n >= 2 else np.zeros(m)), s  # one element: |x| = s, not loc +- s ~ 0
    if kind == "huge":
        s = _loguni(rng, math.log10(2 * math.sqrt(d.max)), math.log10(d.max / 16), m)
        loc = s * rng.uniform(1, 2, m) * _sign(rng, m) * (rng.random(m) < 0.7)
        return (loc if geo.n >= 2 else np.zeros(m)), s
    raise AssertionError(kind)


def _set_params(spec: CaseSpec, geo: _Geo, rng, m: int):
    """(loc, scale, kind codes) per set (flat arrays of m)."""
    regime = spec.regime
    if regime == "mixed":
        kinds = ["well_conditioned", "constant", "large_mean", "tiny", "huge"]
        if float(spec.attrs["eps"]) > 0 and geo.eps_mode != "none" and (geo.n >= 2 or spec.op not in _CENTERED):
            kinds.append("var_near_eps")
        pick = rng.integers(len(kinds), size=m)
        loc, scale = np.zeros(m), np.zeros(m)
        for j, kind in enumerate(kinds):
            sel = pick == j
            if sel.any():
                lo_, s_ = _kind_params(kind, spec, geo, rng, int(sel.sum()))
                loc[sel], scale[sel] = lo_, s_
        codes = np.array([_KIND_CODES.index(k) for k in kinds])[pick]
        return loc, scale, codes
    kind = {"size_one": "well_conditioned", "nonfinite": "well_conditioned", "invalid": "well_conditioned",
            "long": "long"}.get(regime, regime)
    loc, scale = _kind_params(kind, spec, geo, rng, m)
    return loc, scale, np.full(m, _KIND_CODES.index(kind))


def _standardize(z: np.ndarray, axes: tuple[int, ...], n: int) -> np.ndarray:
    """z with mean 0 and biased standard deviation 1 in each set (n >= 2), or +-1 (n == 1)."""
    if n == 1:
        return np.where(z >= 0, 1.0, -1.0)
    z = z - z.mean(axis=axes, keepdims=True)
    sd = np.sqrt(np.mean(z * z, axis=axes, keepdims=True))
    return z / np.where(sd > 0, sd, 1.0)


def _data(spec: CaseSpec, geo: _Geo, rng, f: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x in float64 in `work` shape, per-channel loc, per-channel scale) for the regime; with a
    family size `f`, every array has a leading axis of `f` members (each its own sets)."""
    d = DTYPES[spec.dtype]
    ts = spec.mode == "training_steps"
    lead = () if f is None else (f,)
    work = lead + ((spec.steps,) if ts else ()) + geo.work
    axes = tuple(a + ts + len(lead) for a in geo.axes)
    stat = tuple(1 if (i in axes or (ts and i == len(lead))) else s for i, s in enumerate(work))
    m = prod(stat)
    loc, scale, codes = _set_params(spec, geo, rng, m)
    loc, scale, codes = loc.reshape(stat), scale.reshape(stat), codes.reshape(stat)
    z = rng.standard_normal(work)
    if spec.regime == "mixed" and rng.random() < 0.5:
        spread = [a for a in axes if work[a] > 1]
        if spread:
            a = spread[int(rng.integers(len(spread)))]
            shp = [1] * len(work)
            shp[a] = work[a]
            if lead:  # every member its own spread along the same axis
                shp[0] = f
            z = z * _loguni(rng, -3, 3, tuple(shp))
    z = _standardize(z, axes, geo.n)
    if spec.regime in ("huge", "mixed"):
        z = np.where(codes == _KIND_CODES.index("huge"), np.clip(z, -4, 4), z)
    x = loc + scale * z
    if spec.regime == "tiny":
        x = np.clip(x, -10 * d.tiny, 10 * d.tiny)
    return np.clip(x, -d.max, d.max), loc, scale


def _param(kind: str, center: float, shape: tuple[int, ...], dtype: str, rng, f: int | None = None) -> np.ndarray:
    """A parameter of `shape` (with a family size `f`: `f` of them, stacked)."""
    d = DTYPES[dtype]
    size = prod(shape)
    full = tuple(shape) if f is None else (f, *shape)
    total = prod(full)
    if kind == "default":
        p = np.full(total, center)
    elif kind == "random":
        p = center + rng.standard_normal(total)
    elif kind == "zero":
        p = np.where(rng.random(total) < 0.5, 0.0, center + rng.standard_normal(total))
        _hit_one(p, size, f, rng, 0.0)
    elif kind == "negative":
        p = -(np.abs(center + rng.standard_normal(total)) + rng.exponential(1.0, total) + 2.0 ** -8)
    elif kind == "huge":
        p = _loguni(rng, math.log10(math.sqrt(d.max)), math.log10(d.max / 2), total) * _sign(rng, total)
    else:
        raise _choices("parameter kind", kind, PARAM_KINDS)
    return round_to(dtype, p.reshape(full))


def _hit_one(a: np.ndarray, size: int, f: int | None, rng, value) -> None:
    """Set one random element of flat `a` (with a family size `f`: one per member's `size` block)."""
    if f is None:
        a[rng.integers(size)] = value
    else:
        a.reshape(f, size)[np.arange(f), rng.integers(size, size=f)] = value


def _running(spec: CaseSpec, loc: np.ndarray, scale: np.ndarray, rng,
             f: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Running statistics per channel (with a family size `f`: shape (f, C), each member's own)."""
    d = DTYPES[spec.dtype]
    loc, scale = loc.ravel(), scale.ravel()
    c = loc.size
    per = c if f is None else c // f
    if spec.running == "init":
        rm, rv = np.zeros(c), np.ones(c)
    else:
        rm = loc + scale * rng.normal(0, 0.3, c)
        jitter = 0.15 if spec.regime == "var_near_eps" else 0.5
        with np.errstate(over="ignore"):
            rv = scale * scale * _loguni(rng, -jitter, jitter, c)
    pick = rng.random(c) < 0.5
    _hit_one(pick, per, f, rng, True)
    if spec.running == "zero_var":
        rv = np.where(pick, 0.0, rv)
    elif spec.running == "tiny_var":
        rv = np.where(pick, _loguni(rng, math.log10(d.eta), math.log10(10 * d.tiny), c), rv)
    if spec.regime == "invalid":
        rv = np.where(pick, -_loguni(rng, -3, 1, c), rv)
    rm = np.clip(rm, -d.max, d.max)
    rv = np.minimum(rv, d.max)
    if f is not None:
        rm, rv = rm.reshape(f, per), rv.reshape(f, per)
    return round_to(spec.dtype, rm), round_to(spec.dtype, rv)


def _tangent(dtype: str, shape, rng, f: int | None = None) -> np.ndarray:
    """A tangent (cotangent) of `shape` at one random scale (with a family size `f`: `f` of them,
    each at its own scale)."""
    if f is None:
        return round_to(dtype, rng.standard_normal(shape) * 10.0 ** rng.uniform(-2, 2))
    shape = tuple(shape)
    z = rng.standard_normal((f, *shape))
    return round_to(dtype, z * 10.0 ** rng.uniform(-2, 2, (f,) + (1,) * len(shape)))


def _inject_nonfinite(inputs: dict[str, np.ndarray], primary: str, rng) -> None:
    values = np.array([np.nan, np.inf, -np.inf])
    x = inputs[primary]
    count = int(rng.integers(1, 4))
    idx = rng.integers(x.size, size=count)
    if rng.random() < 1 / 3:
        idx[0] = 0 if rng.random() < 0.5 else x.size - 1
    x.reshape(-1)[idx] = values[rng.integers(3, size=count)]
    others = [k for k in inputs if k != primary and inputs[k].dtype.kind == "f"]
    if others and rng.random() < 0.25:
        name = others[int(rng.integers(len(others)))]
        a = inputs[name]
        choices = values[:2] if name == "running_var" else values
        a.reshape(-1)[rng.integers(a.size)] = choices[rng.integers(len(choices))]


def _inputs(spec: CaseSpec, rng, f: int | None = None) -> dict[str, np.ndarray]:
    """The input arrays of `spec` drawn from `rng`. With a family size `f`, `f` members at once
    (one numpy call per array, not per member): an array of `FAMILY_SHARED` is one array common to
    every member, any other has a leading axis of `f` members."""
    op, mode, dtype = spec.op, spec.mode, spec.dtype
    try:
        geo = _geometry(op, spec.shape, spec.attrs)
    except (KeyError, TypeError, ZeroDivisionError) as exc:
        raise ValueError(f"attrs={dict(spec.attrs)} do not fit {op} with shape {spec.shape}: {exc!r}") from None
    lead = () if f is None else (f,)
    shared = FAMILY_SHARED.get(op, ()) if f is not None else ()
    x, loc, scale = _data(spec, geo, rng, f)
    xname = "v" if op == "weight_norm" else "x"
    inputs: dict[str, np.ndarray] = {}
    if mode == "training_steps":
        inputs["xs"] = round_to(dtype, x.reshape((*lead, spec.steps, *spec.shape)))
    else:
        inputs[xname] = round_to(dtype, x.reshape((*lead, *spec.shape)))

    gname, bname = _GAMMA.get(op), _BETA.get(op)
    if gname and spec.gamma is not None:
        pshape = geo.param_shape
        if op == "weight_norm" and spec.param_keepdims:
            dim = spec.attrs["dim"] % len(spec.shape)
            pshape = tuple(s if i == dim else 1 for i, s in enumerate(spec.shape))
        inputs[gname] = _param(spec.gamma, 1.0, pshape, dtype, rng, None if gname in shared else f)
    if bname and spec.beta is not None:
        inputs[bname] = _param(spec.beta, 0.0, geo.param_shape, dtype, rng, None if bname in shared else f)
    if spec.running is not None:
        inputs["running_mean"], inputs["running_var"] = _running(spec, loc, scale, rng, f)

    kind = mode.rpartition("_")[2]
    if kind == "vjp":
        inputs["dw" if op == "weight_norm" else "dy"] = _tangent(dtype, spec.shape, rng, f)
    elif kind == "jvp":
        inputs["t" + xname] = _tangent(dtype, spec.shape, rng, f)
        for name in spec.tangents:
            tf = None if "t" + name in shared else f
            inputs["t" + name] = _tangent(dtype, inputs[name].shape[len(lead) if name not in shared else 0:], rng, tf)
    if spec.regime == "nonfinite":
        primary = "xs" if mode == "training_steps" else xname
        if f is None:
            _inject_nonfinite(inputs, primary, rng)
        else:  # per member; a shared array only from member 0 (it is every member's)
            for i in range(f):
                _inject_nonfinite({k: (a if k in shared else a[i]) for k, a in inputs.items()
                                   if i == 0 or k not in shared}, primary, rng)
    return inputs


def materialize(spec: CaseSpec) -> Case:
    """The `Case` of `spec`: every array from `default_rng(spec.seed)` (module docstring).

    Deterministic: the same spec gives the same case id. Raises ValueError for a spec whose
    attributes do not fit its op (`CaseSpec` checks names; the oracle checks the rest).
    """
    return Case(spec.op, spec.mode, spec.dtype, _inputs(spec, np.random.default_rng(spec.seed)), spec.attrs)


#: Inputs that the members of a family share (identical arrays), per op: LayerNorm and RMSNorm
#: pack along the batch, where the parameters are common to every sample (`fuzz.packing`).
FAMILY_SHARED = {"layer_norm": ("gamma", "beta", "tgamma", "tbeta"), "rms_norm": ("weight", "tweight")}


def materialize_family(spec: CaseSpec, size: int) -> list[Case]:
    """`size` cases of one signature from one spec, drawn at once: every array of every member in
    one numpy call (`_inputs` with a family axis) from `default_rng([spec.seed, size])`; a family of
    one is `materialize(spec)`. Each member has its own data, statistics, cotangents and tangents
    (and, per set, its own regime draw), except the inputs of `FAMILY_SHARED`, one array common to
    every member. One Hypothesis example thus yields a family that `fuzz.packing` evaluates in one
    framework call; the family is a function of (spec, size), so shrinking the spec shrinks every
    member (shape, regime, parameters) and replaying it replays every member; member i is an
    ordinary case (stored and replayed as any other)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size={size!r} is invalid: expected an int >= 1")
    if size == 1:
        return [materialize(spec)]
    inputs = _inputs(spec, np.random.default_rng([spec.seed, size]), size)
    # frozen once (read-only, over immutable bytes): each member's arrays are views of them, and a
    # shared array is the same object in every member
    return Case.family(spec.op, spec.mode, spec.dtype, inputs, size, spec.attrs, FAMILY_SHARED.get(spec.op, ()))
