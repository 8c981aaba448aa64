"""A fuzzing campaign: generate cases with Hypothesis, run every selected runner in its isolated
worker, judge against the oracle, triage, store, minimize each new bucket, until the budget is spent.

Data flows one way: spec (Hypothesis) -> Case (numpy) -> Outcome per runner (workers) -> Verdict and
Finding (compare, triage) -> store (SQLite, committed per finding) -> summary JSON and report.

Generation runs in *rounds*: round r is one Hypothesis run seeded with (seed, r), so a campaign is
reproducible from its seed and resumable from its last completed round. Inside a round the test
function never fails for known buckets; the first time a case opens a *new* bucket it raises an
exception class unique to that bucket, so Hypothesis shrinks exactly that failure (shrinking moves to
smaller shapes and simpler regimes) while only that bucket's runner is run; the last case that
raised is the bucket's minimal reproducer. `hypothesis.target` steers each (op, runner) pair toward a
larger error/bound.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from oracles import Evaluation

from . import __version__
from .compare import Reference, Verdict, compare, reference
from .isolation import InternalError, Worker, WorkerSetupError, close_all
from .outcome import Outcome
from .packing import PACK_ELEMENTS
from .runners import discover
from .triage import Finding, bucket_key, judge

EXAMPLES_PER_ROUND = 200
#: Cases per Hypothesis example (a family) and per packed framework call (`fuzz.packing`), at most.
DEFAULT_PACK = 64
#: A family's data elements in all, at most (fewer members for larger cases): `fuzz.packing`.
DEFAULT_PACK_ELEMENTS = PACK_ELEMENTS
#: The element budget of campaigns stored before it was an option (they are resumed with it; the
#: same number as the default today, and still theirs if the default changes).
LEGACY_PACK_ELEMENTS = 1 << 18


def _data_elements(spec) -> int:
    """Elements of a spec's data input (every step's, for training_steps)."""
    from math import prod

    return max(1, prod(spec.shape) * spec.steps)


@dataclass
class CampaignConfig:
    """What a campaign runs: selections, budget, seed, isolation limits, folders."""

    out: str
    ops: list[str] = field(default_factory=list)          # empty: all
    runners: list[str] = field(default_factory=list)      # runner ids; empty: all available
    plugins: list[str] = field(default_factory=list)      # extra module:factory specs
    dtypes: list[str] = field(default_factory=list)
    regimes: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    budget_seconds: float | None = None
    max_cases: int | None = None
    seed: int = 0
    timeout: float = 60.0
    memory_mb: int | None = 4096
    max_elements: int = 4096
    known_issues: str | None = None
    baseline: str | None = None
    minimize: bool = True                                  # shrink each new bucket's case
    pack: int = DEFAULT_PACK                               # cases per family and framework call (1: off)
    pack_elements: int = DEFAULT_PACK_ELEMENTS             # a family's data elements in all, at most
    min_elements: int = 1
    jobs: int = 1                                          # campaign processes (one per core)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class CampaignConfigError(ValueError):
    """A campaign configuration that cannot run (unknown runner, nothing selected)."""


class _Found(Exception):
    """Base of the per-bucket exceptions that make Hypothesis shrink one bucket."""


_BUCKET_EXC: dict[str, type] = {}


class _Abort(BaseException):
    """Carries a StoreError (full disk, read-only folder, locked database) out of a Hypothesis run
    at once: not an Exception, so Hypothesis does not shrink it, which would only re-run cases
    against a store that cannot take them (each waiting out the lock timeout)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class _Spent(BaseException):
    """Ends a Hypothesis run at once when the campaign's budget is spent (or `stop_when` stopped
    it): not an Exception, so Hypothesis neither shrinks it nor keeps generating. Returning early
    from the test instead left Hypothesis running its round: its target phase (hill climbing on
    the error ratios) and any shrink kept calling the test, each call drawing a spec for nothing,
    and a `--jobs 2` RMSNorm campaign overran its 120 s budget by 30 to 65 s (faulthandler dumps
    of the late job: `optimise_targets` / `find_integer`)."""


def _raise_for(key: str):
    """Raise the bucket's own exception class, always from this line: Hypothesis identifies a
    failure by exception type and location, so generation and shrinking must raise alike."""
    if key not in _BUCKET_EXC:
        _BUCKET_EXC[key] = type(f"NewBucket_{len(_BUCKET_EXC)}", (_Found,), {"key": key})
    raise _BUCKET_EXC[key]()


@dataclass
class _State:
    cases: int = 0
    findings: int = 0
    new_buckets: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    pending: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)  # key -> (spec, case, outputs)
    target: str | None = None
    target_runner: str | None = None
    minimal: dict[str, Any] = field(default_factory=dict)             # key -> (case, finding)
    counts: dict[tuple, int] = field(default_factory=dict)
    unsupported: dict[tuple, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    elapsed_before: float = 0.0
    stopped: bool = False
    cases_at_stop: int = 0
    unconfirmed: int = 0          # packed-call findings that the member's solo run did not show
    packed_calls: int = 0
    families: int = 0             # Hypothesis examples evaluated (each a family of cases of one signature)
    elements: int = 0             # data elements of the cases run (the size mix behind cases per second)
    startup_seconds: float = 0.0  # spent starting workers (excluded from throughput figures)
    # round -> [fuzzing seconds, cases, complete]: this run's rounds (`_timed_round`); a round is
    # complete when it ran to its end, not cut by the budget, the case limit or Ctrl-C
    rounds: dict[str, list] = field(default_factory=dict)


class _Refs:
    """The oracle's evaluations of one case, per precision, each made on first use.

    A runner whose precision declares flush-to-zero is judged first against the precision's
    non-FTZ twin when another runner of the case needs that twin anyway (`needed`): FTZ only widens
    every absolute underflow floor, so the references are the same and the FTZ bounds are never
    tighter (tests/oracles/test_ftz_bounds.py), and an "agree" there is an "agree" against its own
    bounds (its max_ratio then is against the twin's bounds: an upper bound of the exact one). Any
    other verdict is made again against its own precision (`get`), evaluated only then. This saves
    one oracle evaluation per case for TensorFlow (FTZ) beside PyTorch and ONNX Runtime."""

    def __init__(self, case, needed=()):
        self.case, self.needed, self.done = case, set(needed), {}

    def get(self, prec) -> Reference:
        ref = self.done.get(prec)
        if ref is None:
            ref = self.done[prec] = reference(self.case, prec)
        return ref

    def first(self, prec) -> Reference:
        if prec.ftz:
            twin = replace(prec, ftz=False)
            if twin in self.needed or twin in self.done:
                return self.get(twin)
        return self.get(prec)

    def is_exact(self, ref: Reference, prec) -> bool:
        return self.done.get(prec) is ref


def _expected_shapes(ref) -> dict[str, tuple[int, ...]] | None:
    """Output name -> shape the oracle gives (a worker's answer of another shape is BAD_OUTPUT)."""
    return None if ref.evaluation is None else {k: v.shape for k, v in ref.evaluation.outputs.items()}


def platform_info() -> dict[str, str]:
    return {"python": sys.version.split()[0], "implementation": platform.python_implementation(),
            "os": platform.platform(), "machine": platform.machine(), "numpy": np.__version__,
            "normfuzz": __version__, "cpus": str(os.cpu_count())}


def checkpoint_state(store) -> dict[str, Any]:
    """The state of a campaign's last checkpoint ({} if none), checked: StoreError if it is not
    what `Campaign` writes (a damaged or edited database), before anything is resumed."""
    from .store import StoreError

    chk = store.progress()
    chk = {} if chk is None else chk
    if not (isinstance(chk, dict) and all(type(chk.get(k, 0)) in (int, float) for k in ("round", "cases", "elapsed"))):
        raise StoreError(f"{store.path}: the checkpoint {json.dumps(chk)[:200]} is damaged (expected numbers "
                         f"round, cases and elapsed); nothing was resumed")
    return chk


class Campaign:
    """One campaign over `config`; `run()` returns the summary dict (also written as JSON)."""

    def __init__(self, config: CampaignConfig, *, resume: bool = False,
                 on_progress: Callable[[dict], None] | None = None,
                 stop_when: Callable[[Finding], bool] | None = None, write_report: bool = True,
                 job: tuple[int, int] | None = None):
        if not isinstance(config.jobs, int) or isinstance(config.jobs, bool) or config.jobs < 1:
            raise CampaignConfigError(f"jobs={config.jobs!r} is invalid: expected an int >= 1")
        for name in ("pack", "pack_elements"):
            v = getattr(config, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise CampaignConfigError(f"{name}={v!r} is invalid: expected an int >= 1")
        if config.jobs > 1 and stop_when is not None:
            raise CampaignConfigError("stop_when needs a single job (jobs=1)")
        self.cfg = config
        self.job = job  # (index, count) in a job process of a --jobs campaign (`_job_main`)
        self.resume = resume
        self.on_progress = on_progress
        self.stop_when = stop_when
        self.write_report = write_report
        self.out = Path(config.out)
        self.workers: dict[str, Worker] = {}
        self.unavailable: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        self.state = _State()
        self._last_flush = time.monotonic()

    # ------------------------------------------------------------------ set-up

    def _select_runners(self) -> dict[str, tuple[str, Any]]:
        found = discover(self.cfg.plugins, broken={})
        if self.cfg.runners:
            missing = [r for r in self.cfg.runners if r not in found]
            if missing:
                raise CampaignConfigError(f"unknown runner(s) {', '.join(missing)}: choose from {', '.join(sorted(found))}")
            found = {k: v for k, v in found.items() if k in self.cfg.runners}
        out = {}
        for rid, (spec, runner) in sorted(found.items()):
            why = runner.available()
            if why is not None:
                self.unavailable[rid] = why
            else:
                out[rid] = (spec, runner)
        return out

    def _worker(self, rid: str) -> Worker | None:
        if rid in self.unavailable:
            return None
        if rid not in self.workers:
            self._start_workers([rid])
        return self.workers.get(rid)

    def _start_workers(self, rids) -> None:
        """Start the workers of `rids` together (each imports its framework while the others do)
        and wait until each is ready; one that cannot start makes its runner unavailable. The time
        counts as start-up, not fuzzing."""
        t0 = time.perf_counter()
        launched: list[tuple[str, Worker]] = []
        try:
            for rid in rids:
                spec, _ = self.runners[rid]
                w = Worker(spec, rid, timeout=self.cfg.timeout, memory_mb=self.cfg.memory_mb, recycle=True)
                w.launch()
                launched.append((rid, w))
            for rid, w in launched:
                try:
                    w.wait_ready()
                except WorkerSetupError as e:
                    self.unavailable[rid] = str(e)
                    continue
                self.workers[rid] = w
                self.versions[rid] = w.version
        except BaseException:
            close_all(w for rid, w in launched if self.workers.get(rid) is not w)
            raise
        finally:
            self.state.startup_seconds += time.perf_counter() - t0
        if launched:
            self.store.set_versions(self.versions)

    def _start_all_workers(self) -> None:
        """At the start of a campaign (or job), start the worker of every runner whose declared
        ops, modes and dtypes meet the campaign's selection. Memory is then what it will stay from
        the first minute: a worker started later adds its whole baseline then (in a 30-minute soak,
        +220 MiB when a job met its first weight_norm case after a minute), and a runner that
        cannot start is known before the first case. Runners that declare no ops start lazily."""
        from .strategies import selection

        pairs, dtypes = selection(ops=self.cfg.ops or None, modes=self.cfg.modes or None,
                                  dtypes=self.cfg.dtypes or None, regimes=self.cfg.regimes or None)
        rids = [rid for rid, (_, r) in self.runners.items()
                if rid not in self.unavailable and rid not in self.workers
                and any(m in r.ops.get(op, ()) for op, m in pairs) and set(dtypes) & set(r.dtypes)]
        self._start_workers(rids)

    # ------------------------------------------------------------------ one case

    def _supported(self, case, n: int = 1) -> list[str]:
        """The runners that can express `case` (`n` cases of its signature: unsupported counts)."""
        ids = []
        for rid, (_, runner) in self.runners.items():
            if rid in self.unavailable:
                continue
            why = runner.supports(case.op, case.mode, case.dtype, case.attrs)
            if why is None:
                ids.append(rid)
            else:
                k = (rid, case.op, case.mode, case.dtype, why)
                self.state.unsupported[k] = self.state.unsupported.get(k, 0) + n
        return ids

    def _precision(self, rid: str, case):
        return self.runners[rid][1].conventions_for(case.op, case.attrs).precision(case.dtype)

    def _run_one(self, rid: str, spec, case, refs: _Refs | None = None,
                 accepted: Reference | None = None) -> tuple[Any, Finding | None]:
        """Run `case` alone on `rid` and judge it: ((outcome, verdict), finding), or (None, None)
        when the runner's worker cannot start (`_run_alone` for one case)."""
        return self._run_alone(rid, spec, [case], None if refs is None else [refs],
                               None if accepted is None else [accepted])[0]

    def _run_alone(self, rid: str, spec, cases: list, refs: list[_Refs] | None = None,
                   accepted: list[Reference | None] | None = None) -> list[tuple[Any, Finding | None]]:
        """Run each of `cases` (members of `spec`'s family) alone on `rid`, one framework call
        each, and judge each: per case ((outcome, verdict), finding), or (None, None) when the
        runner's worker cannot start. `refs`: each case's oracle evaluations so far.

        The cases go to the worker in batches (`Worker.run_batch`: one request, one reply, each case
        still its own call) of at most `pack_elements` data elements, the budget of a packed call.

        `accepted`: per case, None or a reference known to accept the case, with its output shapes
        (a member's part of its family's packed evaluation: the oracle accepts a packed case only if
        it accepts every member, tests/fuzz/test_packing.py). An outcome without outputs (raised,
        crashed, timed out, bad or unsupported) is judged by it, since its verdict only asks whether
        the oracle accepts the case; the case's own evaluation is made only for outputs to compare."""
        n = len(cases)
        if not n:
            return []
        refs = [_Refs(c) for c in cases] if refs is None else refs
        accepted = [None] * n if accepted is None else accepted
        w = self._worker(rid)
        if w is None:
            return [(None, None)] * n
        precs = [self._precision(rid, c) for c in cases]
        expected = [_expected_shapes(a if a is not None else r.first(p))
                    for a, r, p in zip(accepted, refs, precs)]
        per_call = max(1, self.cfg.pack_elements // max(1, _data_elements(spec)))
        outcomes = []
        for k in range(0, n, per_call):
            outcomes += w.run_batch(cases[k:k + per_call], expected[k:k + per_call])
        return [self._judge_alone(rid, spec, *args) for args in zip(cases, outcomes, refs, precs, accepted)]

    def _judge_alone(self, rid: str, spec, case, outcome, refs: _Refs, prec,
                     accepted: Reference | None) -> tuple[Any, Finding | None]:
        """`_run_alone`'s judgement of one case's outcome."""
        if accepted is not None and outcome.status != "OK":
            return self._judge(rid, spec, case, outcome, accepted)
        ref = refs.first(prec)
        if outcome.status == "OK" and not refs.is_exact(ref, prec):  # judged by the FTZ twin first
            verdict = compare(case, outcome, ref)
            if verdict.category == "agree":  # (judge = compare + triage, and triage of agree is None)
                return (outcome, verdict), None
            ref = refs.get(prec)
        return self._judge(rid, spec, case, outcome, ref)

    def _judge(self, rid: str, spec, case, outcome, ref) -> tuple[Any, Finding | None]:
        if outcome.status == "UNSUPPORTED":
            k = (rid, case.op, case.mode, case.dtype, outcome.detail)
            self.state.unsupported[k] = self.state.unsupported.get(k, 0) + 1
        conv = self.runners[rid][1].conventions_for(case.op, case.attrs)
        verdict, finding = judge(case, outcome, conv, regime=spec.regime, ref=ref)
        return (outcome, verdict), finding

    # ------------------------------------------------------------------ one family

    def family_size(self, spec) -> int:
        """Cases drawn from one Hypothesis example: `pack`, fewer when that many would exceed the
        family's element budget (`pack_elements`), at least one. A function of the spec and the
        configuration only, so that replaying an example (shrinking) replays the same family.

        Why a budget in elements: a family costs a fixed part (the example, a framework call per
        runner, the oracle's per-call overhead) and a part per element. A budget below `pack`
        times the largest case gives larger cases fewer members: examples of larger shapes get
        cheaper, so the campaign draws new signatures (shapes, attributes, parameter kinds)
        faster, but it also runs fewer cases of those shapes, which moves its case mix toward
        small cases (benchmarks/family_size.py measures the three effects)."""
        return max(1, min(self.cfg.pack, self.cfg.pack_elements // _data_elements(spec)))

    def _evaluate_family(self, spec, members: list) -> tuple[dict[str, Verdict],
                                                             list[list[tuple[str, Any, Finding | None]]]]:
        """Every supported runner on every member: ({runner: verdict of a packed call in which
        every member agrees}, and per member a list of (runner, (outcome, verdict), finding) for the
        other runners). Members pack into one framework call per runner where `fuzz.packing`
        allows (and the runner supports the packed attributes); each runner's worker computes while
        this process evaluates the oracle (submit, oracle, collect). A member that a packed call
        flags (any finding) is run again alone, and only the solo run is judged and kept: packing
        cannot create a bucket. A packed call that fails as a whole (raised, crashed, wrong shape)
        runs its members alone."""
        from .packing import pack, plan, split

        st = self.state
        first = members[0]
        rids = self._supported(first, len(members))
        results: list[list] = [[] for _ in members]
        agreed: dict[str, Verdict] = {}
        p = plan(members, self.cfg.pack_elements) if self.cfg.pack > 1 else None
        packed = pack(members, p) if p is not None else None
        solo_rids = list(rids)
        if packed is not None:
            packable = [r for r in rids if self.runners[r][1].supports(packed.op, packed.mode, packed.dtype,
                                                                        packed.attrs) is None]
            solo_rids = [r for r in rids if r not in packable]
            submitted = {}
            for rid in packable:
                w = self._worker(rid)
                if w is not None:
                    submitted[rid] = (w, w.submit(packed))
            precs = {rid: self._precision(rid, packed) for rid in submitted}
            refs = _Refs(packed, precs.values())
            for prec in set(precs.values()):  # while the workers compute
                refs.first(prec)
            member_refs: dict = {}

            def parts_of(prec) -> list[Reference]:  # the packed evaluation at `prec`, per member
                if prec not in member_refs:
                    ev = refs.get(prec).evaluation
                    outs, bounds = split(p, ev.outputs), split(p, ev.bounds)
                    member_refs[prec] = [Reference(Evaluation(o, b)) for o, b in zip(outs, bounds)]
                return member_refs[prec]

            for rid, (w, failed) in submitted.items():
                prec = precs[rid]
                ref = refs.first(prec)
                outcome = failed if failed is not None else w.collect(packed, expected=_expected_shapes(ref))
                st.packed_calls += 1
                parts = split(p, outcome.outputs) if outcome.status == "OK" else None
                if parts is None or ref.evaluation is None:
                    solo_rids.append(rid)
                    continue
                per_case = outcome.seconds / p.size
                whole = compare(packed, outcome, ref)
                if whole.category != "agree" and not refs.is_exact(ref, prec):
                    ref = refs.get(prec)
                    whole = compare(packed, outcome, ref)
                if whole.category == "agree":
                    # every element of every member is within its bound with the NaN pattern the
                    # oracle has (the members' elements are the packed call's, their references and
                    # bounds the packed ones): each member agrees, no per-member comparison needed
                    agreed[rid] = whole
                    continue
                flagged = []
                for i, m in enumerate(members):
                    o = Outcome(rid, m.id, "OK", outputs=parts[i], seconds=per_case)
                    verdict = compare(m, o, parts_of(prec)[i])
                    if verdict.is_finding:  # confirm alone: only the solo run is judged and counts
                        flagged.append(i)
                    else:
                        results[i].append((rid, (o, verdict), None))
                alone = self._run_alone(rid, spec, [members[i] for i in flagged])
                for i, (res, finding) in zip(flagged, alone):
                    if res is None:
                        continue
                    if finding is None:
                        st.unconfirmed += 1
                    results[i].append((rid, res, finding))
        # members alone: runners that cannot take the packed case, or whose packed call failed as a
        # whole; when the oracle accepted the packed case, its parts judge outcomes without outputs
        accepted = None
        if packed is not None and refs.done and all(r.evaluation is not None for r in refs.done.values()):
            accepted = parts_of(next(iter(refs.done)))
        if solo_rids:
            mrefs = [_Refs(m, {self._precision(rid, m) for rid in solo_rids}) for m in members]
            for rid in solo_rids:
                alone = self._run_alone(rid, spec, members, mrefs, accepted)
                for i, (res, finding) in enumerate(alone):
                    if res is not None:
                        results[i].append((rid, res, finding))
        return agreed, results

    def _count(self, case, spec, rid: str, category: str, n: int = 1) -> None:
        k = (case.op, case.mode, rid, case.dtype, spec.regime, category)
        self.state.counts[k] = self.state.counts.get(k, 0) + n

    def _record(self, spec, found: list[tuple]) -> list[str]:
        """Store the findings `found` ((case, outcome, verdict, finding) each) in one transaction;
        their bucket keys, in order."""
        recorded = self.store.record_findings([(case, outcome, finding, verdict)
                                               for case, outcome, verdict, finding in found])
        keys = []
        for (case, outcome, _, finding), rec in zip(found, recorded):
            key = bucket_key(*finding.key)
            self.state.findings += 1
            if rec.is_new_bucket:
                self.state.new_buckets.append(key)
                self.state.pending[key] = (spec, case, outcome.outputs)
            self.state.seen.add(key)
            keys.append(key)
        return keys

    def _test(self, spec) -> None:
        """The Hypothesis test function: one spec's family, every runner (or the shrink target's)."""
        from hypothesis import target

        st = self.state
        if self._out_of_budget():
            raise _Spent()
        members = self._materialize_family(spec)
        if st.target is not None:  # shrinking one bucket: only its runner, each member alone
            rid = st.target_runner
            for case in members:
                if rid not in self._supported(case):
                    return
                res, finding = self._run_one(rid, spec, case)
                if finding is not None and bucket_key(*finding.key) == st.target:
                    st.minimal[st.target] = (case, finding, res)
                    _raise_for(st.target)
            return
        st.cases += len(members)
        st.families += 1
        st.elements += len(members) * _data_elements(spec)
        raise_for = None
        scores: dict[str, float] = {}
        agreed, results = self._evaluate_family(spec, members)
        for rid, verdict in agreed.items():  # a packed call in which every member agrees
            self._count(members[0], spec, rid, "agree", len(members))
            if np.isfinite(verdict.max_ratio):
                label = f"{members[0].op}:{rid}"
                scores[label] = max(scores.get(label, -np.inf), min(float(verdict.max_ratio), 1e30))
        found = []
        for case, per_runner in zip(members, results):
            for rid, res, finding in per_runner:
                outcome, verdict = res
                self._count(case, spec, rid, finding.category if finding else verdict.category)
                if verdict.max_ratio == verdict.max_ratio and np.isfinite(verdict.max_ratio):
                    label = f"{case.op}:{rid}"
                    scores[label] = max(scores.get(label, -np.inf), min(float(verdict.max_ratio), 1e30))
                if finding is not None:
                    found.append((case, outcome, verdict, finding, rid, res))
        keys = self._record(spec, [f[:4] for f in found]) if found else []
        for (case, _, _, finding, rid, res), key in zip(found, keys):
            if self.stop_when is not None and not st.stopped and self.stop_when(finding):
                st.stopped, st.cases_at_stop = True, st.cases
            if key in st.pending and raise_for is None and self.cfg.minimize:
                raise_for = (key, rid, case, finding, res)
        for label, score in scores.items():  # (Hypothesis takes one score per label and example)
            target(score, label=label)
        self._maybe_flush()
        if raise_for is not None:
            key, rid, case_, finding, res = raise_for
            st.target, st.target_runner = key, rid
            st.minimal[key] = (case_, finding, res)
            _raise_for(key)

    def _test_or_abort(self, spec) -> None:
        """`_test`, with a StoreError raised as `_Abort` (see there)."""
        from .store import StoreError

        try:
            self._test(spec)
        except StoreError as exc:
            raise _Abort(exc) from None

    def _materialize_family(self, spec) -> list:
        """The spec's family; while fuzzing, only as many members as the case budget has left (the
        family is drawn whole, so its members do not depend on the budget)."""
        from .strategies import materialize_family

        members = materialize_family(spec, self.family_size(spec))
        if self.cfg.max_cases is not None and self.state.target is None:
            members = members[:max(1, self.cfg.max_cases - self.state.cases)]
        return members

    # ------------------------------------------------------------------ bookkeeping

    def elapsed(self) -> float:
        return self.state.elapsed_before + time.monotonic() - self.state.started

    def _out_of_budget(self) -> bool:
        if self.state.stopped:
            return True
        if self.cfg.max_cases is not None and self.state.cases >= self.cfg.max_cases:
            return True
        return self.cfg.budget_seconds is not None and self.elapsed() >= self.cfg.budget_seconds

    def _maybe_flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < 2.0:
            return
        self._last_flush = now
        if self.state.counts:
            self.store.add_counts(list(self.state.counts.items()))
            self.state.counts.clear()
        if self.state.unsupported:
            self.store.add_unsupported(list(self.state.unsupported.items()))
            self.state.unsupported.clear()
        if self.on_progress:
            self.on_progress(self.progress())

    def progress(self) -> dict[str, Any]:
        el = max(self.elapsed(), 1e-9)
        return {"elapsed": el, "cases": self.state.cases, "cases_per_second": self.state.cases / el,
                "findings": self.state.findings, "buckets": len(self.state.seen),
                "new_buckets": len(self.state.new_buckets)}

    def _finish_minimal(self, key: str) -> None:
        got = self.state.minimal.pop(key, None)
        self.state.pending.pop(key, None)
        if got is not None:
            case, finding, res = got  # res: (outcome, verdict) of the bucket's runner on the case
            self.store.set_minimal(key, case, ratio=finding.max_ratio, explanation=finding.explanation,
                                   outputs=res[0].outputs if res is not None else None)

    # ------------------------------------------------------------------ rounds

    def _timed_round(self, r: int) -> None:
        """`_round(r)`, noting its fuzzing seconds (start-up of lazily started workers excluded) and
        cases in `state.rounds`. The same seed gives round r the same cases whatever `--jobs` runs
        it, so the per-round times compare one core with several on equal work
        (benchmarks/throughput.py)."""
        st = self.state
        t0, c0, s0 = time.perf_counter(), st.cases, st.startup_seconds
        entry = st.rounds[str(r)] = [0.0, 0, False]
        try:
            self._round(r)
        finally:
            entry[:2] = [time.perf_counter() - t0 - (st.startup_seconds - s0), st.cases - c0]
        entry[2] = not self._out_of_budget()

    def _round(self, r: int) -> None:
        from hypothesis import HealthCheck, Phase, given, seed, settings
        from hypothesis import strategies as hst
        from hypothesis.errors import FlakyFailure, FlakyStrategyDefinition

        from .strategies import case_specs

        specs = case_specs(ops=self.cfg.ops or None, modes=self.cfg.modes or None,
                           dtypes=self.cfg.dtypes or None, regimes=self.cfg.regimes or None,
                           max_elements=self.cfg.max_elements, min_elements=self.cfg.min_elements)

        @hst.composite
        def strategy(draw):
            # The budget is checked before each draw as well as in `_test`: an attempt of the target
            # phase whose mutated choices make no valid spec (overrun, rejected) never reaches the
            # test, and Hypothesis went on hill-climbing after the budget (a --jobs 2 RMSNorm
            # campaign with a 60 s budget: 80 s; faulthandler: `optimise_targets`, drawing).
            if self._out_of_budget():
                raise _Spent()
            return draw(specs)

        test = settings(max_examples=EXAMPLES_PER_ROUND, database=None, deadline=None, derandomize=False,
                        phases=[Phase.generate, Phase.target, Phase.shrink], report_multiple_bugs=False,
                        suppress_health_check=list(HealthCheck), print_blob=False)(
            seed(self.cfg.seed * 1_000_003 + r)(given(strategy())(self._test_or_abort)))
        try:
            test()
        except _Spent:
            pass  # (a bucket being shrunk keeps its smallest case so far: the loop below)
        except FlakyStrategyDefinition:
            # `strategy` ended a draw that, on the same choices, went on before the budget was
            # spent: Hypothesis reports the difference instead of the _Spent it raised
            if not self._out_of_budget():
                raise
        except _Found as e:
            self._finish_minimal(type(e).key)
        except _Abort as e:
            raise e.error from None
        except FlakyFailure as e:
            # A bucket's failure did not happen again when Hypothesis replayed its case (a runner
            # whose failures depend on its history: a leak, corrupted state): not shrinkable. The
            # round ends; the loop below keeps the bucket's first case as its reproducer.
            if e.split(_Found)[1] is not None:
                raise
        finally:
            self.state.target = self.state.target_runner = None
        # buckets opened alongside another one in the same case were not shrunk: keep their case
        for key in list(self.state.pending):
            spec, case, outputs = self.state.pending.pop(key)
            got = self.state.minimal.get(key)  # (_finish_minimal pops it)
            if got is None:
                self.store.set_minimal(key, case, outputs=outputs)
            else:
                self._finish_minimal(key)

    def run(self) -> dict[str, Any]:
        """Run until the budget is spent or Ctrl-C; everything found is kept. Returns the summary."""
        from .store import Store, StoreError

        self.runners = self._select_runners()
        if not self.runners:
            raise CampaignConfigError(f"no selected runner is available: {self.unavailable}")
        if self.job is not None:
            return self._run_job()
        # (Store.create makes the folder, and says clearly why when it cannot)
        info = {"config": self.cfg.to_dict(), "seed": self.cfg.seed, "platform": platform_info(),
                "runners": sorted(self.runners), "unavailable": dict(self.unavailable)}
        start_round = 0
        if self.resume:
            self.store = Store.open(self.out)
            try:
                chk = checkpoint_state(self.store)
            except StoreError:
                self.store.close()
                raise
            if isinstance(chk.get("jobs_n"), int) and chk["jobs_n"] >= 1:
                self.cfg.jobs = chk["jobs_n"]  # a campaign resumes with the jobs it started with
            elif chk:
                self.cfg.jobs = 1
            self.store.resume()
            start_round = int(chk.get("round", -1)) + 1
            self.state.cases = int(chk.get("cases", 0))
            self.state.elapsed_before = float(chk.get("elapsed", 0.0))
            self.state.seen = set(self.store.bucket_keys())
            self._keep_first_cases()  # buckets opened just before the kill
        else:
            self.store = Store.create(self.out, info)
        if self.cfg.jobs > 1:
            return self._run_jobs()
        status = "finished"
        r = start_round
        failure: BaseException | None = None
        try:
            self._start_all_workers()
            while not self._out_of_budget():
                self._timed_round(r)
                self._maybe_flush(force=True)
                self.store.checkpoint({"round": r, "cases": self.state.cases, "elapsed": self.elapsed()},
                                      cases_run=self.state.cases)
                r += 1
        except KeyboardInterrupt:
            status = "interrupted"
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._maybe_flush(force=True)
            close_all(self.workers.values())
            if failure is not None:  # release the store and its writer lock, as `with store:` does on an
                # error: counters no checkpoint covers are dropped (a resumed campaign runs those cases again)
                self.store.__exit__(type(failure), failure, failure.__traceback__)
        with self.store:  # closed, its writer lock released, even when concluding fails (a full disk)
            summary = self._conclude(status)
        return summary

    # ------------------------------------------------------------------ --jobs

    def _run_job(self) -> dict[str, Any]:
        """A job's loop (see `_job_main`): the shared database (joined, no lock), its own rounds, its
        own checkpoint under `jobs` in the progress row; no conclusion (the parent's)."""
        from .store import Store

        j, n = self.job
        self.store = Store.open(self.out, joined=True)
        chk = (self.store.progress() or {}).get("jobs", {}).get(str(j), {})  # {} in a new campaign
        r = int(chk.get("next_round", j))
        self.state.cases = int(chk.get("cases", 0))
        self.state.elapsed_before = float(chk.get("elapsed", 0.0))
        self.state.seen = set(self.store.bucket_keys())
        try:
            self._start_all_workers()
            while not self._out_of_budget():
                self._timed_round(r)
                self._maybe_flush(force=True)
                r += n
                self._job_checkpoint(r)
        except KeyboardInterrupt:
            pass
        finally:
            try:
                self._maybe_flush(force=True)
                self._job_checkpoint(r)
            finally:
                close_all(self.workers.values())
                self.store.close()
        return {}


    def _job_checkpoint(self, next_round: int) -> None:
        j, _ = self.job
        self.store.checkpoint_job(j, {"next_round": next_round, "cases": self.state.cases, "elapsed": self.elapsed(),
                                      "startup_seconds": self.state.startup_seconds,
                                      "packed_calls": self.state.packed_calls, "unconfirmed": self.state.unconfirmed,
                                      "families": self.state.families, "elements": self.state.elements,
                                      "unavailable": dict(self.unavailable), "rounds": self.state.rounds})


    def _run_jobs(self) -> dict[str, Any]:
        """The parent of a --jobs campaign: start `cfg.jobs` job processes on the database it holds,
        report progress from their checkpoints, pass Ctrl-C on, conclude when all are done."""
        import multiprocessing
        import signal

        from .store import StoreError

        n = self.cfg.jobs
        self.store.checkpoint_job(None, totals={"round": -1, "jobs_n": n, "cases": self.state.cases,
                                                "elapsed": self.elapsed()})
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_job_main, args=(self.cfg.to_dict(), j, n, os.getpid()), daemon=False)
                 for j in range(n)]
        status = "finished"
        try:
            for p in procs:
                p.start()
            try:
                while any(p.is_alive() for p in procs):
                    for p in procs:
                        p.join(timeout=1.0 / n)
                    self._jobs_progress()
            except KeyboardInterrupt:
                status = "interrupted"
                for p in procs:
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGINT)
                for p in procs:
                    p.join()
            codes = [p.exitcode for p in procs]
            self._jobs_progress()
            bad = [(j, c) for j, c in enumerate(codes) if c not in (0, None)]
            if bad:
                texts = []
                for j, c in bad:
                    f = self.out / f"job-{j}.error"
                    texts.append(f"job {j} exited with {c}: " + (f.read_text() if f.exists() else "(no report)"))
                if all(c == 4 for _, c in bad):
                    raise StoreError("; ".join(texts))
                raise InternalError("\n".join(texts))
        except BaseException as exc:
            for p in procs:
                if p.is_alive():
                    p.kill()
            self.store.__exit__(type(exc), exc, exc.__traceback__)
            raise
        with self.store:
            return self._conclude(status)


    def _jobs_progress(self) -> None:
        """Sum the jobs' checkpoints into the campaign's totals (cases, startup, packing counts) and
        report progress."""
        jobs = (self.store.progress() or {}).get("jobs", {})
        if not isinstance(jobs, dict):
            return
        vals = [v for v in jobs.values() if isinstance(v, dict)]
        st = self.state
        st.cases = sum(int(v.get("cases", 0)) for v in vals)
        st.startup_seconds = max([float(v.get("startup_seconds", 0.0)) for v in vals] or [0.0])
        st.packed_calls = sum(int(v.get("packed_calls", 0)) for v in vals)
        st.families = sum(int(v.get("families", 0)) for v in vals)
        st.elements = sum(int(v.get("elements", 0)) for v in vals)
        st.unconfirmed = sum(int(v.get("unconfirmed", 0)) for v in vals)
        for v in vals:  # runners whose workers could not start in a job (the summary and report say so)
            u = v.get("unavailable")
            if isinstance(u, dict):
                self.unavailable.update({str(k): str(why) for k, why in u.items()})
            if isinstance(v.get("rounds"), dict):  # (each job runs its own rounds)
                st.rounds.update(v["rounds"])
        st.findings = self.store.finding_count()
        st.seen = set(self.store.bucket_keys())
        self.store.checkpoint_job(None, totals={"round": -1, "jobs_n": self.cfg.jobs, "cases": st.cases,
                                                "elapsed": self.elapsed()})
        if self.on_progress:
            self.on_progress(self.progress())

    def _keep_first_cases(self) -> None:
        """Give each bucket found in this campaign that has no reproducer yet (the campaign was
        killed or interrupted between its first finding and the end of its round) the case of its
        first finding, stored with that finding, so that every bucket can be reproduced."""
        for b in self.store.buckets():
            if b["count"] and not b["min_case_id"]:
                first = self.store.findings(b["key"], limit=1)
                if first:
                    self.store.set_minimal(b["key"], self.store.case(first[0]["case_id"]))

    def _conclude(self, status: str) -> dict[str, Any]:
        from .baseline import apply_baseline, apply_known_issues

        self._keep_first_cases()  # buckets opened in a round that Ctrl-C cut short
        warnings = []
        if self.cfg.known_issues:
            warnings += apply_known_issues(self.store, self.cfg.known_issues)
        if self.cfg.baseline:
            apply_baseline(self.store, self.cfg.baseline, self)
        # a finding a runner's declared convention explains is documented behaviour, not news
        for b in self.store.buckets():
            if b["signature"].startswith("convention:") and b["status"] in ("new", "recurring"):
                self.store.set_bucket_status(b["key"], "known", known_issue="documented convention of the runner")
        self.store.finish(status, {"unavailable": dict(self.unavailable), "warnings": warnings,
                                   "startup_seconds": self.state.startup_seconds, "jobs": self.cfg.jobs,
                                   "pack": self.cfg.pack, "pack_elements": self.cfg.pack_elements,
                                   "packed_calls": self.state.packed_calls, "families": self.state.families,
                                   "elements": self.state.elements, "rounds": self.state.rounds,
                                   "unconfirmed_packed_findings": self.state.unconfirmed},
                          cases_run=self.state.cases)
        summary = self.store.summary()
        summary["bucket_list"] = self.store.buckets()
        summary["warnings"] = warnings
        summary["unavailable"] = dict(self.unavailable)
        self.store.export_summary_json(self.out / "summary.json")
        if self.write_report:
            self._write_report()
        self.store.close()
        return summary

    def _write_report(self) -> None:
        """report.html next to the database, when the report package can build it."""
        try:
            from reports import write_report
        except ImportError:
            return
        from .store import StoreError

        try:
            write_report(self.out, self.out / "report.html")
        except OSError as exc:  # a full disk or read-only folder is the environment's failure, not a bug
            raise StoreError(f"{self.out / 'report.html'}: cannot write the report ({exc.strerror or exc}); "
                             f"the findings are stored") from None


# --------------------------------------------------------------------------------------------------
# --jobs: one campaign process per core, sharing the database


def _job_main(cfg_dict: dict, job: int, jobs: int, parent: int) -> None:
    """Entry point of a job process (multiprocessing, spawn): run rounds job, job + jobs, ... of
    the campaign in `cfg_dict["out"]`, whose parent holds the database's writer lock. Exit status
    0 (done or interrupted), 3 (an error of normfuzz; traceback in `job-N.error`), 4 (a StoreError)."""
    import signal
    import traceback

    from .store import StoreError
    from .worker import _die_with_parent

    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cfg = CampaignConfig(**cfg_dict)
    if cfg.max_cases is not None:
        cfg.max_cases = cfg.max_cases // jobs + (1 if job < cfg.max_cases % jobs else 0)
    err = Path(cfg.out) / f"job-{job}.error"
    try:
        Campaign(cfg, job=(job, jobs)).run()
    except KeyboardInterrupt:
        pass
    except StoreError as exc:
        err.write_text(f"StoreError: {exc}\n")
        os._exit(4)
    except BaseException:  # noqa: BLE001 - reported by the parent
        err.write_text(traceback.format_exc())
        os._exit(3)
