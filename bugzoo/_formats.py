"""Real low-precision arithmetic for the variants that are about finite precision.

The oracle computes in extended precision; a buggy framework does not. The statistics functions
here (the `stats(x_ext, norm) -> (mean_keepdims, v_keepdims)` hook of `oracles._core.forward`)
compute what such a framework computes, operation by operation, in a given format:

- `one_pass_stats(fmt, clamp)`: v = E[x**2] - E[x]**2 in `fmt` (numpy float32/float64 arithmetic,
  numpy's own summation order), optionally clamped at 0.
- `low_precision_stats(fmt)`: the usual two-pass statistics with every sum accumulated
  *sequentially* in `fmt` (float16 or bfloat16) and every intermediate rounded to `fmt`.

float16 uses numpy's float16 (each operation rounds to float16; `np.cumsum(..., dtype=float16)` is
a sequential, per-step rounded sum, unlike `np.sum`, which is pairwise). bfloat16 has no numpy type:
each operation is done in float64 (exact for a sum or product of two bfloat16 values) and rounded
to bfloat16 with round-to-nearest-even (`round_bf16`).
"""

from __future__ import annotations

import numpy as np

from oracles.dtypes import EXT, dtype as _dtype

#: numpy types of the formats numpy has; bfloat16 is emulated.
_NP = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


def round_bf16(a) -> np.ndarray:
    """Round float64 values to bfloat16 (nearest, ties to even), returned as float64.

    Done directly from float64 with frexp/rint/ldexp, so there is no double rounding through
    float32. Overflow gives +-inf; results below bfloat16's normal range are rounded to its
    subnormal grid (spacing 2**-133).
    """
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        _, e = np.frexp(a)                      # a = m * 2**e with 0.5 <= |m| < 1
        e = np.maximum(e, -125)                 # below 2**-126: bfloat16's fixed subnormal grid
        q = np.ldexp(np.rint(np.ldexp(a, 8 - e)), e - 8)   # 8 significant bits, ties to even
        q = np.where(np.abs(q) > float.fromhex("0x1.fep127"), np.copysign(np.inf, a), q)
        return np.where(np.isfinite(a), q, a)


def rounder(fmt: str):
    """The function rounding float64 values to format `fmt` (result in float64 for bfloat16,
    in the numpy type for the others)."""
    if fmt == "bfloat16":
        return round_bf16
    t = _NP[fmt]
    return lambda a: np.asarray(a).astype(t)


def sequential_sum(a: np.ndarray, fmt: str) -> np.ndarray:
    """Left-to-right sum over the last axis, rounding to `fmt` after every addition."""
    if fmt == "float16":
        a = np.asarray(a, dtype=np.float16)
        if a.shape[-1] == 0:
            return np.zeros(a.shape[:-1], dtype=np.float16)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.cumsum(a, axis=-1, dtype=np.float16)[..., -1]
    if fmt == "bfloat16":
        a = np.asarray(a, dtype=np.float64)
        acc = np.zeros(a.shape[:-1], dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            for k in range(a.shape[-1]):
                acc = round_bf16(acc + a[..., k])
        return acc
    raise ValueError(f"sequential_sum: fmt={fmt!r} is not a low-precision format (float16, bfloat16)")


def _to_last(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Move the reduction axes to the end and flatten them: (..., n); also the keepdims shape."""
    keep = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    rest = [i for i in range(x.ndim) if i not in axes]
    t = np.transpose(x, rest + list(axes))
    return t.reshape(t.shape[: len(rest)] + (-1,)), keep


def low_precision_stats(fmt: str):
    """Statistics accumulated in `fmt` ("float16" or "bfloat16"): the buggy kernel keeps its
    running sums in the input's own format.

    Centered: s = seqsum(x); mean = fl(s / n); d = fl(x - mean); v = fl(seqsum(fl(d*d)) / n_s).
    Uncentered: v = fl(seqsum(fl(x*x)) / n_s). Every fl() rounds to `fmt`; sums are sequential.
    """
    if fmt not in ("float16", "bfloat16"):
        raise ValueError(f"low_precision_stats: fmt={fmt!r}; expected float16 or bfloat16")
    rnd = rounder(fmt)

    def stats(x: np.ndarray, norm) -> tuple[np.ndarray, np.ndarray]:
        flat, keep = _to_last(np.asarray(x, dtype=EXT), norm.axes)
        n = flat.shape[-1]
        ns = n if norm.divisor == "mean" else 1
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            xs = rnd(flat.astype(np.float64))  # exact for inputs representable in fmt
            if norm.centered:
                mean = rnd(sequential_sum(xs, fmt).astype(np.float64) / n)
                d = rnd(xs.astype(np.float64) - mean.astype(np.float64)[..., None])
            else:
                mean = np.zeros(flat.shape[:-1])
                d = xs
            sq = rnd(d.astype(np.float64) * d.astype(np.float64))
            v = rnd(sequential_sum(sq, fmt).astype(np.float64) / ns)
        return (np.asarray(mean, dtype=EXT).reshape(keep) if norm.centered
                else np.zeros((1,) * x.ndim, dtype=EXT)), np.asarray(v, dtype=EXT).reshape(keep)

    stats.__name__ = f"low_precision_stats_{fmt}"
    return stats


def one_pass_stats(fmt: str, *, clamp: bool):
    """One-pass statistics in format `fmt` (float32 or float64): mean = sum(x)/n,
    v = sum(x*x)/n - mean*mean, every operation in `fmt`; `clamp` applies max(v, 0).

    Without the clamp a cancelled variance can come out negative, and 1/sqrt(v + eps) is NaN once
    v < -eps; with it the variance collapses to 0 and the output to (x - mean)/sqrt(eps).
    """
    t = _NP[fmt]
    if fmt not in ("float32", "float64"):
        raise ValueError(f"one_pass_stats: fmt={fmt!r}; expected float32 or float64")

    def stats(x: np.ndarray, norm) -> tuple[np.ndarray, np.ndarray]:
        if not norm.centered or norm.divisor != "mean":
            raise ValueError("one-pass variance applies to centered, mean-divisor normalizations only")
        a = np.asarray(x).astype(t)  # exact for inputs representable in the case's format
        n = 1
        for ax in norm.axes:
            n *= a.shape[ax]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            s1 = np.sum(a, axis=norm.axes, keepdims=True, dtype=t)
            s2 = np.sum(a * a, axis=norm.axes, keepdims=True, dtype=t)
            mean = s1 / t(n)
            v = s2 / t(n) - mean * mean
            if clamp:
                v = np.maximum(v, t(0))
        return mean.astype(EXT), v.astype(EXT)

    stats.__name__ = f"one_pass_stats_{fmt}{'_clamped' if clamp else ''}"
    return stats


def accumulation_format(dtype: str) -> str:
    """The accumulation format an honest implementation uses for `dtype` (oracles' default)."""
    from oracles.dtypes import DEFAULT_ACCUMULATION

    _dtype(dtype)
    return DEFAULT_ACCUMULATION[dtype]


def one_pass_low_precision_stats(fmt: str):
    """One-pass statistics with every operation in the half format `fmt` (float16/bfloat16):
    mean = fl(seqsum(x) / n), v = fl(fl(seqsum(fl(x*x)) / n) - fl(mean*mean)); no clamp."""
    if fmt not in ("float16", "bfloat16"):
        raise ValueError(f"one_pass_low_precision_stats: fmt={fmt!r}; expected float16 or bfloat16")
    rnd = rounder(fmt)

    def stats(x: np.ndarray, norm) -> tuple[np.ndarray, np.ndarray]:
        if not norm.centered or norm.divisor != "mean":
            raise ValueError("one-pass variance applies to centered, mean-divisor normalizations only")
        flat, keep = _to_last(np.asarray(x, dtype=EXT), norm.axes)
        n = flat.shape[-1]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            xs = rnd(flat.astype(np.float64)).astype(np.float64)
            mean = rnd(sequential_sum(xs, fmt).astype(np.float64) / n).astype(np.float64)
            sq = rnd(xs * xs)
            ex2 = rnd(sequential_sum(sq, fmt).astype(np.float64) / n).astype(np.float64)
            v = rnd(ex2 - rnd(mean * mean).astype(np.float64))
        return np.asarray(mean, dtype=EXT).reshape(keep), np.asarray(v, dtype=EXT).reshape(keep)

    stats.__name__ = f"one_pass_low_precision_stats_{fmt}"
    return stats
