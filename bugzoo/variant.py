"""The `Variant` record: one known-buggy version of one op, with what is wrong and when it shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from oracles.dtypes import DTYPES, round_to

from ._engine import NotApplicable

ALL_DTYPES = tuple(DTYPES)  # ("float16", "bfloat16", "float32", "float64")

#: impl(mode, inputs, attrs, dtype, stats) -> {output name: EXT array}; dtype may be None for
#: variants that are not about finite precision; stats is the typed function's `_stats` hook.
Impl = Callable[..., "dict[str, np.ndarray]"]


@dataclass(frozen=True, eq=False)
class Variant:
    """A known-buggy variant of one oracle op.

    Attributes:
        name: stable id shared by the same bug on every op it applies to ("eps_outside_sqrt").
        op: the oracle op it corrupts (a key of `oracles.registry.OPS`).
        modes: the oracle modes it corrupts (and `evaluate` accepts).
        wrong: one sentence: what is wrong.
        trigger: the regime in which it differs from the correct op, in words.
        trigger_regime: a short machine name for that regime ("var_near_eps", ...).
        references: papers, documents and upstream issues that report this bug class.
        fn: the buggy twin of the oracle's typed function `oracle_fn`: the same parameters plus
            an optional keyword `dtype` naming the format to compute in (required by the variants
            about finite precision, ignored by the others). Returns what the oracle function
            returns (EXT arrays, not rounded to any format).
        oracle_fn: the name of the typed function in `oracles` that `fn` mirrors.
        impl: the case-level implementation behind `evaluate` (private to the zoo).
        dtypes: the formats in which the variant is meaningful (`evaluate` raises NotApplicable
            for others).
        omitted_outputs: oracle outputs this variant cannot produce in the oracle's shape (e.g.
            statistics over the wrong axes); `evaluate` leaves them out.
        extra_fns: further typed functions of the same op the variant also corrupts, as
            (oracle function name, buggy function) pairs (BatchNorm: training, training_steps).
    """

    name: str
    op: str
    modes: tuple[str, ...]
    wrong: str
    trigger: str
    trigger_regime: str
    references: tuple[str, ...]
    fn: Callable
    oracle_fn: str
    impl: Impl
    dtypes: tuple[str, ...] = ALL_DTYPES
    omitted_outputs: tuple[str, ...] = ()
    extra_fns: tuple[tuple[str, Callable], ...] = ()

    @property
    def mode(self) -> str:
        """The modes as one string, for listings: "forward, vjp, jvp"."""
        return ", ".join(self.modes)

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.op)

    @property
    def fns(self) -> tuple[tuple[str, Callable], ...]:
        """Every (oracle function name, buggy function) pair: `fn` first, then `extra_fns`."""
        return ((self.oracle_fn, self.fn),) + tuple(self.extra_fns)

    def applies(self, mode: str, dtype: str) -> bool:
        """Whether `evaluate` accepts this mode and dtype (inputs may still make it NotApplicable)."""
        return mode in self.modes and dtype in self.dtypes

    def evaluate(self, mode: str, inputs: Mapping[str, np.ndarray], attrs: Mapping,
                 dtype: str) -> dict[str, np.ndarray]:
        """What a framework with this bug outputs for the case, in the case's format `dtype`.

        Same output names as `oracles.evaluate(op, mode, inputs, attrs, dtype).outputs` (less
        `omitted_outputs`), each rounded to `dtype` (bfloat16 in float32 carrier arrays), as a
        framework would return them. Variants about finite precision compute in `dtype` itself.
        Raises NotApplicable when the variant does not apply to the case (mode or dtype not
        covered, an attribute or input it needs missing), and OracleInputError for a case the
        oracle rejects.
        """
        if mode not in self.modes:
            raise NotApplicable(f"{self.name} ({self.op}) corrupts modes {list(self.modes)}, not {mode!r}")
        if dtype not in self.dtypes:
            raise NotApplicable(f"{self.name} ({self.op}) is meaningful in {list(self.dtypes)}, "
                                f"not {dtype!r}")
        out = self.impl(mode, inputs, attrs, dtype, None)
        return {k: round_to(dtype, np.asarray(v)) for k, v in out.items() if k not in self.omitted_outputs}

    def __repr__(self) -> str:
        return f"Variant({self.name!r}, op={self.op!r}, modes={self.mode!r})"
