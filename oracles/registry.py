"""One entry point for every op and mode: reference outputs and their error bounds, by name.

`evaluate(op, mode, inputs, attrs, precision)` is what the fuzzer calls for a `Case`: inputs and
attrs are plain dicts (names below), the result maps each output name to its reference and
per-element bound, both in the evaluation's working type (`Precision.working_type`: numpy.float64
for cases in float32 and narrower formats, EXT = numpy.longdouble otherwise). The typed functions of
each op module are the documented API; this table maps case names onto them.

Ops, modes and names (optional inputs in brackets):
    batch_norm     inference        x, running_mean, running_var, [gamma], [beta]    -> y
                   training         x, [gamma], [beta], [running_mean, running_var]  -> y, mean, var,
                                    rstd, [running_mean, running_var]
                   training_steps   xs (K, *x), running_mean, running_var, [gamma], [beta]
                                    -> y, mean, var, running_mean, running_var (stacked over K)
                   inference_vjp / training_vjp   + dy  -> dx, [dgamma], [dbeta]
                   inference_jvp / training_jvp   + tx, [tgamma], [tbeta] -> ty
    layer_norm, group_norm, instance_norm   forward: x, [gamma], [beta] -> y, mean, rstd; vjp; jvp
    rms_norm       forward: x, [weight] -> y, rstd; vjp (dy -> dx, [dweight]); jvp (tx, [tweight])
    mvn            forward: x -> y; vjp; jvp           (mean-variance normalization)
    l2_normalize   forward: x -> y; vjp; jvp
    weight_norm    forward: v, g -> w; vjp (dw -> dv, dg); jvp (tv, [tg] -> tw)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from . import _core, errormodel
from . import op_batch_norm as batch_norm
from . import op_group_norm as group_norm
from . import op_instance_norm as instance_norm
from . import op_l2_norm as l2_norm
from . import op_layer_norm as layer_norm
from . import op_mvn as mvn
from . import op_rms_norm as rms_norm
from ._view import View, check_eps, check_int, check_layout
from . import dtypes
from .dtypes import EXT, work
from .errormodel import Precision
from .errors import OracleInputError, require


@dataclass(frozen=True)
class Evaluation:
    """Reference outputs and their per-element error bounds, by output name (arrays of the
    evaluation's working type: numpy.float64 or EXT)."""

    outputs: dict[str, np.ndarray]
    bounds: dict[str, np.ndarray]

    def ratios(self, actual: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
        """error/bound per element for each output present in `actual`."""
        return {k: errormodel.error_ratio(actual[k], self.outputs[k], self.bounds[k], dtype)
                for k in self.outputs if k in actual}


@dataclass(frozen=True)
class OpDef:
    """How case inputs/attrs map onto an op's working view."""

    name: str
    modes: tuple[str, ...]
    make_view: Callable[[Mapping, Mapping], View]
    x_name: str = "x"
    y_name: str = "y"
    params: dict[str, str] = field(default_factory=dict)  # view param -> case input name
    stats: dict[str, str] = field(default_factory=dict)   # output name -> Forward field
    attrs: tuple[str, ...] = ()                            # attrs the op accepts
    defaults: dict = field(default_factory=dict)
    required: frozenset = frozenset({"x"})                 # required case inputs (forward)
    required_attrs: tuple[str, ...] = ()


def _bn_view(i, a):
    return batch_norm.view(i["x"], i.get("gamma"), i.get("beta"), layout=a.get("layout", "channels_first"))


def _trailing(a):
    return dict(normalized_ndim=a.get("normalized_ndim"), axis=a.get("axis"))


OPS: dict[str, OpDef] = {
    "batch_norm": OpDef(
        "batch_norm",
        ("inference", "training", "training_steps", "inference_vjp", "training_vjp", "inference_jvp",
         "training_jvp"),
        _bn_view, params={"gamma": "gamma", "beta": "beta"},
        attrs=("eps", "layout", "momentum", "momentum_on", "running_var_estimator", "num_batches_tracked"),
        defaults={"layout": "channels_first", "momentum": 0.1, "momentum_on": "batch",
                  "running_var_estimator": "unbiased", "num_batches_tracked": 0}),
    "layer_norm": OpDef(
        "layer_norm", ("forward", "vjp", "jvp"),
        lambda i, a: layer_norm.view(i["x"], i.get("gamma"), i.get("beta"), **_trailing(a)),
        params={"gamma": "gamma", "beta": "beta"}, stats={"mean": "mean", "rstd": "r"},
        attrs=("eps", "normalized_ndim", "axis")),
    "rms_norm": OpDef(
        "rms_norm", ("forward", "vjp", "jvp"),
        lambda i, a: rms_norm.view(i["x"], i.get("weight"), **_trailing(a)),
        params={"gamma": "weight"}, stats={"rstd": "r"}, attrs=("eps", "normalized_ndim", "axis")),
    "group_norm": OpDef(
        "group_norm", ("forward", "vjp", "jvp"),
        lambda i, a: group_norm.view(i["x"], a["num_groups"], i.get("gamma"), i.get("beta"),
                                     layout=a.get("layout", "channels_first"),
                                     affine=a.get("affine", "per_channel")),
        params={"gamma": "gamma", "beta": "beta"}, stats={"mean": "mean", "rstd": "r"},
        attrs=("eps", "num_groups", "layout", "affine"), required_attrs=("num_groups",)),
    "instance_norm": OpDef(
        "instance_norm", ("forward", "vjp", "jvp"),
        lambda i, a: instance_norm.view(i["x"], i.get("gamma"), i.get("beta"),
                                        layout=a.get("layout", "channels_first")),
        params={"gamma": "gamma", "beta": "beta"}, stats={"mean": "mean", "rstd": "r"},
        attrs=("eps", "layout")),
    "mvn": OpDef(
        "mvn", ("forward", "vjp", "jvp"),
        lambda i, a: mvn.view(i["x"], axes=tuple(a.get("axes", (0, 2, 3))), eps_mode=a.get("eps_mode", "outside")),
        attrs=("eps", "axes", "eps_mode"), defaults={"eps": 1e-9}),
    "l2_normalize": OpDef(
        "l2_normalize", ("forward", "vjp", "jvp"),
        lambda i, a: l2_norm.view(i["x"], axes=tuple(a.get("axes", (-1,))), eps_mode=a.get("eps_mode", "max_norm")),
        attrs=("eps", "axes", "eps_mode"), defaults={"eps": 1e-12}),
    "weight_norm": OpDef(
        "weight_norm", ("forward", "vjp", "jvp"),
        lambda i, a: l2_norm.weight_view(i["v"], i["g"], dim=a.get("dim", 0), eps_mode=a.get("eps_mode", "none")),
        x_name="v", y_name="w", params={"gamma": "g"}, attrs=("eps", "dim", "eps_mode"),
        defaults={"eps": 0.0}, required=frozenset({"v", "g"})),
}


def op_def(op: str) -> OpDef:
    require(op in OPS, "op", repr(op), f"one of {sorted(OPS)}")
    return OPS[op]


def _attrs(d: OpDef, attrs: Mapping) -> dict:
    unknown = sorted(set(attrs) - set(d.attrs))
    require(not unknown, "attrs", unknown, f"attributes of {d.name} among {list(d.attrs)}")
    out = dict(d.defaults)
    out.update(attrs)
    require("eps" in out, "eps", None, f"an eps attribute for {d.name}")
    for name in d.required_attrs:
        require(name in out, name, None, f"a {name} attribute for {d.name}")
    out["eps"] = check_eps(out["eps"])
    if "num_batches_tracked" in out:
        out["num_batches_tracked"] = check_int("num_batches_tracked", out["num_batches_tracked"], minimum=0)
    return out


def _inputs(inputs: Mapping, allowed: set[str], required: set[str], where: str) -> dict:
    unknown = sorted(set(inputs) - allowed)
    require(not unknown, "inputs", unknown, f"inputs of {where} among {sorted(allowed)}")
    missing = sorted(required - set(inputs))
    require(not missing, "inputs", f"missing {missing}", f"inputs {sorted(required)} for {where}")
    return {k: np.asarray(v) for k, v in inputs.items()}


def _case_params(d: OpDef) -> set[str]:
    return set(d.params.values())


def evaluate(op: str, mode: str, inputs: Mapping[str, np.ndarray], attrs: Mapping,
             precision: Precision | str, *, stats: _core.StatsFn = _core.accurate_stats,
             working=None, bounds: bool = True) -> Evaluation:
    """Reference outputs and error bounds for one case (see the module docstring for names).

    Raises OracleInputError for an unknown op or mode, unknown or missing inputs or attributes,
    and every invalid value the op's typed function rejects. `stats` replaces the statistics
    computation (the bug zoo uses it to model broken variance algorithms); bounds stay those of the
    correct formula.

    Working precision: `working=None` picks `working_type(p, inputs)` (float64 when every format of
    the precision and every input array's dtype is float32 or narrower, else EXT). A float64
    evaluation runs under
    `dtypes.range_guard()`: if any intermediate overflows or underflows float64, the case is
    evaluated again in EXT, so a float64 result is always that of an evaluation whose every
    intermediate stayed in float64's normal range (docs/error-model.md, "The oracle's own error").
    `working=numpy.float64` or `numpy.longdouble` forces that type, unguarded (for tests comparing
    the two).

    `bounds=False` computes the reference outputs only (`Evaluation.bounds` is empty): the same
    validation, working type and outputs, without the error model (the bug zoo's variants, which
    need what the correct formula outputs, not how far an implementation may stray from it).
    """
    d = op_def(op)
    require(mode in d.modes, "mode", repr(mode), f"one of {list(d.modes)} for {op}")
    p = Precision.of(precision) if isinstance(precision, str) else precision
    a = _attrs(d, attrs)
    bp = p if bounds else None  # (the error model's precision; None: no bounds)
    if working is not None:
        with dtypes.working(working):
            return _evaluate(d, mode, inputs, a, bp, stats)
    t = working_type(p, inputs)
    if t is not EXT:
        try:
            with dtypes.working(t), dtypes.range_guard():
                return _evaluate(d, mode, inputs, a, bp, stats)
        except FloatingPointError:
            pass  # an intermediate left float64's normal range: evaluate in EXT
    with dtypes.working(EXT):
        return _evaluate(d, mode, inputs, a, bp, stats)


def working_type(p: Precision, inputs: Mapping) -> type:
    """The type `evaluate` works in for a case: numpy.float64 when `p.working_type` is float64 (all
    formats float32 or narrower) and every input is stored in an array of float32 or a narrower
    dtype (the case's carrier, as in every fuzz case), else `EXT`. The range argument of
    docs/error-model.md is about values of those formats; an input stored in float64 or longdouble
    (hand-written data, Python lists) may hold values outside them and is evaluated in EXT."""
    if p.working_type is EXT:
        return EXT
    narrow = all(np.asarray(a).dtype.itemsize <= 4 for a in inputs.values())
    return np.float64 if narrow else EXT


def _evaluate(d: OpDef, mode: str, inputs: Mapping, a: dict, p: Precision | None, stats) -> Evaluation:
    """`evaluate` in the current working type (`work()`); no bounds when `p` is None."""
    op = d.name
    if op == "batch_norm":
        return _batch_norm(mode, inputs, a, p, stats)
    base = {d.x_name} | _case_params(d)
    kind = mode
    if kind == "forward":
        i = _inputs(inputs, base, set(d.required), f"{op}/{mode}")
        v = d.make_view(i, a)
        f = _core.forward(v.x, v.norm, a["eps"], v.gamma, v.beta, stats=stats)
        outs = {d.y_name: v.back(f.y)}
        for name, fld in d.stats.items():
            outs[name] = v.stat(getattr(f, fld))
        if p is None:
            return Evaluation(outs, {})
        b = errormodel.forward_bounds(f, p)
        bnds = {d.y_name: v.back(_full(b["y"], f.y))}
        for name, fld in d.stats.items():
            bnds[name] = v.stat(b[fld])
        return Evaluation(outs, bnds)
    cot = "d" + d.y_name
    if kind == "vjp":
        i = _inputs(inputs, base | {cot}, set(d.required) | {cot}, f"{op}/{mode}")
        v = d.make_view(i, a)
        f = _core.forward(v.x, v.norm, a["eps"], v.gamma, v.beta, stats=stats)
        return _vjp_eval(d, v, f, v.to_working(i[cot], cot), p)
    tangents = {"t" + d.x_name} | {"t" + n for n in _case_params(d)}
    i = _inputs(inputs, base | tangents, set(d.required) | {"t" + d.x_name}, f"{op}/{mode}")
    v = d.make_view(i, a)
    f = _core.forward(v.x, v.norm, a["eps"], v.gamma, v.beta, stats=stats)
    return _jvp_eval(d, v, f, i, p)


def _full(b: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.broadcast_to(b, like.shape)


def _vjp_eval(d: OpDef, v: View, f, dy_w, p: Precision) -> Evaluation:
    dx, dg, db = _core.vjp(f, dy_w)
    outs = {"d" + d.x_name: v.back(dx)}
    for vname, full in (("gamma", dg), ("beta", db)):
        if vname in v.params:
            outs["d" + d.params[vname]] = v.param_grad(vname, full)
    if p is None:
        return Evaluation(outs, {})
    b = errormodel.vjp_bounds(f, dy_w, p, dx=dx)
    bnds = {"d" + d.x_name: v.back(_full(b["x"], dx))}
    for vname in ("gamma", "beta"):
        if vname in v.params:
            pb = errormodel.param_grad_bounds(f, dy_w, p, v.param_work_shapes[vname], vname)
            bnds["d" + d.params[vname]] = pb.reshape(v.param_shapes[vname])
    return Evaluation(outs, bnds)


def _jvp_eval(d: OpDef, v: View, f, i: Mapping, p: Precision) -> Evaluation:
    tx = v.to_working(i["t" + d.x_name], "t" + d.x_name)
    tg = v.param_to_working("gamma", i.get("t" + d.params["gamma"])) if "gamma" in d.params and "gamma" in v.params else None
    tb = v.param_to_working("beta", i.get("t" + d.params["beta"])) if "beta" in d.params and "beta" in v.params else None
    ty = _core.jvp(f, tx, tg, tb)
    name = "t" + d.y_name
    if p is None:
        return Evaluation({name: v.back(ty)}, {})
    b = errormodel.jvp_bounds(f, tx, tg, tb, p, ty=ty)
    return Evaluation({name: v.back(ty)}, {name: v.back(_full(b, ty))})


# --------------------------------------------------------------------------------------------------
# batch_norm


_BN_BASE = {"x", "gamma", "beta", "running_mean", "running_var"}


def _bn_given(v: View, i: Mapping):
    c = v.x.shape[1]
    for name in ("running_mean", "running_var"):
        require(name in i, name, None, "an array of shape (C,) for inference")
    batch_norm._check_running("running_mean", i["running_mean"], c, nonneg=False)
    batch_norm._check_running("running_var", i["running_var"], c, nonneg=True)
    return (np.asarray(i["running_mean"], dtype=work()).reshape(1, c, 1),
            np.asarray(i["running_var"], dtype=work()).reshape(1, c, 1))


def _bn_step(x, i: Mapping, a: Mapping, p: Precision, rm, rv, rm_b, rv_b, step: int, stats):
    """One training step: outputs and bounds, running statistics propagated with their bounds."""
    v = batch_norm.view(x, i.get("gamma"), i.get("beta"), layout=a["layout"])
    f = _core.forward(v.x, v.norm, a["eps"], v.gamma, v.beta, stats=stats)
    outs = {"y": v.back(f.y), "mean": v.stat(f.mean), "var": v.stat(f.v), "rstd": v.stat(f.r)}
    if rm is not None:
        factor = batch_norm.running_var_factor(f.n, a["running_var_estimator"])
        nbt = int(a["num_batches_tracked"]) + step
        kw = dict(momentum=a["momentum"], momentum_on=a["momentum_on"], num_batches_tracked=nbt)
        mean, var = v.stat(f.mean), v.stat(f.v) * factor
        outs["running_mean"] = batch_norm.update_running(rm, mean, **kw)
        outs["running_var"] = batch_norm.update_running(rv, var, **kw)
    if p is None:
        return outs, {}
    b = errormodel.forward_bounds(f, p)
    s = errormodel.set_errors(f, p)  # (the per-set part: no per-element pass)
    bnds = {"y": v.back(_full(b["y"], f.y)), "mean": v.stat(b["mean"]), "var": v.stat(b["v"]),
            "rstd": v.stat(b["r"])}
    if rm is not None:
        w = batch_norm.momentum_weight(a["momentum"], a["momentum_on"], nbt)
        bnds["running_mean"] = errormodel.running_bound(rm, rm_b, mean, v.stat(s.e_mu), w, p)
        bnds["running_var"] = errormodel.running_bound(rv, rv_b, var, v.stat(s.d_v) * factor, w, p)
    return outs, bnds


def _batch_norm(mode: str, inputs: Mapping, a: dict, p: Precision, stats) -> Evaluation:
    batch_norm.check_momentum(a["momentum"], a["momentum_on"], a["running_var_estimator"])
    d = OPS["batch_norm"]
    if mode == "training_steps":
        i = _inputs(inputs, (_BN_BASE - {"x"}) | {"xs"}, {"xs", "running_mean", "running_var"}, "batch_norm/training_steps")
        xs = np.asarray(i["xs"])
        require(xs.ndim >= 3, "xs.ndim", xs.ndim, ">= 3 (K steps of an (N, C, ...) batch)")
        check_layout(a["layout"])
        rm, rv = (np.asarray(i[k], dtype=work()) for k in ("running_mean", "running_var"))
        c = xs.shape[2] if a["layout"] == "channels_first" else xs.shape[-1]
        batch_norm._check_running("running_mean", rm, c, nonneg=False)
        batch_norm._check_running("running_var", rv, c, nonneg=True)
        rm_b = rv_b = np.zeros_like(rm)
        steps = []
        for k in range(xs.shape[0]):
            o, b = _bn_step(xs[k], i, a, p, rm, rv, rm_b, rv_b, k, stats)
            steps.append((o, b))
            rm, rv = o["running_mean"], o["running_var"]
            if p is not None:
                rm_b, rv_b = b["running_mean"], b["running_var"]
        keys = ("y", "mean", "var", "running_mean", "running_var")
        return Evaluation({k: np.stack([s[0][k] for s in steps]) for k in keys},
                          {} if p is None else {k: np.stack([s[1][k] for s in steps]) for k in keys})
    state, kind = mode.split("_") if "_" in mode else (mode, "forward")
    extra = {"forward": set(), "vjp": {"dy"}, "jvp": {"tx", "tgamma", "tbeta"}}[kind]
    need = {"x"} | ({"running_mean", "running_var"} if state == "inference" else set())
    need |= {"vjp": {"dy"}, "jvp": {"tx"}, "forward": set()}[kind]
    i = _inputs(inputs, _BN_BASE | extra, need, f"batch_norm/{mode}")
    v = d.make_view(i, a)
    if state == "inference":
        f = _core.forward(v.x, v.norm, a["eps"], v.gamma, v.beta, given=_bn_given(v, i))
    elif kind == "forward":
        require(("running_mean" in i) == ("running_var" in i), "running_mean/running_var",
                "one given", "both or neither")
        rm = i.get("running_mean")
        rv = i.get("running_var")
        if rm is not None:
            c = v.x.shape[1]
            batch_norm._check_running("running_mean", rm, c, nonneg=False)
            batch_norm._check_running("running_var", rv, c, nonneg=True)
            rm, rv = np.asarray(rm, dtype=work()), np.asarray(rv, dtype=work())
        z = None if rm is None else np.zeros_like(rm)
        o, b = _bn_step(i["x"], i, a, p, rm, rv, z, z, 0, stats)
        return Evaluation(o, b)
    else:
        f = _core.forward(v.x, v.norm, a["eps"], v.gamma, v.beta, stats=stats)
    if kind == "forward":  # inference
        if p is None:
            return Evaluation({"y": v.back(f.y)}, {})
        b = errormodel.forward_bounds(f, p)
        return Evaluation({"y": v.back(f.y)}, {"y": v.back(_full(b["y"], f.y))})
    if kind == "vjp":
        return _vjp_eval(d, v, f, v.to_working(i["dy"], "dy"), p)
    return _jvp_eval(d, v, f, i, p)


def modes() -> list[tuple[str, str]]:
    """Every (op, mode) pair the oracle defines."""
    return [(o, m) for o, d in OPS.items() for m in d.modes]


__all__ = ["Evaluation", "OPS", "OpDef", "OracleInputError", "Precision", "evaluate", "modes", "working_type"]
