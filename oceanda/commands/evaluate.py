"""`oceanda evaluate`: compare analyses with a truth (calls oceanda.report.evaluate)."""

from __future__ import annotations

import math

HELP = "score analyses against a truth: metrics.json, metrics.csv and figures"
DESCRIPTION = """\
Score one or more analyses (oceanda's common layout: <var>_mean, <var>_spread, ensemble <var> with a
member dim) against a truth on the same grid, on the times they share with it. Writes
REPORT_DIR/metrics.json ({"methods": {NAME: {"rmse", "bias", "spread", "spread_skill", "crps",
"energy_score", "nrmse_score", "effective_resolution_km", "seconds_per_analysis", ...}}}),
metrics.csv, and PNG figures: maps of truth, mean, error and spread (observation locations drawn
with --obs), RMSE/spread time series, rank histograms and error spectra.

The headline numbers are those of --variable if given, else of the first truth variable present in
every analysis; variables with layers are pooled over layers. An analysis without members is scored
as a Gaussian (with <var>_spread) or as a one-member ensemble (mean only).

Example:
  oceanda evaluate --truth truth.nc --analysis contrastive=a.nc letkf=b.nc --out report"""


def add_arguments(parser) -> None:
    parser.add_argument("--truth", required=True, metavar="TRUTH.nc", help="true states (NetCDF/zarr)")
    parser.add_argument("--analysis", required=True, nargs="+", metavar="NAME=FILE",
                        help="analyses to score, each as NAME=FILE (NAME labels it in the report)")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="output directory")
    parser.add_argument("--obs", metavar="OBS.nc", help="observations, to draw their locations on the maps")
    parser.add_argument("--variable", action="append", metavar="V",
                        help="variable(s) to score (repeatable); the first gives the headline numbers")
    parser.add_argument("--time", metavar="T", default=None,
                        help="map time: an index into the shared times (e.g. -1) or a date (default: the middle one)")
    parser.add_argument("--spectrum", choices=("isotropic", "x"), default="isotropic",
                        help="spectra behind the effective resolution (default: isotropic)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty REPORT_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _pairs(items: list[str]) -> dict[str, str]:
    from oceanda.errors import OceandaError

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise OceandaError(f"--analysis '{item}': expected NAME=FILE, e.g. letkf=letkf.nc")
        if name in out:
            raise OceandaError(f"--analysis: name '{name}' given twice; expected unique names")
        out[name] = path
    return out


def run(args) -> int:
    from oceanda import api

    pairs = _pairs(args.analysis)
    truth = api.open_states(args.truth)
    analyses = {name: api.open_states(path, check_values=False) for name, path in pairs.items()}
    obs = api.open_obs(args.obs, like=truth) if args.obs else None
    time_index = args.time
    if time_index is not None:
        try:
            time_index = int(time_index)
        except ValueError:
            pass
    result = api.evaluate(truth, analyses, args.out, variables=args.variable, obs=obs, time_index=time_index,
                             overwrite=args.overwrite, spectrum=args.spectrum, quiet=args.quiet)
    head = result["meta"]["headline_variable"]
    print(f"{'method':<16}{'rmse':>11}{'spread_skill':>14}{'crps':>11}{'eff_res_km':>12}   ({head})")
    for name, m in result["methods"].items():
        def f(v):
            return "n/a" if v is None or math.isnan(v) else f"{v:.4g}"
        print(f"{name:<16}{f(m['rmse']):>11}{f(m['spread_skill']):>14}{f(m['crps']):>11}{f(m['effective_resolution_km']):>12}")
    print(f"report: {args.out}/metrics.json, metrics.csv and {len(result['meta']['figures'])} figures")
    return 0
