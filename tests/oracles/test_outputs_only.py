"""`oracles.evaluate(..., bounds=False)`: the same outputs and the same refusals, without bounds.

The bug zoo's variants evaluate the oracle for what the correct formula outputs (or only to refuse
an invalid case exactly as the oracle does); they never read its bounds, which cost most of an
evaluation. This checks, on generated cases of every op and mode, that the outputs-only evaluation
is the full one less its bounds: bit for bit (NaN for NaN), and raising where it raises. Precision
"float64" works in EXT, as the bug zoo asks; a float32 precision is forced to float64 working,
unguarded, so that both evaluations run in one type (under the range guard a full evaluation may
fall back to EXT because a bound alone left float64's range).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

import oracles
from fuzz.strategies import case_specs, materialize
from oracles.errors import OracleInputError

PAIRS = oracles.modes()


@pytest.mark.parametrize("op,mode", PAIRS, ids=[f"{o}-{m}" for o, m in PAIRS])
def test_outputs_only_is_the_evaluation_less_its_bounds(op, mode):
    checked = []

    @settings(max_examples=25, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @seed(20261122)
    @given(case_specs(ops=[op], modes=[mode], dtypes=["float32", "float16"]))
    def check(spec):
        case = materialize(spec)
        for precision, kw in (("float64", {}), ("float32", {"working": np.float64})):
            args = (case.op, case.mode, dict(case.inputs), dict(case.attrs), precision)
            try:
                full = oracles.evaluate(*args, **kw)
            except OracleInputError as e:
                with pytest.raises(OracleInputError) as got:
                    oracles.evaluate(*args, bounds=False, **kw)
                assert str(got.value) == str(e)
                continue
            bare = oracles.evaluate(*args, bounds=False, **kw)
            assert bare.bounds == {}
            assert list(bare.outputs) == list(full.outputs)
            for k, want in full.outputs.items():
                assert bare.outputs[k].dtype == want.dtype, k
                np.testing.assert_array_equal(bare.outputs[k], want, err_msg=k)
            checked.append(spec.regime)

    check()
    assert len(checked) >= 10, checked
