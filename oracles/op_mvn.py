"""Mean-variance normalization along chosen axes (ONNX MeanVarianceNormalization).

    mu = mean_axes(x), var = mean_axes((x - mu)**2)    (biased)
    y = (x - mu) / sqrt(var + eps)          eps_mode="inside"
    y = (x - mu) / (sqrt(var) + eps)        eps_mode="outside"  (ONNX's function body, eps = 1e-9)
No affine parameters. ONNX's default axes are (0, 2, 3).
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._core import Norm, accurate_stats
from ._view import View, as_array, check_eps, grads, tangent
from .dtypes import work
from .errors import require

EPS_MODES = ("inside", "outside", "none")


def normalize_axes(axes, ndim: int) -> tuple[int, ...]:
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, (bool, np.bool_)):
        axes = (axes,)
    ok = isinstance(axes, (tuple, list)) and all(
        isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_)) for a in axes)
    require(ok, "axes", repr(axes), "an integer or a sequence of integers")
    axes = tuple(int(a) for a in axes)
    require(len(axes) > 0, "axes", axes, "at least one axis")
    for a in axes:
        require(-ndim <= a < ndim, "axes", axes, f"axes in [{-ndim}, {ndim - 1}] for rank {ndim}")
    out = tuple(sorted(a % ndim for a in axes))
    require(len(set(out)) == len(out), "axes", axes, "distinct axes")
    return out


def axes_view(x, axes, *, centered: bool, divisor: str, eps_mode: str) -> View:
    x = as_array("x", x, ndim_min=1)
    ax = normalize_axes(axes, x.ndim)
    stat_shape = tuple(1 if i in ax else s for i, s in enumerate(x.shape))
    return View(x.astype(work()), Norm(axes=ax, centered=centered, divisor=divisor, eps_mode=eps_mode),
                None, x.shape, stat_shape)


def view(x, *, axes=(0, 2, 3), eps_mode="outside") -> View:
    require(eps_mode in EPS_MODES, "eps_mode", repr(eps_mode), f"one of {EPS_MODES}")
    return axes_view(x, axes, centered=True, divisor="mean", eps_mode=eps_mode)


def _forward(x, eps, axes, eps_mode, stats=accurate_stats):
    v = view(x, axes=axes, eps_mode=eps_mode)
    return v, _core.forward(v.x, v.norm, check_eps(eps), stats=stats)


def mean_variance_normalization(x, *, axes=(0, 2, 3), eps: float = 1e-9, eps_mode: str = "outside",
                                _stats=accurate_stats) -> np.ndarray:
    """MVN along `axes` (see module docstring); returns y in x's shape, working type."""
    v, f = _forward(x, eps, axes, eps_mode, _stats)
    return v.back(f.y)


def mean_variance_normalization_vjp(x, dy, *, axes=(0, 2, 3), eps: float = 1e-9, eps_mode="outside"):
    v, f = _forward(x, eps, axes, eps_mode)
    return grads(v, f, dy)


def mean_variance_normalization_jvp(x, tx, *, axes=(0, 2, 3), eps: float = 1e-9, eps_mode="outside"):
    v, f = _forward(x, eps, axes, eps_mode)
    return tangent(v, f, tx)
