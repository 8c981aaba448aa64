"""RMSNorm over the trailing `normalized_ndim` dimensions, epsilon inside the root.

For x of shape (*lead, *norm), per leading index:
    rstd = 1 / sqrt(mean(x**2) + eps)
    y = weight * x * rstd          weight of shape norm (optional); no mean is subtracted
Returns y and rstd (shape lead).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _core
from ._core import accurate_stats
from ._view import check_eps, grads, tangent
from .op_layer_norm import trailing_view


def view(x, weight=None, *, normalized_ndim=None, axis=None):
    return trailing_view(x, ("weight",), (weight,), normalized_ndim=normalized_ndim, axis=axis,
                         centered=False, keys=("gamma",))


@dataclass(frozen=True)
class RMSNormResult:
    y: np.ndarray
    rstd: np.ndarray


def _forward(x, weight, eps, normalized_ndim, axis, stats=accurate_stats):
    v = view(x, weight, normalized_ndim=normalized_ndim, axis=axis)
    return v, _core.forward(v.x, v.norm, check_eps(eps), v.gamma, None, stats=stats)


def rms_norm(x, weight=None, *, eps: float, normalized_ndim: int | None = None, axis: int | None = None,
             _stats=accurate_stats) -> RMSNormResult:
    """RMSNorm (see module docstring)."""
    v, f = _forward(x, weight, eps, normalized_ndim, axis, _stats)
    return RMSNormResult(v.back(f.y), v.stat(f.r))


def rms_norm_vjp(x, weight, dy, *, eps: float, normalized_ndim=None, axis=None):
    """Gradients {"x", "weight"}: dx = rstd*(z - xhat*mean(z*xhat)), z = weight*dy, xhat = x*rstd."""
    v, f = _forward(x, weight, eps, normalized_ndim, axis)
    g = grads(v, f, dy)
    if "gamma" in g:
        g["weight"] = g.pop("gamma")
    return g


def rms_norm_jvp(x, weight, tx, tweight=None, *, eps: float, normalized_ndim=None, axis=None):
    """Tangent of y along (tx, tweight)."""
    v, f = _forward(x, weight, eps, normalized_ndim, axis)
    return tangent(v, f, tx, tweight, None)
