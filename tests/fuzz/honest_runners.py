"""The error-model calibration's honest implementations (tests/oracles/honest.py) as plug-in
runners: a campaign against them must report no finding at all (no false positives).

Load with ``tests.fuzz.honest_runners:runners``; ids are ``honest.<implementation>``.
"""

from __future__ import annotations

import numpy as np

import oracles
from fuzz.runners.base import Conventions, Runner, framework_call
from tests.oracles.honest import HONEST


class HonestRunner(Runner):
    framework = "honest"
    dtypes = ("float16", "bfloat16", "float32", "float64")
    conventions = Conventions(sources=("tests/oracles/honest.py",),
                              notes="honest float32/float64 arithmetic; half formats accumulate in float32")

    def __init__(self, name: str):
        self.name = name
        self.id = f"honest.{name}"
        self.ops = {op: d.modes for op, d in oracles.OPS.items()}

    def version(self) -> str:
        return "calibration"

    def run(self, case):
        rv = case.inputs.get("running_var")
        if rv is not None and np.any(rv < 0):
            with framework_call():  # a validating framework refuses a negative running variance
                raise ValueError("running_var must be non-negative")
        out = HONEST[self.name](case.op, case.mode, dict(case.inputs), dict(case.attrs), case.dtype)
        return {k: np.asarray(v) for k, v in out.items()}


def runners():
    return [HonestRunner(name) for name in HONEST]
