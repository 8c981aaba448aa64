"""Bucket status against the world: known issues (a file with upstream links) and a baseline campaign.

Known-issues file (TOML), one table per issue; every field but `link` is a pattern matched with
`fnmatch` against the bucket's structured field (missing = "*"):

    [[issue]]
    op = "group_norm"
    runner = "ort*"
    category = "mismatch"
    signature = "one_pass_variance*"
    dtype = "*"
    mode = "forward"
    link = "https://github.com/microsoft/onnxruntime/issues/NNNN"
    note = "GroupNormalization runs the function body's E[x^2]-E[x]^2"

A bucket matching an entry is `known` (its link kept); an entry that matched no bucket produces a
warning, so stale entries are noticed. A baseline (a previous campaign's folder) marks each bucket
`recurring` (also in the baseline) or `new`, and each baseline bucket not seen now is re-run from its
minimal reproducer: still reproducing -> `recurring` (recorded in this campaign), else `fixed`.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path
from typing import Any

FIELDS = ("op", "mode", "runner", "category", "signature", "dtype")


class KnownIssuesError(ValueError):
    """A known-issues file that cannot be read or has an invalid entry."""


def load_known_issues(path: str | Path) -> list[dict[str, str]]:
    """The entries of a known-issues file; raises KnownIssuesError with the reason."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise KnownIssuesError(f"known-issues file {p}: {e}") from e
    entries = data.get("issue", [])
    if not isinstance(entries, list):
        raise KnownIssuesError(f"known-issues file {p}: 'issue' must be an array of tables ([[issue]])")
    out = []
    for i, e in enumerate(entries):
        unknown = set(e) - set(FIELDS) - {"link", "note"}
        if unknown:
            raise KnownIssuesError(f"known-issues file {p}: entry {i} has unknown keys {sorted(unknown)}; "
                                   f"expected some of {list(FIELDS) + ['link', 'note']}")
        if not e.get("link"):
            raise KnownIssuesError(f"known-issues file {p}: entry {i} has no 'link' (the upstream report)")
        out.append({k: str(v) for k, v in e.items()})
    return out


def matches(entry: dict[str, str], bucket: dict[str, Any]) -> bool:
    return all(fnmatch.fnmatchcase(str(bucket[f]), entry.get(f, "*")) for f in FIELDS)


def apply_known_issues(store, path: str | Path) -> list[str]:
    """Mark matching buckets known; return warnings for entries that matched nothing."""
    entries = load_known_issues(path)
    used = [False] * len(entries)
    for b in store.buckets():
        for i, e in enumerate(entries):
            if matches(e, b):
                used[i] = True
                store.set_bucket_status(b["key"], "known", known_issue=e["link"])
                break
    return [f"known issue {i} ({e['link']}) matched no bucket: is it fixed, or is the entry stale?"
            for i, (e, u) in enumerate(zip(entries, used)) if not u]


def apply_baseline(store, baseline_dir: str | Path, campaign) -> None:
    """Mark buckets new/recurring/fixed against a previous campaign (re-running its minimal cases)."""
    from .store import Store
    from .triage import bucket_key, judge

    prev = Store.open(baseline_dir, readonly=True)
    current = {b["key"]: b for b in store.buckets()}
    prev_buckets = {b["key"]: b for b in prev.buckets()}
    for key, b in current.items():
        if b["status"] == "known":
            continue
        store.set_bucket_status(key, "recurring" if key in prev_buckets else "new")
    for key, pb in prev_buckets.items():
        if key in current or not pb.get("min_case_id"):
            continue
        case = prev.case(pb["min_case_id"])
        rid = pb["runner"]
        status = "fixed"
        if rid in campaign.runners and rid not in campaign.unavailable:
            runner = campaign.runners[rid][1]
            if runner.supports(case.op, case.mode, case.dtype, case.attrs) is None:
                w = campaign._worker(rid)
                if w is not None:
                    conv = runner.conventions_for(case.op, case.attrs)
                    outcome = w.run(case)
                    verdict, finding = judge(case, outcome, conv, regime=pb.get("regime", ""))
                    if finding is not None and bucket_key(*finding.key) == key:
                        store.record_finding(case, outcome, finding, verdict)
                        store.set_minimal(key, case, finding.max_ratio, finding.explanation)
                        status = "recurring"
        else:
            continue  # runner not in this campaign: no verdict on the baseline bucket
        if status == "fixed":
            store.add_baseline_bucket(pb, status)
    prev.close()
