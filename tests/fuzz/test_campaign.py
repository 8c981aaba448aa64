"""Campaigns end to end: counts add up, findings are bucketed and minimized, no false positives on
honest implementations, determinism, SIGKILL + resume loses nothing, and the CLI's exit codes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fuzz.campaign import Campaign, CampaignConfig
from fuzz.cli import main
from fuzz.store import Store

FAULTY = "tests.fuzz.faulty_runners:runners"
HONEST = "tests.fuzz.honest_runners:runners"
REPO = Path(__file__).resolve().parents[2]


def ln_config(out, runners, **kw):
    return CampaignConfig(out=str(out), ops=["layer_norm"], modes=["forward"], dtypes=["float32"],
                          runners=runners, plugins=[FAULTY], timeout=5.0, **kw)


def per_runner_counts(store) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in store.counts():
        out[row["runner"]] = out.get(row["runner"], 0) + row["count"]
    return out


def test_counts_add_up_and_failures_are_findings(tmp_path):
    runners = ["faulty.none", "faulty.raise.often", "faulty.wrong_shape.often", "faulty.segfault.often"]
    # pack=1: an `.often` fault fires by the content hash of the case the worker gets, and a packed
    # case is another case (45 cases would be one packed call, firing or not as a whole)
    summary = Campaign(ln_config(tmp_path / "c", runners, max_cases=45, minimize=False, pack=1),
                       write_report=False).run()
    store = Store.open(tmp_path / "c", readonly=True)
    counts = per_runner_counts(store)
    assert summary["cases_run"] == 45
    assert counts == {r: 45 for r in runners}, counts  # every case counted once per runner
    cats = {(b["runner"], b["category"]) for b in store.buckets()}
    assert ("faulty.raise.often", "raised") in cats
    assert ("faulty.wrong_shape.often", "bad_output") in cats
    assert ("faulty.segfault.often", "crash") in cats
    n_findings = {r: 0 for r in runners}
    for f in store.findings():
        n_findings[f["runner"]] += 1
    for r in runners[1:]:  # about a third of the cases fire, each one a finding
        assert 5 <= n_findings[r] <= 30, n_findings


def test_new_buckets_get_a_minimal_reproducer(tmp_path):
    # pack=1: `.often` fires by the content hash of the case the worker gets (see above)
    Campaign(ln_config(tmp_path / "c", ["faulty.raise.often"], max_cases=30, pack=1), write_report=False).run()
    store = Store.open(tmp_path / "c", readonly=True)
    (b,) = store.buckets()
    case = store.case(b["min_case_id"])
    assert int(case.id, 16) % 3 == 0  # the minimal case still triggers the fault
    assert case.inputs["x"].size <= 3, case.summary()  # shrunk toward the smallest shape that fires


def test_a_spent_budget_ends_the_hypothesis_round_at_once(tmp_path, monkeypatch):
    """Once the budget is spent the test function ends Hypothesis's run: it is called once more,
    not for the rest of the round's examples, its target phase or a shrink (each call drew a spec
    for nothing, and a --jobs 2 campaign overran its 120 s budget by up to 65 s)."""
    calls = {"in_budget": 0, "after": 0}
    test = Campaign._test

    def counted(self, spec):
        calls["after" if self._out_of_budget() else "in_budget"] += 1
        return test(self, spec)

    monkeypatch.setattr(Campaign, "_test", counted)
    summary = Campaign(ln_config(tmp_path / "c", ["faulty.none"], max_cases=20, minimize=False, pack=4),
                       write_report=False).run()
    assert summary["cases_run"] == 20
    # (one call after: a spec drawn within the budget whose test finds it spent)
    assert calls["in_budget"] >= 5 and calls["after"] <= 1, calls


def test_a_spent_budget_ends_the_round_even_when_no_draw_reaches_the_test(tmp_path, monkeypatch):
    """After the budget, Hypothesis's target phase kept mutating the choices of its best examples;
    attempts that draw no valid spec never call the test, so the test alone cannot end the round.
    Here every draw after the budget is rejected: not one is attempted."""
    import fuzz.strategies
    from hypothesis import reject, strategies as hst

    attempts = {"after": 0}
    campaigns = []
    real = fuzz.strategies.case_specs

    def rejecting_after_budget(**kw):
        inner = real(**kw)

        @hst.composite
        def specs(draw):
            if campaigns[0]._out_of_budget():
                attempts["after"] += 1
                reject()
            return draw(inner)
        return specs()

    monkeypatch.setattr(fuzz.strategies, "case_specs", rejecting_after_budget)
    camp = Campaign(ln_config(tmp_path / "c", ["faulty.none"], max_cases=20, minimize=False, pack=4),
                    write_report=False)
    campaigns.append(camp)
    assert camp.run()["cases_run"] == 20
    assert attempts["after"] == 0


def test_no_finding_on_honest_implementations(tmp_path):
    """The calibration's honest implementations, as plug-in runners over every op, mode and dtype:
    not a single finding (the 10-minute version: benchmarks/no_false_positives.py)."""
    cfg = CampaignConfig(out=str(tmp_path / "h"), plugins=[HONEST], budget_seconds=40, minimize=False,
                         runners=["honest.naive", "honest.welford_newton", "honest.pairwise_recip_newton_folded",
                                  "honest.blocked16_welford_folded"])
    summary = Campaign(cfg, write_report=False).run()
    assert summary["cases_run"] > 500
    assert summary["findings"] == 0, summary["bucket_list"]


def test_same_seed_same_cases_and_buckets(tmp_path):
    def run(name):
        Campaign(ln_config(tmp_path / name, ["faulty.none", "faulty.raise.often"], max_cases=40, seed=7),
                 write_report=False).run()
        s = Store.open(tmp_path / name, readonly=True)
        return sorted(s.bucket_keys()), sorted((f["case_id"], f["runner"]) for f in s.findings()), \
            sorted((tuple(sorted(r.items()))) for r in s.counts())

    assert run("a") == run("b")


def _campaign_cmd(out, *extra):
    return [sys.executable, "-m", "fuzz", "campaign", "--out", str(out), "--runner", FAULTY,
            "--ops", "layer_norm", "--modes", "forward", "--dtypes", "float32,float64",
            "--runners", "faulty.none,faulty.raise.often,faulty.wrong_shape.often", "--quiet", "--no-report", *extra]


def _findings(db) -> set[tuple[str, str]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return set(con.execute("SELECT case_id, runner FROM findings").fetchall())
    finally:
        con.close()


def test_sigkill_and_resume_lose_nothing(tmp_path):
    out = tmp_path / "k"
    db = out / "findings.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seen: set = set()
    cmd = _campaign_cmd(out, "--cases", "400", "--seed", "3")
    for attempt in range(3):
        p = subprocess.Popen(cmd + (["--resume"] if attempt else []), cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:  # wait for new findings, then kill
            time.sleep(0.2)
            if db.exists() and len(_findings(db)) >= len(seen) + 5:
                break
        time.sleep(0.1 * attempt)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        now = _findings(db)
        assert seen <= now, "a finding committed before a kill disappeared"
        seen = now
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    keys = [r[0] for r in con.execute("SELECT key FROM buckets")]
    assert len(keys) == len(set(keys))
    dup = con.execute("SELECT case_id, runner, count(*) FROM findings GROUP BY case_id, runner HAVING count(*) > 1").fetchall()
    assert not dup
    con.close()
    final = _findings(db)
    assert seen <= final
    store = Store.open(out, readonly=True)
    assert store.campaign()["status"] == "finished"
    assert store.summary()["cases_run"] >= 400


@pytest.mark.parametrize("argv,words", [
    (["campaign", "--out", "X", "--cases", "5", "--ops", "batchnorm"], ["unknown op", "batch_norm", "layer_norm"]),
    (["campaign", "--out", "X", "--cases", "5", "--dtypes", "float8"], ["unknown dtype", "bfloat16"]),
    (["campaign", "--out", "X", "--budget", "ten minutes"], ["invalid budget", "30m"]),
    (["campaign", "--out", "X", "--cases", "0"], ["invalid count"]),
    (["campaign", "--out", "X"], ["give a budget"]),
    (["campaign", "--out", "X", "--cases", "5", "--runners", "nope"], ["unknown runner", "torch.functional"]),
    (["campaign", "--out", "X", "--cases", "5", "--regimes", "weird"], ["unknown regime", "well_conditioned"]),
])
def test_usage_errors_exit_2_listing_choices(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


def test_exit_codes_for_new_buckets(tmp_path, capsys):
    base = ["campaign", "--runner", FAULTY, "--ops", "layer_norm", "--modes", "forward", "--dtypes", "float32",
            "--cases", "20", "--quiet", "--no-report", "--pack", "1"]  # `.often`: see above
    assert main(base + ["--out", str(tmp_path / "ok"), "--runners", "faulty.none"]) == 0
    assert main(base + ["--out", str(tmp_path / "bad"), "--runners", "faulty.raise.often"]) == 1
    out = capsys.readouterr().out
    assert "[new]" in out and (tmp_path / "bad" / "summary.json").exists()
    # the same campaign again against the previous one as baseline: nothing new, the bucket recurs
    assert main(base + ["--out", str(tmp_path / "again"), "--runners", "faulty.raise.often",
                        "--baseline", str(tmp_path / "bad")]) == 0
    store = Store.open(tmp_path / "again", readonly=True)
    assert {b["status"] for b in store.buckets()} == {"recurring"}


def test_convention_explained_buckets_are_known_not_new(tmp_path):
    """A finding explained by a runner's declared convention (here torch's documented refusal of a
    one-element reduction set in training) is kept, but its bucket is 'known', so a nightly run does
    not fail on documented behaviour."""
    pytest.importorskip("torch")
    cfg = CampaignConfig(out=str(tmp_path / "c"), ops=["instance_norm"], modes=["forward"], dtypes=["float32"],
                         regimes=["size_one"], runners=["torch.functional"], max_cases=60, minimize=False)
    Campaign(cfg, write_report=False).run()
    store = Store.open(tmp_path / "c", readonly=True)
    conv = [b for b in store.buckets() if b["signature"].startswith("convention:")]
    assert conv, [b["key"] for b in store.buckets()]
    assert all(b["status"] == "known" for b in conv)


class _FirstRound(Campaign):
    """Notes which workers run, and which runners are unavailable, when the first round begins."""

    def _round(self, r):
        if not hasattr(self, "at_first_round"):
            self.at_first_round = (set(self.workers), dict(self.unavailable))
        super()._round(r)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_campaign_starts_every_worker_it_can_use_before_its_first_case(tmp_path, jobs):
    """The workers of the runners whose declared ops and dtypes meet the selection start before
    the first case (memory is then flat from the first minute: no worker adds its baseline later);
    a runner whose setup fails is unavailable from the start; a runner that declares no ops starts
    when its first case comes; runners that cannot run the selection never start."""
    names = ["startup.ln", "startup.bn_only", "startup.f64_only", "startup.broken", "startup.undeclared"]
    cfg = CampaignConfig(out=str(tmp_path / "c"), ops=["layer_norm"], modes=["forward"], dtypes=["float32"],
                         runners=names, plugins=["tests.fuzz.startup_runners:runners"], max_cases=128,
                         minimize=False, timeout=20.0)
    if jobs == 1:
        camp = _FirstRound(cfg, write_report=False)
        camp.run()
        started, unavailable = camp.at_first_round
        assert started == {"startup.ln"}
        assert "setup raised builtins.RuntimeError: no device" in unavailable["startup.broken"]
        assert set(camp.workers) == {"startup.ln", "startup.undeclared"}
        assert camp.state.startup_seconds > 0
    else:  # each job process starts its workers (checked through what the campaign records)
        cfg.jobs = 2
        Campaign(cfg, write_report=False).run()
    with Store.open(tmp_path / "c", readonly=True) as s:
        c = s.campaign()
        assert set(c["frameworks"]) == {"startup.ln", "startup.undeclared"}
        assert "no device" in c["extra"]["unavailable"]["startup.broken"]  # (a job's too)
        assert c["cases_run"] == 128
