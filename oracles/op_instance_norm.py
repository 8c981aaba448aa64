"""InstanceNorm: per sample and channel, statistics over the spatial dimensions.

Layouts "channels_first" (N, C, *spatial) and "channels_last" (N, *spatial, C), at least one spatial
dim. y = gamma * (x - mu_{n,c}) / sqrt(var_{n,c} + eps) + beta (biased variance), optional affine of
shape (C,). Returns y, mean and rstd of shape (N, C). (Running statistics, which PyTorch's
InstanceNorm can track, follow BatchNorm's update with the batch mean of the per-instance
statistics; they are not modelled here.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _core
from ._core import Norm, accurate_stats
from ._view import View, as_array, channels_first_perm, check_eps, check_param, grads, tangent
from .dtypes import work


def view(x, gamma=None, beta=None, *, layout="channels_first") -> View:
    """Working view (N, C, L), statistics over axis 2, parameters (1, C, 1)."""
    x = as_array("x", x, ndim_min=3)
    perm = channels_first_perm(x.ndim, layout)
    xc = x if perm is None else np.transpose(x, perm)
    n, c = xc.shape[0], xc.shape[1]
    v = View(xc.astype(work()).reshape(n, c, -1), Norm(axes=(2,)), perm, xc.shape, (n, c))
    for name, p in (("gamma", gamma), ("beta", beta)):
        check_param(name, p, (c,))
        v.add_param(name, p, (1, c, 1))
    return v


@dataclass(frozen=True)
class InstanceNormResult:
    y: np.ndarray
    mean: np.ndarray
    rstd: np.ndarray


def _forward(x, gamma, beta, eps, layout, stats=accurate_stats):
    v = view(x, gamma, beta, layout=layout)
    return v, _core.forward(v.x, v.norm, check_eps(eps), v.gamma, v.beta, stats=stats)


def instance_norm(x, gamma=None, beta=None, *, eps: float, layout="channels_first",
                  _stats=accurate_stats) -> InstanceNormResult:
    """InstanceNorm (see module docstring)."""
    v, f = _forward(x, gamma, beta, eps, layout, _stats)
    return InstanceNormResult(v.back(f.y), v.stat(f.mean), v.stat(f.r))


def instance_norm_vjp(x, gamma, beta, dy, *, eps: float, layout="channels_first"):
    v, f = _forward(x, gamma, beta, eps, layout)
    return grads(v, f, dy)


def instance_norm_jvp(x, gamma, beta, tx, tgamma=None, tbeta=None, *, eps: float,
                      layout="channels_first"):
    v, f = _forward(x, gamma, beta, eps, layout)
    return tangent(v, f, tx, tgamma, tbeta)
