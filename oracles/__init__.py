"""Correct normalization formulas in extended precision, their gradients, and the error model.

Typed functions (every convention an explicit argument; docstrings give the formulas):
    batch_norm_inference, batch_norm_training, batch_norm_training_steps (+ _vjp / _jvp),
    batch_norm_affine_params, fold_batch_norm, batch_norm_ibp, ...
    layer_norm, group_norm, instance_norm, rms_norm, mean_variance_normalization,
    l2_normalize, weight_norm (each with _vjp and _jvp)
The case-level entry point is `evaluate(op, mode, inputs, attrs, precision)` (see `registry`).
Results are numpy arrays of the evaluation's working type: `evaluate` works in numpy.float64 for
cases whose formats are all float32 or narrower and in `EXT` (numpy.longdouble) otherwise
(`Precision.working_type`; `working=` forces one); the typed functions work in `EXT` unless called
inside `oracles.dtypes.working(t)`.
"""

from .op_batch_norm import (
    BatchNormTraining,
    affine_params as batch_norm_affine_params,
    batch_norm_inference,
    batch_norm_inference_jvp,
    batch_norm_inference_vjp,
    batch_norm_training,
    batch_norm_training_jvp,
    batch_norm_training_steps,
    batch_norm_training_vjp,
    derivative_bounds as batch_norm_derivative_bounds,
    fold_into_affine as fold_batch_norm,
    ibp as batch_norm_ibp,
    second_derivative_bounds as batch_norm_second_derivative_bounds,
)
from .dtypes import DTYPES, EXT, round_to, work, working
from .errormodel import Precision, error_ratio
from .errors import OracleInputError
from .op_group_norm import group_norm, group_norm_jvp, group_norm_vjp
from .op_instance_norm import instance_norm, instance_norm_jvp, instance_norm_vjp
from .op_l2_norm import l2_normalize, l2_normalize_jvp, l2_normalize_vjp, weight_norm, weight_norm_jvp, weight_norm_vjp
from .op_layer_norm import layer_norm, layer_norm_jvp, layer_norm_vjp
from .op_mvn import mean_variance_normalization, mean_variance_normalization_jvp, mean_variance_normalization_vjp
from .registry import OPS, Evaluation, evaluate, modes
from .op_rms_norm import rms_norm, rms_norm_jvp, rms_norm_vjp

__all__ = [k for k in dir() if not k.startswith("_")]
