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
