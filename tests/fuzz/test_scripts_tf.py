"""Standalone bug-report scripts (fuzz.scripts) of the TensorFlow/Keras runners.

- For every runner id of `fuzz.runners.tf_runner` (tf.nn, tf.fused_batch_norm, keras,
  keras.UnitNormalization), scripts for a sample of the runner tests' cases (`tf_cases`) covering
  every op and mode it supports, every dtype it accepts and both layouts, run without normfuzz: one
  clean subprocess runs them all through runpy (TensorFlow imported once), with normfuzz's packages
  and the other frameworks made unimportable; a few run as real standalone subprocesses
  (`python -I`). The outputs a script computes must be bitwise what the runner returns in process
  (sha256), with the same largest |framework - reference| (helpers of tests/fuzz/test_scripts.py).
- A script refuses (Unsupported) exactly what the runner refuses, and `write_scripts` skips it.
- The scalar literals a script feeds (eps, running-average weights) are the tensors the runner
  feeds, bit for bit; the Keras weights a script assigns are the built layer's variables.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings

from fuzz import scripts, strategies
from fuzz.case import Case
from fuzz.runners.base import FrameworkRaised, Runner, Unsupported
from tests.fuzz.runners import tf_cases
from tests.fuzz.runners.harness import require_framework, run_inprocess
from tests.fuzz.test_scripts import (_DRIVER, DTYPES, NIGHTLY, _check_script_matches_runner, _clean_env,
                                     _imports_of, _result, sample_cases)

RUNNER_IDS = ("tf.nn", "tf.fused_batch_norm", "keras", "keras.UnitNormalization")
#: What a TF/Keras script may import, and what the batch makes unimportable.
ALLOWED_IMPORTS = {"base64", "hashlib", "json", "sys", "pathlib", "os", "numpy", "tensorflow", "keras"}
BLOCK = "fuzz,oracles,bugzoo,tests,torch,onnx,onnxruntime,jax"
#: Layouts appear where the op has them (fused_batch_norm: the 4-D and 5-D cases).
LAYOUT_OPS = ("batch_norm", "group_norm", "instance_norm")


@pytest.fixture(scope="module")
def tf_runners() -> dict[str, Runner]:
    require_framework("tensorflow")
    require_framework("keras")
    from fuzz.runners import tf_runner

    return {r.id: r for r in tf_runner.runners()}


@lru_cache(maxsize=None)
def _by_key(runner: Runner) -> dict[tuple[str, str, str], list[tuple[str, Case]]]:
    """The runner tests' cases (every configuration in every dtype) the runner can express, by
    (op, mode, dtype)."""
    out: dict[tuple[str, str, str], list[tuple[str, Case]]] = {}
    for label, case, ok in tf_cases.grid(runner, full=True):
        if ok:
            out.setdefault((case.op, case.mode, case.dtype), []).append((label, case))
    return out


def grid_of(runner: Runner):
    """`tf_cases.grid` in the form `sample_cases` takes: (op, mode, dtype) -> [(label, case)]."""
    return lambda op, mode, dtype: _by_key(runner).get((op, mode, dtype), [])


def _sample(runner: Runner) -> list[tuple[str, Case]]:
    return sample_cases(runner, grid_of(runner))


# --------------------------------------------------------------------------------------------------
# the batch: every runner id, every op and mode


def test_tf_scripts_reproduce_the_runners(tf_runners, tmp_path):
    assert set(tf_runners) == set(RUNNER_IDS)
    jobs = []
    for r in tf_runners.values():
        sample = _sample(r)
        assert {(c.op, c.mode) for _, c in sample} == {(op, m) for op, ms in r.ops.items() for m in ms}, r.id
        assert {c.dtype for _, c in sample} == set(r.dtypes), r.id
        if any(op in LAYOUT_OPS for op in r.ops):
            assert {c.attrs.get("layout") for _, c in sample} >= {"channels_first", "channels_last"}, r.id
        version = r.version()
        for label, case in sample:
            text = scripts.emit_script(case, r, version=version, note=f"sample {label}")
            assert _imports_of(text) <= ALLOWED_IMPORTS, f"{r.id} {label}: imports {_imports_of(text)}"
            assert text.index('os.environ["TF_CPP_MIN_LOG_LEVEL"]') < text.index("import tensorflow")
            path = tmp_path / f"{len(jobs):03d}_{scripts.script_name(r.id)}"
            path.write_text(text)
            jobs.append((r, label, case, path, text))
    assert len(jobs) >= 60  # the sample: about two cases per op/mode of each runner
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    # the scripts run in the subprocess while this process computes the runners' outputs (2 cores)
    with subprocess.Popen([sys.executable, "-I", str(driver), BLOCK] + [str(j[3]) for j in jobs], cwd=tmp_path,
                          env=_clean_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        for r, _, case, _, _ in jobs:
            run_inprocess(r, case)  # traces and caches; the check below calls it again
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    runs = {d["path"]: d for d in map(json.loads, out.splitlines())}
    counts: dict[str, int] = {}
    for r, label, case, path, text in jobs:
        d = runs[str(path)]
        try:
            assert "raised" not in d, f"the script raised {d.get('raised')}: {d.get('message')}"
            _check_script_matches_runner(r, case, _result(d["stdout"]), d["stdout"], d["status"])
            if r.id == "keras":
                _check_keras_weights(r, case, text)
        except AssertionError as e:
            raise AssertionError(f"{r.id} {label} ({path.name}): {e}") from None
        counts[r.id] = counts.get(r.id, 0) + 1
    assert counts == {r.id: len(_sample(r)) for r in tf_runners.values()}


def _check_keras_weights(runner, case: Case, text: str) -> None:
    """The script assigns exactly the variables the runner's built layer has (those of the case
    and those at Keras' initial values)."""
    x0 = case.inputs["xs"][0] if case.mode == "training_steps" else case.inputs["x"]
    spec, bshape, wmap = runner._spec(case, x0)
    layer = runner._fns[("layer", spec, case.dtype, bshape)]["layer"]
    have = {attr for attr in wmap.values() if getattr(layer, attr, None) is not None}
    assert set(re.findall(r"layer\.(\w+)\.assign\(", text)) == have


# --------------------------------------------------------------------------------------------------
# real standalone runs


def _pick(runner: Runner, op: str, mode: str, dtype: str, *parts: str) -> Case:
    return next(c for lab, c in grid_of(runner)(op, mode, dtype) if all(p in lab for p in parts))


def test_tf_scripts_run_standalone(tf_runners, tmp_path):
    """Three scripts as users run them (`python -I repro_<id>.py`, side by side), outputs bitwise
    the runner's: a tf.nn group_norm JVP (bfloat16, channels-last), Keras BatchNormalization
    training steps (float16, channels-last) and a fused_batch_norm VJP (float32, NCDHW)."""
    picks = [
        ("tf.nn", ("group_norm", "jvp", "bfloat16", "(2, 3, 2, 6)", "channels_last")),
        ("keras", ("batch_norm", "training_steps", "float16", "(3, 2, 5, 4)", "channels_last")),
        ("tf.fused_batch_norm", ("batch_norm", "inference_vjp", "float32", "(2, 3, 2, 2, 3)")),
    ]
    jobs = []
    for k, (rid, key) in enumerate(picks):
        runner = tf_runners[rid]
        case = _pick(runner, *key)
        directory = tmp_path / str(k)
        paths = scripts.write_scripts(case, [runner], directory, note="a standalone run")
        assert paths == [directory / scripts.script_name(rid)]
        text = paths[0].read_text()
        assert f"Runner    {rid}: {runner.framework} {runner.version()}" in text
        proc = subprocess.Popen([sys.executable, "-I", paths[0].name], cwd=directory, env=_clean_env(directory),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        jobs.append((runner, case, proc))
    for runner, case, proc in jobs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode in (0, 1), err[-4000:]
        _check_script_matches_runner(runner, case, _result(out), out, proc.returncode)
        assert "Traceback" not in err


# --------------------------------------------------------------------------------------------------
# what a script refuses, and the literals it feeds


def test_scripts_refuse_what_the_runners_refuse(tf_runners, tmp_path):
    refused = 0
    for r in tf_runners.values():
        for label, case, ok in tf_cases.grid(r):
            if ok:
                continue
            with pytest.raises(Unsupported):  # the runner refuses it at run time ...
                run_inprocess(r, case)
            with pytest.raises(Unsupported):  # ... and so does its script
                r.script(case)
            assert scripts.write_scripts(case, [r], tmp_path / "none") == []
            refused += 1
    assert refused >= 3  # fused rank 2/3, Keras' unbiased or cumulative running statistics
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    fused64 = tf_cases.make("batch_norm", "inference", "float64", x.shape, {"eps": 1e-3, "layout": "channels_first"})
    mvn_out = tf_cases.make("mvn", "forward", "float32", (4, 6), {"eps": 1e-5, "axes": (1,), "eps_mode": "outside"})
    unit_eps = tf_cases.make("l2_normalize", "jvp", "float32", (4, 6),
                             {"eps": 1e-6, "axes": (1,), "eps_mode": "max_norm"})
    for rid, case, words in (("tf.fused_batch_norm", fused64, "float64"), ("tf.nn", mvn_out, "eps_mode"),
                             ("keras.UnitNormalization", unit_eps, "1e-12")):
        assert tf_runners[rid].supports(case.op, case.mode, case.dtype, case.attrs) is not None
        with pytest.raises(Unsupported, match=words):
            tf_runners[rid].script(case)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scalar_literals_are_the_fed_tensors(tf_runners, dtype):
    """`tf.constant(<literal>, dtype)` in a script is bitwise the tensor the runner feeds (its
    `_scalar`: numpy's rounding of the float64 value, ml_dtypes' for bfloat16)."""
    from fuzz.runners import tf_runner as m

    tf = m._tf()
    values = [1e-5, 1e-3, 1e-9, 1e-12, 0.1, 1.0 - 0.9, 1.0 / 3.0, 4.0 / 3.0, 1.0, 0.0, 0.3, 100.0, 7e-8]
    for v in values:
        src = m._s_const(v, dtype, "eps").split("  #")[0]
        got = eval(src, {"tf": tf}).numpy()  # noqa: S307 - our own generated literal
        want = m._scalar(v, dtype)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), \
            f"{v!r} {dtype}: {src} is {got!r}, the runner feeds {want!r}"
        assert m._s_round(v, dtype) == float(want)


# --------------------------------------------------------------------------------------------------
# drawn cases: the script's code, executed in this process, computes what the runner computes


def _exec_script_code(code: str, case: Case) -> dict[str, np.ndarray]:
    """Run a script's framework code (`Runner.script`) here, as the assembled script runs it."""
    ns = {"np": np, "inputs": {k: v.copy() for k, v in case.inputs.items()}, "attrs": dict(case.attrs)}
    with np.errstate(all="ignore"):
        exec(compile(code, "<script>", "exec"), ns)  # noqa: S102 - our own generated code
    return ns["outputs"]


#: A Keras RMSNormalization JVP over all axes (every dim static): the case where a script with the
#: runner's ops but other input names (positional x, tx, weight) rounded the last bit differently.
_NAMES_MATTER = strategies.CaseSpec(
    op="rms_norm", mode="jvp", dtype="float32", regime="mixed", shape=(114, 2), attrs={"axis": 0, "eps": 1e-06},
    gamma="negative", beta=None, running=None, tangents=(), steps=1, param_keepdims=False, seed=7732457)


@example(spec=_NAMES_MATTER)
@settings(max_examples=300 if NIGHTLY else 30, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=strategies.case_specs(ops=["batch_norm", "layer_norm", "rms_norm", "group_norm", "instance_norm",
                                       "mvn", "l2_normalize"], max_elements=256))
def test_script_code_matches_the_runner_on_drawn_cases(tf_runners, spec):
    """Drawn cases of every regime (NaN/Inf, constant sets, sizes of one, ...) and attribute form:
    where a runner supports the case, its script's code gives its outputs bitwise, or raises what
    it raises (Unsupported, or the framework's exception)."""
    case = strategies.materialize(spec)
    for r in tf_runners.values():
        if r.supports(case.op, case.mode, case.dtype, case.attrs) is not None:
            continue
        try:
            want = run_inprocess(r, case)
        except Unsupported:
            with pytest.raises(Unsupported):
                r.script(case)
            continue
        except FrameworkRaised as e:
            with pytest.raises(Exception) as info:
                _exec_script_code(r.script(case), case)
            assert f"{type(info.value).__module__}.{type(info.value).__qualname__}" == e.exc_type
            continue
        got = _exec_script_code(r.script(case), case)
        assert sorted(got) == sorted(want), f"{r.id} {case.summary()}"
        for k, v in want.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, f"{r.id} {case.summary()} {k}"
            assert got[k].tobytes() == v.tobytes(), f"{r.id} {case.summary()} {k}: not bitwise the runner's"
