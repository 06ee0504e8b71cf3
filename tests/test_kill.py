"""SIGKILL at a random moment of every writing verb (issue 17): no partial output, a clean rerun.

Each verb runs as ``python -m oceanda ...`` on the small inputs of :func:`fuzzkit.base_inputs` and is
killed twice (seeded): once just after its first temporary file appears beside or inside the output
(the writer is at work), once at a random moment of its run while it replaces the output of the
first rerun (``--overwrite``). After each kill the final output path holds nothing, or a file that
reads back whole (a kill after the rename leaves a complete file; a model folder must hold a loadable
``config.json`` and ``model.safetensors``). The same command then reruns to completion in-process:
exit 0, a complete output and no temporary file left beside it, inside it or in the embedding cache.
benchmarks/bench_kill.py runs the 10-kills-per-verb version and checks reruns are identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fuzzkit as fk

pytestmark = pytest.mark.slow

#: Seconds each verb takes to start writing as a subprocess on the small inputs (2 cores, unloaded): scales the
#: random kill moment until a run has measured it on this machine.
EXPECTED_S = {"observe": 2.8, "enkf": 2.2, "assimilate": 3.7, "evaluate": 3.5, "train": 5.2, "sample-data": 3.0}


def command(verb: str, p: dict[str, Path], d: Path) -> tuple[list, Path, list[Path]]:
    """``(argv, final output, folders the verb may also write temporary files into)`` of one writing verb."""
    if verb == "observe":
        out = d / "obs.nc"
        argv = ["observe", "--states", p["truth"], "--operator", "altimetry", "--seed", "3", "--out", out]
    elif verb == "enkf":
        out = d / "enoi.nc"
        argv = ["enkf", "--method", "enoi", "--ensemble", p["library"], "--obs", p["obs"], "--loc-radius", "100",
                "--out", out]
    elif verb == "assimilate":
        out = d / "analysis.nc"
        argv = ["assimilate", "--model", fk.MODEL, "--mode", "local", "--library", p["library"], "--obs", p["obs"],
                "--cache-dir", d / "cache", "--out", out]
    elif verb == "evaluate":
        out = d / "report"
        argv = ["evaluate", "--truth", p["truth"], "--analysis", f"enoi={p['analysis']}", "--out", out]
    elif verb == "train":
        out = d / "model"
        argv = ["train", "--kind", "field", "--epochs", "1", "--allow-weak", "--seed", "0", "--states", p["library"],
                "--obs", p["obs"], "--out", out]
    elif verb == "sample-data":
        out = d / "sample"
        argv = ["sample-data", "--testbed", "qg", "--size", "tiny", "--seed", "1", "--out", out]
    else:
        raise ValueError(verb)
    return [*argv, "--overwrite", "--quiet"], out, [d / "cache"] if verb == "assimilate" else []


VERBS = list(EXPECTED_S)


def make_inputs(folder: Path) -> dict[str, Path]:
    """The small inputs plus an EnOI analysis of them (what evaluate scores)."""
    p = fk.base_inputs(folder)
    p["analysis"] = folder / "enoi_input.nc"
    oc = fk.run_cli(["enkf", "--method", "enoi", "--ensemble", p["library"], "--obs", p["obs"], "--loc-radius", "100",
                     "--out", p["analysis"], "--quiet"])
    assert oc.rc == 0, oc.stderr
    return p


def leftovers(out: Path, extra: list[Path]) -> list[str]:
    """Temporary files beside or inside the output, and anywhere in the verb's other folders (the cache)."""
    found = fk.temp_leftovers(out)
    for folder in extra:
        if folder.is_dir():
            found += [str(q) for q in folder.rglob("*") if q.name.startswith(".") or q.name.endswith(".tmp")]
    return found


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    return make_inputs(tmp_path_factory.mktemp("kill_inputs"))


@pytest.mark.parametrize("verb", VERBS)
def test_sigkill_leaves_no_partial_output_and_the_rerun_cleans_up(verb: str, inputs: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    rng = np.random.default_rng(VERBS.index(verb) + 17)
    argv, out, extra = command(verb, inputs, tmp_path)
    expected = EXPECTED_S[verb]
    for k, at_write in enumerate((True, False)):  # 2nd kill: while replacing the first rerun's output
        info = fk.kill_during(argv, out, rng, at_write, expected)
        expected = info["saw_tmp"] or expected  # the random moment scales with this machine's pace
        assert fk.partial_outputs(out, model=verb == "train") == [], f"kill {k}: {info}"
        oc = fk.run_cli(argv, inputs=[inputs["library"], inputs["obs"], inputs["truth"]], timeout=120)
        assert oc.problems("ok") == [], f"rerun after kill {k} ({info})"
        assert out.exists() and fk.partial_outputs(out, model=verb == "train") == []
        assert leftovers(out, extra) == [], f"temporary files after the rerun of kill {k} ({info})"
