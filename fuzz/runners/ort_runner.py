"""ONNX Runtime runners: each case becomes a one-operator ONNX model run on the CPU execution provider.

The model is what a converter would emit for the case: the ONNX operator built with `onnx.helper`,
inputs typed in the case's format (bfloat16 fed as raw 16-bit OrtValues), and for a channels-last
case a Transpose to channels-first before the operator and one back after it (ONNX operators are
channels-first; this is what converters emit for NHWC models). Operators, one opset each:

    batch_norm     BatchNormalization-15     inference; training and training_steps (training_mode=1)
    layer_norm     LayerNormalization-17     forward (Mean and InvStdDev are its optional outputs)
    group_norm     GroupNormalization-18     affine="per_group"   (scale, bias of shape (G,))
                   GroupNormalization-21     affine="per_channel" (scale, bias of shape (C,))
    instance_norm  InstanceNormalization-22  forward
    rms_norm       RMSNormalization-23       forward
    mvn            MeanVarianceNormalization-13  forward; eps_mode="outside", eps=1e-9 only
    l2_normalize   LpNormalization-22        forward; p=2, one axis, eps_mode="none" only

Runner ids (three code paths through the same operators):

    ort           every optional output requested, every attribute written explicitly (epsilon,
                  momentum, training_mode, axis, stash_type, axes, p), graph optimizations at
                  ORT_ENABLE_ALL.
    ort.defaults  optional outputs not requested and every attribute omitted whose value equals the
                  operator's default (compared as the float32 the attribute stores), so that the
                  operator's default path is taken; an attribute that differs from the default is
                  still written. BatchNormalization's running_mean/running_var outputs stay
                  requested in training: ONNX shape inference requires all three outputs when
                  training_mode=1, and onnxruntime 1.31 crashes (SIGSEGV) when one is left out
                  with an empty name (tests/fuzz/runners/test_ort.py has the reproducer).
    ort.noopt     as `ort`, with graph optimizations disabled (ORT_DISABLE_ALL): the unfused path.

Optional inputs follow the case: LayerNormalization's B is omitted when the case has no beta. Inputs
ONNX requires but the case lacks (Scale/B of BatchNormalization, GroupNormalization,
InstanceNormalization, RMSNormalization and LayerNormalization's Scale; BatchNormalization's
input_mean/input_var in training without running statistics) become constant initializers of ones
(scales, variances) or zeros (biases, means), as a converter writes them.

How case attributes are expressed:
- momentum: ONNX's convention is "running" (running = momentum * running + (1 - momentum) * batch),
  so momentum_on="batch", m becomes momentum = 1 - m; momentum=None (cumulative average) becomes
  num_batches_tracked / (num_batches_tracked + 1) for one training step and is unsupported for
  training_steps (one attribute cannot change between steps).
- running_var_estimator: ONNX stores the population (biased) variance; "unbiased" cannot be
  expressed when running statistics are compared.
- stash_type is not a case attribute: it follows the case's accumulation format, float32 (1) except
  float64 cases of GroupNormalization-21 and RMSNormalization, which get 11 (double);
  LayerNormalization keeps 1 because onnxruntime implements only float Mean/InvStdDev (type U).
- epsilon and momentum are float32 attributes (AttributeProto.f): a float64 case whose eps (or
  translated momentum) is not a float32 value cannot be expressed exactly and is unsupported.

Outputs: the oracle's names; LayerNormalization's Mean/InvStdDev are float32 (type U); for float64
cases they are requested but not returned, since their format is not the case's. ONNX has no
statistics outputs for the other operators, so those return y (and running statistics).

Sessions are cached per runner (LRU) on (op, mode, dtype, rank, layout, graph attributes, which
optional inputs and outputs are present, and the shape of any constant initializer); every other
dimension is symbolic (dim_param), so a new shape reuses the session. The plan of a case (session,
feed names, outputs) is memoized on (op, mode, dtype, input names and shapes, attrs), so a repeated
kind of case costs a dict lookup and the session call. SessionOptions: one intra-op and one
inter-op thread, no CPU memory arena (a cached session's arena holds memory for good).
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from oracles.registry import OPS as _ORACLE_OPS

from .base import Conventions, Runner, Unsupported, framework_call

# TensorProto element types (numbers fixed by onnx.proto; onnx is imported lazily).
_ELEM = {"float16": 10, "bfloat16": 16, "float32": 1, "float64": 11}
_STASH_FLOAT, _STASH_DOUBLE = 1, 11

DOCS = "https://onnx.ai/onnx/operators/"
DOC = {
    "BatchNormalization-15": DOCS + "onnx__BatchNormalization.html",
    "LayerNormalization-17": DOCS + "onnx__LayerNormalization.html",
    "GroupNormalization-18": DOCS + "onnx__GroupNormalization.html",
    "GroupNormalization-21": DOCS + "onnx__GroupNormalization.html",
    "InstanceNormalization-22": DOCS + "onnx__InstanceNormalization.html",
    "RMSNormalization-23": DOCS + "onnx__RMSNormalization.html",
    "MeanVarianceNormalization-13": DOCS + "onnx__MeanVarianceNormalization.html",
    "LpNormalization-22": DOCS + "onnx__LpNormalization.html",
}
ORT_DOCS = "https://onnxruntime.ai/docs/api/python/api_summary.html"

#: ONNX operator, opset and the case op it serves (GroupNormalization by affine granularity).
OPSETS = {
    "BatchNormalization-15": 15, "LayerNormalization-17": 17, "GroupNormalization-18": 18,
    "GroupNormalization-21": 21, "InstanceNormalization-22": 22, "RMSNormalization-23": 23,
    "MeanVarianceNormalization-13": 13, "LpNormalization-22": 22,
}
_SIMPLE = {"batch_norm": "BatchNormalization-15", "layer_norm": "LayerNormalization-17",
           "instance_norm": "InstanceNormalization-22", "rms_norm": "RMSNormalization-23",
           "mvn": "MeanVarianceNormalization-13", "l2_normalize": "LpNormalization-22"}

#: The default ONNX epsilon (1e-5) and momentum (0.9) as the float32 attributes store them.
DEFAULT_EPS = 1e-5
DEFAULT_MOMENTUM = 0.9
MVN_EPS = 1e-9

#: onnxruntime 1.31 CPU: (ONNX operator, dtype) -> None when the runner's model runs, else what ORT
#: says. Found by building this module's models (`probe_kernels`); tests/fuzz/runners/test_ort.py
#: checks it against the installed onnxruntime, and `setup` re-probes under any other version.
KERNELS_VERSION = "1.31"
KERNELS: dict[tuple[str, str], str | None] = {
    ("BatchNormalization-15", "float16"): None,  # float kernel behind inserted Casts
    ("BatchNormalization-15", "bfloat16"):
        "NOT_IMPLEMENTED : Could not find an implementation for BatchNormalization(15)",
    ("BatchNormalization-15", "float32"): None,
    ("BatchNormalization-15", "float64"): None,
    ("LayerNormalization-17", "float16"): None,
    ("LayerNormalization-17", "bfloat16"): None,
    ("LayerNormalization-17", "float32"): None,
    ("LayerNormalization-17", "float64"): None,
    ("GroupNormalization-18", "float16"): None,  # ONNX function body, computed in float32
    ("GroupNormalization-18", "bfloat16"):
        "NOT_IMPLEMENTED : Could not find an implementation for ReduceMean(18)",
    ("GroupNormalization-18", "float32"): None,
    ("GroupNormalization-18", "float64"): None,
    ("GroupNormalization-21", "float16"): None,  # ONNX function body, computed in float32
    ("GroupNormalization-21", "bfloat16"):
        "NOT_IMPLEMENTED : Could not find an implementation for Mul(14)",
    ("GroupNormalization-21", "float32"): None,
    ("GroupNormalization-21", "float64"): None,
    ("InstanceNormalization-22", "float16"): None,  # float kernel behind inserted Casts
    ("InstanceNormalization-22", "bfloat16"):
        "NOT_IMPLEMENTED : Could not find an implementation for InstanceNormalization(22)",
    ("InstanceNormalization-22", "float32"): None,
    ("InstanceNormalization-22", "float64"):
        "NOT_IMPLEMENTED : Could not find an implementation for InstanceNormalization(22)",
    ("RMSNormalization-23", "float16"): None,
    ("RMSNormalization-23", "bfloat16"):
        "NOT_IMPLEMENTED : Could not find an implementation for Mul(14)",
    ("RMSNormalization-23", "float32"): None,
    ("RMSNormalization-23", "float64"): None,
    # MVN has a float kernel only; other types fall back to ONNX's function body, whose float
    # constants (Epsilon, Exponent) do not type-check against a non-float X.
    ("MeanVarianceNormalization-13", "float16"):
        "Type parameter (T) of Optype (Add) bound to different types (tensor(float16) and tensor(float)",
    ("MeanVarianceNormalization-13", "bfloat16"):
        "Type parameter (T) of Optype (Add) bound to different types (tensor(bfloat16) and tensor(float)",
    ("MeanVarianceNormalization-13", "float32"): None,
    ("MeanVarianceNormalization-13", "float64"):
        "Type parameter (T) of Optype (Add) bound to different types (tensor(double) and tensor(float)",
    ("LpNormalization-22", "float16"): None,  # float kernel behind inserted Casts
    ("LpNormalization-22", "bfloat16"):
        "NOT_IMPLEMENTED : Could not find an implementation for LpNormalization(22)",
    ("LpNormalization-22", "float32"): None,
    ("LpNormalization-22", "float64"): None,
}


# --------------------------------------------------------------------------------------------------
# conventions


def _conv(doc_key: str, **kw) -> Conventions:
    return Conventions(sources=(DOC[doc_key],), **kw)


#: Documented conventions per ONNX operator version (from the operator pages in DOC; identical to
#: the text of `onnx.defs.get_schema(name, version).doc`).
OP_CONVENTIONS: dict[str, Conventions] = {
    "BatchNormalization-15": _conv(
        "BatchNormalization-15", momentum_on="running", default_momentum=DEFAULT_MOMENTUM,
        running_var_estimator="biased", default_eps=DEFAULT_EPS, min_eps=0.0, eps_mode="inside",
        affine="per_channel", batch_of_one="normalizes",
        notes="running_mean = input_mean * momentum + current_mean * (1 - momentum); running_var "
              "the same with the population variance current_var; training Y uses the batch "
              "statistics. epsilon and momentum are float32 attributes."),
    "LayerNormalization-17": _conv(
        "LayerNormalization-17", default_eps=DEFAULT_EPS, min_eps=0.0, eps_mode="inside",
        affine="per_channel",
        notes="Scale and B have the normalized shape X.shape[axis:]; Mean and InvStdDev are of "
              "type U (float32 or bfloat16, stash_type); the variance is the population one."),
    "GroupNormalization-18": _conv(
        "GroupNormalization-18", default_eps=DEFAULT_EPS, min_eps=0.0, eps_mode="inside",
        affine="per_group", notes="scale and bias of shape (num_groups,); deprecated by opset 21."),
    "GroupNormalization-21": _conv(
        "GroupNormalization-21", default_eps=DEFAULT_EPS, min_eps=0.0, eps_mode="inside",
        affine="per_channel", notes="scale and bias of shape (C,); stash_type (default float32) "
                                    "is the precision of the statistics."),
    "InstanceNormalization-22": _conv(
        "InstanceNormalization-22", default_eps=DEFAULT_EPS, min_eps=0.0, eps_mode="inside",
        affine="per_channel", batch_of_one="normalizes"),
    "RMSNormalization-23": _conv(
        "RMSNormalization-23", default_eps=DEFAULT_EPS, min_eps=0.0, eps_mode="inside",
        affine="per_channel", notes="y = X / sqrt(mean(X^2) + epsilon) * scale over X.shape[axis:]."),
    "MeanVarianceNormalization-13": _conv(
        "MeanVarianceNormalization-13", default_eps=MVN_EPS, min_eps=MVN_EPS, eps_mode="outside",
        affine=None,
        notes="function body: (X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9), epsilon fixed; "
              "onnxruntime's float kernel omits the 1e-9 (eps_mode 'none'), a deviation from the "
              "specification (see tests/fuzz/runners/test_ort.py)."),
    "LpNormalization-22": _conv(
        "LpNormalization-22", eps_mode="none", affine=None,
        notes="p=2: X / sqrt(sum(X^2)) along one axis, no epsilon; onnxruntime returns 0 for an "
              "all-zero vector (where the quotient is undefined)."),
}

_ACCUMULATION = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}

#: Runner-level declaration: the conventions shared by the operators (BatchNormalization's for the
#: running statistics); per-operator ones in `OP_CONVENTIONS` / `OrtRunner.conventions_for`.
CONVENTIONS = Conventions(
    momentum_on="running", default_momentum=DEFAULT_MOMENTUM, running_var_estimator="biased",
    default_eps=DEFAULT_EPS, min_eps=0.0, eps_mode="inside", affine="per_channel",
    batch_of_one="normalizes", accumulation=_ACCUMULATION, nan_propagation="set",
    sources=tuple(dict.fromkeys(DOC.values())) + (ORT_DOCS,),
    notes="Per operator (OrtRunner.conventions_for): MeanVarianceNormalization eps_mode 'outside', "
          "eps 1e-9 fixed; LpNormalization eps_mode 'none'; GroupNormalization-18 affine "
          "'per_group', -21 'per_channel'. epsilon/momentum attributes are float32. Half formats "
          "compute in float32 (inserted Casts or float kernels).")


# --------------------------------------------------------------------------------------------------
# helpers


def _f32(x: float) -> float:
    return float(np.float32(x))


def _is_f32(x: float) -> bool:
    return _f32(x) == float(x)


def _attrs_with_defaults(op: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(_ORACLE_OPS[op].defaults) if op in _ORACLE_OPS else {}
    d.update(attrs)
    return d


def onnx_operator(op: str, attrs: Mapping[str, Any]) -> str:
    """The ONNX operator-version key ("GroupNormalization-21", ...) a case runs on."""
    if op == "group_norm":
        return "GroupNormalization-18" if attrs.get("affine", "per_channel") == "per_group" \
            else "GroupNormalization-21"
    return _SIMPLE[op]


def _trailing_axis(rank: int, a: Mapping[str, Any]) -> int:
    """ONNX axis for layer_norm/rms_norm: the case's axis as given, or -normalized_ndim."""
    if a.get("axis") is not None:
        return int(a["axis"])
    return -int(a.get("normalized_ndim", 1))


def _momentum_translation(mode: str, a: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """(ONNX momentum, None) or (None, reason) for a training mode."""
    m, on = a.get("momentum", 0.1), a.get("momentum_on", "batch")
    if m is None:
        if mode == "training_steps":
            return None, ("ONNX BatchNormalization's momentum is one attribute for all steps; the "
                          "cumulative average (momentum=None) needs a different one per step")
        nbt = int(a.get("num_batches_tracked", 0))
        return nbt / (nbt + 1), None  # weight of the batch 1/(nbt+1)
    return (float(m) if on == "running" else 1.0 - float(m)), None


@dataclass
class _Plan:
    """How one kind of case runs: session key, model builder, which case input feeds which graph
    input, which graph output becomes which case output, and reshapes of returned outputs."""

    key: tuple
    build: Callable[[], bytes]
    inputs: list[tuple[str, str]]  # (graph input, case input)
    outputs: list[tuple[str, str | None]]  # (graph output, case output or None: not returned)
    reshape: dict[str, tuple[int, ...]] = field(default_factory=dict)
    session: Any = None

    @property
    def names(self) -> list[str]:
        return [o for o, _ in self.outputs]


# --------------------------------------------------------------------------------------------------
# model building (imports onnx lazily; only on a session-cache miss)


def _tensor(name: str, dtype: str, value: np.ndarray):
    from onnx import helper
    if dtype == "bfloat16":
        raw = _to_bf16_bits(np.asarray(value, dtype=np.float32)).tobytes()
    else:
        raw = np.ascontiguousarray(value, dtype=_NP[dtype].newbyteorder("<")).tobytes()
    return helper.make_tensor(name, _ELEM[dtype], list(np.shape(value)), raw, raw=True)


def _model(nodes, inputs, outputs, inits, opset: int, ir_version: int) -> bytes:
    """Serialize a one-graph model. inputs: (name, elem, dims); outputs: (name, elem)."""
    from onnx import helper
    g = helper.make_graph(
        nodes, "normfuzz",
        [helper.make_tensor_value_info(n, e, d) for n, e, d in inputs],
        [helper.make_tensor_value_info(n, e, None) for n, e in outputs],
        initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="normfuzz")
    m.ir_version = ir_version
    return m.SerializeToString()


def _node(op_type: str, ins: list[str], outs: list[str], attrs: Mapping[str, Any]):
    from onnx import helper
    return helper.make_node(op_type, ins, outs, **attrs)


_NP = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(np.float32),
       "float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def _to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of a float32 carrier of bfloat16 values (NaN kept NaN)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    bits = (a.view(np.uint32) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():  # a NaN whose payload sits in the low half would truncate to an infinity
        bits = np.where(nan, (bits & 0x8000) | 0x7FC0, bits).astype(np.uint16)
    return bits


def _from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def _dims(rank: int) -> list[str]:
    return [f"d{i}" for i in range(rank)]


def _cf_perm(rank: int) -> tuple[int, ...]:
    return (0, rank - 1) + tuple(range(1, rank - 1))


def _cl_perm(rank: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, rank)) + (1,)


# --------------------------------------------------------------------------------------------------
# runners


class OrtRunner(Runner):
    """One ONNX Runtime code path (see the module docstring for the ids and what each writes)."""

    framework = "onnxruntime"
    framework_module = "onnxruntime"
    conventions = CONVENTIONS
    ops = {
        "batch_norm": ("inference", "training", "training_steps"),
        "layer_norm": ("forward",),
        "group_norm": ("forward",),
        "instance_norm": ("forward",),
        "rms_norm": ("forward",),
        "mvn": ("forward",),
        "l2_normalize": ("forward",),
    }
    dtypes = ("float16", "bfloat16", "float32", "float64")
    MAX_SESSIONS = 512
    MAX_PLANS = 4096

    def __init__(self, id: str, *, explicit: bool, optimize: bool):
        self.id = id
        self.explicit = explicit  # write every attribute and request every optional output
        self.optimize = optimize  # ORT_ENABLE_ALL vs ORT_DISABLE_ALL
        self.kernels: Mapping[tuple[str, str], str | None] = KERNELS
        self.kernels_version = KERNELS_VERSION
        self._ort = None
        self._options = None
        self._ir_version: int | None = None
        self._sessions: OrderedDict[tuple, Any] = OrderedDict()
        self._plans: dict[tuple, _Plan] = {}
        self._consts: dict[tuple, np.ndarray] = {}

    # ---- declarations

    def conventions_for(self, op: str, attrs: Mapping[str, Any] | None = None) -> Conventions:
        """Documented conventions of the ONNX operator version a case of `op` runs on, with this
        runner's accumulation formats."""
        c = OP_CONVENTIONS[onnx_operator(op, attrs or {})]
        return Conventions(**{**c.to_dict(), "accumulation": dict(_ACCUMULATION),
                              "sources": tuple(c.sources)})

    def supports(self, op: str, mode: str, dtype: str, attrs: Mapping[str, Any]) -> str | None:
        base = super().supports(op, mode, dtype, attrs)
        if base is not None:
            return base
        a = _attrs_with_defaults(op, attrs)
        onnx_op = onnx_operator(op, a)
        why = self.kernels.get((onnx_op, dtype), "not probed")
        if why is not None:
            name, ver = onnx_op.rsplit("-", 1)
            return f"onnxruntime {self.kernels_version} CPU cannot run {name}({ver}) on {dtype}: {why}"
        eps = a.get("eps")
        if op == "mvn":
            if a.get("eps_mode", "outside") != "outside" or eps != MVN_EPS:
                return ("ONNX MeanVarianceNormalization fixes eps_mode='outside' and eps=1e-9; the case "
                        f"asks for eps_mode={a.get('eps_mode', 'outside')!r} with another eps" if eps != MVN_EPS
                        else f"ONNX MeanVarianceNormalization fixes eps_mode='outside'; the case asks for "
                             f"eps_mode={a.get('eps_mode')!r}")
            return None
        if op == "l2_normalize":
            axes = tuple(a.get("axes", (-1,)))
            if len(axes) != 1:
                return f"ONNX LpNormalization normalizes along one axis; the case has {len(axes)} axes"
            if a.get("eps_mode") != "none":
                return (f"ONNX LpNormalization has no epsilon (eps_mode 'none'); the case asks for "
                        f"eps_mode={a.get('eps_mode')!r}")
            return None
        if dtype == "float64" and eps is not None and not _is_f32(eps):
            return ("ONNX stores epsilon as a float32 attribute: an eps that float32 cannot represent "
                    "would run rounded, which a float64 case cannot absorb")
        if op == "batch_norm" and mode in ("training", "training_steps"):
            m, why = _momentum_translation(mode, a)
            if why is not None:
                return why
            if dtype == "float64" and not _is_f32(m):
                return ("ONNX stores momentum as a float32 attribute: a momentum that float32 cannot "
                        "represent would run rounded, which a float64 case cannot absorb")
            if mode == "training_steps" and a.get("running_var_estimator") != "biased":
                return ("ONNX BatchNormalization stores the population (biased) variance in running_var; "
                        f"the case asks for running_var_estimator={a.get('running_var_estimator')!r}")
        return None

    # ---- lifecycle

    def setup(self) -> None:
        import onnx  # noqa: F401 - fail here, not on the first cache miss
        import onnxruntime as ort

        self._ort = ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # no CPU memory arena: each cached session kept its own arena (~1.5 MiB each, so a worker
        # grew from 90 to 520 MiB over 260 sessions), and without it a packed call was faster
        # (0.28 against 0.52 ms a call on packed LayerNorm/GroupNorm cases); numerics do not depend on it
        so.enable_cpu_mem_arena = False
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.optimize
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        self._options = so
        self._ir_version = max_ir_version()
        version = ".".join(ort.__version__.split(".")[:2])
        if version != KERNELS_VERSION:
            self.kernels = probe_kernels(self)
            self.kernels_version = version

    def _ensure(self) -> None:
        if self._ort is None:
            self.setup()

    def _session(self, b: _Plan):
        s = self._sessions.get(b.key)
        if s is not None:
            self._sessions.move_to_end(b.key)
            return s
        model = b.build()
        with framework_call():
            s = self._ort.InferenceSession(model, self._options, providers=["CPUExecutionProvider"])
        self._sessions[b.key] = s
        if len(self._sessions) > self.MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return s

    def _const(self, kind: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        k = (kind, dtype, shape)
        c = self._consts.get(k)
        if c is None:
            c = (np.ones if kind == "ones" else np.zeros)(shape, dtype=_NP[dtype])
            self._consts[k] = c
        return c

    # ---- execution

    def _plan(self, case) -> _Plan:
        """The plan for `case`, memoized on everything it depends on (op, mode, dtype, input names
        and shapes, attrs); the session inside it is shared through the session cache."""
        fast = (case.op, case.mode, case.dtype, tuple((k, v.shape) for k, v in case.inputs.items()),
                tuple(case.attrs.items()))
        p = self._plans.get(fast)
        if p is not None:
            return p
        p = _PLANNERS[case.op](self, case, _attrs_with_defaults(case.op, case.attrs))
        p.session = self._session(p)
        self._plans[fast] = p
        if len(self._plans) > self.MAX_PLANS:
            self._plans.pop(next(iter(self._plans)))
        return p

    def _execute(self, p: _Plan, feeds: dict[str, np.ndarray], dtype: str) -> list[np.ndarray]:
        names = p.names
        if dtype != "bfloat16":
            with framework_call():
                return p.session.run(names, feeds)
        ov = self._ort.OrtValue
        io = p.session.io_binding()
        for k, v in feeds.items():
            bits = _to_bf16_bits(v)
            feeds[k] = bits  # keep the buffer alive until the run ends
            io.bind_ortvalue_input(k, ov.ortvalue_from_numpy_with_onnx_type(bits, _ELEM["bfloat16"]))
        for n in names:
            io.bind_output(n, "cpu")
        with framework_call():
            p.session.run_with_iobinding(io)
            res = io.get_outputs()
        return [_ortvalue_to_numpy(r) for r in res]

    def run(self, case) -> dict[str, np.ndarray]:
        self._ensure()
        if case.op == "batch_norm" and case.mode == "training_steps":
            return self._bn_steps(case)
        p = self._plan(case)
        ins = case.inputs
        res = self._execute(p, {g: ins[c] for g, c in p.inputs}, case.dtype)
        out = {name: arr for (_, name), arr in zip(p.outputs, res) if name is not None}
        for name, shape in p.reshape.items():
            out[name] = out[name].reshape(shape)
        return out

    def script(self, case) -> str:
        """Standalone code of this path for `case` (see `Runner.script`): this runner's own ONNX
        model written out as onnx.helper calls, and the session options it runs with."""
        return _script(self, case)

    # ---- attribute writing

    def _eps_attr(self, eps: float, default: float = DEFAULT_EPS) -> dict[str, float]:
        if self.explicit or _f32(eps) != _f32(default):
            return {"epsilon": float(eps)}
        return {}

    def _stash_attr(self, stash: int) -> dict[str, int]:
        return {"stash_type": stash} if self.explicit or stash != _STASH_FLOAT else {}

    # ---- batch_norm

    def _bn_parts(self, case, a, *, x_name: str):
        """Inputs, initializers, node attrs and key parts shared by the BatchNorm modes."""
        dtype, x = case.dtype, case.inputs[x_name]
        layout = a.get("layout", "channels_first")
        x_rank = x.ndim - (1 if x_name == "xs" else 0)
        c_axis = 1 if layout == "channels_first" else x_rank - 1
        c = x.shape[c_axis + (1 if x_name == "xs" else 0)]
        training = case.mode != "inference"
        has_running = "running_mean" in case.inputs
        if training and has_running and a.get("running_var_estimator") != "biased":
            raise Unsupported("ONNX BatchNormalization stores the population (biased) variance in running_var; "
                              f"the case asks for running_var_estimator={a.get('running_var_estimator')!r}")
        present = tuple(n in case.inputs for n in ("gamma", "beta")) + (has_running,)
        attrs: dict[str, Any] = {}
        attrs.update(self._eps_attr(a["eps"]))
        if training:
            m, why = _momentum_translation(case.mode, a)
            if why is not None:
                raise Unsupported(why)
            attrs["training_mode"] = 1
            if self.explicit or _f32(m) != _f32(DEFAULT_MOMENTUM):
                attrs["momentum"] = float(m)
        elif self.explicit:
            attrs["training_mode"] = 0
            m, _ = _momentum_translation("training", a)
            attrs["momentum"] = float(m) if m is not None else DEFAULT_MOMENTUM
        return dtype, x_rank, layout, c, c_axis, training, present, attrs

    def _bn_model(self, dtype, rank, layout, c, training, present, attrs, key) -> _Plan:
        """The BatchNormalization graph; inputs and outputs are filled in by the caller."""
        elem = _ELEM[dtype]
        dims = _dims(rank)
        cdim = dims[1] if layout == "channels_first" else dims[-1]
        needs_const = not all(present)
        ir = self._ir_version

        def build() -> bytes:
            inputs = [("x", elem, dims)]
            inits = []
            names = []
            for name, has, fill in (("gamma", present[0], "ones"), ("beta", present[1], "zeros"),
                                    ("running_mean", present[2], "zeros"), ("running_var", present[2], "ones")):
                if has:
                    inputs.append((name, elem, [cdim]))
                else:
                    inits.append(_tensor(name, dtype, self._const(fill, dtype, (c,))))
                names.append(name)
            stats_out = ["running_mean_out", "running_var_out"] if training else []
            nodes = _layout_wrap(layout, rank, lambda xi, yo: _node(
                "BatchNormalization", [xi] + names, [yo] + stats_out, attrs))
            outputs = [("y", elem)] + [(n, elem) for n in stats_out]
            return _model(nodes, inputs, outputs, inits, 15, ir)

        return _Plan(key + ((c,) if needs_const else ()), build, [], [])

    @staticmethod
    def _bn_inputs(present, x_name: str) -> list[tuple[str, str]]:
        out = [("x", x_name)]
        for name, has in (("gamma", present[0]), ("beta", present[1]),
                          ("running_mean", present[2]), ("running_var", present[2])):
            if has:
                out.append((name, name))
        return out

    def _plan_batch_norm(self, case, a) -> _Plan:
        dtype, rank, layout, c, _, training, present, attrs = self._bn_parts(case, a, x_name="x")
        key = ("batch_norm", training, dtype, rank, layout, present, tuple(sorted(attrs.items())))
        b = self._bn_model(dtype, rank, layout, c, training, present, attrs, key)
        b.inputs = self._bn_inputs(present, "x")
        if training:
            ret = present[2]
            b.outputs = [("y", "y"), ("running_mean_out", "running_mean" if ret else None),
                         ("running_var_out", "running_var" if ret else None)]
        else:
            b.outputs = [("y", "y")]
        return b

    def _bn_steps(self, case) -> dict[str, np.ndarray]:
        """K training steps, each a session run fed the running statistics the previous one made."""
        fast = (case.op, case.mode, case.dtype, tuple((k, v.shape) for k, v in case.inputs.items()),
                tuple(case.attrs.items()))
        b = self._plans.get(fast)
        if b is None:
            a = _attrs_with_defaults(case.op, case.attrs)
            dtype, rank, layout, c, _, _, present, attrs = self._bn_parts(case, a, x_name="xs")
            key = ("batch_norm", True, dtype, rank, layout, present, tuple(sorted(attrs.items())))
            b = self._bn_model(dtype, rank, layout, c, True, present, attrs, key)
            b.inputs = [(g, n) for g, n in self._bn_inputs(present, "xs") if g not in ("x", "running_mean", "running_var")]
            b.outputs = [("y", "y"), ("running_mean_out", "running_mean"), ("running_var_out", "running_var")]
            b.session = self._session(b)
            self._plans[fast] = b
        ins = case.inputs
        xs = ins["xs"]
        rm, rv = ins["running_mean"], ins["running_var"]
        ys, rms, rvs = [], [], []
        for k in range(xs.shape[0]):
            feeds = {g: ins[n] for g, n in b.inputs}
            feeds["x"], feeds["running_mean"], feeds["running_var"] = xs[k], rm, rv
            y, rm, rv = self._execute(b, feeds, case.dtype)
            ys.append(y)
            rms.append(rm)
            rvs.append(rv)
        return {"y": np.stack(ys), "running_mean": np.stack(rms), "running_var": np.stack(rvs)}

    # ---- trailing-axis ops

    def _plan_layer_norm(self, case, a) -> _Plan:
        x, dtype = case.inputs["x"], case.dtype
        rank, elem = x.ndim, _ELEM[dtype]
        axis = _trailing_axis(rank, a)
        k = rank - axis % rank
        norm_shape = x.shape[rank - k:]
        has_g, has_b = "gamma" in case.inputs, "beta" in case.inputs
        attrs: dict[str, Any] = {}
        if self.explicit or axis % rank != rank - 1:
            attrs["axis"] = axis
        attrs.update(self._eps_attr(a["eps"]))
        attrs.update(self._stash_attr(_STASH_FLOAT))
        stats = self.explicit
        key = ("layer_norm", dtype, rank, has_g, has_b, stats, tuple(sorted(attrs.items())))
        if not has_g:
            key += (norm_shape,)
        dims = _dims(rank)
        ir = self._ir_version

        def build() -> bytes:
            inputs, inits = [("x", elem, dims)], []
            if has_g:
                inputs.append(("scale", elem, dims[rank - k:]))
            else:
                inits.append(_tensor("scale", dtype, self._const("ones", dtype, norm_shape)))
            ins = ["x", "scale"]
            if has_b:
                inputs.append(("bias", elem, dims[rank - k:]))
                ins.append("bias")
            outs = ["y", "mean", "inv_std_dev"] if stats else ["y"]
            outputs = [("y", elem)] + ([("mean", 1), ("inv_std_dev", 1)] if stats else [])
            return _model([_node("LayerNormalization", ins, outs, attrs)], inputs, outputs, inits, 17, ir)

        inputs = [("x", "x")] + ([("scale", "gamma")] if has_g else []) + ([("bias", "beta")] if has_b else [])
        ret_stats = stats and dtype != "float64"  # Mean/InvStdDev are float32 (type U): not the case's format
        outputs = [("y", "y")]
        if stats:
            outputs += [("mean", "mean" if ret_stats else None), ("inv_std_dev", "rstd" if ret_stats else None)]
        lead = x.shape[: rank - k]
        return _Plan(key, build, inputs, outputs, {"mean": lead, "rstd": lead} if ret_stats else {})

    def _plan_rms_norm(self, case, a) -> _Plan:
        x, dtype = case.inputs["x"], case.dtype
        rank, elem = x.ndim, _ELEM[dtype]
        axis = _trailing_axis(rank, a)
        k = rank - axis % rank
        norm_shape = x.shape[rank - k:]
        has_w = "weight" in case.inputs
        attrs: dict[str, Any] = {}
        if self.explicit or axis % rank != rank - 1:
            attrs["axis"] = axis
        attrs.update(self._eps_attr(a["eps"]))
        attrs.update(self._stash_attr(_STASH_DOUBLE if dtype == "float64" else _STASH_FLOAT))
        key = ("rms_norm", dtype, rank, has_w, tuple(sorted(attrs.items())))
        if not has_w:
            key += (norm_shape,)
        dims = _dims(rank)
        ir = self._ir_version

        def build() -> bytes:
            inputs, inits = [("x", elem, dims)], []
            if has_w:
                inputs.append(("scale", elem, dims[rank - k:]))
            else:
                inits.append(_tensor("scale", dtype, self._const("ones", dtype, norm_shape)))
            return _model([_node("RMSNormalization", ["x", "scale"], ["y"], attrs)], inputs,
                          [("y", elem)], inits, 23, ir)

        return _Plan(key, build, [("x", "x")] + ([("scale", "weight")] if has_w else []), [("y", "y")])

    # ---- channel ops (layout)

    def _plan_channel_op(self, case, a, op_type: str, opset: int, attrs: dict[str, Any],
                         param_len: int) -> _Plan:
        x, dtype = case.inputs["x"], case.dtype
        rank, elem = x.ndim, _ELEM[dtype]
        layout = a.get("layout", "channels_first")
        has_g, has_b = "gamma" in case.inputs, "beta" in case.inputs
        key = (case.op, op_type, opset, dtype, rank, layout, has_g, has_b, tuple(sorted(attrs.items())))
        if not (has_g and has_b):
            key += (param_len,)
        dims = _dims(rank)
        pdim = "G" if op_type == "GroupNormalization" and opset < 21 else \
            (dims[1] if layout == "channels_first" else dims[-1])
        ir = self._ir_version

        def build() -> bytes:
            inputs, inits = [("x", elem, dims)], []
            for name, has, fill in (("gamma", has_g, "ones"), ("beta", has_b, "zeros")):
                if has:
                    inputs.append((name, elem, [pdim]))
                else:
                    inits.append(_tensor(name, dtype, self._const(fill, dtype, (param_len,))))
            nodes = _layout_wrap(layout, rank, lambda xi, yo: _node(op_type, [xi, "gamma", "beta"], [yo], attrs))
            return _model(nodes, inputs, [("y", elem)], inits, opset, ir)

        inputs = [("x", "x")] + ([("gamma", "gamma")] if has_g else []) + ([("beta", "beta")] if has_b else [])
        return _Plan(key, build, inputs, [("y", "y")])

    def _plan_group_norm(self, case, a) -> _Plan:
        x = case.inputs["x"]
        layout = a.get("layout", "channels_first")
        c = x.shape[1] if layout == "channels_first" else x.shape[-1]
        g = int(a["num_groups"])
        per_group = a.get("affine", "per_channel") == "per_group"
        attrs: dict[str, Any] = {"num_groups": g}
        attrs.update(self._eps_attr(a["eps"]))
        if not per_group:
            attrs.update(self._stash_attr(_STASH_DOUBLE if case.dtype == "float64" else _STASH_FLOAT))
        return self._plan_channel_op(case, a, "GroupNormalization", 18 if per_group else 21, attrs,
                                     g if per_group else c)

    def _plan_instance_norm(self, case, a) -> _Plan:
        x = case.inputs["x"]
        layout = a.get("layout", "channels_first")
        c = x.shape[1] if layout == "channels_first" else x.shape[-1]
        return self._plan_channel_op(case, a, "InstanceNormalization", 22, self._eps_attr(a["eps"]), c)

    # ---- axes ops

    def _plan_mvn(self, case, a) -> _Plan:
        x, dtype = case.inputs["x"], case.dtype
        rank, elem = x.ndim, _ELEM[dtype]
        axes = tuple(int(v) for v in a.get("axes", (0, 2, 3)))
        attrs: dict[str, Any] = {}
        if self.explicit or rank < 4 or tuple(sorted(v % rank for v in axes)) != (0, 2, 3):
            attrs["axes"] = list(axes)
        key = ("mvn", dtype, rank, tuple(attrs.get("axes", ())))
        dims = _dims(rank)
        ir = self._ir_version

        def build() -> bytes:
            return _model([_node("MeanVarianceNormalization", ["x"], ["y"], attrs)],
                          [("x", elem, dims)], [("y", elem)], [], 13, ir)

        return _Plan(key, build, [("x", "x")], [("y", "y")])

    def _plan_l2_normalize(self, case, a) -> _Plan:
        x, dtype = case.inputs["x"], case.dtype
        rank, elem = x.ndim, _ELEM[dtype]
        axis = int(tuple(a.get("axes", (-1,)))[0])
        attrs: dict[str, Any] = {}
        if self.explicit or axis % rank != rank - 1:
            attrs["axis"] = axis
        if self.explicit:
            attrs["p"] = 2
        key = ("l2_normalize", dtype, rank, tuple(sorted(attrs.items())))
        dims = _dims(rank)
        ir = self._ir_version

        def build() -> bytes:
            return _model([_node("LpNormalization", ["x"], ["y"], attrs)],
                          [("x", elem, dims)], [("y", elem)], [], 22, ir)

        return _Plan(key, build, [("x", "x")], [("y", "y")])


def _layout_wrap(layout: str, rank: int, op_node_fn) -> list:
    """[Transpose to channels-first, operator, Transpose back] for a channels-last case, else
    [operator]; `op_node_fn(x_name, y_name)` makes the operator node."""
    if layout == "channels_first" or rank <= 2:
        return [op_node_fn("x", "y")]
    return [_node("Transpose", ["x"], ["x_cf"], {"perm": list(_cf_perm(rank))}),
            op_node_fn("x_cf", "y_cf"),
            _node("Transpose", ["y_cf"], ["y"], {"perm": list(_cl_perm(rank))})]


def _ortvalue_to_numpy(v) -> np.ndarray:
    if v.element_type() != _ELEM["bfloat16"]:
        return v.numpy()
    buf = np.empty(tuple(v.shape()), dtype=np.uint16)
    if buf.size:
        ctypes.memmove(buf.ctypes.data, v.data_ptr(), buf.nbytes)
    return _from_bf16_bits(buf)


_PLANNERS: dict[str, Callable] = {
    "batch_norm": OrtRunner._plan_batch_norm,
    "layer_norm": OrtRunner._plan_layer_norm,
    "rms_norm": OrtRunner._plan_rms_norm,
    "group_norm": OrtRunner._plan_group_norm,
    "instance_norm": OrtRunner._plan_instance_norm,
    "mvn": OrtRunner._plan_mvn,
    "l2_normalize": OrtRunner._plan_l2_normalize,
}


# --------------------------------------------------------------------------------------------------
# probes (run inside the worker or the tests; import onnxruntime)

_IR_VERSION: int | None = None


def max_ir_version() -> int:
    """The newest ONNX IR version the installed onnxruntime accepts (found once by trying a
    one-node model from onnx's IR version down; ORT's error names its maximum)."""
    global _IR_VERSION
    if _IR_VERSION is not None:
        return _IR_VERSION
    import re

    import onnx
    import onnxruntime as ort
    from onnx import helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", 1, [1])],
                          [helper.make_tensor_value_info("y", 1, [1])])
    ir = onnx.IR_VERSION
    last = ""
    while ir >= 3:
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = ir
        try:
            ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            _IR_VERSION = ir
            return ir
        except Exception as e:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            last = str(e)
            hit = re.search(r"max supported IR version: (\d+)", last)
            ir = int(hit.group(1)) if hit and int(hit.group(1)) < ir else ir - 1
    raise RuntimeError(f"onnxruntime accepts no ONNX IR version from {onnx.IR_VERSION} down to 3: {last}")


#: A representative case per ONNX operator, for `probe_kernels`: (op, mode, attrs, inputs(shape)).
_PROBE_CASES = {
    "BatchNormalization-15": ("batch_norm", "training", {"momentum": 0.25, "running_var_estimator": "biased"},
                              {"x": (2, 4, 3), "gamma": (4,), "beta": (4,), "running_mean": (4,),
                               "running_var": (4,)}),
    "LayerNormalization-17": ("layer_norm", "forward", {"normalized_ndim": 1},
                              {"x": (2, 4, 3), "gamma": (3,), "beta": (3,)}),
    "GroupNormalization-18": ("group_norm", "forward", {"num_groups": 2, "affine": "per_group"},
                              {"x": (2, 4, 3), "gamma": (2,), "beta": (2,)}),
    "GroupNormalization-21": ("group_norm", "forward", {"num_groups": 2},
                              {"x": (2, 4, 3), "gamma": (4,), "beta": (4,)}),
    "InstanceNormalization-22": ("instance_norm", "forward", {}, {"x": (2, 4, 3), "gamma": (4,), "beta": (4,)}),
    "RMSNormalization-23": ("rms_norm", "forward", {"normalized_ndim": 1}, {"x": (2, 4, 3), "weight": (3,)}),
    "MeanVarianceNormalization-13": ("mvn", "forward", {"axes": (0, 2, 3)}, {"x": (2, 4, 3, 5)}),
    "LpNormalization-22": ("l2_normalize", "forward", {"axes": (-1,), "eps_mode": "none"}, {"x": (2, 4, 3)}),
}


def probe_kernels(runner: OrtRunner | None = None) -> dict[tuple[str, str], str | None]:
    """(ONNX operator, dtype) -> None if `runner` (default: a fresh `ort`) runs its representative
    model, else the first line of what onnxruntime raised. Builds ~32 small sessions."""
    from fuzz.case import Case
    from oracles.dtypes import round_to

    from .base import FrameworkRaised

    r = runner if runner is not None else OrtRunner("ort", explicit=True, optimize=True)
    if r._ort is None:
        r.setup()
    rng = np.random.default_rng(0)
    out: dict[tuple[str, str], str | None] = {}
    for key, (op, mode, attrs, shapes) in _PROBE_CASES.items():
        for dtype in ("float16", "bfloat16", "float32", "float64"):
            ins = {k: round_to(dtype, np.abs(rng.standard_normal(s)) + 0.5) for k, s in shapes.items()}
            case = Case(op=op, mode=mode, dtype=dtype, inputs=ins, attrs=dict(attrs, eps=0.0009765625))
            try:
                r.run(case)
                out[(key, dtype)] = None
            except FrameworkRaised as e:
                out[(key, dtype)] = e.message.strip().splitlines()[0] if e.message.strip() else e.exc_type
    return out


def runners() -> list[Runner]:
    """The factory: `ort`, `ort.defaults` and `ort.noopt` (see the module docstring)."""
    return [OrtRunner("ort", explicit=True, optimize=True),
            OrtRunner("ort.defaults", explicit=False, optimize=True),
            OrtRunner("ort.noopt", explicit=True, optimize=False)]


__all__ = ["CONVENTIONS", "DOC", "KERNELS", "OP_CONVENTIONS", "OrtRunner", "max_ir_version",
           "onnx_operator", "probe_kernels", "runners"]


# --------------------------------------------------------------------------------------------------
# standalone scripts (`Runner.script`, used by fuzz.scripts)

_FLAVOR = {
    "ort": "every attribute written explicitly, every optional output requested, graph "
           "optimizations ORT_ENABLE_ALL",
    "ort.defaults": "attributes equal to the operator's defaults omitted and optional outputs not "
                    "requested (the operator's default path), graph optimizations ORT_ENABLE_ALL",
    "ort.noopt": "every attribute written explicitly, every optional output requested, graph "
                 "optimizations disabled (ORT_DISABLE_ALL)",
}
_NP_OF_ELEM = {10: ("<f2", "np.float16"), 1: ("<f4", "np.float32"), 11: ("<f8", "np.float64"),
               16: ("<u2", None)}


def _script(r: OrtRunner, case) -> str:
    """The runner's model for `case` (the planner's own bytes, parsed back) as onnx.helper code,
    then the session and the run, as `OrtRunner.run` / `_bn_steps` make them."""
    import json
    import textwrap

    import onnx

    reason = r.supports(case.op, case.mode, case.dtype, case.attrs)
    if reason is not None:
        raise Unsupported(reason)
    if r._ir_version is None:
        r._ir_version = max_ir_version()
    a = _attrs_with_defaults(case.op, case.attrs)
    steps = case.op == "batch_norm" and case.mode == "training_steps"
    if steps:
        dtype, rank, layout, c, _, _, present, attrs = r._bn_parts(case, a, x_name="xs")
        p = r._bn_model(dtype, rank, layout, c, True, present, attrs, ())
        p.inputs = [(g, n) for g, n in r._bn_inputs(present, "xs") if g not in ("x", "running_mean", "running_var")]
        p.outputs = [("y", "y"), ("running_mean_out", "running_mean"), ("running_var_out", "running_var")]
    else:
        p = _PLANNERS[case.op](r, case, a)
    model = onnx.load_model_from_string(p.build())
    g = model.graph
    bf16 = case.dtype == "bfloat16"
    op_node = next(n for n in g.node if n.op_type != "Transpose")
    opset = model.opset_import[0].version
    q = json.dumps
    lines = (["import ctypes"] if bf16 else []) + ["import onnxruntime as ort", "from onnx import TensorProto, helper", ""]
    if bf16:
        lines += _BF16_HELPERS
    lines += textwrap.wrap(f"The model normfuzz's runner {r.id} builds for this case: one {op_node.op_type}-{opset} "
                           f"node, run on the CPU execution provider; {_FLAVOR.get(r.id, '')}.", 98,
                           initial_indent="# ", subsequent_indent="# ")
    if any(n.op_type == "Transpose" for n in g.node):
        lines.append("# Channels-last data: Transposes to channels-first and back, as converters emit for NHWC models.")
    if len(g.initializer):
        lines.append("# Inputs ONNX requires but the case lacks are constant initializers (ones or zeros).")
    lines.append("nodes = [")
    for n in g.node:
        kw = "".join(f", {at.name}={_attr_literal(at)}" for at in n.attribute)
        lines.append(f"    helper.make_node({q(n.op_type)}, {q(list(n.input))}, {q(list(n.output))}{kw}),")
    lines.append("]")
    lines.append("graph = helper.make_graph(")
    lines.append('    nodes, "normfuzz",')
    lines.append("    [" + ",\n     ".join(_value_info(vi) for vi in g.input) + "],")
    lines.append("    [" + ",\n     ".join(_value_info(vi) for vi in g.output) + "],")
    lines.append("    initializer=[" + ",\n                 ".join(_initializer(t) for t in g.initializer) + "])")
    lines.append(f'model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", {opset})], '
                 f'producer_name={q(model.producer_name)})')
    lines.append(f"model.ir_version = {model.ir_version}  # the newest ONNX IR version this onnxruntime accepts")
    level = "ORT_ENABLE_ALL" if r.optimize else "ORT_DISABLE_ALL"
    lines += ["options = ort.SessionOptions()", "options.intra_op_num_threads = 1",
              "options.inter_op_num_threads = 1", "options.log_severity_level = 3",
              "options.enable_cpu_mem_arena = False",
              f"options.graph_optimization_level = ort.GraphOptimizationLevel.{level}",
              'session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])']
    names = p.names
    run = "run_bfloat16(session, names, {})" if bf16 else "session.run(names, {})"
    lines.append(f"names = {q(names)}")
    if bf16:
        lines.append("# bfloat16 tensors go in and out as raw 16-bit OrtValues (numpy has no bfloat16)")
    if steps:
        feeds = ", ".join(f'"{gi}": inputs["{ci}"]' for gi, ci in p.inputs)
        lines += ['running_mean, running_var = inputs["running_mean"], inputs["running_var"]',
                  "ys, running_means, running_vars = [], [], []",
                  'for k in range(inputs["xs"].shape[0]):  # one session run per training step',
                  f'    feeds = {{{feeds}{", " if feeds else ""}"x": inputs["xs"][k], '
                  '"running_mean": running_mean, "running_var": running_var}',
                  f"    y, running_mean, running_var = {run.format('feeds')}",
                  "    ys.append(y)", "    running_means.append(running_mean)", "    running_vars.append(running_var)",
                  'outputs = {"y": np.stack(ys), "running_mean": np.stack(running_means), '
                  '"running_var": np.stack(running_vars)}']
        return "\n".join(lines) + "\n"
    feeds = "{" + ", ".join(f'"{gi}": inputs["{ci}"]' for gi, ci in p.inputs) + "}"
    lines.append(f"results = {run.format(feeds)}")
    outs = []
    for i, (gname, cname) in enumerate(p.outputs):
        if cname is None:
            lines.append(f"# {gname} (results[{i}]) is requested but not compared: "
                         + ("float32 (type U), not the case's format" if case.op == "layer_norm" else
                            "the case has no running statistics (the graph's are constant initializers)"))
            continue
        reshape = f".reshape({tuple(p.reshape[cname])})" if cname in p.reshape else ""
        outs.append(f'"{cname}": results[{i}]{reshape}')
    lines.append("outputs = {" + ", ".join(outs) + "}")
    return "\n".join(lines) + "\n"


_BF16_HELPERS = [
    "",
    "def bfloat16_bits(a):",
    '    """bfloat16 bit patterns (uint16) of a float32 array holding bfloat16 values."""',
    "    a = np.ascontiguousarray(a, dtype=np.float32)",
    "    bits = (a.view(np.uint32) >> 16).astype(np.uint16)",
    "    return np.where(np.isnan(a), (bits & 0x8000) | 0x7FC0, bits).astype(np.uint16)  # NaN stays NaN", "", "",
    "def run_bfloat16(session, names, feeds):",
    '    """session.run with bfloat16 inputs and outputs as OrtValues; outputs as float32 arrays."""',
    "    binding = session.io_binding()",
    "    bits = {k: bfloat16_bits(v) for k, v in feeds.items()}  # alive until the run ends",
    "    for k, b in bits.items():",
    "        binding.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(b, TensorProto.BFLOAT16))",
    "    for n in names:",
    '        binding.bind_output(n, "cpu")',
    "    session.run_with_iobinding(binding)",
    "    out = []",
    "    for v in binding.get_outputs():",
    "        if v.element_type() != TensorProto.BFLOAT16:",
    "            out.append(v.numpy())",
    "            continue",
    "        b = np.empty(tuple(v.shape()), dtype=np.uint16)",
    "        ctypes.memmove(b.ctypes.data, v.data_ptr(), b.nbytes)",
    "        out.append((b.astype(np.uint32) << 16).view(np.float32))",
    "    return out", "", "",
]


def _attr_literal(at) -> str:
    """A node attribute as the Python literal onnx.helper.make_node turns back into it."""
    from onnx import AttributeProto, helper

    if at.type == AttributeProto.FLOAT:
        f32 = np.float32(at.f)
        short = str(f32)  # the shortest text that names this float32
        return short if np.float32(float(short)) == f32 else repr(float(f32))
    if at.type == AttributeProto.INT:
        return str(at.i)
    if at.type == AttributeProto.INTS:
        return str(list(at.ints))
    return repr(helper.get_attribute_value(at))


def _value_info(vi) -> str:
    import json

    from onnx import TensorProto

    t = vi.type.tensor_type
    dims = None
    if t.HasField("shape"):
        dims = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim]
    return (f"helper.make_tensor_value_info({json.dumps(vi.name)}, TensorProto."
            f"{TensorProto.DataType.Name(t.elem_type)}, {json.dumps(dims) if dims is not None else None})")


def _initializer(t) -> str:
    import base64
    import json

    from onnx import TensorProto

    elem = TensorProto.DataType.Name(t.data_type)
    dims = list(t.dims)
    le, npname = _NP_OF_ELEM[t.data_type]
    values = np.frombuffer(t.raw_data, dtype=le)
    one = 0x3F80 if t.data_type == TensorProto.BFLOAT16 else 1
    if values.size and np.all(values == one):
        data = "bfloat16_bits(np.ones({0}, np.float32))" if npname is None else "np.ones({0}, " + npname + ")"
    elif values.size and np.all(values == 0):
        data = "np.zeros({0}, np.uint16)" if npname is None else "np.zeros({0}, " + npname + ")"
    else:
        data = f"np.frombuffer(base64.b64decode({json.dumps(base64.b64encode(t.raw_data).decode())}), np.uint8)"
    return (f"helper.make_tensor({json.dumps(t.name)}, TensorProto.{elem}, {dims}, "
            f"{data.format(dims)}.tobytes(), raw=True)")
