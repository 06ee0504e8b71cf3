"""`oceanda sample-data`: write a testbed's library, truth runs, observations and training pairs."""

from __future__ import annotations

import argparse

HELP = "write sample data (library, truth runs, observations, training pairs) for a testbed"
DESCRIPTION = """\
Write a ready-to-use data set for one testbed into --out: a long free-run library of states (the
prior sample), a tuning truth run and three evaluation truth runs never in the library, observations
of them, a paired training set, and README.txt saying how it was made. Same --seed, same data.

  qg        two-layer quasi-geostrophic ocean (64 x 64 x 2, 38N 60W) with along-track altimetry,
            gappy SSH, Argo-like profiles and drifters
  torus     the torus flow of Baptista, Stuart & Tran (2025) with drifter trajectories
  lorenz96  Lorenz-96 (40 variables, F = 8) with direct noisy observations

--size small finishes in under 2 minutes on 2 CPU cores; full is what benchmarks use; tiny is for tests.

--nx 128 | 256 | 512 (qg only; default 64, the bundled set): the same 1000 km box on a finer grid
(dx = 7.8, 3.9, 1.95 km; dt = 7200 s x 64 / nx), for measuring how analyses scale with the grid. The
runs start from a spun-up state at that grid, made on first use and cached under the oceanda cache
folder ($OCEANDA_CACHE_DIR; spin-up ~0.5 CPU-min at 128, ~2 more at 256, ~8 more at 512).
These sets are smaller (small: 8 runs x 30 days = 128 library states, 20-day truths; ~1 CPU-min
and 140 MB at 256 once the spin-up is cached). Models trained at 64 x 64 (the bundled
sample_data/models, window 16 cells) refuse them by their grid fingerprint -- expected: train a
model on the new library.nc.
--out appears only complete (built in a temporary folder beside it, renamed into place at the end)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from oceanda.commands import choices, one_line_errors, seed_int

    one_line_errors(parser)
    parser.add_argument("--testbed", required=True, choices=choices("testbed"), help="which testbed")
    parser.add_argument("--out", required=True, help="output folder (created; refused if not empty without --overwrite)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", default="small", choices=["tiny", "small", "full"], help="data size (default small)")
    parser.add_argument("--nx", type=int, default=64, choices=[64, 128, 256, 512],
                        help="qg grid size, same box (default 64, the bundled set); see above")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out (one sample-data wrote) as a whole, once the new one is complete")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from oceanda import api

    written = api.sample_data(args.testbed, args.out, seed=args.seed, size=args.size, overwrite=args.overwrite,
                               quiet=args.quiet, nx=args.nx)
    if not args.quiet:
        print(f"wrote {len(written)} files to {args.out}")
    return 0
