"""Runner discovery: built-in and third-party runners through one plug-in interface.

A runner *factory* is named by an import string ``module:attr``; ``attr`` is a callable returning a
list of `Runner` instances (or a `Runner` subclass, or a list already). Factories come from the entry
point group ``normfuzz.runners`` (the built-in torch, tensorflow and onnxruntime factories are
registered there by normfuzz's own pyproject.toml, exactly as a third party would) and from
``--runner module:factory`` on the command line. Loading a factory never imports a framework.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Iterable

from .base import Conventions, FrameworkRaised, Runner, Unsupported, framework_call

ENTRY_POINT_GROUP = "normfuzz.runners"

#: The built-in factories, as registered in pyproject.toml's entry points. Used as a fallback when
#: normfuzz runs from a source tree that was not pip-installed (no entry-point metadata).
BUILTIN_FACTORIES = {
    "torch": "fuzz.runners.torch_runner:runners",
    "tensorflow": "fuzz.runners.tf_runner:runners",
    "onnxruntime": "fuzz.runners.ort_runner:runners",
}


class RunnerSpecError(ValueError):
    """A runner factory string or entry point that cannot be loaded."""


def load_factory(spec: str) -> list[Runner]:
    """Runners from a ``module:factory`` string; raises RunnerSpecError with the reason."""
    if ":" not in spec:
        raise RunnerSpecError(f"runner spec {spec!r} is invalid: expected 'module:factory'")
    mod_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - report any import failure as a spec error
        raise RunnerSpecError(f"runner spec {spec!r}: cannot import {mod_name}: {e}") from e
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RunnerSpecError(f"runner spec {spec!r}: {mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type) and issubclass(obj, Runner):
        made: Iterable = [obj()]
    elif isinstance(obj, Runner):
        made = [obj]
    elif callable(obj):
        made = obj()
        made = [made] if isinstance(made, Runner) else made
    else:
        made = obj
    out = list(made)
    for r in out:
        if not isinstance(r, Runner) or not r.id:
            raise RunnerSpecError(f"runner spec {spec!r} produced {r!r}: expected Runner instances with an id")
    return out


def entry_point_specs() -> dict[str, str]:
    """name -> ``module:factory`` for every entry point in the runner group (built-ins included)."""
    specs = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    for name, spec in BUILTIN_FACTORIES.items():
        specs.setdefault(name, spec)
    return specs


def discover(extra_specs: Iterable[str] = (), *, broken: dict[str, str] | None = None
             ) -> dict[str, tuple[str, Runner]]:
    """runner id -> (factory spec, runner) for every registered and extra factory.

    An explicitly given spec that fails to load raises RunnerSpecError. A registered entry point
    that fails to load is recorded in `broken` (spec -> reason) when given, else raises.
    Duplicate runner ids across factories raise RunnerSpecError naming both factories.
    """
    found: dict[str, tuple[str, Runner]] = {}
    extra = list(extra_specs)
    for spec in list(entry_point_specs().values()) + extra:
        try:
            made = load_factory(spec)
        except RunnerSpecError as exc:
            if broken is None or spec in extra:
                raise
            broken[spec] = str(exc)
            continue
        for r in made:
            if r.id in found and found[r.id][0] != spec:
                raise RunnerSpecError(f"runner id {r.id!r} is defined by both {found[r.id][0]} and {spec}")
            found[r.id] = (spec, r)
    return found


__all__ = ["BUILTIN_FACTORIES", "Conventions", "ENTRY_POINT_GROUP", "FrameworkRaised", "Runner",
           "RunnerSpecError", "Unsupported", "discover", "entry_point_specs", "framework_call",
           "load_factory"]
