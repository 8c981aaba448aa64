"""GroupNorm: per sample, statistics over each group of C/G contiguous channels and all spatial dims.

Layouts: "channels_first" (N, C, *spatial) and "channels_last" (N, *spatial, C); G = num_groups
must divide C. Group g holds channels g*C/G ... (g+1)*C/G - 1 (contiguous blocks).
    y = gamma * (x - mu_{n,g}) / sqrt(var_{n,g} + eps) + beta      (biased variance)
Affine granularity (`affine`): "per_channel" (gamma, beta of shape (C,), PyTorch/Keras) or
"per_group" (shape (G,), ONNX GroupNormalization opset 18). Returns y, mean and rstd of shape (N, G).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _core
from ._core import Norm, accurate_stats
from ._view import View, as_array, channels_first_perm, check_eps, check_param, grads, tangent
from .dtypes import work
from .errors import require

AFFINE = ("per_channel", "per_group")


def view(x, num_groups: int, gamma=None, beta=None, *, layout="channels_first",
         affine="per_channel") -> View:
    """Working view (N, G, C/G, L), statistics over axes (2, 3)."""
    x = as_array("x", x, ndim_min=2)
    perm = channels_first_perm(x.ndim, layout)
    xc = x if perm is None else np.transpose(x, perm)
    n, c = xc.shape[0], xc.shape[1]
    ok = isinstance(num_groups, (int, np.integer)) and not isinstance(num_groups, (bool, np.bool_))
    require(ok and num_groups >= 1, "num_groups", repr(num_groups), "a positive integer")
    require(c % num_groups == 0, "num_groups", f"{num_groups} (channels={c})",
            f"a divisor of channels={c}")
    require(affine in AFFINE, "affine", repr(affine), f"one of {AFFINE}")
    g = int(num_groups)
    pshape, wshape = ((c,), (1, g, c // g, 1)) if affine == "per_channel" else ((g,), (1, g, 1, 1))
    v = View(xc.astype(work()).reshape(n, g, c // g, -1), Norm(axes=(2, 3)), perm, xc.shape, (n, g))
    for name, p in (("gamma", gamma), ("beta", beta)):
        check_param(name, p, pshape)
        v.add_param(name, p, wshape)
    return v


@dataclass(frozen=True)
class GroupNormResult:
    y: np.ndarray
    mean: np.ndarray
    rstd: np.ndarray


def _forward(x, num_groups, gamma, beta, eps, layout, affine, stats=accurate_stats):
    v = view(x, num_groups, gamma, beta, layout=layout, affine=affine)
    return v, _core.forward(v.x, v.norm, check_eps(eps), v.gamma, v.beta, stats=stats)


def group_norm(x, num_groups: int, gamma=None, beta=None, *, eps: float, layout="channels_first",
               affine="per_channel", _stats=accurate_stats) -> GroupNormResult:
    """GroupNorm (see module docstring)."""
    v, f = _forward(x, num_groups, gamma, beta, eps, layout, affine, _stats)
    return GroupNormResult(v.back(f.y), v.stat(f.mean), v.stat(f.r))


def group_norm_vjp(x, num_groups, gamma, beta, dy, *, eps: float, layout="channels_first",
                   affine="per_channel"):
    """Gradients {"x", "gamma", "beta"} of sum(dy * y)."""
    v, f = _forward(x, num_groups, gamma, beta, eps, layout, affine)
    return grads(v, f, dy)


def group_norm_jvp(x, num_groups, gamma, beta, tx, tgamma=None, tbeta=None, *, eps: float,
                   layout="channels_first", affine="per_channel"):
    """Tangent of y along (tx, tgamma, tbeta)."""
    v, f = _forward(x, num_groups, gamma, beta, eps, layout, affine)
    return tangent(v, f, tx, tgamma, tbeta)
