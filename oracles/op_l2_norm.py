"""L2 normalization along axes, and weight normalization.

l2_normalize: y = x * r with s = sum_axes(x**2) and the eps convention `eps_mode`:
    "none"      r = 1/sqrt(s)                 (ONNX LpNormalization p=2)
    "inside"    r = 1/sqrt(s + eps)
    "max_norm"  r = 1/max(sqrt(s), eps)       (torch.nn.functional.normalize, eps=1e-12)
    "max_sumsq" r = 1/sqrt(max(s, eps))       (tf.math.l2_normalize, epsilon=1e-12)

weight_norm (Salimans & Kingma 2016; torch.nn.utils.parametrizations.weight_norm):
    w = g * v / ||v||   the norm over every dim except `dim` (dim=0: one norm per output row; for a
                        1-D v, over no dim: ||v_i|| = |v_i|, so w = g * sign(v));
    g has v.shape[dim] entries (any shape with that many elements, e.g. (out, 1, ..., 1)).
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._core import accurate_stats
from ._core import Norm
from ._view import View, as_array, check_eps, grads, tangent
from .dtypes import work
from .errors import require
from .op_mvn import axes_view

EPS_MODES = ("none", "inside", "max_norm", "max_sumsq")


def view(x, *, axes=(-1,), eps_mode="max_norm"):
    require(eps_mode in EPS_MODES, "eps_mode", repr(eps_mode), f"one of {EPS_MODES}")
    return axes_view(x, axes, centered=False, divisor="sum", eps_mode=eps_mode)


def _forward(x, eps, axes, eps_mode, stats=accurate_stats):
    v = view(x, axes=axes, eps_mode=eps_mode)
    return v, _core.forward(v.x, v.norm, check_eps(eps), stats=stats)


def l2_normalize(x, *, axes=(-1,), eps: float = 1e-12, eps_mode: str = "max_norm",
                 _stats=accurate_stats) -> np.ndarray:
    """x / ||x||_2 along `axes` with the eps convention `eps_mode` (module docstring)."""
    v, f = _forward(x, eps, axes, eps_mode, _stats)
    return v.back(f.y)


def l2_normalize_vjp(x, dy, *, axes=(-1,), eps: float = 1e-12, eps_mode="max_norm"):
    v, f = _forward(x, eps, axes, eps_mode)
    return grads(v, f, dy)


def l2_normalize_jvp(x, tx, *, axes=(-1,), eps: float = 1e-12, eps_mode="max_norm"):
    v, f = _forward(x, eps, axes, eps_mode)
    return tangent(v, f, tx)


def weight_view(v, g, *, dim: int = 0, eps_mode: str = "none"):
    require(eps_mode in EPS_MODES, "eps_mode", repr(eps_mode), f"one of {EPS_MODES}")
    v = as_array("v", v, ndim_min=1)
    ok = isinstance(dim, (int, np.integer)) and not isinstance(dim, (bool, np.bool_))
    require(ok, "dim", repr(dim), "an integer")
    require(-v.ndim <= dim < v.ndim, "dim", dim, f"in [{-v.ndim}, {v.ndim - 1}]")
    dim = dim % v.ndim
    g = as_array("g", g)
    require(g.size == v.shape[dim], "g.size", g.size, f"v.shape[{dim}] = {v.shape[dim]}")
    axes = tuple(i for i in range(v.ndim) if i != dim)
    if axes:
        w = axes_view(v, axes, centered=False, divisor="sum", eps_mode=eps_mode)
    else:  # a vector: the norm over no dim is |v_i| per element (torch._weight_norm: g * sign(v))
        w = View(v.astype(work()), Norm(axes=(), centered=False, divisor="sum", eps_mode=eps_mode), None,
                 v.shape, v.shape)
    w.add_param("gamma", g, tuple(v.shape[i] if i == dim else 1 for i in range(v.ndim)))
    return w


def _weight_forward(v, g, dim, eps, eps_mode, stats=accurate_stats):
    w = weight_view(v, g, dim=dim, eps_mode=eps_mode)
    return w, _core.forward(w.x, w.norm, check_eps(eps), w.gamma, stats=stats)


def weight_norm(v, g, *, dim: int = 0, eps: float = 0.0, eps_mode: str = "none",
                _stats=accurate_stats) -> np.ndarray:
    """w = g * v / ||v|| with the norm over every dim except `dim` (module docstring)."""
    w, f = _weight_forward(v, g, dim, eps, eps_mode, _stats)
    return w.back(f.y)


def weight_norm_vjp(v, g, dw, *, dim: int = 0, eps: float = 0.0, eps_mode: str = "none"):
    """Gradients {"v", "g"} of sum(dw * w)."""
    w, f = _weight_forward(v, g, dim, eps, eps_mode)
    out = grads(w, f, dw)
    return {"v": out["x"], "g": out["gamma"]}


def weight_norm_jvp(v, g, tv, tg=None, *, dim: int = 0, eps: float = 0.0, eps_mode: str = "none"):
    w, f = _weight_forward(v, g, dim, eps, eps_mode)
    return tangent(w, f, tv, tg)
