"""Known-buggy variants of the normalization ops, each with metadata.

A `Variant` is one bug on one op: `evaluate(mode, inputs, attrs, dtype)` returns what a framework
with that bug outputs for a case (same output names as `oracles.evaluate`), and `fn` is the buggy
twin of the oracle's typed function. Triage evaluates every applicable variant on a disagreeing case
and reports the closest; the fuzzer's self-test injects each variant as a fake framework.

    VARIANTS                     every variant (one per bug and op)
    variants_for(op, mode, dtype) the variants that apply
    variant(name, op)            one variant by its stable name
    NotApplicable                raised by evaluate for a case the variant does not cover
    examples(v, mode, dtype, inside=True, seed=0)   a case inside (or outside) its trigger regime
"""

from ._engine import NotApplicable, shared_references
from .catalog import VARIANTS, variant, variants_for
from .examples import examples
from .variant import Variant

__all__ = ["NotApplicable", "VARIANTS", "Variant", "examples", "shared_references", "variant", "variants_for"]
