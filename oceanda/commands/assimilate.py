"""`oceanda assimilate`: contrastive analyses (global, local or hybrid) of every observation time."""

from __future__ import annotations

HELP = "analyse observations with a trained encoder pair and a library of states (the contrastive sampler)"
#: cli.main runs this verb under oceanda.threads.configured() (torch's threads set on purpose)
RUNS_TORCH = True
DESCRIPTION = """\
Weight a library of states by softmax(similarity / tau) to the observations of every time in OBS.nc
and write the analysis mean, spread and ensemble (CF NetCDF), the effective sample size per time
and, in global mode, the retrieved library states and their weights.

Modes: global (whole fields; the paper's algorithm), local (windows blended with a taper; the
default for window models), hybrid (an EnOI update whose background is the local analysis).
Library embeddings are computed once and cached in a user cache ($OCEANDA_CACHE_DIR, else
~/.cache/oceanda/library_cache), keyed by the content of the library: never in the model folder.
With --scheduler, dask workers embed the library (each reading its states from the library file,
which they must be able to read at the same path) and analyse the times; try --scheduler local:2."""


def add_arguments(parser) -> None:
    from oceanda.commands import add_units_argument, choices, nonnegative, number, one_line_errors, positive_int, seed_int

    one_line_errors(parser)
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="trained encoder pair (model.safetensors + config.json)")
    parser.add_argument("--library", required=True, nargs="+", metavar="LIB.nc", help="library of prior states (NetCDF/zarr; globs allowed)")
    parser.add_argument("--obs", required=True, nargs="+", metavar="OBS.nc", help="gridded observations (NaN where unobserved)")
    parser.add_argument("--variables", nargs="+", default=None, metavar="VAR", help="state variables of the library (default: all)")
    add_units_argument(parser)
    parser.add_argument("--out", required=True, metavar="ANALYSIS.nc", help="output NetCDF file")
    parser.add_argument("--mode", choices=choices("mode"), default=None,
                        help="analysis mode (default: local for window models, global otherwise)")
    parser.add_argument("--members", type=positive_int, default=None, metavar="M", help="ensemble members to write (default 20)")
    parser.add_argument("--top-k", type=positive_int, default=None, metavar="K", help="retrieved library states to record in global mode (default 10)")
    parser.add_argument("--seed", type=seed_int, default=None, help="seed of the resampling (default 0)")
    parser.add_argument("--spread-factor", type=number(lo=0.0, lo_open=True, hi=100.0), default=None, help="scale ensemble deviations (default: the model's calibrated factor)")
    parser.add_argument("--tau", type=number(lo=1e-6, hi=1e6), default=None, help="temperature of the weights (default: the model's tuned or trained one)")
    parser.add_argument("--precision", choices=choices("precision"), default=None,
                        help="local/hybrid arithmetic: fast (default; float32, low-rank window means) or exact "
                             "(float64, bit for bit the reference engine)")
    parser.add_argument("--sparse-cells", type=positive_int, default=None, metavar="N",
                        help="local/hybrid: a window whose observation window has n < N observed cells gets the "
                             "temperature tau (N / n)^P, flatter where observations are few (default: the model's; "
                             "the bundled QG model: 60)")
    parser.add_argument("--sparse-power", type=number(lo=0.0, hi=4.0), default=None, metavar="P",
                        help="the exponent P of --sparse-cells (default: the model's, else 0.3; 0 turns the rule off)")
    parser.add_argument("--obs-window", type=positive_int, default=None, metavar="DAYS",
                        help="hybrid: the Kalman step also uses the observations of the DAYS - 1 days before each "
                             "analysis, their errors grown with age (default: the model's; the bundled QG model: 1)")
    parser.add_argument("--min-ess", type=nonnegative, default=None, help="warn when the effective sample size falls below this")
    parser.add_argument("--temper", action="store_true", default=None, help="raise tau until the ESS reaches --min-ess instead of warning")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run the analyses (and the library embedding) on dask.distributed workers: a scheduler "
                             "address (tcp://host:8786), or local:N to start N local worker processes for this run; "
                             "results are those of the default run, bit for bit (default: threads of this process)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="where library embeddings are cached (default: $OCEANDA_CACHE_DIR or ~/.cache/oceanda/library_cache)")
    parser.add_argument("--overwrite", action="store_true", help="replace ANALYSIS.nc if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


#: API keywords -> the options they come from (errors that depend on the data name the option).
SPELLING = {"members": "--members", "top_k": "--top-k", "seed": "--seed", "tau": "--tau",
            "spread_factor": "--spread-factor", "min_ess": "--min-ess", "scheduler": "--scheduler",
            "sparse_cells": "--sparse-cells", "sparse_power": "--sparse-power", "obs_window": "--obs-window"}


def run(args) -> int:
    from oceanda import api
    from oceanda.commands import cli_spelling, given, units_option

    # fail before the (long) analysis: the output is new and no input (the model folder and the cache included)
    (out,) = api.check_outputs([*args.library, *args.obs, args.model, args.cache_dir], [args.out], args.overwrite)
    api.check_cache_dir(args.cache_dir, args.model, [*args.library, *args.obs])
    units = units_option(args.units)
    with cli_spelling(**SPELLING):
        library = api.open_library(args.library, variables=args.variables, units=units)
        obs = api.open_obs(args.obs, like=library.ds, units=units)
        api.check_units(units, [library, obs], [*args.library, *args.obs])
        command = api.command_line()
        settings = given(args, "mode", "members", "seed", "tau", "spread_factor", "min_ess", "scheduler", "cache_dir",
                         "precision", "sparse_cells", "sparse_power", "obs_window", top_k="top_k", tempering="temper")
        ds = api.assimilate(args.model, library, obs, quiet=args.quiet, command=command, **settings)
    api.write(ds, out, overwrite=args.overwrite, command=command)
    if not args.quiet:
        print(f"wrote {out} ({ds.sizes['time']} analyses, mode {ds.attrs['mode']}, "
              f"{ds.attrs['seconds_per_analysis']:.3g} s per analysis)")
    return 0
