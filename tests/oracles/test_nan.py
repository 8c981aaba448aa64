"""The oracles' NaN/Inf rule (documented in `oracles/_core.py`).

Computed statistics, as IEEE arithmetic on the formula gives them: a NaN anywhere in a reduction set
makes every output of that set NaN; a +-Inf does too in a centered op (x - mean is inf - inf), except
the reported mean, which is the IEEE mean (+-inf, NaN for mixed signs); in an uncentered op (RMSNorm,
L2, weight norm) a +-Inf without NaN makes the set's scale 0: finite elements give 0, infinite ones
NaN, rstd is 0. Gradients of any set holding a non-finite value are NaN. For every op and every mode
that computes statistics we put NaN, +Inf or -Inf at chosen positions of the normalized input and
check, through `oracles.evaluate`, that

* every output element belonging to an affected reduction set follows that rule, and
* every other element, and its error bound, is bit-identical to the evaluation of the same input
  with the finite values in place (the sets are independent).

Which reduction set an element belongs to is worked out here from the op's documented semantics
(index arithmetic on the input's shape), not from the oracle's working view.

Given statistics (BatchNorm inference) follow IEEE arithmetic elementwise, and non-finite
gamma/beta act elementwise in every op; those are checked against the formula evaluated here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import oracles
from oracles import EXT

NIGHTLY = os.environ.get("NORMFUZZ_NIGHTLY") == "1"
SETTINGS = settings(derandomize=True, deadline=None, max_examples=300 if NIGHTLY else 25)
VALUES = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}
PRECISIONS = ("float16", "bfloat16", "float32", "float64")


# --------------------------------------------------------------------------------------------------
# bit-level comparison


def same_bits(a, b) -> np.ndarray:
    """Elementwise: equal value and equal sign bit (so 0 vs -0 differ), or both NaN. EXT's padding
    bytes carry no value, so values and sign bits are compared rather than raw bytes."""
    a, b = np.asarray(a, dtype=EXT), np.asarray(b, dtype=EXT)
    both_nan = np.isnan(a) & np.isnan(b)
    return both_nan | ((a == b) & (np.signbit(a) == np.signbit(b)))


def assert_same_where(actual, expected, where, what):
    where = np.broadcast_to(where, np.shape(actual))
    ok = same_bits(actual, expected) | ~where
    if not ok.all():
        i = tuple(int(k) for k in np.argwhere(~ok)[0])
        raise AssertionError(f"{what}: {int((~ok).sum())} element(s) changed outside the affected sets; "
                             f"first at {i}: {actual[i]!r} != {expected[i]!r}")


# --------------------------------------------------------------------------------------------------
# cases: inputs and the reduction set of every element of every output


def kept_labels(shape, reduce_axes) -> np.ndarray:
    """Reduction-set id of each element when statistics are taken over `reduce_axes`: the ravelled
    index over the remaining axes (so that statistic arrays shaped like those axes line up)."""
    reduce_axes = {a % len(shape) for a in reduce_axes}
    keep = [a for a in range(len(shape)) if a not in reduce_axes]
    idx = np.indices(shape)
    if not keep:
        return np.zeros(shape, dtype=np.int64)
    return np.ravel_multi_index(tuple(idx[a] for a in keep), tuple(shape[a] for a in keep))


def stat_labels(shape) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)


@dataclass
class Case:
    """One op/mode with finite inputs. `labels`: the reduction set of each element of the normalized
    input `x_name`; `outs`: for each output checked by the set rule, either a label array (affected
    iff its label is bad) or a function of the bad labels giving the affected mask; `free`: outputs
    that do not depend on x at all (bit-identical whatever x holds); `params`: for each affine
    parameter input, the flat parameter index every element of x uses (for the elementwise rule)."""

    op: str
    mode: str
    inputs: dict
    attrs: dict
    x_name: str
    labels: np.ndarray
    outs: dict[str, np.ndarray | Callable]
    free: tuple[str, ...] = ()
    params: dict[str, np.ndarray] = field(default_factory=dict)

    def evaluate(self, precision, **replace):
        inputs = dict(self.inputs)
        inputs.update(replace)
        return oracles.evaluate(self.op, self.mode, inputs, self.attrs, precision)


def _param_mask(params_idx: np.ndarray, x_mask: np.ndarray, size: int) -> np.ndarray:
    """Parameter-gradient mask: a parameter's gradient sums dy * xhat over the elements using it."""
    out = np.zeros(size, dtype=bool)
    np.logical_or.at(out, params_idx.ravel(), x_mask.ravel())
    return out


def _grad_outs(kind: str, x_name: str, labels, params: dict[str, np.ndarray], shapes: dict):
    """Set-rule outputs of the gradient modes: dx / ty like x; d<param>: NaN where any summed element
    is affected (IEEE sum of dy * xhat); the tangent/cotangent of beta-like params never reads x."""
    if kind == "jvp":
        return {"t" + ("w" if x_name == "v" else "y"): labels}, ()
    outs: dict = {"d" + x_name: labels}
    free = []
    for name, gidx in params.items():
        if name == "beta":
            free.append("dbeta")  # sum(dy): independent of x
        else:
            outs["d" + name] = (lambda gidx, shape: lambda bad: _param_mask(
                gidx, np.isin(labels, bad), int(np.prod(shape))).reshape(shape))(gidx, shapes[name])
    return outs, tuple(free)


def build_case(op: str, mode: str, rng: np.random.Generator, variant: int) -> Case:
    """A small random case of op/mode; `variant` picks among layouts/axes/affine forms."""
    kind = "forward" if mode in ("forward", "training", "training_steps") else mode.split("_")[-1]
    std = lambda *s: rng.standard_normal(s) * 3 + 1  # noqa: E731
    inputs: dict = {}
    params: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple] = {}

    if op == "batch_norm":
        layout = ("channels_first", "channels_last")[variant % 2]
        c = 3
        shape = (2, c, 4, 2) if layout == "channels_first" else (2, 4, 2, c)
        caxis = 1 if layout == "channels_first" else 3
        attrs = {"eps": 1e-5, "layout": layout, "momentum": (0.1, None, 0.0, 1.0)[variant % 4],
                 "momentum_on": ("batch", "running")[variant // 2 % 2]}
        cidx = np.indices(shape)[caxis]
        for name in ("gamma", "beta"):
            inputs[name] = std(c)
            params[name], shapes[name] = cidx, (c,)
        if mode == "training_steps":
            k = 3
            xs = np.stack([std(*shape) for _ in range(k)])
            labels = np.indices(xs.shape)[0] * c + np.indices(xs.shape)[caxis + 1]
            def running(bad):  # a running statistic carries every earlier step's batch statistic
                m = np.isin(stat_labels((k, c)), bad)
                return np.logical_or.accumulate(m, axis=0)
            inputs.update(xs=xs, running_mean=std(c), running_var=np.abs(std(c)))
            outs = {"y": labels, "mean": stat_labels((k, c)), "var": stat_labels((k, c)),
                    "running_mean": running, "running_var": running}
            return Case(op, mode, inputs, attrs, "xs", labels, outs)
        inputs["x"] = std(*shape)
        labels = cidx
        if mode == "training":
            inputs.update(running_mean=std(c), running_var=np.abs(std(c)))
            outs = {k: stat_labels((c,)) for k in ("mean", "var", "rstd", "running_mean", "running_var")}
            outs["y"] = labels
            return Case(op, mode, inputs, attrs, "x", labels, outs, params=params)
        x_name = "x"
    elif op in ("layer_norm", "rms_norm"):
        shape = (3, 2, 4)
        k = 1 + variant % 2
        attrs = {"eps": 1e-5}
        attrs.update({"normalized_ndim": k} if variant < 2 else {"axis": -k if variant % 2 else 3 - k})
        labels = kept_labels(shape, range(3 - k, 3))
        norm = shape[3 - k:]
        gidx = np.broadcast_to(stat_labels(norm), shape)
        names = ("gamma", "beta") if op == "layer_norm" else ("weight",)
        for name in names:
            inputs[name] = std(*norm)
            params[name], shapes[name] = gidx, norm
        inputs["x"] = std(*shape)
        stats = ("mean", "rstd") if op == "layer_norm" else ("rstd",)
        outs = {"y": labels, **{s: stat_labels(shape[:3 - k]) for s in stats}}
        x_name = "x"
    elif op == "group_norm":
        layout = ("channels_first", "channels_last")[variant % 2]
        affine = ("per_channel", "per_group")[variant // 2 % 2]
        n, c, g = 2, 6, (3, 2)[variant % 2]
        shape = (n, c, 3, 2) if layout == "channels_first" else (n, 3, 2, c)
        idx = np.indices(shape)
        ch = idx[1 if layout == "channels_first" else 3]
        labels = idx[0] * g + ch // (c // g)  # contiguous blocks of c/g channels per sample
        gidx = ch if affine == "per_channel" else ch // (c // g)
        for name in ("gamma", "beta"):
            inputs[name] = std(c if affine == "per_channel" else g)
            params[name], shapes[name] = gidx, inputs[name].shape
        inputs["x"] = std(*shape)
        attrs = {"eps": 1e-5, "num_groups": g, "layout": layout, "affine": affine}
        outs = {"y": labels, "mean": stat_labels((n, g)), "rstd": stat_labels((n, g))}
        x_name = "x"
    elif op == "instance_norm":
        layout = ("channels_first", "channels_last")[variant % 2]
        n, c = 2, 3
        shape = (n, c, 3, 2) if layout == "channels_first" else (n, 3, 2, c)
        caxis = 1 if layout == "channels_first" else 3
        labels = kept_labels(shape, [a for a in range(1, 4) if a != caxis])
        for name in ("gamma", "beta"):
            inputs[name] = std(c)
            params[name], shapes[name] = np.indices(shape)[caxis], (c,)
        inputs["x"] = std(*shape)
        attrs = {"eps": 1e-5, "layout": layout}
        outs = {"y": labels, "mean": stat_labels((n, c)), "rstd": stat_labels((n, c))}
        x_name = "x"
    elif op in ("mvn", "l2_normalize"):
        shape = (2, 3, 2, 2)
        axes = [(0, 2, 3), (1,), (-1,), (1, 2, 3)][variant % 4]
        eps_mode = {"mvn": ("outside", "inside", "none", "outside"),
                    "l2_normalize": ("max_norm", "max_sumsq", "inside", "none")}[op][variant % 4]
        inputs["x"] = std(*shape)
        attrs = {"eps": 1e-9 if op == "mvn" else 1e-12, "axes": axes, "eps_mode": eps_mode}
        labels = kept_labels(shape, axes)
        outs = {"y": labels}
        x_name = "x"
    elif op == "weight_norm":
        shape = (3, 2, 4)
        dim = (0, 1, -1, 0)[variant % 4]
        labels = kept_labels(shape, [a for a in range(3) if a != dim % 3])
        inputs["v"] = std(*shape)
        inputs["g"] = std(shape[dim])
        params["g"], shapes["g"] = labels, (shape[dim],)
        attrs = {"dim": dim, "eps_mode": ("none", "max_norm")[variant % 2], "eps": 0.0}
        outs = {"w": labels}
        x_name = "v"
    else:  # pragma: no cover
        raise AssertionError(op)

    if kind == "forward":
        return Case(op, mode, inputs, attrs, x_name, labels, outs, params=params)
    x = inputs[x_name]
    if kind == "vjp":
        inputs["dw" if x_name == "v" else "dy"] = rng.standard_normal(x.shape)
    else:
        inputs["t" + x_name] = rng.standard_normal(x.shape)
        for name in params:
            inputs["t" + name] = rng.standard_normal(shapes[name])
    outs, free = _grad_outs(kind, x_name, labels, params, shapes)
    return Case(op, mode, inputs, attrs, x_name, labels, outs, free=free, params=params)


SET_MODES = [(op, m) for op, m in oracles.modes() if not m.startswith("inference")]


def test_every_mode_is_covered():
    """Every (op, mode) of the registry is checked here: set-rule modes below, inference separately."""
    assert {m for _, m in oracles.modes() if m.startswith("inference")} == {
        "inference", "inference_vjp", "inference_jvp"}
    for op, mode in SET_MODES:
        case = build_case(op, mode, np.random.default_rng(0), 0)
        ev = case.evaluate("float64")
        assert set(ev.outputs) == set(case.outs) | set(case.free), (op, mode)


# --------------------------------------------------------------------------------------------------
# the set rule


UNCENTERED = {"rms_norm", "l2_normalize", "weight_norm"}


def check_affected(case: Case, name: str, spec, out: np.ndarray, affected: np.ndarray, x_bad: np.ndarray):
    """The rule for the elements of the affected sets (module docstring)."""
    forward = case.mode in ("forward", "training", "training_steps")
    nan_sets = np.unique(case.labels[np.isnan(x_bad)])
    if not forward:
        assert np.all(np.isnan(out[affected])), f"{name}: affected-set gradient element not NaN"
        return
    if case.op in UNCENTERED:
        labels = spec if not callable(spec) else None
        assert labels is not None and labels.shape == out.shape, name
        nan_part = affected & np.isin(labels, nan_sets)
        assert np.all(np.isnan(out[nan_part])), f"{name}: element of a set with a NaN is not NaN"
        inf_part = affected & ~np.isin(labels, nan_sets)
        if name == "rstd":
            assert np.all(out[inf_part] == 0), f"{name}: a set with an infinity must have rstd 0"
        else:  # y / w: NaN at the infinities, zero elsewhere
            is_inf = np.isinf(x_bad)
            assert np.all(np.isnan(out[inf_part & is_inf])), f"{name}: an infinite element must give NaN"
            assert np.all(out[inf_part & ~is_inf] == 0), f"{name}: a finite element of an inf set must give 0"
        return
    if name == "mean":
        labels = spec if not callable(spec) else None
        assert labels is not None and labels.shape == out.shape, name
        xe = np.asarray(x_bad, dtype=EXT)
        for i in np.argwhere(affected):
            members = xe[case.labels == labels[tuple(i)]]
            with np.errstate(invalid="ignore"):
                want = np.sum(members) / members.size
            assert same_bits(out[tuple(i)], want), f"mean at {tuple(i)}: {out[tuple(i)]!r}, IEEE mean {want!r}"
        return
    if name == "running_mean":  # (1 - w) old + w * (IEEE mean): +-inf or NaN
        assert np.all(~np.isfinite(out[affected])), f"{name}: affected-set element finite"
        return
    assert np.all(np.isnan(out[affected])), f"{name}: affected-set element not NaN"


def check_set_rule(case: Case, x_bad: np.ndarray, precision: str) -> int:
    """Evaluate with `x_bad` and check the set rule against the finite evaluation; returns the
    number of unaffected output elements compared (so callers can assert the check had teeth)."""
    bad_labels = np.unique(case.labels[~np.isfinite(x_bad)])
    fin = case.evaluate(precision)
    with np.errstate(all="ignore"):
        ev = case.evaluate(precision, **{case.x_name: x_bad})
    compared = 0
    for name, spec in case.outs.items():
        out = ev.outputs[name]
        affected = spec(bad_labels) if callable(spec) else np.isin(spec, bad_labels)
        assert affected.shape == out.shape, (name, affected.shape, out.shape)
        check_affected(case, name, spec, out, affected, x_bad)
        assert_same_where(out, fin.outputs[name], ~affected, f"{name} (value)")
        assert_same_where(ev.bounds[name], fin.bounds[name], ~affected, f"{name} (bound)")
        compared += int((~affected).sum())
    for name in case.free:
        assert_same_where(ev.outputs[name], fin.outputs[name], True, f"{name} (independent of x)")
    return compared


def _positions(rng, labels: np.ndarray, how: str) -> np.ndarray:
    """Boolean mask of the positions to poison: a few random elements, a whole set, or one element
    of every set."""
    mask = np.zeros(labels.shape, dtype=bool)
    if how == "few":
        flat = rng.choice(labels.size, size=int(rng.integers(1, 4)), replace=False)
        mask.flat[flat] = True
    elif how == "whole_set":
        mask = labels == rng.choice(np.unique(labels))
    else:  # every set
        for lab in np.unique(labels):
            where = np.flatnonzero(labels == lab)
            mask.flat[rng.choice(where)] = True
    return mask


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("op,mode", SET_MODES)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), variant=st.integers(0, 3),
       how=st.sampled_from(["few", "few", "whole_set", "every_set"]),
       precision=st.sampled_from(PRECISIONS), mixed=st.booleans())
def test_set_rule(op, mode, value, seed, variant, how, precision, mixed):
    rng = np.random.default_rng(seed)
    case = build_case(op, mode, rng, variant)
    x = case.inputs[case.x_name]
    mask = _positions(rng, case.labels, how)
    x_bad = x.copy()
    if mixed:  # a mixture of NaN, +Inf and -Inf, the chosen value first
        fill = rng.choice([VALUES[value], np.nan, np.inf, -np.inf], size=int(mask.sum()))
        fill[0] = VALUES[value]
        x_bad[mask] = fill
    else:
        x_bad[mask] = VALUES[value]
    compared = check_set_rule(case, x_bad, precision)
    if how != "every_set" and len(np.unique(case.labels)) > len(np.unique(case.labels[mask])):
        assert compared > 0


@pytest.mark.parametrize("op,mode", [("batch_norm", "training"), ("layer_norm", "forward"),
                                     ("group_norm", "vjp"), ("l2_normalize", "jvp")])
def test_set_rule_replacement_value_is_irrelevant(op, mode):
    """Unaffected sets do not depend on what the affected set holds: two different finite
    replacements of the poisoned element give bit-identical unaffected outputs (the set rule's
    premise), while the affected set's outputs do change."""
    rng = np.random.default_rng(5)
    case = build_case(op, mode, rng, 1)
    x = case.inputs[case.x_name]
    x2 = x.copy()
    x2.flat[0] = x.flat[0] + 1000.0
    a = case.evaluate("float32")
    b = case.evaluate("float32", **{case.x_name: x2})
    lab = case.labels.flat[0]
    for name, spec in case.outs.items():
        affected = spec(np.array([lab])) if callable(spec) else np.isin(spec, [lab])
        assert_same_where(b.outputs[name], a.outputs[name], ~affected, name)
        assert not np.all(same_bits(b.outputs[name][affected], a.outputs[name][affected])), name


# --------------------------------------------------------------------------------------------------
# BatchNorm inference: given statistics follow IEEE arithmetic elementwise


def _bn_ieee(x, rm, rv, gamma, beta, eps, layout):
    """gamma * ((x - mu) * (1 / sqrt(var + eps))) + beta in EXT with IEEE non-finite semantics,
    per channel (channel axis from `layout`), written out here."""
    shp = [1] * x.ndim
    shp[1 if layout == "channels_first" else -1] = -1
    e = lambda a: np.asarray(a, dtype=EXT).reshape(shp)  # noqa: E731
    with np.errstate(all="ignore"):
        y = (np.asarray(x, dtype=EXT) - e(rm)) * (1 / np.sqrt(e(rv) + EXT(eps)))
        if gamma is not None:
            y = y * e(gamma)
        if beta is not None:
            y = y + e(beta)
    return y


def _assert_class(actual, expected, what):
    """Same non-finite class everywhere: NaN where expected is NaN, the same infinity where it is
    infinite, finite elsewhere."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{what}: NaN pattern"
    inf = np.isinf(expected)
    assert np.array_equal(np.isinf(actual), inf), f"{what}: Inf pattern"
    assert np.array_equal(actual[inf], expected[inf]), f"{what}: sign of infinity"


def _channel_mask(shape, layout, channels):
    ch = np.indices(shape)[1 if layout == "channels_first" else len(shape) - 1]
    return np.isin(ch, channels)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("target", ["x", "running_mean", "running_var", "gamma", "beta"])
def test_batch_norm_inference_elementwise(target, value, layout):
    rng = np.random.default_rng(11)
    c = 4
    shape = (3, c, 5) if layout == "channels_first" else (3, 5, c)
    x = rng.standard_normal(shape)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    gamma = np.array([1.5, -0.5, 0.0, 2.0])  # a zero gamma: 0 * inf is NaN
    beta = rng.standard_normal(c)
    eps = 1e-5
    inputs = dict(x=x, running_mean=rm, running_var=rv, gamma=gamma, beta=beta)
    attrs = {"eps": eps, "layout": layout}
    fin = oracles.evaluate("batch_norm", "inference", inputs, attrs, "float32")
    if value == "-inf" and target == "running_var":
        with pytest.raises(oracles.OracleInputError, match="running_var"):
            oracles.evaluate("batch_norm", "inference", {**inputs, target: -np.inf * np.ones(c)},
                             attrs, "float32")
        return
    bad = inputs[target].copy()
    if target == "x":
        where = np.zeros(shape, dtype=bool)
        where.flat[rng.choice(x.size, size=5, replace=False)] = True
        bad[where] = VALUES[value]
        changed = where
    else:
        chans = [1, 2]  # one negative and one zero gamma
        bad[chans] = VALUES[value]
        changed = _channel_mask(shape, layout, chans)
    ev = oracles.evaluate("batch_norm", "inference", {**inputs, target: bad}, attrs, "float32")
    y = ev.outputs["y"]
    expect = _bn_ieee(*(bad if k == target else inputs[k]
                        for k in ("x", "running_mean", "running_var", "gamma", "beta")), eps, layout)
    _assert_class(y, expect, f"y with {value} in {target}")
    assert_same_where(y, fin.outputs["y"], ~changed, "y outside the changed elements")
    if value == "nan":  # a NaN input element gives NaN at that element only; a NaN statistic or
        assert np.array_equal(np.isnan(y), changed)  # parameter makes its channel NaN
    if target == "running_var" and value == "+inf":  # r = 0: y = gamma * 0 + beta = beta
        assert np.all(y[changed] == np.broadcast_to(beta.reshape(_shp(shape, layout)), shape)[changed])


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("target", ["x", "running_mean", "running_var", "gamma", "beta"])
def test_batch_norm_inference_bounds_stay_elementwise(target, value):
    """With given statistics an element's error bound depends on that element, its channel's
    statistics and parameters only: poisoning other elements (or another channel's statistics)
    leaves it bit-identical, so a wrong finite answer next to an Inf is still caught."""
    if value == "-inf" and target == "running_var":
        pytest.skip("negative running_var is invalid input (test_invalid)")
    rng = np.random.default_rng(15)
    c, shape = 4, (3, 4, 5)
    inputs = dict(x=rng.standard_normal(shape), running_mean=rng.standard_normal(c),
                  running_var=rng.uniform(0.5, 2, c), gamma=rng.standard_normal(c), beta=rng.standard_normal(c))
    bad = inputs[target].copy()
    if target == "x":
        changed = np.zeros(shape, dtype=bool)
        changed[0, 1, 2] = True
    else:
        changed = _channel_mask(shape, "channels_first", [1])
    bad[changed if target == "x" else 1] = VALUES[value]
    for precision in ("float32", "float64"):
        fin = oracles.evaluate("batch_norm", "inference", inputs, {"eps": 1e-5}, precision)
        ev = oracles.evaluate("batch_norm", "inference", {**inputs, target: bad}, {"eps": 1e-5}, precision)
        assert_same_where(ev.bounds["y"], fin.bounds["y"], ~changed, f"{precision} bound outside the changed elements")


def _shp(shape, layout):
    s = [1] * len(shape)
    s[1 if layout == "channels_first" else -1] = -1
    return tuple(s)


@pytest.mark.parametrize("value", VALUES)
def test_batch_norm_inference_gradients_elementwise(value):
    """With given statistics dx = gamma * r * dy does not read x, so a non-finite x leaves it
    bit-identical; the JVP changes only at the poisoned elements (through tgamma * xhat)."""
    rng = np.random.default_rng(12)
    c, shape = 3, (2, 3, 4)
    inputs = dict(x=rng.standard_normal(shape), running_mean=rng.standard_normal(c),
                  running_var=rng.uniform(0.5, 2, c), gamma=rng.standard_normal(c),
                  beta=rng.standard_normal(c))
    where = np.zeros(shape, dtype=bool)
    where.flat[[0, 7, 20]] = True
    xb = inputs["x"].copy()
    xb[where] = VALUES[value]
    dy = rng.standard_normal(shape)
    a = oracles.evaluate("batch_norm", "inference_vjp", {**inputs, "dy": dy}, {"eps": 1e-5}, "float64")
    b = oracles.evaluate("batch_norm", "inference_vjp", {**inputs, "x": xb, "dy": dy}, {"eps": 1e-5}, "float64")
    assert_same_where(b.outputs["dx"], a.outputs["dx"], True, "inference dx")
    assert_same_where(b.outputs["dbeta"], a.outputs["dbeta"], True, "inference dbeta")
    # dgamma[c] = sum(dy * xhat) over channel c: non-finite exactly in the poisoned channels
    chans = np.unique(np.indices(shape)[1][where])
    assert np.array_equal(~np.isfinite(b.outputs["dgamma"]), np.isin(np.arange(c), chans))
    tang = dict(tx=rng.standard_normal(shape), tgamma=rng.standard_normal(c), tbeta=rng.standard_normal(c))
    a = oracles.evaluate("batch_norm", "inference_jvp", {**inputs, **tang}, {"eps": 1e-5}, "float64")
    b = oracles.evaluate("batch_norm", "inference_jvp", {**inputs, "x": xb, **tang}, {"eps": 1e-5}, "float64")
    assert_same_where(b.outputs["ty"], a.outputs["ty"], ~where, "inference ty")
    assert np.all(~np.isfinite(b.outputs["ty"][where]))


# --------------------------------------------------------------------------------------------------
# non-finite gamma/beta act elementwise (statistics unaffected)


PARAM_OPS = [("batch_norm", "training"), ("layer_norm", "forward"), ("rms_norm", "forward"),
             ("group_norm", "forward"), ("instance_norm", "forward"), ("weight_norm", "forward")]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("variant", [0, 1, 2, 3])
@pytest.mark.parametrize("op,mode", PARAM_OPS)
def test_nonfinite_parameters_act_elementwise(op, mode, variant, value):
    """y = xhat * gamma + beta elementwise with the non-finite parameter (xhat from the same case
    without affine parameters, gamma = 1 for weight_norm's required g); statistics bit-identical."""
    rng = np.random.default_rng(100 + variant)
    case = build_case(op, mode, rng, variant)
    y_name = "w" if op == "weight_norm" else "y"
    plain_inputs = {k: v for k, v in case.inputs.items() if k not in case.params}
    if op == "weight_norm":
        plain_inputs["g"] = np.ones_like(case.inputs["g"])
    plain = oracles.evaluate(op, mode, plain_inputs, case.attrs, "float64")
    xhat = plain.outputs[y_name]
    fin = case.evaluate("float64")
    for target in case.params:
        bad = case.inputs[target].astype(np.float64).copy()
        flat = rng.choice(bad.size, size=min(2, bad.size), replace=False)
        bad.flat[flat] = VALUES[value]
        ev = case.evaluate("float64", **{target: bad})
        full = {k: np.asarray((bad if k == target else case.inputs[k]), dtype=EXT).ravel()[gidx]
                for k, gidx in case.params.items()}
        with np.errstate(all="ignore"):
            expect = xhat
            for k in ("gamma", "weight", "g"):
                if k in full:
                    expect = expect * full[k]
            if "beta" in full:
                expect = expect + full["beta"]
        assert_same_where(ev.outputs[y_name], expect, True, f"{y_name} with {value} in {target}")
        changed = np.isin(case.params[target], flat)
        assert_same_where(ev.outputs[y_name], fin.outputs[y_name], ~changed, "unchanged elements")
        assert np.all(~np.isfinite(ev.outputs[y_name][changed]) | (value != "nan"))
        for name in case.outs:
            if name != y_name:
                assert_same_where(ev.outputs[name], fin.outputs[name], True, f"statistic {name}")


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("target", ["running_mean", "running_var"])
@pytest.mark.parametrize("momentum", [0.1, 1.0, None])
def test_batch_norm_training_nonfinite_running_input(target, value, momentum):
    """A non-finite *incoming* running statistic is an IEEE elementwise input of the update
    new = (1 - w) old + w batch: its channel's new value is that formula's IEEE value (NaN for NaN,
    +-inf for +-inf, and NaN at w = 1 since 0 * NaN and 0 * inf are NaN), every other output is
    bit-identical."""
    if target == "running_var" and value == "-inf":
        pytest.skip("negative running_var is invalid input (test_invalid)")
    rng = np.random.default_rng(13)
    c = 3
    inputs = dict(x=rng.standard_normal((4, c, 2)), running_mean=rng.standard_normal(c),
                  running_var=rng.uniform(0.5, 2, c))
    attrs = {"eps": 1e-5, "momentum": momentum}
    fin = oracles.evaluate("batch_norm", "training", inputs, attrs, "float64")
    bad = inputs[target].copy()
    bad[1] = VALUES[value]
    ev = oracles.evaluate("batch_norm", "training", {**inputs, target: bad}, attrs, "float64")
    for name, out in ev.outputs.items():
        changed = np.zeros(out.shape, dtype=bool)
        if name == target:
            changed[1] = True
            w = EXT(1.0) if momentum is None else EXT(momentum)  # num_batches_tracked = 0
            with np.errstate(all="ignore"):
                expect = (1 - w) * EXT(VALUES[value]) + w * fin.outputs["mean" if target == "running_mean" else "var"][1]
            assert not np.isfinite(expect)
            assert same_bits(out[1], expect), (name, out[1], expect)  # inf, or NaN from 0 * inf
        assert_same_where(out, fin.outputs[name], ~changed, name)


# regression: _check_running once built its message eagerly with a[~isnan(a)].min(), which raised
# numpy's zero-size ValueError when every running_var is NaN (e.g. C = 1)
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_batch_norm_all_running_var_nan(mode):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 1, 3))
    ev = oracles.evaluate("batch_norm", mode, {"x": x, "running_mean": np.zeros(1), "running_var": np.full(1, np.nan)},
                          {"eps": 1e-5}, "float64")
    if mode == "inference":
        assert np.all(np.isnan(ev.outputs["y"]))
    else:
        assert np.isnan(ev.outputs["running_var"]).all() and np.isfinite(ev.outputs["y"]).all()
