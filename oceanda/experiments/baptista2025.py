"""R. Baptista, A. M. Stuart, S. Tran, "A Mathematical Perspective on Contrastive Learning"
(arXiv 2505.24134, 2025): every experiment of its section 6, plus the data-assimilation baseline
the paper lacked.

``run(out, quick=False, seed=0)`` runs, in order,

1. ``gaussian_random_field`` (6.1, :mod:`._grf`): errors of E[u|v] and E[v|u] of trained linear
   encoders against the closed form, swept over embedding dimension, batch size and N;
2. ``digits`` (6.2, :mod:`._digits`): scikit-learn's 8 x 8 digits replace MNIST; three losses,
   zero-shot classification, fine-tuning, generation by weighted resampling;
3. ``lagrangian`` (6.3, :mod:`.torus_da`): torus flow and drifters, retrieval R@1/R@5 both ways, then
   the comparison contrastive posterior / augmented-state EnKF / linearised Gaussian;

and writes ``results.json`` (every number, with the settings used and run times) and PNG figures
into ``out``. ``QUICK`` is sized for the test suite; ``FULL`` for about an hour on 2 CPU cores. Both
state what they reduce with respect to the paper (``reductions`` in ``results.json``).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable

import torch

from oceanda import io

NAME = "baptista2025"
SOURCE = 'R. Baptista, A. M. Stuart, S. Tran, "A Mathematical Perspective on Contrastive Learning", arXiv 2505.24134 (2025)'

QUICK = {
    "grf": {"lr": 1e-2, "base": {"n": 1000, "dim": 5, "batch": 100}, "dims": [1, 5], "batches": [100, 250],
            "ns": [300, 3000], "steps": 400},
    "digits": {"test_fraction": 0.25, "width": 8, "ne": 32, "epochs": 5, "batch": 64, "lr": 5e-3,
               "finetune_steps": 60, "members": 16},
    "torus": {"n_train": 1024, "n_test": 200, "n_val": 200, "n_retrieval": 200, "dt": 1e-3, "T": 0.1, "keep_every": 2,
              "sigma": 1e-3, "vel_scale": 4.0, "harmonics": 2, "d_model": 32, "nhead": 2, "layers": 1, "batch": 128,
              "epochs": 5, "lr": 2e-3, "warmup": 10, "n_da": 6, "n_library": 20000, "members": 50, "enkf_members": [40],
              "grid": 16, "n_grid_times": 3, "band_radius": 0.1},
}

FULL = {
    "grf": {"lr": 1e-2, "base": {"n": 10000, "dim": 5, "batch": 256}, "dims": [1, 2, 3, 4, 5, 6],
            "batches": [128, 256, 512, 1024], "ns": [2000, 10000, 50000],
            "steps": 2500},
    "digits": {"test_fraction": 0.25, "width": 16, "ne": 32, "epochs": 12, "batch": 64, "lr": 3e-3,
               "finetune_steps": 300, "members": 16},
    "torus": {"n_train": 24576, "n_test": 2000, "n_val": 1000, "n_retrieval": 1000, "dt": 5e-4, "T": 0.1,
              "keep_every": 2, "sigma": 1e-3, "vel_scale": 4.0, "harmonics": 3, "d_model": 64, "nhead": 4, "layers": 2,
              "batch": 128, "epochs": 14, "lr": 1e-3, "warmup": 100, "max_train_seconds": 1500, "n_da": 50,
              "n_library": 200000, "members": 100, "enkf_members": [200, 800], "grid": 32, "n_grid_times": 11,
              "band_radius": 0.1},
}

PAPER = {
    "gaussian_random_field": "error of E[u|v], E[v|u] falls with embedding dimension up to 5, with batch size (128..1024) "
                             "and with N (2k..100k); linear encoders, inner product, CLIP loss, Adam lr 1e-4, 500 epochs",
    "digits": "MNIST: cross-entropy classification is the one-sided label|image loss with one-hot label embeddings",
    "lagrangian": "R@5 approaching 100 % in both directions (field-from-trajectory the harder one); 32k training pairs, "
                  "1000 positions per track, 12-block transformer, batch 128, 20 epochs, Adam lr 1e-4",
    "cpu_prototype_quoted_in_issue": {"contrastive_rmse_fraction": 0.923, "contrastive_spread_skill": 1.00,
                                      "contrastive_seconds_per_trajectory": 0.005, "enkf_200_rmse_fraction": 0.944,
                                      "enkf_200_seconds": 0.75, "enkf_800_rmse_fraction": 0.919, "enkf_800_seconds": 8.0,
                                      "linearised_gaussian_rmse_fraction": 0.883, "R@5_field_from_trajectory": 0.56,
                                      "R@5_trajectory_from_field": 0.71, "candidates": 1000},
}


def reductions(cfg: dict) -> dict:
    """What this configuration changes with respect to the paper's settings (said, not hidden).

    Parameters
    ----------
    cfg : dict
        :data:`QUICK` or :data:`FULL`.

    Returns
    -------
    dict
        One sentence per experiment.
    """
    t, g = cfg["torus"], cfg["grf"]
    return {
        "gaussian_random_field": f"AdamW lr {g['lr']} with a cosine schedule, {g['steps']} optimiser steps per run "
                                 "(epochs = steps x batch / N) instead of Adam lr 1e-4 for 500 epochs; "
                                 "u standardised by its known marginal sd",
        "digits": "scikit-learn 8x8 digits (1797 images) instead of MNIST (70k 28x28); small CNN",
        "lagrangian": f"{t['n_train']} training / {t['n_test']} test pairs instead of 32k / 32k; "
                      f"{int(round(t['T'] / t['dt'] / t['keep_every']))} positions per track (RK4 dt {t['dt']}, "
                      f"keeping every {t['keep_every']} steps) instead of 1000 (dt 1e-5, every 10th); transformer with "
                      f"{t['layers']} blocks (d_model {t['d_model']}) instead of 12; lr {t['lr']} (AdamW, cosine) "
                      f"instead of 1e-4; {t['epochs']} epochs (stopped early after {t.get('max_train_seconds')} s of training if reached); "
                      f"positions observed with noise sd {t['sigma']}",
    }


def _jsonable_cfg(cfg: dict) -> dict:
    return {k: dict(v) for k, v in cfg.items()}


def run(out, quick: bool = False, seed: int = 0, overwrite: bool = False, quiet: bool | None = None,
        only: tuple[str, ...] | None = None, log: Callable[[str], None] | None = None, threads: int = 1) -> dict:
    """Run the experiments and write ``out/results.json`` and figures.

    Parameters
    ----------
    out : path
        Output folder.
    quick : bool
        :data:`QUICK` (test-suite size) instead of :data:`FULL`.
    seed : int
        Seed of every experiment.
    overwrite : bool
        Replace an existing ``out`` (one reproduce wrote: it holds results.json) once the new one is complete;
        ``out`` is built in a temporary folder beside it, so a failure or Ctrl-C leaves no ``out``.
    quiet : bool, optional
        No progress bars (default: quiet).
    only : tuple of str, optional
        Some of ``("gaussian_random_field", "digits", "lagrangian")`` (for checks).
    log : callable, optional
        Called with one-line progress messages.
    threads : int
        Torch threads while running (restored after); the models are small, and on a shared
        machine one thread per process wastes least.

    Returns
    -------
    dict
        The content of results.json.
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return _run(out, quick, seed, overwrite, quiet, only, log)
    finally:
        torch.set_num_threads(old_threads)


def _run(out, quick, seed, overwrite, quiet, only, log) -> dict:
    """Build ``out`` in a temporary folder beside it, renamed into place with results.json written last."""
    from oceanda import folders

    with folders.build(out, overwrite, "results.json", "oceanda reproduce") as tmp:  # all of it or nothing
        return _experiments(tmp, quick, seed, quiet, only, log)


def _experiments(out: Path, quick, seed, quiet, only, log) -> dict:
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from oceanda.experiments import _digits, _grf, torus_da

    cfg = QUICK if quick else FULL
    say = log or (lambda s: None)
    parts = only or ("gaussian_random_field", "digits", "lagrangian")
    t0 = time.perf_counter()
    results: dict = {
        "experiment": NAME, "source": SOURCE, "quick": bool(quick), "seed": int(seed),
        "config": _jsonable_cfg(cfg), "reductions": reductions(cfg), "paper": PAPER,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "processor": platform.machine()},
        "figures": [],
    }

    def fig(f, name):
        io.save_figure(f, out / name, overwrite=True)
        plt.close(f)
        results["figures"].append(name)

    if "gaussian_random_field" in parts:
        r = _grf.run_grf(cfg["grf"], seed, say)
        results["gaussian_random_field"] = r
        fig(_grf.plot_grf(r), "grf_sweeps.png")
    if "digits" in parts:
        r, (Xlib, picks) = _digits.run_digits(cfg["digits"], seed, say)
        results["digits"] = r
        fig(_digits.plot_generated(Xlib, picks), "digits_generated.png")
    if "lagrangian" in parts:
        r, fd = torus_da.run_torus(cfg["torus"], seed, say, quiet=quiet if quiet is not None else True)
        results["lagrangian"] = r
        fig(torus_da.plot_training(fd["history"]), "torus_training.png")
        fig(torus_da.plot_da(fd, r["data_assimilation"]), "torus_assimilation.png")
    results["seconds_total"] = time.perf_counter() - t0
    io.write_json(results, Path(out) / "results.json", overwrite=True)
    return results
