"""Report pages built from hand-made stores: escaping of framework text, recomputed error ratios,
statuses against a compared campaign, and the `normfuzz report` command (no browser needed)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import oracles
from fuzz.case import Case
from fuzz.cli import main
from fuzz.outcome import Outcome
from fuzz.runners import discover
from fuzz.store import Store, bucket_id
from fuzz.triage import judge
from reports import render_report, write_report
from reports.assets import APP, ERROR_CAPTURE, csp_hash
from reports.build import collect

from .browser import Dom

FAULTY = "tests.fuzz.faulty_runners:runners"
EVIL = "faulty kernel: <script>alert(1)</script> & friends"
EVIL_VERSION = "<img src=x onerror=alert(2)>1.0"


def _case(seed: int, shape=(3, 5)) -> Case:
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return Case("layer_norm", "forward", "float32", {"x": x}, {"eps": 1e-5, "normalized_ndim": 1})


def _precision_finding(store: Store, runner_id: str, seed: int, factor: float):
    """A finding of `runner_id` whose y is the oracle's reference moved by `factor` bounds at [0, 1]."""
    runner = discover([FAULTY])["faulty.none"][1]
    conv = runner.conventions_for("layer_norm", {})
    case = _case(seed)
    ev = oracles.evaluate(case.op, case.mode, dict(case.inputs), dict(case.attrs), conv.precision("float32"))
    outs = {k: np.asarray(v, dtype=np.float64).astype(np.float32 if k == "y" else np.float64)
            for k, v in ev.outputs.items()}
    y = outs["y"].astype(np.float64)
    y[0, 1] += factor * float(ev.bounds["y"][0, 1])
    outs["y"] = y.astype(np.float32)
    outcome = Outcome(runner_id, case.id, "OK", outputs=outs)
    verdict, finding = judge(case, outcome, conv, regime="well_conditioned")
    assert finding is not None, verdict
    key = store.record_finding(case, outcome, finding, verdict).bucket_key
    store.set_minimal(key, case, outputs=outs)
    return key, verdict.max_ratio


def _raised_finding(store: Store, runner_id: str, seed: int, *, known_issue: str | None = None) -> str:
    case = _case(seed, (2, 3))
    outcome = Outcome(runner_id, case.id, "RAISED", error_type="evil.Error", error=EVIL)
    key = store.record_finding(case, outcome, category="raised", signature="<b>sig</b>",
                               explanation=f"raised evil.Error where the oracle defines a result: {EVIL}",
                               known_issue=known_issue, regime="size_one").bucket_key
    store.set_minimal(key, case)
    return key


@pytest.fixture
def evil_run(tmp_path):
    run = tmp_path / "run"
    with Store.create(run, {"config": {"ops": ["layer_norm"], "plugins": [FAULTY], "note": "<i>cfg</i>"}, "seed": 5,
                            "frameworks": {"faulty.none": EVIL_VERSION, "evil.runner": EVIL_VERSION}}) as s:
        key, ratio = _precision_finding(s, "faulty.none", 0, 7.0)
        rkey = _raised_finding(s, "evil.runner", 1, known_issue="javascript:alert(3)")
        s.add_counts({("layer_norm", "forward", "faulty.none", "float32", "well_conditioned", "precision"): 1,
                      ("layer_norm", "forward", "faulty.none", "float32", "well_conditioned", "agree"): 9,
                      ("layer_norm", "forward", "evil.runner", "float32", "size_one", "raised"): 1})
        s.add_unsupported({("evil.runner", "layer_norm", "vjp", "float16", "<u>no</u> vjp & no f16"): 4})
        s.finish(cases_run=11)
    return run, key, rkey, ratio


def test_framework_text_is_escaped_everywhere(evil_run):
    run, key, rkey, _ = evil_run
    page = render_report(run)
    dom = Dom(page)
    tags = {e["tag"] for e in dom.elements}
    assert not tags & {"img", "i", "u", "iframe", "object", "embed", "link"}, tags
    assert [e["tag"] for e in dom.elements if e["tag"] == "script"] == ["script", "script"]
    assert not any(a.startswith("on") for e in dom.elements for a in e["attrs"])
    assert not any(e["attrs"].get("href", "").lower().startswith("javascript") for e in dom.elements)
    assert not any("src" in e["attrs"] for e in dom.elements)  # nothing is fetched: self-contained
    body = Dom.text(dom.find("body")[0])
    for text in (EVIL, EVIL_VERSION, "<u>no</u> vjp & no f16", "<b>sig</b>", "javascript:alert(3)", "<i>cfg</i>"):
        assert text in body, text
    # escaped in the source too, never raw
    assert "<script>alert(1)" not in page and "<img" not in page


def test_content_security_policy_allows_exactly_the_pages_scripts(evil_run):
    page = render_report(evil_run[0])
    (meta,) = [e for e in Dom(page).find("meta") if e["attrs"].get("http-equiv") == "Content-Security-Policy"]
    csp = meta["attrs"]["content"]
    assert "default-src 'none'" in csp
    hashes = re.findall(r"'sha256-[^']+'", csp)
    assert sorted(hashes) == sorted([csp_hash(ERROR_CAPTURE), csp_hash(APP)])
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert sorted(csp_hash(s) for s in scripts) == sorted(hashes)


def test_minimal_case_is_judged_again_from_the_stored_outputs(evil_run):
    run, key, rkey, ratio = evil_run
    data = collect(run)
    b = next(b for b in data.buckets if b.key == key)
    assert b.minimal.recomputed_ratio == pytest.approx(ratio, rel=1e-12)
    assert 6.0 < ratio < 8.0  # the element moved by 7 bounds (y rounded to float32)
    (y,) = [v for v in b.minimal.outputs if v.name == "y"]
    worst = y.worst(1)[0]
    assert worst["index"] == [0, 1] and worst["ratio"] == pytest.approx(ratio)
    assert int((y.ratio > 1).sum()) == 1
    page = render_report(run)
    section = page[page.index(f'id="b-{bucket_id(key)}"'):]
    section = section[:section.index("</section>")]
    assert 'class="fig fig-heat"' in section and 'class="fig fig-scatter"' in section
    assert 'class="fig fig-hist"' in section
    assert "the campaign stored" not in section  # recomputed = stored
    assert f"normfuzz repro {run}/{bucket_id(key)} --runner {FAULTY}" in section
    # a runner that cannot be loaded here is said so; its raised finding has no figures but a message
    r = next(b for b in data.buckets if b.key == rkey)
    assert r.script is None and "not loadable" in r.script_note
    assert data.runner_info["evil.runner"]["loadable"] is False


def test_statuses_against_a_compared_campaign(tmp_path):
    prev, run = tmp_path / "prev", tmp_path / "run"
    with Store.create(prev, {"config": {"plugins": [FAULTY]}}) as s:
        k_both, _ = _precision_finding(s, "faulty.none", 0, 5.0)
        k_gone = _raised_finding(s, "faulty.none", 1)
    with Store.create(run, {"config": {"plugins": [FAULTY]}}) as s:
        assert _precision_finding(s, "faulty.none", 0, 5.0)[0] == k_both
        k_new = _raised_finding(s, "faulty.gone", 2)
        k_known = _raised_finding(s, "faulty.other", 3, known_issue="https://example.org/issue/1")
    data = collect(run, compare=prev)
    status = {b.key: b.status for b in data.buckets}
    assert status == {k_both: "recurring", k_new: "new", k_known: "known"}
    assert [b["key"] for b in data.fixed_elsewhere] == [k_gone]
    assert data.status_counts == {"new": 1, "known": 1, "recurring": 1, "fixed": 1}
    dom = Dom(render_report(run, compare=prev))
    rows = dom.find("tr", data_status="recurring")
    assert len(rows) == 1 and rows[0]["attrs"]["data-target"] == f"b-{bucket_id(k_both)}"
    assert any(a["attrs"].get("href") == "https://example.org/issue/1" for a in dom.find("a"))
    # without --compare the store's own statuses are shown
    assert {b.status for b in collect(run).buckets} == {"new", "known"}


def test_report_command(tmp_path, evil_run, capsys):
    run = evil_run[0]
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    out = tmp_path / "deep" / "r.html"
    assert main(["report", str(run), "--compare", str(run), "--out", str(out)]) == 0 and out.is_file()
    assert main(["report", str(tmp_path / "nothing")]) == 1
    assert "no findings database" in capsys.readouterr().err
    assert main(["report", str(run), "--compare", str(tmp_path / "nothing")]) == 1
    (tmp_path / "file").write_text("x")
    assert main(["report", str(run), "--out", str(tmp_path / "file" / "r.html")]) == 4


def test_empty_campaign_renders(tmp_path):
    with Store.create(tmp_path / "e", {"config": {}}) as s:
        s.finish(cases_run=0)
    out = write_report(tmp_path / "e", tmp_path / "e.html")
    text = out.read_text(encoding="utf-8")
    assert "No finding: every judged run agreed with the oracle." in text
    assert not list(tmp_path.glob(".e.html.*.tmp"))
