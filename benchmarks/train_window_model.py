"""Train the local (window) encoder pair and save it.

The model the demo ships (trained on the bundled sample library on a mixture of observation patterns --
tracks, clouds, points, 1-3 days, the error an input; 200 epochs, ~15 min on one thread -- its sampler
temperature chosen over those families' tuning observations, spread factor calibrated on the tuning truth's
altimetry; ``oceanda demo --train`` runs the same function; ``--families ''`` trains the former altimetry-only
model)::

    .venv/bin/python benchmarks/train_window_model.py --sample sample_data/qg --out sample_data/models/qg_window

A model for the QG acceptance benchmark (library from bench_sampler_qg_data.py, 1-5 days of tracks)::

    .venv/bin/python benchmarks/train_window_model.py --work /tmp/qgwork --out /tmp/qgwork/model --seconds 600

Pairs: 16 x 16 SSH windows and the 32 x 32 windows of along-track altimetry around them (4 tracks
a day, noise 10 % of the library SSH standard deviation), redrawn every epoch; validation on
library runs held out of training. ``--variant`` picks the similarity/loss.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

if __name__ == "__main__":
    import torch

    from oceanda.analysis.window_training import DEFAULT_VARIANT, VARIANTS, train_bundled_window_model, train_qg_window_model
    from oceanda.analysis import stored_settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/qgwork"))
    p.add_argument("--sample", type=Path, default=None, help="train the bundled model on this sample folder")
    p.add_argument("--out", type=Path, default=Path("/tmp/qgwork/model"))
    p.add_argument("--seconds", type=float, default=None, help="training budget (default: the bundled model's)")
    p.add_argument("--families", default="tracks,clouds,points",
                   help="pattern families of the bundled model (comma list; '' = altimetry only)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default=DEFAULT_VARIANT)
    p.add_argument("--max-days", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--obs-encoder", choices=["masked_cnn", "mlp"], default="masked_cnn")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    if a.sample is not None:
        budget = {} if a.seconds is None else {"seconds": a.seconds}
        model = train_bundled_window_model(a.sample, a.out, quiet=False, seed=a.seed,
                                           families=[f for f in a.families.split(",") if f] or None, **budget)
        print(json.dumps({"out": str(a.out), "seconds": time.time() - t0,
                          "spread_factor": stored_settings(model.config).spread_factor,
                          "training": model.config.get("training")}, indent=1, default=float))
    else:
        enc = {"type": "masked_cnn", "width": 16, "depth": 2} if a.obs_encoder == "masked_cnn" else \
            {"type": "mlp", "hidden": [512, 256]}
        model, info = train_qg_window_model(a.work / "library.nc", a.out, seconds=a.seconds or 150.0, variant=a.variant,
                                            seed=a.seed, quiet=False, obs_encoder=enc, max_days=a.max_days)
        h = info["history"]
        print(json.dumps({"variant": a.variant, "epochs": len(h), "best_epoch": info["best_epoch"],
                          "last": h[-1] if h else None, "seconds": time.time() - t0}, indent=1, default=float))
