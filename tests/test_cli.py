"""The `oceanda` console script: help, version, one-line errors."""

import subprocess
import sys

import pytest

from oceanda import __version__, cli
from oceanda.errors import OceandaError


def run(*args):
    return subprocess.run([sys.executable, "-m", "oceanda", *args], capture_output=True, text=True, timeout=120)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"oceanda {__version__}"
    r = run("--help")
    assert r.returncode == 0
    for verb in cli._load_verbs():
        assert verb in r.stdout


def test_every_registered_verb_module_has_help():
    modules = cli._load_verbs()
    for verb, mod in modules.items():
        assert getattr(mod, "HELP", "").strip(), verb
        assert callable(mod.run) and callable(mod.add_arguments)


def test_oceanda_error_is_one_line_exit_2(monkeypatch, capsys):
    import types

    def add_arguments(p):
        p.add_argument("--path")

    def run_verb(args):
        raise OceandaError(f"{args.path}: variable 'ssh' missing;\nexpected it")

    fake = types.SimpleNamespace(HELP="fake", add_arguments=add_arguments, run=run_verb)
    monkeypatch.setattr(cli, "_load_verbs", lambda: {"fake": fake})
    assert cli.main(["fake", "--path", "x.nc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "x.nc: variable 'ssh' missing; expected it" in err and "Traceback" not in err

    def bug(args):
        raise ZeroDivisionError("bug")

    fake.run = bug
    with pytest.raises(ZeroDivisionError):
        cli.main(["fake"])


def test_warnings_print_on_one_line_during_a_verb_and_python_format_comes_back(monkeypatch, capsys):
    import warnings

    from oceanda import cli

    before = warnings.formatwarning
    seen = {}

    class Verb:
        @staticmethod
        def run(args):
            seen["text"] = warnings.formatwarning("a weak model:\n  validation R@5 0.06", UserWarning, "x.py", 3)
            return 0

    parser, modules = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: (parser, {**modules, "demo": Verb}))
    assert cli.main(["demo", "--out", "unused"]) == 0
    assert seen["text"] == "oceanda: warning: a weak model: validation R@5 0.06\n"
    assert warnings.formatwarning is before
