"""Isolation: every way a runner can fail becomes the right Outcome, the worker comes back, and the
next case runs (plug-in runners from tests/fuzz/faulty_runners.py)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from fuzz.case import Case
from fuzz.isolation import InternalError, Worker, WorkerSetupError
from tests.fuzz.faulty_runners import TRIGGER_EPS

SPEC = "tests.fuzz.faulty_runners:runners"


def ln_case(eps=1e-5, seed=0):
    x = np.random.default_rng(seed).normal(size=(3, 8)).astype(np.float32)
    return Case(op="layer_norm", mode="forward", dtype="float32", inputs={"x": x},
                attrs={"eps": eps, "normalized_ndim": 1})


EXPECTED = {"y": (3, 8), "mean": (3,), "rstd": (3,)}


def run_pair(fault: str, **kw):
    """A good case, the faulty case, then a good case again on one 'sometimes' worker."""
    with Worker(SPEC, f"faulty.{fault}.sometimes", **kw) as w:
        before = w.run(ln_case(), expected=EXPECTED)
        bad = w.run(ln_case(eps=TRIGGER_EPS, seed=1), expected=EXPECTED)
        after = w.run(ln_case(seed=2), expected=EXPECTED)
    assert before.status == "OK" and after.status == "OK", (before, after)
    assert bad.case_id == ln_case(eps=TRIGGER_EPS, seed=1).id
    assert bad.seconds >= 0
    return bad


@pytest.mark.parametrize("fault,signal", [("segfault", 11), ("abort", 6), ("kill_self", 9)])
def test_signals_become_crashed_outcomes(fault, signal):
    o = run_pair(fault)
    assert o.status == "CRASHED" and o.signal == signal and o.exit_code is None
    assert "signal" in o.detail


def test_exit_becomes_crashed_with_exit_code():
    o = run_pair("exit")
    assert o.status == "CRASHED" and o.exit_code == 7 and o.signal is None


def test_hang_becomes_timeout():
    o = run_pair("hang", timeout=2.0)
    assert o.status == "TIMEOUT" and "2s" in o.detail
    assert 1.9 <= o.seconds < 30


def test_memory_exhaustion_becomes_crashed():
    o = run_pair("oom", memory_mb=400)
    assert o.status == "CRASHED" and "out of memory" in o.detail


def test_raise_becomes_raised_with_type_and_message():
    o = run_pair("raise")
    assert o.status == "RAISED" and o.error_type == "builtins.RuntimeError"
    assert "<script>" in o.error  # kept verbatim; escaping is the report's job


@pytest.mark.parametrize("fault,words", [("wrong_shape", "shape"), ("wrong_dtype", "dtype"),
                                         ("not_array", "list"), ("unknown_output", "'z'")])
def test_bad_outputs(fault, words):
    o = run_pair(fault)
    assert o.status == "BAD_OUTPUT" and words in o.detail


def test_internal_error_surfaces_loudly():
    with Worker(SPEC, "faulty.internal") as w:
        with pytest.raises(InternalError, match="KeyError"):
            w.run(ln_case())


def test_slow_leak_is_caught_by_the_memory_limit_and_the_worker_restarts():
    statuses = []
    with Worker(SPEC, "faulty.leak", memory_mb=450) as w:
        for i in range(40):
            statuses.append(w.run(ln_case(seed=i), expected=EXPECTED).status)
            if "CRASHED" in statuses and statuses[-1] == "OK":
                break
    assert "CRASHED" in statuses and statuses[-1] == "OK", statuses


def test_unknown_runner_id_is_a_setup_error():
    with pytest.raises(InternalError, match="has no runner"):
        Worker(SPEC, "faulty.nope").start()


def test_unimportable_factory_is_a_setup_error():
    with pytest.raises((WorkerSetupError, InternalError), match="no_such_module"):
        Worker("no_such_module:runners", "x", startup_timeout=60).start()


def test_ok_outcome_matches_in_process_result():
    from tests.fuzz.faulty_runners import layer_norm_outputs

    c = ln_case(seed=5)
    with Worker(SPEC, "faulty.none") as w:
        o = w.run(c, expected=EXPECTED)
        assert w.version == "0.0-test"
    want = layer_norm_outputs(c)
    assert o.status == "OK"
    for k in want:
        np.testing.assert_array_equal(o.outputs[k], want[k])


def test_a_worker_whose_memory_grows_is_recycled_and_answers_stay_right(monkeypatch):
    """With recycle=True a worker that holds more memory after every case (a framework's caches,
    here 8 MiB leaked per case) is restarted once it grows by RECYCLE_GROWTH over its baseline
    (and by RECYCLE_MIN_BYTES, set to 16 MiB here) after WARM_CALLS answers, so its memory stays
    bounded; every answer is still a right answer."""
    import fuzz.isolation as iso
    from fuzz.isolation import _rss_bytes
    from tests.fuzz.faulty_runners import layer_norm_outputs

    monkeypatch.setattr(iso, "WARM_CALLS", 5)
    monkeypatch.setattr(iso, "RECYCLE_MIN_BYTES", 16 << 20)
    peak = 0
    with Worker(SPEC, "faulty.leak_slow", recycle=True) as w:
        for i in range(60):
            c = ln_case(seed=i)
            o = w.run(c)
            assert o.status == "OK" and np.array_equal(o.outputs["y"], layer_norm_outputs(c)["y"])
            if w.proc is not None:
                peak = max(peak, _rss_bytes(w.proc.pid))
        assert w.recycles >= 2 and w.restarts >= 2
    # 60 cases x 8 MiB would be 480 MiB more; recycled, the worker never holds more than
    # (1 + RECYCLE_GROWTH) x its baseline plus one case's leak
    assert peak < 380 * 2**20, peak >> 20


def test_growth_below_the_absolute_floor_does_not_recycle(monkeypatch):
    """A worker that grows by more than RECYCLE_GROWTH of its baseline but less than
    RECYCLE_MIN_BYTES (a small worker filling a bounded cache) keeps running."""
    import fuzz.isolation as iso

    monkeypatch.setattr(iso, "WARM_CALLS", 5)
    monkeypatch.setattr(iso, "RECYCLE_GROWTH", 0.01)
    monkeypatch.setattr(iso, "RECYCLE_MIN_BYTES", 1 << 30)
    with Worker(SPEC, "faulty.leak_slow", recycle=True) as w:
        for i in range(20):  # 15 x 8 MiB after the baseline: far over 1%, under 1 GiB
            assert w.run(ln_case(seed=i)).status == "OK"
        assert w.recycles == 0 and w.restarts == 0


def _worker_tmpdir(w: Worker):
    env = open(f"/proc/{w.proc.pid}/environ", "rb").read().split(b"\0")
    (value,) = [e[len(b"TMPDIR="):] for e in env if e.startswith(b"TMPDIR=")]
    return pathlib.Path(value.decode())


def test_a_worker_has_its_own_temporary_folder_removed_when_it_exits(tmp_path):
    """What a runner leaves in its temporary folder goes with its worker, after a crash or a close
    (TensorFlow's autograph writes a file per traced function there and deletes it only at
    interpreter exit, which a worker skips: os._exit)."""
    with Worker(SPEC, "faulty.segfault.sometimes", env={"TMPDIR": str(tmp_path)}) as w:
        assert w.run(ln_case()).status == "OK"
        first = _worker_tmpdir(w)
        assert first.parent == tmp_path and first.is_dir()
        (first / "__autograph_generated_file.py").write_text("x = 1\n")
        assert w.run(ln_case(eps=TRIGGER_EPS, seed=1)).status == "CRASHED"
        assert not first.exists()
        assert w.run(ln_case(seed=2)).status == "OK"  # the restarted worker has a folder of its own
        second = _worker_tmpdir(w)
        assert second != first and list(tmp_path.iterdir()) == [second]
    assert list(tmp_path.iterdir()) == []


# ---- batches: several cases in one request, each still run alone

BATCH_FAULTS = [("segfault", {}), ("abort", {}), ("exit", {}), ("sys_exit", {}), ("hang", {"timeout": 2.0}),
                ("oom", {"memory_mb": 400}), ("raise", {}), ("wrong_shape", {}), ("not_array", {}),
                ("unknown_output", {}), ("noisy", {})]


def _same_outcome(a, b):
    assert (a.runner, a.case_id, a.status, a.error_type, a.exit_code, a.signal) == \
        (b.runner, b.case_id, b.status, b.error_type, b.exit_code, b.signal), (a, b)
    assert sorted(a.outputs) == sorted(b.outputs)
    for k in a.outputs:
        np.testing.assert_array_equal(a.outputs[k], b.outputs[k])


@pytest.mark.parametrize("fault,kw", BATCH_FAULTS, ids=[f for f, _ in BATCH_FAULTS])
def test_a_batch_gives_each_case_the_outcome_it_has_alone(fault, kw):
    """Good cases around a faulty one, as one batch and one request at a time: the same outcome for
    every case (a crash, hang or memory overrun is the faulty case's alone), then the worker
    answers again."""
    cases = [ln_case(seed=0), ln_case(seed=1), ln_case(eps=TRIGGER_EPS, seed=2), ln_case(seed=3)]
    expected = [EXPECTED] * len(cases)
    with Worker(SPEC, f"faulty.{fault}.sometimes", **kw) as w:
        batched = w.run_batch(cases, expected)
        alone = [w.run(c, expected=EXPECTED) for c in cases]
        after = w.run(ln_case(seed=4), expected=EXPECTED)
    assert len(batched) == len(cases)
    for a, b in zip(batched, alone):
        _same_outcome(a, b)
    assert [o.status for o in batched[:2] + batched[3:]] == ["OK"] * 3 and after.status == "OK"
    assert (batched[2].status == "OK") == (fault == "noisy")  # (noisy: honest, writes a lot)


def test_a_batch_is_one_request_and_one_answer(monkeypatch):
    """Honest cases: one message each way for the whole batch, and the answers those of single runs."""
    import fuzz.isolation as iso

    sent = []
    real = iso.write_message
    monkeypatch.setattr(iso, "write_message", lambda fd, header, arrays={}: (sent.append(header), real(fd, header, arrays)))
    cases = [ln_case(seed=i) for i in range(5)]
    with Worker(SPEC, "faulty.none") as w:
        batched = w.run_batch(cases, [EXPECTED] * 5)
        assert len(sent) == 1 and len(sent[0]["cases"]) == 5
        alone = [w.run(c, expected=EXPECTED) for c in cases]
    for a, b in zip(batched, alone):
        _same_outcome(a, b)
        assert a.status == "OK"


def test_a_batch_with_an_internal_error_raises_naming_the_case():
    with Worker(SPEC, "faulty.internal") as w:
        with pytest.raises(InternalError, match=f"on case {ln_case(seed=0).id} .* of a batch:(.|\n)*KeyError"):
            w.run_batch([ln_case(seed=0), ln_case(seed=1)])


def test_batch_arrays_round_trip_and_unknown_names_are_refused():
    from fuzz.wire import WireError, batch, unbatch

    parts = [{"x": np.arange(3.0), "a/b": np.ones(2)}, {}, {"x": np.zeros((2, 2), np.float32)}]
    back = unbatch(batch(parts), 3)
    assert [sorted(p) for p in back] == [["a/b", "x"], [], ["x"]]
    assert back[0]["a/b"] is parts[0]["a/b"] and back[2]["x"] is parts[2]["x"]
    for bad in ({"x": np.ones(1)}, {"3/x": np.ones(1)}, {"-1/x": np.ones(1)}):
        with pytest.raises(WireError):
            unbatch(bad, 3)


def test_a_hanging_case_holds_its_batch_for_one_timeout_not_one_per_case():
    """A batch may take as long as one case may (`timeout`); then its cases are run one request
    each, the hanging one timing out alone. Ten cases with a 1.5 s timeout: about 3 s and two
    worker starts (a limit of timeout x cases would wait 15 s before that)."""
    import time

    cases = [ln_case(seed=i) for i in range(9)] + [ln_case(eps=TRIGGER_EPS, seed=9)]
    with Worker(SPEC, "faulty.hang.sometimes", timeout=1.5) as w:
        t0 = time.perf_counter()
        outs = w.run_batch(cases, [EXPECTED] * 10)
        took = time.perf_counter() - t0
    assert [o.status for o in outs] == ["OK"] * 9 + ["TIMEOUT"]
    assert took < 10, took
