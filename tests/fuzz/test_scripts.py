"""Standalone bug-report scripts (fuzz.scripts) and their float64 reference (fuzz.script_reference).

- The reference agrees with the oracle within the oracle's float64 error bound (error/bound <= 1)
  on every op and mode, over a grid of variants and Hypothesis-drawn cases (seeded, derandomized).
- For every torch and ORT runner id, scripts for cases covering every op and mode it supports (a
  channels-last case wherever the op has layouts, several dtypes) run without normfuzz: the batch
  runs them through runpy in one clean subprocess per runner, with normfuzz's packages and the other
  frameworks made unimportable, and a few run as real standalone subprocesses (`python -I`). The
  outputs a script computes must be bitwise what the runner returns in process (sha256), with the
  same largest |framework - reference|; an ORT script's model must serialize to the runner's bytes.
- A case over the embedding limit reads its inputs from the .npz side file.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import inspect
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import oracles
from fuzz import script_reference, scripts
from fuzz.case import Case
from fuzz.runners.base import FrameworkRaised, Runner
from oracles.errormodel import error_ratio
from tests.fuzz.runners.harness import make_case, require_framework, run_inprocess

DTYPES = ("float32", "float16", "bfloat16", "float64")
NIGHTLY = os.environ.get("NORMFUZZ_NIGHTLY") == "1"


# --------------------------------------------------------------------------------------------------
# the reference against the oracle


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def build(op: str, mode: str, rng: np.random.Generator, *, rank: int, layout: str, params: str,
          variant: str) -> tuple[dict, dict]:
    """Well-conditioned float64 inputs and attrs for one op/mode.

    params: "both" | "first" | "second" | "none" (which of gamma/beta, weight or g's tangent);
    variant: "" or an op-specific convention ("axis", "per_group", "running", "cumulative",
    "biased", "no_stats", eps modes, "floor" (the eps floor of the max conventions binds),
    "nonfinite" (a NaN and an inf in x)).
    """
    a: dict = {}
    ins: dict = {}
    gname, bname = {"rms_norm": ("weight", None), "weight_norm": ("g", None)}.get(op, ("gamma", "beta"))
    if op in ("mvn", "l2_normalize"):
        gname = bname = None
    x_name, y_name = ("v", "w") if op == "weight_norm" else ("x", "y")
    if op in ("batch_norm", "group_norm", "instance_norm"):
        rank = max(rank, 3 if op == "instance_norm" else 2)
        c = 4 if op == "group_norm" else 3
        spatial = (5, 2, 3)[: rank - 2]
        shape = (3, c) + spatial if layout == "channels_first" else (3,) + spatial + (c,)
        a.update(eps=1e-5, layout=layout)
        pshape = (c,)
        if op == "group_norm":
            a["num_groups"] = 2
            if variant == "per_group":
                a["affine"], pshape = "per_group", (2,)
    elif op in ("layer_norm", "rms_norm"):
        shape = (4, 3, 5, 2)[:rank] if rank > 1 else (6,)
        if variant == "axis":
            a["axis"] = 1 if rank > 1 else 0
            k = len(shape) - a["axis"]
        else:
            k = min(2, len(shape))
            a["normalized_ndim"] = k
        a["eps"] = 1e-5
        pshape = shape[len(shape) - k:]
    elif op in ("mvn", "l2_normalize"):
        shape = (3, 4, 5, 2)[:max(rank, 2)]
        a["axes"] = (0, 2) if len(shape) > 2 and variant != "one_axis" else (-1,)
        if op == "mvn":
            a.update(eps=1e-9, eps_mode=variant if variant in ("inside", "outside", "none") else "outside")
        else:
            a.update(eps=1e-12, eps_mode=variant if variant in ("none", "inside", "max_norm", "max_sumsq") else "max_norm")
            if variant == "floor":
                a.update(eps=100.0, eps_mode="max_norm" if rank % 2 else "max_sumsq")
        pshape = None
    else:  # weight_norm
        shape = (4, 3, 2, 2)[:rank]
        dim = {"last": -1, "second": 1 % rank}.get(variant, 0)
        a["dim"] = dim
        pshape = (shape[dim],) if params != "keepdims" else tuple(d if i == dim % rank else 1 for i, d in enumerate(shape))
        if variant == "inside":
            a.update(eps_mode="inside", eps=1e-3)
    loc = 0.0 if op in ("l2_normalize", "weight_norm") else 0.5
    x = rng.normal(loc, 1.0, size=shape)
    if variant == "nonfinite":
        flat = x.reshape(-1)
        flat[1], flat[-1] = np.nan, np.inf
    ins[x_name] = x
    has = {"both": (gname, bname), "first": (gname,), "second": (bname,), "none": (),
           "keepdims": (gname,)}[params]
    for n in (gname, bname):
        if n is not None and n in has:
            ins[n] = rng.uniform(0.5, 1.5, size=pshape) * rng.choice([-1.0, 1.0], size=pshape) if n == gname \
                else rng.normal(size=pshape)
    if op == "weight_norm" and "g" not in ins:
        ins["g"] = rng.uniform(0.5, 1.5, size=pshape)
    state, _, kind = mode.partition("_") if op == "batch_norm" else ("", "", mode)
    kind = kind or ("forward" if op == "batch_norm" else mode)
    if op == "batch_norm":
        c = pshape[0]
        if state == "training" and variant == "cumulative":
            a.update(momentum=None, num_batches_tracked=3)
        elif state == "training" and variant == "running":
            a.update(momentum=0.75, momentum_on="running")
        if variant == "biased":
            a["running_var_estimator"] = "biased"
        if state == "inference" or mode == "training_steps" or (state == "training" and variant != "no_stats"):
            ins["running_mean"] = rng.normal(size=c)
            ins["running_var"] = rng.uniform(0.5, 2.0, size=c)
        if mode == "training_steps":
            ins["xs"] = np.stack([ins.pop("x"), rng.normal(0.5, 1.0, size=shape), rng.normal(-1.0, 2.0, size=shape)])
            kind = "steps"
    if kind == "vjp":
        ins["d" + y_name] = rng.normal(size=shape)
    elif kind == "jvp":
        ins["t" + x_name] = rng.normal(size=shape)
        for n in (gname, bname):
            if n is not None and n in ins and (n != gname or params != "second"):
                ins["t" + n] = rng.normal(size=ins[n].shape)
    return ins, a


_VARIANTS = {
    "batch_norm": ["", "running", "cumulative", "biased", "no_stats", "nonfinite"],
    "layer_norm": ["", "axis", "nonfinite"],
    "rms_norm": ["", "axis", "nonfinite"],
    "group_norm": ["", "per_group", "nonfinite"],
    "instance_norm": ["", "nonfinite"],
    "mvn": ["outside", "inside", "none", "one_axis", "nonfinite"],
    "l2_normalize": ["max_norm", "none", "inside", "max_sumsq", "floor", "one_axis", "nonfinite"],
    "weight_norm": ["", "last", "second", "inside", "nonfinite"],
}
_PARAMS = {"mvn": ("none",), "l2_normalize": ("none",), "weight_norm": ("first", "keepdims", "second")}


def _grid():
    """(op, mode, rank, layout, params, variant) over every op and mode: each variant once, ranks,
    layouts and optional parameters rotating."""
    out = []
    for op, mode in oracles.modes():
        params = _PARAMS.get(op, ("both", "first", "second", "none"))
        for i, variant in enumerate(_VARIANTS[op]):
            rank = (2, 3, 4, 1)[i % 4] if op in ("layer_norm", "rms_norm", "weight_norm") else (3, 4, 2)[i % 3]
            layout = ("channels_first", "channels_last")[i % 2]
            out.append((op, mode, rank, layout, params[i % len(params)], variant))
    return out


def _check_reference(op, mode, ins, attrs) -> dict[str, float]:
    """Max error/bound of the reference against the oracle's float64 bound, per output."""
    ev = oracles.evaluate(op, mode, ins, attrs, "float64")
    ref = script_reference.reference(op, mode, ins, attrs)
    assert sorted(ref) == sorted(ev.outputs), f"{op}/{mode}: outputs {sorted(ref)}, oracle {sorted(ev.outputs)}"
    worst = {}
    for k, want in ev.outputs.items():
        assert ref[k].dtype == np.float64, f"{op}/{mode} {k}: dtype {ref[k].dtype}"
        assert ref[k].shape == want.shape, f"{op}/{mode} {k}: shape {ref[k].shape}, oracle {want.shape}"
        r = error_ratio(ref[k], want, ev.bounds[k], "float64")
        worst[k] = float(np.max(r)) if r.size else 0.0
    return worst


@pytest.mark.parametrize("op,mode,rank,layout,params,variant", _grid())
def test_reference_agrees_with_oracle(op, mode, rank, layout, params, variant):
    ins, attrs = build(op, mode, _rng(op, mode, variant), rank=rank, layout=layout, params=params, variant=variant)
    worst = _check_reference(op, mode, ins, attrs)
    assert max(worst.values()) <= 1.0, f"{op}/{mode} {variant}: error/bound {worst}"
    if variant == "nonfinite" and mode not in ("inference", "inference_vjp", "inference_jvp"):
        # the NaN rule is exercised: some output of a reduction set is NaN
        ref = script_reference.reference(op, mode, ins, attrs)
        assert any(np.isnan(v).any() for v in ref.values()), f"{op}/{mode}: no NaN from a NaN input"


def test_reference_covers_every_mode():
    assert {(op, mode) for op, mode, *_ in _grid()} == set(oracles.modes())


@settings(max_examples=2000 if NIGHTLY else 300, derandomize=True, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), pair=st.sampled_from(oracles.modes()), rank=st.integers(1, 4),
       layout=st.sampled_from(["channels_first", "channels_last"]), which=st.integers(0, 99))
def test_reference_agrees_with_oracle_drawn(seed, pair, rank, layout, which):
    op, mode = pair
    params = _PARAMS.get(op, ("both", "first", "second", "none"))
    variants = [v for v in _VARIANTS[op] if v != "nonfinite"]
    ins, attrs = build(op, mode, np.random.default_rng(seed), rank=rank, layout=layout,
                       params=params[which % len(params)], variant=variants[which % len(variants)])
    worst = _check_reference(op, mode, ins, attrs)
    assert max(worst.values()) <= 1.0, f"{op}/{mode} {attrs}: error/bound {worst}"


def test_reference_source_is_numpy_only():
    tree = ast.parse(inspect.getsource(script_reference))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"numpy"}
    assert len(inspect.getsource(script_reference).splitlines()) < 300


# --------------------------------------------------------------------------------------------------
# scripts of the torch and ORT runners


def _runners(module: str) -> dict[str, Runner]:
    if module == "torch":
        from fuzz.runners import torch_runner as m
    else:
        from fuzz.runners import ort_runner as m
    return {r.id: r for r in m.runners()}


@pytest.fixture(scope="module")
def torch_runners():
    require_framework("torch")
    return _runners("torch")


@pytest.fixture(scope="module")
def ort_runners():
    require_framework("onnxruntime")
    require_framework("onnx")
    return _runners("onnxruntime")


def sample_cases(runner: Runner, grid) -> list[tuple[str, Case]]:
    """At least one case per op and mode the runner supports: a channels-last case where the grid
    has one, and a second case of another dtype, the dtypes rotating over the ops and modes."""
    out = []
    i = 0
    for op, modes in runner.ops.items():
        for mode in modes:
            picked = []
            for j in range(len(DTYPES)):
                dtype = DTYPES[(i + j) % len(DTYPES)]
                if dtype not in runner.dtypes:
                    continue
                cases = [(lab, c) for lab, c in grid(op, mode, dtype)
                         if runner.supports(c.op, c.mode, c.dtype, c.attrs) is None]
                if not cases:
                    continue
                want = "channels_last" if not picked else "channels_first"
                pref = [lc for lc in cases if lc[1].attrs.get("layout") == want] or cases
                lab, c = pref[(i * 7 + j) % len(pref)]
                picked.append((f"{op}/{mode} {dtype} {lab}", c))
                if len(picked) == 2:
                    break
            assert picked, f"{runner.id}: no supported case for {op}/{mode}"
            out += picked
            i += 1
    for dtype in DTYPES:  # a dtype the rotation missed (e.g. ORT's bfloat16, LayerNormalization only)
        if dtype in runner.dtypes and all(c.dtype != dtype for _, c in out):
            extra = [(f"{op}/{mode} {dtype} {lab}", c) for op, modes in runner.ops.items() for mode in modes
                     for lab, c in grid(op, mode, dtype) if runner.supports(c.op, c.mode, c.dtype, c.attrs) is None]
            out += extra[:1]
    return out


_DRIVER = r'''
"""Run repro scripts in this one process (fresh globals each); print one JSON line per script."""
import contextlib, hashlib, io, json, runpy, sys

for name in sys.argv[1].split(","):  # what the scripts must not need
    sys.modules[name] = None
for path in sys.argv[2:]:
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            g = runpy.run_path(path, run_name="normfuzz_repro")  # all but the __main__ guard ...
            status = g["main"]()  # ... which calls sys.exit(main())
    except Exception as e:  # the framework raised: the script's traceback, as a record
        name = f"{type(e).__module__}.{type(e).__qualname__}"
        print(json.dumps({"path": path, "raised": name, "message": str(e), "stdout": buf.getvalue()}))
        continue
    model = g.get("model")
    sha = hashlib.sha256(model.SerializeToString()).hexdigest() if model is not None else None
    print(json.dumps({"path": path, "status": status, "stdout": buf.getvalue(), "model_sha256": sha}))
'''

_BLOCK = {"torch": "fuzz,oracles,bugzoo,tests,onnx,onnxruntime,tensorflow,keras,jax",
          "onnxruntime": "fuzz,oracles,bugzoo,tests,torch,tensorflow,keras,jax"}


def _clean_env(tmp: Path) -> dict[str, str]:
    """No PYTHONPATH or other PYTHON* variables; HOME in the temp dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HOME"] = str(tmp)
    return env


def _run_standalone(path: Path, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", path.name], cwd=tmp, env=_clean_env(tmp), capture_output=True,
                          text=True, timeout=300)


def _result(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith(scripts.RESULT_PREFIX)]
    assert len(lines) == 1, f"expected one {scripts.RESULT_PREFIX.strip()} line:\n{stdout}"
    return json.loads(lines[0][len(scripts.RESULT_PREFIX):])


def _imports_of(text: str) -> set[str]:
    tree = ast.parse(text)
    out = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return out | {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def _check_script_matches_runner(runner: Runner, case: Case, res: dict, stdout: str, status: int) -> None:
    """The script's outputs are the runner's (bitwise, same max |error|); its status is the rule's."""
    outs = run_inprocess(runner, case)
    ref = script_reference.reference(case.op, case.mode, dict(case.inputs), dict(case.attrs))
    got = res["outputs"]
    assert sorted(got) == sorted(outs), f"script outputs {sorted(got)}, runner {sorted(outs)}"
    expect_status = 0
    for name, arr in outs.items():
        mine = scripts.compare(arr, ref[name], scripts.UNIT_ROUNDOFF[case.dtype], scripts.TOLERANCE_ULPS)
        assert got[name]["sha256"] == mine["sha256"], f"{name}: the script's output is not the runner's"
        assert got[name]["dtype"] == mine["dtype"] and got[name]["shape"] == mine["shape"], name
        assert got[name]["max_abs"] == float.hex(mine["max_abs"]), name
        assert got[name]["pattern_diffs"] == mine["pattern_diffs"], name
        assert f"\n{name}: shape {tuple(arr.shape)}, dtype {arr.dtype}" in stdout
        expect_status |= int(mine["exceeds"])
    assert sorted(res["not_returned"]) == sorted(set(ref) - set(outs))
    assert status == res["status"] == expect_status
    assert stdout.count("max |framework - reference| = ") == len(outs)
    assert stdout.count("NaN/Inf pattern differences: ") == len(outs)


def _run_batch(framework: str, runner_list, grid, tmp_path: Path) -> dict[str, int]:
    """Emit, run (one subprocess) and check the sample of every runner; returns cases per runner."""
    work = tmp_path / framework
    work.mkdir()
    jobs = []
    for r in runner_list:
        version = r.version()
        for k, (label, case) in enumerate(sample_cases(r, grid)):
            text = scripts.emit_script(case, r, version=version, note=f"sample {label}")
            assert _imports_of(text) <= {"base64", "hashlib", "json", "sys", "pathlib", "numpy", "ctypes",
                                         *{"torch": ["torch"], "onnxruntime": ["onnx", "onnxruntime"]}[framework]}
            path = work / f"{k:03d}_{scripts.script_name(r.id)}"
            path.write_text(text)
            jobs.append((r, label, case, path))
    driver = work / "driver.py"
    driver.write_text(_DRIVER)
    proc = subprocess.run([sys.executable, "-I", str(driver), _BLOCK[framework]] + [str(j[3]) for j in jobs],
                          cwd=work, env=_clean_env(work), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = {d["path"]: d for d in map(json.loads, proc.stdout.splitlines())}
    counts: dict[str, int] = {}
    for r, label, case, path in jobs:
        d = runs[str(path)]
        try:
            if "raised" in d:  # a RAISED outcome: the runner raises the same error in process
                try:
                    run_inprocess(r, case)
                    raise AssertionError(f"the script raised {d['raised']}: {d['message']}; the runner did not")
                except FrameworkRaised as e:
                    assert (e.exc_type, e.message) == (d["raised"], d["message"])
                counts["raised"] = counts.get("raised", 0) + 1
                continue
            _check_script_matches_runner(r, case, _result(d["stdout"]), d["stdout"], d["status"])
            if framework == "onnxruntime":  # the script's model is the runner's model, byte for byte
                assert d["model_sha256"] == hashlib.sha256(_ort_model_bytes(r, case)).hexdigest()
        except AssertionError as e:
            raise AssertionError(f"{r.id} {label} ({path.name}): {e}") from None
        counts[r.id] = counts.get(r.id, 0) + 1
    return counts


def _ort_model_bytes(runner, case: Case) -> bytes:
    """The bytes of the model the runner ran for `case` (its plan, memoized by the run)."""
    key = (case.op, case.mode, case.dtype, tuple((k, v.shape) for k, v in case.inputs.items()),
           tuple(case.attrs.items()))
    return runner._plans[key].build()


def _covered(runner: Runner, counts_cases) -> set[tuple[str, str]]:
    return {(c.op, c.mode) for _, c in counts_cases}


def test_torch_scripts_reproduce_the_runners(torch_runners, tmp_path):
    from tests.fuzz.runners import torch_cases

    rs = list(torch_runners.values())
    assert {r.id for r in rs} == {"torch.functional", "torch.module", "torch.weight_norm", "torch.native"}
    for r in rs:  # every op and mode, both layouts and every dtype appear in the sample
        sample = sample_cases(r, torch_cases.grid)
        assert _covered(r, sample) == {(op, m) for op, ms in r.ops.items() for m in ms}
        assert {c.dtype for _, c in sample} == set(DTYPES)
        if r.id != "torch.weight_norm":
            assert {c.attrs.get("layout") for _, c in sample} >= {"channels_first", "channels_last"}
    counts = _run_batch("torch", rs, torch_cases.grid, tmp_path)
    # the sample holds cases torch raises on (group_norm JVP of channels-last data): their scripts
    # raise the runner's error, the repro of a RAISED finding
    raised = counts.pop("raised", 0)
    assert raised >= 1
    assert sum(counts.values()) + raised == sum(len(sample_cases(r, torch_cases.grid)) for r in rs)


def test_ort_scripts_reproduce_the_runners(ort_runners, tmp_path):
    from tests.fuzz.runners import ort_cases

    rs = list(ort_runners.values())
    assert {r.id for r in rs} == {"ort", "ort.defaults", "ort.noopt"}
    for r in rs:
        sample = sample_cases(r, ort_cases.grid)
        assert _covered(r, sample) == {(op, m) for op, ms in r.ops.items() for m in ms}
        assert {c.dtype for _, c in sample} == set(DTYPES)  # bfloat16: LayerNormalization only
        assert {c.attrs.get("layout") for _, c in sample} >= {"channels_first", "channels_last"}
    counts = _run_batch("onnxruntime", rs, ort_cases.grid, tmp_path)
    assert counts == {r.id: len(sample_cases(r, ort_cases.grid)) for r in rs}  # none raised


# --------------------------------------------------------------------------------------------------
# real standalone runs, the side file, write_scripts


def _standalone_cases():
    from tests.fuzz.runners import ort_cases, torch_cases

    pick = lambda g, label_part: next(c for lab, c in g if label_part in lab)  # noqa: E731
    return [
        ("torch", "torch.module", pick(torch_cases.grid("batch_norm", "training", "float16"), "rank4 channels_last affine=both")),
        ("torch", "torch.weight_norm", pick(torch_cases.grid("weight_norm", "jvp", "float32"), "v(4, 3, 2) dim=1")),
        ("onnxruntime", "ort", pick(ort_cases.grid("layer_norm", "forward", "bfloat16"), "{'normalized_ndim': 2} none")),
        ("onnxruntime", "ort.defaults", pick(ort_cases.grid("batch_norm", "training_steps", "float64"), "channels_last")),
        # torch raises here (no forward AD for _weight_norm_interface): the repro of a RAISED finding
        ("torch", "torch.weight_norm", pick(torch_cases.grid("weight_norm", "jvp", "float16"), "v(4, 3) dim=0")),
    ]


@pytest.mark.parametrize("k", range(5))
def test_script_runs_standalone(k, tmp_path):
    framework, rid, case = _standalone_cases()[k]
    require_framework(framework)
    runner = _runners(framework)[rid]
    paths = scripts.write_scripts(case, [runner], tmp_path, note="a standalone run")
    assert paths == [tmp_path / scripts.script_name(rid)]
    text = paths[0].read_text()
    assert "Finding   a standalone run" in text and f"Runner    {rid}: {runner.framework} {runner.version()}" in text
    proc = _run_standalone(paths[0], tmp_path)
    if k == 4:  # the framework's exception: a traceback, status 1, no result line; the runner raises it too
        with pytest.raises(FrameworkRaised) as info:
            run_inprocess(runner, case)
        assert proc.returncode == 1 and scripts.RESULT_PREFIX not in proc.stdout
        assert info.value.exc_type == "builtins.NotImplementedError"
        assert proc.stderr.rstrip().endswith(f"NotImplementedError: {info.value.message}")
        return
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    res = _result(proc.stdout)
    _check_script_matches_runner(runner, case, res, proc.stdout, proc.returncode)


def test_large_inputs_use_the_side_file(tmp_path):
    require_framework("torch")
    runner = _runners("torch")["torch.functional"]
    rng = np.random.default_rng(7)
    x = rng.normal(3.0, 1.0, size=(300, 1024))  # 1.2 MB of float32
    case = make_case("layer_norm", "vjp", "float32", {"x": x, "gamma": rng.uniform(0.5, 1.5, 1024),
                                                        "dy": rng.normal(size=x.shape)}, {"eps": 1e-5, "normalized_ndim": 1})
    assert sum(a.nbytes for a in case.inputs.values()) > scripts.EMBED_LIMIT
    paths = scripts.write_scripts(case, [runner], tmp_path)
    side = tmp_path / scripts.side_file_name(case)
    assert paths == [tmp_path / "repro_torch.functional.py", side]
    text = paths[0].read_text()
    assert len(text) < 100_000 and "decode(" not in text and "allow_pickle=False" in text
    with np.load(side, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(case.inputs)
        for name, arr in case.inputs.items():
            assert npz[name].dtype == arr.dtype and np.array_equal(npz[name].view(np.uint8), arr.view(np.uint8))
    proc = _run_standalone(paths[0], tmp_path)
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    _check_script_matches_runner(runner, case, _result(proc.stdout), proc.stdout, proc.returncode)
    # without its side file the script stops with a traceback (status 1) and no result line
    side.rename(tmp_path / "moved.npz")
    proc = _run_standalone(paths[0], tmp_path)
    assert proc.returncode == 1 and "FileNotFoundError" in proc.stderr
    assert scripts.RESULT_PREFIX not in proc.stdout


def test_embedded_inputs_are_lossless():
    """NaN payloads, -0.0, subnormals and bfloat16 carriers survive the base64 embedding."""
    x = np.array([[np.nan, -0.0, 1e-45, -np.inf], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    bits = x.view(np.uint32).copy()
    bits[0, 0] = 0x7FC00000 | 0x123 << 16  # a NaN with a payload in the bfloat16 half
    bits[0, 2] = 0x00010000  # a bfloat16 subnormal
    case = Case("layer_norm", "forward", "bfloat16", {"x": bits.view(np.float32)}, {"eps": 1e-5, "normalized_ndim": 1})
    ns: dict = {"np": np, "base64": base64}
    exec(scripts._inputs_code(case, embed=True), ns)  # noqa: S102 - our own generated code
    got = ns["inputs"]["x"]
    assert got.dtype == np.float32 and got.flags.writeable
    assert np.array_equal(got.view(np.uint32), case.inputs["x"].view(np.uint32))


def test_compare_reports_patterns_and_tolerance():
    want = np.array([1.0, 2.0, np.nan, np.inf, -4.0])
    got = np.array([1.0, 2.0 + 2.0 ** -20, 0.5, np.inf, -np.inf], dtype=np.float32)
    r = scripts.compare(got, want, 2.0 ** -24, 8)
    assert r["pattern_diffs"] == 2 and r["exceeds"]
    assert r["max_abs"] == 2.0 ** -20 and r["worst_index"] == [1] and r["max_abs_reference"] == 4.0
    assert r["ulps_normwise"] == 2.0 ** -20 / (2.0 ** -24 * 4.0)
    ok = scripts.compare(np.float32([1.0, -2.0 + 2.0 ** -22]), np.array([1.0, -2.0]), 2.0 ** -24, 8)
    assert not ok["exceeds"] and ok["ulps_normwise"] == 2.0 and ok["max_rel"] == 2.0 ** -23
    bad = scripts.compare(np.float32([1.0, -2.0 + 2.0 ** -19]), np.array([1.0, -2.0]), 2.0 ** -24, 8)
    assert bad["exceeds"] and bad["ulps_normwise"] == 16.0
    edge = scripts.compare(np.float32([1.0, -2.0 + 2.0 ** -20]), np.array([1.0, -2.0]), 2.0 ** -24, 8)
    assert not edge["exceeds"] and edge["ulps_normwise"] == 8.0  # the tolerance itself passes
    assert scripts.compare(np.zeros(3), np.zeros((3, 1)), 2.0 ** -53, 8)["exceeds"]


def test_write_scripts_skips_runners_without_scripts(tmp_path):
    class NoScript(Runner):
        id, framework = "third.party", "none"
        ops = {"rms_norm": ("forward",)}

    require_framework("torch")
    torch_fn = _runners("torch")["torch.functional"]
    native = _runners("torch")["torch.native"]  # native has no rms_norm: not supported, skipped
    rng = np.random.default_rng(3)
    case = make_case("rms_norm", "forward", "float16", {"x": rng.normal(size=(3, 5))}, {"eps": 1e-6, "normalized_ndim": 1})
    paths = scripts.write_scripts(case, [NoScript(), torch_fn, native], tmp_path, versions={"torch.functional": None})
    assert [p.name for p in paths] == ["repro_torch.functional.py"]
    assert "torch (version not recorded)" in paths[0].read_text()
    with pytest.raises(ValueError, match="writes no standalone scripts"):
        scripts.emit_script(case, NoScript())


def test_header_survives_any_note():
    require_framework("torch")
    runner = _runners("torch")["torch.functional"]
    case = make_case("l2_normalize", "forward", "float32", {"x": np.arange(6.0).reshape(2, 3)},
                     {"eps": 1e-12, "axes": (-1,), "eps_mode": "max_norm"})
    note = 'y off by 3 ulps; """ \\ "" \' \n end"'
    text = scripts.emit_script(case, runner, version="2.13", note=note)
    doc = ast.get_docstring(ast.parse(text), clean=False)
    assert " ".join(note.split()) in " ".join(doc.split())
    assert doc.startswith("normfuzz reproducer: l2_normalize/forward on torch.functional")


def test_script_names():
    assert scripts.script_name("torch.functional") == "repro_torch.functional.py"
    assert scripts.script_name("my/runner x") == "repro_my_runner_x.py"
