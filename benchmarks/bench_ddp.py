"""`oceanda train` in one process vs under torchrun (N CPU processes, gloo, DDP): seconds per epoch and weight difference.

The same small problem (a synthetic km box, a window model, a fixed number of epochs, the same seed and
global batch) is trained three ways, each as its own command: one process with 1 torch thread, one
process with N threads, and ``python -m torch.distributed.run --standalone --nproc_per_node N -m oceanda
train`` (1 thread per process). Seconds per epoch are read from each run's ``history.json`` (the
trainer's wall clock from its first epoch, so imports and data loading are not counted); the
weights rank 0 wrote are compared with the 1-thread run's (they differ only by float rounding).

Usage: python benchmarks/bench_ddp.py [--size 32] [--epochs 3] [--batch-size 128] [--nproc 2] [--kind window]
       [--repeats 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr


def make_files(folder: Path, n: int, size: int, seed: int = 0) -> list[str]:
    """Smooth SSH on a ``size`` x ``size`` km box (AR(1) in time) and gridded observations of 30 % of it."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(size) * size
    filt = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / 18.0)
    ssh, prev = np.empty((n, size, size), np.float32), None
    for i in range(n):
        f = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * filt))
        prev = f if prev is None else 0.9 * prev + np.sqrt(0.19) * f
        ssh[i] = prev
    ssh = 0.1 * ssh / ssh.std()
    coords = {"time": np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D"),
              "y": ("y", np.arange(size) * 10.0 + 5, {"units": "km"}), "x": ("x", np.arange(size) * 10.0 + 5, {"units": "km"})}
    noisy = np.where(rng.random(ssh.shape) < 0.3, ssh + 0.005 * rng.standard_normal(ssh.shape), np.nan).astype(np.float32)
    xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"})}, coords=coords).to_netcdf(folder / "states.nc")
    xr.Dataset({"ssh": (("time", "y", "x"), noisy, {"units": "m"}), "ssh_error": ((), np.float32(0.005), {"units": "m"})},
               coords=coords).to_netcdf(folder / "obs.nc")
    return ["--states", str(folder / "states.nc"), "--obs", str(folder / "obs.nc")]


def train_args(a: argparse.Namespace, inputs: list[str]) -> list[str]:
    common = ["--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--seed", "0", "--quiet", "--allow-weak"]
    if a.kind == "window":
        return ["train", *inputs, "--kind", "window", "--window-size", "8", "--halo", "4", "--seconds", "100000", *common]
    return ["train", *inputs, "--kind", "field", "--width", "8", "--depth", "2", "--embedding-dim", "16", *common]


def run(cmd: list[str], threads: int, out: Path) -> dict:
    """One training command: wall and CPU seconds, and the epochs' seconds from its history."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OCEANDA_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"bench_ddp: {' '.join(cmd[:6])} ... failed ({proc.returncode}): {proc.stderr[-2000:]}")
    history = json.loads((out / "history.json").read_text())
    return {"wall_s": wall, "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "epochs": len(history), "s_per_epoch": history[-1]["seconds"] / len(history),
            "final_train_loss": history[-1]["train_loss"]}


def max_difference(a: Path, b: Path) -> tuple[float, float]:
    """Max abs difference of two models' weights, and the max of (abs difference / the tensor's max abs)."""
    from safetensors.numpy import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    diffs = [(float(np.abs(wa[k] - wb[k]).max()), float(np.abs(wa[k]).max())) for k in wa]
    return max(d for d, _ in diffs), max(d / m for d, m in diffs if m > 0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=32, help="grid cells per side (default 32)")
    p.add_argument("--times", type=int, default=60, help="state times (default 60)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--nproc", type=int, default=2, help="torchrun processes (default 2)")
    p.add_argument("--kind", choices=["window", "field"], default="window")
    p.add_argument("--repeats", type=int, default=1, help="runs of each way; medians reported")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    a = p.parse_args(argv)
    py = [sys.executable, "-m"]
    with tempfile.TemporaryDirectory(prefix="bench_ddp.") as tmp:
        tmp = Path(tmp)
        args = train_args(a, make_files(tmp, a.times, a.size))
        ways = {"one_process_1_thread": (py + ["oceanda", *args], 1),
                f"one_process_{a.nproc}_threads": (py + ["oceanda", *args], a.nproc),
                f"torchrun_{a.nproc}_processes": (py + ["torch.distributed.run", "--standalone", "--nproc_per_node",
                                                        str(a.nproc), "-m", "oceanda", *args], 1)}
        runs: dict[str, list[dict]] = {w: [] for w in ways}
        for r in range(a.repeats):
            for w, (cmd, threads) in ways.items():
                runs[w].append(run(cmd, threads, tmp / f"{w}.{r}"))
        abs_diff, rel_diff = max_difference(tmp / "one_process_1_thread.0", tmp / f"torchrun_{a.nproc}_processes.0")
    med = {w: {k: float(np.median([x[k] for x in rs])) for k in rs[0]} for w, rs in runs.items()}
    single, ddp = med["one_process_1_thread"]["s_per_epoch"], med[f"torchrun_{a.nproc}_processes"]["s_per_epoch"]
    result = {"problem": {"kind": a.kind, "grid": a.size, "times": a.times, "epochs": a.epochs, "batch_size": a.batch_size,
                          "nproc": a.nproc, "repeats": a.repeats},
              "runs": med, "ddp_over_single_s_per_epoch": ddp / single,
              "max_abs_weight_difference": abs_diff, "max_rel_weight_difference": rel_diff}
    print(f"{a.kind} model, {a.size}x{a.size} grid, {a.epochs} epochs, batch {a.batch_size} (medians of {a.repeats})")
    print(f"{'run':28s} {'s/epoch':>8s} {'wall s':>8s} {'CPU s':>8s}")
    for w, m in med.items():
        print(f"{w:28s} {m['s_per_epoch']:8.2f} {m['wall_s']:8.1f} {m['cpu_s']:8.1f}")
    print(f"torchrun / one process (1 thread), s/epoch: {ddp / single:.2f}")
    print(f"max weight difference torchrun vs one process: {abs_diff:.3g} abs, {rel_diff:.3g} relative")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
