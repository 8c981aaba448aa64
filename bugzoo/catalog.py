"""The catalog: every known-buggy variant, one `Variant` per (bug, op).

Each bug is implemented with the oracle's own machinery: a changed eps or attribute passed to
`oracles.evaluate`, a changed `Norm` or view evaluated by `oracles._core` (`_engine`), or a
statistics function that computes what a buggy kernel computes, in the case's format where the bug
is about finite precision (`_formats`). Outputs are EXT before `Variant.evaluate` rounds them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable

import numpy as np

from oracles import registry
from oracles._core import accurate_stats, reduction_size
from oracles.dtypes import EXT
from oracles.op_layer_norm import trailing_ndim
from oracles.op_mvn import axes_view

from . import _typed
from ._engine import (BN_INFERENCE, NotApplicable, arrays, attrs_of, bn_forward, bn_generic,
                      bn_running_inputs, bn_steps, bn_view, layer_outputs, reference, validate)
from ._formats import (accumulation_format, low_precision_stats, one_pass_low_precision_stats,
                       one_pass_stats)
from .variant import ALL_DTYPES, Variant

# --------------------------------------------------------------------------------------------------
# references

CRADLE = ("Pham, Lutellier, Qi, Tan: CRADLE: Cross-Backend Validation to Detect and Localize Bugs in "
          "Deep Learning Libraries, ICSE 2019 (inconsistent BatchNorm epsilon handling across Keras "
          "backends)")
LEMON = ("Wang, Yan, Chen, Liu, Zhang: Deep Learning Library Testing via Effective Model Generation "
         "(LEMON), ESEC/FSE 2020 (BatchNormalization bugs with wrong moving statistics and "
         "NaN-producing outputs)")
DOC_EPS = ("shared/reference/002_14d3f08b5ce94e7c.txt (TorchLean BugZoo NormalizationState, "
           "wrongEpsilonOutsideSqrt)")
DOC_STATE = ("shared/reference/002_14d3f08b5ce94e7c.txt (TorchLean BugZoo NormalizationState: "
             "running statistics are part of the BatchNorm inference contract)")
DOC_NAN = ("shared/reference/002_14d3f08b5ce94e7c.txt (TorchLean BugZoo NormalizationState: "
           "BatchNorm failures with NaN-producing outputs)")

KERAS_CNTK_EPS = ("https://github.com/keras-team/keras/pull/10427 (CNTK backend BatchNorm computed "
                  "(x - mean) / (sqrt(var) + eps); fixed to sqrt(var + eps))")
KERAS_EPS_PR = ("https://github.com/keras-team/keras/pull/8726 (merged change moving epsilon from "
                "the variance to the denominator)")
TF_EPS_DOC = ("https://github.com/tensorflow/tensorflow/issues/24690 (tf.keras.backend."
              "batch_normalization documented eps outside the root, implemented inside)")
FLAX_ONE_PASS = ("https://github.com/google/flax/issues/1491 (BatchNorm var = E[x^2] - E[x]^2 "
                 "negative, NaN; fixed by clamping at 0)")
TF_MOMENTS = ("https://github.com/tensorflow/tensorflow/issues/3290 (tf.nn.moments negative "
              "variance; workaround: clamp to zero)")
XLA_ONE_PASS = ("https://github.com/tensorflow/tensorflow/issues/118701 (XLA BatchNormExpander "
                "one-pass variance: negative variance and NaN for a large offset)")
TT_ONE_PASS = ("https://github.com/tenstorrent/tt-metal/issues/45968 (batch_norm training: "
               "E[x^2] - E[x]^2 cancels for large mean, low variance)")
TORCH_LN_FP16 = ("https://github.com/pytorch/pytorch/issues/66707 (layer_norm must accumulate in "
                 "fp32 for fp16 inputs)")
MXNET_LN_FP16 = ("https://github.com/apache/mxnet/issues/14073 (LayerNorm reduced in fp16 for "
                 "fp16 inputs)")
ET_NORMS_FP16 = ("https://github.com/pytorch/executorch/pull/16727 (layer/group norm accumulated "
                 "in the input dtype; fixed to fp32 accumulation)")
TORCH_RMS_FP16 = ("https://github.com/pytorch/pytorch/pull/133085 (RMSNorm in fp16: x**2 "
                  "overflows)")
ORT_LN_FP16 = ("https://github.com/microsoft/onnxruntime/issues/17692 (DirectML LayerNormalization "
               "in fp16 fails on large variance)")
TORCH_ESTIMATOR = ("https://github.com/pytorch/pytorch/issues/77427 (BatchNorm normalizes with the "
                   "biased variance, stores the unbiased one in running_var)")
TORCH_ESTIMATOR_2 = ("https://github.com/pytorch/pytorch/issues/60528 (biased var for the output, "
                     "unbiased for running_var)")
ARENA_ESTIMATOR = ("https://github.com/callummcdougall/ARENA_3.0/issues/415 (reimplementation "
                   "updates running_var with the biased variance)")
TORCH_MOMENTUM = ("https://github.com/pytorch/examples/issues/289 (BatchNorm momentum convention: "
                  "PyTorch m is 1 - TensorFlow/Keras momentum)")
P2K_MOMENTUM = ("https://github.com/gmalivenko/pytorch2keras/issues/70 (BatchNorm momentum not "
                "converted between conventions; NaNs after training)")
TF_NOT_UPDATED = ("https://github.com/tensorflow/tensorflow/issues/11965 (moving mean/variance of "
                  "BatchNorm not updated during training)")
KERAS_RUNNING_IN_TRAIN = ("https://github.com/keras-team/keras/issues/2138 (which statistics "
                          "BatchNormalization normalizes with in training)")
TFA_GROUPS = ("https://github.com/tensorflow/addons/issues/751 (GroupNormalization reshaped "
              "channels into groups incorrectly for channels_last)")
FLUX_NAN = ("https://github.com/FluxML/Flux.jl/issues/2071 (BatchNorm NaN propagation differs "
            "between CPU and GPU)")
TF_BN_NAN = ("https://github.com/tensorflow/tensorflow/issues/38644 (BatchNormalization outputs "
             "NaN under certain parameters)")
TORCH_WN_DIM = ("https://github.com/pytorch/pytorch/issues/7865 (norm-based reparametrizations "
                "assume dim 0 is the output dim, wrong for ConvTranspose)")

# --------------------------------------------------------------------------------------------------
# helpers

CENTERED_OPS = ("batch_norm", "layer_norm", "group_norm", "instance_norm", "mvn")
EPS_INSIDE_OPS = ("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm")
STAT_OPS = ("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "mvn", "l2_normalize")
BN_FORWARD_TRAINING = ("training", "training_steps")


def _base(stats):
    return accurate_stats if stats is None else stats


def _own_stats(name: str, stats) -> None:
    if stats is not None and stats is not accurate_stats:
        raise ValueError(f"{name} defines its own statistics; leave _stats at its default")


def _need_dtype(name: str, dtype):
    if dtype is None:
        raise NotApplicable(f"{name} is about finite precision: evaluate it in a format (dtype=...)")
    return dtype


def _forward_modes(op: str) -> tuple[str, ...]:
    return BN_FORWARD_TRAINING if op == "batch_norm" else ("forward",)


def _all_modes(op: str) -> tuple[str, ...]:
    return registry.op_def(op).modes


def _x_name(op: str) -> str:
    return registry.op_def(op).x_name


# --------------------------------------------------------------------------------------------------
# epsilon


def _eps_changed(op: str, new_eps: Callable[[float], float]):
    def impl(mode, inputs, attrs, dtype, stats):
        a = attrs_of(op, attrs)
        changed = dict(attrs)
        changed["eps"] = new_eps(a["eps"])
        return reference(op, mode, inputs, changed, _base(stats))
    return impl


def _outside(norm):
    return replace(norm, eps_mode="outside")


def _norm_changed(op: str, change):
    def impl(mode, inputs, attrs, dtype, stats):
        if op == "batch_norm":
            return bn_generic(mode, inputs, attrs, norm=change, stats=_base(stats))
        return layer_outputs(op, mode, inputs, attrs, norm=change, stats=_base(stats))
    return impl


def _l2_convention_swapped(mode, inputs, attrs, dtype, stats):
    a = attrs_of("l2_normalize", attrs)
    mode_now = a.get("eps_mode", "max_norm")
    swap = {"max_norm": "max_sumsq", "max_sumsq": "max_norm"}
    if mode_now not in swap:
        raise NotApplicable("l2_eps_convention_swapped needs eps_mode max_norm or max_sumsq, "
                            f"not {mode_now!r}")
    changed = dict(attrs)
    changed["eps_mode"] = swap[mode_now]
    return reference("l2_normalize", mode, inputs, changed, _base(stats))


# --------------------------------------------------------------------------------------------------
# BatchNorm state


def _needs_running(i) -> None:
    if "running_mean" not in i or "running_var" not in i:
        raise NotApplicable("the variant is about running statistics; the case has none")


def _training_step_variant(step):
    """impl for a training-only BatchNorm variant from its one-step function
    step(inputs, attrs, stats) -> outputs of mode "training"; training_steps chains it."""
    def impl(mode, inputs, attrs, dtype, stats):
        if mode == "training_steps":
            return bn_steps(inputs, attrs, lambda ik, ak, k: step(ik, ak, _base(stats)))
        return step(inputs, attrs, _base(stats))
    return impl


def _uses_running_step(inputs, attrs, stats):
    out = dict(validate("batch_norm", "training", inputs, attrs, stats))
    i = arrays(inputs)
    _needs_running(i)
    a = attrs_of("batch_norm", attrs)
    v = bn_view(i, a)
    f = bn_forward(v, a, given=bn_running_inputs(i, v.x.shape[1], required=True))
    out["y"], out["rstd"] = v.back(f.y), v.stat(f.r)
    return out


def _not_updated_step(inputs, attrs, stats):
    out = dict(validate("batch_norm", "training", inputs, attrs, stats))
    i = arrays(inputs)
    _needs_running(i)
    out["running_mean"] = np.asarray(i["running_mean"], dtype=EXT)
    out["running_var"] = np.asarray(i["running_var"], dtype=EXT)
    return out


def _batch_stats_at_inference(mode, inputs, attrs, dtype, stats):
    validate("batch_norm", mode, inputs, attrs)
    i = {k: v for k, v in inputs.items() if k not in ("running_mean", "running_var")}
    out = reference("batch_norm", mode.replace("inference", "training"), i, attrs, _base(stats))
    return {"y": out["y"]} if mode == "inference" else dict(out)


def _attr_changed_step(change):
    """One training step with changed attributes (conventions) for the running update."""
    def step(inputs, attrs, stats):
        changed = change(attrs_of("batch_norm", attrs), dict(attrs))
        validate("batch_norm", "training", inputs, attrs, stats)
        return dict(reference("batch_norm", "training", inputs, changed, stats))
    return step


def _estimator_swapped(a, attrs):
    attrs["running_var_estimator"] = {"biased": "unbiased", "unbiased": "biased"}[a["running_var_estimator"]]
    return attrs


def _momentum_inverted(a, attrs):
    if a["momentum"] is None:
        raise NotApplicable("momentum_inverted needs a momentum (None is the cumulative average)")
    attrs["momentum_on"] = {"batch": "running", "running": "batch"}[a["momentum_on"]]
    return attrs


def _estimator_step(inputs, attrs, stats):
    i = arrays(inputs)
    _needs_running(i)
    try:
        return _attr_changed_step(_estimator_swapped)(inputs, attrs, stats)
    except registry.OracleInputError as e:
        if e.parameter == "reduction size n":  # unbiased estimator at n = 1 is 0/0
            out = dict(validate("batch_norm", "training", inputs, attrs, stats))
            out["running_var"] = np.full_like(out["running_var"], EXT("nan"))
            return out
        raise


def _momentum_step(inputs, attrs, stats):
    _needs_running(arrays(inputs))
    return _attr_changed_step(_momentum_inverted)(inputs, attrs, stats)


# --------------------------------------------------------------------------------------------------
# statistics


def _unbiased(base):
    def stats(x, norm):
        m, v = base(x, norm)
        n = reduction_size(x.shape, norm.axes)
        with np.errstate(divide="ignore", invalid="ignore"):
            return m, v * (EXT(n) / EXT(n - 1))  # n = 1: 0 * inf = NaN
    return stats


def _stats_variant(op: str, make_stats, *, splice_running: bool):
    """impl normalizing with the statistics `make_stats(dtype, stats)` computes. For BatchNorm with
    `splice_running` the running statistics stay those of the correct op."""
    def impl(mode, inputs, attrs, dtype, stats):
        s = make_stats(dtype, stats)
        if op != "batch_norm":
            return layer_outputs(op, mode, inputs, attrs, stats=s)
        if not splice_running:
            return bn_generic(mode, inputs, attrs, stats=s)

        def step(ik, ak, k=0):
            out = dict(bn_generic("training", ik, ak, stats=s))
            if "running_mean" in out:
                right = validate("batch_norm", "training", ik, ak, _base(stats))
                out["running_mean"], out["running_var"] = right["running_mean"], right["running_var"]
            return out
        return bn_steps(inputs, attrs, step) if mode == "training_steps" else step(inputs, attrs)
    return impl


def _one_pass(clamp: bool):
    name = "one_pass_variance_clamped" if clamp else "one_pass_variance"

    def make(dtype, stats):
        _own_stats(name, stats)
        return one_pass_stats(accumulation_format(_need_dtype(name, dtype)), clamp=clamp)
    return make


def _one_pass_low_precision(dtype, stats):
    name = "one_pass_variance_low_precision"
    _own_stats(name, stats)
    d = _need_dtype(name, dtype)
    if d not in ("float16", "bfloat16"):
        raise NotApplicable(f"{name} is about float16/bfloat16 inputs, not {d}")
    return one_pass_low_precision_stats(d)


def _low_precision(dtype, stats):
    _own_stats("low_precision_accumulation", stats)
    d = _need_dtype("low_precision_accumulation", dtype)
    if d not in ("float16", "bfloat16"):
        raise NotApplicable(f"low_precision_accumulation is about float16/bfloat16 inputs, not {d}")
    return low_precision_stats(d)


def _unbiased_stats(dtype, stats):
    return _unbiased(_base(stats))


# --------------------------------------------------------------------------------------------------
# NaN


def _nan_spreads(op: str):
    def impl(mode, inputs, attrs, dtype, stats):
        if mode == "training_steps":  # step by step: a NaN batch spoils its step and the state
            return bn_steps(inputs, attrs, lambda ik, ak, k: impl("training", ik, ak, dtype, stats))
        out = validate(op, mode, inputs, attrs, _base(stats))
        name = _x_name(op)
        with np.errstate(invalid="ignore"):
            bad = not np.all(np.isfinite(np.asarray(inputs[name], dtype=EXT)))
        if not bad:
            return dict(out)
        return {k: np.full_like(np.asarray(val, dtype=EXT), EXT("nan")) for k, val in out.items()}
    return impl


# --------------------------------------------------------------------------------------------------
# axes and groups


def _channel_axis(ndim: int, layout: str) -> int:
    return 1 if layout == "channels_first" else ndim - 1


def _gn_interleaved(mode, inputs, attrs, dtype, stats):
    """GroupNorm with group g = {c : c % G == g}: permute the channels so that those groups are
    contiguous, run the correct GroupNorm, and permute back."""
    a = attrs_of("group_norm", attrs)
    validate("group_norm", mode, inputs, attrs, _base(stats))
    i = arrays(inputs)
    x = i["x"]
    axis = _channel_axis(x.ndim, a.get("layout", "channels_first"))
    c, g = x.shape[axis], int(a["num_groups"])
    perm = np.array([grp + g * j for grp in range(g) for j in range(c // g)])
    inv = np.argsort(perm)
    per_channel = a.get("affine", "per_channel") == "per_channel"
    moved = {}
    for k, val in i.items():
        if k in ("x", "dy", "tx"):
            moved[k] = np.take(val, perm, axis=axis)
        elif k in ("gamma", "beta", "tgamma", "tbeta") and per_channel:
            moved[k] = val[perm]
        else:
            moved[k] = val
    out = reference("group_norm", mode, moved, attrs, _base(stats))
    back = {}
    for k, val in out.items():
        if k in ("y", "dx", "ty"):
            back[k] = np.take(val, inv, axis=axis)
        elif k in ("dgamma", "dbeta") and per_channel:
            back[k] = val[inv]
        else:
            back[k] = val  # mean, rstd: group g of the permuted input is interleaved group g
    return back


def _ln_last_axis_view(i, a, correct):
    """LayerNorm's statistics over the last axis only; gamma/beta still span the k trailing dims."""
    x = i["x"]
    k = trailing_ndim(x.ndim, a.get("normalized_ndim"), a.get("axis"))
    v = axes_view(x, (x.ndim - 1,), centered=True, divisor="mean", eps_mode=correct.norm.eps_mode)
    pshape = (1,) * (x.ndim - k) + x.shape[x.ndim - k:]
    for name in ("gamma", "beta"):
        v.add_param(name, i.get(name), pshape)
    v.stat_shape = x.shape[:-1]  # one statistic per last-axis vector
    return v


def _ln_last_axis(mode, inputs, attrs, dtype, stats):
    return layer_outputs("layer_norm", mode, inputs, attrs, view=_ln_last_axis_view, stats=_base(stats))


def _wn_wrong_dim_view(i, a, correct):
    """weight norm with the norm taken over `dim` (the dim that should be kept)."""
    v = i["v"]
    dim = int(a.get("dim", 0)) % v.ndim
    w = axes_view(v, (dim,), centered=False, divisor="sum", eps_mode=correct.norm.eps_mode)
    w.add_param("gamma", i["g"], tuple(v.shape[j] if j == dim else 1 for j in range(v.ndim)))
    return w


def _wn_wrong_dim(mode, inputs, attrs, dtype, stats):
    return layer_outputs("weight_norm", mode, inputs, attrs, view=_wn_wrong_dim_view, stats=_base(stats))


def _rms_centered(norm):
    return replace(norm, centered=True)


# --------------------------------------------------------------------------------------------------
# building the catalog


def _fns_for(op: str, modes: Iterable[str], impl):
    """(fn, oracle_fn, extra_fns) for an op and the modes a variant corrupts."""
    factories = _typed.FACTORIES[op]
    if op != "batch_norm":
        name, make = factories[0]
        return make(impl), name, ()
    table = dict(factories)
    wanted = []
    if any(m in BN_INFERENCE for m in modes):
        wanted.append("batch_norm_inference")
    if "training" in modes or "training_steps" in modes:
        wanted += ["batch_norm_training", "batch_norm_training_steps"]
    if not wanted:  # training_vjp/jvp only: the forward twin is still the training function
        wanted = ["batch_norm_training", "batch_norm_training_steps"]
    built = [(n, table[n](impl)) for n in wanted]
    return built[0][1], built[0][0], tuple(built[1:])


def _variant(name, op, modes, wrong, trigger, regime, refs, impl, *, dtypes=ALL_DTYPES, omitted=()):
    fn, oracle_fn, extra = _fns_for(op, modes, impl)
    return Variant(name=name, op=op, modes=tuple(modes), wrong=wrong, trigger=trigger,
                   trigger_regime=regime, references=tuple(refs), fn=fn, oracle_fn=oracle_fn,
                   impl=impl, dtypes=tuple(dtypes), omitted_outputs=tuple(omitted), extra_fns=extra)


def _build() -> list[Variant]:
    out: list[Variant] = []
    add = out.append

    for op in EPS_INSIDE_OPS:
        add(_variant(
            "eps_outside_sqrt", op, _all_modes(op),
            "epsilon is added to the standard deviation instead of the variance: "
            "(x - mu) / (sqrt(var) + eps) instead of (x - mu) / sqrt(var + eps).",
            "a variance not large against eps: the relative change of the scale is about "
            "eps/sqrt(var) - eps/(2 var), visible once it exceeds the format's precision "
            "(var near eps, small-variance channels, or a large eps)",
            "var_near_eps", (CRADLE, DOC_EPS, KERAS_CNTK_EPS, KERAS_EPS_PR, TF_EPS_DOC),
            _norm_changed(op, _outside)))

    for op in EPS_INSIDE_OPS + ("mvn", "l2_normalize"):
        add(_variant(
            "eps_dropped", op, _all_modes(op),
            "epsilon is ignored: the scale is 1/sqrt(var) (1/norm for L2 normalization).",
            "a variance (L2: a norm) near or below eps; a constant reduction set (zero vector) gives "
            "0/0 = NaN or 1/0 = inf where the correct op is finite",
            "norm_near_eps" if op == "l2_normalize" else "var_near_eps", (CRADLE, DOC_EPS),
            _eps_changed(op, lambda e: 0.0)))

    for op in EPS_INSIDE_OPS + ("mvn",):
        add(_variant(
            "eps_squared", op, _all_modes(op),
            "epsilon is squared before use (eps**2 in place of eps), e.g. a converter treating "
            "eps as a standard deviation.",
            "a variance near eps (for eps < 1 the effective eps is far smaller, so the scale "
            "grows as with a dropped eps)",
            "var_near_eps", (CRADLE, DOC_EPS),
            _eps_changed(op, lambda e: e * e)))

    add(_variant(
        "l2_eps_added_to_norm", "l2_normalize", _all_modes("l2_normalize"),
        "epsilon is added to the norm instead of flooring it: x / (||x|| + eps) instead of the "
        "case's convention (max(||x||, eps), sqrt(max(sum x^2, eps)), sqrt(sum x^2 + eps) or none).",
        "a norm not large against eps: the relative change is about eps/||x||",
        "norm_near_eps", (DOC_EPS, CRADLE),
        _norm_changed("l2_normalize", _outside)))

    add(_variant(
        "l2_eps_convention_swapped", "l2_normalize", _all_modes("l2_normalize"),
        "the eps floor is applied to the squared norm instead of the norm or vice versa "
        "(tf.math.l2_normalize's sqrt(max(sum x^2, eps)) vs torch's max(||x||, eps)) with the same eps.",
        "a norm below sqrt(eps) or eps (the larger of the two floors): small or zero vectors",
        "norm_near_eps", (CRADLE,),
        _l2_convention_swapped))

    add(_variant(
        "training_uses_running_stats", "batch_norm", BN_FORWARD_TRAINING,
        "training mode normalizes with the running (moving) statistics instead of the batch "
        "statistics; the reported batch mean/var and the running update are correct.",
        "running statistics that differ from the batch's mean and biased variance",
        "running_stats_differ_from_batch", (LEMON, DOC_STATE, KERAS_RUNNING_IN_TRAIN),
        _training_step_variant(_uses_running_step)))

    add(_variant(
        "running_stats_not_updated", "batch_norm", BN_FORWARD_TRAINING,
        "training mode never updates the running statistics: they come back unchanged.",
        "a nonzero momentum weight and batch statistics that differ from the running ones",
        "running_stats_differ_from_batch", (LEMON, DOC_STATE, TF_NOT_UPDATED),
        _training_step_variant(_not_updated_step)))

    add(_variant(
        "batch_stats_at_inference", "batch_norm", BN_INFERENCE,
        "inference mode normalizes with the statistics of the current batch instead of the "
        "running statistics (the layer is left in training mode).",
        "running statistics that differ from the batch's mean and biased variance (for the "
        "gradients: any batch, since the batch statistics depend on x)",
        "running_stats_differ_from_batch", (LEMON, DOC_STATE),
        _batch_stats_at_inference))

    for op in CENTERED_OPS:
        add(_variant(
            "unbiased_variance_normalizes", op, _forward_modes(op),
            "the unbiased (Bessel-corrected, n-1) variance normalizes instead of the biased one "
            "(and is reported as the batch statistic); running statistics are unaffected.",
            "a small reduction set: the scale changes by sqrt((n-1)/n), about 1/(2n) relative",
            "small_reduction", (TORCH_ESTIMATOR, TORCH_ESTIMATOR_2),
            _stats_variant(op, _unbiased_stats, splice_running=True)))

    add(_variant(
        "running_var_estimator_swapped", "batch_norm", BN_FORWARD_TRAINING,
        "the running variance is updated with the other estimator (biased instead of unbiased "
        "or vice versa) than the case's convention.",
        "a small reduction set and a nonzero momentum weight: running_var changes by "
        "w * var / (n - 1)",
        "small_reduction", (LEMON, TORCH_ESTIMATOR, ARENA_ESTIMATOR),
        _training_step_variant(_estimator_step)))

    add(_variant(
        "momentum_inverted", "batch_norm", BN_FORWARD_TRAINING,
        "the momentum convention is inverted: m weighs the running statistic where it should "
        "weigh the batch statistic (m <-> 1 - m, PyTorch vs Keras/ONNX convention).",
        "momentum not 0.5 and batch statistics that differ from the running ones",
        "momentum_not_half", (LEMON, TORCH_MOMENTUM, P2K_MOMENTUM),
        _training_step_variant(_momentum_step)))

    one_pass_trigger = (
        "a mean large against the spread: the cancellation error is about u * mean^2 (u of the "
        "format the sums are kept in) against a variance spread^2, i.e. |mean|/std beyond about "
        "1/sqrt(u)")
    for clamp in (False, True):
        name = "one_pass_variance_clamped" if clamp else "one_pass_variance"
        wrong = ("the variance is computed in one pass as E[x^2] - E[x]^2 in the accumulation "
                 "format and clamped at 0, so a cancelled variance collapses to 0 and the output "
                 "to (x - mu)/sqrt(eps)." if clamp else
                 "the variance is computed in one pass as E[x^2] - E[x]^2 in the accumulation "
                 "format without a clamp, so cancellation gives wrong or negative variances "
                 "(NaN once var < -eps).")
        refs = (FLAX_ONE_PASS, TF_MOMENTS, XLA_ONE_PASS, LEMON) if not clamp else (FLAX_ONE_PASS, TF_MOMENTS)
        for op in CENTERED_OPS:
            # bfloat16 is left out: bfloat16 data has |mean|/spread <= ~2**8, so E[x^2] - E[x]^2
            # in float32 loses at most ~16 of 24 bits, which the error model allows an honest
            # (Welford) algorithm; no bfloat16 case can tell this variant from a correct one.
            add(_variant(name, op, _forward_modes(op), wrong, one_pass_trigger,
                         "large_mean_small_spread", refs,
                         _stats_variant(op, _one_pass(clamp), splice_running=False),
                         dtypes=("float16", "float32", "float64")))
    for op in CENTERED_OPS:
        add(_variant(
            "one_pass_variance_low_precision", op, _forward_modes(op),
            "the variance is computed in one pass as E[x^2] - E[x]^2 with every sum and product "
            "kept in the input's half format (float16/bfloat16), without a clamp.",
            one_pass_trigger + "; in bfloat16 already |mean|/std beyond ~16",
            "large_mean_small_spread", (TT_ONE_PASS, FLAX_ONE_PASS, ET_NORMS_FP16),
            _stats_variant(op, _one_pass_low_precision, splice_running=False),
            dtypes=("float16", "bfloat16")))

    for op in STAT_OPS:
        add(_variant(
            "low_precision_accumulation", op, _forward_modes(op),
            "the statistics are accumulated sequentially in the input's half format "
            "(float16/bfloat16) instead of float32: sums stagnate once they outgrow the "
            "elements, and squares overflow in float16.",
            "a long reduction (n beyond about 2**11 for float16, 2**8 for bfloat16 with "
            "elements of similar size), or float16 values whose squares or their sum exceed 65504",
            "long_reduction_or_large_values",
            (TORCH_LN_FP16, MXNET_LN_FP16, ET_NORMS_FP16, TORCH_RMS_FP16, ORT_LN_FP16),
            _stats_variant(op, _low_precision, splice_running=False), dtypes=("float16", "bfloat16")))

    for op in STAT_OPS:
        add(_variant(
            "nan_spreads", op, _all_modes(op),
            "a NaN or infinity in one reduction set (channel, group, row) makes every output of "
            "the whole call NaN instead of only that set's.",
            "a non-finite input element while other reduction sets are finite (BatchNorm "
            "inference: any non-finite element)",
            "nonfinite_in_one_set", (LEMON, DOC_NAN, TF_BN_NAN, FLUX_NAN),
            _nan_spreads(op)))

    add(_variant(
        "group_norm_interleaved", "group_norm", _all_modes("group_norm"),
        "groups are formed from interleaved channels (channel c in group c % G) instead of "
        "contiguous blocks of C/G channels.",
        "1 < num_groups < C with channels of different statistics",
        "groups_between_1_and_c", (TFA_GROUPS,), _gn_interleaved))

    add(_variant(
        "layer_norm_last_axis_only", "layer_norm", _all_modes("layer_norm"),
        "the statistics are taken over the last axis only instead of the trailing "
        "normalized_ndim axes (gamma and beta still span them).",
        "normalized_ndim >= 2 (axis <= rank - 2) with rows of different statistics",
        "normalized_ndim_ge_2", (CRADLE,), _ln_last_axis, omitted=("mean", "rstd")))

    add(_variant(
        "rms_norm_subtracts_mean", "rms_norm", _all_modes("rms_norm"),
        "RMSNorm subtracts the mean (it computes LayerNorm without beta): "
        "(x - mean) / sqrt(var + eps) instead of x / sqrt(mean(x^2) + eps).",
        "rows with a mean not small against their spread",
        "nonzero_mean", (CRADLE,), _norm_changed("rms_norm", _rms_centered)))

    add(_variant(
        "weight_norm_wrong_dim", "weight_norm", _all_modes("weight_norm"),
        "the norm is taken over `dim` instead of over every dim except `dim` (reduce-axis vs "
        "keep-axis confusion), so each column rather than each output row is normalized.",
        "any v with more than one element: for 2+ dims the two reductions differ; for a vector "
        "the correct norm is per element (|v_i|) and the variant's is the whole vector's",
        "any_input", (TORCH_WN_DIM,), _wn_wrong_dim))
    return out


VARIANTS: list[Variant] = _build()


def variants_for(op: str, mode: str | None = None, dtype: str | None = None) -> list[Variant]:
    """The variants of `op` that corrupt `mode` (any mode if None) and apply to `dtype` (any if None)."""
    return [v for v in VARIANTS if v.op == op and (mode is None or mode in v.modes)
            and (dtype is None or dtype in v.dtypes)]


def variant(name: str, op: str) -> Variant:
    """The variant `name` of `op`; KeyError if there is none."""
    for v in VARIANTS:
        if v.name == name and v.op == op:
            return v
    raise KeyError(f"no bug-zoo variant {name!r} for op {op!r}")
