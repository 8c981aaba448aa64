"""Map an op's arrays to and from the generic normalization's working view (see `_core`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import _core
from ._core import Norm, unbroadcast
from .dtypes import work
from .errors import require

LAYOUTS = ("channels_first", "channels_last")


@dataclass
class View:
    """An op's input as an instance of the generic normalization.

    The original array is transposed by `perm` (None: unchanged), giving `pre_shape`, then reshaped
    to the working shape of `x`. Parameters are stored in their working broadcast shape; their
    original shapes are kept to reshape gradients back. Statistics are reported in `stat_shape`.
    """

    x: np.ndarray
    norm: Norm
    perm: tuple[int, ...] | None
    pre_shape: tuple[int, ...]
    stat_shape: tuple[int, ...]
    params: dict[str, np.ndarray] = field(default_factory=dict)  # working shapes, working type
    param_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # original shapes
    param_work_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def to_working(self, a, name: str = "array") -> np.ndarray:
        """An array shaped like the original input (dy, tx), in the working view and type; `name`
        names it in the error raised for a shape other than the input's."""
        a = np.asarray(a, dtype=work())
        original = self.pre_shape if self.perm is None else tuple(self.pre_shape[i] for i in np.argsort(self.perm))
        require(a.shape == tuple(original), f"{name}.shape", a.shape, f"the input's shape {tuple(original)}")
        if self.perm is not None:
            a = np.transpose(a, self.perm)
        return a.reshape(self.x.shape)

    def back(self, a: np.ndarray) -> np.ndarray:
        """A working-view array mapped back to the original input's shape and layout."""
        a = a.reshape(self.pre_shape)
        if self.perm is not None:
            a = np.transpose(a, np.argsort(self.perm))
        return a

    def stat(self, s: np.ndarray) -> np.ndarray:
        """A keepdims statistic in the op's reported statistic shape."""
        shape = list(self.x.shape)
        for a in self.norm.axes:
            shape[a] = 1
        return np.broadcast_to(s, tuple(shape)).reshape(self.stat_shape)

    def add_param(self, name: str, value, work_shape: tuple[int, ...]) -> None:
        if value is None:
            return
        value = np.asarray(value)
        self.param_shapes[name] = value.shape
        self.param_work_shapes[name] = work_shape
        self.params[name] = value.astype(work()).reshape(work_shape)

    def param_to_working(self, name: str, a) -> np.ndarray | None:
        """A tangent/cotangent of parameter `name` in its working broadcast shape."""
        if a is None:
            return None
        require(name in self.param_shapes, f"tangent of {name}", "given", f"no tangent: the case has no {name}")
        a = np.asarray(a, dtype=work())
        require(a.shape == self.param_shapes[name], f"tangent of {name}.shape", a.shape, f"{self.param_shapes[name]}")
        return a.reshape(self.param_work_shapes[name])

    def param_grad(self, name: str, full: np.ndarray) -> np.ndarray:
        """Reduce a working-view full gradient to parameter `name`'s original shape."""
        return unbroadcast(full, self.param_work_shapes[name]).reshape(self.param_shapes[name])

    @property
    def gamma(self):
        return self.params.get("gamma")

    @property
    def beta(self):
        return self.params.get("beta")


def check_layout(layout: str) -> None:
    require(layout in LAYOUTS, "layout", repr(layout), f"one of {LAYOUTS}")


def channels_first_perm(ndim: int, layout: str) -> tuple[int, ...] | None:
    """Permutation taking an (N, *spatial, C) array to (N, C, *spatial); None for channels_first."""
    check_layout(layout)
    if layout == "channels_first":
        return None
    return (0, ndim - 1) + tuple(range(1, ndim - 1))


def as_array(name: str, a, *, ndim_min: int = 0) -> np.ndarray:
    """Validate a floating input array (no object arrays, at least `ndim_min` dims)."""
    a = np.asarray(a)
    require(a.dtype.kind == "f" or a.dtype.name == "bfloat16", f"{name}.dtype", a.dtype,
            "a floating dtype")
    require(a.ndim >= ndim_min, f"{name}.ndim", a.ndim, f">= {ndim_min}")
    require(a.size > 0, f"{name}.shape", a.shape, "a non-empty array")
    return a


def check_param(name: str, a, shape: tuple[int, ...]) -> None:
    if a is None:
        return
    a = as_array(name, a)
    require(a.shape == tuple(shape), f"{name}.shape", a.shape, f"{tuple(shape)}")


def check_eps(eps) -> float:
    ok = isinstance(eps, (int, float, np.floating, np.integer)) and not isinstance(eps, (bool, np.bool_))
    require(ok, "eps", repr(eps), "a real number")
    eps = float(eps)
    require(eps >= 0 and np.isfinite(eps), "eps", eps, "a finite number >= 0")
    return eps


def check_int(name: str, value, *, minimum: int) -> int:
    """An integer >= minimum (bools and non-integral floats refused)."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    require(ok, name, repr(value), f"an integer >= {minimum}")
    require(int(value) >= minimum, name, value, f"an integer >= {minimum}")
    return int(value)


def grads(v: View, f: _core.Forward, dy) -> dict[str, np.ndarray]:
    """VJP in the op's own shapes: {"x": ..., "gamma": ..., "beta": ...} (parameters present only)."""
    dx, dg, db = _core.vjp(f, v.to_working(dy, "dy"))
    out = {"x": v.back(dx)}
    if v.gamma is not None:
        out["gamma"] = v.param_grad("gamma", dg)
    if v.beta is not None:
        out["beta"] = v.param_grad("beta", db)
    return out


def tangent(v: View, f: _core.Forward, tx, tgamma=None, tbeta=None) -> np.ndarray:
    """JVP in the op's own shapes: the tangent of y along (tx, tgamma, tbeta)."""
    return v.back(_core.jvp(f, v.to_working(tx, "tx"), v.param_to_working("gamma", tgamma),
                            v.param_to_working("beta", tbeta)))
