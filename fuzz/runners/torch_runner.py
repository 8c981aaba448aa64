"""PyTorch runners: one per public code path (functional API, modules, weight-norm parametrization,
the native ops that return saved statistics), CPU.

Runner ids and what they call:

- ``torch.functional``: ``torch.nn.functional.batch_norm`` (inference; training with running
  statistics updated in place, or without them), ``layer_norm``, ``group_norm``, ``instance_norm``,
  ``rms_norm``, ``normalize`` (l2_normalize). VJPs by ``torch.autograd.grad`` with the cotangent as
  ``grad_outputs`` (input and parameter gradients), JVPs by ``torch.func.jvp``.
- ``torch.module``: ``nn.BatchNorm1d/2d/3d`` (by rank), ``nn.LayerNorm``, ``nn.GroupNorm``,
  ``nn.InstanceNorm1d/2d/3d`` (track_running_stats=False), ``nn.RMSNorm``; batch_norm also in
  ``training_steps`` (K forward passes of one module in train mode). Modules are cached per
  (class, shape, affine flags, dtype) and the case's parameters/buffers are copied in under
  ``torch.no_grad()``; VJPs read the gradients of the module's own parameters, JVPs go through
  ``torch.func.functional_call``.
- ``torch.weight_norm``: ``torch.nn.utils.parametrizations.weight_norm`` on ``nn.Linear`` (2-D v)
  or ``nn.Conv1d/2d/3d`` (3- to 5-D v); w is read from the parametrized ``module.weight`` with
  original0 = g, original1 = v.
- ``torch.native``: ``torch.native_batch_norm`` / ``native_layer_norm`` / ``native_group_norm``,
  which also return the saved statistics (mean and rstd; native_batch_norm's save_invstd is rstd).

Layouts: torch's normalization APIs take channels-first tensors. A ``channels_last`` case is run
the way a user holding (N, *spatial, C) data does: ``x.permute(0, ndim-1, 1, ..., ndim-2)`` gives a
logical (N, C, *spatial) tensor with channels-last strides (exactly torch's channels_last /
channels_last_3d memory format at rank 4 / 5), which exercises torch's channels-last kernels;
outputs are permuted back.

What the torch paths do not expose is not returned: the functional and module paths give no batch
statistics (mean/var/rstd) in training, the native ops give mean and rstd but not var.

Conventions are declared per runner (`conventions`, BatchNorm's where the runner has it) and per op
(`conventions_for(op)`), each with the documentation it comes from; tests/fuzz/runners/test_torch.py
checks every declaration against the installed torch.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Callable, Mapping

import numpy as np

from .base import Conventions, Runner, Unsupported, framework_call

__all__ = ["runners", "TorchFunctional", "TorchModule", "TorchWeightNorm", "TorchNative"]

_DOCS = "https://docs.pytorch.org/docs/stable/generated/"
SOURCES = {
    "batch_norm": (_DOCS + "torch.nn.BatchNorm2d.html", _DOCS + "torch.nn.functional.batch_norm.html"),
    "layer_norm": (_DOCS + "torch.nn.LayerNorm.html", _DOCS + "torch.nn.functional.layer_norm.html"),
    "group_norm": (_DOCS + "torch.nn.GroupNorm.html", _DOCS + "torch.nn.functional.group_norm.html"),
    "instance_norm": (_DOCS + "torch.nn.InstanceNorm2d.html", _DOCS + "torch.nn.functional.instance_norm.html"),
    "rms_norm": (_DOCS + "torch.nn.RMSNorm.html", _DOCS + "torch.nn.functional.rms_norm.html"),
    "l2_normalize": (_DOCS + "torch.nn.functional.normalize.html",),
    "weight_norm": (_DOCS + "torch.nn.utils.parametrizations.weight_norm.html",),
}

# The conventions of BatchNorm (functional and module): momentum weights the *batch* statistic
# (new = (1 - momentum) * old + momentum * batch, default 0.1; momentum=None is the cumulative
# average over num_batches_tracked batches), the running variance stores the unbiased estimate,
# eps defaults to 1e-5 and is added inside the square root; F.batch_norm refuses eps <= 0 in
# training ("batch_norm eps must be positive during training", so the smallest accepted eps is the
# smallest positive double) and eps < 0 in inference; a training batch with one value per channel
# raises ("Expected more than 1 value per channel when training"). Half formats accumulate in
# float32 (torch's opmath type).
_BN = Conventions(
    momentum_on="batch", default_momentum=0.1, running_var_estimator="unbiased", default_eps=1e-5,
    min_eps=math.ulp(0.0), eps_mode="inside", affine="per_channel", batch_of_one="raises",
    nan_propagation="set", sources=SOURCES["batch_norm"],
    notes="momentum=None: cumulative average, weight 1/(num_batches_tracked + 1) for the new batch; "
          "the variance that normalizes is the biased one (torch.var(correction=0)). eps must be "
          "> 0 in training (ValueError otherwise) and >= 0 in inference.")

_NO_EPS_CHECK = "no eps check: any eps is accepted, negative included."

# Per-op conventions of the non-BatchNorm ops (the BatchNorm fields do not apply to them).
_PER_OP = {
    "batch_norm": _BN,
    "layer_norm": Conventions(default_eps=1e-5, min_eps=None, eps_mode="inside", affine="per_channel",
                              batch_of_one="normalizes", sources=SOURCES["layer_norm"],
                              notes="affine per element of normalized_shape (elementwise_affine); "
                                    + _NO_EPS_CHECK),
    "group_norm": Conventions(default_eps=1e-5, min_eps=None, eps_mode="inside", affine="per_channel",
                              batch_of_one="normalizes", sources=SOURCES["group_norm"],
                              notes=_NO_EPS_CHECK),
    "instance_norm": Conventions(default_eps=1e-5, min_eps=None, eps_mode="inside", affine="per_channel",
                                 batch_of_one="raises", sources=SOURCES["instance_norm"],
                                 notes="one spatial element raises 'Expected more than 1 spatial "
                                       "element when training'; " + _NO_EPS_CHECK + " With eps = 0 "
                                       "a constant instance gives rstd 0 (y = beta), not 0/0."),
    "rms_norm": Conventions(default_eps=None, min_eps=None, eps_mode="inside", affine="per_channel",
                            sources=SOURCES["rms_norm"],
                            notes="eps=None (the default) means torch.finfo(opmath).eps: "
                                  "finfo(float32).eps = 2**-23 for float16/bfloat16/float32 inputs, "
                                  "finfo(float64).eps = 2**-52 for float64. Weight per element of "
                                  "normalized_shape. " + _NO_EPS_CHECK),
    "l2_normalize": Conventions(default_eps=1e-12, min_eps=None, eps_mode="max_norm", affine=None,
                                sources=SOURCES["l2_normalize"],
                                notes="y = x / max(||x||_2, eps); the norm is rounded to the input "
                                      "format and the division done in it. " + _NO_EPS_CHECK),
    "weight_norm": Conventions(default_eps=None, min_eps=None, eps_mode="none", affine=None,
                               sources=SOURCES["weight_norm"],
                               notes="no epsilon: w = g * v / ||v||. dim=None (whole tensor) is "
                                     "stored as dim=-1, so dim=-1 means the whole tensor, not the "
                                     "last dim; a 1-D weight with dim=0 is normalized elementwise."),
}

#: torch and torch.nn.functional, bound by `_import` (never at module import time).
torch: Any = None
F: Any = None
_TDTYPE: dict[str, Any] = {}

_NORM_MODES = ("forward", "vjp", "jvp")
_BN_MODES = ("inference", "training", "inference_vjp", "training_vjp", "inference_jvp", "training_jvp")
_MODULE_CACHE_SIZE = 256


def _import() -> None:
    """Import torch once per process, single-threaded (the fuzzer parallelizes across processes)."""
    global torch, F
    if torch is not None:
        return
    import torch as _torch
    import torch.nn.functional as _F

    _torch.set_num_threads(1)
    # The case's arrays are read-only; torch only reads them (in-place updates go to copies), so
    # torch's warning about non-writable arrays is noise here.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
    # torch.func's first transform scripts a helper and warns that torch.jit.script is deprecated.
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning)
    _TDTYPE.update(float16=_torch.float16, bfloat16=_torch.bfloat16, float32=_torch.float32,
                   float64=_torch.float64)
    torch, F = _torch, _F


# --------------------------------------------------------------------------------------------------
# conversions


def _tensor(a: np.ndarray, dtype: str):
    """A case array as a torch tensor in the case's format (zero-copy except for bfloat16)."""
    t = torch.from_numpy(a)
    return t.to(torch.bfloat16) if dtype == "bfloat16" else t


def _owned(a: np.ndarray, dtype: str):
    """A writable copy (tensors the framework updates in place, e.g. running statistics)."""
    t = torch.from_numpy(a)
    return t.to(torch.bfloat16) if dtype == "bfloat16" else t.clone()


def _numpy(t) -> np.ndarray:
    """A torch tensor as numpy (bfloat16 -> float32 carrier, exact)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def _to_cf(t, layout: str):
    """(N, *spatial, C) -> logical (N, C, *spatial) view with channels-last strides."""
    if layout == "channels_first" or t.ndim < 3:
        return t
    return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1))


def _from_cf(t, layout: str):
    if layout == "channels_first" or t.ndim < 3:
        return t
    return t.permute(0, *range(2, t.ndim), 1)


def _trailing_k(ndim: int, attrs: Mapping[str, Any]) -> int:
    """normalized_ndim, or ONNX's axis converted to it (the oracle validates the values)."""
    k = attrs.get("normalized_ndim")
    if k is None:
        axis = attrs.get("axis")
        if axis is None:
            raise Unsupported("layer_norm/rms_norm case gives neither normalized_ndim nor axis")
        k = ndim - (int(axis) % ndim)
    return int(k)


def _attr(attrs: Mapping[str, Any], name: str, default):
    v = attrs.get(name, default)
    return default if v is None and default is not None else v


def _bn_momentum_weight(attrs: Mapping[str, Any]) -> float | None:
    """The case's momentum as torch's (weight of the batch statistic); None = cumulative average."""
    m = attrs.get("momentum", 0.1)
    if m is None:
        return None
    return float(m) if attrs.get("momentum_on", "batch") == "batch" else 1.0 - float(m)


# --------------------------------------------------------------------------------------------------
# the generic forward / VJP / JVP over a function fn(x, *params) -> y


def _apply(case, kind: str, fn: Callable, x_name: str, p_names: tuple[str, ...], y_name: str,
           extra: Callable[[], dict] | None = None) -> dict[str, np.ndarray]:
    """Run `fn(x, *params)` (params None where the case omits them) in `kind` (forward/vjp/jvp).

    VJP: torch.autograd.grad(y, [x, present params], grad_outputs=d<y>); JVP: torch.func.jvp with
    tangents for x and for the parameters the case gives a tangent of (the others are constants).
    `extra()` adds outputs after a forward call (e.g. updated running statistics).
    """
    ins, dt = case.inputs, case.dtype
    x = _tensor(ins[x_name], dt)
    params = [(_tensor(ins[p], dt) if p in ins else None) for p in p_names]
    if kind == "forward":
        with framework_call():
            y = fn(x, *params)
        out = {y_name: _numpy(y)}
        if extra is not None:
            out.update(extra())
        return out
    if kind == "vjp":
        leaves = [x] + [p for p in params if p is not None]
        names = ["d" + x_name] + ["d" + p for p in p_names if p in ins]
        dy = _tensor(ins["d" + y_name], dt)
        with framework_call():
            for t in leaves:
                t.requires_grad_(True)
            y = fn(x, *params)
            grads = torch.autograd.grad(y, leaves, grad_outputs=dy)
        return {n: _numpy(g) for n, g in zip(names, grads)}
    # jvp
    idx = [i for i, p in enumerate(p_names) if params[i] is not None and "t" + p in ins]
    primals = (x,) + tuple(params[i] for i in idx)
    tangents = (_tensor(ins["t" + x_name], dt),) + tuple(_tensor(ins["t" + p_names[i]], dt) for i in idx)

    def f(xx, *tp):
        ps = list(params)
        for i, t in zip(idx, tp):
            ps[i] = t
        return fn(xx, *ps)

    with framework_call():
        _, ty = torch.func.jvp(f, primals, tangents)
    return {"t" + y_name: _numpy(ty)}


def _split_mode(op: str, mode: str) -> tuple[str, str]:
    """(state, kind): state "inference"/"training" for batch_norm ("" otherwise), kind forward/vjp/jvp."""
    if op != "batch_norm":
        return "", mode
    if mode == "training_steps":
        return "training", "steps"
    state, _, kind = mode.partition("_")
    return state, kind or "forward"


# --------------------------------------------------------------------------------------------------
# runners


class _TorchRunner(Runner):
    framework = "torch"
    framework_module = "torch"
    dtypes = ("float16", "bfloat16", "float32", "float64")

    def setup(self) -> None:
        _import()

    def conventions_for(self, op: str, attrs=None) -> Conventions:
        """The documented conventions of this path for `op` (`conventions` is BatchNorm's where
        the runner has BatchNorm)."""
        if op == "batch_norm":
            return self.conventions
        return _PER_OP.get(op, self.conventions)

    def supports(self, op, mode, dtype, attrs) -> str | None:
        reason = super().supports(op, mode, dtype, attrs)
        if reason is not None:
            return reason
        layout = attrs.get("layout", "channels_first")
        if layout not in ("channels_first", "channels_last"):
            return f"layout {layout!r} is not one of channels_first/channels_last"
        if op == "batch_norm" and mode == "training_steps" and \
                attrs.get("running_var_estimator", "unbiased") != "unbiased":
            return ("torch stores the unbiased batch variance in running_var; the biased estimator "
                    "has no torch option")
        if op == "l2_normalize":
            em = attrs.get("eps_mode", "max_norm")
            if em not in ("max_norm", "none"):
                return (f"torch.nn.functional.normalize divides by max(||x||, eps) (eps_mode "
                        f"'max_norm', or 'none' as eps=0); eps_mode {em!r} has no torch form")
        if op == "group_norm" and attrs.get("affine", "per_channel") == "per_group" and mode == "vjp" \
                and dtype in ("float16", "bfloat16"):
            return ("per-group affine is expressed by repeating gamma/beta over each group's "
                    "channels; torch then rounds the per-channel parameter gradients to "
                    f"{dtype} before summing them per group, a double rounding that is the "
                    "translation's, not torch's, and that the single-rounding bound does not cover")
        return None

    def run(self, case) -> dict[str, np.ndarray]:
        if torch is None:
            _import()
        state, kind = _split_mode(case.op, case.mode)
        if case.op == "batch_norm" and state == "training" and kind in ("forward", "steps") \
                and "running_mean" in case.inputs \
                and case.attrs.get("running_var_estimator", "unbiased") != "unbiased":
            raise Unsupported("torch stores the unbiased batch variance in running_var; the biased "
                              "estimator has no torch option")
        return self._run(case, state, kind)

    def _run(self, case, state: str, kind: str) -> dict[str, np.ndarray]:
        raise NotImplementedError


class TorchFunctional(_TorchRunner):
    """torch.nn.functional: batch_norm, layer_norm, group_norm, instance_norm, rms_norm, normalize."""

    id = "torch.functional"
    conventions = _BN
    ops = {
        "batch_norm": _BN_MODES,
        "layer_norm": _NORM_MODES,
        "group_norm": _NORM_MODES,
        "instance_norm": _NORM_MODES,
        "rms_norm": _NORM_MODES,
        "l2_normalize": _NORM_MODES,
    }

    def _run(self, case, state, kind):
        op, a, ins = case.op, case.attrs, case.inputs
        eps = float(a["eps"]) if "eps" in a else None
        if op == "batch_norm":
            return self._batch_norm(case, state, kind, float(a["eps"]))
        x_shape = ins["x"].shape
        if op == "layer_norm":
            shape = tuple(x_shape[len(x_shape) - _trailing_k(len(x_shape), a):])
            fn = lambda x, g, b: F.layer_norm(x, shape, g, b, eps)  # noqa: E731
            return _apply(case, kind, fn, "x", ("gamma", "beta"), "y")
        if op == "rms_norm":
            shape = tuple(x_shape[len(x_shape) - _trailing_k(len(x_shape), a):])
            fn = lambda x, w: F.rms_norm(x, shape, w, eps)  # noqa: E731
            return _apply(case, kind, fn, "x", ("weight",), "y")
        if op == "group_norm":
            layout = _attr(a, "layout", "channels_first")
            groups = int(a["num_groups"])
            rep = x_shape[-1 if layout == "channels_last" else 1] // groups
            per_group = _attr(a, "affine", "per_channel") == "per_group"

            def fn(x, g, b):
                if per_group:
                    g = None if g is None else g.repeat_interleave(rep)
                    b = None if b is None else b.repeat_interleave(rep)
                return _from_cf(F.group_norm(_to_cf(x, layout), groups, g, b, eps), layout)
            return _apply(case, kind, fn, "x", ("gamma", "beta"), "y")
        if op == "instance_norm":
            layout = _attr(a, "layout", "channels_first")
            fn = lambda x, g, b: _from_cf(  # noqa: E731
                F.instance_norm(_to_cf(x, layout), None, None, g, b, True, 0.1, eps), layout)
            return _apply(case, kind, fn, "x", ("gamma", "beta"), "y")
        if op == "l2_normalize":
            eps = 1e-12 if eps is None else eps
            if _attr(a, "eps_mode", "max_norm") == "none":
                eps = 0.0  # max(||x||, 0) = ||x||
            dims = tuple(int(d) % len(x_shape) for d in _attr(a, "axes", (-1,)))
            fn = lambda x: F.normalize(x, 2.0, dims, eps)  # noqa: E731
            return _apply(case, kind, fn, "x", (), "y")
        raise Unsupported(f"{self.id} has no code path for {op}")

    def _batch_norm(self, case, state, kind, eps):
        a, ins, dt = case.attrs, case.inputs, case.dtype
        layout = _attr(a, "layout", "channels_first")
        training = state == "training"
        if "running_mean" in ins and "running_var" in ins:
            # inference reads them; training updates them in place (the user's tensors change)
            conv = _owned if training else _tensor
            rm, rv = conv(ins["running_mean"], dt), conv(ins["running_var"], dt)
        else:
            rm = rv = None
        m = _bn_momentum_weight(a)
        if m is None:  # the cumulative average, as nn.BatchNorm computes it for F.batch_norm
            m = 1.0 / (int(_attr(a, "num_batches_tracked", 0)) + 1)

        def fn(x, g, b):
            return _from_cf(F.batch_norm(_to_cf(x, layout), rm, rv, g, b, training, m, eps), layout)

        extra = None
        if training and kind == "forward" and rm is not None:
            extra = lambda: {"running_mean": _numpy(rm), "running_var": _numpy(rv)}  # noqa: E731
        return _apply(case, kind, fn, "x", ("gamma", "beta"), "y", extra)

    def script(self, case) -> str:
        """Standalone code of this path for `case` (see `Runner.script`): the torch.nn.functional call."""
        return _script(self, case, _s_functional)


# --------------------------------------------------------------------------------------------------
# modules


class _ModuleCache:
    """LRU cache of constructed modules, keyed by everything their constructor fixes."""

    def __init__(self, size: int = _MODULE_CACHE_SIZE):
        self.size = size
        self.d: OrderedDict = OrderedDict()

    def get(self, key, make: Callable):
        m = self.d.get(key)
        if m is None:
            m = make()
            self.d[key] = m
            if len(self.d) > self.size:
                self.d.popitem(last=False)
        else:
            self.d.move_to_end(key)
        return m


class TorchModule(_TorchRunner):
    """torch.nn modules: BatchNorm1d/2d/3d, LayerNorm, GroupNorm, InstanceNorm1d/2d/3d, RMSNorm."""

    id = "torch.module"
    conventions = replace(_BN, sources=SOURCES["batch_norm"][:1])
    ops = {
        "batch_norm": _BN_MODES + ("training_steps",),
        "layer_norm": _NORM_MODES,
        "group_norm": _NORM_MODES,
        "instance_norm": _NORM_MODES,
        "rms_norm": _NORM_MODES,
    }

    def __init__(self):
        self._cache = _ModuleCache()

    def _module(self, key, make):
        with framework_call():
            return self._cache.get(key, make)

    def _run(self, case, state, kind):
        op, a, ins, dt = case.op, case.attrs, case.inputs, case.dtype
        tdt = _TDTYPE[dt]
        nn = torch.nn
        has_g, has_b = "gamma" in ins, "beta" in ins
        layout = _attr(a, "layout", "channels_first")
        eps = float(a["eps"])
        x_name = "xs" if kind == "steps" else "x"
        shape = ins[x_name].shape[1:] if kind == "steps" else ins["x"].shape
        ndim = len(shape)
        binds: list[tuple[str, str, Callable | None]] = []  # (case input, module param, transform)
        ones: list[str] = []                                 # module params fixed at one
        if op in ("batch_norm", "instance_norm", "group_norm"):
            c = shape[-1 if layout == "channels_last" else 1] if ndim >= 2 else 0
            if has_g:
                binds.append(("gamma", "weight", None))
            elif has_b:
                ones.append("weight")  # beta without gamma: the module's weight stays at one
            if has_b:
                binds.append(("beta", "bias", None))
            affine, bias = has_g or has_b, has_b
        if op == "batch_norm":
            cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(ndim)
            if cls is None:
                raise Unsupported(f"torch has BatchNorm1d/2d/3d for inputs of rank 2 to 5; x has rank {ndim}")
            track = state == "inference" or "running_mean" in ins
            m = self._module((cls, c, affine, bias, track, dt), lambda: cls(
                c, eps=eps, affine=affine, track_running_stats=track, bias=bias, dtype=tdt))
            m.eps = eps
            m.momentum = _bn_momentum_weight(a)
            m.train(state == "training")
            if track:
                with torch.no_grad():
                    m.running_mean.copy_(_tensor(ins["running_mean"], dt))
                    m.running_var.copy_(_tensor(ins["running_var"], dt))
                    m.num_batches_tracked.fill_(int(_attr(a, "num_batches_tracked", 0)))
            if kind == "steps":
                return self._steps(case, m, layout, binds, ones)
            buffers = track and state == "training"
            extra = None
            if buffers and kind == "forward":
                extra = lambda: {"running_mean": _numpy(m.running_mean.clone()),  # noqa: E731
                                 "running_var": _numpy(m.running_var.clone())}
            return self._call(case, kind, m, layout, binds, ones, ("gamma", "beta"), extra,
                              clone_buffers=buffers)
        if op == "instance_norm":
            cls = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}.get(ndim)
            if cls is None:
                raise Unsupported(f"torch has InstanceNorm1d/2d/3d for batched inputs of rank 3 to 5; "
                                  f"x has rank {ndim}")
            m = self._module((cls, c, affine, bias, dt), lambda: cls(
                c, eps=eps, affine=affine, track_running_stats=False, bias=bias, dtype=tdt))
            m.eps = eps
            return self._call(case, kind, m, layout, binds, ones, ("gamma", "beta"))
        if op == "group_norm":
            groups = int(a["num_groups"])
            if _attr(a, "affine", "per_channel") == "per_group":
                rep = c // groups
                binds = [(n, p, lambda t: t.repeat_interleave(rep)) for n, p, _ in binds]
            m = self._module((nn.GroupNorm, groups, c, affine, bias, dt), lambda: nn.GroupNorm(
                groups, c, eps=eps, affine=affine, bias=bias, dtype=tdt))
            m.eps = eps
            return self._call(case, kind, m, layout, binds, ones, ("gamma", "beta"))
        k = _trailing_k(ndim, a)
        nshape = tuple(shape[ndim - k:])
        if op == "layer_norm":
            if has_g:
                binds.append(("gamma", "weight", None))
            elif has_b:
                ones.append("weight")
            if has_b:
                binds.append(("beta", "bias", None))
            affine = has_g or has_b
            m = self._module((nn.LayerNorm, nshape, affine, has_b, dt), lambda: nn.LayerNorm(
                nshape, eps=eps, elementwise_affine=affine, bias=has_b, dtype=tdt))
            m.eps = eps
            return self._call(case, kind, m, "channels_first", binds, ones, ("gamma", "beta"))
        if op == "rms_norm":
            has_w = "weight" in ins
            if has_w:
                binds.append(("weight", "weight", None))
            m = self._module((nn.RMSNorm, nshape, has_w, dt), lambda: nn.RMSNorm(
                nshape, eps=eps, elementwise_affine=has_w, dtype=tdt))
            m.eps = eps
            return self._call(case, kind, m, "channels_first", binds, ones, ("weight",))
        raise Unsupported(f"{self.id} has no code path for {op}")

    @staticmethod
    def _load(case, m, binds, ones) -> None:
        """Copy the case's parameters into the cached module."""
        with torch.no_grad():
            for name, pname, tr in binds:
                t = _tensor(case.inputs[name], case.dtype)
                getattr(m, pname).copy_(t if tr is None else tr(t))
            for pname in ones:
                getattr(m, pname).fill_(1)

    def _call(self, case, kind, m, layout, binds, ones, p_names, extra=None, clone_buffers=False):
        ins, dt = case.inputs, case.dtype
        with framework_call():
            self._load(case, m, binds, ones)
        direct = all(tr is None for _, _, tr in binds)
        if kind == "forward" or (kind == "vjp" and direct):
            x = _tensor(ins["x"], dt)
            if kind == "forward":
                with framework_call(), torch.no_grad():
                    y = _from_cf(m(_to_cf(x, layout)), layout)
                out = {"y": _numpy(y)}
                if extra is not None:
                    out.update(extra())
                return out
            # VJP as a user computes it: y = m(x); y.backward(dy); x.grad, m.weight.grad, ...
            params = [getattr(m, p) for n, p, _ in binds]
            names = ["dx"] + ["d" + n for n, _, _ in binds]
            with framework_call():
                x.requires_grad_(True)
                y = _from_cf(m(_to_cf(x, layout)), layout)
                grads = torch.autograd.grad(y, [x] + params, grad_outputs=_tensor(ins["dy"], dt))
            return {k: _numpy(g) for k, g in zip(names, grads)}
        # JVP (and VJP through a parameter translation): torch.func.functional_call with the case's
        # parameters as inputs. A training BatchNorm that tracks statistics gets fresh copies of its
        # buffers inside the transformed function (torch.func refuses in-place updates of captured
        # tensors; this is torch.func's documented workaround).
        binding = {n: (p, tr) for n, p, tr in binds}
        buffers = {}
        if clone_buffers:
            buffers = {k: getattr(m, k) for k in ("running_mean", "running_var", "num_batches_tracked")}

        def fn(x, *ps):
            override = {k: v.clone() for k, v in buffers.items()}
            for n, t in zip(p_names, ps):
                if t is not None and n in binding:
                    p, tr = binding[n]
                    override[p] = t if tr is None else tr(t)
            return _from_cf(torch.func.functional_call(m, override, (_to_cf(x, layout),)), layout)
        return _apply(case, kind, fn, "x", p_names, "y")

    def _steps(self, case, m, layout, binds, ones):
        """K training steps of one module; y and the running statistics after each step, stacked."""
        ins, dt = case.inputs, case.dtype
        xs = _tensor(ins["xs"], dt)
        ys, rms, rvs = [], [], []
        with framework_call(), torch.no_grad():
            self._load(case, m, binds, ones)
            for k in range(xs.shape[0]):
                ys.append(_from_cf(m(_to_cf(xs[k], layout)), layout))
                rms.append(m.running_mean.clone())
                rvs.append(m.running_var.clone())
            y, rm, rv = torch.stack(ys), torch.stack(rms), torch.stack(rvs)
        return {"y": _numpy(y), "running_mean": _numpy(rm), "running_var": _numpy(rv)}

    def script(self, case) -> str:
        """Standalone code of this path for `case` (see `Runner.script`): the module built, loaded and called."""
        return _script(self, case, _s_module)


# --------------------------------------------------------------------------------------------------
# weight norm


class _WeightOf:
    """Factory of a tiny nn.Module whose forward returns the parametrized weight of its child, so
    that torch.func.functional_call can substitute original0/original1 (built lazily: needs torch)."""

    cls = None

    @classmethod
    def make(cls, inner):
        if cls.cls is None:
            class WeightOf(torch.nn.Module):
                def __init__(self, inner):
                    super().__init__()
                    self.inner = inner

                def forward(self):
                    return self.inner.weight
            cls.cls = WeightOf
        return cls.cls(inner)


class TorchWeightNorm(_TorchRunner):
    """torch.nn.utils.parametrizations.weight_norm on nn.Linear (2-D v) / nn.Conv1d/2d/3d."""

    id = "torch.weight_norm"
    conventions = _PER_OP["weight_norm"]
    ops = {"weight_norm": _NORM_MODES}

    def __init__(self):
        self._cache = _ModuleCache()

    def supports(self, op, mode, dtype, attrs):
        reason = super().supports(op, mode, dtype, attrs)
        if reason is not None:
            return reason
        em, eps = attrs.get("eps_mode", "none"), float(attrs.get("eps", 0.0))
        if em != "none" and eps != 0.0:
            return (f"torch weight_norm has no epsilon (w = g * v / ||v||); eps_mode {em!r} with "
                    f"eps={eps!r} has no torch form")
        return None

    def _run(self, case, state, kind):
        ins, dt, a = case.inputs, case.dtype, case.attrs
        v_shape = ins["v"].shape
        ndim = len(v_shape)
        if not 2 <= ndim <= 5:
            raise Unsupported(
                f"torch weight_norm parametrizes a layer's weight: nn.Linear (2-D) or nn.Conv1d/2d/3d "
                f"(3- to 5-D); v has rank {ndim} (and on a 1-D weight, dim=0 normalizes each element "
                f"by itself, not the oracle's whole-vector norm)")
        # The oracle's dim as a non-negative index: torch reads dim=-1 as 'the whole tensor'.
        dim = int(_attr(a, "dim", 0)) % ndim
        g_shape = tuple(v_shape[i] if i == dim else 1 for i in range(ndim))
        key = (v_shape, dim, dt)

        def make():
            nn = torch.nn
            if ndim == 2:
                layer = nn.Linear(v_shape[1], v_shape[0], bias=False, dtype=_TDTYPE[dt])
            else:
                conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[ndim]
                layer = conv(v_shape[1], v_shape[0], tuple(v_shape[2:]), bias=False, dtype=_TDTYPE[dt])
            layer = torch.nn.utils.parametrizations.weight_norm(layer, name="weight", dim=dim)
            return layer, _WeightOf.make(layer)
        with framework_call():
            layer, wrapper = self._cache.get(key, make)
        pw = layer.parametrizations.weight
        v, g = _tensor(ins["v"], dt), _tensor(ins["g"], dt).reshape(g_shape)
        with framework_call(), torch.no_grad():
            pw.original0.copy_(g)
            pw.original1.copy_(v)
        if kind == "forward":
            with framework_call(), torch.no_grad():
                w = layer.weight
            return {"w": _numpy(w)}
        if kind == "vjp":
            with framework_call():
                w = layer.weight
                dv, dg = torch.autograd.grad(w, [pw.original1, pw.original0],
                                             grad_outputs=_tensor(ins["dw"], dt))
            return {"dv": _numpy(dv), "dg": _numpy(dg).reshape(ins["g"].shape)}
        o0, o1 = "inner.parametrizations.weight.original0", "inner.parametrizations.weight.original1"
        primals, tangents = [v], [_tensor(ins["tv"], dt)]
        if "tg" in ins:
            primals.append(g)
            tangents.append(_tensor(ins["tg"], dt).reshape(g_shape))

        def fn(vv, gg=g):
            return torch.func.functional_call(wrapper, {o0: gg, o1: vv}, ())
        with framework_call():
            _, tw = torch.func.jvp(fn, tuple(primals), tuple(tangents))
        return {"tw": _numpy(tw)}

    def script(self, case) -> str:
        """Standalone code of this path for `case` (see `Runner.script`): the parametrized layer."""
        return _script(self, case, _s_weight_norm)


# --------------------------------------------------------------------------------------------------
# native ops with saved statistics


class TorchNative(_TorchRunner):
    """torch.native_batch_norm / native_layer_norm / native_group_norm (outputs + saved stats)."""

    id = "torch.native"
    # The native ops have no defaults (every argument is required) and no batch-size check: a
    # training batch with one value per channel normalizes to beta, and the unbiased running
    # variance becomes NaN (n/(n-1) at n=1).
    conventions = replace(_BN, default_momentum=None, default_eps=None, batch_of_one="normalizes",
                          min_eps=0.0, sources=SOURCES["batch_norm"][:1],
                          notes="momentum=None is not accepted (pass the cumulative weight). "
                                "native_batch_norm returns save_mean and save_invstd (= rstd) in "
                                "training, nothing in inference; it has no argument defaults and "
                                "no checks: eps = 0 is accepted in training (a zero-variance "
                                "channel then gets invstd 0, y = beta), and a batch of one gives "
                                "y = beta and a NaN running_var (unbiased n/(n-1) at n = 1).")
    ops = {"batch_norm": ("inference", "training"), "layer_norm": ("forward",),
           "group_norm": ("forward",)}

    def conventions_for(self, op: str, attrs=None) -> Conventions:
        if op == "batch_norm":
            return self.conventions
        # native_layer_norm / native_group_norm take eps as a required argument
        return replace(_PER_OP[op], default_eps=None)

    def supports(self, op, mode, dtype, attrs):
        reason = super().supports(op, mode, dtype, attrs)
        if reason is None and op == "group_norm" and attrs.get("affine", "per_channel") == "per_group":
            return "torch.native_group_norm takes per-channel weight and bias"
        return reason

    def _run(self, case, state, kind):
        op, a, ins, dt = case.op, case.attrs, case.inputs, case.dtype
        eps = float(a["eps"])
        x = _tensor(ins["x"], dt)
        g = _tensor(ins["gamma"], dt) if "gamma" in ins else None
        b = _tensor(ins["beta"], dt) if "beta" in ins else None
        layout = _attr(a, "layout", "channels_first")
        if op == "batch_norm":
            training = state == "training"
            rm = _owned(ins["running_mean"], dt) if "running_mean" in ins else None
            rv = _owned(ins["running_var"], dt) if "running_var" in ins else None
            m = _bn_momentum_weight(a)
            if m is None:
                m = 1.0 / (int(_attr(a, "num_batches_tracked", 0)) + 1)
            with framework_call():
                y, mean, invstd = torch.native_batch_norm(_to_cf(x, layout), g, b, rm, rv, training, m, eps)
            out = {"y": _numpy(_from_cf(y, layout))}
            if training:
                out.update(mean=_numpy(mean), rstd=_numpy(invstd))
                if rm is not None:
                    out.update(running_mean=_numpy(rm), running_var=_numpy(rv))
            return out
        if op == "layer_norm":
            k = _trailing_k(x.ndim, a)
            with framework_call():
                y, mean, rstd = torch.native_layer_norm(x, tuple(x.shape[x.ndim - k:]), g, b, eps)
            lead = tuple(x.shape[: x.ndim - k])
            return {"y": _numpy(y), "mean": _numpy(mean).reshape(lead), "rstd": _numpy(rstd).reshape(lead)}
        if op == "group_norm":
            xc = _to_cf(x, layout)
            # native_group_norm requires its input contiguous in the suggested memory format (as
            # at::group_norm, behind F.group_norm, arranges); a permuted 3-D tensor is not.
            fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(xc.ndim)
            if not (xc.is_contiguous() or (fmt is not None and xc.is_contiguous(memory_format=fmt))):
                xc = xc.contiguous()
            n, c = xc.shape[0], xc.shape[1]
            hxw = int(np.prod(xc.shape[2:], dtype=np.int64))
            with framework_call():
                y, mean, rstd = torch.native_group_norm(xc, g, b, n, c, hxw, int(a["num_groups"]), eps)
            return {"y": _numpy(_from_cf(y, layout)), "mean": _numpy(mean), "rstd": _numpy(rstd)}
        raise Unsupported(f"{self.id} has no code path for {op}")

    def script(self, case) -> str:
        """Standalone code of this path for `case` (see `Runner.script`): the native op."""
        return _script(self, case, _s_native)


def runners() -> list[Runner]:
    """The PyTorch runners (building them does not import torch)."""
    return [TorchFunctional(), TorchModule(), TorchWeightNorm(), TorchNative()]


# --------------------------------------------------------------------------------------------------
# standalone scripts (`Runner.script`, used by fuzz.scripts): the code a torch user writes for a case


def _script(runner: _TorchRunner, case, body: Callable[[Any, str, str, list[str]], None]) -> str:
    """The common frame of a torch script: imports, single-threaded torch, `to_numpy`; `body(case,
    state, kind, lines)` appends the code that sets `outputs`."""
    reason = runner.supports(case.op, case.mode, case.dtype, case.attrs)
    if reason is not None:
        raise Unsupported(reason)
    state, kind = _split_mode(case.op, case.mode)
    if case.op == "batch_norm" and state == "training" and kind in ("forward", "steps") \
            and "running_mean" in case.inputs and case.attrs.get("running_var_estimator", "unbiased") != "unbiased":
        raise Unsupported("torch stores the unbiased batch variance in running_var; the biased "
                          "estimator has no torch option")
    lines = ["import torch", "import torch.nn.functional as F", "",
             "torch.set_num_threads(1)  # normfuzz runs torch single-threaded", "", "",
             "def to_numpy(t):",
             '    """A result as a numpy array (bfloat16 as float32, exactly)."""',
             "    t = t.detach()",
             "    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()", "", ""]
    if case.dtype == "bfloat16":
        lines.append("# A bfloat16 case: the inputs hold bfloat16 values in float32 arrays; .to() is exact.")
    body(case, state, kind, lines)
    return "\n".join(lines) + "\n"


def _s_tensor(name: str, dtype: str, *, owned: bool = False) -> str:
    """`name = <tensor of inputs[name]>`: zero-copy, a copy for tensors torch updates in place."""
    if dtype == "bfloat16":
        return f'{name} = torch.from_numpy(inputs["{name}"]).to(torch.bfloat16)'
    return f'{name} = torch.from_numpy(inputs["{name}"])' + (".clone()  # torch updates it in place" if owned else "")


def _s_perm(ndim: int, layout: str) -> tuple[str, str]:
    """Suffixes taking channels-last data to torch's (N, C, *spatial) view and back ('' if none)."""
    if layout == "channels_first" or ndim < 3:
        return "", ""
    to = (0, ndim - 1) + tuple(range(1, ndim - 1))
    back = (0,) + tuple(range(2, ndim)) + (1,)
    return f".permute{to}", f".permute{back}"


def _s_layout_note(ndim: int, layout: str, lines: list[str]) -> None:
    if _s_perm(ndim, layout)[0]:
        lines.append("# Channels-last data (N, *spatial, C): permute() gives torch's logical (N, C, *spatial)")
        lines.append("# view with channels-last strides, and the result is permuted back.")


def _s_apply(case, kind: str, call: Callable[[dict[str, str]], str], x_name: str, p_names: tuple[str, ...],
             y_name: str, lines: list[str], extra: list[str] | None = None) -> None:
    """Forward, VJP (torch.autograd.grad) or JVP (torch.func.jvp) of `y = call(names)`, as the
    runner's `_apply` does; `call` maps each argument (x and p_names) to the expression it becomes
    (a variable name, or None for an absent parameter). `extra`: output lines after a forward."""
    ins, dt = case.inputs, case.dtype
    present = [p for p in p_names if p in ins]
    for n in [x_name] + present:
        if _s_tensor(n, dt) not in lines:  # not already made for the module's parameters
            lines.append(_s_tensor(n, dt))
    args = {x_name: x_name, **{p: (p if p in ins else "None") for p in p_names}}
    if kind == "forward":
        lines.append(f"{y_name} = {call(args)}")
        lines.append(f'outputs = {{"{y_name}": to_numpy({y_name})}}')
        lines.extend(extra or [])
        return
    if kind == "vjp":
        leaves = [x_name] + present
        lines.append(_s_tensor("d" + y_name, dt))
        lines.extend(f"{n}.requires_grad_(True)" for n in leaves)
        lines.append(f"{y_name} = {call(args)}")
        grads = ", ".join("d" + n for n in leaves)
        lines.append(f"{grads}, = torch.autograd.grad({y_name}, [{', '.join(leaves)}], grad_outputs=d{y_name})"
                     if len(leaves) == 1 else
                     f"{grads} = torch.autograd.grad({y_name}, [{', '.join(leaves)}], grad_outputs=d{y_name})")
        lines.append("outputs = {" + ", ".join(f'"d{n}": to_numpy(d{n})' for n in leaves) + "}")
        return
    moving = [x_name] + [p for p in present if "t" + p in ins]  # primals with a tangent
    for n in moving:
        lines.append(_s_tensor("t" + n, dt))
    lines += ["", "", f"def f({', '.join(moving)}):", f"    return {call(args)}", "", ""]
    lines.append(f"_, t{y_name} = torch.func.jvp(f, {_s_tuple(moving)}, {_s_tuple(['t' + n for n in moving])})")
    lines.append(f'outputs = {{"t{y_name}": to_numpy(t{y_name})}}')


def _s_tuple(names: list[str]) -> str:
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


def _s_float(v) -> str:
    return repr(float(v))


def _s_momentum(a: Mapping[str, Any], lines: list[str], *, module: bool = False) -> str:
    """torch's momentum (weight of the batch statistic) as a literal, with a comment on how the
    case's convention became it (a module takes momentum=None itself: the cumulative average)."""
    m, on = a.get("momentum", 0.1), a.get("momentum_on", "batch")
    w = _bn_momentum_weight(a)
    if m is None and module:
        return "None"
    if m is None:
        nbt = int(_attr(a, "num_batches_tracked", 0))
        lines.append(f"# momentum=None (cumulative average) after num_batches_tracked={nbt}: weight 1/{nbt + 1}")
        return _s_float(1.0 / (nbt + 1))
    if on != "batch":
        lines.append(f"# the case's momentum {m!r} weights the running statistic; torch's weights the batch: 1 - {m!r}")
    return _s_float(w)


def _s_functional(case, state, kind, lines):
    op, a, ins, dt = case.op, case.attrs, case.inputs, case.dtype
    x_shape = ins["x"].shape
    ndim = len(x_shape)
    layout = _attr(a, "layout", "channels_first")
    to, back = _s_perm(ndim, layout)
    if op == "batch_norm":
        training = state == "training"
        eps = _s_float(a["eps"])
        _s_layout_note(ndim, layout, lines)
        m = _s_momentum(a, lines)
        stats = "running_mean" in ins and "running_var" in ins
        if stats:
            lines.append(_s_tensor("running_mean", dt, owned=training))
            lines.append(_s_tensor("running_var", dt, owned=training))
        rm, rv = ("running_mean", "running_var") if stats else ("None", "None")
        call = lambda g: (f"F.batch_norm(x{to}, {rm}, {rv}, weight={g['gamma']}, bias={g['beta']}, "  # noqa: E731
                          f"training={training}, momentum={m}, eps={eps}){back}")
        extra = None
        if training and kind == "forward" and stats:
            extra = ['outputs["running_mean"] = to_numpy(running_mean)  # updated in place by F.batch_norm',
                     'outputs["running_var"] = to_numpy(running_var)']
        _s_apply(case, kind, call, "x", ("gamma", "beta"), "y", lines, extra)
        return
    eps = _s_float(a["eps"]) if "eps" in a else None
    if op in ("layer_norm", "rms_norm"):
        shape = tuple(x_shape[ndim - _trailing_k(ndim, a):])
        if op == "layer_norm":
            call = lambda g: f"F.layer_norm(x, {shape}, weight={g['gamma']}, bias={g['beta']}, eps={eps})"  # noqa: E731
            _s_apply(case, kind, call, "x", ("gamma", "beta"), "y", lines)
        else:
            call = lambda g: f"F.rms_norm(x, {shape}, weight={g['weight']}, eps={eps})"  # noqa: E731
            _s_apply(case, kind, call, "x", ("weight",), "y", lines)
        return
    if op == "group_norm":
        groups = int(a["num_groups"])
        rep = x_shape[-1 if layout == "channels_last" else 1] // groups
        _s_layout_note(ndim, layout, lines)
        per_group = _attr(a, "affine", "per_channel") == "per_group"
        if per_group:
            lines.append(f"# Per-group gamma/beta ({groups},) as torch's per-channel ones: each repeated over "
                         f"its group's {rep} channels.")

        def call(g):
            p = {k: (f"{g[k]}.repeat_interleave({rep})" if per_group and g[k] != "None" else g[k])
                 for k in ("gamma", "beta")}
            return f"F.group_norm(x{to}, {groups}, weight={p['gamma']}, bias={p['beta']}, eps={eps}){back}"
        _s_apply(case, kind, call, "x", ("gamma", "beta"), "y", lines)
        return
    if op == "instance_norm":
        _s_layout_note(ndim, layout, lines)
        call = lambda g: (f"F.instance_norm(x{to}, None, None, weight={g['gamma']}, bias={g['beta']}, "  # noqa: E731
                          f"use_input_stats=True, momentum=0.1, eps={eps}){back}")
        _s_apply(case, kind, call, "x", ("gamma", "beta"), "y", lines)
        return
    if op == "l2_normalize":
        e = 1e-12 if eps is None else float(a["eps"])
        if _attr(a, "eps_mode", "max_norm") == "none":
            lines.append("# eps_mode 'none' (no epsilon) is normalize's max(||x||, eps) with eps = 0")
            e = 0.0
        dims = tuple(int(d) % ndim for d in _attr(a, "axes", (-1,)))
        call = lambda g: f"F.normalize(x, p=2.0, dim={dims}, eps={_s_float(e)})"  # noqa: E731
        _s_apply(case, kind, call, "x", (), "y", lines)
        return
    raise Unsupported(f"torch.functional has no code path for {op}")


def _s_module(case, state, kind, lines):
    """nn modules, as `TorchModule._run` builds, loads and calls them."""
    op, a, ins, dt = case.op, case.attrs, case.inputs, case.dtype
    tdt = f"torch.{dt}"
    has_g, has_b = "gamma" in ins, "beta" in ins
    layout = _attr(a, "layout", "channels_first")
    eps = _s_float(a["eps"])
    x_name = "xs" if kind == "steps" else "x"
    shape = ins[x_name].shape[1:] if kind == "steps" else ins["x"].shape
    ndim = len(shape)
    binds: list[tuple[str, str, str]] = []  # (case input, module parameter, expression suffix)
    ones: list[str] = []
    buffers = False
    if op in ("batch_norm", "instance_norm", "group_norm"):
        c = shape[-1 if layout == "channels_last" else 1] if ndim >= 2 else 0
        if has_g:
            binds.append(("gamma", "weight", ""))
        elif has_b:
            ones.append("weight")
        if has_b:
            binds.append(("beta", "bias", ""))
        affine, bias = has_g or has_b, has_b
        _s_layout_note(ndim, layout, lines)
    if op == "batch_norm":
        cls = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}.get(ndim)
        if cls is None:
            raise Unsupported(f"torch has BatchNorm1d/2d/3d for inputs of rank 2 to 5; x has rank {ndim}")
        track = state == "inference" or "running_mean" in ins
        m = _s_momentum(a, lines, module=True) if state == "training" else \
            ("None" if _bn_momentum_weight(a) is None else _s_float(_bn_momentum_weight(a)))
        lines.append(f"module = torch.nn.{cls}({c}, eps={eps}, momentum={m}, affine={affine}, "
                     f"track_running_stats={track}, bias={bias}, dtype={tdt})")
        load = [(n, p, s) for n, p, s in binds]
        if track:
            load += [("running_mean", "running_mean", ""), ("running_var", "running_var", "")]
        buffers = track and state == "training"
        nbt = int(_attr(a, "num_batches_tracked", 0)) if track else None
        _s_load(case, load, ones, lines, nbt)
        lines.append("module.train()" if state == "training" else "module.eval()")
        if kind == "steps":
            to, back = _s_perm(ndim, layout)
            lines += [_s_tensor("xs", dt), "ys, running_means, running_vars = [], [], []",
                      "with torch.no_grad():",
                      "    for k in range(xs.shape[0]):  # one training step per batch",
                      f"        ys.append(module(xs[k]{to}){back})",
                      "        running_means.append(module.running_mean.clone())",
                      "        running_vars.append(module.running_var.clone())",
                      'outputs = {"y": to_numpy(torch.stack(ys)), "running_mean": to_numpy(torch.stack(running_means)),',
                      '           "running_var": to_numpy(torch.stack(running_vars))}']
            return
        extra = None
        if buffers and kind == "forward":
            extra = ['outputs["running_mean"] = to_numpy(module.running_mean)  # updated by the training step',
                     'outputs["running_var"] = to_numpy(module.running_var)']
        _s_call(case, kind, layout, ndim, binds, ("gamma", "beta"), lines, extra, buffers)
        return
    if op == "instance_norm":
        cls = {3: "InstanceNorm1d", 4: "InstanceNorm2d", 5: "InstanceNorm3d"}.get(ndim)
        if cls is None:
            raise Unsupported(f"torch has InstanceNorm1d/2d/3d for batched inputs of rank 3 to 5; x has rank {ndim}")
        lines.append(f"module = torch.nn.{cls}({c}, eps={eps}, affine={affine}, track_running_stats=False, "
                     f"bias={bias}, dtype={tdt})")
        _s_load(case, binds, ones, lines)
        _s_call(case, kind, layout, ndim, binds, ("gamma", "beta"), lines)
        return
    if op == "group_norm":
        groups = int(a["num_groups"])
        if _attr(a, "affine", "per_channel") == "per_group":
            rep = c // groups
            lines.append(f"# Per-group gamma/beta ({groups},) as the module's per-channel ones: each repeated "
                         f"over its group's {rep} channels.")
            binds = [(n, p, f".repeat_interleave({rep})") for n, p, _ in binds]
        lines.append(f"module = torch.nn.GroupNorm({groups}, {c}, eps={eps}, affine={affine}, bias={bias}, dtype={tdt})")
        _s_load(case, binds, ones, lines)
        _s_call(case, kind, layout, ndim, binds, ("gamma", "beta"), lines)
        return
    k = _trailing_k(ndim, a)
    nshape = tuple(shape[ndim - k:])
    if op == "layer_norm":
        if has_g:
            binds.append(("gamma", "weight", ""))
        elif has_b:
            ones.append("weight")
        if has_b:
            binds.append(("beta", "bias", ""))
        lines.append(f"module = torch.nn.LayerNorm({nshape}, eps={eps}, elementwise_affine={has_g or has_b}, "
                     f"bias={has_b}, dtype={tdt})")
        _s_load(case, binds, ones, lines)
        _s_call(case, kind, "channels_first", ndim, binds, ("gamma", "beta"), lines)
        return
    if op == "rms_norm":
        has_w = "weight" in ins
        if has_w:
            binds.append(("weight", "weight", ""))
        lines.append(f"module = torch.nn.RMSNorm({nshape}, eps={eps}, elementwise_affine={has_w}, dtype={tdt})")
        _s_load(case, binds, ones, lines)
        _s_call(case, kind, "channels_first", ndim, binds, ("weight",), lines)
        return
    raise Unsupported(f"torch.module has no code path for {op}")


def _s_load(case, binds, ones, lines, num_batches_tracked: int | None = None) -> None:
    """Copy the case's parameters (and running statistics) into the module."""
    for n, _, _ in binds:
        lines.append(_s_tensor(n, case.dtype))
    lines.append("with torch.no_grad():")
    for n, p, suffix in binds:
        lines.append(f"    module.{p}.copy_({n}{suffix})")
    for p in ones:
        lines.append(f"    module.{p}.fill_(1)  # beta without gamma: the module's weight stays one")
    if num_batches_tracked is not None:
        lines.append(f"    module.num_batches_tracked.fill_({num_batches_tracked})")
    if len(lines) and lines[-1] == "with torch.no_grad():":
        lines.pop()


def _s_call(case, kind, layout, ndim, binds, p_names, lines, extra=None, buffers=False) -> None:
    """A module call as `TorchModule._call` makes it: forward under no_grad; the VJP through the
    module's own parameters; the JVP (and a VJP through a parameter translation) by
    torch.func.functional_call with the case's parameters."""
    ins, dt = case.inputs, case.dtype
    to, back = _s_perm(ndim, layout)
    direct = all(s == "" for _, _, s in binds)
    if kind == "forward":
        lines.append(_s_tensor("x", dt))
        lines.append("with torch.no_grad():")
        lines.append(f"    y = module(x{to}){back}")
        lines.append('outputs = {"y": to_numpy(y)}')
        lines.extend(extra or [])
        return
    if kind == "vjp" and direct:
        lines.append(_s_tensor("x", dt))
        lines.append(_s_tensor("dy", dt))
        lines.append("x.requires_grad_(True)")
        lines.append(f"y = module(x{to}){back}")
        names = ["dx"] + ["d" + n for n, _, _ in binds]
        leaves = ["x"] + [f"module.{p}" for _, p, _ in binds]
        lines.append(f"{', '.join(names)}{',' if len(names) == 1 else ''} = torch.autograd.grad("
                     f"y, [{', '.join(leaves)}], grad_outputs=dy)")
        lines.append("outputs = {" + ", ".join(f'"{n}": to_numpy({n})' for n in names) + "}")
        return
    bound = {n: (p, s) for n, p, s in binds}
    lines += ["", "", "def run_module(x, **params):"]
    if buffers:
        lines += ['    """module(x) with these parameters (torch.func.functional_call); torch.func cannot update',
                  '    captured buffers in place, so each call gets fresh copies of the running statistics."""',
                  "    params.update({name: b.clone() for name, b in module.named_buffers()})"]
    else:
        lines.append('    """module(x) with these parameters (torch.func.functional_call)."""')
    lines += [f"    return torch.func.functional_call(module, params, (x{to},)){back}", "", ""]

    def call(g):
        kw = [f"{bound[n][0]}={g[n]}{bound[n][1]}" for n in p_names if n in bound and g[n] != "None"]
        return f"run_module({', '.join(['x'] + kw)})"
    _s_apply(case, kind, call, "x", p_names, "y", lines)


def _s_weight_norm(case, state, kind, lines):
    """torch.nn.utils.parametrizations.weight_norm on nn.Linear / nn.Conv1d/2d/3d (TorchWeightNorm)."""
    ins, dt, a = case.inputs, case.dtype, case.attrs
    v_shape = ins["v"].shape
    ndim = len(v_shape)
    if not 2 <= ndim <= 5:
        raise Unsupported(f"torch weight_norm parametrizes an nn.Linear (2-D) or nn.Conv1d/2d/3d (3- to 5-D) "
                          f"weight; v has rank {ndim}")
    dim = int(_attr(a, "dim", 0)) % ndim
    g_shape = tuple(v_shape[i] if i == dim else 1 for i in range(ndim))
    if ndim == 2:
        lines.append(f"layer = torch.nn.Linear({v_shape[1]}, {v_shape[0]}, bias=False, dtype=torch.{dt})")
    else:
        conv = {3: "Conv1d", 4: "Conv2d", 5: "Conv3d"}[ndim]
        lines.append(f"layer = torch.nn.{conv}({v_shape[1]}, {v_shape[0]}, {tuple(v_shape[2:])}, bias=False, "
                     f"dtype=torch.{dt})")
    lines.append(f'layer = torch.nn.utils.parametrizations.weight_norm(layer, name="weight", dim={dim})')
    lines.append("pw = layer.parametrizations.weight  # original0 = g, original1 = v")
    lines.append(_s_tensor("v", dt))
    lines.append(_s_tensor("g", dt) + f".reshape({g_shape})")
    lines += ["with torch.no_grad():", "    pw.original0.copy_(g)", "    pw.original1.copy_(v)"]
    if kind == "forward":
        lines += ["with torch.no_grad():", "    w = layer.weight", 'outputs = {"w": to_numpy(w)}']
        return
    if kind == "vjp":
        lines += [_s_tensor("dw", dt), "w = layer.weight",
                  "dv, dg = torch.autograd.grad(w, [pw.original1, pw.original0], grad_outputs=dw)",
                  f'outputs = {{"dv": to_numpy(dv), "dg": to_numpy(dg).reshape({ins["g"].shape})}}']
        return
    lines += ["", "", "class WeightOf(torch.nn.Module):",
              '    """Returns the parametrized weight of `inner`, so functional_call can substitute g and v."""',
              "", "    def __init__(self, inner):", "        super().__init__()", "        self.inner = inner", "",
              "    def forward(self):", "        return self.inner.weight", "", "",
              "wrapper = WeightOf(layer)",
              _s_tensor("tv", dt)]
    has_tg = "tg" in ins
    if has_tg:
        lines.append(_s_tensor("tg", dt) + f".reshape({g_shape})")
    o0, o1 = "inner.parametrizations.weight.original0", "inner.parametrizations.weight.original1"
    lines += ["", "", f"def f(v{', g' if has_tg else ''}):",
              f'    return torch.func.functional_call(wrapper, {{"{o0}": g, "{o1}": v}}, ())', "", "",
              f"_, tw = torch.func.jvp(f, (v{', g' if has_tg else ''},), (tv{', tg' if has_tg else ''},))",
              'outputs = {"tw": to_numpy(tw)}']


def _s_native(case, state, kind, lines):
    """torch.native_batch_norm / native_layer_norm / native_group_norm (TorchNative)."""
    op, a, ins, dt = case.op, case.attrs, case.inputs, case.dtype
    eps = _s_float(a["eps"])
    ndim = ins["x"].ndim
    layout = _attr(a, "layout", "channels_first")
    to, back = _s_perm(ndim, layout)
    lines.append(_s_tensor("x", dt))
    g = "gamma" if "gamma" in ins else "None"
    b = "beta" if "beta" in ins else "None"
    for n in (g, b):
        if n != "None":
            lines.append(_s_tensor(n, dt))
    if op == "batch_norm":
        training = state == "training"
        _s_layout_note(ndim, layout, lines)
        stats = "running_mean" in ins
        if stats:
            lines.append(_s_tensor("running_mean", dt, owned=True))
            lines.append(_s_tensor("running_var", dt, owned=True))
        rm, rv = ("running_mean", "running_var") if stats else ("None", "None")
        m = _s_momentum(a, lines)
        lines.append(f"y, save_mean, save_invstd = torch.native_batch_norm(x{to}, {g}, {b}, {rm}, {rv}, "
                     f"{training}, {m}, {eps})")
        lines.append(f'outputs = {{"y": to_numpy(y{back})}}')
        if training:
            lines.append('outputs.update(mean=to_numpy(save_mean), rstd=to_numpy(save_invstd))')
            if stats:
                lines.append('outputs.update(running_mean=to_numpy(running_mean), running_var=to_numpy(running_var))'
                             '  # updated in place')
        return
    if op == "layer_norm":
        k = _trailing_k(ndim, a)
        shape = tuple(ins["x"].shape[ndim - k:])
        lead = tuple(ins["x"].shape[:ndim - k])
        lines.append(f"y, mean, rstd = torch.native_layer_norm(x, {shape}, {g}, {b}, {eps})")
        lines.append(f'outputs = {{"y": to_numpy(y), "mean": to_numpy(mean).reshape({lead}), '
                     f'"rstd": to_numpy(rstd).reshape({lead})}}')
        return
    if op == "group_norm":
        _s_layout_note(ndim, layout, lines)
        cf = ins["x"].shape if not to else tuple(ins["x"].shape[i] for i in (0, ndim - 1) + tuple(range(1, ndim - 1)))
        n, c = cf[0], cf[1]
        hxw = int(np.prod(cf[2:], dtype=np.int64))
        lines.append(f"xc = x{to}")
        if to and ndim not in (4, 5):
            lines.append("xc = xc.contiguous()  # native_group_norm needs a contiguous input; a permuted 3-D "
                         "tensor has no channels-last format")
        lines.append(f"y, mean, rstd = torch.native_group_norm(xc, {g}, {b}, {n}, {c}, {hxw}, "
                     f"{int(a['num_groups'])}, {eps})  # N, C, HxW, groups, eps")
        lines.append(f'outputs = {{"y": to_numpy(y{back}), "mean": to_numpy(mean), "rstd": to_numpy(rstd)}}')
        return
    raise Unsupported(f"torch.native has no code path for {op}")
