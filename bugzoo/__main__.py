"""`python -m bugzoo [seed]`: every variant's worst error/bound ratio inside and outside its trigger
regime, on the example cases of `bugzoo.examples` (the numbers tests/bugzoo asserts on)."""

import sys

from .examples import ratio_table


def main(argv: list[str]) -> int:
    seed = int(argv[0]) if argv else 0
    print(f"{'variant':32s} {'op':14s} {'mode':15s} {'dtype':9s} {'inside':>10s} {'outside':>10s}")
    for name, op, mode, dtype, inside, outside in ratio_table(seed):
        o = "-" if outside is None else f"{outside:.3g}"
        print(f"{name:32s} {op:14s} {mode:15s} {dtype:9s} {inside:10.3g} {o:>10s}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
