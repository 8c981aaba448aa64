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
