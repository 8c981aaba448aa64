"""A flush-to-zero precision's bounds are never tighter than the same precision's without FTZ.

`Precision(ftz=True)` only replaces every absolute underflow floor eta (half a subnormal spacing per
rounding) by the format's smallest normal number, 2 tiny >= eta, and every bound of the error model
(docs/error-model.md) is a sum of non-negative terms increasing in eta: so for the same case the
references are the same and each FTZ bound is at least the non-FTZ one, element by element. The
campaign relies on it (`fuzz.campaign`): a runner declaring FTZ whose outputs are within the
non-FTZ bounds is within its own, so the FTZ evaluation is made only when they are not. This checks
the property on generated cases of every op, mode and format.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

import oracles
from fuzz.strategies import case_specs, materialize
from oracles.errormodel import Precision
from oracles.errors import OracleInputError

PAIRS = oracles.modes()


@pytest.mark.parametrize("op,mode", PAIRS, ids=[f"{o}-{m}" for o, m in PAIRS])
def test_ftz_bounds_contain_the_non_ftz_bounds(op, mode):
    checked = []

    @settings(max_examples=30, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(20261121)
    @given(case_specs(ops=[op], modes=[mode], dtypes=["float32", "float16", "bfloat16"]))
    def check(spec):
        case = materialize(spec)
        p = Precision.of(case.dtype)
        ftz = dataclasses.replace(p, ftz=True)
        try:
            a = oracles.evaluate(case.op, case.mode, dict(case.inputs), dict(case.attrs), p)
        except OracleInputError:
            with pytest.raises(OracleInputError):
                oracles.evaluate(case.op, case.mode, dict(case.inputs), dict(case.attrs), ftz)
            return
        b = oracles.evaluate(case.op, case.mode, dict(case.inputs), dict(case.attrs), ftz)
        assert set(a.outputs) == set(b.outputs) == set(a.bounds) == set(b.bounds)
        for k in a.outputs:
            np.testing.assert_array_equal(a.outputs[k], b.outputs[k])
            loose, tight = np.asarray(b.bounds[k]), np.asarray(a.bounds[k])
            ok = (loose >= tight) | (np.isnan(tight) & np.isnan(loose))
            assert ok.all(), (k, spec.regime, tight[~ok][:3], loose[~ok][:3])
        checked.append(spec.regime)

    check()
    assert len(checked) >= 10, checked
