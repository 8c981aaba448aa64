"""Render a `ReportData` as one self-contained HTML page (styles, scripts and SVG figures inline).

The page needs no network: a Content-Security-Policy forbids every fetch (`default-src 'none'`)
and allows exactly this package's two inline scripts (by hash). Every string from the campaign goes
through `reports.html.el`, which escapes it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any, Iterable

from .assets import APP, CSS, ERROR_CAPTURE, csp_hash
from .build import CATEGORY_ORDER, NO_RATIO, SEVERITY, BucketData, ReportData
from .conventions import PROPERTIES
from .figures import output_scatter, ratio_heatmap, ratio_histogram
from .html import Markup, el, fmt_num, fmt_ratio, fmt_seconds, join

__all__ = ["render"]

SHORT_DTYPE = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}
DTYPE_ORDER = ("float16", "bfloat16", "float32", "float64")
STATUS_HELP = {
    "new": "first seen in this campaign",
    "known": "matches a known issue",
    "recurring": "also seen in the compared (baseline) campaign",
    "fixed": "seen in the compared campaign, not in this one",
}
CATEGORY_HELP = {
    "crash": "the worker process died (signal or exit code)",
    "timeout": "no answer within the per-case time limit",
    "mismatch": "outside the error bound, explained by a bug-zoo variant or a convention",
    "nan_pattern": "NaN/Inf where the oracle is finite, or the reverse",
    "bad_output": "not a valid output (wrong name, shape or dtype)",
    "precision": "outside the error bound, no variant or convention explains it",
    "accepted_invalid": "returned outputs for an input the oracle rejects",
    "raised": "the framework raised where the oracle defines a result",
}
HEATMAPS_PER_BUCKET = 3


def _badge(text: str, cls: str, title: str | None = None) -> Markup:
    return el("span", text, class_=f"badge {cls}", title=title)


def _cat(category: str) -> Markup:
    return _badge(category, f"cat-{category}", CATEGORY_HELP.get(category))


def _status(status: str) -> Markup:
    return _badge(status, f"st-{status}", STATUS_HELP.get(status))


def _kv(rows: Iterable[tuple[str, Any]]) -> Markup:
    return el("table", el("tbody", [el("tr", el("th", k), el("td", v)) for k, v in rows]), class_="kv")


def _kv2(rows: list[tuple[str, Any]]) -> Markup:
    """Key/value pairs two to a table row (compact for long lists such as the configuration)."""
    half = (len(rows) + 1) // 2
    trs = []
    for i in range(half):
        cells = [el("th", rows[i][0]), el("td", rows[i][1])]
        if i + half < len(rows):
            cells += [el("th", rows[i + half][0]), el("td", rows[i + half][1])]
        trs.append(el("tr", cells))
    return el("table", el("tbody", trs), class_="kv kv2")


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _table(head: list[tuple[str, str]], rows: list[Markup], *, tid: str | None = None, sortable: bool = True,
           cls: str = "") -> Markup:
    """head: (label, css class) pairs; rows: rendered <tr>s."""
    ths = [el("th", label, class_=c or None, data_col=label.lower().replace(" ", "_").replace("/", "_"))
           for label, c in head]
    classes = " ".join(x for x in ("sortable" if sortable else "", cls) if x) or None
    return el("table", el("thead", el("tr", ths)), el("tbody", rows), id=tid, class_=classes)


def _num(x: Any, digits: int = 4, sort: Any = None) -> Markup:
    v = sort if sort is not None else x
    return el("td", fmt_num(x, digits), class_="num", data_sort=_sort_key(v))


def _sort_key(v: Any) -> str | None:
    if v is None:
        return "-1"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if math.isnan(f):
        return "inf"
    return "inf" if f == math.inf else ("-inf" if f == -math.inf else repr(f))


def _safe_link(text: str) -> Markup:
    """A link for http(s) URLs only (a known-issue field may hold any text); otherwise plain text."""
    t = text.strip()
    if t.lower().startswith(("https://", "http://")) and not any(c in t for c in " \n\t\"'<>"):
        return el("a", t, href=t, rel="noreferrer")
    return el("span", t)


# --------------------------------------------------------------------------------------------------
# Header and summary


def _header(d: ReportData) -> Markup:
    c = d.campaign
    cfg = c["config"]
    plat = c.get("platform") or {}
    extra = c.get("extra") or {}
    runs = [
        ("campaign id", el("code", c["id"])),
        ("status", c["status"] + (f" (resumed {c['resumes']}x)" if c.get("resumes") else "")),
        ("seed", str(c["seed"])),
        ("started", c["started_at"]),
        ("finished", c["finished_at"] or "—"),
        ("active duration", fmt_seconds(c["seconds"])),
        ("cases run", fmt_num(c["cases_run"])),
        ("campaign folder", el("code", d.run_dir)),
        ("normfuzz", f"{d.created_by or '?'} (campaign); {d.report_version} (this report)"),
    ]
    if d.compare_dir:
        cc = d.compare_campaign or {}
        runs.append(("compared with", join([el("code", d.compare_dir), f" (campaign {cc.get('id', '?')}, "
                                            f"{fmt_num(cc.get('cases_run'))} cases)"])))
    frameworks = []
    for rid in d.runners:
        info = d.runner_info[rid]
        text = info["version"] or ("not run" if not info["unavailable"] else "unavailable")
        notes = []
        if info["unavailable"]:
            notes.append(f"unavailable: {info['unavailable']}")
        if not info["loadable"]:
            notes.append(f"not loadable while writing this report: {info['reason']}")
        frameworks.append((rid, join([f"{info['framework'] + ' ' if info['framework'] else ''}{text}",
                                      [el("div", n, class_="muted") for n in notes]])))
    config_rows = [(k, el("code", _compact(v))) for k, v in sorted(cfg.items())]
    plat_rows = [(k, str(v)) for k, v in sorted(plat.items())]
    warn = list(extra.get("warnings") or [])
    body = [
        el("h1", f"normfuzz campaign {c['id']}"),
        el("p", "Differential fuzzing of normalization layers against high-precision oracles. Each finding "
                "is an output outside the per-element error bound of an honest implementation, a NaN/Inf "
                "pattern difference, or a failure; findings are deduplicated into buckets.", class_="note"),
        el("div", el("div", el("h3", "Run"), _kv(runs)),
           el("div", el("h3", "Framework versions (per runner)"), _kv(frameworks) if frameworks else el("p", "none")),
           class_="grid"),
        el("h3", "Configuration"), _kv2(config_rows),
        el("h3", "Platform"), _kv2(plat_rows),
    ]
    if warn:
        body.append(el("h3", "Warnings"))
        body.append(el("ul", [el("li", w) for w in warn]))
    return el("section", body, id="header")


def _summary(d: ReportData) -> Markup:
    s = d.summary
    cps = s.get("cases_per_second")
    buckets_by_cat: dict[str, int] = defaultdict(int)
    for b in d.buckets:
        if b.count:
            buckets_by_cat[b.category] += 1
    cats = sorted(set(s["findings_by_category"]) | set(buckets_by_cat), key=lambda c: -SEVERITY.get(c, 0))
    cards = el("div", [
        el("div", el("div", fmt_num(s["cases_run"]), class_="v"), el("div", "cases run", class_="k"), class_="card"),
        el("div", el("div", fmt_num(cps, 3) if cps else "—", class_="v"), el("div", "cases per second", class_="k"),
           class_="card"),
        el("div", el("div", fmt_num(s["findings"]), class_="v"), el("div", "findings", class_="k"), class_="card"),
        el("div", el("div", fmt_num(sum(1 for b in d.buckets if b.count)), class_="v"),
           el("div", "buckets with findings", class_="k"), class_="card"),
        el("div", el("div", fmt_num(s.get("unsupported", 0)), class_="v"),
           el("div", "unsupported (runner, case) pairs", class_="k"), class_="card"),
    ], class_="cards")
    by_cat = _table([("category", ""), ("findings", "num"), ("buckets", "num"), ("meaning", "")], [
        el("tr", el("td", _cat(c)), _num(s["findings_by_category"].get(c, 0)), _num(buckets_by_cat.get(c, 0)),
           el("td", CATEGORY_HELP.get(c, ""), class_="muted")) for c in cats], sortable=False)
    against = (f"against {d.compare_dir} (by bucket key)" if d.compare_dir else
               "as stored by the campaign (its baseline and known issues, if any)")
    by_status = _table([("status", ""), ("buckets", "num"), ("meaning", "")], [
        el("tr", el("td", _status(st)), _num(n), el("td", STATUS_HELP[st], class_="muted"))
        for st, n in d.status_counts.items()], sortable=False)
    results = s.get("results") or {}
    res_tab = _table([("result", ""), ("runner runs", "num")], [
        el("tr", el("td", _cat(r) if r in CATEGORY_HELP or r in ("agree", "unsupported") else r), _num(n))
        for r, n in sorted(results.items(), key=lambda kv: -kv[1])], sortable=False)
    parts = [el("h2", "Summary"), cards,
             el("div", el("div", el("h3", "Findings and buckets by category"), by_cat),
                el("div", el("h3", f"Bucket status {against}"), by_status), class_="grid"),
             el("div", el("div", el("h3", "Every judged run by result"),
                          el("p", "One case run by one runner counts once (a case Hypothesis generates twice counts twice; findings are unique per case and runner).", class_="note"), res_tab), class_="grid")]
    if d.fixed_elsewhere:
        rows = [el("tr", el("td", _status("fixed")), el("td", _cat(b["category"])), el("td", b["op"]),
                   el("td", b["mode"]), el("td", b["runner"]), el("td", b["dtype"]), el("td", b["signature"], class_="mono"),
                   _num(b["count"]), el("td", b.get("min_summary") or "", class_="mono"))
                for b in d.fixed_elsewhere]
        parts += [el("h3", f"Fixed: buckets of {d.compare_dir} not seen in this campaign"),
                  _table([("status", ""), ("category", ""), ("op", ""), ("mode", ""), ("runner", ""), ("dtype", ""),
                          ("signature", ""), ("findings there", "num"), ("minimal case there", "")], rows)]
    return el("section", parts, id="summary")


# --------------------------------------------------------------------------------------------------
# Matrix


def _matrix(d: ReportData) -> Markup:
    cases: dict[tuple[str, str, str], int] = defaultdict(int)
    for c in d.counts:
        if c["result"] != "unsupported":
            cases[(c["op"], c["runner"], c["dtype"])] += int(c["count"])
    unsup: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for u in d.unsupported:
        unsup[(u["op"], u["runner"], u["dtype"])].append(f"{u['mode']}: {u['reason']} ({u['count']}x)")
    bmap: dict[tuple[str, str, str], list[BucketData]] = defaultdict(list)
    for b in d.buckets:
        bmap[(b.op, b.runner, b.dtype)].append(b)
    ops = sorted({k[0] for k in cases} | {k[0] for k in bmap} | {k[0] for k in unsup})
    dtypes = [t for t in DTYPE_ORDER if any(k[2] == t for k in list(cases) + list(bmap) + list(unsup))]
    runners = [r for r in d.runners if any(k[1] == r for k in list(cases) + list(bmap) + list(unsup))]
    head = el("tr", el("th", "op"), [el("th", r) for r in runners])
    rows = []
    for op in ops:
        tds = []
        for r in runners:
            chips = []
            for t in dtypes:
                key = (op, r, t)
                bs = [b for b in bmap.get(key, []) if b.count]
                fixed = [b for b in bmap.get(key, []) if not b.count]
                n = cases.get(key, 0)
                if bs:
                    worst = max(bs, key=lambda b: SEVERITY.get(b.category, 0))
                    links = [el("a", f"#{b.number}", href=f"#b-{b.id}", title=f"{b.category} {b.signature} "
                                f"({b.count} findings) {b.mode}") for b in bs[:6]]
                    more = f" +{len(bs) - 6}" if len(bs) > 6 else ""
                    chips.append(el("span", el("b", SHORT_DTYPE[t]), " ", join(links, " "), more,
                                    el("br"), el("span", f"{n} runs", class_="n"),
                                    class_=f"chip cat-{worst.category}", data_category=worst.category,
                                    title=f"{op} · {r} · {t}: worst category {worst.category}, {len(bs)} buckets, "
                                          f"{n} runs"))
                elif n:
                    chips.append(el("span", el("b", SHORT_DTYPE[t]), " ok", el("br"), el("span", f"{n} runs", class_="n"),
                                    class_="chip cat-agree", data_category="agree",
                                    title=f"{op} · {r} · {t}: {n} runs, no finding"
                                          + (f"; {len(fixed)} fixed bucket(s)" if fixed else "")))
                elif key in unsup:
                    chips.append(el("span", el("b", SHORT_DTYPE[t]), " n/a", el("br"), el("span", "unsupported", class_="n"),
                                    class_="chip cat-unsupported", data_category="unsupported",
                                    title="; ".join(unsup[key][:5])))
                else:
                    chips.append(el("span", el("b", SHORT_DTYPE[t]), " —", el("br"), el("span", "not run", class_="n"),
                                    class_="chip cat-none", title=f"{op} · {r} · {t}: no case ran"))
            tds.append(el("td", el("div", chips, class_="chips")))
        rows.append(el("tr", el("th", op, class_="op"), tds))
    legend = el("div", "cell colour = worst category:", [_cat(c) for c in CATEGORY_ORDER],
                _badge("agree (no finding)", "cat-agree"), _badge("unsupported", "cat-unsupported"),
                _badge("not run", "cat-none"), class_="legend")
    return el("section", el("h2", "Matrix: op × runner × dtype"),
              el("p", "Each chip is one (op, runner, dtype): its colour is the worst category among its buckets, "
                      "the #numbers link to the bucket sections below, 'runs' counts the cases that runner judged "
                      "(all modes and regimes).", class_="note"),
              legend, el("table", el("thead", head), el("tbody", rows), class_="matrix", id="matrix"), id="matrix-section")


# --------------------------------------------------------------------------------------------------
# Conventions


def _conventions(d: ReportData) -> Markup:
    if not d.conventions:
        return el("section", el("h2", "Conventions"), el("p", "No runner ran a case.", class_="note"), id="conventions")
    shown = [p for p in PROPERTIES if any(row.cells[p.key].state != "n/a" for row in d.conventions)]
    hidden = [p for p in PROPERTIES if p not in shown]
    head = el("tr", el("th", "runner"), el("th", "op"), el("th", "cases", class_="num"),
              [el("th", p.label) for p in shown])
    rows = []
    evidence = []
    n_diff = 0
    mark = {"agrees": "✓ ", "differs": "✗ ", "unobserved": "? ", "undeclared": "", "unknown": "", "n/a": ""}
    for row in d.conventions:
        tds = []
        for p in shown:
            o = row.cells[p.key]
            n_diff += o.state == "differs"
            links = []
            for k in o.buckets[:4]:
                b = next((x for x in d.buckets if x.key == k), None)
                if b is not None:
                    links.append(el("a", f"#{b.number}", href=f"#b-{b.id}"))
            if o.state == "n/a":
                tds.append(el("td", "—", class_="prop na", data_state=o.state, title=o.evidence))
                continue
            tds.append(el("td", el("span", mark.get(o.state, ""), o.observed, class_="o"),
                          el("span", "declared: ", o.declared, class_="d"),
                          el("span", o.short, " ", join(links, " ") if links else None, class_="e"),
                          class_="prop " + o.state, data_state=o.state, title=o.evidence))
            evidence.append(el("li", el("b", f"{row.runner} · {row.op} · {p.label}: "), o.evidence))
        rows.append(el("tr", el("th", row.runner, title=f"declared in: {row.declared_from}"), el("td", row.op),
                       _num(row.cases), tds))
    legend = el("div", "cell: observed value, then the declaration and the evidence (hover for the full "
                       "sentence):", el("span", "✓ agrees", class_="badge", style="background:#eef8ef"),
                el("span", "✗ differs", class_="badge", style="background:#ffe3e0;outline:2px solid #d32f2f"),
                el("span", "? not observed", class_="badge", style="background:#fafafa;color:#777"),
                el("span", "observed, nothing declared", class_="badge", style="background:#eef3fb"),
                el("span", "unknown declaration", class_="badge", style="background:#fff8e1"), class_="legend")
    how = el("details", el("summary", "How each observation is inferred"), el("ul", [
        el("li", "Contradiction: a bucket of the runner and op whose signature is a bug-zoo variant standing "
                 "for another convention (momentum_inverted, running_var_estimator_swapped, eps_outside_sqrt, "
                 "eps_dropped, eps_squared, l2_eps_added_to_norm, l2_eps_convention_swapped, nan_spreads): the "
                 "variant's formula reproduces the runner's outputs within the error bound. NaN-pattern findings "
                 "that no variant explains also mark the NaN rule as different."),
        el("li", "Batch of one: cases of regime size_one (batches, spatial dims or reduction sets of one "
                 "element) that raised show 'raises' (as declared when triage explained them with "
                 "convention:batch_of_one); agreeing ones show 'normalizes' (the oracle gives beta); NaN-pattern "
                 "ones show 'NaN'."),
        el("li", "Consistency: cases that exercise the convention and agreed with the oracle, which evaluates "
                 "the case's conventions (the runner maps them through its declaration): batch_norm "
                 "training/training_steps for momentum and the running-variance estimator, regimes var_near_eps "
                 "and constant for eps, nonfinite for NaN propagation, every case of the op for affine "
                 "granularity (no bug-zoo variant tests it). Agreement is consistent with the declaration, "
                 "not a proof."),
        el("li", "Counts come from the campaign's per-(op, mode, runner, dtype, regime, result) counters and its "
                 "buckets; nothing is re-run."),
    ]))
    return el("section", el("h2", "Conventions: declared vs observed"),
              el("p", f"{len(d.conventions)} (runner, op) pairs; {n_diff} observation(s) differ from the "
                      f"declaration (outlined in red)."
                      + (f" Not shown: {', '.join(p.label for p in hidden)} (no op of this campaign has it)."
                         if hidden else ""), class_="note"),
              legend, how, el("div", el("table", el("thead", head), el("tbody", rows), class_="conv", id="conv-table"),
                              style="overflow-x:auto"),
              el("details", el("summary", f"Evidence of every observation ({len(evidence)}, with counts)"),
                 el("ul", evidence, class_="evidence")), id="conventions")


# --------------------------------------------------------------------------------------------------
# Buckets


def _bucket_table(d: ReportData) -> Markup:
    rows = []
    for b in d.buckets:
        rows.append(el("tr",
                       el("td", f"#{b.number}", data_sort=b.number, class_="num"),
                       el("td", el("a", b.id, href=f"#b-{b.id}", class_="mono")),
                       el("td", _status(b.status), data_sort=b.status),
                       el("td", _cat(b.category), data_sort=b.category),
                       el("td", b.op), el("td", b.mode), el("td", b.runner), el("td", b.dtype),
                       el("td", b.signature, class_="mono"),
                       _num(b.count),
                       el("td", "—" if b.category in NO_RATIO else fmt_ratio(b.min_ratio), class_="num",
                          data_sort="-1" if b.category in NO_RATIO else _sort_key(b.min_ratio)),
                       el("td", b.min_summary or "—", class_="mono case"),
                       data_category=b.category, data_runner=b.runner, data_status=b.status,
                       data_target=f"b-{b.id}"))
    head = [("#", "num"), ("id", ""), ("status", ""), ("category", ""), ("op", ""), ("mode", ""), ("runner", ""),
            ("dtype", ""), ("signature", ""), ("findings", "num"), ("min err/bound", "num"), ("minimal case", "")]

    def select(field: str, values: Iterable[str]) -> Markup:
        return el("label", f"{field} ", el("select", el("option", "all", value=""),
                                           [el("option", v, value=v) for v in sorted(set(values))],
                                           data_field=field))

    bar = el("div", select("category", [b.category for b in d.buckets]), select("runner", [b.runner for b in d.buckets]),
             select("status", [b.status for b in d.buckets]),
             el("label", "text ", el("input", type="search", placeholder="op, signature, case…", size="22")),
             el("button", "reset", type="button", class_="reset"), el("span", "", class_="shown"),
             class_="filters", data_for="bucket-table", data_linked="section.bucket")
    return el("div", bar, el("div", _table(head, rows, tid="bucket-table"), style="overflow-x:auto"))


def _inputs_table(m) -> Markup:
    rows = []
    for i in m.inputs:
        special = ", ".join(f"{i[k]} {lab}" for k, lab in (("nan", "NaN"), ("posinf", "+inf"), ("neginf", "-inf"),
                                                           ("zeros", "zero"), ("subnormal", "subnormal")) if i.get(k))
        rows.append(el("tr", el("td", i["name"], class_="mono"), el("td", "[" + ",".join(map(str, i["shape"])) + "]"),
                       el("td", i["dtype"]), _num(i.get("min"), 6), _num(i.get("max"), 6), _num(i.get("mean"), 6),
                       _num(i.get("std"), 6), el("td", special or "—")))
    return _table([("input", ""), ("shape", ""), ("dtype", ""), ("min", "num"), ("max", "num"), ("mean", "num"),
                   ("std", "num"), ("special values", "")], rows, sortable=False)


def _verdict_table(outcome: dict | None) -> Markup | None:
    v = (outcome or {}).get("verdict") or {}
    checks = v.get("checks") or []
    if not checks:
        return None
    rows = [el("tr", el("td", c["name"], class_="mono"), el("td", fmt_ratio(c["max_ratio"]), class_="num"),
               el("td", str(c["worst_index"])), _num(c["actual"], 9), _num(c["expected"], 9), _num(c["bound"], 3),
               el("td", f"{c['exceeding']} / {c['elements']}", class_="num"), _num(c["pattern_mismatches"]),
               _num(c["unconstrained"])) for c in checks]
    return _table([("output", ""), ("max err/bound", "num"), ("worst index", ""), ("got", "num"),
                   ("reference", "num"), ("bound", "num"), ("exceeding", "num"), ("NaN-pattern diffs", "num"),
                   ("unconstrained", "num")], rows, sortable=False)


def _worst_table(view) -> Markup:
    rows = [el("tr", el("td", str(w["index"])), _num(w["actual"], 9), _num(w["reference"], 9), _num(w["bound"], 3),
               el("td", fmt_ratio(w["ratio"]), class_="num")) for w in view.worst()]
    return _table([("index", ""), ("got", "num"), ("reference", "num"), ("bound", "num"), ("err/bound", "num")],
                  rows, sortable=False)


def _bucket_section(d: ReportData, b: BucketData) -> Markup:
    m = b.minimal
    head = el("h3", f"#{b.number}", _cat(b.category), _status(b.status),
              el("span", f"{b.op}/{b.mode} · {b.runner} · {b.dtype} ·"), el("span", b.signature, class_="mono"),
              el("span", f"({b.count} finding{'s' if b.count != 1 else ''})", class_="muted"))
    explain = [el("div", b.min_explanation or (b.findings[0]["explanation"] if b.findings else "—"), class_="explain")]
    facts = [("bucket key", el("code", b.key)), ("bucket id", el("code", b.id)),
             ("first / last seen", f"{b.first_seen} / {b.last_seen}")]
    if b.known_issue:
        facts.append(("known issue", _safe_link(b.known_issue)))
    if b.closest_variant:
        cv = b.closest_variant
        facts.append(("closest bug-zoo variant", f"{cv.get('name')} (error/bound {fmt_ratio(cv.get('score'))} against "
                                                 f"the variant; ≤ 1 is a match)"))
    if b.regimes:
        facts.append(("value regimes of its findings", ", ".join(f"{r or '—'}: {n}" for r, n in
                                                                 sorted(b.regimes.items(), key=lambda kv: -kv[1]))))
    parts: list[Any] = [head, el("div", el("code", b.key), class_="key"), el("h4", "Explanation"), explain,
                        _kv(facts)]
    # minimal reproducer
    parts.append(el("h4", "Minimal reproducer"))
    if m is None:
        parts.append(el("p", b.minimal_note, class_="note"))
    else:
        parts.append(el("p", el("code", m.summary), f"  (case {m.case.id})"))
        attrs = _kv([(k, el("code", _compact(v))) for k, v in sorted(m.attrs.items())]) if m.attrs else el("p", "no attrs")
        parts.append(el("div", el("div", el("h4", "Inputs"), _inputs_table(m)), el("div", el("h4", "Attributes"), attrs),
                        class_="two"))
        o = m.outcome
        if o is not None and o["status"] != "OK":
            detail = [f"outcome {o['status']}"]
            if o.get("error_type"):
                detail.append(f"{o['error_type']}: {o['error']}")
            if o.get("detail"):
                detail.append(o["detail"])
            if o.get("exit_code") is not None or o.get("signal") is not None:
                detail.append(f"exit code {o.get('exit_code')}, signal {o.get('signal')}")
            parts.append(el("h4", "What the runner did"))
            parts.append(el("pre", "\n".join(detail)))
        vt = _verdict_table(o)
        if vt is not None:
            parts += [el("h4", "Verdict per output (as stored by the campaign)"), vt]
    parts.append(el("h4", "Reproduce"))
    parts.append(el("p", el("code", b.repro_command, class_="cmd")))
    if b.script is not None:
        parts.append(el("details", el("summary", f"Standalone script for {b.runner} "
                                                 f"({len(b.script.splitlines())} lines; numpy and the framework only)"),
                        el("pre", b.script, class_="script")))
    else:
        parts.append(el("p", f"No standalone script: {b.script_note}", class_="note"))
    # figures
    figs = []
    if b.category in NO_RATIO:
        figs.append(el("p", f"No error ratios: in a {b.category} finding the runner returned nothing to compare "
                            f"with the oracle.", class_="note"))
    elif b.findings:
        figs.append(el("figure", ratio_histogram(b.ratios),
                       el("figcaption", "error/bound (worst element of each finding) over the bucket's "
                                        f"{len(b.findings)} findings; the dashed line is the bound. 'inf': a NaN/Inf "
                                        "pattern difference; 'n/a': no comparison (raised, crashed).")))
    tables = []
    if m is not None:
        views = [v for v in m.outputs if v.ratio is not None]
        for v in views[:HEATMAPS_PER_BUCKET]:
            figs.append(el("figure", ratio_heatmap(v.name, v.ratio, v.actual, v.reference, v.bound),
                           el("figcaption", f"{v.name}: error/bound per element of the minimal case (max "
                                            f"{fmt_ratio(v.max_ratio)}); blue within the bound, red beyond, black a "
                                            f"NaN/Inf pattern difference. Hover a cell for its numbers.")))
        if views:
            v = views[0]
            figs.append(el("figure", output_scatter(v.name, v.actual, v.reference, v.bound, v.ratio),
                           el("figcaption", f"{v.name}: the runner's value (dot) against the oracle's reference; "
                                            f"grey bars span reference ± bound.")))
            tables.append(el("div", el("h4", f"Worst elements of {v.name} (recomputed from the stored outputs)"),
                             _worst_table(v)))
        notes = [f"{v.name}: {v.note}" for v in m.outputs if v.ratio is None]
        if m.outputs_note:
            notes.insert(0, m.outputs_note)
        if m.recomputed_ratio is not None:
            stored = b.min_ratio
            same = stored is not None and (math.isclose(stored, m.recomputed_ratio, rel_tol=1e-9)
                                           or (math.isinf(stored) and math.isinf(m.recomputed_ratio)))
            notes.append(f"oracle evaluated at {m.precision}; recomputed worst error/bound "
                         f"{fmt_ratio(m.recomputed_ratio)}" + ("" if same else f" (the campaign stored {fmt_ratio(stored)})"))
        elif m.rejection:
            notes.append(f"the oracle rejects this case: {m.rejection}")
        tables.extend(el("p", n, class_="note") for n in notes)
    parts.append(el("h4", "Figures"))
    parts.append(el("div", figs, class_="figs"))
    parts.extend(tables)
    # findings list
    frows = [el("tr", _num(f["id"]), el("td", b.case_summaries.get(f["case_id"], f["case_id"]), class_="mono"),
                el("td", f["regime"] or "—"), el("td", "—" if b.category in NO_RATIO else fmt_ratio(f["max_ratio"]),
                                                 class_="num", data_sort=_sort_key(f["max_ratio"])),
                el("td", f["explanation"])) for f in b.findings[:40]]
    if frows:
        more = f" (first 40 of {len(b.findings)})" if len(b.findings) > 40 else ""
        parts.append(el("details", el("summary", f"Findings in this bucket{more}"),
                        _table([("finding", "num"), ("case", ""), ("regime", ""), ("err/bound", "num"),
                                ("explanation", "")], frows)))
    return el("section", parts, class_=f"bucket cat-{b.category}", id=f"b-{b.id}", data_category=b.category,
              data_runner=b.runner, data_status=b.status)


def _buckets(d: ReportData) -> Markup:
    if not d.buckets:
        return el("section", el("h2", "Buckets"), el("p", "No finding: every judged run agreed with the oracle.",
                                                     class_="note"), id="buckets")
    return el("section", el("h2", f"Buckets ({len(d.buckets)})"),
              el("p", "Sorted by severity, then findings. Click a column to sort; the filters also hide the "
                      "bucket sections below.", class_="note"),
              _bucket_table(d), [_bucket_section(d, b) for b in d.buckets], id="buckets")


# --------------------------------------------------------------------------------------------------
# Coverage


def _coverage(d: ReportData) -> Markup:
    results = sorted({c["result"] for c in d.counts}, key=lambda r: (r != "agree", r == "unsupported", r))

    def pivot(fields: tuple[str, ...], title: str) -> Markup:
        agg: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for c in d.counts:
            agg[tuple(c[f] or "—" for f in fields)][c["result"]] += int(c["count"])
        rows = []
        for k, per in sorted(agg.items()):
            total = sum(v for r, v in per.items() if r != "unsupported")
            finding = sum(v for r, v in per.items() if r not in ("agree", "unsupported"))
            rows.append(el("tr", [el("td", v) for v in k], _num(total), _num(finding),
                           [_num(per.get(r, 0)) for r in results]))
        head = [(f, "") for f in fields] + [("judged", "num"), ("findings", "num")] + [(r, "num") for r in results]
        return el("div", el("h3", title), el("div", _table(head, rows), class_="scroll"))

    unsup_rows = [el("tr", el("td", u["runner"]), el("td", u["op"]), el("td", u["mode"]), el("td", u["dtype"]),
                      _num(u["count"]), el("td", u["reason"]), data_runner=u["runner"])
                  for u in d.unsupported]
    unsup = el("p", "No unsupported combination.", class_="note")
    if unsup_rows:
        runners = sorted({u["runner"] for u in d.unsupported})
        bar = el("div", el("label", "runner ", el("select", el("option", "all", value=""),
                                                  [el("option", r, value=r) for r in runners], data_field="runner")),
                 el("label", "text ", el("input", type="search", size="22")),
                 el("button", "reset", type="button", class_="reset"), el("span", "", class_="shown"),
                 class_="filters", data_for="unsupported-table")
        total = sum(int(u["count"]) for u in d.unsupported)
        unsup = el("details", el("summary", f"{len(unsup_rows)} (runner, op, mode, dtype, reason) rows, "
                                            f"{fmt_num(total)} runs in all"),
                   bar, _table([("runner", ""), ("op", ""), ("mode", ""), ("dtype", ""), ("cases", "num"),
                                ("reason", "")], unsup_rows, tid="unsupported-table"))
    return el("section", el("h2", "Coverage"),
              el("p", "Judged runs (one case on one runner) by result, from the campaign's counters. "
                      "'findings' counts runs whose result is a finding category.", class_="note"),
              pivot(("runner",), "By runner"), pivot(("dtype",), "By dtype"), pivot(("regime",), "By value regime"),
              pivot(("op", "mode"), "By op and mode"),
              el("h3", "Unsupported combinations and why"), unsup, id="coverage")


# --------------------------------------------------------------------------------------------------
# Page


def render(d: ReportData) -> str:
    """The whole page as a string."""
    csp = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
           f"script-src {csp_hash(ERROR_CAPTURE)} {csp_hash(APP)}; base-uri 'none'; form-action 'none'")
    nav = el("nav", el("span", "normfuzz report", class_="brand"),
             [el("a", t, href=h) for t, h in (("Campaign", "#header"), ("Summary", "#summary"),
                                                ("Matrix", "#matrix-section"), ("Conventions", "#conventions"),
                                                ("Buckets", "#buckets"), ("Coverage", "#coverage"))],
             class_="top")
    body = el("body", nav, el("pre", "", id="nf-errors", role="alert"),
              el("main", _header(d), _summary(d), _matrix(d), _conventions(d), _buckets(d), _coverage(d),
                 el("p", f"Written by normfuzz {d.report_version} from {d.run_dir}. Self-contained: no network "
                         f"access; tables sort and filter with the file opened from disk.", class_="note")),
              el("script", Markup(APP)))
    head = el("head", el("meta", charset="utf-8"),
              el("meta", http_equiv="Content-Security-Policy", content=csp),
              el("meta", name="viewport", content="width=device-width, initial-scale=1"),
              el("title", f"normfuzz · {d.campaign['id']} · {len(d.buckets)} buckets"),
              el("script", Markup(ERROR_CAPTURE)), el("style", Markup(CSS)))
    return "<!DOCTYPE html>\n" + el("html", head, body, lang="en") + "\n"
