"""compare + triage: categories, the bug-zoo explanation, conventions, and structured bucket keys."""

from __future__ import annotations

import numpy as np
import pytest

import bugzoo
import oracles
from fuzz.case import Case
from fuzz.compare import reference
from fuzz.outcome import Outcome
from fuzz.runners.base import Conventions
from fuzz.triage import bucket_key, judge

CONV = Conventions()


def case_of(op, mode, dtype, inputs, attrs):
    return Case(op=op, mode=mode, dtype=dtype, inputs=inputs, attrs=attrs)


def ok(case, outputs, runner="fake"):
    return Outcome(runner, case.id, "OK", outputs={k: np.asarray(v) for k, v in outputs.items()})


def ln_case(dtype="float32", seed=0):
    x = oracles.round_to(dtype, np.random.default_rng(seed).normal(size=(3, 8)))
    return case_of("layer_norm", "forward", dtype, {"x": x}, {"eps": 1e-5, "normalized_ndim": 1})


def rounded_reference(case):
    ev = oracles.evaluate(case.op, case.mode, dict(case.inputs), dict(case.attrs), case.dtype)
    return {k: oracles.round_to(case.dtype, v) for k, v in ev.outputs.items()}


def test_correctly_rounded_outputs_agree():
    c = ln_case()
    verdict, finding = judge(c, ok(c, rounded_reference(c)), CONV)
    assert verdict.category == "agree" and finding is None and verdict.max_ratio <= 1


def test_perturbed_output_is_a_precision_finding_keyed_on_fields():
    c = ln_case()
    out = rounded_reference(c)
    out["y"] = out["y"].copy()
    out["y"][1, 2] += np.float32(1e-3)
    verdict, finding = judge(c, ok(c, out), CONV, regime="well_conditioned")
    assert verdict.category == "mismatch" and verdict.worst_output == "y"
    assert finding.category == "precision" and finding.signature == "y"
    assert finding.key == ("layer_norm", "forward", "fake", "precision", "y", "float32")
    assert bucket_key(*finding.key) == "layer_norm|forward|fake|precision|y|float32"
    assert "[1, 2]" in finding.explanation


def test_nan_where_oracle_is_finite_is_a_nan_pattern():
    c = ln_case()
    out = rounded_reference(c)
    out["y"] = out["y"].copy()
    out["y"][0, 0] = np.nan
    verdict, finding = judge(c, ok(c, out), CONV)
    assert verdict.category == "nan_pattern" and finding.category == "nan_pattern"


def test_statuses_become_their_categories_and_signatures_ignore_messages():
    c = ln_case()
    raised = [Outcome("fake", c.id, "RAISED", error_type="builtins.RuntimeError", error=m) for m in ("a", "b <x>")]
    keys = {judge(c, o, CONV)[1].key for o in raised}
    assert keys == {("layer_norm", "forward", "fake", "raised", "builtins.RuntimeError", "float32")}
    crash = judge(c, Outcome("fake", c.id, "CRASHED", signal=11, detail="worker killed by signal 11"), CONV)[1]
    assert crash.category == "crash" and crash.signature == "signal 11"
    assert judge(c, Outcome("fake", c.id, "TIMEOUT", detail="t"), CONV)[1].category == "timeout"
    assert judge(c, Outcome("fake", c.id, "BAD_OUTPUT", detail="d"), CONV)[1].category == "bad_output"
    v, f = judge(c, Outcome("fake", c.id, "UNSUPPORTED", detail="no"), CONV)
    assert v.category == "unsupported" and f is None


def test_invalid_input_raised_agrees_and_accepted_is_a_finding():
    x = np.ones((2, 3, 4), np.float32)
    c = case_of("batch_norm", "inference", "float32",
                {"x": x, "running_mean": np.zeros(3, np.float32), "running_var": -np.ones(3, np.float32)},
                {"eps": 1e-5})
    assert reference(c, oracles.Precision.of("float32")).evaluation is None
    v, f = judge(c, Outcome("fake", c.id, "RAISED", error_type="E", error="negative"), CONV)
    assert v.category == "agree" and f is None
    v, f = judge(c, ok(c, {"y": x}), CONV)
    assert f.category == "accepted_invalid" and f.signature == "running_var"


def test_wrong_output_shape_is_bad_output():
    c = ln_case()
    out = rounded_reference(c)
    out["y"] = out["y"][:, :4]
    assert judge(c, ok(c, out), CONV)[0].category == "bad_output"


@pytest.mark.parametrize("v", bugzoo.VARIANTS, ids=lambda v: f"{v.name}.{v.op}")
def test_each_variant_is_explained_by_its_own_signature(v):
    """A framework that computes exactly a bug-zoo variant is triaged to that variant."""
    mode = v.modes[0]
    dtype = "float32" if "float32" in v.dtypes else v.dtypes[0]
    ex = bugzoo.examples(v, mode, dtype, inside=True, seed=0)
    c = case_of(v.op, mode, dtype, ex.inputs, ex.attrs)
    outs = v.evaluate(mode, dict(c.inputs), dict(c.attrs), dtype)
    verdict, finding = judge(c, ok(c, outs), CONV)
    assert finding is not None and verdict.category in ("mismatch", "nan_pattern")
    if finding.signature != v.name:  # a twin that coincides on this case must score as well
        score = finding.details["closest_variant"]["score"]
        assert score <= 1 and finding.signature in {w.name for w in bugzoo.variants_for(v.op)}, finding
    else:
        assert "matches bug-zoo variant" in finding.explanation


def test_an_output_without_a_finite_value_is_weighed_only_against_the_nan_variants(monkeypatch):
    """A runner whose outputs hold no finite value gives no evidence for a variant whose nature is
    not a NaN pattern, so triage does not evaluate those variants; the NaN-natured one still
    explains the finding as before."""
    nan_v = next(v for v in bugzoo.VARIANTS if v.trigger_regime == "nonfinite_in_one_set")
    mode = nan_v.modes[0]
    dtype = "float32" if "float32" in nan_v.dtypes else nan_v.dtypes[0]
    ex = bugzoo.examples(nan_v, mode, dtype, inside=True, seed=0)
    c = case_of(nan_v.op, mode, dtype, ex.inputs, ex.attrs)
    outs = {k: np.full(np.shape(a), np.nan, dtype=np.float32) for k, a in rounded_reference(c).items()}
    others = [v for v in bugzoo.variants_for(c.op, c.mode, c.dtype) if v is not nan_v]
    assert others  # the case has variants whose evaluation the short-cut skips
    evaluated = []
    cls = type(nan_v)
    real = cls.evaluate

    def counting(self, *a, **k):
        evaluated.append(self.name)
        return real(self, *a, **k)

    monkeypatch.setattr(cls, "evaluate", counting)
    verdict, finding = judge(c, ok(c, outs), CONV)
    assert verdict.category == "nan_pattern"
    assert evaluated == [nan_v.name]
    assert finding.details["closest_variant"]["name"] == nan_v.name


def test_min_eps_convention_explains_a_clamped_eps():
    x = oracles.round_to("float32", np.random.default_rng(1).normal(scale=1e-3, size=(4, 8)))
    c = case_of("layer_norm", "forward", "float32", {"x": x}, {"eps": 1e-9, "normalized_ndim": 1})
    clamped = oracles.evaluate("layer_norm", "forward", {"x": x}, {"eps": 1e-3, "normalized_ndim": 1}, "float32")
    out = {k: oracles.round_to("float32", v) for k, v in clamped.outputs.items()}
    _, f = judge(c, ok(c, out), Conventions(min_eps=1e-3))
    assert f.signature == "convention:min_eps"
    _, f = judge(c, ok(c, out), Conventions())
    assert f.signature != "convention:min_eps"


def test_subnormal_inputs_read_as_zero_are_the_flush_to_zero_convention():
    """Keras RMSNorm of one float32 element 3.7e-40 (subnormal), eps = 1e-6, returned 0 against the
    reference 3.7e-37 (normal: r = 1000 scales the input up), and triage named it
    rms_norm_subtracts_mean (0 as well for a one-element set). A path declaring flush-to-zero reads
    subnormal inputs as zero: the oracle on the flushed inputs explains it."""
    x = np.array([3.7e-40], dtype=np.float32)
    c = case_of("rms_norm", "forward", "float32", {"x": x}, {"eps": 1e-6, "normalized_ndim": 1})
    daz = {"y": np.zeros(1, np.float32), "rstd": np.asarray(np.float32(1000.0))}
    _, f = judge(c, ok(c, daz), Conventions(flush_subnormals=True))
    assert f.signature == "convention:flush_subnormals" and "1 subnormal" in f.explanation, f
    _, f = judge(c, ok(c, daz), Conventions())  # a path that does not flush: not explained so
    assert f is not None and f.signature != "convention:flush_subnormals"
    # a wrong output is not excused because the case holds a subnormal input
    _, f = judge(c, ok(c, {"y": np.float32([0.5]), "rstd": np.asarray(np.float32(1000.0))}), Conventions(flush_subnormals=True))
    assert f is not None and f.signature != "convention:flush_subnormals"
    # nor is a case without subnormal inputs (the oracle of the same inputs)
    x2 = np.array([3.7e-37], dtype=np.float32)
    c2 = case_of("rms_norm", "forward", "float32", {"x": x2}, {"eps": 1e-6, "normalized_ndim": 1})
    _, f = judge(c2, ok(c2, daz), Conventions(flush_subnormals=True))
    assert f is not None and f.signature != "convention:flush_subnormals"


def test_documented_refusals_are_conventions():
    """A raise the runner documents (eps below its minimum, a one-element reduction set) is a
    convention, not a new bug; an undocumented raise stays a 'raised' finding."""
    x = np.ones((1, 3, 1), np.float32)
    c = case_of("instance_norm", "forward", "float32", {"x": x}, {"eps": 1e-5})
    raised = Outcome("fake", c.id, "RAISED", error_type="builtins.ValueError", error="Expected more than 1 spatial element")
    assert judge(c, raised, Conventions(batch_of_one="raises"))[1].signature == "convention:batch_of_one"
    assert judge(c, raised, Conventions(batch_of_one="normalizes"))[1].signature == "builtins.ValueError"
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    c = case_of("batch_norm", "training", "float32", {"x": x}, {"eps": 0.0})
    raised = Outcome("fake", c.id, "RAISED", error_type="builtins.ValueError", error="eps must be positive")
    assert judge(c, raised, Conventions(min_eps=5e-324))[1].signature == "convention:min_eps"
    assert judge(c, raised, Conventions())[1].signature == "builtins.ValueError"


def test_a_variant_barely_off_the_oracle_is_no_evidence_for_it():
    """Keras RMSNormalization in a tf.function flushes x * scale = -9.08e-39 to -0 on a row of one
    element (docs/findings.md, TensorFlow 8): y is -0 where the oracle has -1.08e-37, about one bound
    off. The variant rms_norm_subtracts_mean is 0 on such a row too (x - mean = 0), but it departs
    from the oracle there by less than `EVIDENCE` bounds, as little as the runner does: the case is
    no evidence for it, and the finding is a precision one."""
    from fuzz.triage import EVIDENCE, MATCH

    conv = Conventions(flush_subnormals=True)  # TensorFlow's
    x = np.array([-1.2611686e-44, -4.2038954e-45, 2.1035534e-38], np.float32).reshape(1, 3, 1, 1, 1)
    c = case_of("rms_norm", "forward", "float32", {"x": x, "weight": np.array([-0.43172196], np.float32)},
                {"eps": 0.007057809736579657, "normalized_ndim": 1})
    ev = oracles.evaluate(c.op, c.mode, dict(c.inputs), dict(c.attrs), conv.precision("float32"))
    y = oracles.round_to("float32", ev.outputs["y"]).copy()
    y.reshape(-1)[2] = -0.0
    variant = bugzoo.variant("rms_norm_subtracts_mean", "rms_norm").evaluate(c.mode, dict(c.inputs), dict(c.attrs),
                                                                         c.dtype)["y"]
    departs = oracles.error_ratio(variant, ev.outputs["y"], ev.bounds["y"], "float32").reshape(-1)[2]
    assert MATCH < departs < EVIDENCE and variant.reshape(-1)[2] == 0
    verdict, finding = judge(c, ok(c, {"y": y}), conv)
    assert verdict.category == "mismatch" and MATCH < verdict.max_ratio < EVIDENCE
    assert finding.category == "precision" and finding.signature == "y", finding
