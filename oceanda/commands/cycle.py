"""`oceanda cycle`: a cycled filter through a testbed's observation files, optionally helped by the contrastive sampler."""

from __future__ import annotations

HELP = "cycled assimilation (LETKF/ETKF with model forecasts) of a testbed's observation files; contrastive warm start"
#: cli.main runs this verb under oceanda.threads.configured() (the contrastive analyses run torch)
RUNS_TORCH = True
DESCRIPTION = """\
Cycle a filter through every time of OBS.nc: forecast the ensemble with the testbed's model to the next
observation time, analyse, repeat. Writes the analysis mean, spread and members of every cycle in the
layout of `oceanda assimilate` (CF NetCDF: <var>_mean, <var>_spread, <var> with dimension 'member') and,
with --truth, per-cycle <var>_rmse, <var>_spread_rms and <var>_rmse_climatology (the library mean's
RMSE); the summary line gives the SSH (QG) or X (Lorenz-96) RMSE over all cycles and its ratio to
climatology.

Testbeds:
  qg        QG forecasts (the library's qg_* attributes) between daily analyses of psi (+ ssh); files of
            `oceanda sample-data --testbed qg` (library.nc, obs_altimetry_*.nc, truth_*.nc)
  lorenz96  RK4 Lorenz-96 forecasts between the observation times (model_time); files of
            `oceanda sample-data --testbed lorenz96` (library.nc, obs_full_*.nc, obs_half_eval_1.nc)

Defaults: the filter's settings are those tuned for the ensemble size in use (oceanda/kalman/tuned.json:
QG LETKF radius and inflation per N = 10, 20, 40, another N takes the nearest tuned one on a log scale;
Lorenz-96 the `lorenz96` entries, radius in grid units); 20 members.

--initial (the ensemble the cycle starts from):
  climatology  --members library states, forecast to the first observation time (no skill at day 1)
  enoi         members of the EnOI analysis of the first observations (library as static ensemble):
               the warm start without a learned model (the control)
  contrastive  members drawn from the one-shot contrastive hybrid analysis of the first observations
               (needs --model; QG only): the contrastive warm start
--warm-draw (how a warm start draws its N members from the analysis' members):
  matched      resampled, then shifted and scaled cell by cell to the analysis' mean and spread (the default:
               N draws of M carry sampling errors of their own in both; with the tuned hybrid covariance at
               N = 10, 0.842 against 0.877 x the tuned LETKF on eval_1-3, benchmarks/bench_cycle.py)
  resampled    N of the analysis' members as they are
--hybrid-beta B (0 <= B < 1) blends a second covariance into every analysis: (1 - B) P_forecast + B P_extra,
  where the extra members are contrastive posterior members of the same observations (--extra contrastive,
  needs --model) or static library states (--extra library); 0 (the default) is the plain filter, bit for bit.

Example (the QG sample, contrastive warm start, 10 members):
  oceanda cycle --testbed qg --library sample_data/qg/library.nc --obs sample_data/qg/obs_altimetry_eval_1.nc \\
      --truth sample_data/qg/truth_eval_1.nc --model sample_data/models/qg_window --initial contrastive \\
      --members 10 --out cycle.nc"""


def add_arguments(parser) -> None:
    from oceanda.commands import SEED_MAX, choices, number, one_line_errors

    one_line_errors(parser)
    parser.add_argument("--testbed", required=True, choices=choices("cycle_testbed"),
                        help="the model that forecasts between analyses: qg or lorenz96")
    parser.add_argument("--library", required=True, nargs="+", metavar="LIB.nc",
                        help="library of states: initial and EnOI ensembles, hybrid library members, climatology")
    parser.add_argument("--obs", required=True, nargs="+", metavar="OBS.nc",
                        help="observations on the library's grid (NaN where unobserved; point files are superobbed)")
    parser.add_argument("--truth", default=None, nargs="+", metavar="TRUTH.nc",
                        help="true states at the observation times: adds per-cycle RMSE, spread and climatology RMSE")
    parser.add_argument("--model", default=None, metavar="MODEL_DIR",
                        help="trained window model (QG), for --initial contrastive and --extra contrastive")
    parser.add_argument("--method", choices=choices("cycle_method"), default=None,
                        help="filter: letkf (localised; default) or etkf (global)")
    parser.add_argument("--initial", choices=choices("initial"), default=None,
                        help="initial ensemble: climatology (default), enoi or contrastive (see above)")
    parser.add_argument("--hybrid-beta", type=number(lo=0.0, hi=1.0, hi_open=True), default=None, metavar="B",
                        help="weight of the extra members' covariance in every analysis, in [0, 1) (default 0: the plain filter)")
    parser.add_argument("--extra", choices=choices("extra"), default=None,
                        help="the hybrid covariance's extra members: contrastive (default with --model) or library "
                             "(default without); only with --hybrid-beta > 0")
    parser.add_argument("--warm-draw", choices=choices("warm_draw"), default=None,
                        help="how a warm start draws its members: matched (default) or resampled (see above); "
                             "only with --initial enoi or contrastive")
    parser.add_argument("--members", type=number(integer=True, lo=2), default=None, metavar="N",
                        help="ensemble size (default 20); the filter's settings are those tuned for N")
    parser.add_argument("--seed", type=number(integer=True, lo=0, hi=SEED_MAX - 1), default=None, metavar="S",
                        help="seed of the initial draw and of the contrastive resampling; the filter uses S + 1 (default 0)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="where the library embedding of --model is cached (default: $OCEANDA_CACHE_DIR or "
                             "~/.cache/oceanda/library_cache)")
    parser.add_argument("--out", required=True, metavar="CYCLE.nc", help="output NetCDF file")
    parser.add_argument("--overwrite", action="store_true", help="replace CYCLE.nc if it exists (never an input)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary line")


#: API keywords -> the options they come from (errors that depend on the data name the option).
SPELLING = {"members": "--members", "seed": "--seed", "hybrid_beta": "--hybrid-beta", "initial": "--initial",
            "extra": "--extra", "model": "--model", "method": "--method", "testbed": "--testbed",
            "warm_draw": "--warm-draw"}


def _check_options(args) -> None:
    """Combinations of options that cannot work or would be ignored, named as typed (before any file is read)."""
    from oceanda.errors import ConfigurationError

    beta = args.hybrid_beta or 0.0
    extra = args.extra or ("contrastive" if args.model else "library")
    if args.testbed == "lorenz96":
        for given, what in ((args.initial == "contrastive", "--initial contrastive"), (args.model, "--model"),
                            (beta > 0 and extra == "contrastive", "--extra contrastive")):
            if given:
                raise ConfigurationError(f"{what}: no Lorenz-96 window model is bundled; expected --initial climatology "
                                         "or enoi and --extra library with --testbed lorenz96")
    if args.warm_draw and (args.initial or "climatology") == "climatology":
        raise ConfigurationError(f"--warm-draw {args.warm_draw}: used only by a warm start; expected --initial enoi "
                                 "or contrastive, or no --warm-draw")
    if args.extra and beta == 0:
        raise ConfigurationError(f"--extra {args.extra}: used only by the hybrid covariance; expected --hybrid-beta B "
                                 "with 0 < B < 1, or no --extra")
    wanted = args.initial == "contrastive" or (beta > 0 and extra == "contrastive")
    if wanted and not args.model:
        what = "--initial contrastive" if args.initial == "contrastive" else "--extra contrastive"
        raise ConfigurationError(f"--model: none given, but {what} uses the contrastive analyses of a window model; "
                                 "expected --model MODEL_DIR (e.g. sample_data/models/qg_window)")
    if args.model and not wanted:
        raise ConfigurationError("--model: unused without --initial contrastive or --hybrid-beta B (contrastive extra "
                                 "members); expected one of them, or no --model")
    if args.cache_dir and not args.model:
        raise ConfigurationError("--cache-dir: only the library embedding of --model is cached; expected --model too, "
                                 "or no --cache-dir")


def run(args) -> int:
    from oceanda import api
    from oceanda.commands import cli_spelling, given

    _check_options(args)
    inputs = [*args.library, *args.obs, *(args.truth or []), args.model, args.cache_dir]
    (out,) = api.check_outputs(inputs, [args.out], args.overwrite)  # before the run: a new file, no input
    if args.model and args.cache_dir:
        api.check_cache_dir(args.cache_dir, args.model, [*args.library, *args.obs, *(args.truth or [])])
    command = api.command_line()
    settings = given(args, "model", "method", "initial", "hybrid_beta", "extra", "members", "seed", "cache_dir",
                     "warm_draw")
    with cli_spelling(**SPELLING):
        ds = api.cycle_testbed(args.testbed, args.library, args.obs, truth=args.truth, quiet=args.quiet, **settings)
    api.write(ds, out, overwrite=args.overwrite, command=command)
    if not args.quiet:
        print(_summary(out, ds))
    return 0


def _summary(out, ds) -> str:
    """One line: cycles, filter, start; with a truth the score variable's RMSE and its ratio to climatology."""
    a = ds.attrs
    line = (f"wrote {out}: {ds.sizes['time']} cycles, {a['method']} N={a['members']}, initial {a['initial']}"
            + (f", hybrid beta {a['hybrid_beta']:g} ({a['extra']})" if a["hybrid_beta"] > 0 else ""))
    if "score_variable" in a:
        v = a["score_variable"]
        units = ds[f"{v}_mean"].attrs.get("units", "")
        units = "" if units in ("", "1") else f" {units}"
        line += (f"; {v} rmse {a['rmse_mean']:.4g}{units} = {a['rmse_ratio_to_climatology']:.3f} x climatology "
                 f"({a['rmse_climatology_mean']:.4g}{units}), spread {a['spread_rms_mean']:.4g}{units}")
    return line + f"; {a['seconds_per_analysis'] * 1e3:.0f} ms per analysis"
