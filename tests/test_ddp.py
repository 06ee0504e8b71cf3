"""`oceanda train` under torchrun -- 2 CPU processes, gloo, DDP, each global batch split -- trains one process's model.

One launch, ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/test_ddp.py DIR`` (this file's
``__main__``), runs in both processes: the gradients of one sharded step, ``oceanda train`` of a window model, and
``oceanda train --resume`` of a field run interrupted after its first epoch (both through :func:`oceanda.cli.main`,
what ``-m oceanda train`` runs). The tests compare what rank 0 wrote with one process trained in this one.
Why the gradients apart: Adam is blind to a constant factor on the gradient, so equal weights alone would not
catch a gather that lost (or doubled) a share of it.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

#: final weights of the two runs: allclose with these (2 epochs of Adam; measured max abs difference ~2e-7)
RTOL, ATOL = 1e-4, 1e-6
COMMON = ["--seed", "3", "--quiet", "--allow-weak"]
WINDOW = ["--kind", "window", "--window-size", "8", "--halo", "4", "--epochs", "2", "--batch-size", "64",
          "--seconds", "1000"] + COMMON
#: an odd batch: the ranks embed 5 and 4 rows (padded gather); a learned temperature (its gradient outside encoders)
FIELD = ["--kind", "field", "--width", "4", "--depth", "1", "--embedding-dim", "8", "--epochs", "3", "--batch-size", "9",
         "--lr", "0.02", "--not-periodic"] + COMMON


def _files(folder: Path, n: int = 40, ny: int = 16, nx: int = 16, seed: int = 0) -> list[str]:
    """A 16 x 16 km box of smooth SSH correlated in time, and gridded observations of 30 % of its cells."""
    rng = np.random.default_rng(seed)
    ky, kx = np.fft.fftfreq(ny)[:, None] * ny, np.fft.fftfreq(nx)[None, :] * nx
    filt = np.exp(-(ky ** 2 + kx ** 2) / 18.0)
    ssh, prev = np.empty((n, ny, nx), np.float32), None
    for i in range(n):
        f = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((ny, nx))) * filt))
        prev = f if prev is None else 0.9 * prev + np.sqrt(0.19) * f
        ssh[i] = prev
    ssh = 0.1 * ssh / ssh.std()
    time_ = np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    coords = {"time": time_, "y": ("y", np.arange(ny) * 10.0 + 5, {"units": "km"}),
              "x": ("x", np.arange(nx) * 10.0 + 5, {"units": "km"})}
    noisy = np.where(rng.random(ssh.shape) < 0.3, ssh + 0.005 * rng.standard_normal(ssh.shape), np.nan)
    xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"})}, coords=coords).to_netcdf(folder / "states.nc")
    xr.Dataset({"ssh": (("time", "y", "x"), noisy.astype(np.float32), {"units": "m"}),
                "ssh_error": ((), np.float32(0.005), {"units": "m"})}, coords=coords).to_netcdf(folder / "obs.nc")
    return ["--states", str(folder / "states.nc"), "--obs", str(folder / "obs.nc")]


def _grad_problem():
    """A tiny model (learned temperature) and a global batch of 7 pairs, the same in every process."""
    import torch

    from oceanda.contrastive.encoders import MLPEncoder
    from oceanda.contrastive.model import ContrastiveModel
    from oceanda.contrastive.similarity import Similarity

    torch.manual_seed(0)
    model = ContrastiveModel(MLPEncoder((1, 4, 4), 6, hidden=[8]), MLPEncoder((2, 4, 4), 6, hidden=[8]),
                             Similarity("cosine", tau=0.5, learn_tau=True))
    g = torch.Generator().manual_seed(1)
    return model, torch.randn(7, 1, 4, 4, generator=g), torch.randn(7, 2, 4, 4, generator=g)


def _sharded_gradients(folder: Path) -> None:
    """One DDP step, each rank embedding its rows of the batch; rank 0 writes the gradients."""
    import torch
    from safetensors.numpy import save_file

    from oceanda.contrastive.losses import clip
    from oceanda.contrastive.training import _ShardedLogits, shard_sizes, torchrun_group, world

    rank = torchrun_group()  # the group `oceanda train` then finds started (one group per process)
    model, xs, xo = _grad_problem()
    sizes = shard_sizes(len(xs), world()[1])
    lo = sum(sizes[:rank])
    ddp = torch.nn.parallel.DistributedDataParallel(_ShardedLogits(model, sizes))
    loss = clip(ddp(xs[lo:lo + sizes[rank]], xo[lo:lo + sizes[rank]]))
    loss.backward()
    if rank == 0:
        grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
        save_file({**grads, "loss": np.array([float(loss.detach())], np.float32)}, str(folder / "grads_ddp.safetensors"))


def _worker(folder: Path) -> None:
    """What each torchrun process runs (see the module docstring); a failure is the process's exit code."""
    from oceanda.cli import main

    _sharded_gradients(folder)
    inputs = ["--states", str(folder / "states.nc"), "--obs", str(folder / "obs.nc")]  # written by the fixture
    for args in (WINDOW + ["--out", str(folder / "window_ddp")], FIELD + ["--out", str(folder / "field_ddp"), "--resume"]):
        rc = main(["train", *inputs, *args])
        if rc != 0:
            raise SystemExit(rc)


def _weights(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One process's runs here, an interrupted field run, then the 2-process launch resuming it (~40 s)."""
    import torch

    from oceanda.cli import main
    from oceanda.contrastive.training import Trainer
    from oceanda.training import resume_dir

    folder = tmp_path_factory.mktemp("ddp")
    inputs = _files(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *inputs, *WINDOW, "--out", str(folder / "window_one")]) == 0
        assert main(["train", *inputs, *FIELD, "--out", str(folder / "field_one")]) == 0
        write = Trainer._write_resume

        def interrupted(self, where, model, opt, run, epoch, stop):  # killed once epoch 1's state is saved
            write(self, where, model, opt, run, epoch, stop)
            raise KeyboardInterrupt

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Trainer, "_write_resume", interrupted)
            assert main(["train", *inputs, *FIELD, "--out", str(folder / "field_ddp")]) == 130
    finally:
        torch.set_num_threads(threads)
    state = resume_dir(folder / "field_ddp")
    assert (state / "model.safetensors").is_file() and not (folder / "field_ddp").exists()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OCEANDA_DDP_TIMEOUT": "120"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           __file__, str(folder)], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, proc, time.perf_counter() - t0, state


def test_sharded_step_has_the_single_process_gradient(launched):
    from safetensors.numpy import load_file

    from oceanda.contrastive.losses import clip

    folder = launched[0]
    ddp = load_file(str(folder / "grads_ddp.safetensors"))
    model, xs, xo = _grad_problem()
    loss = clip(model(xs, xo))
    loss.backward()
    assert ddp["loss"][0] == pytest.approx(float(loss.detach()), rel=1e-6)
    for k, p in model.named_parameters():
        assert np.allclose(ddp[k], p.grad.numpy(), rtol=1e-5, atol=1e-7), k  # not half of it: the sum over ranks
    assert abs(float(ddp["similarity.log_tau"])) > 1e-6  # the temperature's gradient is there to compare


def test_window_model_under_torchrun_equals_one_process(launched):
    folder, proc = launched[:2]
    one, two = _weights(folder / "window_one"), _weights(folder / "window_ddp")
    diff = _max_difference(one, two)
    assert all(np.allclose(one[k], two[k], rtol=RTOL, atol=ATOL) for k in one), diff
    h1 = json.loads((folder / "window_one" / "history.json").read_text())
    h2 = json.loads((folder / "window_ddp" / "history.json").read_text())
    assert len(h1) == len(h2) == 2
    assert [e["train_loss"] for e in h2] == pytest.approx([e["train_loss"] for e in h1], rel=1e-5)
    assert proc.stdout.count("trained a window model") == 1  # rank 0 reports; rank 1 prints nothing


def test_resumed_field_run_under_torchrun_equals_one_uninterrupted_run(launched):
    folder, proc, _, state = launched
    one, two = _weights(folder / "field_one"), _weights(folder / "field_ddp")
    assert all(np.allclose(one[k], two[k], rtol=RTOL, atol=ATOL) for k in one), _max_difference(one, two)
    h1 = json.loads((folder / "field_one" / "history.json").read_text())
    h2 = json.loads((folder / "field_ddp" / "history.json").read_text())
    assert [e["epoch"] for e in h2] == [1, 2, 3]  # epoch 1 from the interrupted run, 2 and 3 from both ranks
    for key in ("train_loss", "val_loss", "tau"):
        assert [e[key] for e in h2] == pytest.approx([e[key] for e in h1], rel=1e-5), key
    cfg = json.loads((folder / "field_ddp" / "config.json").read_text())
    assert cfg["training"]["best_epoch"] == 3  # the weights compared are the 2-process epochs', not epoch 1's
    assert not state.exists()  # removed once the model is in place
    assert proc.stdout.count("trained a field model") == 1
    expected = {"states.nc", "obs.nc", "grads_ddp.safetensors", "window_one", "window_ddp", "field_one", "field_ddp"}
    assert {p.name for p in folder.iterdir()} == expected  # no folder, state or temporary of another rank


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_missing_rank_is_one_line_after_the_timeout(tmp_path, monkeypatch, capsys):
    from oceanda.cli import main

    inputs = _files(tmp_path, n=12, ny=8, nx=8)
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(_free_port()), "OCEANDA_DDP_TIMEOUT": "1"}.items():
        monkeypatch.setenv(k, v)
    t0 = time.perf_counter()
    assert main(["train", *inputs, *FIELD, "--out", str(tmp_path / "m")]) == 2
    assert time.perf_counter() - t0 < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torchrun rank 0" in err[0] and "OCEANDA_DDP_TIMEOUT=1 s" in err[0], err
    assert not (tmp_path / "m").exists()
    import torch.distributed as dist

    assert not dist.is_initialized()
    monkeypatch.setenv("OCEANDA_DDP_TIMEOUT", "soon")
    assert main(["train", *inputs, *FIELD, "--out", str(tmp_path / "m")]) == 2
    assert "OCEANDA_DDP_TIMEOUT='soon'; expected seconds > 0" in capsys.readouterr().err
    monkeypatch.delenv("MASTER_ADDR")
    monkeypatch.setenv("OCEANDA_DDP_TIMEOUT", "1")
    assert main(["train", *inputs, *FIELD, "--out", str(tmp_path / "m")]) == 2
    assert "without MASTER_ADDR; expected a launch by torchrun" in capsys.readouterr().err


def test_without_a_process_group_sharding_changes_nothing():
    import torch

    from oceanda.contrastive.training import embed_in_batches, shard_sizes, world

    assert world() == (0, 1)
    assert shard_sizes(9, 2) == [5, 4] and shard_sizes(64, 2) == [32, 32] and shard_sizes(3, 4) == [1, 1, 1, 0]
    model, xs, xo = _grad_problem()
    a, b = embed_in_batches(model, (xs, xo), 3), embed_in_batches(model, (xs, xo), 3, shard=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


if __name__ == "__main__":  # a torchrun process of the `launched` fixture
    _worker(Path(sys.argv[1]))
