"""benchmarks/throughput.py: its measurement functions run and return what the report is built from.

No timing assertions (the numbers depend on the machine); the checks are on the structure and on
the counts, and that the naive baseline's framework calls compute the op it claims (otherwise its
mismatch counts would be meaningless).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.benchmarks._scripts import load

pytest.importorskip("torch")
pytest.importorskip("tensorflow")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def bench():
    return load("throughput")


@pytest.mark.timeout(60)
def test_naive_baseline_runs_five_examples(bench):
    r = bench.naive_baseline("layer_norm", "small", examples=5)
    assert set(r) == {"op", "size", "examples", "seconds", "cases_per_s", "mismatches", "raised"}
    assert (r["op"], r["size"], r["examples"]) == ("layer_norm", "small", 5)
    assert r["seconds"] > 0 and r["cases_per_s"] > 0
    for counts in (r["mismatches"], r["raised"]):
        assert set(counts) == {"torch", "tf", "ort"}
        assert all(0 <= n <= 5 for n in counts.values())


def test_naive_baseline_refuses_large(bench):
    with pytest.raises(ValueError, match="small"):
        bench.naive_baseline("layer_norm", "large", examples=5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("op", ["batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"])
def test_naive_framework_calls_compute_the_reference(bench, op):
    """On well-conditioned data every framework call of the naive test agrees with its float64
    reference far inside the naive tolerance: the baseline's calls and reference are the same op."""
    fw = bench._NaiveFrameworks()
    rng = np.random.default_rng(3)
    for shape, a in (((3, 6, 5), {"eps": 1e-5, "k": 2, "groups": 3}), ((2, 4, 3, 2), {"eps": 1e-3, "k": 1, "groups": 2})):
        x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
        pshape = shape[len(shape) - a["k"]:] if op in ("layer_norm", "rms_norm") else (shape[1],)
        gamma = rng.standard_normal(pshape).astype(np.float32)
        beta = None if op == "rms_norm" else rng.standard_normal(pshape).astype(np.float32)
        ref = bench._naive_reference(op, x, gamma, beta, a)
        for run in (fw.run_torch, fw.run_tf, fw.run_ort):
            np.testing.assert_allclose(run(op, x, gamma, beta, a), ref, rtol=1e-5, atol=1e-5, err_msg=run.__name__)


@pytest.mark.timeout(60)
def test_raw_floor_on_three_small_cases(bench):
    r = bench.raw_floor("batch_norm", "small", cases=3, seed=1)
    assert (r["op"], r["mode"], r["size"], r["cases"]) == ("batch_norm", "training", "small", 3)
    assert 1 <= r["elements"]["min"] <= r["elements"]["max"] <= 4096
    assert set(r["runners"]) == {"torch.functional", "tf.nn", "ort"}
    timed_any = False
    for s in r["runners"].values():
        assert {"timed", "unsupported", "raised", "mean_s", "warm_mean_s"} <= set(s)
        assert s["timed"] + s["unsupported"] == 3 and 0 <= s["raised"] <= s["timed"]
        if s["timed"]:
            timed_any = True
            assert s["mean_s"] > 0 and s["warm_mean_s"] > 0
        else:
            assert s["mean_s"] is None
    assert timed_any and r["floor_s"] > 0 and r["floor_warm_s"] > 0


def test_bench_runners_uses_keras_for_rms_norm(bench):
    assert bench.bench_runners("layer_norm") == ["torch.functional", "tf.nn", "ort"]
    assert bench.bench_runners("rms_norm") == ["torch.functional", "keras", "ort"]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_tree_rss_counts_this_process(bench):
    rss, n = bench.tree_rss(os.getpid())
    assert n >= 1 and rss > 10 * 2**20  # this interpreter with numpy alone holds more than 10 MiB


@pytest.mark.timeout(300)
def test_a_campaign_of_a_given_number_of_cases_runs_exactly_those(bench, tmp_path):
    r = bench.campaign_throughput("layer_norm", "small", budget=30, cases=40, runner_ids=["torch.functional"],
                                  workdir=str(tmp_path))
    assert r["cases_run"] == 40 and r["cases_per_s"] > 0
    assert "--cases 40" in r["cmd"] and "--budget" not in r["cmd"]


def test_jobs_scaling_compares_two_cores_with_one_core_on_the_same_rounds(bench, monkeypatch):
    """The --jobs 2 campaign runs for the budget; the one-core campaign it is compared with runs as
    many cases; the ratio is taken over the rounds both ran to their end with the same cases
    (round 3: cut by the budget; round 4: other cases; round 5: the one core never got there). The
    throughput ratios are kept apart."""
    calls = []
    rounds = {(2, None): {"0": [1.0, 100, True], "1": [2.0, 100, True], "2": [3.0, 300, True], "3": [9.0, 50, False],
                          "4": [1.0, 70, True], "5": [1.0, 10, True]},
              (1, 3000): {"0": [0.5, 100, True], "1": [1.0, 100, True], "2": [1.25, 300, True], "3": [7.0, 90, True],
                          "4": [1.0, 80, True]},
              (1, None): {"0": [0.5, 100, True], "1": [0.5, 10, False]}}

    def fake_campaign(op, size, *, jobs, cpus, cases=None, **kw):
        calls.append((jobs, tuple(cpus), cases))
        cps = {(1, None): 500.0, (2, None): 800.0, (1, 3000): 400.0}[(jobs, cases)]
        n = cases if cases is not None else int(cps * kw["budget"])
        return {"cases_per_s": cps, "cases_run": n, "seconds": n / cps, "startup_seconds": 0.0, "findings": 0,
                "peak_rss_mib": 1.0, "notes": [], "rounds": rounds[(jobs, cases)]}

    monkeypatch.setattr(bench, "campaign_throughput", fake_campaign)
    monkeypatch.setattr(bench, "floor_subprocess", lambda *a, **k: {"na": "skipped"})
    a = bench.parse_args(["--ops", "layer_norm", "--sizes", "small", "--budget", "3.75", "--skip-naive"])
    row = bench.bench_one("layer_norm", "small", a, {"--jobs", "--pack", "--max-elements", "--min-elements"}, [0, 1])
    assert calls == [(1, (0,), None), (2, (0, 1), None), (1, (0,), 3000)]
    assert row["jobs_rounds"] == {"scaling": pytest.approx(2 * 2.75 / 6.0), "rounds": 3, "cases": 500,
                                  "seconds_one": 2.75, "seconds_many": 6.0}
    assert row["jobs_scaling"] == pytest.approx(2 * 2.75 / 6.0) and row["verdicts"]["jobs_scaling"] == "FAIL"
    assert row["jobs_scaling_cases"] == pytest.approx(2.0) and row["jobs_scaling_budget"] == pytest.approx(1.6)


def test_round_scaling_needs_a_common_round(bench):
    assert bench.round_scaling({"0": [1.0, 5, True]}, {"0": [1.0, 6, True]})["scaling"] is None
    assert bench.round_scaling(None, {"0": [1.0, 5, True]}) == {"scaling": None, "rounds": 0, "cases": 0,
                                                                 "seconds_one": 0, "seconds_many": 0}
