"""`oceanda enkf`: ensemble Kalman analyses (EnKF, ETKF, LETKF, EnOI) and cycled testbed runs."""

from __future__ import annotations

HELP = "ensemble Kalman analyses (enkf, etkf, letkf, enoi) of observation files, or a cycled testbed run"
DESCRIPTION = """\
One-shot analyses: update the ensemble in ENS.nc (dimension 'member'; or a library of states along
'time', used as a static ensemble) with every time of OBS.nc (gridded with NaN where unobserved, or
point observations with y_index/x_index) and write the analysis mean, spread and ensemble in the
layout of `oceanda assimilate`. Point observations at arbitrary positions (L3 along-track altimetry:
time, lat/lon or y/x km, a value and its error; profiles with depth) are used as they are, each the
bilinear interpolation of the four surrounding cells (nearest cell on curvilinear grids; points off
the grid or on land dropped and counted in the output's attributes), at the day (or ensemble time)
nearest to it.

Methods: enkf (stochastic, perturbed observations), etkf (symmetric square root), letkf (local
analyses, Gaspari-Cohn R-localisation), enoi (static ensemble scaled by --alpha, background =
ensemble mean; with gridded or index observations the gain is Schur-localised in observation space,
under a second per analysis on a 64 x 64 x 2 grid; QG altimetry: 100 km tuned,
oceanda/kalman/tuned.json). The radius is the Gaspari-Cohn half-width c in km: weights vanish
beyond 2c; DAPPER's loc_rad = c / 1.82. Distances: great-circle km on lat/lon and curvilinear grids,
y/x km on projected grids (wrapped with --periodic). Without --loc-radius, letkf and enoi estimate
the radius from the ensemble: the distance where its mean anomaly correlation falls to 1/e, times
sqrt(members)/8 clipped to [1, 3]; it is printed and recorded (attributes localization_radius_km,
localization_radius_source). --loc-radius inf runs EnOI unlocalised.

Cycled runs (--cycle TESTBED) write per-cycle RMSE and spread to --out, checkpoint the ensemble in
--checkpoint-dir and continue from the last checkpoint with --resume:
  lorenz96  the Lorenz-96 twin (40 variables, F=8, all observed every 0.05 with R=I; 1000 cycles);
            --loc-radius in grid units
  qg        the QG testbed with daily along-track altimetry, LETKF on psi (60 daily cycles); defaults
            for radius (km) and inflation from the values tuned for the --members in use
            (oceanda/kalman/tuned.json: N = 10, 20, 40; another N takes the nearest on a log scale)"""


def add_arguments(parser) -> None:
    from oceanda.commands import add_units_argument, choices, number, one_line_errors, positive_int, seed_int, unit_interval

    one_line_errors(parser)
    parser.add_argument("--ensemble", metavar="ENS.nc", nargs="+", help="forecast ensemble (or library) NetCDF/zarr")
    parser.add_argument("--obs", metavar="OBS.nc", nargs="+", help="observations (gridded or point)")
    parser.add_argument("--out", required=True, metavar="ANALYSIS.nc", help="output NetCDF (per-cycle statistics with --cycle)")
    parser.add_argument("--method", choices=choices("method"), default="letkf", help="filter (default letkf)")
    parser.add_argument("--loc-radius", type=number(lo=0.0, lo_open=True, inf=True, note=", or inf for no localisation"), default=None, metavar="KM",
                        help="Gaspari-Cohn half-width c in km (zero beyond 2c); default: estimated from the "
                             "ensemble's correlation length (letkf, enoi); inf: no localisation (enoi)")
    parser.add_argument("--taper", choices=choices("taper"), default=None, help="localisation taper")
    parser.add_argument("--inflation", type=number(lo=0.0, lo_open=True, hi=100.0), default=None, metavar="X", help="multiplicative prior inflation of anomalies (default 1)")
    parser.add_argument("--rtps", type=unit_interval, default=None, metavar="A", help="relaxation to prior spread, 0..1 (default 0)")
    parser.add_argument("--rtpp", type=unit_interval, default=None, metavar="A", help="relaxation to prior perturbations, 0..1 (default 0)")
    parser.add_argument("--alpha", type=number(lo=0.0, lo_open=True, hi=100.0), default=None, help="EnOI: scaling of the static covariance (default 1)")
    parser.add_argument("--members", type=number(integer=True, lo=2), default=None, metavar="N",
                        help="EnOI: static members drawn from the library (default all); --cycle: ensemble size (default 20)")
    parser.add_argument("--variables", nargs="+", default=None, metavar="VAR", help="state variables to analyse (default: all)")
    add_units_argument(parser)
    parser.add_argument("--obs-window", type=positive_int, default=None, metavar="DAYS",
                        help="each analysis also uses the observations of the DAYS - 1 days before it, their errors "
                             "grown with age (default 1: that day's only)")
    parser.add_argument("--obs-age-growth", type=number(lo=0.0, hi=100.0), default=None, metavar="G",
                        help="--obs-window: error growth per day of age, a fraction of the ensemble's std (default: "
                             "estimated from the library's consecutive states; required for a member ensemble)")
    parser.add_argument("--periodic", action="store_true", help="doubly periodic domain: distances from y/x km with wrap-around")
    parser.add_argument("--block", type=positive_int, default=None, metavar="B", help="LETKF: one local analysis per B x B tile of points (default 1)")
    parser.add_argument("--no-members", action="store_true", help="write only mean and spread, not the member ensemble")
    parser.add_argument("--seed", type=seed_int, default=None, help="random seed (default 0)")
    parser.add_argument("--cycle", choices=choices("twin"), default=None, metavar="TESTBED",
                        help="run a cycled twin experiment on TESTBED (lorenz96 or qg)")
    parser.add_argument("--cycles", type=positive_int, default=None, help="--cycle: analysis cycles (default 1000 for lorenz96, 60 for qg)")
    parser.add_argument("--burn-in", type=number(integer=True, lo=0), default=None, help="--cycle: cycles excluded from the printed means (default 100)")
    parser.add_argument("--checkpoint-dir", default=None, metavar="DIR", help="--cycle: ensemble checkpoint per cycle (NetCDF)")
    parser.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="K", help="--cycle: checkpoint every K cycles (default 1)")
    parser.add_argument("--resume", action="store_true", help="--cycle: continue from the last checkpoint in --checkpoint-dir")
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


#: Options of one-shot analyses only, and of cycled runs only (refused in the other mode: never silently ignored).
ONE_SHOT_ONLY = ("ensemble", "obs", "rtpp", "alpha", "variables", "units", "block", "obs_window", "obs_age_growth")
CYCLE_ONLY = ("cycles", "burn_in", "checkpoint_dir", "checkpoint_every")
#: API keywords -> the options they come from (errors that depend on the data name the option).
SPELLING = {"loc_radius_km": "--loc-radius", "radius": "--loc-radius", "rng": "--seed",
            **{k: "--" + k.replace("_", "-") for k in ("members", "seed", "cycles", "burn_in", "block", "alpha",
                                                       "inflation", "rtps", "rtpp", "checkpoint_every", "obs_window",
                                                       "obs_age_growth")}}


def _not_applying(args) -> None:
    """Refuse the options of the other mode (one-shot vs --cycle): an ignored option is a silent surprise."""
    from oceanda.errors import ConfigurationError

    names = ONE_SHOT_ONLY if args.cycle else CYCLE_ONLY
    flags = ["--periodic"] * bool(args.periodic and args.cycle) + ["--no-members"] * bool(args.no_members and args.cycle)
    flags += ["--resume"] * bool(args.resume and not args.cycle)
    wrong = ["--" + n.replace("_", "-") for n in names if getattr(args, n, None) is not None] + flags
    if wrong:
        mode, other = (f"--cycle {args.cycle}", "one-shot analyses") if args.cycle else ("one-shot analyses", "--cycle")
        raise ConfigurationError(f"{' '.join(wrong)}: an option of {other}, ignored by {mode}; expected "
                                 f"{'it' if len(wrong) == 1 else 'them'} left out")


def run(args) -> int:
    from oceanda.commands import cli_spelling

    _not_applying(args)
    with cli_spelling(**SPELLING):
        return _run_cycle(args) if args.cycle else _run_once(args)


def _run_once(args) -> int:
    from oceanda import api
    from oceanda.commands import given, units_option
    from oceanda.errors import DataValidationError

    if not args.ensemble or not args.obs:
        raise DataValidationError("--ensemble ENS.nc and --obs OBS.nc are required (or --cycle TESTBED)")
    (out,) = api.check_outputs([*args.ensemble, *args.obs], [args.out], args.overwrite)  # before any work
    command = api.command_line()
    units = units_option(args.units)
    ens = api.open_states(args.ensemble, variables=args.variables, units=units)
    obs = api.open_obs(args.obs, like=ens, units=units, superob=False)  # points: the exact bilinear operator
    api.check_units(units, [ens, obs], [*args.ensemble, *args.obs])
    settings = given(args, "taper", "inflation", "rtps", "rtpp", "alpha", "members", "variables", "block",
                     "obs_window", "obs_age_growth", loc_radius_km="loc_radius", rng="seed")
    # written time by time as analysed (atomically): one time's ensemble in memory, not the record's
    ds = api.analyse(ens, obs, args.method, periodic=args.periodic, keep_members=not args.no_members,
                     source=" + ".join(args.ensemble), out=out, overwrite=args.overwrite, command=command, **settings)
    with ds:
        if not args.quiet:
            radius, how = ds.attrs["localization_radius_km"], ds.attrs["localization_radius_source"]
            print(f"localisation radius {radius:.4g} km ({how})" if radius else f"localisation {how}")
            print(f"wrote {out} ({ds.sizes['time']} analyses, method {args.method}, "
                  f"{ds.attrs['seconds_per_analysis']:.3g} s per analysis)")
    return 0


def _run_cycle(args) -> int:
    from oceanda import api
    from oceanda.commands import given

    # the checkpoints are read back with --resume: an input as well as an output
    (out,) = api.check_outputs([args.checkpoint_dir], [args.out], args.overwrite)
    command = api.command_line()
    settings = given(args, "members", "cycles", "seed", "inflation", "rtps", "taper", "checkpoint_dir",
                     "checkpoint_every", radius="loc_radius")
    res, extra = api.run_twin(args.cycle, args.method, resume=args.resume, progress=False if args.quiet else None,
                              **settings)
    ds, summary = res.to_dataset(), api.cycle_summary(res, args.burn_in)
    ds.attrs.update({"method": args.method, "testbed": args.cycle, **{f"mean_{k}": v for k, v in summary.items()},
                     **{f"qg_{k}": v for k, v in extra.items()}})
    api.write(ds, out, overwrite=args.overwrite, command=command)
    if not args.quiet:
        line = (f"wrote {out}: {len(res.times)} cycles; rmse_a={summary['rmse_a']:.4g} spread_a={summary['spread_a']:.4g} "
                f"({summary['seconds_per_analysis'] * 1e3:.1f} ms per analysis, {summary['cycles_per_second']:.2f} cycles/s)")
        if extra:
            line += f"; ssh rmse {extra['ssh_rmse_m']:.4g} m vs climatology {extra['ssh_rmse_climatology_m']:.4g} m"
        print(line)
    return 0
