"""Standalone bug-report scripts: one Python file per runner that reproduces a case with numpy and
that runner's framework only (`normfuzz repro --emit-script`).

A script, top to bottom:

1. a header docstring: what normfuzz found (case summary and id, runner id, framework and the
   version normfuzz ran, the finding's one-line note), how to run it, what the exit status means;
2. the inputs, embedded losslessly as base64 of their raw little-endian bytes with dtype and shape
   (bfloat16 values in float32 carrier arrays), or, when they total more than `EMBED_LIMIT` bytes,
   loaded from an .npz next to the script (`np.load(..., allow_pickle=False)`; `write_scripts`
   writes it, named by `side_file_name`), and the case's attrs as a literal;
3. the framework code of the runner (`Runner.script`): the exact call, with the case's values as
   literals, setting a dict `outputs`;
4. the float64 reference of `fuzz.script_reference` (its source, embedded verbatim);
5. the comparison (`compare`, `main`, embedded verbatim): for each output its shape and dtype, the
   largest |framework - reference| and where (both values), the largest relative error, the normwise
   error in units of the case format's unit roundoff u, and the number of elements whose NaN/Inf
   pattern differs; then one machine-readable line `NORMFUZZ_RESULT {json}` (max_abs as float.hex,
   sha256 of each output's bytes, the exit status).

Exit status (informational): 1 when an output has a NaN/Inf pattern difference, a shape mismatch, or
a largest difference above `TOLERANCE_ULPS` * u * max|reference| of that output; 0 otherwise. This
normwise rule is deliberately simple: ill-conditioned inputs (a mean far above the spread, say) can
exceed it in an honest low-precision implementation, and a real bug can stay under it. normfuzz's
verdict comes from its per-element error bounds (`oracles.errormodel`); the script prints the numbers.
An exception raised by the framework call is not caught (for a RAISED finding it is the repro):
Python prints its traceback and exits with status 1, and no `NORMFUZZ_RESULT` line is printed.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import math
import re
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from . import script_reference
from .runners.base import Runner, Unsupported

__all__ = ["EMBED_LIMIT", "TOLERANCE_ULPS", "compare", "emit_script", "script_name", "side_file_name",
           "write_scripts", "write_side_file"]

#: Inputs totalling more bytes than this go to an .npz side file instead of the script.
EMBED_LIMIT = 1_000_000
#: The scripts' informational tolerance, in units of the case format's unit roundoff (normwise).
TOLERANCE_ULPS = 8
#: Unit roundoff 2**-p of each case format (p: significand bits with the hidden one).
UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8, "float32": 2.0 ** -24, "float64": 2.0 ** -53}
RESULT_PREFIX = "NORMFUZZ_RESULT "

_B64_LINE = 96


def script_name(runner_id: str) -> str:
    """The file name of a runner's script: `repro_<runner id>.py` (characters other than letters,
    digits, '.', '-' and '_' become '_')."""
    return "repro_" + re.sub(r"[^A-Za-z0-9_.\-]", "_", runner_id) + ".py"


def side_file_name(case) -> str:
    """The .npz holding a large case's inputs, next to its scripts."""
    return f"normfuzz_{case.id}_inputs.npz"


def _input_bytes(case) -> int:
    return sum(a.nbytes for a in case.inputs.values())


def emit_script(case, runner: Runner, *, version: str | None = None, note: str | None = None,
                embed_limit: int = EMBED_LIMIT) -> str:
    """The standalone script reproducing `case` on `runner` (see the module docstring).

    `version`: the framework version normfuzz ran (None: not recorded); `note`: a one-line
    description of the discrepancy, for the header. Inputs over `embed_limit` bytes in total are
    read from `side_file_name(case)` next to the script (write it with `write_side_file`). Raises
    ValueError when the runner writes no scripts, `Unsupported` when it cannot express the case.
    """
    code = runner.script(case)
    if code is None:
        raise ValueError(f"runner {runner.id!r} writes no standalone scripts (its script() returned None)")
    return _assemble(case, runner, code, version, note, embed_limit)


def _assemble(case, runner: Runner, code: str, version: str | None, note: str | None, embed_limit: int) -> str:
    fmt = case.dtype
    framework = runner.framework or runner.framework_module or "the framework"
    version_text = f"{framework} {version}" if version else f"{framework} (version not recorded)"
    embed = _input_bytes(case) <= embed_limit
    stdlib, third_party, code = _hoist_imports(code)
    stdlib = sorted({"import base64", "import hashlib", "import json", "import sys", "from pathlib import Path", *stdlib},
                    key=lambda ln: (ln.startswith("from"), ln))
    parts = [
        _header(case, runner, version_text, note, embed),
        "\n".join(stdlib) + "\n\n" + "\n".join(["import numpy as np"] + third_party) + "\n",
        f"OP, MODE, FORMAT = {case.op!r}, {case.mode!r}, {fmt!r}\n"
        f"CASE_ID, RUNNER = {case.id!r}, {runner.id!r}\n"
        f"UNIT_ROUNDOFF = {UNIT_ROUNDOFF[fmt]!r}  # 2**-{-int(math.log2(UNIT_ROUNDOFF[fmt]))}, unit roundoff of {fmt}\n"
        f"TOLERANCE_ULPS = {TOLERANCE_ULPS}\n",
        _section("Inputs" + ("" if embed else f": read from {side_file_name(case)} next to this script")),
        _inputs_code(case, embed),
        f"attrs = {_literal(dict(case.attrs))}\n"
        "reference_inputs = {name: a.copy() for name, a in inputs.items()}  # apart from what the framework touches\n",
        _section(f"The call under test: runner {runner.id} ({version_text})"),
        code,
        _section("Reference: float64, numpy only (normfuzz's fuzz/script_reference.py)"),
        inspect.getsource(script_reference),
        _section("Comparison"),
        inspect.getsource(compare),
        "\n",
        inspect.getsource(main),
        '\n\nif __name__ == "__main__":\n    sys.exit(main())\n',
    ]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def write_side_file(case, path: str | Path) -> Path:
    """Write the case's inputs as an .npz (one `<name>.npy` member per input, no pickles, fixed
    member timestamps so the same case gives the same bytes)."""
    path = Path(path)
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in case.inputs.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.require(arr, requirements='C'), allow_pickle=False)
    return path


def write_scripts(case, runners: Iterable[Runner], directory: str | Path, *, note: str | None = None,
                  versions: Mapping[str, str | None] | None = None, embed_limit: int = EMBED_LIMIT) -> list[Path]:
    """Write `repro_<runner id>.py` into `directory` for each runner that has a script for `case`
    (runners whose `script` returns None, or that do not support the case, are skipped), and the
    inputs' .npz when they are over `embed_limit` bytes. Returns the paths written, scripts first.

    `versions` maps runner id -> framework version (the version the finding was made with); a
    runner missing from it is asked (`runner.version()`, which imports the framework; a failure
    leaves the version unrecorded).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for r in runners:
        if r.supports(case.op, case.mode, case.dtype, case.attrs) is not None:
            continue
        if versions is not None and r.id in versions:
            version = versions[r.id]
        else:
            try:
                version = r.version()
            except Exception:  # noqa: BLE001 - a missing framework still gets its script
                version = None
        try:
            code = r.script(case)
        except Unsupported:  # found out only when writing the call, as `run` would
            continue
        if code is None:
            continue
        text = _assemble(case, r, code, version, note, embed_limit)
        path = directory / script_name(r.id)
        path.write_text(text, encoding="utf-8")
        path.chmod(0o755)
        written.append(path)
    if written and _input_bytes(case) > embed_limit:
        written.append(write_side_file(case, directory / side_file_name(case)))
    return written


# --------------------------------------------------------------------------------------------------
# parts of a script


def _hoist_imports(code: str) -> tuple[list[str], list[str], str]:
    """(stdlib imports, other imports, the rest) of a runner's code: its leading import lines go to
    the script's import block."""
    lines = code.split("\n")
    k = 0
    while k < len(lines) and (lines[k].startswith(("import ", "from ")) or not lines[k].strip()):
        k += 1
    imports = [ln for ln in lines[:k] if ln.strip()]
    stdlib = [ln for ln in imports if ln.split()[1].split(".")[0] in sys.stdlib_module_names]
    return stdlib, [ln for ln in imports if ln not in stdlib], "\n".join(lines[k:])


def _doc_safe(text: str) -> str:
    """Text that cannot end the header's triple-quoted docstring or start an escape in it."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _section(title: str) -> str:
    return f"\n# {'-' * 98}\n# {title}\n"


def _header(case, runner: Runner, version_text: str, note: str | None, embed: bool) -> str:
    u = UNIT_ROUNDOFF[case.dtype]
    lines = [
        f"normfuzz reproducer: {case.op}/{case.mode} on {runner.id}",
        "",
        *textwrap.wrap(f"Case      {case.id}  {case.summary()}", 100, subsequent_indent=" " * 10),
        f"Runner    {runner.id}: {version_text} (the version normfuzz ran)",
    ]
    if note:
        lines += textwrap.wrap(f"Finding   {' '.join(note.split())}", 100, subsequent_indent=" " * 10)
    lines += [
        "",
        f"Run it with `python {script_name(runner.id)}`; it needs numpy and {runner.framework or 'the framework'}"
        + ("" if embed else f", and {side_file_name(case)} next to it") + ".",
        "It makes the framework call below on the case's inputs, computes a float64 reference of the same",
        "formula (section Reference), and prints for each output: shape and dtype, the largest",
        "|framework - reference| with the worst element's index and both values, the largest relative",
        "error, the normwise error in units of u, and how many elements differ in their NaN/Inf pattern;",
        f"then one line `{RESULT_PREFIX.strip()} {{json}}` with the same numbers.",
        "",
        "Exit status (informational): 1 if an output has a NaN/Inf pattern difference or a largest",
        f"difference above TOLERANCE_ULPS = {TOLERANCE_ULPS} units of u = 2**-{-int(math.log2(u))} ({case.dtype}) times its",
        "largest |reference| (a plain normwise rule: ill-conditioned inputs can exceed it honestly in low",
        "precision, and a real bug can stay under it; normfuzz judges with per-element error bounds);",
        "0 otherwise. An exception (from the framework call, say) is not caught: Python prints the",
        "traceback and exits with status 1, without the result line.",
    ]
    return "#!/usr/bin/env python3\n" + '"""' + _doc_safe("\n".join(lines)) + '\n"""\n'


def _inputs_code(case, embed: bool) -> str:
    if case.dtype == "bfloat16":
        head = "# bfloat16 case: the float inputs hold bfloat16 values in float32 arrays (low 16 bits zero).\n"
    else:
        head = ""
    if not embed:
        out = [head + f"with np.load(Path(__file__).with_name({side_file_name(case)!r}), allow_pickle=False) as npz:",
               f"    inputs = {{name: npz[name] for name in {tuple(case.inputs)!r}}}"]
        for name, arr in case.inputs.items():
            out.append(f"assert inputs[{name!r}].dtype == {arr.dtype.str!r} and inputs[{name!r}].shape == "
                       f"{tuple(arr.shape)!r}")
        return "\n".join(out) + "\n"
    out = [head + "def decode(dtype, shape, data):",
           '    """An array from base64 of its raw little-endian bytes (a writable copy)."""',
           "    return np.frombuffer(base64.b64decode(data), dtype=dtype).reshape(shape).copy()",
           "", "", "inputs = {"]
    for name, arr in case.inputs.items():
        data = base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")
        chunks = [data[i:i + _B64_LINE] for i in range(0, len(data), _B64_LINE)] or [""]
        out.append(f"    {name!r}: decode({arr.dtype.str!r}, {tuple(arr.shape)!r},")
        out.extend(f'        "{c}"' for c in chunks[:-1])
        out.append(f'        "{chunks[-1]}"),')
    out.append("}")
    return "\n".join(out) + "\n"


def _literal(v: Any) -> str:
    """Python source of an attr value (None, bool, int, float incl. nan/inf, str, tuples, dicts)."""
    if isinstance(v, float):
        if math.isnan(v):
            return 'float("nan")'
        if math.isinf(v):
            return 'float("inf")' if v > 0 else 'float("-inf")'
        return repr(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {_literal(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_literal(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


# --------------------------------------------------------------------------------------------------
# the comparison, embedded verbatim in every script (numpy, hashlib only)


def compare(got, want, unit_roundoff, tolerance_ulps):
    """How a framework output differs from its float64 reference: a dict of plain numbers."""
    got = np.asarray(got)
    want = np.asarray(want, dtype=np.float64)
    r = {"shape": list(got.shape), "dtype": str(got.dtype),
         "sha256": hashlib.sha256(np.ascontiguousarray(got).tobytes()).hexdigest()}
    if got.shape != want.shape:
        r.update(reference_shape=list(want.shape), exceeds=True)
        return r
    g = got.astype(np.float64)

    def kind(a):  # 0 finite, 1 NaN, 2 +inf, 3 -inf
        return np.where(np.isnan(a), 1, np.where(a == np.inf, 2, np.where(a == -np.inf, 3, 0)))

    pattern = kind(g) != kind(want)
    both = np.isfinite(g) & np.isfinite(want)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        err = np.where(both, np.abs(g - want), 0.0)
        rel = np.where(both & (want != 0), err / np.abs(want), np.where(err > 0, np.inf, 0.0))
    scale = float(np.max(np.abs(np.where(np.isfinite(want), want, 0.0)), initial=0.0))
    max_abs = float(np.max(err, initial=0.0))
    r.update(max_abs=max_abs, max_rel=float(np.max(rel, initial=0.0)), pattern_diffs=int(np.sum(pattern)),
             max_abs_reference=scale)
    r["ulps_normwise"] = max_abs / (unit_roundoff * scale) if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    if err.size and max_abs > 0:
        i = np.unravel_index(int(np.argmax(err)), err.shape)
        r.update(worst_index=[int(k) for k in i], worst_framework=float(g[i]), worst_reference=float(want[i]))
    r["exceeds"] = bool(r["pattern_diffs"] > 0 or r["ulps_normwise"] > tolerance_ulps)
    return r


def main():
    """Compare `outputs` (the framework's) with the reference; print, return the exit status."""
    expected = reference(OP, MODE, reference_inputs, attrs)
    print(f"normfuzz case {CASE_ID}: {OP}/{MODE} in {FORMAT}, runner {RUNNER}")
    print(f"tolerance: {TOLERANCE_ULPS} units of u = {UNIT_ROUNDOFF!r} times the output's largest |reference|")
    results, status = {}, 0
    for name, got in outputs.items():
        if name not in expected:
            print(f"{name}: the reference has no output of this name")
            continue
        r = compare(got, expected[name], UNIT_ROUNDOFF, TOLERANCE_ULPS)
        results[name] = r
        status |= int(r["exceeds"])
        print(f"\n{name}: shape {tuple(r['shape'])}, dtype {r['dtype']}")
        if "reference_shape" in r:
            print(f"  shape mismatch: the reference has shape {tuple(r['reference_shape'])}")
            continue
        print(f"  max |framework - reference| = {r['max_abs']:.6g}"
              f"  ({r['ulps_normwise']:.3g} u x max|reference| = {r['max_abs_reference']:.6g})")
        if "worst_index" in r:
            print(f"    at index {tuple(r['worst_index'])}: framework {r['worst_framework']!r}, "
                  f"reference {r['worst_reference']!r}")
        print(f"  max relative error = {r['max_rel']:.6g}")
        print(f"  NaN/Inf pattern differences: {r['pattern_diffs']}")
        print(f"  {'EXCEEDS' if r['exceeds'] else 'within'} the tolerance")
    missing = sorted(set(expected) - set(outputs))
    if missing:
        print(f"\nnot returned by this path (reference only): {', '.join(missing)}")
    for r in results.values():
        for key in ("max_abs", "max_rel", "ulps_normwise", "max_abs_reference", "worst_framework", "worst_reference"):
            if key in r:
                r[key] = float.hex(r[key])  # exact, and JSON-safe for nan/inf
    print("\nNORMFUZZ_RESULT " + json.dumps({"case": CASE_ID, "runner": RUNNER, "outputs": results,
                                              "not_returned": missing, "status": status}))
    return status
