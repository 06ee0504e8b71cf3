"""`oceanda demo`: the whole chain on the bundled QG altimetry sample (see oceanda.demo)."""

from __future__ import annotations

HELP = "run the whole chain on the bundled QG sample: contrastive analyses vs EnOI and a cycled LETKF, with a report"
#: cli.main runs this verb under oceanda.threads.configured() (torch's threads set on purpose)
RUNS_TORCH = True
DESCRIPTION = """\
Run the main job on the bundled sample data (two-layer QG ocean, daily along-track altimetry of a
held-out truth run) and compare, on the same observations:

  contrastive_local    library windows weighted by the learned similarity (the default sampler)
  contrastive_hybrid   Kalman update whose background is the local contrastive posterior
  contrastive_global   whole-field library weighting (the paper's algorithm; reference)
  enoi                 EnOI with a static ensemble drawn from the library
  letkf_cycled         cycled LETKF with QG forecasts (settings tuned on a separate truth run)
  climatology          library mean and spread (no skill)

Writes OUT/analyses/*.nc (CF NetCDF: <var>_mean, <var>_spread, member ensemble), OUT/report/
(metrics.json, metrics.csv, maps with coastlines, time series, rank histograms, spectra) and
OUT/demo.json, then prints a table. Takes under a minute on a 2-core laptop: the Kalman baselines run
beside the contrastive analyses, and a second process draws half of the report's maps.

OUT appears only complete: it is built in a temporary folder beside it and renamed into place at the
end; a failure or Ctrl-C leaves no OUT (with --overwrite, the old OUT as it was)."""


def add_arguments(p) -> None:
    from oceanda.commands import number, one_line_errors, positive_int, seed_int

    one_line_errors(p)
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.add_argument("--train", action="store_true",
                   help="retrain the encoder pairs from the library instead of loading the bundled ones (~20 min: the "
                        "window model trains 200 epochs on a mixture of observation patterns)")
    p.add_argument("--truth", default="eval_1", help="held-out truth run of the sample: eval_1, eval_2 or eval_3 (default eval_1)")
    p.add_argument("--members", type=number(integer=True, lo=2), default=20, help="analysis ensemble size written for each method (default 20)")
    p.add_argument("--mode", dest="modes", action="append", choices=["local", "hybrid", "global"],
                   help="contrastive mode(s) to run (repeatable; default all three)")
    p.add_argument("--days", type=positive_int, default=None, help="use only the first DAYS observation days (a quick look)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT (one a demo wrote) as a whole, once the new one is complete")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(args) -> int:
    from oceanda import api
    from oceanda.commands import cli_spelling

    with cli_spelling(truth="--truth", members="--members", days="--days", seed="--seed"):
        res = api.demo(args.out, train=args.train, overwrite=args.overwrite, quiet=args.quiet, seed=args.seed,
                       truth=args.truth, members=args.members, days=args.days,
                       modes=tuple(args.modes or ("local", "hybrid", "global")), map_worker=True)
    print(api.demo_table(res.metrics))
    print(f"\nSSH scores against {args.truth} (lower RMSE/CRPS is better; spread/skill near 1 is calibrated).")
    print(f"analyses: {res.out_dir / 'analyses'}")
    print(f"report:   {res.out_dir / 'report'} (metrics.json, metrics.csv, *.png)")
    print(f"total:    {res.seconds.get('total', float('nan')):.0f} s")
    return 0
