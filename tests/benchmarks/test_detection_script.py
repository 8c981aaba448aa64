"""benchmarks/detection.py: each campaign's buckets with the seconds to their first finding, and the
head-to-head figures of two --pack settings. No timing assertions on the machine's speed."""

from __future__ import annotations

import os

import pytest

from tests.benchmarks._scripts import load


@pytest.fixture(scope="module")
def det():
    return load("detection")


def _runs(times):
    """{(pack, seed): run} from {(pack, seed): {bucket: seconds}}."""
    return {k: {"buckets": v, "cases": 100 * k[0]} for k, v in times.items()}


def test_the_head_to_head_counts_who_found_each_bucket_first(det):
    runs = _runs({(1, 0): {"a": 1.0, "b": 5.0, "c": 2.0}, (64, 0): {"a": 3.0, "b": 5.01, "d": 9.0},
                  (1, 1): {"a": 2.0}, (64, 1): {"a": 1.0, "e": 4.0}})
    c = det.compare(runs, [1, 64], [0, 1])
    assert c["per_pack"][1] == {"cases": 100, "per_seed": [3, 1], "union": 3, "only": 1}  # c
    assert c["per_pack"][64] == {"cases": 6400, "per_seed": [3, 2], "union": 4, "only": 2}  # d, e
    assert c["common"] == 3  # a and b in seed 0, a in seed 1
    assert c["first"] == {1: 1, 64: 1}  # b: 5.0 and 5.01 tie within TIE_SECONDS
    assert c["median_ratio"] == pytest.approx(5.01 / 5.0)  # ratios 3, 1.002, 0.5
    line = det.format_op("x", c)
    assert "first at --pack 1 1, at --pack 64 1, the same time 1" in line and "found by this pack only 2" in line


def test_no_common_bucket_has_no_ratio(det):
    c = det.compare(_runs({(1, 0): {"a": 1.0}, (64, 0): {}}), [1, 64], [0])
    assert c["common"] == 0 and c["median_ratio"] is None and "median time --pack 64 / --pack 1: n/a" in det.format_op("x", c)


@pytest.mark.timeout(600)
def test_a_campaign_gives_its_buckets_with_times_inside_its_budget(det, tmp_path):
    pytest.importorskip("torch")
    budget = 15.0  # (the budget counts the workers' start-up too)
    r = det.campaign("layer_norm", 64, 0, budget, min(os.sched_getaffinity(0)), str(tmp_path))
    assert (r["op"], r["pack"], r["seed"]) == ("layer_norm", 64, 0) and r["cases"] > 0
    assert all(0 <= t <= budget for t in r["buckets"].values()), r
    assert list(tmp_path.iterdir()) == []  # the campaign folder is removed


def test_a_folder_without_a_campaign_is_an_error(det, tmp_path):
    import sqlite3

    with pytest.raises(sqlite3.OperationalError):
        det.buckets_found(tmp_path)


def test_bad_arguments_are_refused(det, capsys):
    for argv, words in ((["--ops", "nope"], "unknown op(s) nope"), (["--packs", "1"], "two different"),
                        (["--packs", "64,64"], "two different"), (["--budget", "0"], "positive")):
        with pytest.raises(SystemExit):
            det.main(argv)
        assert words in capsys.readouterr().err
