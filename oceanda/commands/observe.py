"""`oceanda observe`: synthetic observations of one's own states on any grid (an OSSE), written as CF NetCDF."""

from __future__ import annotations

import argparse

HELP = "synthetic observations of states on any grid: altimetry, gappy fields, L3 along-track points, profiles"
DESCRIPTION = """\
Observe a state file as a satellite or a float would: the observing-system simulation a scientist runs
before trusting a method on a new grid. Works on any grid oceanda reads (1-D y/x km, 1-D lat/lon,
curvilinear 2-D lat/lon, regional domains, across the dateline); land (NaN) is never observed.

  altimetry  gridded along-track (SSH by default): the cells under straight ground tracks (NaN elsewhere)
  gappy      the full field minus cloud-like gaps (cover --cloud-fraction, size --cloud-size-km)
  points     L3-style along-track points every --along-track-km along the same tracks, at arbitrary
             positions (values interpolated bilinearly); layout: dim obs, coords time/lat/lon
  profiles   Argo-like profiles at random positions, --profiles-per-day, every level (depth/layer)

Noise: --sigma S (absolute, the variable's units) or --sigma-fraction F of the field's standard deviation
(default 0.1). The output opens again with `oceanda.open_obs(path, like=states)` (points are then
superobbed onto the grid) and feeds `train --obs`, `assimilate`, `enkf` and `evaluate`.

Example:
  oceanda observe --states sample_data/qg/truth_eval_1.nc --operator points --sigma 0.0014 \\
      --along-track-km 7 --seed 1 --out obs_points.nc
  oceanda enkf --method enoi --ensemble sample_data/qg/library.nc --obs obs_points.nc \\
      --loc-radius 100 --periodic --out enoi_points.nc"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from oceanda.commands import add_units_argument, choices, nonnegative_int, number, one_line_errors, positive, seed_int

    one_line_errors(parser)
    KM = number(lo=0.0, lo_open=True, hi=1e5)  # noqa: N806 - distances: at most 2.5 x the equator (observe.MAX_KM)
    parser.add_argument("--states", required=True, nargs="+", help="state file(s) to observe (NetCDF/zarr, globs)")
    parser.add_argument("--operator", required=True, choices=choices("operator"), help="what observes the states")
    parser.add_argument("--out", required=True, help="output NetCDF (refused if it exists, unless --overwrite)")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("--sigma", type=number(lo=0.0, lo_open=True, hi=1e30), default=None, help="noise standard deviation in the variable's units")
    noise.add_argument("--sigma-fraction", type=number(lo=0.0, lo_open=True, hi=100.0), default=None,
                       help="noise as a fraction of the field's standard deviation (default 0.1)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument("--variables", nargs="+", default=None,
                        help="observed variable (default: the SSH variable, or the only variable, for altimetry, gappy and points; levelled fields for profiles)")
    add_units_argument(parser)
    g = parser.add_argument_group("track options (altimetry, points)")
    g.add_argument("--track-spacing-km", type=KM, default=None,
                   help="distance between same-direction tracks of one day (default: half the domain width)")
    g.add_argument("--track-width-km", type=KM, default=None, help="swath width (default: the cells a track crosses)")
    g.add_argument("--along-track-km", type=KM, default=None, help="points: spacing along track (default: half a cell)")
    g.add_argument("--interpolation", default=None, choices=["bilinear", "nearest"],
                   help="points: value at the point (bilinear, default) or of its cell (nearest)")
    g.add_argument("--repeat-days", type=number(integer=True, lo=1, hi=10000), default=None, help="repeat cycle of the orbit in days (default 10)")
    g.add_argument("--satellites", type=number(integer=True, lo=1, hi=100), default=None, help="number of satellites (default 2)")
    g.add_argument("--passes-per-day", type=number(integer=True, lo=1, hi=100), default=None, help="passes per satellite a day (default 2)")
    g.add_argument("--angle-deg", type=number(lo=-360.0, hi=360.0), default=None, help="track angle to the x axis (default 60)")
    g = parser.add_argument_group("gappy options")
    g.add_argument("--cloud-fraction", type=number(lo=0.0, hi=1.0, hi_open=True), nargs="+", default=None, metavar="F",
                   help="cloud cover: one value, or MIN MAX drawn per time (default 0.3 0.7)")
    g.add_argument("--cloud-size-km", type=KM, default=None, help="cloud correlation length in km (default 100)")
    g.add_argument("--layer", type=nonnegative_int, default=None, help="level index observed of a layered/depth variable")
    g = parser.add_argument_group("profiles options")
    g.add_argument("--profiles-per-day", type=positive, default=None, help="profiles a day (default 20)")
    parser.add_argument("--periodic", default=None, choices=["yes", "no"],
                        help="treat the grid as periodic (default: km boxes yes, global lon yes, else no)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no summary line")


#: API keywords -> the options they come from (errors that depend on the data name the option).
SPELLING = {k: "--" + k.replace("_", "-") for k in (
    "sigma", "sigma_fraction", "seed", "track_spacing_km", "track_width_km", "along_track_km", "repeat_days",
    "passes_per_day", "angle_deg", "cloud_fraction", "cloud_size_km", "layer", "profiles_per_day")}
SPELLING["n_satellites"] = "--satellites"


def run(args: argparse.Namespace) -> int:
    from oceanda import api
    from oceanda.commands import cli_spelling, given, units_option

    api.check_outputs(args.states, [args.out], args.overwrite)
    units = units_option(args.units)
    options = given(args, "track_spacing_km", "track_width_km", "along_track_km", "repeat_days", "passes_per_day",
                    "angle_deg", "cloud_size_km", "layer", "profiles_per_day", "interpolation",
                    n_satellites="satellites")
    if args.cloud_fraction is not None:
        options["cloud_fraction"] = tuple(args.cloud_fraction)
    if args.periodic is not None:
        options["periodic"] = args.periodic == "yes"
    with cli_spelling(**SPELLING):
        states = api.open_states(args.states, units=units)
        api.check_units(units, [states], args.states)
        obs = api.observe_states(states, args.operator, sigma=args.sigma, sigma_fraction=args.sigma_fraction,
                                 seed=args.seed, variables=args.variables, **options)
    path = api.write(obs, args.out, overwrite=args.overwrite)
    if not args.quiet:
        n = obs.sizes["obs"] if "obs" in obs.dims else int(sum(int(obs[v].count()) for v in obs.data_vars
                                                              if not str(v).endswith("_error")))
        print(f"oceanda observe: {args.operator}: {n} observations of {obs.attrs.get('observed_variable')}, "
              f"error std {float(obs.attrs.get('obs_error_std', float('nan'))):.4g} -> {path}")
    return 0
