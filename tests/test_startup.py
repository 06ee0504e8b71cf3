"""Start-up: ``oceanda --help`` and every verb's ``--help`` import no heavy module; torch's threads on purpose.

Not a timing (benchmarks/bench_startup.py prints those): what makes ``--help`` slow is importing torch,
xarray & co., and whether they are imported is a fact a test can check, in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from oceanda import cli, threads
from oceanda.errors import ConfigurationError

HEAVY = ("torch", "matplotlib", "cartopy", "xarray", "dask", "scipy", "netCDF4", "pandas")

#: in a fresh interpreter: the parser built, then ``--help`` of oceanda and of every verb; after each, which
#: heavy modules are loaded (the first line naming one tells which verb pulled it in)
PROBE = """
import contextlib, io, json, sys
from oceanda import cli
heavy = {heavy!r}
seen = {{}}
cli.build_parser()
seen["build_parser"] = [m for m in heavy if m in sys.modules]
for argv in [["--help"]] + [[verb, "--help"] for verb in cli.VERBS]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code
    assert code == 0 and "usage:" in out.getvalue(), (argv, code)
    seen[" ".join(argv)] = [m for m in heavy if m in sys.modules]
print(json.dumps(seen))
"""


def test_help_of_every_verb_imports_no_heavy_module():
    r = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(seen) == {"build_parser", "--help", *(f"{v} --help" for v in cli.VERBS)}
    assert {step: mods for step, mods in seen.items() if mods} == {}


def test_the_cli_choices_are_the_apis():
    # commands.CHOICES is spelled out so --help need not import the modules defining them: it must not drift
    from oceanda import api
    from oceanda.commands import CHOICES

    assert {what: list(values) for what, values in CHOICES.items()} == {what: api.choices(what) for what in CHOICES}


def test_verbs_that_run_torch_say_how_to_set_its_threads():
    parser, modules = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb").choices
    torch_verbs = {v for v, m in modules.items() if getattr(m, "RUNS_TORCH", False)}
    assert {"train", "assimilate", "demo", "reproduce"} <= torch_verbs
    for verb, p in sub.items():
        assert (threads.ENV in p.format_help()) == (verb in torch_verbs), verb
    assert "DistributedDataParallel" in sub["train"].format_help()  # its own epilog is kept
    assert threads.ENV in parser.format_help()


@pytest.mark.parametrize("env, expected", [
    ({"OCEANDA_NUM_THREADS": "3"}, 3),
    ({"OCEANDA_NUM_THREADS": "3", "OMP_NUM_THREADS": "5"}, 3),  # ours wins
    ({"OMP_NUM_THREADS": "5"}, 5),  # the user's OpenMP setting is respected
    ({"OMP_NUM_THREADS": "4,2"}, 4),  # OpenMP's nested form: the outer level
    ({"OMP_NUM_THREADS": "many"}, None),  # unusable: ignored, physical cores
    ({}, None),
])
def test_intra_op_thread_rule(monkeypatch, env, expected):
    monkeypatch.delenv("OCEANDA_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert threads.intra_op_threads() == (expected or threads.physical_cores())


def test_physical_cores_is_a_usable_count():
    import os

    n = threads.physical_cores()
    assert 1 <= n <= (os.cpu_count() or 1)


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_thread_count_is_one_line_exit_2(monkeypatch, capsys, bad):
    import types

    ran = []
    fake = types.SimpleNamespace(HELP="fake", RUNS_TORCH=True, add_arguments=lambda p: None, run=lambda a: ran.append(1))
    monkeypatch.setattr(cli, "_load_verbs", lambda: {"fake": fake})
    monkeypatch.setenv("OCEANDA_NUM_THREADS", bad)
    with pytest.raises(ConfigurationError, match="OCEANDA_NUM_THREADS"):
        threads.intra_op_threads()
    assert cli.main(["fake"]) == 2 and ran == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"OCEANDA_NUM_THREADS={bad}" in err and "expected a positive integer" in err


def test_a_torch_verb_runs_on_the_chosen_threads_and_they_come_back(monkeypatch):
    import types

    import torch

    seen = {}

    def run(args):
        seen["threads"], seen["interop"] = torch.get_num_threads(), torch.get_num_interop_threads()
        return 0

    fake = types.SimpleNamespace(HELP="fake", RUNS_TORCH=True, add_arguments=lambda p: None, run=run)
    plain = types.SimpleNamespace(HELP="plain", add_arguments=lambda p: None, run=run)
    monkeypatch.setattr(cli, "_load_verbs", lambda: {"fake": fake, "plain": plain})
    before = torch.get_num_threads()
    chosen = 3 if before != 3 else 1
    monkeypatch.setenv("OCEANDA_NUM_THREADS", str(chosen))
    assert cli.main(["fake"]) == 0
    assert seen["threads"] == chosen and torch.get_num_threads() == before
    # inter-op threads can be set once per process, before torch's parallel work: 1 unless that was too late
    assert seen["interop"] == 1 or seen["interop"] == torch.get_num_interop_threads()
    assert cli.main(["plain"]) == 0 and seen["threads"] == before  # a verb without torch is left alone


def test_one_torch_thread_also_holds_numpys_blas_to_one_thread():
    """The fast local engine's scores are a numpy product: one BLAS thread inside, the count restored after."""
    import torch
    from threadpoolctl import threadpool_info

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]]

    before, torch_before = blas(), torch.get_num_threads()
    with threads.one_torch_thread():
        assert torch.get_num_threads() == 1 and blas() and all(n == 1 for n in blas())
    assert blas() == before and torch.get_num_threads() == torch_before
