"""Gather everything the report shows from a campaign's findings store (read-only).

`collect(run_dir, compare=None)` returns a `ReportData`: the campaign, its totals, every bucket with
its findings, minimal reproducer, the runner's stored outputs judged again against the oracle
(per-element error/bound), the standalone script, and the coverage counters. Nothing is re-run:
the only computation is the oracle (`oracles.evaluate`, through `fuzz.compare.reference`) on the
stored minimal case at the runner's declared precision, which is how the campaign judged it.

Runner objects (for declared conventions, precision and scripts) come from `fuzz.runners.discover`
with the campaign's plug-in factories; loading them imports no framework. A runner that cannot be
loaded here is reported as such, and its minimal cases are judged at the default precision.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fuzz.store import BUCKET_STATUSES, Store, bucket_id

from .conventions import ConventionRow, infer_conventions

__all__ = ["ReportData", "BucketData", "MinimalCase", "OutputView", "collect", "CATEGORY_ORDER", "SEVERITY"]

#: Finding categories from the most to the least severe (a matrix cell takes its worst bucket's).
CATEGORY_ORDER = ("crash", "timeout", "mismatch", "nan_pattern", "bad_output", "precision", "accepted_invalid",
                  "raised")
SEVERITY = {c: len(CATEGORY_ORDER) - i for i, c in enumerate(CATEGORY_ORDER)}
#: Categories whose findings carry no error ratio (the runner returned nothing comparable).
NO_RATIO = ("raised", "crash", "timeout", "bad_output", "accepted_invalid")
#: Findings listed per bucket section (all of them feed the histogram).
FINDINGS_LISTED = 40
#: A minimal case whose inputs exceed this many bytes gets the emit command instead of an inline script.
SCRIPT_INLINE_LIMIT = 64 * 1024
WORST_ELEMENTS = 6


@dataclass
class OutputView:
    """One output of the minimal case: the runner's values judged against the oracle again."""

    name: str
    actual: np.ndarray | None
    reference: np.ndarray | None
    bound: np.ndarray | None
    ratio: np.ndarray | None
    note: str = ""  # why a comparison is missing

    @property
    def max_ratio(self) -> float:
        if self.ratio is None or self.ratio.size == 0:
            return 0.0
        r = self.ratio.astype(np.float64)
        return float(np.inf) if np.isnan(r).any() else float(r.max())

    def worst(self, k: int = WORST_ELEMENTS) -> list[dict[str, Any]]:
        """The k elements with the largest error/bound: index, got, reference, bound, ratio."""
        if self.ratio is None or self.ratio.size == 0:
            return []
        r = self.ratio.astype(np.float64).ravel()
        order = np.argsort(-np.where(np.isnan(r), np.inf, r), kind="stable")[:k]
        out = []
        for i in order:
            idx = [int(v) for v in np.unravel_index(int(i), self.ratio.shape)] if self.ratio.ndim else []
            # values as stored / as the oracle gives them (extended precision for reference and bound)
            out.append({"index": idx, "actual": np.asarray(self.actual).ravel()[i],
                        "reference": np.asarray(self.reference).ravel()[i],
                        "bound": np.asarray(self.bound).ravel()[i], "ratio": float(r[i])})
        return out


@dataclass
class MinimalCase:
    """A bucket's minimal reproducer with everything shown about it."""

    case: Any  # fuzz.case.Case
    summary: str
    inputs: list[dict[str, Any]]  # per input: name, shape, dtype, min, max, mean, std, nan, posinf, neginf, zeros
    attrs: dict[str, Any]
    outcome: dict[str, Any] | None  # the stored outcome of the bucket's runner (None: not stored)
    outputs: list[OutputView]
    outputs_note: str  # why no outputs are shown, or ""
    precision: str  # the precision the oracle was evaluated at
    recomputed_ratio: float | None
    rejection: str = ""


@dataclass
class BucketData:
    key: str
    id: str
    number: int
    row: dict[str, Any]  # the store's bucket row
    status: str  # shown status (vs the compared campaign when given, else the store's)
    findings: list[dict[str, Any]]
    ratios: list[float | None]
    regimes: dict[str, int]
    minimal: MinimalCase | None
    minimal_note: str
    script: str | None
    script_note: str
    repro_command: str
    closest_variant: dict[str, Any] | None
    case_summaries: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # op, mode, runner, dtype, category, signature, count, ...
        row = self.__dict__.get("row")
        if row is not None and name in row:
            return row[name]
        raise AttributeError(name)


@dataclass
class ReportData:
    run_dir: str
    campaign: dict[str, Any]
    summary: dict[str, Any]
    created_by: str
    buckets: list[BucketData]
    fixed_elsewhere: list[dict[str, Any]]  # buckets of the compared campaign not seen here
    counts: list[dict[str, Any]]
    unsupported: list[dict[str, Any]]
    conventions: list[ConventionRow]
    runners: list[str]
    runner_info: dict[str, dict[str, Any]]  # id -> framework, version, loadable, reason
    compare_dir: str | None
    compare_campaign: dict[str, Any] | None
    status_counts: dict[str, int]
    report_version: str


def _runner_objects(plugins: list[str]) -> tuple[dict[str, Any], str]:
    """runner id -> Runner from the registered and the campaign's plug-in factories, and a note
    when some factory cannot be loaded here."""
    from fuzz.runners import RunnerSpecError, discover

    broken: dict[str, str] = {}
    found: dict[str, Any] = {}
    try:
        found = {rid: r for rid, (_, r) in discover([], broken=broken).items()}
    except RunnerSpecError as exc:
        broken["registered"] = str(exc)
    notes = [f"{spec}: {why}" for spec, why in broken.items()]
    for spec in plugins:
        try:
            from fuzz.runners import load_factory

            for r in load_factory(spec):
                found.setdefault(r.id, r)
        except RunnerSpecError as exc:
            notes.append(str(exc))
    return found, "; ".join(notes)


def _value_summary(name: str, a: np.ndarray, dtype: str) -> dict[str, Any]:
    a = np.asarray(a)
    d: dict[str, Any] = {"name": name, "shape": list(a.shape), "dtype": dtype if a.dtype.kind == "f" else str(a.dtype),
                         "size": int(a.size)}
    if a.dtype.kind not in "fiub" or a.size == 0:
        return d
    f = a.astype(np.longdouble)  # float64 squares may overflow in std; the oracle's format does not
    fin = f[np.isfinite(f)]
    d.update(nan=int(np.isnan(f).sum()), posinf=int(np.isposinf(f).sum()), neginf=int(np.isneginf(f).sum()),
             zeros=int((f == 0).sum()))
    if fin.size:
        d.update(min=float(fin.min()), max=float(fin.max()), mean=float(fin.mean()), std=float(fin.std()))
        # (all four lie within the input's range, so they fit a float64)
    if a.dtype.kind == "f":
        from oracles.dtypes import dtype as fmt

        tiny = fmt(dtype).tiny if dtype in ("float16", "bfloat16", "float32", "float64") else 0.0
        d["subnormal"] = int(((fin != 0) & (np.abs(fin) < tiny)).sum())
    return d


def _minimal(store: Store, b: dict[str, Any], runner, conv_note: str) -> tuple[MinimalCase | None, str]:
    from fuzz.compare import reference
    from fuzz.runners.base import Conventions
    from oracles.errormodel import error_ratio

    cid = b.get("min_case_id")
    if not cid:
        return None, "no minimal reproducer is stored for this bucket"
    try:
        case = store.case(cid)
    except KeyError:
        return None, f"the minimal case {cid} is not stored in this campaign's database"
    outcome = next((o for o in store.outcomes(cid) if o["runner"] == b["runner"]), None)
    conv = runner.conventions_for(case.op, case.attrs) if runner is not None else Conventions()
    prec = conv.precision(case.dtype)
    prec_text = f"{prec.dtype} inputs, accumulation {prec.accum}, elementwise {prec.elementwise}"
    if runner is None:
        prec_text += f" (default: {conv_note})"
    ref = reference(case, prec)
    stored = store.outputs(cid, b["runner"])
    views: list[OutputView] = []
    note = ""
    rejection = ""
    if ref.evaluation is None:
        rejection = str(ref.rejection)
    if stored is None:
        if outcome is not None and outcome["status"] != "OK":
            note = f"the runner returned no outputs (outcome {outcome['status']})"
        else:
            note = "the runner's outputs for this case are not stored (older database, or larger than the store keeps)"
    elif ref.evaluation is None:
        note = f"the oracle rejects this case: {rejection}"
        views = [OutputView(n, a, None, None, None, "no reference") for n, a in stored.items()]
    else:
        ev = ref.evaluation
        for n, a in stored.items():
            if n not in ev.outputs:
                views.append(OutputView(n, a, None, None, None, f"{n} is not an output of {case.op}/{case.mode}"))
            elif tuple(np.shape(a)) != ev.outputs[n].shape:
                views.append(OutputView(n, a, None, None, None,
                                        f"shape {tuple(np.shape(a))}, the reference has {ev.outputs[n].shape}"))
            else:
                r = error_ratio(a, ev.outputs[n], ev.bounds[n], case.dtype)
                views.append(OutputView(n, np.asarray(a), ev.outputs[n], ev.bounds[n], r))
    # the bucket's own output (signature) first, then by worst ratio
    views.sort(key=lambda v: (v.name != b["signature"], -v.max_ratio if v.ratio is not None else 1.0, v.name))
    ratios = [v.max_ratio for v in views if v.ratio is not None]
    recomputed = max(ratios) if ratios else None
    inputs = [_value_summary(n, a, case.dtype) for n, a in case.inputs.items()]
    return MinimalCase(case, case.summary(), inputs, dict(case.attrs), outcome, views, note, prec_text, recomputed,
                       rejection), ""


def _script(case, runner, version: str | None, note: str, emit_cmd: str) -> tuple[str | None, str]:
    from fuzz.runners.base import Unsupported
    from fuzz.scripts import emit_script

    if runner is None:
        return None, "the runner is not loadable here, so its script cannot be written"
    if sum(a.nbytes for a in case.inputs.values()) > SCRIPT_INLINE_LIMIT:
        return None, f"the inputs are large; write the script with: {emit_cmd}"
    try:
        return emit_script(case, runner, version=version, note=note), ""
    except Unsupported as exc:
        return None, f"the runner cannot write this call as a script: {exc}"
    except ValueError as exc:  # the runner writes no scripts
        return None, str(exc)
    except ImportError as exc:  # a script writer that needs a package missing here (onnx)
        return None, f"the script writer needs a package that is not installed here: {exc}"


def _statuses(store_buckets: list[dict[str, Any]], other: list[dict[str, Any]] | None
              ) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Shown status per bucket key, and the compared campaign's buckets not seen here (fixed)."""
    if other is None:
        return {b["key"]: b["status"] for b in store_buckets}, []
    seen_before = {b["key"] for b in other if b["count"] > 0}
    out = {}
    for b in store_buckets:
        if b["count"] == 0:
            out[b["key"]] = "fixed"
        elif b["known_issue"]:
            out[b["key"]] = "known"
        else:
            out[b["key"]] = "recurring" if b["key"] in seen_before else "new"
    here = {b["key"] for b in store_buckets if b["count"] > 0}
    fixed = [b for b in other if b["count"] > 0 and b["key"] not in here]
    return out, fixed


def collect(run_dir: str | Path, compare: str | Path | None = None) -> ReportData:
    """Everything the report shows, read from the campaign in `run_dir` (and `compare`'s buckets)."""
    from fuzz.cli import version as normfuzz_version

    run_dir_s = str(run_dir)
    other_buckets = other_campaign = None
    if compare is not None:
        with Store.open(compare, readonly=True) as prev:
            other_buckets = prev.buckets()
            other_campaign = prev.campaign()
    with Store.open(run_dir, readonly=True) as store:
        campaign = store.campaign()
        summary = store.summary()
        created_by = str((campaign.get("platform") or {}).get("normfuzz", ""))
        rows = store.buckets()
        counts = store.counts()
        unsupported = store.unsupported()
        plugins = list(campaign["config"].get("plugins") or [])
        runners_found, runner_note = _runner_objects(plugins)
        campaign_runners = list(campaign["extra"].get("runners") or campaign["config"].get("runners") or [])
        seen = {c["runner"] for c in counts} | {b["runner"] for b in rows} | {u["runner"] for u in unsupported}
        runner_ids = sorted(set(campaign_runners) | seen)
        frameworks = campaign.get("frameworks") or {}
        unavailable = campaign["extra"].get("unavailable") or {}
        runner_info = {}
        for rid in runner_ids:
            r = runners_found.get(rid)
            runner_info[rid] = {"framework": getattr(r, "framework", "") if r else "",
                                "version": frameworks.get(rid, ""), "loadable": r is not None,
                                "unavailable": unavailable.get(rid, ""),
                                "reason": "" if r is not None else (runner_note or "no registered factory makes it")}
        statuses, fixed = _statuses(rows, other_buckets)
        repro_flags = "".join(f" --runner {shlex.quote(p)}" for p in plugins)
        buckets: list[BucketData] = []
        order = sorted(rows, key=lambda b: (b["count"] == 0, -SEVERITY.get(b["category"], 0), -b["count"], b["key"]))
        for i, b in enumerate(order, 1):
            bid = bucket_id(b["key"])
            findings = store.findings(bucket_key=b["key"])
            ratios = [None if b["category"] in NO_RATIO else f["max_ratio"] for f in findings]
            regimes: dict[str, int] = {}
            for f in findings:
                regimes[f["regime"] or ""] = regimes.get(f["regime"] or "", 0) + 1
            runner = runners_found.get(b["runner"])
            minimal, mnote = _minimal(store, b, runner, runner_info.get(b["runner"], {}).get("reason", ""))
            target = f"{run_dir_s.rstrip('/')}/{bid}"
            cmd = f"normfuzz repro {shlex.quote(target)}{repro_flags}"
            script, snote = (None, mnote or "no minimal case")
            if minimal is not None:
                emit = f"{cmd} --emit-script DIR"
                script, snote = _script(minimal.case, runner, frameworks.get(b["runner"]) or None, b["key"], emit)
            closest = None
            for f in findings:
                cv = (f.get("details") or {}).get("closest_variant")
                if cv and (closest is None or (cv.get("score") or math.inf) < (closest.get("score") or math.inf)):
                    closest = cv
            summaries = {}
            for f in findings[:FINDINGS_LISTED]:
                if f["case_id"] not in summaries:
                    try:
                        summaries[f["case_id"]] = store.case(f["case_id"]).summary()
                    except KeyError:
                        summaries[f["case_id"]] = f["case_id"]
            buckets.append(BucketData(b["key"], bid, i, b, statuses[b["key"]], findings, ratios, regimes, minimal,
                                      mnote, script, snote, cmd, closest, summaries))
        conv_map = {}
        pairs = {(c["runner"], c["op"]) for c in counts} | {(b["runner"], b["op"]) for b in rows}
        for rid, op in pairs:
            r = runners_found.get(rid)
            if r is not None:
                conv_map[(rid, op)] = r.conventions_for(op, {})
        bucket_rows = [dict(b.row, regimes=dict(b.regimes)) for b in buckets]
        conventions = infer_conventions(runner_ids, conv_map, counts, bucket_rows,
                                        {rid: info["reason"] for rid, info in runner_info.items() if not info["loadable"]})
    status_counts = {s: 0 for s in BUCKET_STATUSES}
    for b in buckets:
        status_counts[b.status] = status_counts.get(b.status, 0) + 1
    status_counts["fixed"] += len(fixed)
    return ReportData(run_dir_s, campaign, summary, created_by, buckets, fixed, counts, unsupported, conventions,
                      runner_ids, runner_info, None if compare is None else str(compare), other_campaign,
                      status_counts, normfuzz_version())
