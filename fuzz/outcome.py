"""The `Outcome` record: what one runner did with one case."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

#: Outcome statuses. OK: outputs returned. RAISED: the framework raised (type and message kept).
#: CRASHED: the worker died (signal or exit code; out-of-memory kills included, see `detail`).
#: TIMEOUT: no answer within the per-case timeout. UNSUPPORTED: the runner cannot express the case.
#: BAD_OUTPUT: the runner returned something that is not a valid output (not an array, wrong name,
#: shape or dtype).
STATUSES = ("OK", "RAISED", "CRASHED", "TIMEOUT", "UNSUPPORTED", "BAD_OUTPUT")


@dataclass(frozen=True)
class Outcome:
    """One runner's result for one case. `outputs` only for OK; `error_type`/`error` for RAISED;
    `exit_code`/`signal` for CRASHED; `detail` says more in words (reason, stderr tail)."""

    runner: str
    case_id: str
    status: str
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    error_type: str = ""
    error: str = ""
    detail: str = ""
    seconds: float = 0.0
    exit_code: int | None = None
    signal: int | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is invalid: expected one of {STATUSES}")

    def to_dict(self, *, with_outputs: bool = False) -> dict[str, Any]:
        """JSON-serializable form (arrays as lists only with `with_outputs`)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "outputs"}
        d["outputs"] = ({k: {"dtype": v.dtype.str, "shape": list(v.shape), "data": v.tolist()}
                         for k, v in self.outputs.items()} if with_outputs else sorted(self.outputs))
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
