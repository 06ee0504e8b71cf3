"""Train window critics sharp at forecast-error scale (issue 15, research part).

Negatives: the positive state window plus forecast-error-like perturbations (cycled LETKF forecast and
analysis members minus the truth of the TUNING run, days >= 5; never an evaluation run) beside the
batch's climatological windows (:class:`oceanda.analysis.window_training.NeighbourNegatives`), with a
similarity that can express a large log-ratio. Models go to ``--out`` (not sample_data).

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_critic.py --variant negsq_nb --out /tmp/critics/negsq_nb
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from oceanda.analysis.window_training import VARIANTS  # noqa: E402

#: variants: WindowTrainingConfig overrides, neighbours per positive k, perturbation scale range
CRITICS = {
    "negsq_nb": {"config": {"similarity": "neg_sq_distance", "loss": "clip", "tau": 1.0}, "k": 7, "scale": (0.5, 2.0)},
    "cos_learned_nb": {"config": {"similarity": "cosine", "loss": "clip", "tau": 0.05, "learn_tau": True}, "k": 7,
                       "scale": (0.5, 2.0)},
    "negsq_so_nb": {"config": {"similarity": "neg_sq_distance", "loss": "state|obs", "tau": 1.0}, "k": 15,
                    "scale": (0.3, 2.0)},
    # the bundled critic fine-tuned with neighbours and a learned temperature (starts at its 0.1)
    "bundled_ft_nb": {"config": {"similarity": "cosine", "loss": "clip", "tau": 0.1, "learn_tau": True}, "k": 7,
                      "scale": (0.5, 2.0), "init_from": "sample_data/models/qg_window"},
    # spatial heads (a sum of local agreements, the shape of a Gaussian log-likelihood) with neighbours
    "negsq_spatial_nb": {"config": {k: v for k, v in VARIANTS["negsq_spatial"].items() if k != "loss"} | {"loss": "clip"},
                         "k": 7, "scale": (0.5, 2.0)},
    # the same, continued from the 200 s run (warm start of its weights)
    "negsq_spatial_nb_cont": {"config": {k: v for k, v in VARIANTS["negsq_spatial"].items() if k != "loss"} | {"loss": "clip"},
                              "k": 7, "scale": (0.5, 2.0), "init_from": "/tmp/critics/negsq_spatial_nb"},
    "negsq_clim": {"config": {"similarity": "neg_sq_distance", "loss": "clip", "tau": 1.0}, "k": 0, "scale": (1, 1)},
}


def error_bank(sample: Path, members: int = 20, first_day: int = 5, seed: int = 0) -> np.ndarray:
    """``[B, C, Y, X]`` errors (library channel layout) of cycled LETKF members on the tuning truth.

    For every day d >= ``first_day``: the analysis members minus the truth at d, and their one-day QG
    forecasts minus the truth at d + 1 (what a filter weights).
    """
    from oceanda import fields, io
    from oceanda.experiments.qg_twin import QGForecast, cycled_letkf
    from oceanda.testbeds.qg import QGModel

    lib = io.open_states(sample / "library.nc").load()
    truth = io.open_states(sample / "truth_tune.nc").load()
    obs = io.open_obs(sample / "obs_altimetry_tune.nc", like=lib).load()
    cyc = cycled_letkf(lib, obs, members=members, rng=seed)
    layout = fields.layout_of(lib, ["psi", "ssh"])
    fc = QGForecast(QGModel.from_attrs(lib.attrs), layout.n_channels)
    out = []
    T = cyc.sizes["time"]
    for d in range(first_day, T):
        ens, _ = fields.to_array(cyc.isel(time=d)[["psi", "ssh"]], fields.layout_of(cyc.isel(time=d)[["psi", "ssh"]],
                                                                                     ["psi", "ssh"], sample_dim="member"),
                                 dtype=np.float64)
        tr, _ = fields.to_array(truth.isel(time=[d])[["psi", "ssh"]], layout, dtype=np.float64)
        out.append(ens - tr)
        if d + 1 < T:
            f = fc(ens.reshape(len(ens), -1), 0.0, 1.0).reshape(ens.shape)
            tr1, _ = fields.to_array(truth.isel(time=[d + 1])[["psi", "ssh"]], layout, dtype=np.float64)
            out.append(f - tr1)
    return np.concatenate(out).astype(np.float32)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--variant", choices=list(CRITICS), required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--sample", default="sample_data/qg")
    p.add_argument("--seconds", type=float, default=200.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from oceanda.analysis.library import Library
    from oceanda.analysis.window_training import NeighbourNegatives, train_qg_window_model

    sample = Path(a.sample)
    spec = CRITICS[a.variant]
    bank_file = Path("/tmp/critics/error_bank_tune.npy")
    t0 = time.process_time()
    if spec["k"]:
        if bank_file.exists():
            errors = np.load(bank_file)
        else:
            errors = error_bank(sample)
            np.save(bank_file, errors)
        nb = NeighbourNegatives(errors, k=spec["k"], scale=tuple(spec["scale"]))
    else:
        nb = None
    t_bank = time.process_time() - t0
    lib = Library.open(sample / "library.nc")
    w0 = time.perf_counter()
    model, info = train_qg_window_model(lib, a.out, seconds=a.seconds, seed=a.seed, quiet=True, max_days=1,
                                        pairs_per_epoch=4096, val_pairs=1024, neighbours=nb,
                                        init_from=spec.get("init_from"), **spec["config"])
    out = {"variant": a.variant, "out": a.out, "train_wall_s": time.perf_counter() - w0, "bank_cpu_s": t_bank,
           "best_epoch": info["best_epoch"], "epochs": len(info["history"]), "health": info["health"],
           "tau": float(model.similarity.tau.detach()), "last": info["history"][-1] if info["history"] else None}
    print(json.dumps(out, default=str))
    return out


if __name__ == "__main__":
    main()
