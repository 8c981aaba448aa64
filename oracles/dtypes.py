"""Floating-point formats the oracles judge, and the extended precision they compute in.

Every format is described by data (`DTYPES`), not by a numpy dtype, because numpy has no bfloat16:
bfloat16 values travel in a float32 *carrier* array whose values are all exactly representable in
bfloat16. `round_to(name, a)` rounds to a format with round-to-nearest-even, the way hardware does.

`EXT` is the oracles' maximum precision: numpy's `longdouble`, which must have at least a 64-bit
significand (x86-64 80-bit extended, or IEEE quad on aarch64 Linux). Its unit roundoff is at most
2**-64, at least 2048 times smaller than float64's, which is what lets float64 results be judged
(see docs/error-model.md, "The oracle's own error").

The *working* type of one evaluation, `work()`, is a per-call choice (`working(t)`): `EXT` by
default and for float64 cases, numpy.float64 for cases whose formats are all float32 or narrower
(`oracles.errormodel.Precision.working_type`): 2**29 times finer than float32's unit roundoff and
several times faster than the x87 longdouble. The oracle's modules take every computation type from
`work()`, never from `EXT`, so one evaluation stays in one type. A float64 evaluation runs under
`range_guard()`: an intermediate that overflows or underflows float64 raises FloatingPointError,
and `oracles.registry.evaluate` redoes that case in `EXT` (docs/error-model.md gives the ranges).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .errors import require

EXT = np.longdouble
EXT_INFO = np.finfo(EXT)
if EXT_INFO.nmant < 63:  # pragma: no cover - platform check
    raise ImportError(
        f"normfuzz oracles need numpy.longdouble with a >= 64-bit significand; this platform's has "
        f"{EXT_INFO.nmant + 1} bits (x86-64 and aarch64 Linux have it; macOS arm64 and Windows do not)"
    )
U_EXT = float(EXT_INFO.epsneg)  # unit roundoff 2**-64 (x86) or 2**-113 (quad)

#: The types an evaluation may work in: float64 (for cases in float32 and narrower formats) or EXT.
WORKING_TYPES = (np.float64, EXT)

_WORK: contextvars.ContextVar[type] = contextvars.ContextVar("normfuzz_oracle_working_type", default=EXT)
_GUARDED: contextvars.ContextVar[bool] = contextvars.ContextVar("normfuzz_oracle_range_guard", default=False)


def work() -> type:
    """The numpy scalar type the current evaluation computes in (`EXT` unless set by `working`)."""
    return _WORK.get()


def working_type(t) -> type:
    """Validate a working type: numpy.float64 or numpy.longdouble (a type, dtype or its name)."""
    ok = False
    try:
        ok = t is not None and np.dtype(t).type in WORKING_TYPES  # np.dtype(None) is float64
    except TypeError:
        pass
    require(ok, "working", repr(t), "numpy.float64 or numpy.longdouble")
    return np.dtype(t).type


@contextlib.contextmanager
def working(t) -> Iterator[type]:
    """Within: the oracle computes in `t` (numpy.float64 or numpy.longdouble)."""
    token = _WORK.set(working_type(t))
    try:
        yield _WORK.get()
    finally:
        _WORK.reset(token)


@contextlib.contextmanager
def range_guard() -> Iterator[None]:
    """Within: overflow and underflow raise FloatingPointError, also inside the oracle's `quiet`
    blocks. Used around float64 evaluations, whose intermediates must stay in float64's normal
    range to be what the EXT evaluation computes up to rounding (IEEE infinities and NaNs that
    come from the inputs do not raise: inf * 2 or inf - inf set no overflow flag)."""
    token = _GUARDED.set(True)
    try:
        with np.errstate(over="raise", under="raise"):
            yield
    finally:
        _GUARDED.reset(token)


def quiet(**conditions):
    """`numpy.errstate(**conditions)` for the oracle's IEEE-semantics blocks (e.g.
    invalid="ignore", over="ignore"), except that inside `range_guard` overflow and underflow keep
    raising."""
    if _GUARDED.get():
        conditions = {k: v for k, v in conditions.items() if k not in ("over", "under")}
    return np.errstate(**conditions)


@dataclass(frozen=True)
class DType:
    """One floating-point format: name, precision and range.

    `u` is the unit roundoff 2**-p (p = significand bits including the hidden one): round-to-nearest
    has relative error at most u for results in the normal range. Below `tiny` (smallest normal),
    the absolute error is at most `eta / 2` (`eta`: smallest subnormal).
    """

    name: str
    p: int
    tiny: float
    eta: float
    max: float
    carrier: str  # numpy dtype name that stores this format's values exactly

    @property
    def u(self) -> float:
        return 2.0 ** -self.p

    @property
    def np_carrier(self) -> np.dtype:
        return np.dtype(self.carrier)


DTYPES: dict[str, DType] = {
    "float16": DType("float16", 11, 2.0**-14, 2.0**-24, 65504.0, "float16"),
    "bfloat16": DType("bfloat16", 8, 2.0**-126, 2.0**-133, float.fromhex("0x1.fep127"), "float32"),
    "float32": DType("float32", 24, 2.0**-126, 2.0**-149, float(np.finfo(np.float32).max), "float32"),
    "float64": DType("float64", 53, 2.0**-1022, 2.0**-1074, float(np.finfo(np.float64).max), "float64"),
}

#: Accumulation format an honest implementation uses for each input format (half types accumulate
#: in float32, the others in their own format). Runners may declare otherwise.
DEFAULT_ACCUMULATION = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}


def dtype(name: str) -> DType:
    """The `DType` called `name`; raises `OracleInputError` for an unknown name."""
    d = DTYPES.get(name) if isinstance(name, str) else None
    if d is None:  # (the message is built only here: this runs dozens of times per evaluation)
        require(False, "dtype", repr(name), f"one of {sorted(DTYPES)}")
    return d


def name_of(a: np.ndarray) -> str:
    """Format name of a numpy array's dtype (bfloat16 arrays from ml_dtypes included)."""
    n = np.asarray(a).dtype.name
    require(n in DTYPES, "dtype", n, f"a floating dtype among {sorted(DTYPES)}")
    return n


def _round_bfloat16(a: np.ndarray) -> np.ndarray:
    """Round to bfloat16 (nearest, ties to even), returned in a float32 carrier."""
    f = np.asarray(a, dtype=np.float32)  # exact for float32 input; one rounding from wider input
    bits = f.reshape(-1).view(np.uint32).astype(np.uint64)  # 1-d: views of 0-d arrays are scalars
    lsb = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lsb) >> 16) << 16
    out = rounded.astype(np.uint32).view(np.float32).copy()
    out[np.isnan(f.reshape(-1))] = np.float32("nan")
    return out.reshape(f.shape)


def round_to(name: str, a) -> np.ndarray:
    """Round `a` to format `name`, returned in that format's carrier dtype.

    Overflow gives +-inf as IEEE rounding does. From extended precision, float16 and bfloat16 round
    through float32 first (double rounding: at most 2**-24 relative beyond the half-ulp, which the
    error model's safety factors absorb).
    """
    d = dtype(name)
    a = np.asarray(a)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "bfloat16":
            return _round_bfloat16(a)
        if name == "float16" and a.dtype == EXT:
            a = a.astype(np.float32)
        return a.astype(d.np_carrier)


def is_representable(name: str, a) -> bool:
    """True when every value of `a` is exactly representable in format `name` (NaN and inf count)."""
    a = np.asarray(a)
    r = round_to(name, a)
    with np.errstate(invalid="ignore"):
        return bool(np.all((r.astype(EXT) == a.astype(EXT)) | (np.isnan(r) & np.isnan(a))))


def to_ext(a) -> np.ndarray:
    """Convert to extended precision (exact for every format in `DTYPES`)."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiu" and a.dtype.name != "bfloat16":
        require(False, "array dtype", a.dtype, "a real floating or integer dtype")
    return a.astype(EXT)
