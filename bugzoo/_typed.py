"""Buggy twins of the oracle's typed functions, built from a variant's case-level implementation.

Each factory returns a function with exactly the parameters of the oracle function of the same name
(tests/bugzoo checks this with inspect.signature) plus a keyword `dtype: str | None = None`, which
format-dependent variants need. The function packs its arguments into a case (inputs, attrs), runs
the variant's implementation for the matching mode and returns what the oracle function returns:
an EXT array or the oracle's own result dataclass.
"""

from __future__ import annotations

import numpy as np

from oracles._core import accurate_stats
from oracles.op_batch_norm import BatchNormTraining
from oracles.op_group_norm import GroupNormResult
from oracles.op_instance_norm import InstanceNormResult
from oracles.op_layer_norm import LayerNormResult
from oracles.op_rms_norm import RMSNormResult

from ._engine import chained_step


def _present(**arrays) -> dict:
    return {k: v for k, v in arrays.items() if v is not None}


def batch_norm_inference(impl):
    def batch_norm_inference(x, running_mean, running_var, gamma=None, beta=None, *, eps: float,
                             layout: str = "channels_first", dtype: str | None = None) -> np.ndarray:
        inputs = _present(x=x, running_mean=running_mean, running_var=running_var, gamma=gamma, beta=beta)
        return impl("inference", inputs, {"eps": eps, "layout": layout}, dtype, accurate_stats)["y"]
    return batch_norm_inference


def _bn_training_attrs(eps, momentum, momentum_on, running_var_estimator, num_batches_tracked, layout):
    return {"eps": eps, "momentum": momentum, "momentum_on": momentum_on,
            "running_var_estimator": running_var_estimator,
            "num_batches_tracked": num_batches_tracked, "layout": layout}


def _bn_result(o: dict) -> BatchNormTraining:
    return BatchNormTraining(o["y"], o["mean"], o["var"], o["rstd"], o.get("running_mean"),
                             o.get("running_var"))


def batch_norm_training(impl):
    def batch_norm_training(x, gamma=None, beta=None, running_mean=None, running_var=None, *,
                            eps: float, momentum: float | None = 0.1, momentum_on: str = "batch",
                            running_var_estimator: str = "unbiased", num_batches_tracked: int = 0,
                            layout: str = "channels_first", _stats=accurate_stats,
                            dtype: str | None = None) -> BatchNormTraining:
        inputs = _present(x=x, gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
        attrs = _bn_training_attrs(eps, momentum, momentum_on, running_var_estimator,
                                   num_batches_tracked, layout)
        return _bn_result(impl("training", inputs, attrs, dtype, _stats))
    return batch_norm_training


def batch_norm_training_steps(impl):
    def batch_norm_training_steps(xs, gamma=None, beta=None, running_mean=None, running_var=None, *,
                                  eps: float, momentum: float | None = 0.1, momentum_on: str = "batch",
                                  running_var_estimator: str = "unbiased", num_batches_tracked: int = 0,
                                  layout: str = "channels_first", _stats=accurate_stats,
                                  dtype: str | None = None) -> list[BatchNormTraining]:
        # K training steps of the variant, each starting from the running statistics the previous
        # one produced (as oracles.batch_norm_training_steps does); the rstd of each step is kept.
        out = []
        rm, rv = running_mean, running_var
        for k in range(np.shape(xs)[0]):
            inputs = _present(x=np.asarray(xs)[k], gamma=gamma, beta=beta, running_mean=rm, running_var=rv)
            attrs = _bn_training_attrs(eps, momentum, momentum_on, running_var_estimator,
                                       num_batches_tracked + k, layout)
            with chained_step(k > 0):
                s = _bn_result(impl("training", inputs, attrs, dtype, _stats))
            out.append(s)
            rm, rv = s.running_mean, s.running_var
        return out
    return batch_norm_training_steps


def layer_norm(impl):
    def layer_norm(x, gamma=None, beta=None, *, eps: float, normalized_ndim: int | None = None,
                   axis: int | None = None, _stats=accurate_stats,
                   dtype: str | None = None) -> LayerNormResult:
        attrs = _present(eps=eps, normalized_ndim=normalized_ndim, axis=axis)
        o = impl("forward", _present(x=x, gamma=gamma, beta=beta), attrs, dtype, _stats)
        return LayerNormResult(o["y"], o["mean"], o["rstd"])
    return layer_norm


def group_norm(impl):
    def group_norm(x, num_groups: int, gamma=None, beta=None, *, eps: float, layout="channels_first",
                   affine="per_channel", _stats=accurate_stats,
                   dtype: str | None = None) -> GroupNormResult:
        attrs = {"eps": eps, "num_groups": num_groups, "layout": layout, "affine": affine}
        o = impl("forward", _present(x=x, gamma=gamma, beta=beta), attrs, dtype, _stats)
        return GroupNormResult(o["y"], o["mean"], o["rstd"])
    return group_norm


def instance_norm(impl):
    def instance_norm(x, gamma=None, beta=None, *, eps: float, layout="channels_first",
                      _stats=accurate_stats, dtype: str | None = None) -> InstanceNormResult:
        o = impl("forward", _present(x=x, gamma=gamma, beta=beta), {"eps": eps, "layout": layout},
                 dtype, _stats)
        return InstanceNormResult(o["y"], o["mean"], o["rstd"])
    return instance_norm


def rms_norm(impl):
    def rms_norm(x, weight=None, *, eps: float, normalized_ndim: int | None = None,
                 axis: int | None = None, _stats=accurate_stats,
                 dtype: str | None = None) -> RMSNormResult:
        attrs = _present(eps=eps, normalized_ndim=normalized_ndim, axis=axis)
        o = impl("forward", _present(x=x, weight=weight), attrs, dtype, _stats)
        return RMSNormResult(o["y"], o["rstd"])
    return rms_norm


def mean_variance_normalization(impl):
    def mean_variance_normalization(x, *, axes=(0, 2, 3), eps: float = 1e-9, eps_mode: str = "outside",
                                    _stats=accurate_stats, dtype: str | None = None) -> np.ndarray:
        attrs = {"eps": eps, "axes": tuple(axes), "eps_mode": eps_mode}
        return impl("forward", {"x": x}, attrs, dtype, _stats)["y"]
    return mean_variance_normalization


def l2_normalize(impl):
    def l2_normalize(x, *, axes=(-1,), eps: float = 1e-12, eps_mode: str = "max_norm",
                     _stats=accurate_stats, dtype: str | None = None) -> np.ndarray:
        attrs = {"eps": eps, "axes": tuple(axes), "eps_mode": eps_mode}
        return impl("forward", {"x": x}, attrs, dtype, _stats)["y"]
    return l2_normalize


def weight_norm(impl):
    def weight_norm(v, g, *, dim: int = 0, eps: float = 0.0, eps_mode: str = "none",
                    _stats=accurate_stats, dtype: str | None = None) -> np.ndarray:
        attrs = {"eps": eps, "dim": dim, "eps_mode": eps_mode}
        return impl("forward", {"v": v, "g": g}, attrs, dtype, _stats)["w"]
    return weight_norm


#: op -> [(oracle typed function name, factory)], the first being the op's primary function.
FACTORIES = {
    "batch_norm": [("batch_norm_inference", batch_norm_inference),
                   ("batch_norm_training", batch_norm_training),
                   ("batch_norm_training_steps", batch_norm_training_steps)],
    "layer_norm": [("layer_norm", layer_norm)],
    "group_norm": [("group_norm", group_norm)],
    "instance_norm": [("instance_norm", instance_norm)],
    "rms_norm": [("rms_norm", rms_norm)],
    "mvn": [("mean_variance_normalization", mean_variance_normalization)],
    "l2_normalize": [("l2_normalize", l2_normalize)],
    "weight_norm": [("weight_norm", weight_norm)],
}

#: the BatchNorm typed function that exercises each mode family.
BN_FN_FOR_MODE = {"inference": "batch_norm_inference", "training": "batch_norm_training",
                  "training_steps": "batch_norm_training_steps"}
