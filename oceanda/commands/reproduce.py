"""`oceanda reproduce`: run a published experiment (oceanda.experiments) and write its numbers and figures."""

from __future__ import annotations

HELP = "reproduce a paper's experiments (e.g. baptista2025): results.json and figures"
#: cli.main runs this verb under oceanda.threads.configured() (torch's threads set on purpose)
RUNS_TORCH = True
DESCRIPTION = """\
Run every experiment of a paper as code a reader can check against it, and write OUT/results.json
(every number, the settings used, what was reduced with respect to the paper, run times) and PNG
figures into OUT.

baptista2025 (Baptista, Stuart & Tran 2025): Gaussian random field sweeps (6.1), images and labels on
scikit-learn's 8x8 digits (6.2), Lagrangian data assimilation on the torus flow (6.3) with the
comparison to an augmented-state EnKF and a linearised Gaussian posterior.

--quick runs small sizes in a minute or two (for tests); the full run takes about an hour on 2 CPU cores.
OUT appears only complete (built in a temporary folder beside it, renamed into place at the end): a
failure or Ctrl-C leaves no OUT, and --overwrite keeps the old one until the new one is complete.

Example:
  oceanda reproduce baptista2025 --quick --out quick-run"""


def add_arguments(parser) -> None:
    from oceanda.commands import one_line_errors, seed_int

    one_line_errors(parser)
    parser.add_argument("experiment", metavar="EXPERIMENT", help="experiment name (available: baptista2025)")
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes, for CI)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory (default: reproduce-EXPERIMENT[-quick])")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR (one reproduce wrote) as a whole, once the new one is complete")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def run(args) -> int:
    import sys

    from oceanda import api

    out = args.out or f"reproduce-{args.experiment}{'-quick' if args.quick else ''}"

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    results = api.reproduce(args.experiment, out, quick=args.quick, seed=args.seed, overwrite=args.overwrite,
                         quiet=args.quiet or not sys.stderr.isatty(), log=log)
    print(f"{out}/results.json written ({results['seconds_total']:.0f} s); figures: {', '.join(results['figures'])}")
    return 0
