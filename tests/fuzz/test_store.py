"""Tests for fuzz.store: the findings database (schema, dedup, idempotency, refusals, failures, kills)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz.case import Case
from fuzz.outcome import Outcome
from fuzz.store import (
    APPLICATION_ID, DB_NAME, SUMMARY_NAME, VERSION, Store, StoreError, bucket_key, database_path,
    parse_bucket_key,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
CAMPAIGN = {
    "config": {"ops": ["layer_norm"], "runners": ["torch.functional", "tf.keras"], "dtypes": ["float32"],
               "regimes": ["typical"], "budget": {"cases": 1000}},
    "seed": 1234,
    "frameworks": {"torch.functional": "2.5.1", "tf.keras": "2.18.0"},
}
TORCH, TF = "torch.functional", "tf.keras"


def make_case(i: int = 0, *, dtype: str = "float32", shape=(2, 3)) -> Case:
    """The brief's layer_norm case (i=0), shifted by i so that each i gives a different id."""
    carrier = np.float64 if dtype == "float64" else np.float32
    x = np.ones(shape, carrier) + carrier(i)
    return Case(op="layer_norm", mode="forward", dtype=dtype, inputs={"x": x},
                attrs={"eps": 1e-5, "normalized_ndim": 1})


def outcome(case: Case, runner: str = TORCH, **kw) -> Outcome:
    return Outcome(runner=runner, case_id=case.id, status=kw.pop("status", "OK"), **kw)


def digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def raw(db: pathlib.Path) -> sqlite3.Connection:
    """A plain read-only SQLite connection, to check what is on disk independently of Store."""
    return sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)


@pytest.fixture
def store(tmp_path):
    with Store.create(tmp_path / "campaign", CAMPAIGN) as s:
        yield s


# --------------------------------------------------------------------------------------------------
# Creating and opening


def test_create_open_round_trip_and_campaign_fields(tmp_path):
    folder = tmp_path / "runs" / "c1"  # created, parents included
    s = Store.create(folder, CAMPAIGN)
    db = folder / DB_NAME
    assert s.path == db and db.is_file()
    c = s.campaign()
    assert c["config"] == CAMPAIGN["config"] and c["seed"] == 1234 and c["frameworks"] == CAMPAIGN["frameworks"]
    assert c["status"] == "running" and c["finished_at"] is None and c["resumes"] == 0 and c["extra"] == {}
    assert {"python", "os", "machine", "numpy", "normfuzz", "sqlite"} <= set(c["platform"])
    assert c["platform"]["numpy"] == np.__version__
    assert c["started_at"].endswith("Z") and c["id"]
    s.close()

    # The header says what the file is, before SQLite is asked.
    header = db.read_bytes()[:100]
    assert int.from_bytes(header[68:72], "big") == APPLICATION_ID
    assert int.from_bytes(header[60:64], "big") == VERSION
    with contextlib.closing(raw(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta["schema"] == "normfuzz.findings" and meta["version"] == "1"

    with Store.open(folder, readonly=True) as r:
        c2 = r.campaign()
        # Stored as running, but no process runs it any more.
        assert c2["status"] == "interrupted"
        assert {k: v for k, v in c2.items() if k != "status"} == {k: v for k, v in c.items() if k != "status"}
        with pytest.raises(StoreError, match="read-only"):
            r.record_finding(make_case(), outcome(make_case()), category="accuracy", signature="s")

    with Store.open(db) as w:  # the file path works as well as the folder
        assert w.resume() is None  # never checkpointed
        assert w.campaign()["status"] == "running" and w.campaign()["resumes"] == 1
        w.set_versions({"tf.keras": "2.18.1", "ort": "1.20"})  # versions become known as workers start
        w.finish("finished", {"warnings": ["stale known issue"]}, cases_run=7)
        c3 = w.campaign()
    assert c3["status"] == "finished" and c3["finished_at"] >= c3["started_at"] and c3["cases_run"] == 7
    assert c3["frameworks"] == {"torch.functional": "2.5.1", "tf.keras": "2.18.1", "ort": "1.20"}
    assert c3["extra"] == {"warnings": ["stale known issue"]}

    with pytest.raises(StoreError, match="already exists"):
        Store.create(folder, CAMPAIGN)
    # A path with a database suffix names the file itself.
    assert database_path(tmp_path / "x.sqlite") == tmp_path / "x.sqlite"
    with Store.create(tmp_path / "x.sqlite", {"config": {}, "id": "given-id", "runners": ["a", "b"]}) as s2:
        assert s2.campaign()["id"] == "given-id" and s2.campaign()["seed"] is None
        assert s2.campaign()["extra"] == {"runners": ["a", "b"]}  # other keys are kept, not lost
        s2.finish("interrupted", {"runners": ["a"], "unavailable": {"b": "not installed"}})
        assert s2.campaign()["extra"] == {"runners": ["a"], "unavailable": {"b": "not installed"}}


def test_create_validates_campaign_before_touching_disk(tmp_path):
    with pytest.raises(ValueError, match="expected 'config'"):
        Store.create(tmp_path / "a", {"seed": 1})
    with pytest.raises(TypeError, match="seed"):
        Store.create(tmp_path / "a", {"config": {}, "seed": 1.5})
    with pytest.raises(ValueError, match="JSON"):
        Store.create(tmp_path / "a", {"config": {"bad": object()}})
    assert not (tmp_path / "a").exists()


def test_second_writer_is_refused_with_the_holder(tmp_path):
    with Store.create(tmp_path, CAMPAIGN):
        with pytest.raises(StoreError, match=rf"being written by this process \(pid {os.getpid()}"):
            Store.open(tmp_path)
        with Store.open(tmp_path, readonly=True) as r:  # readers are welcome
            assert r.campaign()["status"] == "running"  # the writer is alive
    with Store.open(tmp_path):  # the lock went with the writer
        pass


# --------------------------------------------------------------------------------------------------
# Bucket keys


def test_bucket_key_is_readable_and_escapes_separators():
    key = bucket_key("layer_norm", "forward", "torch.functional", "accuracy", "eps_outside_sqrt", "float32")
    assert key == "layer_norm|forward|torch.functional|accuracy|eps_outside_sqrt|float32"
    odd = bucket_key("a/b", "c|d", "e%f", "g h", "ratio>1e3|nan", "float16")
    assert odd == "a/b|c%7Cd|e%25f|g h|ratio>1e3%7Cnan|float16"
    assert parse_bucket_key(odd) == {"op": "a/b", "mode": "c|d", "runner": "e%f", "category": "g h",
                                     "signature": "ratio>1e3|nan", "dtype": "float16"}
    with pytest.raises(ValueError, match="non-empty"):
        bucket_key("layer_norm", "forward", "torch", "accuracy", "", "float32")
    with pytest.raises(ValueError, match="not a bucket key"):
        parse_bucket_key("layer_norm|forward")
    with pytest.raises(ValueError, match="not a canonical"):
        parse_bucket_key("a|b|c|d%41|e|f")


field_text = st.text(alphabet="ab/|%: é", min_size=1, max_size=5)


@settings(derandomize=True, max_examples=300)
@given(st.tuples(*[field_text] * 6), st.tuples(*[field_text] * 6))
def test_bucket_key_is_injective(a, b):
    ka, kb = bucket_key(*a), bucket_key(*b)
    assert (ka == kb) == (a == b)
    assert parse_bucket_key(ka) == dict(zip(("op", "mode", "runner", "category", "signature", "dtype"), a))


# --------------------------------------------------------------------------------------------------
# Findings and buckets


def test_findings_deduplicate_by_structured_fields_only(store):
    c0, c1, c2 = make_case(0), make_case(1), make_case(2)
    r0 = store.record_finding(c0, outcome(c0, status="RAISED", error_type="RuntimeError", error="first message"),
                              category="accuracy", signature="eps_outside_sqrt", explanation="ratio 40 at [0, 1]",
                              max_ratio=40.0, details={"worst": [0, 1]}, worst_output="y", worst_index=[0, 1],
                              nan_mismatches=0, regime="typical")
    # Same six fields, different message, explanation, details, ratio: same bucket.
    r1 = store.record_finding(c1, outcome(c1, status="RAISED", error_type="ValueError", error="another text 0x7f3a"),
                              category="accuracy", signature="eps_outside_sqrt", explanation="completely different",
                              max_ratio=2.5, details={"other": True})
    # A different signature, and a different dtype: other buckets.
    r2 = store.record_finding(c2, outcome(c2), category="accuracy", signature="stale_running_stats")
    c64 = make_case(0, dtype="float64")
    r3 = store.record_finding(c64, outcome(c64), category="accuracy", signature="eps_outside_sqrt")

    expected_key = "layer_norm|forward|torch.functional|accuracy|eps_outside_sqrt|float32"
    assert (r0.bucket_key, r0.is_new_bucket) == (expected_key, True)
    assert (r1.bucket_key, r1.is_new_bucket) == (expected_key, False)
    assert r2.is_new_bucket and r3.is_new_bucket and len({r0.bucket_key, r2.bucket_key, r3.bucket_key}) == 3
    assert len({r0.finding_id, r1.finding_id, r2.finding_id, r3.finding_id}) == 4

    b = store.bucket(expected_key)
    assert b["count"] == 2 and b["status"] == "new" and b["first_seen"] <= b["last_seen"]
    fields = ("op", "mode", "runner", "dtype", "category", "signature")
    assert {k: b[k] for k in fields} == parse_bucket_key(expected_key)
    assert [f["id"] for f in store.findings(expected_key)] == [r0.finding_id, r1.finding_id]
    assert [b["count"] for b in store.buckets()] == [2, 1, 1]  # most findings first
    assert store.bucket("no|such|key|x|y|z") is None

    f0 = store.findings(limit=1)[0]
    assert f0["details"] == {"worst": [0, 1]} and f0["max_ratio"] == 40.0 and f0["regime"] == "typical"
    assert f0["explanation"] == "ratio 40 at [0, 1]" and f0["campaign_id"] == store.campaign()["id"]
    (o0,) = store.outcomes(c0.id)
    assert (o0["status"], o0["error_type"], o0["error"]) == ("RAISED", "RuntimeError", "first message")
    assert o0["worst_index"] == [0, 1] and o0["worst_output"] == "y" and o0["nan_mismatches"] == 0

    # The stored case is the case, bit for bit.
    back = store.case(c0.id)
    assert back == c0 and back.inputs["x"].tobytes() == c0.inputs["x"].tobytes()
    with pytest.raises(KeyError, match="not stored"):
        store.case(make_case(99).id)


def test_rerecording_a_finding_is_idempotent(store):
    c = make_case()
    first = store.record_finding(c, outcome(c), category="accuracy", signature="s", explanation="one")
    again = store.record_finding(c, outcome(c, error="rerun after a kill"), category="accuracy", signature="s",
                                 explanation="two")
    assert again == (first.finding_id, first.bucket_key, False)
    # Even a different triage of the same (case, runner) does not add a finding or an empty bucket.
    other = store.record_finding(c, outcome(c), category="nan_pattern", signature="t")
    assert other == (first.finding_id, first.bucket_key, False)
    assert len(store.findings()) == 1 and [b["count"] for b in store.buckets()] == [1]
    assert store.findings()[0]["explanation"] == "one"
    # Another runner on the same case is another finding in its own bucket.
    tf = store.record_finding(c, outcome(c, runner=TF), category="accuracy", signature="s")
    assert tf.finding_id != first.finding_id and tf.is_new_bucket
    assert {o["runner"] for o in store.outcomes(c.id)} == {TORCH, TF}


def test_record_finding_rejects_mismatched_records(store):
    c = make_case()
    with pytest.raises(ValueError, match="case_id"):
        store.record_finding(c, outcome(make_case(1)), category="accuracy", signature="s")
    with pytest.raises(ValueError, match="JSON"):
        store.record_finding(c, outcome(c), category="accuracy", signature="s", details={"x": object()})
    assert store.findings() == [] and store.buckets() == []


def test_record_findings_stores_a_list_in_one_transaction_as_single_calls_would(store, tmp_path):
    """A family's findings in one call: the same rows, ids in order and new-bucket flags as one call
    per finding (a repeated (case, runner) written once), in one write transaction; an invalid item
    stores none of them."""
    cases = [make_case(i) for i in range(4)]
    items = [(c, outcome(c), None, None, {"category": "accuracy", "signature": "s" if i % 2 else "t"})
             for i, c in enumerate(cases)]
    items.append(items[0])  # the same (case, runner) again
    with Store.create(tmp_path / "one", CAMPAIGN) as single:
        want = [single.record_finding(c, o, f, v, **kw) for c, o, f, v, kw in items]
        want_rows = [(f["case_id"], f["signature"], f["bucket_key"]) for f in single.findings()]
    begins = []
    store._conn.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None)
    got = store.record_findings(items)
    store._conn.set_trace_callback(None)
    assert len(begins) == 1
    assert [(r.bucket_key, r.is_new_bucket) for r in got] == [(r.bucket_key, r.is_new_bucket) for r in want]
    assert [r.finding_id for r in got] == [r.finding_id for r in want]
    assert [(f["case_id"], f["signature"], f["bucket_key"]) for f in store.findings()] == want_rows
    assert {b["key"]: b["count"] for b in store.buckets()} == {want[0].bucket_key: 2, want[1].bucket_key: 2}
    c = make_case(9)
    bad = [(c, outcome(c), None, None, {"category": "accuracy", "signature": "u"}),
           (c, outcome(make_case(8)), None, None, {"category": "accuracy", "signature": "u"})]
    with pytest.raises(ValueError, match="case_id"):
        store.record_findings(bad)
    assert len(store.findings()) == 4 and store.record_findings([]) == []


from fuzz.triage import Finding as FindingRecord  # noqa: E402 - the record the campaign passes


@dataclasses.dataclass(frozen=True)
class CheckRecord:
    """Stands for fuzz.compare.OutputCheck."""

    name: str
    worst_index: tuple
    pattern_mismatches: int


@dataclasses.dataclass(frozen=True)
class VerdictRecord:
    """Stands for fuzz.compare.Verdict."""

    runner: str
    case_id: str
    worst_output: str
    max_ratio: float
    checks: tuple

    def to_dict(self):
        return {"runner": self.runner, "worst_output": self.worst_output, "max_ratio": self.max_ratio,
                "checks": [dataclasses.asdict(c) for c in self.checks]}


def test_record_finding_from_finding_and_verdict_objects(store):
    c = make_case()
    finding = FindingRecord(TORCH, c.id, "layer_norm", "forward", "float32", "typical", "accuracy",
                            "eps_outside_sqrt", "ratio 40 at y[0, 1]", 40.0, {"eps": 1e-5})
    verdict = VerdictRecord(TORCH, c.id, "y", 40.0, (CheckRecord("mean", (0,), 0), CheckRecord("y", (0, 1), 2)))
    r = store.record_finding(c, outcome(c), finding, verdict)
    assert r.bucket_key == "layer_norm|forward|torch.functional|accuracy|eps_outside_sqrt|float32"
    (f,) = store.findings()
    assert (f["category"], f["signature"], f["explanation"], f["max_ratio"], f["regime"], f["details"]) == (
        "accuracy", "eps_outside_sqrt", "ratio 40 at y[0, 1]", 40.0, "typical", {"eps": 1e-5})
    (o,) = store.outcomes(c.id)
    assert (o["worst_output"], o["worst_index"], o["nan_mismatches"], o["max_ratio"]) == ("y", [0, 1], 2, 40.0)
    assert o["verdict"] == json.loads(json.dumps(verdict.to_dict()))
    # Keywords win over the objects; objects that disagree with the case or outcome are refused.
    c1 = make_case(1)
    store.record_finding(c1, outcome(c1), dataclasses.replace(finding, case_id=c1.id), signature="other")
    assert store.findings()[-1]["signature"] == "other"
    c2 = make_case(2)
    with pytest.raises(ValueError, match="finding.runner='tf.keras' does not match"):
        store.record_finding(c2, outcome(c2), dataclasses.replace(finding, case_id=c2.id, runner=TF))
    with pytest.raises(ValueError, match="verdict.case_id"):
        store.record_finding(c2, outcome(c2), dataclasses.replace(finding, case_id=c2.id), verdict)
    with pytest.raises(ValueError, match="needs a category and a signature"):
        store.record_finding(c2, outcome(c2), category="accuracy")
    # The minimal case defaults to its own finding's ratio and explanation.
    store.set_minimal(r.bucket_key, c)
    b = store.bucket(r.bucket_key)
    assert (b["min_case_id"], b["min_ratio"], b["min_explanation"]) == (c.id, 40.0, "ratio 40 at y[0, 1]")


def test_minimal_reproducer(store):
    big = make_case(3, shape=(4, 7))
    key = store.record_finding(big, outcome(big), category="accuracy", signature="s", max_ratio=1e4).bucket_key
    small = make_case(5, shape=(1, 2))
    store.set_minimal(key, small, ratio=float("inf"), explanation="1 x 2 input is enough")
    b = store.bucket(key)
    assert b["min_case_id"] == small.id and b["min_ratio"] == math.inf
    assert b["min_explanation"] == "1 x 2 input is enough" and b["min_summary"] == small.summary()
    assert store.case(small.id) == small
    with pytest.raises(ValueError, match="float64"):
        store.set_minimal(key, make_case(dtype="float64"))
    with pytest.raises(StoreError, match="no bucket"):
        store.set_minimal(bucket_key("layer_norm", "forward", TF, "accuracy", "s", "float32"), small)


def test_bucket_status_and_known_issue(store):
    c0, c1 = make_case(0), make_case(1)
    key = store.record_finding(c0, outcome(c0), category="accuracy", signature="s").bucket_key
    store.set_bucket_status(key, "known", known_issue="https://github.com/pytorch/pytorch/issues/1")
    assert store.bucket(key)["status"] == "known"
    store.record_finding(c1, outcome(c1), category="accuracy", signature="s")
    b = store.bucket(key)
    assert (b["status"], b["known_issue"], b["count"]) == ("known", "https://github.com/pytorch/pytorch/issues/1", 2)
    r = store.record_finding(c0, outcome(c0, runner=TF), category="accuracy", signature="s", known_issue="doc link")
    assert store.bucket(r.bucket_key)["status"] == "known"
    with pytest.raises(ValueError, match="status"):
        store.set_bucket_status(key, "wontfix")


# --------------------------------------------------------------------------------------------------
# Counters and checkpoints


def test_counts_are_batched_into_the_checkpoint_transaction(store):
    combo = ("layer_norm", "forward", TORCH, "float32", "typical", "pass")
    statements = []
    store._conn.set_trace_callback(statements.append)
    for _ in range(1000):
        store.add_counts([(combo, 1)])
    store.add_counts(collections.Counter({combo: 5, (*combo[:4], None, "RAISED"): 2}))
    store.add_counts([({"op": "layer_norm", "mode": "forward", "runner": TF, "dtype": "float32",
                        "regime": "typical", "result": "pass"}, 3)])
    store.add_unsupported([((TF, "layer_norm", "forward", "float32", "no float16 kernel"), 1)])
    store.add_unsupported({(TF, "layer_norm", "forward", "float32", "no float16 kernel"): 4})
    assert statements == [] and store.counts() == []  # nothing written yet
    with pytest.raises(ValueError, match="result"):  # a bad item: the whole call adds nothing
        store.add_counts([(combo, 1), ((*combo[:5], ""), 1)])
    store.checkpoint({"round": 1, "next_case": 1008}, cases_run=1008)
    assert sum(s.startswith("BEGIN") for s in statements) == 1 and sum(s == "COMMIT" for s in statements) == 1
    store._conn.set_trace_callback(None)

    assert store.counts() == [
        {"op": "layer_norm", "mode": "forward", "runner": TF, "dtype": "float32", "regime": "typical",
         "result": "pass", "count": 3},
        {"op": "layer_norm", "mode": "forward", "runner": TORCH, "dtype": "float32", "regime": "",
         "result": "RAISED", "count": 2},
        {"op": "layer_norm", "mode": "forward", "runner": TORCH, "dtype": "float32", "regime": "typical",
         "result": "pass", "count": 1005},
    ]
    assert store.unsupported() == [{"runner": TF, "op": "layer_norm", "mode": "forward", "dtype": "float32",
                                    "reason": "no float16 kernel", "count": 5}]
    assert store.progress() == {"round": 1, "next_case": 1008}
    assert store.campaign()["cases_run"] == 1008 and store.campaign()["seconds"] > 0
    store.add_counts([(combo, 10)])
    store.checkpoint({"round": 2})  # adds to the stored counts; replaces the progress row
    assert store.counts()[-1]["count"] == 1015 and store.progress() == {"round": 2}


def test_counts_not_covered_by_a_checkpoint_are_not_written_when_unwinding(tmp_path):
    combo = ("layer_norm", "forward", TORCH, "float32", "typical", "pass")
    with pytest.raises(KeyboardInterrupt):
        with Store.create(tmp_path, CAMPAIGN) as s:
            s.add_counts([(combo, 4)])
            s.checkpoint({"next": 4}, cases_run=4)
            s.add_counts([(combo, 3)])  # cases after the checkpoint: a resume runs them again
            raise KeyboardInterrupt
    with Store.open(tmp_path) as s:
        assert s.resume() == {"next": 4} and s.counts()[0]["count"] == 4
        s.add_counts([(combo, 3)])
    with Store.open(tmp_path, readonly=True) as r:  # a plain close writes pending counters
        assert r.counts()[0]["count"] == 7


# --------------------------------------------------------------------------------------------------
# Summary and baseline


def strict_json(path: pathlib.Path):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_summary_and_summary_json(tmp_path):
    with Store.create(tmp_path, CAMPAIGN) as s:
        for i in range(3):
            c = make_case(i)
            s.record_finding(c, outcome(c), category="accuracy" if i < 2 else "crash", signature=f"s{i // 2}",
                             max_ratio=float("inf") if i == 0 else 3.0)
        accuracy, crash = (b["key"] for b in s.buckets())
        s.set_minimal(accuracy, make_case(9), ratio=float("nan"), explanation="nan ratio")
        s.set_minimal(crash, make_case(8), ratio=float("inf"), explanation="inf ratio")
        s.add_counts([(("layer_norm", "forward", TORCH, "float32", "typical", "pass"), 40),
                      (("layer_norm", "forward", TORCH, "float32", "typical", "accuracy"), 2)])
        s.add_unsupported([((TF, "layer_norm", "forward", "float32", "no such path"), 6)])
        s.checkpoint({"next": 42}, cases_run=42)
        s.finish("finished")
        summary = s.summary()
        count = s.finding_count()
        path = s.export_summary_json()
    assert count == summary["findings"] == 3  # (the count a --jobs parent polls)
    assert summary["cases_run"] == 42 and summary["status"] == "finished"
    assert summary["cases_per_second"] == pytest.approx(42 / summary["seconds"])
    assert summary["results"] == {"accuracy": 2, "pass": 40}
    assert summary["findings"] == 3 and summary["findings_by_category"] == {"accuracy": 2, "crash": 1}
    assert summary["buckets"] == 2
    assert summary["buckets_by_status"] == {"new": 2, "known": 0, "recurring": 0, "fixed": 0}
    assert summary["unsupported"] == 6

    assert path == tmp_path / SUMMARY_NAME
    doc = strict_json(path)
    assert doc["schema"] == "normfuzz.summary" and doc["database"] == DB_NAME
    assert doc["campaign"]["config"] == CAMPAIGN["config"] and doc["campaign"]["status"] == "finished"
    assert doc["totals"] == json.loads(json.dumps(summary))
    assert [b["key"] for b in doc["buckets"]] == [b["key"] for b in Store.open(tmp_path, readonly=True).buckets()]
    first, second = doc["buckets"]
    assert set(first) >= {"key", "op", "mode", "runner", "dtype", "category", "signature", "status", "count",
                          "min_case_id"}
    assert (first["count"], first["min_case_id"], first["min_ratio"]) == (2, make_case(9).id, None)  # NaN: NULL
    assert (second["count"], second["min_case_id"], second["min_ratio"]) == (1, make_case(8).id, "inf")


def test_baseline_buckets_fixed_then_recurring(tmp_path):
    with Store.create(tmp_path / "old", CAMPAIGN) as old:
        c = make_case(0)
        key = old.record_finding(c, outcome(c), category="accuracy", signature="gone").bucket_key
        old.set_minimal(key, make_case(50), 9.0, "minimal")
        old.set_bucket_status(key, "known", known_issue="issue 12")
        (gone,) = old.buckets()
        minimal = old.case(gone["min_case_id"])
    with Store.create(tmp_path / "new", CAMPAIGN) as new:
        with pytest.raises(ValueError, match="not the bucket's minimal case"):
            new.add_baseline_bucket(gone, "fixed", case=make_case(1))
        assert new.add_baseline_bucket(gone, "fixed", case=minimal) is True
        assert new.add_baseline_bucket(gone, "fixed") is False  # already here: unchanged
        b = new.bucket(key)
        assert (b["status"], b["count"], b["known_issue"], b["first_seen"]) == ("fixed", 0, "issue 12",
                                                                               gone["first_seen"])
        assert (b["min_case_id"], b["min_ratio"], b["min_explanation"]) == (make_case(50).id, 9.0, "minimal")
        assert new.case(make_case(50).id) == make_case(50)  # the old reproducer travels with the bucket
        assert new.summary()["buckets_by_status"] == {"new": 0, "known": 0, "recurring": 0, "fixed": 1}
        # Seen again after all: the fixed bucket is known again (it has a known issue) ...
        c = make_case(20)
        new.record_finding(c, outcome(c), category="accuracy", signature="gone")
        assert (new.bucket(key)["status"], new.bucket(key)["count"]) == ("known", 1)
        # ... and a fixed bucket without one recurs.
        other = dict(gone, signature="other", key=bucket_key("layer_norm", "forward", TORCH, "accuracy", "other",
                                                               "float32"), known_issue=None, min_case_id=None)
        assert new.add_baseline_bucket(other) is True and new.bucket(other["key"])["min_case_id"] is None
        c = make_case(21)
        new.record_finding(c, outcome(c), category="accuracy", signature="other")
        assert new.bucket(other["key"])["status"] == "recurring"
        assert new.bucket_keys() == sorted([key, other["key"]])
        with pytest.raises(ValueError, match="does not match its fields"):
            new.add_baseline_bucket(dict(gone, signature="changed"))


# --------------------------------------------------------------------------------------------------
# Refusals: the file is left exactly as it was


def assert_refused(db: pathlib.Path, match: str) -> None:
    before = digest(db)
    listing = sorted(os.listdir(db.parent))
    for readonly in (False, True):
        with pytest.raises(StoreError, match=match) as info:
            Store.open(db.parent if db.name == DB_NAME else db, readonly=readonly)
        assert str(db) in str(info.value)
    assert digest(db) == before and sorted(os.listdir(db.parent)) == listing


def test_refuses_a_file_that_is_not_sqlite(tmp_path):
    db = tmp_path / DB_NAME
    db.write_text("campaign notes, not a database\n" * 10)
    assert_refused(db, r"not a SQLite database \(it starts with b'campaign notes, '")
    db.write_bytes(b"")
    assert_refused(db, "empty file")
    with pytest.raises(StoreError, match="no findings database"):
        Store.open(tmp_path / "elsewhere")


def test_refuses_a_sqlite_database_of_another_application(tmp_path):
    db = tmp_path / DB_NAME
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('schema', 'normfuzz.findings')")  # a lookalike
        conn.commit()
    assert_refused(db, r"SQLite database of another application \(application_id 0x00000000\), not a normfuzz")


def test_refuses_a_newer_schema_version(tmp_path):
    Store.create(tmp_path, CAMPAIGN).close()
    db = tmp_path / DB_NAME
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA user_version = {VERSION + 1}")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(VERSION + 1),))
    assert not os.path.exists(f"{db}-wal")  # the last connection folded the log into the file
    assert_refused(db, rf"schema version {VERSION + 1} is newer than this normfuzz reads \(version {VERSION}\)")


def test_refuses_a_newer_schema_version_waiting_in_the_log(tmp_path):
    Store.create(tmp_path, CAMPAIGN).close()
    db = tmp_path / DB_NAME
    holder = sqlite3.connect(db, isolation_level=None)  # keeps the committed change in the -wal
    try:
        holder.execute(f"PRAGMA user_version = {VERSION + 1}")
        assert os.path.getsize(f"{db}-wal") > 0
        before = digest(db)
        for readonly in (False, True):
            with pytest.raises(StoreError, match=f"schema version {VERSION + 1} is newer"):
                Store.open(tmp_path, readonly=readonly)
        assert digest(db) == before
    finally:
        holder.close()


# --------------------------------------------------------------------------------------------------
# Failures of the environment: a clear StoreError, nothing stored is damaged


def _can_create_in(folder: pathlib.Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


@contextlib.contextmanager
def read_only_folder(folder: pathlib.Path):
    """Make `folder` read-only: chmod 555 binds a normal user; root ignores modes, so for root the
    folder is made immutable (chattr +i). Skips when neither is possible here."""
    folder.chmod(0o555)
    try:
        if not _can_create_in(folder):
            yield
            return
        folder.chmod(0o755)
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                             capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder read-only here (privileged user, chattr unavailable)")
        try:
            assert not _can_create_in(folder)
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    finally:
        folder.chmod(0o755)


def test_read_only_folder(tmp_path):
    folder = tmp_path / "campaign"
    c = make_case()
    with Store.create(folder, CAMPAIGN) as s:
        fid = s.record_finding(c, outcome(c), category="accuracy", signature="s").finding_id
    before = digest(folder / DB_NAME)
    with read_only_folder(folder):
        with pytest.raises(StoreError, match=rf"{folder / DB_NAME}: cannot open .*folder is not writable"):
            Store.open(folder)  # to write (resume)
        with pytest.raises(StoreError, match="not writable"):
            Store.create(folder / "sub", CAMPAIGN)
        with pytest.raises(StoreError, match="not writable"):
            Store.create(folder / "other.sqlite", CAMPAIGN)
        with Store.open(folder, readonly=True) as r:  # reading an archived campaign still works
            assert [f["id"] for f in r.findings()] == [fid] and r.case(c.id) == c
            with pytest.raises(StoreError, match=rf"{folder / SUMMARY_NAME}: cannot write the summary .*not writable"):
                r.export_summary_json()
        assert sorted(os.listdir(folder)) == [DB_NAME, DB_NAME + ".lock"]
    assert digest(folder / DB_NAME) == before


def test_locked_database(tmp_path):
    c0, c1 = make_case(0), make_case(1)
    combo = ("layer_norm", "forward", TORCH, "float32", "typical", "pass")
    with Store.create(tmp_path, CAMPAIGN, timeout=0.2) as s:
        s.record_finding(c0, outcome(c0), category="accuracy", signature="s")
        other = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            t0 = time.monotonic()
            with pytest.raises(StoreError, match=rf"{tmp_path / DB_NAME}: cannot record a finding: the database is "
                                                 r"locked by another process or connection \(waited 0.2 s\)"):
                s.record_finding(c1, outcome(c1), category="accuracy", signature="s")
            assert time.monotonic() - t0 >= 0.15  # it did wait for the busy timeout
            s.add_counts([(combo, 3)])
            with pytest.raises(StoreError, match="locked"):
                s.checkpoint({"next": 2})
            assert len(s.findings()) == 1  # readers are not blocked; nothing half-written
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert s.record_finding(c1, outcome(c1), category="accuracy", signature="s").is_new_bucket is False
        s.checkpoint({"next": 2})  # the counters of the failed checkpoint were kept for this one
        assert s.counts()[0]["count"] == 3 and s.bucket(s.buckets()[0]["key"])["count"] == 2



def test_ctrl_c_while_waiting_for_the_write_lock_leaves_no_transaction_open(tmp_path):
    """Ctrl-C reaches a write blocked on another process's lock: CPython raises it as soon as BEGIN
    returns, with the transaction begun. The store rolls it back, so it writes again and does not
    hold the lock (left open, an interrupted --jobs campaign's parent and jobs all failed on it)."""
    import threading

    with Store.create(tmp_path, CAMPAIGN, timeout=10.0) as s:
        other = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None, timeout=0.5, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        released = threading.Event()

        def interrupt_then_release():
            time.sleep(1.0)  # the main thread is waiting in BEGIN by now
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
            other.execute("COMMIT")
            released.set()

        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            t = threading.Thread(target=interrupt_then_release)
            t.start()
            with pytest.raises(KeyboardInterrupt):
                s.checkpoint({"round": 0})
            # raised once BEGIN got the lock: the case at hand (not an interrupt before BEGIN)
            assert released.is_set()
            t.join()
        finally:
            signal.signal(signal.SIGINT, previous)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process can write (no lock held) ...
            other.execute("COMMIT")
        finally:
            other.close()
        s.checkpoint({"round": 1})  # ... and so can this store
        assert s.progress() == {"round": 1}

# A child process: opens the campaign, resumes from its checkpoint, and records findings forever
# (two runners per case, checkpoint every 4 cases), printing each finding after its commit returned.
WRITER = r"""
import sys
import numpy as np
from fuzz.case import Case
from fuzz.outcome import Outcome
from fuzz.store import Store

store = Store.open(sys.argv[1])
i = (store.resume() or {"next": 0})["next"]
print("resumed", i, flush=True)
while True:
    x = np.ones((2, 3), np.float32) + np.float32(i)
    case = Case(op="layer_norm", mode="forward", dtype="float32", inputs={"x": x},
                attrs={"eps": 1e-5, "normalized_ndim": 1})
    for runner in ("torch.functional", "tf.keras"):
        r = store.record_finding(case, Outcome(runner=runner, case_id=case.id, status="OK"), category="accuracy",
                                 signature=f"sig{i % 5}", explanation=f"case {i}", max_ratio=float(i),
                                 details={"i": i})
        print("committed", r.finding_id, r.bucket_key, case.id, runner, flush=True)
        store.add_counts([(("layer_norm", "forward", runner, "float32", "typical", "accuracy"), 1)])
    i += 1
    if i % 4 == 0:
        store.checkpoint({"next": i}, cases_run=i)
"""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_sigkill_in_a_stream_of_findings_loses_nothing_committed(tmp_path):
    Store.create(tmp_path, CAMPAIGN).close()
    rng = np.random.default_rng(20240521)
    committed: dict[int, tuple[str, str, str]] = {}
    for _round in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO, env=_child_env())
        target, lines = int(rng.integers(10, 120)), []
        try:
            while sum(line.startswith("committed") for line in lines) < target:
                lines.append(proc.stdout.readline())
                if not lines[-1]:
                    pytest.fail(f"writer died by itself: {proc.wait()} {proc.stderr.read()}")
            time.sleep(float(rng.uniform(0, 0.02)))  # a random moment in the stream
        finally:
            proc.send_signal(signal.SIGKILL)
            out, _err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        for line in lines + out.splitlines(keepends=True):
            parts = line.split()
            if line.endswith("\n") and parts and parts[0] == "committed":
                fid, key, case_id, runner = int(parts[1]), parts[2], parts[3], parts[4]
                # A case re-run after a kill gets its first finding back, not a new one.
                assert committed.setdefault(fid, (key, case_id, runner)) == (key, case_id, runner)

    db = tmp_path / DB_NAME
    with contextlib.closing(raw(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        stored = {fid: (key, case_id, runner) for fid, key, case_id, runner in
                  conn.execute("SELECT id, bucket_key, case_id, runner FROM findings")}
        assert len(committed) >= 200 and all(stored.get(fid) == row for fid, row in committed.items())
        assert conn.execute("SELECT count(*) FROM (SELECT 1 FROM findings GROUP BY case_id, runner "
                            "HAVING count(*) > 1)").fetchone()[0] == 0
        bucket_counts = dict(conn.execute("SELECT key, count FROM buckets"))
        finding_counts = dict(conn.execute("SELECT bucket_key, count(*) FROM findings GROUP BY bucket_key"))
        assert bucket_counts == finding_counts  # no duplicated, missing or miscounted bucket
        assert len(bucket_counts) == 10  # 5 signatures x 2 runners
    with Store.open(tmp_path, readonly=True) as r:
        done = r.progress()["next"]
        # Counters are exactly those of the cases the last checkpoint covers: none lost, none twice.
        assert sum(c["count"] for c in r.counts()) == 2 * done and r.campaign()["cases_run"] == done
        assert r.campaign()["resumes"] == 4 and r.campaign()["status"] == "interrupted"
        assert {f["case_id"] for f in r.findings()} >= {make_case(i).id for i in range(done)}


# The same writer under a file-size limit (the disk filling up): it must stop with a StoreError.
FILLER = r"""
import resource, signal, sys
import numpy as np
from fuzz.case import Case
from fuzz.outcome import Outcome
from fuzz.store import Store, StoreError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # exceeding the limit: EFBIG from write(), not a kill
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    store = Store.open(sys.argv[1]) if sys.argv[3] == "open" else Store.create(sys.argv[1], {"config": {}})
    for i in range(100000):
        x = np.random.default_rng(i).normal(size=(16, 64)).astype(np.float32)
        case = Case(op="layer_norm", mode="forward", dtype="float32", inputs={"x": x}, attrs={"eps": 1e-5})
        r = store.record_finding(case, Outcome(runner="torch.functional", case_id=case.id, status="OK"),
                                 category="accuracy", signature="s")
        print("committed", r.finding_id, flush=True)
except StoreError as exc:
    print("StoreError:", exc, flush=True)
    sys.exit(1)
"""


def test_full_disk_stops_with_a_clear_error_and_keeps_what_was_committed(tmp_path):
    Store.create(tmp_path, CAMPAIGN).close()
    db = tmp_path / DB_NAME
    limit = db.stat().st_size + 200_000
    proc = subprocess.run([sys.executable, "-c", FILLER, str(tmp_path), str(limit), "open"], capture_output=True,
                          text=True, cwd=REPO, env=_child_env(), timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert lines[-1].startswith(f"StoreError: {db}: cannot record a finding: ")
    assert "disk full" in lines[-1] or "file size limit" in lines[-1]
    committed = {int(line.split()[1]) for line in lines if line.startswith("committed")}
    assert len(committed) >= 3
    with contextlib.closing(raw(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert {r[0] for r in conn.execute("SELECT id FROM findings")} == committed
        assert conn.execute("SELECT count FROM buckets").fetchall() == [(len(committed),)]

    # Creating a database on a full disk: an error, and no half-made database left behind.
    proc = subprocess.run([sys.executable, "-c", FILLER, str(tmp_path / "new"), "2048", "create"],
                          capture_output=True, text=True, cwd=REPO, env=_child_env(), timeout=120)
    assert proc.returncode == 1 and "StoreError: " in proc.stdout and "cannot create" in proc.stdout, proc.stdout
    assert not (tmp_path / "new" / DB_NAME).exists()
    assert [p.name for p in (tmp_path / "new").iterdir()] == [DB_NAME + ".lock"]


# A child that creates a database and is SIGKILLed halfway through building its tables.
KILLED_CREATE = r"""
import os, signal, sys
import fuzz.store as store

tables = store._TABLES

class KillHalfway:
    def __iter__(self):
        for i, sql in enumerate(tables):
            if i == len(tables) // 2:
                os.kill(os.getpid(), signal.SIGKILL)
            yield sql

store._TABLES = KillHalfway()
store.Store.create(sys.argv[1], {"config": {}})
"""


def test_create_killed_halfway_leaves_no_database(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_CREATE, str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO, env=_child_env(), timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (tmp_path / DB_NAME).exists()  # the half-built file never had the final name
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    with pytest.raises(StoreError, match="no findings database"):
        Store.open(tmp_path)
    with Store.create(tmp_path, CAMPAIGN) as s:  # a new create clears the leftovers and succeeds
        assert s.campaign()["config"] == CAMPAIGN["config"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME, DB_NAME + ".lock"]


# --------------------------------------------------------------------------------------------------
# Speed: the store must not be the campaign's bottleneck


def _findings_per_second(folder: pathlib.Path, cases: list[Case], synchronous: str) -> float:
    with Store.create(folder, CAMPAIGN, synchronous=synchronous) as s:
        t0 = time.perf_counter()
        for i, c in enumerate(cases):
            s.record_finding(c, outcome(c), category="accuracy", signature=f"s{i % 7}", max_ratio=2.0)
        rate = len(cases) / (time.perf_counter() - t0)
        assert len(s.findings()) == len(cases)
    return rate


def test_write_throughput(tmp_path):
    """Findings commit one by one: hundreds per second at the least with the default
    synchronous=NORMAL (no fsync per commit); FULL pays one fsync per finding. Counters are
    in-memory additions written by one transaction per checkpoint."""
    cases = [make_case(i) for i in range(200)]
    normal = _findings_per_second(tmp_path / "normal", cases, "NORMAL")
    full = _findings_per_second(tmp_path / "full", cases[:40], "FULL")
    combo = ("layer_norm", "forward", TORCH, "float32", "typical", "pass")
    with Store.create(tmp_path / "counts", CAMPAIGN) as s:
        t0 = time.perf_counter()
        for _ in range(20000):
            s.add_counts([(combo, 1)])
        s.checkpoint({"next": 20000})
        counts_per_s = 20000 / (time.perf_counter() - t0)
        assert s.counts()[0]["count"] == 20000
    print(f"\nrecord_finding: {normal:.0f}/s (synchronous=NORMAL), {full:.0f}/s (FULL); "
          f"add_counts + checkpoint: {counts_per_s:.0f} counts/s")
    assert normal > 100 and counts_per_s > 10000
