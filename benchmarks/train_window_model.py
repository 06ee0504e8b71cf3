"""Train the local (window) encoder pair on the QG library and save it (the model the demo ships).

    .venv/bin/python benchmarks/train_window_model.py --work /tmp/qgwork --out sample_data/models/qg_window \\
        --seconds 150

Pairs: 16 x 16 SSH windows and 32 x 32 windows of 1-5 days of along-track altimetry (4 tracks a
day, noise 10 % of the library SSH standard deviation) around them, redrawn every epoch; validation
on library runs held out of training. ``--variant`` picks the similarity/loss (default: negative
squared distance with the one-sided state|obs loss). The same code runs from Python
(``oceanda.analysis.window_training.train_window_model``), e.g. for ``oceanda demo --train``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "negsq_state|obs": {"similarity": "neg_sq_distance", "loss": "state|obs"},
    "inner_state|obs": {"similarity": "inner_product", "loss": "state|obs"},
    "cosine_clip": {"similarity": "cosine", "loss": "clip", "tau": 0.1},
}


def altimetry_mask_fn(ny: int, nx: int, dy: float, dx: float):
    """One day of along-track altimetry with a fresh orbit phase per sample."""
    from oceanda.observe import AlongTrackAltimetry

    alt = AlongTrackAltimetry()
    return lambda n, rng: alt.sample_mask(n, rng, ny=ny, nx=nx, dy=dy, dx=dx)


def train_qg_window_model(library_path, out: Path | None, seconds: float = 150.0, variant: str = "negsq_state|obs",
                          seed: int = 0, quiet: bool = False, overwrite: bool = True, **overrides):
    """Train on a QG library file (states with ``ssh``; a ``run`` variable marks the runs if present)."""
    import xarray as xr

    from oceanda.analysis.library import Library
    from oceanda.analysis.window_training import WindowTrainingConfig, train_window_model

    lib = Library.open(library_path)
    lib.load(3e9)
    seg = np.asarray(lib.ds["run"].values) if "run" in lib.ds else None
    ny, nx = lib.shape
    dy = float(lib.ds.y[1] - lib.ds.y[0])
    dx = float(lib.ds.x[1] - lib.ds.x[0])
    ch = lib.layout.channels.index(("ssh", None))
    sigma = 0.1 * float(np.std(lib.read(np.arange(0, lib.n, 7))[:, ch]))
    cfg = WindowTrainingConfig(seconds=seconds, seed=seed, **{**VARIANTS[variant], **overrides})
    model, info = train_window_model(lib, altimetry_mask_fn(ny, nx, dy, dx), [sigma], out, segments=seg, config=cfg,
                                     quiet=quiet, overwrite=overwrite,
                                     extra={"variant": variant, "trained_on": str(library_path)})
    return model, info


if __name__ == "__main__":
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/qgwork"))
    p.add_argument("--out", type=Path, default=Path("/tmp/qgwork/model"))
    p.add_argument("--seconds", type=float, default=150.0)
    p.add_argument("--variant", choices=sorted(VARIANTS), default="negsq_state|obs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--obs-encoder", choices=["masked_cnn", "mlp"], default="masked_cnn")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    enc = {"type": "masked_cnn", "width": 16, "depth": 2} if a.obs_encoder == "masked_cnn" else \
        {"type": "mlp", "hidden": [512, 256]}
    model, info = train_qg_window_model(a.work / "library.nc", a.out, a.seconds, a.variant, a.seed, obs_encoder=enc)
    h = info["history"]
    print(json.dumps({"variant": a.variant, "epochs": len(h), "best_epoch": info["best_epoch"],
                      "last": h[-1] if h else None, "seconds": time.time() - t0}, indent=1, default=float))
