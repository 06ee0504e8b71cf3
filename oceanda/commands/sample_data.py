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
--out appears only complete (built in a temporary folder beside it, renamed into place at the end)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from oceanda import api
    from oceanda.commands import one_line_errors, seed_int

    one_line_errors(parser)
    parser.add_argument("--testbed", required=True, choices=api.choices("testbed"), help="which testbed")
    parser.add_argument("--out", required=True, help="output folder (created; refused if not empty without --overwrite)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", default="small", choices=["tiny", "small", "full"], help="data size (default small)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out (one sample-data wrote) as a whole, once the new one is complete")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from oceanda import api

    written = api.sample_data(args.testbed, args.out, seed=args.seed, size=args.size, overwrite=args.overwrite,
                               quiet=args.quiet)
    if not args.quiet:
        print(f"wrote {len(written)} files to {args.out}")
    return 0
