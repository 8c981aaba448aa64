"""The fuzzer's own score: inject each bug-zoo variant as a runner and measure how fast it is caught.

`runners()` is a plug-in factory (``fuzz.selftest:runners``) with one runner per variant, id
``bugzoo.<name>.<op>``, whose outputs are the variant's (evaluated in the case's format). `score()`
runs, per variant, a campaign restricted to its op, modes and formats with that runner alone, and
stops at the first finding whose explanation is that variant; it reports the cases and seconds it
took, or that the variant was missed (or explained as something else) within the case limit.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .runners.base import Conventions, FrameworkRaised, Runner, Unsupported

SPEC = "fuzz.selftest:runners"


class VariantRunner(Runner):
    """A fake framework whose outputs are one bug-zoo variant's."""

    framework = "bugzoo"

    def __init__(self, variant):
        self.variant = variant
        self.id = f"bugzoo.{variant.name}.{variant.op}"
        self.ops = {variant.op: tuple(variant.modes)}
        self.dtypes = tuple(variant.dtypes)
        self.conventions = Conventions(sources=("bugzoo/catalog.py",), notes=variant.wrong)

    def version(self) -> str:
        from fuzz import __version__

        return __version__

    def supports(self, op, mode, dtype, attrs):
        why = super().supports(op, mode, dtype, attrs)
        if why is None and not self.variant.applies(mode, dtype):
            return f"{self.variant.name} does not apply to {mode}/{dtype}"
        return why

    def run(self, case):
        """The variant's outputs; a case the variant does not apply to is unsupported, and one the
        oracle rejects (an invalid input: the variant validates as the oracle does) raises, as a
        framework that checks its inputs does."""
        import bugzoo
        from oracles.errors import OracleInputError

        try:
            outs = self.variant.evaluate(case.mode, dict(case.inputs), dict(case.attrs), case.dtype)
        except bugzoo.NotApplicable as e:
            raise Unsupported(str(e)) from e
        except OracleInputError as e:
            raise FrameworkRaised(f"{type(e).__module__}.{type(e).__qualname__}", str(e)) from e
        return {k: np.asarray(v) for k, v in outs.items()}


def runners() -> list[Runner]:
    import bugzoo

    return [VariantRunner(v) for v in bugzoo.VARIANTS]


@dataclass(frozen=True)
class Score:
    """How one variant fared: detected (with the right explanation) after `cases` cases."""

    variant: str
    op: str
    detected: bool
    cases: int
    seconds: float
    explanation: str
    first_signature: str
    pack: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def score_one(runner: VariantRunner, *, max_cases: int = 2000, seed: int = 0, timeout: float = 60.0,
              pack: int = 1) -> Score:
    """Run a campaign against one injected variant until it is caught with the right explanation.

    `pack`: the campaign's `--pack`. At 1 (the default) each Hypothesis example is one case, and
    `cases` counts the distinct cases drawn up to the detecting one. Above 1 each example is a
    family evaluated in one packed call (as a default campaign runs) and a flagged member is
    confirmed alone; `cases` then counts whole families, up to the end of the detecting one:
    whether packing hides a variant, and what it costs in cases and seconds to catch it."""
    from .campaign import Campaign, CampaignConfig

    v = runner.variant
    first: list[str] = []
    hit: list[Any] = []

    def stop(finding) -> bool:
        if not first:
            first.append(finding.signature)
        if finding.signature == v.name:
            hit.append(finding)
            return True
        return False

    with tempfile.TemporaryDirectory(prefix="normfuzz-selftest-") as d:
        cfg = CampaignConfig(out=d, ops=[v.op], modes=list(v.modes), dtypes=list(v.dtypes), runners=[runner.id],
                             plugins=[SPEC], max_cases=max_cases, seed=seed, timeout=timeout, minimize=False,
                             pack=pack)
        c = Campaign(cfg, stop_when=stop, write_report=False)
        t0 = time.perf_counter()
        c.run()
        secs = time.perf_counter() - t0
        cases = c.state.cases_at_stop if hit else c.state.cases
    return Score(v.name, v.op, bool(hit), cases, secs, hit[0].explanation if hit else "",
                 first[0] if first else "", pack)


def score(*, variants: list[str] | None = None, ops: list[str] | None = None, max_cases: int = 2000,
          seed: int = 0, pack: int = 1, on_score: Callable[[Score], None] | None = None) -> list[Score]:
    """Score every selected variant (names and/or ops; default all) at campaign `--pack` `pack`."""
    out = []
    for r in runners():
        v = r.variant
        if variants and v.name not in variants:
            continue
        if ops and v.op not in ops:
            continue
        s = score_one(r, max_cases=max_cases, seed=seed, pack=pack)
        out.append(s)
        if on_score:
            on_score(s)
    return out
