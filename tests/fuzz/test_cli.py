"""Tests for fuzz.cli: version, the bugzoo listing (against a fake bugzoo module), exit codes."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import types

import pytest

import fuzz
from fuzz import cli

REPO = pathlib.Path(__file__).resolve().parents[2]


def variant(name, op="layer_norm", mode="forward", trigger="large mean", references=("doi:10.0/x",)):
    return types.SimpleNamespace(
        name=name, op=op, mode=mode, wrong=f"{name} is wrong", trigger=trigger, references=references, fn=len
    )


@pytest.fixture
def fake_bugzoo(monkeypatch):
    module = types.ModuleType("bugzoo")
    module.VARIANTS = [
        variant("ln_naive_var", trigger="|mean| >> std"),
        variant("bn_biased_running_var", op="batch_norm", mode="train", trigger="any batch", references=()),
    ]
    monkeypatch.setitem(sys.modules, "bugzoo", module)
    return module


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, err = run(capsys, "--version")
    assert (code, out, err) == (0, f"normfuzz {fuzz.__version__}\n", "")
    assert fuzz.__version__ == "0.1.0"


def test_bugzoo_table(capsys, fake_bugzoo):
    code, out, err = run(capsys, "bugzoo")
    assert code == 0 and err == ""
    assert out.splitlines() == [
        "name                   op          mode     trigger",
        "ln_naive_var           layer_norm  forward  |mean| >> std",
        "bn_biased_running_var  batch_norm  train    any batch",
        "2 variants",
    ]


def test_bugzoo_verbose(capsys, fake_bugzoo):
    code, out, _ = run(capsys, "bugzoo", "--verbose")
    assert code == 0
    assert out.split("\n\n")[0].splitlines() == [
        "ln_naive_var",
        "  op:         layer_norm",
        "  mode:       forward",
        "  wrong:      ln_naive_var is wrong",
        "  trigger:    |mean| >> std",
        "  references:",
        "    - doi:10.0/x",
    ]
    assert "  references: (none)" in out


def test_bugzoo_json(capsys, fake_bugzoo):
    code, out, _ = run(capsys, "bugzoo", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [v["name"] for v in listed] == ["ln_naive_var", "bn_biased_running_var"]
    assert listed[0] == {
        "name": "ln_naive_var",
        "op": "layer_norm",
        "mode": "forward",
        "wrong": "ln_naive_var is wrong",
        "trigger": "|mean| >> std",
        "references": ["doi:10.0/x"],
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope"], "invalid choice: 'nope'"),
        ([], "the following arguments are required: COMMAND"),
        (["bugzoo", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["bugzoo", "--json", "--verbose"], "not allowed with argument"),
    ],
)
def test_usage_errors_exit_2_without_traceback(capsys, fake_bugzoo, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("usage: normfuzz") and message in err and "Traceback" not in err


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "bugzoo" in out


def test_internal_error_exits_3_with_traceback(capsys, monkeypatch):
    module = types.ModuleType("bugzoo")
    module.VARIANTS = [types.SimpleNamespace(name="incomplete")]
    monkeypatch.setitem(sys.modules, "bugzoo", module)
    code, out, err = run(capsys, "bugzoo")
    assert code == 3
    assert err.startswith("normfuzz: internal error: AttributeError: ")
    assert "Traceback (most recent call last)" in err


def test_command_error_exits_1(capsys, monkeypatch):
    def fail(args):
        raise cli.CommandError("no such run 'r1'")

    command = cli.Command("fail", "always fails", lambda parser: None, fail)
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + (command,))
    assert run(capsys, "fail") == (1, "", "normfuzz: error: no such run 'r1'\n")


def test_python_dash_m_fuzz():
    done = subprocess.run(
        [sys.executable, "-m", "fuzz", "--version"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout) == (0, f"normfuzz {fuzz.__version__}\n")
    done = subprocess.run([sys.executable, "-m", "fuzz", "nope"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_the_campaign_parser_defaults_are_the_campaign_defaults():
    """The parser keeps its own copies of the family defaults (it must not import numpy)."""
    from fuzz.campaign import DEFAULT_PACK, DEFAULT_PACK_ELEMENTS, CampaignConfig

    args = cli.build_parser().parse_args(["campaign", "--out", "x"])
    assert (args.pack, args.pack_elements) == (DEFAULT_PACK, DEFAULT_PACK_ELEMENTS)
    assert (CampaignConfig(out="x").pack, CampaignConfig(out="x").pack_elements) == (DEFAULT_PACK, DEFAULT_PACK_ELEMENTS)


def test_a_campaign_says_which_runners_did_not_run_and_why(tmp_path, capsys):
    """A runner whose worker cannot start compares nothing: the summary printed at the end names it
    with the last line of its reason (the framework's error), not only summary.json."""
    code, out, _ = run(capsys, "campaign", "--out", str(tmp_path / "run"), "--cases", "8", "--ops", "layer_norm",
                       "--modes", "forward", "--dtypes", "float32", "--runner", "tests.fuzz.startup_runners:runners",
                       "--runners", "startup.ln,startup.broken", "--no-report", "--quiet", "--jobs", "1")
    assert code == cli.EXIT_OK, out
    lines = [ln for ln in out.splitlines() if ln.startswith("unavailable:")]
    assert len(lines) == 1 and lines[0].startswith("unavailable: startup.broken did not run (")
    assert "no device" in lines[0]


def test_selftest_pack_option_reaches_the_campaigns_and_the_json(capsys, tmp_path):
    f = tmp_path / "scores.json"
    code, out, err = run(capsys, "selftest", "--variants", "eps_outside_sqrt", "--ops", "layer_norm", "--pack", "64",
                         "--json", str(f))
    assert code == 0, err
    assert "1 of 1 variants detected" in out and "(--pack 64)" in out
    (s,) = json.loads(f.read_text())
    assert (s["variant"], s["op"], s["detected"], s["pack"]) == ("eps_outside_sqrt", "layer_norm", True, 64)
    assert s["cases"] % 64 == 0
