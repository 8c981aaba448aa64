"""Inference of observed conventions from a campaign's counters and buckets."""

from __future__ import annotations

from fuzz.runners.base import Conventions
from fuzz.store import bucket_key
from reports.conventions import infer_conventions

BN = Conventions(momentum_on="batch", default_momentum=0.1, running_var_estimator="unbiased", default_eps=1e-5,
                 eps_mode="inside", batch_of_one="raises", nan_propagation="set")
LN = Conventions(default_eps=1e-5, eps_mode="inside", batch_of_one="normalizes")


def count(runner, op, mode, regime, result, n, dtype="float32"):
    return {"op": op, "mode": mode, "runner": runner, "dtype": dtype, "regime": regime, "result": result, "count": n}


def bucket(runner, op, mode, category, signature, n, regimes=None):
    return {"key": bucket_key(op, mode, runner, category, signature, "float32"), "op": op, "mode": mode,
            "runner": runner, "dtype": "float32", "category": category, "signature": signature, "count": n,
            "regimes": regimes}


def cells(rows, runner, op):
    (row,) = [r for r in rows if r.runner == runner and r.op == op]
    return row.cells


def test_bug_zoo_signatures_contradict_the_declaration():
    counts = [count("r", "batch_norm", "training", "well_conditioned", "agree", 30),
              count("r", "batch_norm", "training", "well_conditioned", "mismatch", 5)]
    buckets = [bucket("r", "batch_norm", "training", "mismatch", "momentum_inverted", 4),
               bucket("r", "batch_norm", "training", "mismatch", "running_var_estimator_swapped", 1),
               bucket("r", "batch_norm", "inference", "mismatch", "eps_outside_sqrt", 2)]
    c = cells(infer_conventions(["r"], {("r", "batch_norm"): BN}, counts, buckets), "r", "batch_norm")
    assert (c["momentum"].state, c["momentum"].observed) == ("differs", "running")
    assert "4 findings" in c["momentum"].evidence and "momentum_inverted" in c["momentum"].evidence
    assert c["momentum"].buckets == [buckets[0]["key"]]
    assert (c["running_var"].state, c["running_var"].observed) == ("differs", "biased")
    assert c["eps"].state == "differs" and "outside the square root" in c["eps"].observed
    assert c["momentum"].declared.startswith("batch")


def test_agreeing_cases_are_consistent_and_counted():
    counts = [count("r", "batch_norm", "training", "well_conditioned", "agree", 7),
              count("r", "batch_norm", "training_steps", "mixed", "agree", 5),
              count("r", "batch_norm", "inference", "var_near_eps", "agree", 3),
              count("r", "batch_norm", "training", "nonfinite", "agree", 2)]
    c = cells(infer_conventions(["r"], {("r", "batch_norm"): BN}, counts, []), "r", "batch_norm")
    assert c["momentum"].state == "agrees" and "14 cases of batch_norm" in c["momentum"].evidence
    assert c["eps"].state == "agrees" and "3 cases" in c["eps"].evidence
    assert c["nan"].state == "agrees" and "2 cases" in c["nan"].evidence
    assert c["batch_of_one"].state == "unobserved"


def test_nothing_to_tell_is_unobserved_and_other_ops_are_na():
    counts = [count("r", "layer_norm", "forward", "well_conditioned", "agree", 9)]
    c = cells(infer_conventions(["r"], {("r", "layer_norm"): LN}, counts, []), "r", "layer_norm")
    assert c["momentum"].state == "n/a" and c["running_var"].state == "n/a"
    assert c["eps"].state == "unobserved" and c["nan"].state == "unobserved"
    assert c["affine"].state == "agrees"


def test_batch_of_one_raising_only_on_size_one_cases():
    counts = [count("r", "layer_norm", "forward", "size_one", "raised", 4),
              count("r", "layer_norm", "forward", "size_one", "agree", 1),
              count("r", "layer_norm", "forward", "well_conditioned", "agree", 40)]
    buckets = [bucket("r", "layer_norm", "forward", "raised", "builtins.RuntimeError", 4, regimes={"size_one": 4})]
    c = cells(infer_conventions(["r"], {("r", "layer_norm"): LN}, counts, buckets), "r", "layer_norm")
    assert (c["batch_of_one"].observed, c["batch_of_one"].state) == ("raises", "differs")
    assert c["batch_of_one"].buckets == [buckets[0]["key"]]


def test_batch_of_one_raises_everywhere_says_nothing():
    counts = [count("r", "layer_norm", "forward", "size_one", "raised", 1),
              count("r", "layer_norm", "forward", "size_one", "agree", 2),
              count("r", "layer_norm", "forward", "well_conditioned", "raised", 10),
              count("r", "layer_norm", "forward", "well_conditioned", "agree", 20)]
    c = cells(infer_conventions(["r"], {("r", "layer_norm"): LN}, counts, []), "r", "layer_norm")
    assert (c["batch_of_one"].observed, c["batch_of_one"].state) == ("normalizes", "agrees")
    assert "say nothing about size one" in c["batch_of_one"].evidence


def test_declared_raise_confirmed_by_triage_convention():
    counts = [count("r", "batch_norm", "training", "size_one", "raised", 3)]
    buckets = [bucket("r", "batch_norm", "training", "raised", "convention:batch_of_one", 3)]
    c = cells(infer_conventions(["r"], {("r", "batch_norm"): BN}, counts, buckets), "r", "batch_norm")
    assert (c["batch_of_one"].observed, c["batch_of_one"].state) == ("raises", "agrees")


def test_unexplained_nan_pattern_marks_the_nan_rule():
    counts = [count("r", "layer_norm", "forward", "nonfinite", "nan_pattern", 2)]
    buckets = [bucket("r", "layer_norm", "forward", "nan_pattern", "y", 2, regimes={"nonfinite": 2})]
    c = cells(infer_conventions(["r"], {("r", "layer_norm"): LN}, counts, buckets), "r", "layer_norm")
    assert c["nan"].state == "differs" and c["nan"].buckets == [buckets[0]["key"]]
    assert "2 NaN-pattern findings on non-finite inputs" in c["nan"].evidence
    # a NaN from an overflow on finite inputs says nothing about NaN propagation
    buckets = [bucket("r", "layer_norm", "forward", "nan_pattern", "y", 2, regimes={"huge": 2})]
    c = cells(infer_conventions(["r"], {("r", "layer_norm"): LN}, counts, buckets), "r", "layer_norm")
    assert c["nan"].state == "unobserved"
    buckets = [bucket("r", "layer_norm", "forward", "nan_pattern", "nan_spreads", 2)]
    c = cells(infer_conventions(["r"], {("r", "layer_norm"): LN}, counts, buckets), "r", "layer_norm")
    assert c["nan"].state == "differs" and "spreads" in c["nan"].observed


def test_unknown_runner_and_unsupported_only_rows():
    counts = [count("gone", "layer_norm", "forward", "nonfinite", "agree", 3),
              count("r", "mvn", "forward", "well_conditioned", "unsupported", 5)]
    rows = infer_conventions(["gone", "r"], {}, counts, [], {"gone": "factory x:y cannot be imported"})
    assert [(r.runner, r.op) for r in rows] == [("gone", "layer_norm")]  # unsupported-only pairs ran nothing
    c = rows[0].cells
    assert c["nan"].state == "unknown" and c["nan"].declared == "unknown"
    assert rows[0].declared_from == "factory x:y cannot be imported"


def test_batch_of_one_nan_only_counts_when_specific_to_size_one():
    counts = [count("r", "layer_norm", "forward", "size_one", "nan_pattern", 1),
              count("r", "layer_norm", "forward", "size_one", "agree", 9),
              count("r", "layer_norm", "forward", "huge", "nan_pattern", 30),
              count("r", "layer_norm", "forward", "huge", "agree", 10)]
    c = cells(infer_conventions(["r"], {("r", "layer_norm"): LN}, counts, []), "r", "layer_norm")
    assert (c["batch_of_one"].observed, c["batch_of_one"].state) == ("normalizes", "agrees")
    counts[2] = count("r", "layer_norm", "forward", "huge", "nan_pattern", 0)
    c = cells(infer_conventions(["r"], {("r", "layer_norm"): LN}, counts, []), "r", "layer_norm")
    assert (c["batch_of_one"].observed, c["batch_of_one"].state) == ("NaN in some cases", "differs")
