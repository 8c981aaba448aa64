"""The conventions matrix: what each runner was observed to do, next to what it declares.

For every (runner, op) the campaign ran, six conventions are compared (see `PROPERTIES`). The
declaration is the runner's `Conventions` for the op (`Runner.conventions_for(op, {})`). The
observation is inferred from the campaign's stored results only (no framework is run again):

contradiction
    a bucket of the runner and op whose signature is a bug-zoo variant (or triage convention) that
    is one of this convention's alternatives, e.g. `momentum_inverted` (the runner applied the
    momentum the other way round), `running_var_estimator_swapped`, `eps_outside_sqrt`,
    `eps_dropped`, `nan_spreads`; or a `raised` finding on a reduction set of one element (regime
    `size_one`) where the runner declares that it normalizes. The observation is the variant's
    behaviour, counted in findings.
confirmation
    findings whose signature is the declared convention itself (`convention:min_eps`: the path
    clamps eps as declared; `convention:batch_of_one`: it raises as declared), or cases of the
    regime that exercises the convention which agreed with the oracle evaluated under the case's
    conventions (batch_norm training modes for momentum and running variance, regimes
    var_near_eps and constant for eps, size_one for a batch of one, nonfinite for NaN propagation,
    any case of an op with affine parameters for affine granularity). Agreement is consistent
    with the declaration (the runner translated the case's convention through what it declares),
    not a proof: a case whose values do not exercise the convention agrees either way.
nothing
    the campaign ran no case that can tell ("not observed").

Counts come from the store's per-combination counters (`Store.counts()`: one per case and runner)
and its buckets (findings per bucket).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

__all__ = ["PROPERTIES", "Observation", "ConventionRow", "infer_conventions"]

TRAINING_MODES = ("training", "training_steps", "training_vjp", "training_jvp")
RUNNING_MODES = ("training", "training_steps")
AFFINE_OPS = ("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm")


@dataclass(frozen=True)
class Property:
    key: str
    label: str
    ops: tuple[str, ...] | None  # ops it applies to (None: all)


PROPERTIES = (
    Property("momentum", "momentum meaning", ("batch_norm",)),
    Property("running_var", "running-variance estimator", ("batch_norm",)),
    Property("eps", "epsilon handling", None),
    Property("affine", "affine granularity", AFFINE_OPS),
    Property("batch_of_one", "batch of one", None),
    Property("nan", "NaN propagation", None),
)

#: Bug-zoo signatures that contradict a convention: property -> signature -> observed behaviour
#: (a callable of the declared value for the two-way conventions).
_FLIP = {"batch": "running", "running": "batch", "biased": "unbiased", "unbiased": "biased"}
CONTRADICTIONS: dict[str, dict[str, Callable[[Any], str] | str]] = {
    "momentum": {"momentum_inverted": lambda d: _FLIP.get(d, "inverted")},
    "running_var": {"running_var_estimator_swapped": lambda d: _FLIP.get(d, "the other estimator")},
    "eps": {"eps_outside_sqrt": "outside the square root: 1/(sqrt(v)+eps)",
            "eps_dropped": "dropped (no eps)",
            "eps_squared": "eps squared: 1/sqrt(v+eps²)",
            "l2_eps_added_to_norm": "added to the norm: 1/(||x||+eps)",
            "l2_eps_convention_swapped": "the other max() convention (norm vs sum of squares)"},
    "nan": {"nan_spreads": "NaN spreads beyond its reduction set"},
}
#: Triage signatures that confirm a declared convention.
CONFIRMATIONS = {"convention:min_eps": "eps", "convention:batch_of_one": "batch_of_one"}


@dataclass
class Observation:
    """One cell: declared value, observed value, how it was inferred, and the verdict."""

    declared: str
    observed: str
    evidence: str
    state: str  # "agrees", "differs", "unobserved", "undeclared" (observed, nothing declared), "n/a", "unknown"
    buckets: list[str] = field(default_factory=list)  # bucket keys behind a contradiction
    short: str = ""  # the evidence in a few words, with its counts


@dataclass
class ConventionRow:
    runner: str
    op: str
    cases: int
    cells: dict[str, Observation]
    declared_from: str  # where the declaration came from (sources) or why it is unknown


def _declared(key: str, conv) -> str | None:
    if conv is None:
        return None
    if key == "momentum":
        if conv.momentum_on is None:
            return None
        d = f"{conv.momentum_on}"
        return d + (f" (default {conv.default_momentum:g})" if conv.default_momentum is not None else "")
    if key == "running_var":
        return conv.running_var_estimator
    if key == "eps":
        d = conv.eps_mode
        if conv.min_eps is not None:
            d += f", min eps {conv.min_eps:g}"
        if conv.default_eps is not None:
            d += f", default {conv.default_eps:g}"
        return d
    if key == "affine":
        return conv.affine
    if key == "batch_of_one":
        return conv.batch_of_one
    if key == "nan":
        return conv.nan_propagation
    raise KeyError(key)


def _value(key: str, conv) -> str | None:
    """The bare declared value (what an observation is compared with)."""
    if conv is None:
        return None
    return {"momentum": conv.momentum_on, "running_var": conv.running_var_estimator, "eps": conv.eps_mode,
            "affine": conv.affine, "batch_of_one": conv.batch_of_one, "nan": conv.nan_propagation}[key]


def _sum(counts: Iterable[Mapping[str, Any]], **where) -> int:
    n = 0
    for c in counts:
        ok = True
        for k, v in where.items():
            val = c[k]
            if isinstance(v, (tuple, list, set, frozenset)):
                ok = val in v
            else:
                ok = val == v
            if not ok:
                break
        if ok:
            n += int(c["count"])
    return n


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def infer_conventions(runner_ids: Iterable[str], conventions: Mapping[tuple[str, str], Any],
                      counts: list[Mapping[str, Any]], buckets: list[Mapping[str, Any]],
                      unknown_reason: Mapping[str, str] | None = None) -> list[ConventionRow]:
    """One row per (runner, op) the campaign ran (from `counts` and `buckets`).

    `conventions[(runner, op)]`: the runner's declared `Conventions` for the op, or absent when the
    runner cannot be loaded here (`unknown_reason[runner]` says why). `counts`: `Store.counts()`;
    `buckets`: `Store.buckets()` (count > 0 ones are this campaign's), each optionally with
    `regimes` (regime -> number of its findings) for the regime-specific inferences."""
    unknown_reason = unknown_reason or {}
    pairs: dict[tuple[str, str], int] = {}
    runners = set(runner_ids)
    for c in counts:
        if c["runner"] in runners and c["result"] != "unsupported":
            pairs[(c["runner"], c["op"])] = pairs.get((c["runner"], c["op"]), 0) + int(c["count"])
    for b in buckets:
        if b["runner"] in runners and b["count"]:
            pairs.setdefault((b["runner"], b["op"]), 0)
    rows = []
    for (rid, op), n_cases in sorted(pairs.items()):
        rc = [c for c in counts if c["runner"] == rid and c["op"] == op]
        rb = [b for b in buckets if b["runner"] == rid and b["op"] == op and b["count"]]
        conv = conventions.get((rid, op))
        cells = {p.key: _cell(p, op, conv, rc, rb) for p in PROPERTIES}
        if conv is None:
            src = unknown_reason.get(rid, "the runner is not loadable here")
        else:
            src = "; ".join(conv.sources) if conv.sources else "declared in the runner (no source link)"
        rows.append(ConventionRow(rid, op, n_cases, cells, src))
    return rows


def _cell(p: Property, op: str, conv, rc: list, rb: list) -> Observation:
    if p.ops is not None and op not in p.ops:
        return Observation("—", "—", f"{p.label} does not apply to {op}", "n/a")
    declared_text = _declared(p.key, conv)
    declared = _value(p.key, conv)
    if conv is None:
        declared_text = "unknown"
    elif declared_text is None:
        declared_text = "not declared"

    # 1. contradictions from bug-zoo signatures
    contra = CONTRADICTIONS.get(p.key, {})
    hits = [b for b in rb if b["signature"] in contra]
    if hits:
        b0 = max(hits, key=lambda b: b["count"])
        what = contra[b0["signature"]]
        observed = what(declared) if callable(what) else what
        n = sum(b["count"] for b in hits)
        sigs = ", ".join(sorted({b["signature"] for b in hits}))
        modes = ", ".join(sorted({b["mode"] for b in hits}))
        return Observation(declared_text, observed,
                           f"{_plural(n, 'finding')} matched bug-zoo variant {sigs} ({op}/{modes}); "
                           f"the variant's formula reproduces the runner's outputs within the error bound",
                           "differs", [b["key"] for b in hits], f"{_plural(n, 'finding')}: {sigs}")

    # 2. batch of one (regime size_one: batches, spatial dims or reduction sets of one element)
    if p.key == "batch_of_one":
        return _batch_of_one(declared_text, declared, conv, rc, rb)

    # 3. confirmations by triage's convention signatures
    conf = [b for b in rb if CONFIRMATIONS.get(b["signature"]) == p.key]
    conf_note = ""
    if conf:
        n = sum(b["count"] for b in conf)
        conf_note = (f"{_plural(n, 'finding')} explained by the declared convention "
                     f"({', '.join(sorted({b['signature'] for b in conf}))}); ")

    # 4. agreement in the regimes that exercise the convention
    if p.key in ("momentum", "running_var"):
        agreed = _sum(rc, mode=RUNNING_MODES, result="agree")
        where = f"of batch_norm {'/'.join(RUNNING_MODES)}"
    elif p.key == "eps":
        agreed = _sum(rc, regime=("var_near_eps", "constant"), result="agree")
        where = "in regimes var_near_eps and constant"
    elif p.key == "affine":
        agreed = _sum(rc, result="agree")
        where = f"of {op} (with and without affine parameters)"
    elif p.key == "nan":
        agreed = _sum(rc, regime="nonfinite", result="agree")
        # NaN-pattern findings on non-finite inputs that no variant explains (elsewhere a NaN comes
        # from an overflow or 0/0, which says nothing about how a NaN input propagates)
        unexplained = [b for b in rb if b["category"] == "nan_pattern" and b["signature"] not in contra
                       and _in_regime(b, "nonfinite")]
        if unexplained:
            n = sum(_in_regime(b, "nonfinite") for b in unexplained)
            return Observation(declared_text, "differs from the oracle's NaN rule",
                               f"{_plural(n, 'NaN-pattern finding')} on non-finite inputs (regime nonfinite) that no "
                               f"bug-zoo variant explains "
                               f"({', '.join(sorted({b['signature'] for b in unexplained}))}); {agreed} nonfinite "
                               f"cases agreed", "differs" if conv is not None else "unknown",
                               [b["key"] for b in unexplained], f"{_plural(n, 'unexplained NaN-pattern finding')}")
        where = "in regime nonfinite"
    else:  # pragma: no cover - every property is handled above
        raise KeyError(p.key)
    if declared is None and conv is not None:
        return Observation(declared_text, "—", f"the runner declares no {p.label} for {op}", "n/a")
    if agreed or conf:
        return Observation(declared_text, f"consistent with {declared}" if conv is not None else "agrees with the oracle",
                           f"{conf_note}{_plural(agreed, 'case')} {where} agreed with the oracle under the "
                           f"case's conventions", "agrees" if conv is not None else "unknown",
                           short=f"{_plural(agreed, 'agreeing case')}"
                                 + (f", {_plural(sum(b['count'] for b in conf), 'finding')} by convention" if conf else ""))
    return Observation(declared_text, "not observed", f"no case {where} agreed; no finding bears on it",
                       "unobserved" if conv is not None else "unknown", short="no evidence")


def _batch_of_one(declared_text: str, declared: str | None, conv, rc: list, rb: list) -> Observation:
    """Raised findings on size-one cases show "raises" (as declared when triage explained them by
    `convention:batch_of_one`), unless the runner raises as often on the other regimes (then the
    raise says nothing about a batch of one); agreement shows "normalizes" (the oracle normalizes
    a one-element set to beta); NaN-pattern findings show "NaN"."""
    known = conv is not None

    def state_for(observed: str) -> str:
        if not known:
            return "unknown"
        if declared is None:
            return "undeclared"
        return "agrees" if declared == observed else "differs"

    raised_conv = sum(b["count"] for b in rb if b["signature"] == "convention:batch_of_one")
    judged = [c for c in rc if c["result"] != "unsupported"]
    one = [c for c in judged if c["regime"] == "size_one"]
    other = [c for c in judged if c["regime"] != "size_one"]
    n_one, n_other = _sum(one), _sum(other)
    raised, raised_other = _sum(one, result="raised"), _sum(other, result="raised")
    agreed = _sum(one, result="agree")
    nanp = _sum(one, result="nan_pattern")
    tally = (f"{n_one} size_one cases (regime size_one: batches, spatial dims or reduction sets of one element): "
             f"{agreed} agreed with the oracle (which normalizes a one-element set to beta), {raised} raised, "
             f"{nanp} gave a NaN-pattern difference")
    short = f"size_one: {agreed} agreed, {raised} raised, {nanp} NaN"
    if raised_conv:
        return Observation(declared_text, "raises",
                           f"{_plural(raised_conv, 'finding')} raised on a reduction set of one element, explained "
                           f"by the declared convention (convention:batch_of_one); {tally}", state_for("raises"),
                           short=f"{_plural(raised_conv, 'finding')} by convention; {short}")
    # a path that raises (or gives NaN) as often on the other regimes says nothing about size one
    for what in ("raised", "nan_pattern"):
        here = raised if what == "raised" else nanp
        there = _sum(other, result=what)
        rate_one, rate_other = (here / n_one if n_one else 0.0), (there / n_other if n_other else 0.0)
        if here and rate_other * 2 >= rate_one:
            word = "raised" if what == "raised" else "gave a NaN-pattern difference"
            tally += (f"; {there} of {n_other} other cases {word} too ({rate_other:.0%} against {rate_one:.0%}), "
                      f"so these say nothing about size one")
            short += f" ({'raises' if what == 'raised' else 'NaN'} elsewhere too)"
            if what == "raised":
                raised = 0
            else:
                nanp = 0
    if raised:
        state = state_for("raises")
        return Observation(declared_text, "raises", f"{tally}; {raised_other} of {n_other} other cases raised", state,
                           _size_one(rb, "raised") if state != "agrees" else [], short)
    if nanp:
        return Observation(declared_text, "NaN" + (" in some cases" if agreed else ""), tally, state_for("NaN"),
                           _size_one(rb, "nan_pattern"), short)
    if agreed:
        if declared == "raises":  # a size_one case need not hold a one-element *reduction set*
            return Observation(declared_text, "no raise seen", tally + "; none made the path raise", "unobserved",
                               short=short)
        return Observation(declared_text, "normalizes", tally, state_for("normalizes"), short=short)
    return Observation(declared_text, "not observed", "no size_one case ran on this op", "unobserved",
                       short="no size_one case")


def _in_regime(b: Mapping[str, Any], regime: str) -> int:
    """How many of a bucket's findings are of `regime` (its `regimes`: regime -> findings, when the
    caller gives them; otherwise all of them are assumed to be)."""
    regimes = b.get("regimes")
    if regimes is None:
        return int(b["count"])
    return int(regimes.get(regime, 0))


def _size_one(rb: list, category: str) -> list[str]:
    """Keys of the buckets of `category` with a finding in regime size_one."""
    return [b["key"] for b in rb if b["category"] == category and _in_regime(b, "size_one")]
