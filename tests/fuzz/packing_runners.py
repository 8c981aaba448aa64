"""Plug-in runners for the packing tests (load with ``tests.fuzz.packing_runners:runners``).

`packing.big_wrong`: an honest float64 LayerNorm that adds 1 to every output element when its
data input has more than `BIG` elements. In a campaign with --max-elements BIG no case is that
large alone, so every discrepancy it shows comes from a packed call: the campaign must re-run the
members alone and record nothing.

`packing.member_wrong`: the same LayerNorm, wrong (adds 1) on the samples (rows along axis 0) whose
first element is negative; packed or alone, exactly the cases holding such a row are wrong, and the
campaign must record exactly those cases.
"""

from __future__ import annotations

import numpy as np

from fuzz.runners.base import Conventions, Runner
from tests.fuzz.faulty_runners import layer_norm_outputs

BIG = 64


def member_is_wrong(case) -> bool:
    x = case.inputs["x"]
    return bool(np.any(x.reshape(x.shape[0], -1)[:, 0] < 0)) if x.ndim >= 2 else bool(x.reshape(-1)[0] < 0)


class _LN(Runner):
    framework = "packing-test"
    ops = {"layer_norm": ("forward",)}
    dtypes = ("float32", "float64")
    conventions = Conventions(default_eps=1e-5, sources=("tests/fuzz/packing_runners.py",))

    def version(self) -> str:
        return "0.0-test"


class BigWrong(_LN):
    id = "packing.big_wrong"

    def run(self, case):
        out = layer_norm_outputs(case)
        if case.inputs["x"].size > BIG:
            out["y"] = out["y"] + 1
        return out


class MemberWrong(_LN):
    id = "packing.member_wrong"

    def run(self, case):
        out = layer_norm_outputs(case)
        x = case.inputs["x"]
        if x.ndim >= 2:
            bad = x.reshape(x.shape[0], -1)[:, 0] < 0
            out["y"][bad] = out["y"][bad] + 1
        elif x.reshape(-1)[0] < 0:
            out["y"] = out["y"] + 1
        return out


def runners():
    return [BigWrong(), MemberWrong()]
