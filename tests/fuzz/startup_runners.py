"""Plug-in runners for the start-up tests (tests/fuzz/test_campaign.py): honest numpy LayerNorm
(`faulty_runners.layer_norm_outputs`) behind different declarations. Load with
``tests.fuzz.startup_runners:runners``.

- startup.ln: declares layer_norm/forward in float32 and float64;
- startup.bn_only: declares batch_norm only;
- startup.f64_only: declares layer_norm/forward in float64 only;
- startup.broken: declares layer_norm/forward; its setup raises;
- startup.undeclared: declares no ops, and supports layer_norm/forward through `supports` alone.
"""

from __future__ import annotations

from fuzz.runners.base import Conventions, Runner, framework_call
from tests.fuzz.faulty_runners import layer_norm_outputs


class _Startup(Runner):
    framework = "startup"
    ops = {"layer_norm": ("forward",)}
    dtypes = ("float32", "float64")
    conventions = Conventions(default_eps=1e-5, sources=("tests/fuzz/startup_runners.py",))

    def __init__(self, name: str, **declared):
        self.id = f"startup.{name}"
        for k, v in declared.items():
            setattr(self, k, v)

    def version(self) -> str:
        return "0.0-test"

    def run(self, case):
        return layer_norm_outputs(case)


class _Broken(_Startup):
    def setup(self) -> None:
        with framework_call():  # the framework's own failure (not a bug of the runner)
            raise RuntimeError("no device")


class _Undeclared(_Startup):
    ops = {}

    def supports(self, op, mode, dtype, attrs):
        return None if (op, mode) == ("layer_norm", "forward") else f"{self.id} runs layer_norm/forward only"


def runners():
    return [_Startup("ln"), _Startup("bn_only", ops={"batch_norm": ("training",)}),
            _Startup("f64_only", dtypes=("float64",)), _Broken("broken"), _Undeclared("undeclared")]
