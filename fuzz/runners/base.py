"""The runner contract: how a framework code path turns a `Case` into outputs.

A runner is one public code path of one framework (e.g. `torch.nn.functional.layer_norm`), because
each path is its own code. Third parties and the built-in runners use the same interface: a
*factory* (a callable found by a ``module:factory`` string or an entry point in the group
``normfuzz.runners``) returns a list of `Runner` instances. Building a runner must not import its
framework: the framework is imported in `Runner.setup`, which runs inside the isolated worker.

What a runner does:
- `supports(op, mode, dtype, attrs)`: None when it can run such a case, else the reason (a string);
  what a path cannot express is coverage information, not an error.
- `run(case)`: compute the outputs the way a user of the framework would, and return a dict with
  the oracle's output names (see `oracles.registry`), as numpy arrays. Framework calls go inside
  `with framework_call():` so that an exception the framework raises becomes a RAISED outcome;
  any other exception is an internal error of normfuzz and surfaces loudly. A case the runner finds
  it cannot express after all raises `Unsupported(reason)`.
- `conventions`: the documented conventions of the path (`Conventions`), with the links they came
  from; triage uses them to tell a documented convention from a bug.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


class Unsupported(Exception):
    """The runner cannot express this case; the message says why."""


class FrameworkRaised(Exception):
    """An exception raised by the framework under test (becomes a RAISED outcome)."""

    def __init__(self, exc_type: str, message: str):
        self.exc_type = exc_type
        self.message = message
        super().__init__(f"{exc_type}: {message}")


@contextlib.contextmanager
def framework_call():
    """Mark a block as framework code: any exception from it becomes `FrameworkRaised`."""
    try:
        yield
    except (Unsupported, FrameworkRaised):
        raise
    except BaseException as e:  # noqa: BLE001 - the framework may raise anything
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        try:
            message = str(e)
        except Exception:  # noqa: BLE001 - an exception whose __str__ itself raises
            message = f"<str() of {type(e).__qualname__} raised>"
        raise FrameworkRaised(f"{type(e).__module__}.{type(e).__qualname__}", message) from e


@dataclass(frozen=True)
class Conventions:
    """Documented conventions of one runner (None: not applicable to its ops).

    momentum_on: "batch" (new = (1-m) old + m batch) or "running" (new = m old + (1-m) batch).
    running_var_estimator: "biased" or "unbiased" variance stored in the running variance.
    default_momentum, default_eps: the API defaults; min_eps: smallest eps accepted (or used).
    eps_mode: how eps enters (see oracles._core.EPS_MODES).
    affine: "per_channel" or "per_group" (GroupNorm) parameter granularity.
    batch_of_one: what a reduction set of one element does in training: "raises", "normalizes"
        (output beta), or None.
    accumulation: accumulation format per input format (feeds the error model's Precision).
    elementwise: format of the elementwise arithmetic per input format (None: the accumulation
        format); a path that honestly rounds its intermediates to a half format says so here.
    flush_subnormals: subnormal inputs and results are flushed to zero (FTZ/DAZ).
    nan_propagation: "set" (a NaN in a reduction set makes the set's outputs NaN) or "ieee".
    sources: documentation links the declarations were taken from.
    """

    momentum_on: str | None = None
    default_momentum: float | None = None
    running_var_estimator: str | None = None
    default_eps: float | None = None
    min_eps: float | None = None
    eps_mode: str = "inside"
    affine: str | None = "per_channel"
    batch_of_one: str | None = None
    accumulation: Mapping[str, str] = field(default_factory=lambda: {
        "float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"})
    elementwise: Mapping[str, str] | None = None
    flush_subnormals: bool = False
    nan_propagation: str = "set"
    sources: tuple[str, ...] = ()
    notes: str = ""

    def precision(self, dtype: str):
        """The error model's `Precision` for cases of format `dtype` on this path."""
        from oracles.errormodel import Precision

        ew = None if self.elementwise is None else self.elementwise.get(dtype)
        return Precision.of(dtype, accum=self.accumulation.get(dtype), elementwise=ew, ftz=self.flush_subnormals)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["accumulation"] = dict(self.accumulation)
        d["elementwise"] = None if self.elementwise is None else dict(self.elementwise)
        d["sources"] = list(self.sources)
        return d


class Runner:
    """Base class of runners. Subclasses set `id`, `framework`, `conventions` and implement
    `supports` and `run`; `framework_module` names the module whose import tells availability and
    whose `__version__` is the framework version."""

    id: str = ""
    framework: str = ""
    framework_module: str = ""
    conventions: Conventions = Conventions()
    #: (op, mode) pairs and dtypes this runner can ever run, for the coverage matrix.
    ops: Mapping[str, tuple[str, ...]] = {}
    dtypes: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")

    def available(self) -> str | None:
        """None when the framework can be imported, else the reason (checked without importing
        it into this process: `importlib.util.find_spec`)."""
        if not self.framework_module:
            return None
        try:
            spec = importlib.util.find_spec(self.framework_module)
        except (ImportError, ValueError) as e:
            return f"{self.framework_module} cannot be imported: {e}"
        return None if spec is not None else f"{self.framework_module} is not installed"

    def version(self) -> str:
        """The framework's version (imports it; call inside the worker or for `backends`)."""
        if not self.framework_module:
            return ""
        mod = importlib.import_module(self.framework_module)
        return str(getattr(mod, "__version__", "unknown"))

    def conventions_for(self, op: str, attrs: Mapping[str, Any] | None = None) -> Conventions:
        """The conventions of this path for `op` (ops of one path may differ, e.g. default eps; a
        case's attrs may select the operator version, e.g. ONNX GroupNormalization 18 or 21)."""
        return self.conventions

    def setup(self) -> None:
        """Import the framework and warm up; runs once in the worker before the first case."""

    def supports(self, op: str, mode: str, dtype: str, attrs: Mapping[str, Any]) -> str | None:
        """None if this runner can run such a case, else the reason it cannot."""
        if op not in self.ops or mode not in self.ops[op]:
            return f"{self.id} has no code path for {op}/{mode}"
        if dtype not in self.dtypes:
            return f"{self.id} does not accept {dtype}"
        return None

    def run(self, case) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__}.run")

    def script(self, case) -> str | None:
        """Standalone Python code that makes this path's call for `case`, for bug reports (None:
        this runner writes none; see `fuzz.scripts`).

        The code runs with numpy (as `np`) imported and two dicts defined, `inputs` (the case's
        arrays, writable copies; bfloat16 values in float32 carriers) and `attrs` (the case's attrs);
        it imports its framework, makes the call a user of the framework would write, with the
        case's values as literals, and sets a dict `outputs` with the oracle's output names, as
        `run` returns them (its leading import lines go to the script's import block). Raises
        `Unsupported` for a case the runner cannot express.
        """
        return None

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "framework": self.framework, "ops": {k: list(v) for k, v in self.ops.items()},
                "dtypes": list(self.dtypes), "conventions": self.conventions.to_dict()}
