"""Evaluate a modified normalization with the oracle's own machinery, case by case.

Every op of `oracles` reduces to `_core.forward` on a working view (`oracles.registry.OPS[op]
.make_view`). A variant changes one ingredient: the `Norm` (eps convention, centering), the view
(reduction axes), the statistics function, or, for BatchNorm, the statistics that normalize and the
running-statistics update. The functions here rebuild the case-level outputs of
`oracles.evaluate(op, mode, ...)` (same names, shapes and EXT dtype) from such a modified forward.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Mapping

import numpy as np

from oracles import _core, registry
from oracles import op_batch_norm as bn
from oracles._core import accurate_stats
from oracles._view import check_eps, grads, tangent
from oracles.dtypes import EXT
from oracles.errors import require


class NotApplicable(Exception):
    """The variant does not apply to this case (a mode, dtype, attribute or missing input it needs).

    Triage skips the variant for the case; it is not an error of the case.
    """


BN_INFERENCE = ("inference", "inference_vjp", "inference_jvp")
BN_TRAINING = ("training", "training_steps", "training_vjp", "training_jvp")
BN_MODES = BN_INFERENCE + BN_TRAINING
LAYER_MODES = ("forward", "vjp", "jvp")


def attrs_of(op: str, attrs: Mapping) -> dict:
    """The case's attrs merged over the op's defaults, validated as the registry does."""
    d = registry.op_def(op)
    unknown = sorted(set(attrs) - set(d.attrs))
    require(not unknown, "attrs", unknown, f"attributes of {op} among {list(d.attrs)}")
    a = dict(d.defaults)
    a.update(attrs)
    require("eps" in a, "eps", None, f"an eps attribute for {op}")
    a["eps"] = check_eps(a["eps"])
    return a


def arrays(inputs: Mapping) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in inputs.items()}


_MEMO: contextvars.ContextVar[dict | None] = contextvars.ContextVar("bugzoo_oracle_memo", default=None)


@contextlib.contextmanager
def shared_references():
    """Within: `reference` computes the oracle's outputs once per (op, mode, input arrays, attrs,
    statistics function) and returns the same read-only arrays to every later call. Triage
    evaluates every variant of an op on one case, and most of them start from, or only validate
    with, the same correct evaluation (`validate`)."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def reference(op: str, mode: str, inputs: Mapping, attrs: Mapping, stats=accurate_stats) -> dict[str, np.ndarray]:
    """The oracle's outputs (EXT, without bounds) for a case, or the OracleInputError it raises.
    Inside `shared_references` the outputs are computed once per input arrays (by identity),
    attributes and statistics function, and are read-only."""
    memo = _MEMO.get()
    if memo is not None:
        key = (op, mode, tuple(sorted((k, id(v)) for k, v in inputs.items())), repr(sorted(attrs.items())), stats)
        if key in memo:
            return dict(memo[key][1])
    out = registry.evaluate(op, mode, inputs, attrs, "float64", stats=stats, bounds=False).outputs
    if memo is not None:
        for arr in out.values():
            arr.flags.writeable = False
        memo[key] = (tuple(inputs.values()), out)  # (the inputs pinned: their ids stay theirs)
        return dict(out)
    return out


def validate(op: str, mode: str, inputs: Mapping, attrs: Mapping, stats=accurate_stats):
    """Run the oracle on the case: raises exactly what the oracle raises for an invalid case, and
    returns its outputs (EXT) for variants that start from them (`reference`)."""
    return reference(op, mode, inputs, attrs, stats)


# --------------------------------------------------------------------------------------------------
# layer-style ops (forward / vjp / jvp)


ViewHook = Callable[[dict, dict, object], object]


def layer_outputs(op: str, mode: str, inputs: Mapping, attrs: Mapping, *,
                  norm: Callable | None = None, view: ViewHook | None = None,
                  stats=accurate_stats) -> dict[str, np.ndarray]:
    """Case-level outputs of a non-BatchNorm op with a modified Norm (`norm(old) -> new`), view
    (`view(inputs, attrs, correct_view) -> new_view`) and/or statistics function."""
    d = registry.op_def(op)
    require(mode in d.modes, "mode", repr(mode), f"one of {list(d.modes)} for {op}")
    a = attrs_of(op, attrs)
    i = arrays(inputs)
    v = d.make_view(i, a)  # validates shapes and attributes exactly as the oracle does
    if view is not None:
        v = view(i, a, v)
    if norm is not None:
        v.norm = norm(v.norm)
    f = _core.forward(v.x, v.norm, a["eps"], v.gamma, v.beta, stats=stats)
    if mode == "forward":
        out = {d.y_name: v.back(f.y)}
        for name, fld in d.stats.items():
            out[name] = v.stat(getattr(f, fld))
        return out
    if mode == "vjp":
        cot = "d" + d.y_name
        require(cot in i, "inputs", f"missing {cot!r}", f"the cotangent {cot} for {op}/vjp")
        g = grads(v, f, i[cot])
        out = {"d" + d.x_name: g["x"]}
        for vname in ("gamma", "beta"):
            if vname in g:
                out["d" + d.params[vname]] = g[vname]
        return out
    tx = "t" + d.x_name
    require(tx in i, "inputs", f"missing {tx!r}", f"the tangent {tx} for {op}/jvp")
    tg = tb = None
    if "gamma" in d.params and "gamma" in v.params:
        tg = i.get("t" + d.params["gamma"])
    if "beta" in d.params and "beta" in v.params:
        tb = i.get("t" + d.params["beta"])
    return {"t" + d.y_name: tangent(v, f, i[tx], tg, tb)}


# --------------------------------------------------------------------------------------------------
# BatchNorm


_CHAINED = contextvars.ContextVar("bugzoo_chained_step", default=False)


@contextlib.contextmanager
def chained_step(on: bool = True):
    """Within: BatchNorm steps take their running statistics from the buggy step before, not from
    the case, so a negative running_var (a one-pass variance gone negative) is passed on instead
    of being rejected as invalid input."""
    token = _CHAINED.set(on)
    try:
        yield
    finally:
        _CHAINED.reset(token)


def bn_running_inputs(i: Mapping, c: int, *, required: bool, nonneg: bool | None = None):
    """(running_mean, running_var) as EXT arrays, validated; None when absent and not required.
    A negative running_var is rejected unless inside `chained_step` (or nonneg=False)."""
    if nonneg is None:
        nonneg = not _CHAINED.get()
    rm, rv = i.get("running_mean"), i.get("running_var")
    if rm is None and rv is None and not required:
        return None
    require(rm is not None and rv is not None, "running_mean/running_var", "one or none given",
            "both, arrays of shape (C,)")
    bn._check_running("running_mean", rm, c, nonneg=False)
    bn._check_running("running_var", rv, c, nonneg=nonneg)
    return np.asarray(rm, dtype=EXT), np.asarray(rv, dtype=EXT)


def bn_view(i: Mapping, a: Mapping, norm: Callable | None = None):
    v = bn.view(i["x"], i.get("gamma"), i.get("beta"), layout=a["layout"])
    if norm is not None:
        v.norm = norm(v.norm)
    return v


def bn_forward(v, a: Mapping, *, given=None, stats=accurate_stats):
    """Forward on a BatchNorm view; `given=(mean_c, var_c)` (shape (C,)) normalizes with fixed
    statistics, as inference does."""
    if given is not None:
        c = v.x.shape[1]
        given = tuple(np.asarray(s, dtype=EXT).reshape(1, c, 1) for s in given)
    return _core.forward(v.x, v.norm, a["eps"], v.gamma, v.beta, stats=stats, given=given)


def bn_update(a: Mapping, old, batch_mean, batch_var_biased, n: int, *, step: int = 0,
              momentum_on: str | None = None, estimator: str | None = None):
    """Running statistics after one step (EXT), with the case's conventions unless overridden."""
    factor = bn.running_var_factor(n, estimator or a["running_var_estimator"])
    kw = dict(momentum=a["momentum"], momentum_on=momentum_on or a["momentum_on"],
              num_batches_tracked=int(a["num_batches_tracked"]) + step)
    rm, rv = old
    return (bn.update_running(rm, batch_mean, **kw),
            bn.update_running(rv, np.asarray(batch_var_biased, dtype=EXT) * factor, **kw))


def bn_outputs(mode: str, v, f, i: Mapping) -> dict[str, np.ndarray]:
    """Outputs of an inference-or-training forward/vjp/jvp mode (not the running statistics)."""
    kind = mode.split("_")[1] if "_" in mode else "forward"
    if kind == "forward":
        if mode == "inference":
            return {"y": v.back(f.y)}
        return {"y": v.back(f.y), "mean": v.stat(f.mean), "var": v.stat(f.v), "rstd": v.stat(f.r)}
    if kind == "vjp":
        require("dy" in i, "inputs", "missing 'dy'", f"the cotangent dy for batch_norm/{mode}")
        g = grads(v, f, i["dy"])
        return {"d" + k: g[k] for k in ("x", "gamma", "beta") if k in g}
    require("tx" in i, "inputs", "missing 'tx'", f"the tangent tx for batch_norm/{mode}")
    tg = i.get("tgamma") if "gamma" in v.params else None
    tb = i.get("tbeta") if "beta" in v.params else None
    return {"ty": tangent(v, f, i["tx"], tg, tb)}


StepFn = Callable[[dict, dict, int], dict]


def bn_steps(inputs: Mapping, attrs: Mapping, step: StepFn) -> dict[str, np.ndarray]:
    """training_steps by chaining a variant's own training step: `step(inputs_k, attrs_k, k)`
    returns the "training" outputs of batch k (with running statistics); the running statistics
    it returns feed batch k + 1, as in `oracles.batch_norm_training_steps`."""
    a = attrs_of("batch_norm", attrs)
    i = arrays(inputs)
    require("xs" in i, "inputs", "missing 'xs'", "xs of shape (K, *x) for batch_norm/training_steps")
    xs = i["xs"]
    require(xs.ndim >= 3, "xs.ndim", xs.ndim, ">= 3 (K steps of an (N, C, ...) batch)")
    require("running_mean" in i and "running_var" in i, "running_mean/running_var", None,
            "arrays of shape (C,) for multi-step training")
    rm, rv = i["running_mean"], i["running_var"]
    outs = []
    for k in range(xs.shape[0]):
        ik = {n: i[n] for n in ("gamma", "beta") if n in i}
        ik.update(x=xs[k], running_mean=rm, running_var=rv)
        ak = dict(attrs)
        ak["num_batches_tracked"] = int(a["num_batches_tracked"]) + k
        with chained_step(k > 0):
            o = step(ik, ak, k)
        outs.append(o)
        rm, rv = o["running_mean"], o["running_var"]
    keys = ("y", "mean", "var", "running_mean", "running_var")
    return {key: np.stack([np.asarray(o[key], dtype=EXT) for o in outs]) for key in keys}


def bn_generic(mode: str, inputs: Mapping, attrs: Mapping, *, norm: Callable | None = None,
               stats=accurate_stats, running_stats=None) -> dict[str, np.ndarray]:
    """BatchNorm outputs with a modified Norm and/or statistics function in every mode.

    The running statistics of a training step are updated from the batch statistics the forward
    computed (`f.mean`, `f.v`) unless `running_stats(i, a, v, f) -> (rm, rv)` is given.
    """
    if mode == "training_steps":
        return bn_steps(inputs, attrs, lambda ik, ak, k: bn_generic(
            "training", ik, ak, norm=norm, stats=stats, running_stats=running_stats))
    require(mode in BN_MODES, "mode", repr(mode), f"one of {list(BN_MODES)} for batch_norm")
    a = attrs_of("batch_norm", attrs)
    bn.check_momentum(a["momentum"], a["momentum_on"], a["running_var_estimator"])
    i = arrays(inputs)
    require("x" in i, "inputs", "missing 'x'", f"x for batch_norm/{mode}")
    v = bn_view(i, a, norm)
    c = v.x.shape[1]
    if mode in BN_INFERENCE:
        f = bn_forward(v, a, given=bn_running_inputs(i, c, required=True))
        return bn_outputs(mode, v, f, i)
    f = bn_forward(v, a, stats=stats)
    out = bn_outputs(mode, v, f, i)
    if mode == "training":
        old = bn_running_inputs(i, c, required=False)
        if old is not None:
            if running_stats is not None:
                out["running_mean"], out["running_var"] = running_stats(i, a, v, f)
            else:
                out["running_mean"], out["running_var"] = bn_update(a, old, v.stat(f.mean),
                                                                    v.stat(f.v), f.n)
    return out
