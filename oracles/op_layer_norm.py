"""LayerNorm over the trailing `normalized_ndim` dimensions (or, equivalently, from `axis` on).

For x of shape (*lead, *norm) with k = len(norm) = normalized_ndim (ONNX's axis form: axis = rank - k,
negative axes counted from the end), per leading index:
    mu = mean(x), var = mean((x - mu)**2)          (biased)
    y = gamma * (x - mu) / sqrt(var + eps) + beta   gamma, beta of shape norm (optional)
Also returns mu and rstd = 1/sqrt(var + eps), each of shape lead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _core
from ._core import Norm, accurate_stats
from ._view import View, as_array, check_eps, check_param, grads, tangent
from .dtypes import work
from .errors import require


def trailing_ndim(ndim: int, normalized_ndim: int | None, axis: int | None) -> int:
    """k from either `normalized_ndim` or ONNX's `axis` (exactly one given)."""
    require((normalized_ndim is None) != (axis is None), "normalized_ndim/axis",
            f"{normalized_ndim}/{axis}", "exactly one of them")
    if axis is not None:
        ok = isinstance(axis, (int, np.integer)) and not isinstance(axis, (bool, np.bool_))
        require(ok, "axis", repr(axis), "an integer")
        require(-ndim <= axis < ndim, "axis", axis, f"in [{-ndim}, {ndim - 1}] for rank {ndim}")
        return ndim - (axis % ndim)
    ok = isinstance(normalized_ndim, (int, np.integer)) and not isinstance(normalized_ndim, (bool, np.bool_))
    require(ok and 1 <= normalized_ndim <= ndim, "normalized_ndim", repr(normalized_ndim), f"an integer in [1, {ndim}]")
    return int(normalized_ndim)


def trailing_view(x, weight_names, weights, *, normalized_ndim, axis, centered: bool,
                  keys=("gamma", "beta")) -> View:
    """(P, Q) working view normalizing the trailing k dims; parameters of shape x.shape[-k:].
    `weight_names` name the parameters in messages, `keys` in the view (gamma, beta)."""
    x = as_array("x", x, ndim_min=1)
    k = trailing_ndim(x.ndim, normalized_ndim, axis)
    lead, norm = x.shape[: x.ndim - k], x.shape[x.ndim - k:]
    q = int(np.prod(norm))
    v = View(x.astype(work()).reshape(-1, q), Norm(axes=(1,), centered=centered), None, x.shape, lead)
    for name, key, w in zip(weight_names, keys, weights):
        check_param(name, w, norm)
        v.add_param(key, w, (1, q))
    return v


def view(x, gamma=None, beta=None, *, normalized_ndim=None, axis=None) -> View:
    return trailing_view(x, ("gamma", "beta"), (gamma, beta), normalized_ndim=normalized_ndim,
                         axis=axis, centered=True)


@dataclass(frozen=True)
class LayerNormResult:
    """y (x's shape), mean and rstd (shape lead), in the working type (EXT by default)."""

    y: np.ndarray
    mean: np.ndarray
    rstd: np.ndarray


def _forward(x, gamma, beta, eps, normalized_ndim, axis, stats=accurate_stats):
    v = view(x, gamma, beta, normalized_ndim=normalized_ndim, axis=axis)
    return v, _core.forward(v.x, v.norm, check_eps(eps), v.gamma, v.beta, stats=stats)


def layer_norm(x, gamma=None, beta=None, *, eps: float, normalized_ndim: int | None = None,
               axis: int | None = None, _stats=accurate_stats) -> LayerNormResult:
    """LayerNorm (see module docstring). Give `normalized_ndim` (PyTorch) or `axis` (ONNX)."""
    v, f = _forward(x, gamma, beta, eps, normalized_ndim, axis, _stats)
    return LayerNormResult(v.back(f.y), v.stat(f.mean), v.stat(f.r))


def layer_norm_vjp(x, gamma, beta, dy, *, eps: float, normalized_ndim=None, axis=None):
    """Gradients {"x", "gamma", "beta"} of sum(dy * y); see `_core.vjp`."""
    v, f = _forward(x, gamma, beta, eps, normalized_ndim, axis)
    return grads(v, f, dy)


def layer_norm_jvp(x, gamma, beta, tx, tgamma=None, tbeta=None, *, eps: float, normalized_ndim=None,
                   axis=None) -> np.ndarray:
    """Tangent of y along (tx, tgamma, tbeta); see `_core.jvp`."""
    v, f = _forward(x, gamma, beta, eps, normalized_ndim, axis)
    return tangent(v, f, tx, tgamma, tbeta)
