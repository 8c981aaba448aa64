"""The fuzzer's own score: every bug-zoo variant, injected as a runner, is detected with the right
explanation within 2,000 cases (`normfuzz selftest`)."""

from __future__ import annotations

import pytest

import bugzoo
from fuzz.selftest import runners, score_one

MAX_CASES = 2000


@pytest.mark.slow
@pytest.mark.parametrize("runner", runners(), ids=lambda r: r.id)
def test_each_variant_is_caught_with_its_explanation(runner):
    s = score_one(runner, max_cases=MAX_CASES)
    assert s.detected, f"{runner.id}: not explained as {runner.variant.name} within {MAX_CASES} cases " \
                       f"(first finding: {s.first_signature or 'none'})"
    assert s.cases <= MAX_CASES and runner.variant.name in s.explanation


def test_every_variant_has_a_selftest_runner():
    assert {(r.variant.name, r.variant.op) for r in runners()} == {(v.name, v.op) for v in bugzoo.VARIANTS}


@pytest.mark.parametrize("name,op", [("eps_outside_sqrt", "layer_norm"), ("momentum_inverted", "batch_norm"),
                                     ("group_norm_interleaved", "group_norm")])
def test_a_variant_is_caught_through_packed_calls(name, op):
    """`normfuzz selftest --pack 64`: the campaign evaluates families in packed calls and confirms a
    flagged member alone; the variant is still explained, and `cases` counts whole families."""
    (runner,) = [r for r in runners() if (r.variant.name, r.variant.op) == (name, op)]
    s = score_one(runner, max_cases=MAX_CASES, pack=64)
    assert s.detected and name in s.explanation and s.pack == 64, s
    assert s.cases % 64 == 0 or s.cases == MAX_CASES


def test_a_variant_runner_raises_on_an_input_the_oracle_rejects():
    """An invalid input (here a negative running variance) makes the injected variant raise as a
    framework that validates its inputs does, not fail as a bug of normfuzz (which stopped a
    `selftest --pack 64 --max-cases 128000` run at BatchNorm's invalid regime)."""
    import numpy as np

    from fuzz.case import Case
    from fuzz.runners.base import FrameworkRaised

    (runner,) = [r for r in runners() if (r.variant.name, r.variant.op) == ("nan_spreads", "batch_norm")]
    x = np.ones((2, 3), np.float32)
    inputs = {"x": x, "running_mean": np.zeros(3, np.float32), "running_var": np.array([1, -7, 1], np.float32)}
    case = Case("batch_norm", "inference", "float32", inputs, {"eps": 1e-5})
    with pytest.raises(FrameworkRaised, match="running_var"):
        runner.run(case)
    ok = Case("batch_norm", "inference", "float32", dict(inputs, running_var=np.ones(3, np.float32)), {"eps": 1e-5})
    assert set(runner.run(ok)) >= {"y"}
