"""benchmarks/jobs_ceiling.py: the alone, pair and --jobs 2 campaigns run the same cases (same
findings), and the ratios are computed from their fuzzing seconds. No timing assertions."""

from __future__ import annotations

import pytest

from tests.benchmarks._scripts import load

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ceil():
    return load("jobs_ceiling")


@pytest.mark.timeout(600)
def test_the_three_measurements_run_the_same_cases(ceil, tmp_path):
    r = ceil.measure("layer_norm", 200, runner_ids=["torch.functional"], workdir=str(tmp_path))
    f = r["findings"]
    assert f["pair"] == [f["alone"], f["alone"]]  # the same cases, so the same findings
    assert r["alone_s"] > 0 and all(s > 0 for s in r["pair_s"])
    assert r["ceiling"] == pytest.approx(2 * r["alone_s"] / (sum(r["pair_s"]) / 2))
    # 200 cases end inside the first round: no round ran to its end in both, so no jobs2/jobs1
    assert r["jobs_rounds"]["rounds"] == 0 and r["jobs_scaling"] is None and r["share_of_ceiling"] is None
    assert "n/a (no equal round)" in ceil.format_row(r)


def test_a_row_reads_the_ratios(ceil):
    r = {"op": "batch_norm", "cases": 25600, "alone_s": 34.6, "pair_s": [36.3, 34.6], "ceiling": 1.95,
         "jobs_scaling": 1.73, "jobs_rounds": {"rounds": 2}, "share_of_ceiling": 1.73 / 1.95,
         "findings": {"alone": 4222, "pair": [4222, 4222], "jobs2": 4230}}
    line = ceil.format_row(r)
    assert "ceiling 1.95" in line and "1.73 over 2 equal rounds (89% of the ceiling)" in line


def test_an_unknown_op_is_refused(ceil, capsys):
    with pytest.raises(SystemExit):
        ceil.main(["--ops", "batch_norm,nope"])
    assert "unknown op(s) nope" in capsys.readouterr().err
