"""TensorFlow and Keras 3 runners: four public code paths, each its own runner id.

- ``tf.nn``: what a user composes from TensorFlow ops: `tf.nn.moments` + `tf.nn.batch_normalization`
  for batch, layer, instance, group (through a reshape) and mean-variance normalization, and
  `tf.math.l2_normalize`. Running statistics follow the `tf.train.ExponentialMovingAverage` update
  ``old - (old - batch) * (1 - decay)``, written in TF ops with the weight rounded to the statistics'
  dtype (ExponentialMovingAverage itself rounds decay to float32, see its test).
- ``tf.fused_batch_norm``: `tf.compat.v1.nn.fused_batch_norm` (the FusedBatchNormV3 kernel; on CPU
  with oneDNN, ``_MklNativeFusedBatchNormV3``), data formats NHWC/NCHW and NDHWC/NCDHW.
- ``keras``: Keras 3 layers on the TensorFlow backend (`BatchNormalization`, `LayerNormalization`,
  `GroupNormalization`, `RMSNormalization`), weights set from the case.
- ``keras.UnitNormalization``: `keras.layers.UnitNormalization`, separate because it computes in the
  input dtype where the other Keras layers upcast half inputs to float32.

Gradients: `tf.GradientTape` gives VJPs (input and parameter gradients; for Keras the trainable
weights), `tf.autodiff.ForwardAccumulator` gives JVPs.

Every ``tf.nn`` and Keras computation runs inside a `tf.function` (graph mode, as `tf.function`
code and Keras' `fit`/`predict` run), cached per (path, op, mode, dtype, rank, attrs that change the
graph), so a case costs one dispatch. Each function has a fixed input signature with unknown dims
(Keras: except the axes the layer's weights are built for): it is traced once, and a case's numerics
never depend on which shapes were traced before (with retracing, a shape-specialized graph and a
relaxed one round differently in the last bits). Values that do not change the graph (eps and the
running-average weights of ``tf.nn``) are fed as tensors, rounded to the dtype TensorFlow converts
a Python float to. Keras layers are cached per configuration (eps and momentum included: they are
Python floats baked into the layer's graph, so a new value costs a layer build and a trace) and
their weights are set with ``assign``. The fused op is one kernel and runs eagerly (its epsilon and
exponential_avg_factor are op attributes: a graph would be retraced for every value).

TensorFlow is imported lazily (in `setup`), with ``TF_CPP_MIN_LOG_LEVEL=2`` (set before the import)
and one intra-/inter-op thread.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import OrderedDict
from typing import Any, Callable, Mapping

import numpy as np

from oracles.op_layer_norm import trailing_ndim
from oracles.op_mvn import normalize_axes

from .base import Conventions, Runner, Unsupported, framework_call

__all__ = ["FusedBatchNormRunner", "KerasRunner", "KerasUnitNormRunner", "TFNNRunner", "runners"]

ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
_FWD = ("forward", "vjp", "jvp")
_BN_MODES = ("inference", "training", "training_steps", "inference_vjp", "training_vjp",
             "inference_jvp", "training_jvp")
_BN_DEFAULTS = {"layout": "channels_first", "momentum": 0.1, "momentum_on": "batch",
                "running_var_estimator": "unbiased", "num_batches_tracked": 0}

_DOCS = {
    "moments": "https://www.tensorflow.org/api_docs/python/tf/nn/moments",
    "batch_normalization": "https://www.tensorflow.org/api_docs/python/tf/nn/batch_normalization",
    "ema": "https://www.tensorflow.org/api_docs/python/tf/train/ExponentialMovingAverage",
    "l2_normalize": "https://www.tensorflow.org/api_docs/python/tf/math/l2_normalize",
    "fused": "https://www.tensorflow.org/api_docs/python/tf/compat/v1/nn/fused_batch_norm",
    "fused_kernel": "https://github.com/tensorflow/tensorflow/blob/master/tensorflow/core/kernels/fused_batch_norm_op.cc",
    "keras_bn": "https://keras.io/api/layers/normalization_layers/batch_normalization/",
    "keras_ln": "https://keras.io/api/layers/normalization_layers/layer_normalization/",
    "keras_gn": "https://keras.io/api/layers/normalization_layers/group_normalization/",
    "keras_rms": "https://keras.io/api/layers/normalization_layers/rms_normalization/",
    "keras_unit": "https://keras.io/api/layers/normalization_layers/unit_normalization/",
    "keras_mixed": "https://keras.io/api/mixed_precision/policy/",
}

#: Traced functions (and Keras layers) kept per runner; the oldest is dropped beyond this.
CACHE_SIZE = 256

# --------------------------------------------------------------------------------------------------
# Lazy import


_MOD: dict[str, Any] = {}


def _tf():
    """TensorFlow, imported once with quiet logging and one intra-/inter-op thread."""
    tf = _MOD.get("tf")
    if tf is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # the runtime was already initialized in this process: keep its threads
            pass
        tf.get_logger().setLevel("ERROR")
        _MOD["tf"] = tf
    return tf


def _keras():
    keras = _MOD.get("keras")
    if keras is None:
        _tf()
        import keras

        _MOD["keras"] = keras
    return keras


def _tf_dtype(name: str):
    tf = _tf()
    return {"float16": tf.float16, "bfloat16": tf.bfloat16, "float32": tf.float32, "float64": tf.float64}[name]


def _np_dtype(name: str):
    """numpy dtype TensorFlow uses for format `name` (ml_dtypes' bfloat16 for bfloat16)."""
    return _tf_dtype(name).as_numpy_dtype


def _stat_dtype(name: str) -> str:
    """Format running statistics are kept in: float32 for half inputs (as Keras' mixed precision
    and the fused kernel keep them), else the input format."""
    return "float32" if name in ("float16", "bfloat16") else name


def _inputs(case, dtype: str | None = None) -> dict[str, np.ndarray]:
    """The case's float inputs as numpy arrays of TensorFlow's dtype for `dtype` (exact: bfloat16
    carriers hold bfloat16 values)."""
    npd = _np_dtype(dtype or case.dtype)
    out = {}
    for k, a in case.inputs.items():
        out[k] = a.astype(npd) if (a.dtype.kind == "f" and a.dtype != npd) else a
    return out


def _scalar(value: float, dtype: str) -> np.ndarray:
    """`value` as a 0-d array of `dtype`, rounded as TensorFlow rounds a Python float constant."""
    return np.asarray(value, dtype=np.float64).astype(_np_dtype(dtype))


def _out(t) -> np.ndarray:
    """A tensor as numpy: bfloat16 becomes its float32 carrier (exact), other dtypes are kept."""
    a = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
    if a.dtype.name == "bfloat16":
        a = a.astype(np.float32)
    return a


def _outs(d: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: _out(v) for k, v in d.items() if v is not None}


def _signature(tree, static=None):
    """TensorSpecs for a tree (dicts, lists) of numpy arrays: dtype and rank kept, every dim unknown
    except where `static` gives a shape (None entries unknown): for a dict, a mapping from its
    keys; for a list, one shape for every element."""
    tf = _tf()
    if isinstance(tree, dict):
        st = static or {}
        return {k: _signature(v, st.get(k)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_signature(v, static) for v in tree]
    a = np.asarray(tree)
    return tf.TensorSpec([None] * a.ndim if static is None else list(static), tf.as_dtype(a.dtype))


def _function(f: Callable, args: tuple, static=None):
    """`tf.function(f)` traced once for every call with arguments like `args`: a fixed input
    signature with unknown dims (known rank; `static` shapes for the last argument, see
    `_signature`), so that the graph, and with it the numerics, of a case never depends on which
    shapes were traced before (a shape-specialized graph can round differently)."""
    tf = _tf()
    sig = [_signature(a, static if i == len(args) - 1 else None) for i, a in enumerate(args)]
    return tf.function(f, input_signature=sig)


class _LRU(OrderedDict):
    def get_or_make(self, key, make: Callable[[], Any]):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        while len(self) > CACHE_SIZE:
            self.popitem(last=False)
        return value


def _freeze(v):
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(i) for i in v)
    return v


# --------------------------------------------------------------------------------------------------
# attrs shared by the runners


def _bn_attrs(attrs: Mapping) -> dict:
    a = dict(_BN_DEFAULTS)
    a.update(attrs)
    return a


def _batch_weight(momentum, momentum_on: str, nbt: int) -> float:
    """w in new = (1 - w) old + w batch for the case's convention (oracle's `momentum_weight`)."""
    if momentum is None:
        return 1.0 / (nbt + 1)
    return float(momentum) if momentum_on == "batch" else 1.0 - float(momentum)


def _bn_reduce(nd: int, layout: str) -> tuple[list[int], int]:
    """BatchNorm reduction axes and channel axis for rank `nd`."""
    if layout == "channels_last":
        return list(range(nd - 1)), nd - 1
    return [0] + list(range(2, nd)), 1


def _trailing_k(nd: int, attrs: Mapping) -> int:
    return trailing_ndim(nd, attrs.get("normalized_ndim"), attrs.get("axis"))


def _norm_axes(axes, nd: int) -> list[int]:
    return list(normalize_axes(axes, nd))


def _count(shape, axes) -> int:
    return int(math.prod(shape[a] for a in axes))


# --------------------------------------------------------------------------------------------------
# Base class


class _TFBase(Runner):
    framework = "tensorflow"
    framework_module = "tensorflow"

    def __init__(self):
        self._fns = _LRU()

    def setup(self) -> None:
        _tf()

    def version(self) -> str:
        mod = _keras() if self.framework_module == "keras" else _tf()  # imported with our settings
        return str(mod.__version__)

    def _fn(self, key, build: Callable[[], Callable], args: tuple):
        """The tf.function for `key`, built on first use with the input signature of `args`."""
        return self._fns.get_or_make(key, lambda: _function(build(), args))


# ==================================================================================================
# tf.nn


def _nn_bn_core(tf, x, gamma, beta, eps, layout: str, given=None):
    """BatchNorm with tf.nn ops: (y, mean (C,), var (C,)) from batch statistics, or y from `given`
    running statistics (C,). channels_last uses the documented 1-D form, channels_first the
    keepdims form with parameters reshaped to (1, C, 1, ...)."""
    nd = x.shape.rank
    axes, _ = _bn_reduce(nd, layout)
    if layout == "channels_last":
        if given is None:
            mean, var = tf.nn.moments(x, axes)
        else:
            mean, var = given
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, eps), mean, var
    shape = [1, -1] + [1] * (nd - 2)
    r = (lambda p: None if p is None else tf.reshape(p, shape))
    if given is None:
        mean, var = tf.nn.moments(x, axes, keepdims=True)
    else:
        mean, var = r(given[0]), r(given[1])
    y = tf.nn.batch_normalization(x, mean, var, r(beta), r(gamma), eps)
    return y, tf.reshape(mean, [-1]), tf.reshape(var, [-1])


def _nn_forward(tf, op: str, cfg: Mapping, x, gamma, beta, eps, given=None):
    """(y, stats) of `op` composed from tf.nn ops; stats maps oracle output names to tensors."""
    nd = x.shape.rank
    if op == "batch_norm":
        y, mean, var = _nn_bn_core(tf, x, gamma, beta, eps, cfg["layout"], given)
        return y, {"mean": mean, "var": var}
    if op == "layer_norm":
        k = _trailing_k(nd, cfg)
        mean, var = tf.nn.moments(x, list(range(nd - k, nd)), keepdims=True)
        y = tf.nn.batch_normalization(x, mean, var, beta, gamma, eps)
        lead = tf.shape(x)[: nd - k]
        return y, {"mean": tf.reshape(mean, lead), "rstd": tf.reshape(tf.math.rsqrt(var + eps), lead)}
    if op == "instance_norm":
        s = tf.shape(x)
        if cfg["layout"] == "channels_first":
            pshape = [1, -1] + [1] * (nd - 2)
            mean, var = tf.nn.moments(x, list(range(2, nd)), keepdims=True)
            nc = s[:2]
        else:
            pshape = [-1]
            mean, var = tf.nn.moments(x, list(range(1, nd - 1)), keepdims=True)
            nc = tf.stack([s[0], s[nd - 1]])
        r = (lambda p: None if p is None else tf.reshape(p, pshape))
        y = tf.nn.batch_normalization(x, mean, var, r(beta), r(gamma), eps)
        return y, {"mean": tf.reshape(mean, nc), "rstd": tf.reshape(tf.math.rsqrt(var + eps), nc)}
    if op == "group_norm":
        g = int(cfg["num_groups"])
        s = tf.shape(x)
        per_group = cfg.get("affine", "per_channel") == "per_group"
        if cfg["layout"] == "channels_first":
            xr = tf.reshape(x, tf.concat([[s[0], g, s[1] // g], s[2:]], 0))
            axes = list(range(2, nd + 1))
            pshape = [1, g] + ([1] if per_group else [-1]) + [1] * (nd - 2)
        else:
            xr = tf.reshape(x, tf.concat([s[:-1], [g, s[nd - 1] // g]], 0))
            axes = list(range(1, nd - 1)) + [nd]
            pshape = [g, 1] if per_group else [g, -1]
        r = (lambda p: None if p is None else tf.reshape(p, pshape))
        mean, var = tf.nn.moments(xr, axes, keepdims=True)
        y = tf.reshape(tf.nn.batch_normalization(xr, mean, var, r(beta), r(gamma), eps), s)
        ng = tf.stack([s[0], g])
        return y, {"mean": tf.reshape(mean, ng), "rstd": tf.reshape(tf.math.rsqrt(var + eps), ng)}
    if op == "mvn":
        axes = _norm_axes(cfg.get("axes", (0, 2, 3)), nd)
        mean, var = tf.nn.moments(x, axes, keepdims=True)
        return tf.nn.batch_normalization(x, mean, var, None, None, eps), {}
    if op == "l2_normalize":
        axes = _norm_axes(cfg.get("axes", (-1,)), nd)
        return tf.math.l2_normalize(x, axis=axes, epsilon=eps), {}
    raise AssertionError(op)


_NN_STATS = {"batch_norm": (), "layer_norm": ("mean", "rstd"), "instance_norm": ("mean", "rstd"),
             "group_norm": ("mean", "rstd"), "mvn": (), "l2_normalize": ()}


_HALF = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32", "float64": "float64"}
_NN_PRECISION_NOTE = (
    "Precision: for half inputs tf.nn.moments reduces in float32 but returns mean and variance "
    "rounded to the input dtype, and everything else (x - mean and its square inside moments for "
    "bfloat16, rsqrt(var + eps) with eps rounded to the half format, x*inv + (beta - mean*inv)) runs "
    "in the half format; gradients reduce over outer axes with tf.reduce_sum in the input dtype, "
    "which for float16 accumulates in float16 (tf.reduce_sum of a (4096, 2) float16 array over axis "
    "0 errs by ~16 ulps). Declared accumulation is therefore the half format itself.")

_NN_BN = Conventions(
    flush_subnormals=True,
    momentum_on="running",
    default_momentum=None,
    running_var_estimator="biased",
    default_eps=None,
    min_eps=None,
    eps_mode="inside",
    affine="per_channel",
    batch_of_one="normalizes",
    accumulation=_HALF,
    nan_propagation="set",
    sources=(_DOCS["moments"], _DOCS["batch_normalization"], _DOCS["ema"]),
    notes=(
        "tf.nn.moments returns the population (biased) variance; tf.nn.batch_normalization has no "
        "default variance_epsilon and accepts 0 (no clamp). Running statistics follow "
        "ExponentialMovingAverage: new = old - (1 - decay)(old - batch), i.e. momentum_on 'running' "
        "with momentum = decay, no default decay. The runner translates any case convention "
        "(momentum_on, running_var_estimator via var*n/(n-1), cumulative average) into that update, "
        "computed in float32 for half inputs (as Keras and the fused kernel keep statistics). "
        + _NN_PRECISION_NOTE),
)

_NN_NORM = Conventions(
    flush_subnormals=True,
    default_eps=None, min_eps=None, eps_mode="inside", affine="per_channel", batch_of_one="normalizes",
    accumulation=_HALF, nan_propagation="set", sources=(_DOCS["moments"], _DOCS["batch_normalization"]),
    notes="tf.nn.moments over the normalized axes (keepdims) + tf.nn.batch_normalization; variance_epsilon "
          "is required (no default) and not clamped. " + _NN_PRECISION_NOTE)

_NN_PER_OP = {
    "layer_norm": _NN_NORM,
    "instance_norm": _NN_NORM,
    "group_norm": dataclasses.replace(
        _NN_NORM, notes="channels reshaped to (G, C/G), statistics over C/G and the spatial axes; gamma/beta "
                        "reshaped to broadcast, so both per_channel (C,) and per_group (G,) parameters are "
                        "expressible. " + _NN_NORM.notes),
    "mvn": dataclasses.replace(
        _NN_NORM, affine=None, notes="eps_mode 'inside' (variance_epsilon); 'none' is variance_epsilon=0; "
                                     "'outside' has no tf.nn expression. " + _NN_NORM.notes),
    "l2_normalize": Conventions(
    flush_subnormals=True,
        default_eps=1e-12, min_eps=None, eps_mode="max_sumsq", affine=None, accumulation=_HALF,
        nan_propagation="set", sources=(_DOCS["l2_normalize"],),
        notes="x * rsqrt(max(sum(x**2), epsilon)), default epsilon 1e-12, computed in the input dtype "
              "(no upcast); eps_mode 'none' is epsilon=0. A +-inf in a slice gives NaN at the inf and "
              "+-0 elsewhere (IEEE: rsqrt(inf) = 0)."),
}


class TFNNRunner(_TFBase):
    """``tf.nn``: normalizations composed from `tf.nn.moments` + `tf.nn.batch_normalization`, and
    `tf.math.l2_normalize`; running statistics by the ExponentialMovingAverage update in TF ops."""

    id = "tf.nn"
    ops = {
        "batch_norm": _BN_MODES,
        "layer_norm": _FWD, "instance_norm": _FWD, "group_norm": _FWD, "mvn": _FWD, "l2_normalize": _FWD,
    }
    dtypes = ALL_DTYPES
    conventions = _NN_BN

    def conventions_for(self, op, attrs=None) -> Conventions:
        """BatchNorm's conventions (`conventions`) or those of `op` on this path."""
        return _NN_PER_OP.get(op, self.conventions)

    def supports(self, op, mode, dtype, attrs):
        reason = super().supports(op, mode, dtype, attrs)
        if reason:
            return reason
        if op == "mvn":
            em = attrs.get("eps_mode", "outside")
            if em not in ("inside", "none"):
                return (f"tf.nn.batch_normalization adds epsilon to the variance inside rsqrt; mvn "
                        f"eps_mode={em!r} (epsilon outside the root) has no tf.nn expression")
        if op == "l2_normalize":
            em = attrs.get("eps_mode", "max_norm")
            if em not in ("max_sumsq", "none"):
                return (f"tf.math.l2_normalize computes x * rsqrt(max(sum(x**2), epsilon)) (eps_mode "
                        f"'max_sumsq'; 'none' is epsilon=0); eps_mode={em!r} is another convention")
        return None

    def _eps(self, case, eps_dtype: str) -> np.ndarray:
        eps = float(case.attrs.get("eps", {"mvn": 1e-9, "l2_normalize": 1e-12}.get(case.op, 0.0)))
        em = case.attrs.get("eps_mode")
        if case.op in ("mvn", "l2_normalize") and em == "none":
            eps = 0.0
        return _scalar(eps, eps_dtype)

    def run(self, case) -> dict[str, np.ndarray]:
        tf = _tf()
        op, mode, dt = case.op, case.mode, case.dtype
        ins = _inputs(case)
        eps = self._eps(case, dt)
        if op == "batch_norm":
            return self._batch_norm(tf, case, ins, eps)
        cfg = {k: v for k, v in case.attrs.items() if k != "eps"}
        # the rank is part of the key: the input signature keeps the rank, not the dims
        key = (op, mode, dt, case.inputs["x"].ndim, tuple(sorted((k, _freeze(v)) for k, v in cfg.items())),
               tuple(sorted(ins)))
        if mode == "forward":
            stats = _NN_STATS[op]

            def build():
                def f(i, eps):
                    y, s = _nn_forward(tf, op, cfg, i["x"], i.get("gamma"), i.get("beta"), eps)
                    return {"y": y, **{k: s[k] for k in stats}}
                return f
        elif mode == "vjp":
            def build():
                def f(i, eps):
                    names = [k for k in ("x", "gamma", "beta") if k in i]
                    xs = [i[k] for k in names]
                    with tf.GradientTape() as tape:
                        tape.watch(xs)
                        y, _ = _nn_forward(tf, op, cfg, i["x"], i.get("gamma"), i.get("beta"), eps)
                    grads = tape.gradient(y, xs, output_gradients=i["dy"])
                    return {"d" + k: g for k, g in zip(names, grads)}
                return f
        else:
            def build():
                def f(i, eps):
                    names = [k for k in ("x", "gamma", "beta") if k in i and "t" + k in i]
                    with tf.autodiff.ForwardAccumulator([i[k] for k in names], [i["t" + k] for k in names]) as acc:
                        y, _ = _nn_forward(tf, op, cfg, i["x"], i.get("gamma"), i.get("beta"), eps)
                    return {"ty": acc.jvp(y)}
                return f
        fn = self._fn(key, build, (ins, eps))
        with framework_call():
            return _outs(fn(ins, eps))

    def script(self, case) -> str:
        """Standalone code of this path for `case` (see `Runner.script`): the tf.nn ops in a
        tf.function with the runner's fixed input signature."""
        return _s_nn(self, case)

    # ---- batch_norm

    def _batch_norm(self, tf, case, ins, eps) -> dict[str, np.ndarray]:
        mode, dt = case.mode, case.dtype
        a = _bn_attrs(case.attrs)
        layout = a["layout"]
        rank = case.inputs["xs" if mode == "training_steps" else "x"].ndim
        key = ("batch_norm", mode, dt, rank, layout, tuple(sorted(ins)))
        sdt = _stat_dtype(dt)
        sdtype = _tf_dtype(sdt)
        cfg = {"layout": layout}

        if mode == "inference":
            def build():
                def f(i, eps):
                    y, _ = _nn_forward(tf, "batch_norm", cfg, i["x"], i.get("gamma"), i.get("beta"), eps,
                                       given=(i["running_mean"], i["running_var"]))
                    return {"y": y}
                return f
            args = (ins, eps)
        elif mode in ("training", "training_steps"):
            steps = mode == "training_steps"
            x0 = case.inputs["xs"][0] if steps else case.inputs["x"]
            axes, _ = _bn_reduce(x0.ndim, layout)
            n = _count(x0.shape, axes)
            has_running = "running_mean" in ins
            if has_running and a["running_var_estimator"] == "unbiased" and n < 2:
                raise Unsupported(f"the unbiased running variance is undefined for a reduction set of "
                                  f"n={n} element (n/(n-1))")
            k_steps = case.inputs["xs"].shape[0] if steps else 1
            nbt = int(a["num_batches_tracked"])
            ws = [_batch_weight(a["momentum"], a["momentum_on"], nbt + k) for k in range(k_steps)]
            factor = n / (n - 1) if (has_running and a["running_var_estimator"] == "unbiased") else 1.0
            scal = {"w": np.asarray([_scalar(w, sdt) for w in ws]), "factor": _scalar(factor, sdt)}

            def build():
                def step(x, i, rm, rv, eps, w, factor):
                    y, mean, var = _nn_bn_core(tf, x, i.get("gamma"), i.get("beta"), eps, layout)
                    out = {"y": y, "mean": mean, "var": var}
                    if rm is not None:
                        # ExponentialMovingAverage / assign_moving_average: v -= (1 - decay) * (v - value)
                        bm = tf.cast(mean, sdtype)
                        bv = tf.cast(var, sdtype) * factor
                        rm = rm - (rm - bm) * w
                        rv = rv - (rv - bv) * w
                        out["running_mean"], out["running_var"] = rm, rv
                    return out, rm, rv

                def f(i, eps, s):
                    rm = rv = None
                    if "running_mean" in i:
                        rm, rv = tf.cast(i["running_mean"], sdtype), tf.cast(i["running_var"], sdtype)
                    if not steps:
                        out, _, _ = step(i["x"], i, rm, rv, eps, s["w"][0], s["factor"])
                        out["rstd"] = tf.math.rsqrt(out["var"] + eps)
                        return out
                    outs = []
                    for k, x in enumerate(i["xs"]):
                        out, rm, rv = step(x, i, rm, rv, eps, s["w"][k], s["factor"])
                        outs.append(out)
                    return {name: tf.stack([o[name] for o in outs]) for name in outs[0]}
                return f
            if steps:
                ins = dict(ins)
                ins["xs"] = list(ins["xs"])  # a list: K is part of the trace, each step unrolled
                key = key + (k_steps,)
            args = (ins, eps, scal)
        else:
            state, kind = mode.split("_")
            names = [k for k in ("x", "gamma", "beta") if k in ins]

            def fwd(i, eps):
                given = (i["running_mean"], i["running_var"]) if state == "inference" else None
                y, _ = _nn_forward(tf, "batch_norm", cfg, i["x"], i.get("gamma"), i.get("beta"), eps, given)
                return y

            if kind == "vjp":
                def build():
                    def f(i, eps):
                        xs = [i[k] for k in names]
                        with tf.GradientTape() as tape:
                            tape.watch(xs)
                            y = fwd(i, eps)
                        return {"d" + k: g for k, g in zip(names, tape.gradient(y, xs, output_gradients=i["dy"]))}
                    return f
            else:
                def build():
                    def f(i, eps):
                        tn = [k for k in names if "t" + k in i]
                        with tf.autodiff.ForwardAccumulator([i[k] for k in tn], [i["t" + k] for k in tn]) as acc:
                            y = fwd(i, eps)
                        return {"ty": acc.jvp(y)}
                    return f
            args = (ins, eps)
        fn = self._fn(key, build, args)
        with framework_call():
            return _outs(fn(*args))


# ==================================================================================================
# tf.compat.v1.nn.fused_batch_norm


class FusedBatchNormRunner(_TFBase):
    """``tf.fused_batch_norm``: `tf.compat.v1.nn.fused_batch_norm` (FusedBatchNormV3), rank 4/5."""

    id = "tf.fused_batch_norm"
    ops = {"batch_norm": _BN_MODES}
    dtypes = ("float16", "bfloat16", "float32")
    conventions = Conventions(
    flush_subnormals=True,
        momentum_on="batch",
        default_momentum=1.0,
        running_var_estimator="unbiased",
        default_eps=0.001,
        min_eps=None,
        eps_mode="inside",
        affine="per_channel",
        batch_of_one="normalizes",
        accumulation={"float16": "float32", "bfloat16": "float32", "float32": "float32"},
        nan_propagation="set",
        sources=(_DOCS["fused"], _DOCS["fused_kernel"]),
        notes=(
            "exponential_avg_factor f (default 1.0): running = (1 - f) * old + f * batch (momentum_on "
            "'batch', momentum = f). The variance it returns (and feeds the running average) is the "
            "Bessel-corrected batch variance n/(n-1)*var; with n=1 it uses the biased one (0). "
            "x is float16/bfloat16/float32 (no float64 kernel); scale, offset, mean and variance are "
            "float32. epsilon is a float32 op attribute (default 0.001), not clamped on CPU (cuDNN "
            "requires >= 1e-5 on GPU). Data formats NHWC/NCHW (rank 4) and NDHWC/NCDHW (rank 5). "
            "On CPU the kernel is oneDNN's (_MklNativeFusedBatchNormV3); for float16 oneDNN needs "
            "AVX-512 half support and otherwise TF falls back to Eigen (logged as 'oneDNN supports "
            "DT_HALF only on platforms with AVX-512'), so the float16 kernel depends on the CPU. "
            "The public API returns only y and the (running or batch) mean/variance: the runner "
            "reports y, the batch mean (training without running statistics) or the running "
            "statistics, not the batch variance (Bessel-corrected, not the oracle's 'var') or rstd."
        ),
    )

    def supports(self, op, mode, dtype, attrs):
        if op == "batch_norm" and mode in _BN_MODES and dtype == "float64":
            return "FusedBatchNormV3 has no float64 kernel (T in {half, bfloat16, float})"
        reason = super().supports(op, mode, dtype, attrs)
        if reason:
            return reason
        a = _bn_attrs(attrs)
        if mode == "training_steps" and a["running_var_estimator"] == "biased":
            return ("fused_batch_norm feeds the Bessel-corrected (unbiased) batch variance into the "
                    "running variance; running_var_estimator='biased' is not expressible")
        return None

    def run(self, case) -> dict[str, np.ndarray]:
        tf = _tf()
        mode, dt = case.mode, case.dtype
        a = _bn_attrs(case.attrs)
        layout = a["layout"]
        x0 = case.inputs["xs"][0] if mode == "training_steps" else case.inputs["x"]
        nd = x0.ndim
        if nd not in (4, 5):
            raise Unsupported(f"fused_batch_norm takes rank 4 (NHWC/NCHW) or rank 5 (NDHWC/NCDHW) "
                              f"inputs; got rank {nd}")
        fmt = {(4, "channels_last"): "NHWC", (4, "channels_first"): "NCHW",
               (5, "channels_last"): "NDHWC", (5, "channels_first"): "NCDHW"}[(nd, layout)]
        c = x0.shape[-1] if layout == "channels_last" else x0.shape[1]
        eps = float(case.attrs["eps"]) if "eps" in case.attrs else 0.001
        ins = _inputs(case, dtype=dt)
        f32 = {k: case.inputs[k].astype(np.float32) for k in ("gamma", "beta", "running_mean", "running_var")
               if k in case.inputs}
        scale = f32.get("gamma", np.ones(c, np.float32))
        offset = f32.get("beta", np.zeros(c, np.float32))
        has_running = "running_mean" in f32
        if mode in ("training", "training_steps") and has_running and a["running_var_estimator"] == "biased":
            raise Unsupported("fused_batch_norm feeds the Bessel-corrected (unbiased) batch variance into "
                              "the running variance; running_var_estimator='biased' is not expressible")
        bn = tf.compat.v1.nn.fused_batch_norm

        if mode == "inference":
            with framework_call():
                y, _, _ = bn(ins["x"], scale, offset, f32["running_mean"], f32["running_var"],
                             epsilon=eps, data_format=fmt, is_training=False)
                return {"y": _out(y)}
        if mode == "training":
            with framework_call():
                if has_running:
                    f = _batch_weight(a["momentum"], a["momentum_on"], int(a["num_batches_tracked"]))
                    y, rm, rv = bn(ins["x"], scale, offset, f32["running_mean"], f32["running_var"],
                                   epsilon=eps, data_format=fmt, is_training=True, exponential_avg_factor=f)
                    return {"y": _out(y), "running_mean": _out(rm), "running_var": _out(rv)}
                y, mean, _ = bn(ins["x"], scale, offset, epsilon=eps, data_format=fmt, is_training=True)
                return {"y": _out(y), "mean": _out(mean)}
        if mode == "training_steps":
            rm, rv = f32["running_mean"], f32["running_var"]
            ys, rms, rvs = [], [], []
            nbt = int(a["num_batches_tracked"])
            with framework_call():
                for k, x in enumerate(ins["xs"]):
                    f = _batch_weight(a["momentum"], a["momentum_on"], nbt + k)
                    y, rm, rv = bn(x, scale, offset, rm, rv, epsilon=eps, data_format=fmt, is_training=True,
                                   exponential_avg_factor=f)
                    ys.append(_out(y))
                    rms.append(_out(rm))
                    rvs.append(_out(rv))
            return {"y": np.stack(ys), "running_mean": np.stack(rms), "running_var": np.stack(rvs)}
        # gradients: through the fused kernel's registered gradient (FusedBatchNormGradV3)
        state, kind = mode.split("_")
        training = state == "training"
        x = tf.constant(ins["x"])
        g, b = tf.constant(scale), tf.constant(offset)
        if training:
            stats = {}
        else:
            stats = {"mean": f32["running_mean"], "variance": f32["running_var"]}
        with framework_call():
            if kind == "vjp":
                watch = [x] + ([g] if "gamma" in f32 else []) + ([b] if "beta" in f32 else [])
                names = ["dx"] + (["dgamma"] if "gamma" in f32 else []) + (["dbeta"] if "beta" in f32 else [])
                with tf.GradientTape() as tape:
                    tape.watch(watch)
                    y, _, _ = bn(x, g, b, epsilon=eps, data_format=fmt, is_training=training, **stats)
                grads = tape.gradient(y, watch, output_gradients=tf.constant(ins["dy"]))
                return {k: _out(v) for k, v in zip(names, grads)}
            prim, tang = [x], [tf.constant(ins["tx"])]
            for name, var in (("gamma", g), ("beta", b)):
                if name in f32 and "t" + name in case.inputs:
                    prim.append(var)
                    tang.append(tf.constant(case.inputs["t" + name].astype(np.float32)))
            with tf.autodiff.ForwardAccumulator(prim, tang) as acc:
                y, _, _ = bn(x, g, b, epsilon=eps, data_format=fmt, is_training=training, **stats)
            return {"ty": _out(acc.jvp(y))}

    def script(self, case) -> str:
        """Standalone code of this path for `case` (see `Runner.script`): the eager fused call."""
        return _s_fused(self, case)


# ==================================================================================================
# Keras 3


_UPCAST = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}
_KERAS_COMMON = (
    "Layers use the plain dtype policy of the case's dtype (variables in that dtype); channels_last "
    "is axis=-1, channels_first axis=1. The layer upcasts float16/bfloat16 inputs to float32 and "
    "casts the result back (a half layer's output is exactly the float32 layer's, rounded).")

_KERAS_BN = Conventions(
    flush_subnormals=True,
    momentum_on="running",
    default_momentum=0.99,
    running_var_estimator="biased",
    default_eps=0.001,
    min_eps=None,
    eps_mode="inside",
    affine="per_channel",
    batch_of_one="normalizes",
    accumulation=_UPCAST,
    nan_propagation="set",
    sources=(_DOCS["keras_bn"], _DOCS["keras_mixed"]),
    notes=("BatchNormalization(momentum=0.99, epsilon=1e-3): moving = moving*momentum + "
           "batch*(1-momentum) (momentum_on 'running') with the biased batch variance "
           "(keras.ops.moments); epsilon is not clamped (Keras 3 never uses the fused kernel, whose "
           "cuDNN form needed >= 1.001e-5 in Keras 2); a batch of one gives beta up to the rounding "
           "of the folded x*inv + (beta - mean*inv). " + _KERAS_COMMON),
)


def _keras_norm(doc: str, eps: float, affine: str | None, notes: str) -> Conventions:
    return Conventions(flush_subnormals=True, default_eps=eps, min_eps=None, eps_mode="inside", affine=affine,
                       batch_of_one="normalizes", accumulation=_UPCAST, nan_propagation="set",
                       sources=(_DOCS[doc], _DOCS["keras_mixed"]), notes=notes + " " + _KERAS_COMMON)


_KERAS_PER_OP = {
    "layer_norm": _keras_norm("keras_ln", 1e-3, "per_channel",
                              "LayerNormalization(axis=trailing axes, epsilon=1e-3): gamma/beta per element "
                              "of the normalized axes; y = x*inv + (beta - mean*inv), inv = gamma*rsqrt(var + "
                              "eps). (rms_scaling=True is deprecated and not RMS normalization.)"),
    "group_norm": _keras_norm("keras_gn", 1e-3, "per_channel",
                              "GroupNormalization(groups, axis, epsilon=1e-3): contiguous channel groups, "
                              "gamma/beta per channel."),
    "instance_norm": _keras_norm("keras_gn", 1e-3, "per_channel",
                                 "GroupNormalization(groups=C) (documented as Instance Normalization), "
                                 "epsilon=1e-3."),
    "rms_norm": _keras_norm("keras_rms", 1e-6, "per_channel",
                            "RMSNormalization(axis, epsilon=1e-6): x * rsqrt(mean(x**2) + eps) * scale, "
                            "scale per element of the normalized axes."),
    "mvn": _keras_norm("keras_ln", 1e-3, None,
                       "LayerNormalization(axis=axes, center=False, scale=False): eps inside the root "
                       "(eps_mode 'none' is epsilon=0)."),
}


class KerasRunner(_TFBase):
    """``keras``: Keras 3 normalization layers on the TensorFlow backend, weights from the case."""

    id = "keras"
    framework = "keras"
    framework_module = "keras"
    ops = {
        "batch_norm": _BN_MODES,
        "layer_norm": _FWD, "rms_norm": _FWD, "group_norm": _FWD, "instance_norm": _FWD, "mvn": _FWD,
    }
    dtypes = ALL_DTYPES
    conventions = _KERAS_BN

    def conventions_for(self, op, attrs=None) -> Conventions:
        """BatchNormalization's conventions (`conventions`) or those of the layer behind `op`."""
        return _KERAS_PER_OP.get(op, self.conventions)

    def available(self) -> str | None:
        """Keras 3 and TensorFlow (its backend here) must both be importable."""
        return Runner.available(self) or _TFBase.available(_TFBase())

    def setup(self) -> None:
        keras = _keras()
        self._problem = None
        if keras.backend.backend() != "tensorflow":
            self._problem = (f"Keras runs on the {keras.backend.backend()!r} backend (KERAS_BACKEND); "
                             f"this runner tests Keras on TensorFlow")

    def supports(self, op, mode, dtype, attrs):
        reason = super().supports(op, mode, dtype, attrs)
        if reason:
            return reason
        if getattr(self, "_problem", None):
            return self._problem
        if op == "batch_norm":
            a = _bn_attrs(attrs)
            running = mode == "training_steps"
            if running and a["momentum"] is None:
                return ("keras BatchNormalization's momentum is a fixed float; the cumulative average "
                        "(momentum=None) is not expressible")
            if running and a["running_var_estimator"] == "unbiased":
                return ("keras BatchNormalization stores the biased batch variance in moving_variance; "
                        "running_var_estimator='unbiased' is not expressible")
        if op == "group_norm" and attrs.get("affine", "per_channel") != "per_channel":
            return "keras GroupNormalization's gamma and beta are per channel (affine='per_channel')"
        if op == "mvn" and attrs.get("eps_mode", "outside") not in ("inside", "none"):
            return (f"keras LayerNormalization adds epsilon to the variance inside rsqrt; mvn "
                    f"eps_mode={attrs.get('eps_mode', 'outside')!r} is not expressible")
        return None

    # ---- layers

    def _layer(self, spec: tuple, dtype: str, build_shape: tuple):
        """A built Keras layer for `spec` (kind, kwargs...), cached."""
        keras = _keras()

        def make():
            kind, kw = spec[0], dict(spec[1])
            if "axis" in kw and isinstance(kw["axis"], tuple):
                kw["axis"] = list(kw["axis"])
            cls = {"bn": keras.layers.BatchNormalization, "ln": keras.layers.LayerNormalization,
                   "gn": keras.layers.GroupNormalization, "rms": keras.layers.RMSNormalization,
                   "unit": keras.layers.UnitNormalization}[kind]
            layer = cls(dtype=dtype, **kw)
            layer.build(build_shape)
            return {"layer": layer, "fns": {}}

        return self._fns.get_or_make(("layer", spec, dtype, build_shape), make)

    def _spec(self, case, x0) -> tuple[tuple, tuple, dict]:
        """(layer spec, build shape, weight names case input -> layer attribute)."""
        op, at = case.op, case.attrs
        nd = x0.ndim
        ins = case.inputs
        eps = at.get("eps")
        if op == "batch_norm":
            a = _bn_attrs(at)
            axis = 1 if a["layout"] == "channels_first" else -1
            m = a["momentum"]
            mom = 0.99 if m is None else (float(m) if a["momentum_on"] == "running" else 1.0 - float(m))
            kw = dict(axis=axis, momentum=mom, epsilon=float(eps) if eps is not None else 1e-3,
                      center="beta" in ins, scale="gamma" in ins)
            shape = [None] * nd
            shape[axis] = x0.shape[axis]
            weights = {"gamma": "gamma", "beta": "beta", "running_mean": "moving_mean",
                       "running_var": "moving_variance"}
            return ("bn", tuple(sorted(kw.items()))), tuple(shape), weights
        if op in ("layer_norm", "rms_norm"):
            k = _trailing_k(nd, at)
            axis = tuple(range(nd - k, nd))
            shape = tuple(x0.shape[i] if i >= nd - k else None for i in range(nd))
            if op == "layer_norm":
                kw = dict(axis=axis, epsilon=float(eps), center="beta" in ins, scale="gamma" in ins)
                return ("ln", tuple(sorted(kw.items()))), shape, {"gamma": "gamma", "beta": "beta"}
            return ("rms", (("axis", axis), ("epsilon", float(eps)))), shape, {"weight": "scale"}
        if op in ("group_norm", "instance_norm"):
            axis = 1 if at.get("layout", "channels_first") == "channels_first" else -1
            c = x0.shape[axis]
            groups = int(at["num_groups"]) if op == "group_norm" else c
            kw = dict(groups=groups, axis=axis, epsilon=float(eps), center="beta" in ins, scale="gamma" in ins)
            shape = [None] * nd
            shape[axis] = c
            return ("gn", tuple(sorted(kw.items()))), tuple(shape), {"gamma": "gamma", "beta": "beta"}
        if op == "mvn":
            axes = tuple(_norm_axes(at.get("axes", (0, 2, 3)), nd))
            e = 0.0 if at.get("eps_mode") == "none" else float(at.get("eps", 1e-9))
            kw = dict(axis=axes, epsilon=e, center=False, scale=False)
            return ("ln", tuple(sorted(kw.items()))), (None,) * nd, {}  # no weights: no static dims
        if op == "l2_normalize":
            axes = tuple(_norm_axes(at.get("axes", (-1,)), nd))
            return ("unit", (("axis", axes),)), (None,) * nd, {}
        raise AssertionError(op)

    def run(self, case) -> dict[str, np.ndarray]:
        tf = _tf()
        op, mode, dt = case.op, case.mode, case.dtype
        steps = mode == "training_steps"
        x0 = case.inputs["xs"][0] if steps else case.inputs["x"]
        spec, bshape, wmap = self._spec(case, x0)
        entry = self._layer(spec, dt, bshape)
        layer = entry["layer"]
        ins = _inputs(case)
        bn = op == "batch_norm"
        if bn:
            training = mode.startswith("training")
            kind = "forward" if mode in ("training", "inference", "training_steps") else mode.split("_")[1]
        else:
            training, kind = False, mode
        has_running = bn and "running_mean" in ins
        if bn and training and has_running:
            a = _bn_attrs(case.attrs)
            if a["momentum"] is None:
                raise Unsupported("keras BatchNormalization's momentum is a fixed float; the cumulative "
                                  "average (momentum=None) is not expressible")
            if a["running_var_estimator"] == "unbiased":
                raise Unsupported("keras BatchNormalization stores the biased batch variance in "
                                  "moving_variance; running_var_estimator='unbiased' is not expressible")
        # the layer's variables, by case input name; those the case does not give get Keras' initial
        # values (gamma/scale 1, beta 0, moving_mean 0, moving_variance 1)
        wvars = {k: getattr(layer, attr) for k, attr in wmap.items() if getattr(layer, attr, None) is not None}
        init = {"gamma": 1.0, "beta": 0.0, "weight": 1.0, "running_mean": 0.0, "running_var": 1.0}
        npd = _np_dtype(dt)
        wvals = {k: (ins[k] if k in ins else np.full(tuple(v.shape), init[k], dtype=npd)) for k, v in wvars.items()}
        data = {k: v for k, v in ins.items() if k not in wvars}
        # parameters whose gradient (vjp) or tangent (jvp) the case asks for
        params = [k for k in ("gamma", "beta", "weight") if k in ins and k in wvars]
        if kind == "jvp":
            params = [k for k in params if "t" + k in ins]
        # the step count is part of the traced signature (a K=1 case after a K=3 one must not reuse it)
        key = (mode, x0.ndim, tuple(sorted(ins)), ins["xs"].shape[0] if "xs" in ins else 1)

        def assign(w):
            for k, v in wvars.items():
                v.assign(w[k])

        def call(x):
            return layer(x, training=training) if bn else layer(x)

        def build():
            if steps:
                def f(w, xs):
                    assign(w)
                    ys, rms, rvs = [], [], []
                    for x in xs:
                        ys.append(call(x))
                        rms.append(tf.convert_to_tensor(layer.moving_mean))
                        rvs.append(tf.convert_to_tensor(layer.moving_variance))
                    return {"y": tf.stack(ys), "running_mean": tf.stack(rms), "running_var": tf.stack(rvs)}
            elif kind == "forward":
                def f(w, i):
                    assign(w)
                    out = {"y": call(i["x"])}
                    if has_running and training:
                        out["running_mean"] = tf.convert_to_tensor(layer.moving_mean)
                        out["running_var"] = tf.convert_to_tensor(layer.moving_variance)
                    return out
            elif kind == "vjp":
                def f(w, i):
                    assign(w)
                    src = [i["x"]] + [wvars[k].value for k in params]
                    with tf.GradientTape() as tape:
                        tape.watch(i["x"])
                        y = call(i["x"])
                    grads = tape.gradient(y, src, output_gradients=i["dy"])
                    return {"d" + k: g for k, g in zip(["x"] + params, grads)}
            else:
                def f(w, i):
                    assign(w)
                    prim = [i["x"]] + [wvars[k].value for k in params]
                    tang = [i["t" + k] for k in ["x"] + params]
                    with tf.autodiff.ForwardAccumulator(prim, tang) as acc:
                        y = call(i["x"])
                    return {"ty": acc.jvp(y)}
            return f

        fns = entry["fns"]
        args = (wvals, list(ins["xs"]) if steps else data)
        if key not in fns:
            # the layer's parameter axes are static (the layer is built for them), the others unknown
            static = tuple(bshape) if steps else {k: tuple(bshape) for k in ("x", "dy", "tx")}
            fns[key] = _function(build(), args, static)
        # np.errstate: UnitNormalization's float16 constant 1/1e-12 overflows to inf while tracing
        with framework_call(), np.errstate(over="ignore"):
            return _outs(fns[key](*args))

    def script(self, case) -> str:
        """Standalone code of this path for `case` (see `Runner.script`): the layer built, its
        weights assigned and called in a tf.function with the runner's input signature."""
        return _s_keras(self, case)


class KerasUnitNormRunner(KerasRunner):
    """``keras.UnitNormalization``: `keras.layers.UnitNormalization`, which (unlike the other Keras
    normalization layers) computes in the input dtype."""

    id = "keras.UnitNormalization"
    ops = {"l2_normalize": _FWD}
    dtypes = ALL_DTYPES
    conventions = Conventions(
    flush_subnormals=True,
        eps_mode="max_norm",
        default_eps=1e-12,
        min_eps=1e-12,
        affine=None,
        accumulation={"float16": "float16", "bfloat16": "float32", "float32": "float32", "float64": "float64"},
        elementwise={"float16": "float16", "bfloat16": "bfloat16", "float32": "float32", "float64": "float64"},
        nan_propagation="set",
        sources=(_DOCS["keras_unit"],),
        notes=(
            "UnitNormalization(axis) calls keras.ops.normalize(x, order=2, epsilon=1e-12): "
            "x * minimum(rsqrt(sum(x**2)), 1/epsilon), i.e. eps_mode 'max_norm' with epsilon fixed at "
            "1e-12 (not a constructor argument). Unlike BatchNormalization/LayerNormalization/"
            "GroupNormalization/RMSNormalization it does not upcast half inputs: squares and rsqrt run "
            "in float16/bfloat16 (float16 squares overflow for |x| >= 256), and tf.reduce_sum "
            "accumulates float16 in float16 over outer axes (bfloat16 in float32)."
        ),
    )

    def supports(self, op, mode, dtype, attrs):
        reason = Runner.supports(self, op, mode, dtype, attrs)
        if reason:
            return reason
        if getattr(self, "_problem", None):
            return self._problem
        em = attrs.get("eps_mode", "max_norm")
        eps = float(attrs.get("eps", 1e-12))
        if em != "max_norm" or eps != 1e-12:
            return (f"keras UnitNormalization computes x * min(rsqrt(sum(x**2)), 1/1e-12) (eps_mode "
                    f"'max_norm', eps fixed at 1e-12); got eps_mode={em!r}, eps={eps!r}")
        return None


def runners() -> list[Runner]:
    """The TensorFlow/Keras runners (building them imports nothing)."""
    return [TFNNRunner(), FusedBatchNormRunner(), KerasRunner(), KerasUnitNormRunner()]


# ==================================================================================================
# standalone scripts (`Runner.script`, used by fuzz.scripts): the code a TensorFlow/Keras user writes
# for a case, mirroring what the runners above trace: the same ops in the same order, the same
# fixed-signature tf.function (all dims unknown; Keras: the axes a layer is built for static) with
# the runner's argument structure and names (dicts i, w, s: TensorFlow names the graph's inputs after
# them, and grappler's rewrites can depend on those names), the weights assigned inside the traced
# function, eps and the running-average weights fed as tensors. Nothing here imports TensorFlow
# (bfloat16 rounding uses ml_dtypes, TensorFlow's numpy bfloat16).

_S_TF = {"float16": "tf.float16", "bfloat16": "tf.bfloat16", "float32": "tf.float32", "float64": "tf.float64"}


def _s_round(value: float, dtype: str) -> float:
    """`value` rounded to `dtype` as `_scalar` rounds it (bfloat16: ml_dtypes', TensorFlow's numpy
    bfloat16), without importing TensorFlow."""
    if dtype == "bfloat16":
        import ml_dtypes

        return float(np.asarray(value, dtype=np.float64).astype(ml_dtypes.bfloat16))
    return float(np.asarray(value, dtype=np.float64).astype(dtype))


def _s_const(value: float, dtype: str, what: str, note: str = "") -> str:
    """Source of a scalar tensor of `dtype` holding `value` rounded as the runner feeds it: the
    literal itself for float16/32/64 (`tf.constant` rounds a Python float correctly, as numpy
    does), the exact rounded value for bfloat16; `note`, a comment to append."""
    lit = _s_lit(value)
    if dtype == "bfloat16" and _s_round(value, dtype) != float(value):
        lit = _s_lit(_s_round(value, dtype))
        note = f"{what} = {_s_lit(value)} rounded to bfloat16" + (f"; {note}" if note else "")
    return f"tf.constant({lit}, {_S_TF[dtype]})" + (f"  # {note}" if note else "")


def _s_lit(v) -> str:
    v = float(v)
    if math.isnan(v):
        return 'float("nan")'
    if math.isinf(v):
        return 'float("inf")' if v > 0 else 'float("-inf")'
    return repr(v)


def _s_spec(shape, dtype: str) -> str:
    """`tf.TensorSpec` source; `shape` entries None are unknown dims."""
    return f"tf.TensorSpec([{', '.join('None' if d is None else str(int(d)) for d in shape)}], {_S_TF[dtype]})"


def _s_unknown(ndim: int, dtype: str) -> str:
    return _s_spec([None] * ndim, dtype)


def _s_frame(case, *, keras: bool, check: Callable[[], None]) -> list[str]:
    """The opening of every TF/Keras script: quiet logging set before the import, one thread as
    normfuzz runs TensorFlow, and the helpers `tensor` and `to_numpy`."""
    check()
    lines = ["import os", "",
             "# TF_ENABLE_ONEDNN_OPTS is left as the environment sets it, as normfuzz leaves it (unset: oneDNN",
             "# CPU kernels on x86, TensorFlow's default); another setting selects other kernels, which can",
             "# round differently.",
             'os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # quiet TensorFlow\'s C++ logging (set before the import)']
    if keras:
        lines.append('os.environ["KERAS_BACKEND"] = "tensorflow"  # Keras 3 on TensorFlow, as normfuzz runs it')
    lines.append("import tensorflow as tf  # noqa: E402")
    if keras:
        lines.append("import keras  # noqa: E402")
    lines += [
        "",
        'tf.get_logger().setLevel("ERROR")',
        "try:  # normfuzz runs TensorFlow with one intra-op and one inter-op thread",
        "    tf.config.threading.set_intra_op_parallelism_threads(1)",
        "    tf.config.threading.set_inter_op_parallelism_threads(1)",
        "except RuntimeError:  # TensorFlow was already initialized in this process: its threads stay",
        "    pass",
        "", "",
        "def tensor(name, dtype):",
        '    """inputs[name] as a tensor of `dtype` (a bfloat16 case\'s float32 carriers convert exactly)."""',
        "    return tf.constant(inputs[name].astype(dtype.as_numpy_dtype))",
        "", "",
        "def to_numpy(t):",
        '    """A result as a numpy array (bfloat16 as its float32 carrier, exactly)."""',
        "    a = t.numpy()",
        '    return a.astype(np.float32) if a.dtype.name == "bfloat16" else a',
        "", "",
    ]
    if case.dtype == "bfloat16":
        lines.append("# A bfloat16 case: the inputs hold bfloat16 values in float32 arrays; tensor() is exact.")
    return lines


def _s_function(name: str, params: list[tuple[str, Any, str]], body: list[str], note: str) -> list[str]:
    """A `tf.function` with a fixed input signature: `params` (argument, TensorSpec source or, for a
    dict argument, a mapping key -> TensorSpec source, comment)."""
    out = ["", ""] + [f"# {ln}" for ln in note.split("\n")] + ["@tf.function(input_signature=["]
    for arg, spec, comment in params:
        if isinstance(spec, Mapping) and not spec:
            out.append(f"    {{}},  # {arg}: {comment} (none)")
        elif isinstance(spec, Mapping):
            out.append(f"    {{  # {arg}: {comment}")
            out += [f'        "{k}": {v},' for k, v in sorted(spec.items())]  # the order TF flattens it in
            out.append("    },")
        else:
            out.append(f"    {spec},  # {arg}" + (f": {comment}" if comment else ""))
    out += ["])", f"def {name}({', '.join(a for a, _, _ in params)}):"]
    out += [("    " + ln) if ln else "" for ln in body]
    return out + ["", ""]


_S_NAMES_NOTE = ("The arguments have the structure and names of normfuzz's: TensorFlow names the graph's inputs\n"
                 "after them, and grappler's rewrites, which can reorder arithmetic, can depend on those names\n"
                 "(renaming the inputs alone has changed last bits).")
_S_NN_NOTE = ("A fixed input signature with unknown dims (rank and dtype only), as normfuzz traces it: the\n"
              "graph, and with it the rounding, does not depend on the shapes seen when tracing.\n" + _S_NAMES_NOTE)


def _s_unpack(names: list[str], src: str) -> list[str]:
    """`a, b = src["a"], src["b"]` (nothing for no names)."""
    if not names:
        return []
    return [f"{', '.join(names)} = " + ", ".join(f'{src}["{n}"]' for n in names)]


def _s_list(v) -> str:
    return "[" + ", ".join(str(int(i)) for i in v) + "]"


def _s_bn_call(lhs: str, x: str, m: str, v: str, b: str, g: str) -> list[str]:
    """`lhs = tf.nn.batch_normalization(...)`, on one line or, when long, with its arguments on
    the next two."""
    pos, kw = f"{x}, {m}, {v}", f"offset={b}, scale={g}, variance_epsilon=eps"
    one = f"{lhs} = tf.nn.batch_normalization({pos}, {kw})"
    if len(one) <= 100:
        return [one]
    return [f"{lhs} = tf.nn.batch_normalization(", f"    {pos},", f"    {kw})"]


def _s_nn_forward(op: str, cfg: Mapping, nd: int, has: set, *, x: str = "x", given=None,
                  stats: bool = True) -> list[str]:
    """Lines setting `y` (and, with `stats`, a dict `stats` of the oracle's statistics) from tf.nn
    ops, as `_nn_forward` composes them; `has`: the parameters present."""
    g = "gamma" if "gamma" in has else "None"
    b = "beta" if "beta" in has else "None"
    out: list[str] = []
    if op == "batch_norm":
        layout = cfg["layout"]
        axes, _ = _bn_reduce(nd, layout)
        if layout == "channels_last":
            if given is None:
                out.append(f"mean, variance = tf.nn.moments({x}, axes={_s_list(axes)})")
                m, v = "mean", "variance"
            else:
                m, v = given
            out += _s_bn_call("y", x, m, v, b, g)
        else:
            shape = [1, -1] + [1] * (nd - 2)
            r = (lambda p: "None" if p == "None" else f"tf.reshape({p}, {shape})")
            if given is None:
                out.append(f"mean, variance = tf.nn.moments({x}, axes={_s_list(axes)}, keepdims=True)")
                m, v = "mean", "variance"
            else:
                m, v = r(given[0]), r(given[1])
            out += _s_bn_call("y", x, m, v, r(b), r(g))
            if given is None and stats:
                out.append("mean, variance = tf.reshape(mean, [-1]), tf.reshape(variance, [-1])")
        return out
    if op == "layer_norm":
        k = _trailing_k(nd, cfg)
        out.append(f"mean, variance = tf.nn.moments({x}, axes={_s_list(range(nd - k, nd))}, keepdims=True)")
        out += _s_bn_call("y", x, "mean", "variance", b, g)
        if stats:
            out += [f"lead = tf.shape({x})[:{nd - k}]",
                    'stats = {"mean": tf.reshape(mean, lead), "rstd": tf.reshape(tf.math.rsqrt(variance + eps), lead)}']
        return out
    if op == "instance_norm":
        out.append(f"s = tf.shape({x})")
        if cfg["layout"] == "channels_first":
            pshape = [1, -1] + [1] * (nd - 2)
            out.append(f"mean, variance = tf.nn.moments({x}, axes={_s_list(range(2, nd))}, keepdims=True)")
            nc = "s[:2]"
        else:
            pshape = [-1]
            out.append(f"mean, variance = tf.nn.moments({x}, axes={_s_list(range(1, nd - 1))}, keepdims=True)")
            nc = f"tf.stack([s[0], s[{nd - 1}]])"
        r = (lambda p: "None" if p == "None" else f"tf.reshape({p}, {pshape})")
        out += _s_bn_call("y", x, "mean", "variance", r(b), r(g))
        if stats:
            out += [f"nc = {nc}",
                    'stats = {"mean": tf.reshape(mean, nc), "rstd": tf.reshape(tf.math.rsqrt(variance + eps), nc)}']
        return out
    if op == "group_norm":
        gr = int(cfg["num_groups"])
        per_group = cfg.get("affine", "per_channel") == "per_group"
        out.append(f"s = tf.shape({x})")
        if cfg["layout"] == "channels_first":
            out.append(f"xr = tf.reshape({x}, tf.concat([[s[0], {gr}, s[1] // {gr}], s[2:]], 0))"
                       f"  # (N, G, C/G, *spatial)")
            axes = list(range(2, nd + 1))
            pshape = [1, gr] + ([1] if per_group else [-1]) + [1] * (nd - 2)
        else:
            out.append(f"xr = tf.reshape({x}, tf.concat([s[:-1], [{gr}, s[{nd - 1}] // {gr}]], 0))"
                       f"  # (N, *spatial, G, C/G)")
            axes = list(range(1, nd - 1)) + [nd]
            pshape = [gr, 1] if per_group else [gr, -1]
        r = (lambda p: "None" if p == "None" else f"tf.reshape({p}, {pshape})")
        out.append(f"mean, variance = tf.nn.moments(xr, axes={_s_list(axes)}, keepdims=True)")
        out += _s_bn_call("y", "xr", "mean", "variance", r(b), r(g))
        out.append("y = tf.reshape(y, s)")
        if stats:
            out += [f"ng = tf.stack([s[0], {gr}])",
                    'stats = {"mean": tf.reshape(mean, ng), "rstd": tf.reshape(tf.math.rsqrt(variance + eps), ng)}']
        return out
    if op == "mvn":
        axes = _norm_axes(cfg.get("axes", (0, 2, 3)), nd)
        out.append(f"mean, variance = tf.nn.moments({x}, axes={_s_list(axes)}, keepdims=True)")
        out += _s_bn_call("y", x, "mean", "variance", "None", "None")
        return out
    if op == "l2_normalize":
        axes = _norm_axes(cfg.get("axes", (-1,)), nd)
        out.append(f"y = tf.math.l2_normalize({x}, axis={_s_list(axes)}, epsilon=eps)")
        return out
    raise Unsupported(f"tf.nn has no code path for {op}")


def _s_eps_nn(case) -> float:
    """The eps TFNNRunner feeds (its `_eps`), as a Python float."""
    eps = float(case.attrs.get("eps", {"mvn": 1e-9, "l2_normalize": 1e-12}.get(case.op, 0.0)))
    if case.op in ("mvn", "l2_normalize") and case.attrs.get("eps_mode") == "none":
        eps = 0.0
    return eps


def _s_grad(kind: str, names: list[str], fwd: list[str], *, sources: list[str] | None = None,
            watch: list[str] | None = None) -> list[str]:
    """The body of a VJP (tf.GradientTape, cotangent `dy`) or JVP (tf.autodiff.ForwardAccumulator,
    tangents `t<name>`) of `fwd` (lines setting `y`) with respect to `names` (`sources`: their
    expressions; `watch`: what the tape watches), returning a dict of the oracle's output names."""
    src = ", ".join(sources or names)
    if kind == "vjp":
        keys = ", ".join(f'"d{n}"' for n in names)
        return (["with tf.GradientTape() as tape:", f"    tape.watch({watch[0] if watch else '[' + src + ']'})"]
                + ["    " + ln for ln in fwd]
                + [f"grads = tape.gradient(y, [{src}], output_gradients=dy)",
                   f"return dict(zip([{keys}], grads))"])
    tangents = ", ".join("t" + n for n in names)
    return ([f"with tf.autodiff.ForwardAccumulator([{src}], [{tangents}]) as acc:"]
            + ["    " + ln for ln in fwd] + ['return {"ty": acc.jvp(y)}'])


def _s_call_outputs(fn: str, args: list[str]) -> list[str]:
    return [f"outputs = {{name: to_numpy(t) for name, t in {fn}({', '.join(args)}).items()}}"]


def _s_nn(runner: "TFNNRunner", case) -> str:
    """tf.nn composed as TFNNRunner.run traces it: a tf.function of (i: the case's inputs, eps[, s:
    the running-average weights]), traced with unknown dims."""
    op, mode, dt = case.op, case.mode, case.dtype
    ins = case.inputs

    def check():
        reason = runner.supports(op, mode, dt, case.attrs)
        if reason is not None:
            raise Unsupported(reason)
        if op == "batch_norm" and mode in ("training", "training_steps") and "running_mean" in ins:
            a = _bn_attrs(case.attrs)
            x0 = ins["xs"][0] if mode == "training_steps" else ins["x"]
            n = _count(x0.shape, _bn_reduce(x0.ndim, a["layout"])[0])
            if a["running_var_estimator"] == "unbiased" and n < 2:
                raise Unsupported(f"the unbiased running variance is undefined for a reduction set of "
                                  f"n={n} element (n/(n-1))")

    lines = _s_frame(case, keras=False, check=check)
    tdt = _S_TF[dt]
    lines.append(f"i = {{name: tensor(name, {tdt}) for name in inputs}}  # the case's inputs as tensors")
    spec: dict[str, str] = {k: _s_unknown(a.ndim, dt) for k, a in ins.items()}
    if "xs" in ins:
        lines.append('i["xs"] = tf.unstack(i["xs"])  # a list, one batch per training step (unrolled in the graph)')
        spec["xs"] = f"[{_s_unknown(ins['xs'].ndim - 1, dt)}] * {ins['xs'].shape[0]}"
    lines.append(f"eps = {_s_const(_s_eps_nn(case), dt, 'eps', 'a tensor argument, as normfuzz feeds it')}")
    params: list[tuple[str, Any, str]] = [("i", spec, "the case's inputs"), ("eps", _s_spec([], dt), "")]
    has = {k for k in ("gamma", "beta") if k in ins}
    pnames = [k for k in ("gamma", "beta") if k in ins]
    if op == "batch_norm":
        return _s_nn_bn(case, lines, params, pnames, has)
    cfg = {k: v for k, v in case.attrs.items() if k != "eps"}
    nd = ins["x"].ndim
    if mode == "forward":
        body = _s_unpack(["x"] + pnames, "i") + _s_nn_forward(op, cfg, nd, has)
        body.append('return {"y": y, **stats}' if _NN_STATS[op] else 'return {"y": y}')
    elif mode == "vjp":
        body = _s_unpack(["x"] + pnames + ["dy"], "i")
        body += _s_grad("vjp", ["x"] + pnames, _s_nn_forward(op, cfg, nd, has, stats=False))
    else:
        moving = [k for k in ["x"] + pnames if "t" + k in ins]
        body = _s_unpack(["x"] + pnames + ["t" + k for k in moving], "i")
        body += _s_grad("jvp", moving, _s_nn_forward(op, cfg, nd, has, stats=False))
    fn = op if mode == "forward" else f"{op}_{mode}"
    lines += _s_function(fn, params, body, _S_NN_NOTE)
    lines += _s_call_outputs(fn, [p for p, _, _ in params])
    return "\n".join(lines) + "\n"


def _s_nn_bn(case, lines, params, pnames, has) -> str:
    """batch_norm with tf.nn ops, as TFNNRunner._batch_norm traces it."""
    mode, dt, ins = case.mode, case.dtype, case.inputs
    a = _bn_attrs(case.attrs)
    cfg = {"layout": a["layout"]}
    sdt = _stat_dtype(dt)
    stdt = _S_TF[sdt]
    running = ["running_mean", "running_var"] if "running_mean" in ins else []
    fn = "batch_norm" if mode == "inference" else "batch_norm_" + mode
    if mode == "inference":
        body = _s_unpack(["x"] + pnames + ["running_mean", "running_var"], "i")
        body += _s_nn_forward("batch_norm", cfg, ins["x"].ndim, has, given=("running_mean", "running_var"))
        body.append('return {"y": y}')
    elif mode in ("training", "training_steps"):
        steps = mode == "training_steps"
        x0 = ins["xs"][0] if steps else ins["x"]
        nd = x0.ndim
        n = _count(x0.shape, _bn_reduce(nd, a["layout"])[0])
        k_steps = ins["xs"].shape[0] if steps else 1
        nbt = int(a["num_batches_tracked"])
        ws = [_batch_weight(a["momentum"], a["momentum_on"], nbt + k) for k in range(k_steps)]
        unbiased = bool(running) and a["running_var_estimator"] == "unbiased"
        factor = n / (n - 1) if unbiased else 1.0
        if running:
            m, on = a["momentum"], a["momentum_on"]
            if m is None:
                how = f"the cumulative average after num_batches_tracked={nbt}: 1/(num_batches_tracked + k + 1)"
            elif on == "batch":
                how = f"momentum={m!r} weighting the batch statistic"
            else:
                how = f"momentum={m!r} weighting the running statistic: 1 - {m!r}"
            lines += ["# Running averages by ExponentialMovingAverage's update v -= (v - batch) * w (decay = 1 - w),",
                      f"# w from {how};",
                      f"# factor n/(n-1) (n = {n}) makes the running variance unbiased." if unbiased else
                      "# factor 1: the running variance takes the biased batch variance."]
        else:
            lines.append("# The running-average weights, fed as normfuzz feeds them (unused: no running statistics).")
        lines += [f"w = tf.constant([{', '.join(_s_lit(w) for w in ws)}], {stdt})  # one weight per step",
                  f"factor = {_s_const(factor, sdt, 'factor')}",
                  's = {"w": w, "factor": factor}']
        params.append(("s", {"w": _s_spec([None], sdt), "factor": _s_spec([], sdt)}, "the running-average weights"))
        fwd = _s_nn_forward("batch_norm", cfg, nd, has)
        update = []
        if running:
            update = [f"running_mean = running_mean - (running_mean - tf.cast(mean, {stdt})) * w[{{k}}]",
                      f"running_var = running_var - (running_var - tf.cast(variance, {stdt}) * factor) * w[{{k}}]"]
        body = _s_unpack(["xs" if steps else "x"] + pnames + running, "i")
        if running:
            body += _s_unpack(["w", "factor"], "s")
            body += [f"running_mean = tf.cast(running_mean, {stdt})  # running statistics in {sdt}",
                     f"running_var = tf.cast(running_var, {stdt})"]
        if not steps:
            body += fwd + [u.format(k=0) for u in update]
            ret = ['"y": y', '"mean": mean', '"var": variance']
            if running:
                ret += ['"running_mean": running_mean', '"running_var": running_var']
            ret.append('"rstd": tf.math.rsqrt(variance + eps)')
            body.append("return {" + ", ".join(ret) + "}")
        else:
            names = ["y", "mean", "var"] + (["running_mean", "running_var"] if running else [])
            body.append("out = {" + ", ".join(f'"{nm}": []' for nm in names) + "}")
            body.append("for k, x in enumerate(xs):  # one training step per batch")
            body += ["    " + ln for ln in fwd + [u.format(k="k") for u in update]]
            vals = ["y", "mean", "variance"] + (["running_mean", "running_var"] if running else [])
            body += [f'    out["{nm}"].append({v})' for nm, v in zip(names, vals)]
            body.append("return {name: tf.stack(values) for name, values in out.items()}")
    else:
        state, kind = mode.split("_")
        given = ("running_mean", "running_var") if state == "inference" else None
        fwd = _s_nn_forward("batch_norm", cfg, ins["x"].ndim, has, given=given, stats=False)
        stats = ["running_mean", "running_var"] if given else []
        if kind == "vjp":
            body = _s_unpack(["x"] + pnames + stats + ["dy"], "i") + _s_grad("vjp", ["x"] + pnames, fwd)
        else:
            moving = [k for k in ["x"] + pnames if "t" + k in ins]
            body = _s_unpack(["x"] + pnames + stats + ["t" + k for k in moving], "i") + _s_grad("jvp", moving, fwd)
    lines += _s_function(fn, params, body, _S_NN_NOTE)
    lines += _s_call_outputs(fn, [p for p, _, _ in params])
    return "\n".join(lines) + "\n"


def _s_fused(runner: "FusedBatchNormRunner", case) -> str:
    """tf.compat.v1.nn.fused_batch_norm, eagerly, as FusedBatchNormRunner.run calls it."""
    mode, dt, ins = case.mode, case.dtype, case.inputs
    a = _bn_attrs(case.attrs)
    layout = a["layout"]
    x0 = ins["xs"][0] if mode == "training_steps" else ins["x"]
    nd = x0.ndim
    running = "running_mean" in ins

    def check():
        reason = runner.supports(case.op, mode, dt, case.attrs)
        if reason is not None:
            raise Unsupported(reason)
        if nd not in (4, 5):
            raise Unsupported(f"fused_batch_norm takes rank 4 (NHWC/NCHW) or rank 5 (NDHWC/NCDHW) "
                              f"inputs; got rank {nd}")
        if mode in ("training", "training_steps") and running and a["running_var_estimator"] == "biased":
            raise Unsupported("fused_batch_norm feeds the Bessel-corrected (unbiased) batch variance into "
                              "the running variance; running_var_estimator='biased' is not expressible")

    lines = _s_frame(case, keras=False, check=check)
    tdt = _S_TF[dt]
    fmt = {(4, "channels_last"): "NHWC", (4, "channels_first"): "NCHW",
           (5, "channels_last"): "NDHWC", (5, "channels_first"): "NCDHW"}[(nd, layout)]
    c = x0.shape[-1] if layout == "channels_last" else x0.shape[1]
    eps = float(case.attrs["eps"]) if "eps" in case.attrs else 0.001
    lines.append("# scale, offset, mean and variance are float32 for every dtype of x")
    for k, name, fill in (("gamma", "scale", "ones"), ("beta", "offset", "zeros")):
        if k in ins:
            lines.append(f'{name} = inputs["{k}"].astype(np.float32)')
        else:
            lines.append(f"{name} = np.{fill}({c}, np.float32)  # no {k} in the case")
    if running:
        lines += ['running_mean = inputs["running_mean"].astype(np.float32)',
                  'running_var = inputs["running_var"].astype(np.float32)']
    opts = f'epsilon={_s_lit(eps)}, data_format="{fmt}"'
    call = "tf.compat.v1.nn.fused_batch_norm"

    def factor_note(nbt: int) -> str:
        m, on = a["momentum"], a["momentum_on"]
        if m is None:
            return f"# exponential_avg_factor: the cumulative average after num_batches_tracked={nbt}, 1/(n + 1)"
        if on == "batch":
            return f"# exponential_avg_factor: the case's momentum={m!r} weighting the batch statistic"
        return f"# exponential_avg_factor: the case's momentum={m!r} weights the running statistic: 1 - {m!r}"

    if mode == "inference":
        lines += [f'x = tensor("x", {tdt})',
                  f"y, _, _ = {call}(x, scale, offset, mean=running_mean, variance=running_var, {opts},",
                  "                                           is_training=False)",
                  'outputs = {"y": to_numpy(y)}']
    elif mode == "training":
        lines.append(f'x = tensor("x", {tdt})')
        if running:
            nbt = int(a["num_batches_tracked"])
            f = _batch_weight(a["momentum"], a["momentum_on"], nbt)
            lines += [factor_note(nbt),
                      f"y, running_mean, running_var = {call}(",
                      f"    x, scale, offset, mean=running_mean, variance=running_var, {opts},",
                      f"    is_training=True, exponential_avg_factor={_s_lit(f)})",
                      'outputs = {"y": to_numpy(y), "running_mean": to_numpy(running_mean), '
                      '"running_var": to_numpy(running_var)}']
        else:
            lines += [f"y, mean, _ = {call}(x, scale, offset, {opts}, is_training=True)",
                      'outputs = {"y": to_numpy(y), "mean": to_numpy(mean)}']
    elif mode == "training_steps":
        nbt = int(a["num_batches_tracked"])
        fs = [_batch_weight(a["momentum"], a["momentum_on"], nbt + k) for k in range(ins["xs"].shape[0])]
        lines += [f'xs = tensor("xs", {tdt})', factor_note(nbt) + " (one per step)",
                  f"factors = [{', '.join(_s_lit(f) for f in fs)}]",
                  "ys, running_means, running_vars = [], [], []",
                  "for k, factor in enumerate(factors):  # one training step per batch",
                  f"    y, running_mean, running_var = {call}(",
                  f"        xs[k], scale, offset, mean=running_mean, variance=running_var, {opts},",
                  "        is_training=True, exponential_avg_factor=factor)",
                  "    ys.append(to_numpy(y))",
                  "    running_means.append(to_numpy(running_mean))",
                  "    running_vars.append(to_numpy(running_var))",
                  'outputs = {"y": np.stack(ys), "running_mean": np.stack(running_means), '
                  '"running_var": np.stack(running_vars)}']
    else:
        state, kind = mode.split("_")
        training = state == "training"
        stats = "" if training else "mean=running_mean, variance=running_var, "
        fwd = f"y, _, _ = {call}(x, scale, offset, {stats}{opts}, is_training={training})"
        lines += [f'x = tensor("x", {tdt})', "scale, offset = tf.constant(scale), tf.constant(offset)",
                  "# gradients through the fused kernel's registered gradient (FusedBatchNormGradV3)"]
        if kind == "vjp":
            names = ["x"] + [k for k in ("gamma", "beta") if k in ins]
            srcs = ", ".join({"x": "x", "gamma": "scale", "beta": "offset"}[k] for k in names)
            keys = ", ".join(f'"d{k}"' for k in names)
            lines += ["with tf.GradientTape() as tape:", f"    tape.watch([{srcs}])", "    " + fwd,
                      f'grads = tape.gradient(y, [{srcs}], output_gradients=tensor("dy", {tdt}))',
                      f"outputs = {{name: to_numpy(g) for name, g in zip([{keys}], grads)}}"]
        else:
            prim, tang = ["x"], [f'tensor("tx", {tdt})']
            for k, v in (("gamma", "scale"), ("beta", "offset")):
                if k in ins and "t" + k in ins:
                    prim.append(v)
                    tang.append(f'tf.constant(inputs["t{k}"].astype(np.float32))')
            lines += [f"with tf.autodiff.ForwardAccumulator([{', '.join(prim)}], [{', '.join(tang)}]) as acc:",
                      "    " + fwd, 'outputs = {"ty": to_numpy(acc.jvp(y))}']
    return "\n".join(lines) + "\n"


_S_KERAS_CLS = {"bn": "BatchNormalization", "ln": "LayerNormalization", "gn": "GroupNormalization",
                "rms": "RMSNormalization", "unit": "UnitNormalization"}


def _s_kwarg(v) -> str:
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, float):
        return _s_lit(v)
    if isinstance(v, (tuple, list)):
        return _s_list(v)
    return repr(v)


def _s_keras(runner: "KerasRunner", case) -> str:
    """The Keras 3 layer, built, its weights assigned and called in a tf.function of (w: the
    weights, i: the data), as KerasRunner.run traces it."""
    op, mode, dt, ins = case.op, case.mode, case.dtype, case.inputs
    steps = mode == "training_steps"
    x0 = ins["xs"][0] if steps else ins["x"]
    bn = op == "batch_norm"
    training = bn and mode.startswith("training")
    kind = ("forward" if mode in ("training", "inference", "training_steps") else mode.split("_")[1]) if bn else mode
    has_running = bn and "running_mean" in ins

    def check():
        reason = runner.supports(op, mode, dt, case.attrs)
        if reason is not None:
            raise Unsupported(reason)
        if bn and training and has_running:
            a = _bn_attrs(case.attrs)
            if a["momentum"] is None:
                raise Unsupported("keras BatchNormalization's momentum is a fixed float; the cumulative "
                                  "average (momentum=None) is not expressible")
            if a["running_var_estimator"] == "unbiased":
                raise Unsupported("keras BatchNormalization stores the biased batch variance in "
                                  "moving_variance; running_var_estimator='unbiased' is not expressible")

    lines = _s_frame(case, keras=True, check=check)
    tdt = _S_TF[dt]
    spec, bshape, wmap = runner._spec(case, x0)
    layer_kind, kw = spec[0], dict(spec[1])
    if bn:
        a = _bn_attrs(case.attrs)
        m = a["momentum"]
        if m is not None and a["momentum_on"] == "batch":
            lines.append(f"# Keras' momentum weights the moving statistic: the case's momentum={m!r} (batch "
                         f"weight) is 1 - {m!r}")
        elif m is None:
            lines.append("# momentum=None in the case: no running update here, Keras' default momentum 0.99")
    args = ", ".join(f"{k}={_s_kwarg(v)}" for k, v in kw.items())
    lines.append(f'layer = keras.layers.{_S_KERAS_CLS[layer_kind]}({args}, dtype="{dt}")')
    lines.append(f"layer.build({tuple(bshape)!r})")
    # the layer's variables (case input -> attribute), as the runner finds them on the built layer
    exists = {"gamma": kw.get("scale", False), "beta": kw.get("center", False), "running_mean": True,
              "running_var": True, "weight": True}
    wvars = {k: attr for k, attr in wmap.items() if exists[k]}
    init = {"gamma": "ones", "beta": "zeros", "weight": "ones", "running_mean": "zeros", "running_var": "ones"}
    if wvars:
        lines.append("w = {  # the layer's weights: the case's, or Keras' initial values")
        for k, attr in wvars.items():
            lines.append(f'    "{k}": tensor("{k}", {tdt}),' if k in ins else
                         f'    "{k}": tf.{init[k]}(layer.{attr}.shape, {tdt}),  # not in the case')
        lines.append("}")
    else:
        lines.append("w = {}  # the layer has no weights")
    nw = {"bn": 1, "gn": 1}.get(layer_kind)
    wndim = {k: (ins[k].ndim if k in ins else (nw or len(kw["axis"]))) for k in wvars}
    wspec = {k: _s_unknown(wndim[k], dt) for k in wvars}
    data = [k for k in ins if k not in wvars]
    if steps:
        lines.append(f'xs = tf.unstack(tensor("xs", {tdt}))  # a list, one batch per training step')
        params = [("w", wspec, "the weights"),
                  ("xs", f"[{_s_spec(bshape, dt)}] * {ins['xs'].shape[0]}", "one batch per step")]
    else:
        lines.append(f"i = {{name: tensor(name, {tdt}) for name in {tuple(data)!r}}}  # the data".replace("'", '"'))
        params = [("w", wspec, "the weights"),
                  ("i", {k: (_s_spec(bshape, dt) if k in ("x", "dy", "tx") else _s_unknown(ins[k].ndim, dt))
                         for k in data}, "the data")]
    body = [f'layer.{attr}.assign(w["{k}"])' for k, attr in wvars.items()]
    call = f"layer(x, training={training})" if bn else "layer(x)"
    if steps:
        body += ['out = {"y": [], "running_mean": [], "running_var": []}',
                 "for x in xs:  # one training step per batch",
                 f'    out["y"].append({call})',
                 '    out["running_mean"].append(tf.convert_to_tensor(layer.moving_mean))',
                 '    out["running_var"].append(tf.convert_to_tensor(layer.moving_variance))',
                 "return {name: tf.stack(values) for name, values in out.items()}"]
    elif kind == "forward":
        body += _s_unpack(["x"], "i")
        if has_running and training:
            body += [f"y = {call}",
                     'return {"y": y, "running_mean": tf.convert_to_tensor(layer.moving_mean),',
                     '        "running_var": tf.convert_to_tensor(layer.moving_variance)}']
        else:
            body.append(f'return {{"y": {call}}}')
    else:
        pnames = [k for k in ("gamma", "beta", "weight") if k in ins and k in wvars]
        if kind == "jvp":
            pnames = [k for k in pnames if "t" + k in ins]
            body += _s_unpack(["x", "tx"] + ["t" + k for k in pnames], "i")
        else:
            body += _s_unpack(["x", "dy"], "i")
        sources = ["x"] + [f"layer.{wvars[k]}.value" for k in pnames]
        body += _s_grad(kind, ["x"] + pnames, [f"y = {call}"], sources=sources, watch=["x"])
    lead = ("A fixed input signature as normfuzz traces it: dims unknown except the axes the layer is\n"
            "built for; " + ("the weights are arguments, assigned inside the traced function.\n" if wvars else
                             "the layer has no weights.\n"))
    lines += _s_function("run", params, body, lead + _S_NAMES_NOTE)
    out = _s_call_outputs("run", [p for p, _, _ in params])
    if layer_kind == "unit" and dt == "float16":
        out = ["with np.errstate(over=\"ignore\"):  # tracing: Keras' float16 constant 1/1e-12 overflows to inf"] + \
              ["    " + ln for ln in out]
    lines += out
    return "\n".join(lines) + "\n"
