"""Every verb that writes a folder builds it whole: train, sample-data, demo, reproduce.

A failure midway (an exception or Ctrl-C) leaves nothing at the final path and no temporary folder beside
it; an existing folder is refused without --overwrite and, with it, stays as it was until the new one
is complete; a killed train leaves no MODEL_DIR, only its resumable state in .MODEL_DIR.resume, from which
--resume finishes with the weights of an uninterrupted run.
"""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_state_dataset
from oceanda import api, io
from oceanda.cli import main
from oceanda.contrastive.training import Trainer
from oceanda.errors import OutputExistsError
from oceanda.observe import AlongTrackAltimetry
from oceanda.training import resume_dir


class Boom(Exception):
    """A failure midway (disk gone, a bug): not an OceandaError, so it reaches the test."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (what "untouched" compares)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def beside(path: Path) -> list[str]:
    """Names in ``path``'s parent other than ``path`` and the test's own inputs: what a run left beside it."""
    return sorted(n for n in os.listdir(path.parent) if n != path.name and not n.endswith(".nc"))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# --- train -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    ds = make_state_dataset(nt=48, ny=16, nx=16, layers=False, seed=3)
    io.write_netcdf(ds, d / "states.nc")
    io.write_netcdf(AlongTrackAltimetry().observe(ds, np.random.default_rng(0)), d / "obs.nc")
    return d


def train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--states", str(data / "states.nc"), "--obs", str(data / "obs.nc"), "--out", str(out),
            "--kind", "field", "--encoder", "mlp", "--epochs", "3", "--batch-size", "8", "--embedding-dim", "8",
            "--seed", "4", "--quiet", "--allow-weak", *extra]


@pytest.fixture
def work(data, tmp_path):
    """A fresh folder holding links to the training files (the model folder goes beside them)."""
    for n in ("states.nc", "obs.nc"):
        (tmp_path / n).symlink_to(data / n)
    return tmp_path


def test_train_success_gives_the_complete_folder_and_nothing_beside(work):
    out = work / "model"
    stale = work / f".model.{dead_pid()}.abcdefgh.tmp"  # a killed run's temporary folder
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    assert main(train_argv(work, out)) == 0
    assert sorted(os.listdir(out)) == ["config.json", "history.json", "model.safetensors"]
    assert beside(out) == []  # the stale folder went, the resume state was removed
    assert len(json.loads((out / "history.json").read_text())) == 3


def test_train_failure_midway_leaves_nothing(work, monkeypatch):
    finish = Trainer._finish

    def finish_then_fail(self, model, run, ckpt):
        finish(self, model, run, ckpt)  # the model is written (in the temporary folder) ...
        assert (Path(ckpt) / "model.safetensors").exists() and ckpt.name.endswith(".tmp")
        raise Boom("disk gone")  # ... and then something fails

    monkeypatch.setattr(Trainer, "_finish", finish_then_fail)
    out = work / "model"
    with pytest.raises(Boom):
        main(train_argv(work, out))
    assert not out.exists() and beside(out) == []  # no temporary folder, no resume state of a failed run


def test_existing_model_refused_without_overwrite_and_kept_when_overwrite_fails(work, monkeypatch, capsys):
    out = work / "model"
    assert main(train_argv(work, out)) == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    assert main(train_argv(work, out)) == 2
    assert "--overwrite" in capsys.readouterr().err and snapshot(out) == before

    def fail(self, *args):
        raise Boom("killed at the end")

    monkeypatch.setattr(Trainer, "_finish", fail)
    with pytest.raises(Boom):
        main(train_argv(work, out, "--overwrite", "--embedding-dim", "6"))
    assert snapshot(out) == before and beside(out) == []
    monkeypatch.undo()
    assert main(train_argv(work, out, "--overwrite", "--embedding-dim", "6")) == 0  # replaced as a whole
    assert sorted(os.listdir(out)) == ["config.json", "history.json", "model.safetensors"]
    assert json.loads((out / "config.json").read_text())["state_encoder"]["out_dim"] == 6


def test_overwrite_never_replaces_a_folder_train_did_not_write(work, capsys):
    out = work / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    assert main(train_argv(work, out, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and str(out) in err and len(err.strip().splitlines()) == 1
    assert (out / "thesis.tex").read_text() == "years of work" and beside(out) == []


def test_killed_train_leaves_no_model_dir_and_resume_finishes_it(work, monkeypatch, capsys):
    full = work / "full"
    assert main(train_argv(work, full)) == 0  # the uninterrupted run
    write = Trainer._write_resume

    def write_then_ctrl_c(self, rdir, model, opt, run, epoch, stop):
        write(self, rdir, model, opt, run, epoch, stop)
        if epoch == 0:  # the first epoch's resumable state is saved: Ctrl-C now
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_write_resume", write_then_ctrl_c)
    out = work / "model"
    assert main(train_argv(work, out)) == 130
    state = resume_dir(out)
    assert state == work / ".model.resume"
    assert not out.exists()  # never a folder holding only resume/
    assert beside(out) == [".model.resume", "full"]  # no temporary folder: only the state
    assert json.loads((state / "config.json").read_text())["epoch"] == 1
    monkeypatch.undo()
    assert main(train_argv(work, out, "--resume")) == 0
    assert not state.exists() and beside(out) == ["full"]
    a, b = load_file(str(full / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "history.json").read_text()) != [] and len(json.loads((out / "history.json").read_text())) == 3
    before = snapshot(out)
    capsys.readouterr()
    assert main(train_argv(work, out, "--resume")) == 0  # a finished run resumes to itself, untouched
    assert "nothing to resume" in capsys.readouterr().err and snapshot(out) == before


def test_resume_without_state_names_where_it_looked(work, capsys):
    out = work / "model"
    assert main(train_argv(work, out, "--resume")) == 2
    err = capsys.readouterr().err
    assert str(work / ".model.resume") in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and beside(out) == []


def test_resume_dir_of_odd_names(tmp_path):
    assert resume_dir(tmp_path / "m") == tmp_path / ".m.resume"
    assert resume_dir(str(tmp_path / "m") + "/") == tmp_path / ".m.resume"
    long = resume_dir(tmp_path / ("x" * 250))
    assert len(long.name) <= 255 and long.parent == tmp_path and long.name.endswith(".resume")


# --- sample-data -------------------------------------------------------------------------------------

def sample_argv(out: Path, *extra: str) -> list[str]:
    return ["sample-data", "--testbed", "lorenz96", "--out", str(out), "--size", "tiny", "--quiet", *extra]


def test_sample_data_failure_midway_and_ctrl_c_leave_nothing(tmp_path, monkeypatch):
    from oceanda import sampledata

    out = tmp_path / "s"
    for exc, rc in ((Boom("disk gone"), None), (KeyboardInterrupt(), 130)):
        def fail(self, text, exc=exc):
            assert (self.out / "library.nc").exists()  # every NetCDF is written, in the temporary folder
            raise exc

        monkeypatch.setattr(sampledata._Writer, "readme", fail)
        if rc is None:
            with pytest.raises(Boom):
                main(sample_argv(out))
        else:
            assert main(sample_argv(out)) == rc
        assert not out.exists() and os.listdir(tmp_path) == []


def test_sample_data_success_overwrite_and_refusals(tmp_path, monkeypatch, capsys):
    from oceanda import sampledata

    out = tmp_path / "s"
    written = api.sample_data("lorenz96", out, size="tiny", quiet=True)
    assert set(written) >= {"library.nc", "train_obs.nc", "README.txt"} and os.listdir(tmp_path) == ["s"]
    assert all(p.parent == out and p.is_file() for p in written.values())  # the final paths, not the temporary ones
    assert "--out " + str(out) in (out / "README.txt").read_text()
    (out / "extra.txt").write_text("old")
    before = snapshot(out)
    assert main(sample_argv(out)) == 2 and snapshot(out) == before  # refused without --overwrite

    def fail(self, text):
        raise Boom("disk gone")

    monkeypatch.setattr(sampledata._Writer, "readme", fail)
    with pytest.raises(Boom):
        main(sample_argv(out, "--overwrite"))
    assert snapshot(out) == before and os.listdir(tmp_path) == ["s"]  # the old folder as it was
    monkeypatch.undo()
    assert main(sample_argv(out, "--overwrite")) == 0
    assert not (out / "extra.txt").exists() and (out / "README.txt").exists()  # replaced as a whole
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("keep")
    capsys.readouterr()
    assert main(sample_argv(other, "--overwrite")) == 2  # not a folder sample-data wrote
    assert "README.txt" in capsys.readouterr().err and (other / "keep.txt").read_text() == "keep"


def test_the_current_folder_is_never_replaced(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(sample_argv(Path("."))) == 2
    assert "current folder" in capsys.readouterr().err and os.listdir(tmp_path) == []


# --- demo and reproduce: the folder wrappers around their (here faked) heavy stages ---------------------

def _fake_stages(fail_with=None):
    def stages(res, data, train, overwrite, quiet, seed, truth, members, modes, days, map_worker=False):
        path = res.out_dir / "analyses" / "enoi.nc"
        io.write_text("analysis", io.make_dir(path.parent) / path.name)
        res.files["enoi"] = path
        io.write_json({"methods": {}}, io.make_dir(res.out_dir / "report") / "metrics.json")
        if fail_with is not None:
            raise fail_with
    return stages


def test_demo_folder_appears_only_complete(tmp_path, monkeypatch):
    demo = importlib.import_module("oceanda.demo")  # the package's ``demo`` is api.demo

    out = tmp_path / "demo"
    monkeypatch.setattr(demo, "_run_stages", _fake_stages())
    res = api.demo(out, quiet=True)
    assert res.out_dir == out and res.files["enoi"] == out / "analyses" / "enoi.nc" and res.files["enoi"].is_file()
    meta = json.loads((out / "demo.json").read_text())
    assert meta["files"] == {"enoi": str(out / "analyses" / "enoi.nc")}  # the final path, never the temporary one
    assert os.listdir(tmp_path) == ["demo"]
    before = snapshot(out)
    for exc in (Boom("evaluation failed"), KeyboardInterrupt()):
        monkeypatch.setattr(demo, "_run_stages", _fake_stages(exc))
        with pytest.raises(type(exc)):
            api.demo(out, quiet=True, overwrite=True)
        assert snapshot(out) == before and os.listdir(tmp_path) == ["demo"]
        with pytest.raises(type(exc)):
            api.demo(tmp_path / "new", quiet=True)
        assert os.listdir(tmp_path) == ["demo"]
    monkeypatch.setattr(demo, "_run_stages", _fake_stages())
    with pytest.raises(OutputExistsError):
        api.demo(out, quiet=True)
    assert snapshot(out) == before


def test_reproduce_failure_midway_leaves_nothing_and_keeps_the_old_results(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from oceanda.experiments import _digits, _grf

    def tiny_figure(*args):
        return plt.figure(figsize=(1, 1))

    monkeypatch.setattr(_grf, "run_grf", lambda cfg, seed, say: {"errors": [1.0]})
    monkeypatch.setattr(_grf, "plot_grf", tiny_figure)
    monkeypatch.setattr(_digits, "run_digits", lambda cfg, seed, say: ({"accuracy": 0.5}, (None, None)))
    monkeypatch.setattr(_digits, "plot_generated", tiny_figure)
    out, only = tmp_path / "run", ("gaussian_random_field", "digits")
    r = api.reproduce("baptista2025", out, quick=True, only=only)
    assert sorted(os.listdir(out)) == ["digits_generated.png", "grf_sweeps.png", "results.json"]
    assert json.loads((out / "results.json").read_text())["figures"] == r["figures"]
    before = snapshot(out)

    def fail(cfg, seed, say):
        raise Boom("digits failed after the first figure")

    monkeypatch.setattr(_digits, "run_digits", fail)
    with pytest.raises(Boom):
        api.reproduce("baptista2025", out, quick=True, only=only, overwrite=True)
    assert snapshot(out) == before and os.listdir(tmp_path) == ["run"]
    with pytest.raises(Boom):
        api.reproduce("baptista2025", tmp_path / "new", quick=True, only=only)
    assert os.listdir(tmp_path) == ["run"]  # no half-filled folder, no temporary one
