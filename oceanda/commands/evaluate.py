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

The headline numbers are those of --variable if given, else of the observed variable (the first truth
variable present in every analysis that --obs holds; SSH on the bundled sample), else of a variable
whose standard_name is sea surface height, else of the first; variables with layers are pooled over
layers. Every number is printed with its unit. An effective resolution that is never reached is
reported as "not resolved at any scale up to the domain size" (null in metrics.json, with
effective_resolution_status and effective_resolution_note saying why). An analysis without members is scored
as a Gaussian (with <var>_spread) or as a one-member ensemble (mean only).

Example:
  oceanda evaluate --truth truth.nc --analysis contrastive=a.nc letkf=b.nc --out report"""


def add_arguments(parser) -> None:
    from oceanda.commands import add_units_argument, one_line_errors

    one_line_errors(parser)
    parser.add_argument("--truth", required=True, metavar="TRUTH.nc", help="true states (NetCDF/zarr)")
    parser.add_argument("--analysis", required=True, nargs="+", metavar="NAME=FILE",
                        help="analyses to score, each as NAME=FILE (NAME labels it in the report)")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="output directory")
    parser.add_argument("--obs", metavar="OBS.nc", help="observations, to draw their locations on the maps")
    parser.add_argument("--climatology", nargs="+", metavar="LIBRARY.nc",
                        help="library states: adds the no-skill reference 'climatology' (library mean and spread, "
                             "20 random library members) and every method's RMSE relative to it")
    add_units_argument(parser)
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
    from oceanda.commands import cli_spelling, units_option
    from oceanda.errors import OceandaError

    pairs = _pairs(args.analysis)
    if args.climatology and "climatology" in pairs:
        raise OceandaError("--climatology and an --analysis named 'climatology' both given; expected one of them")
    inputs = [args.truth, *pairs.values(), args.obs, *(args.climatology or [])]
    api.check_outputs(inputs, [], folders=[args.out])  # REPORT_DIR is no input and holds none
    units = units_option(args.units)
    truth = api.open_states(args.truth, variables=args.variable, units=units)
    # values are checked by api.evaluate: Inf or an all-NaN mean refused, an all-NaN member or spread accepted
    # one time (all members) per chunk: the scores stream over time, never a whole ensemble record in memory
    analyses = {name: api.open_states(path, check_values=False, chunks={"time": 1, "member": -1})
                for name, path in pairs.items()}
    obs = api.open_obs(args.obs, like=truth, units=units) if args.obs else None
    library = api.open_states(args.climatology, variables=args.variable, units=units) if args.climatology else None
    api.check_units(units, [truth, obs, library], [args.truth, args.obs, *(args.climatology or [])])
    if library is not None:
        analyses["climatology"] = api.climatology(library, truth.time.values)
    time_index = args.time
    if time_index is not None:
        try:
            time_index = int(time_index)
        except ValueError:
            pass
    with cli_spelling(time="--time"):
        result = api.evaluate(truth, analyses, args.out, variables=args.variable, obs=obs, time_index=time_index,
                              overwrite=args.overwrite, spectrum=args.spectrum, quiet=args.quiet, map_worker=True)
    print(summary(result))
    out = str(args.out).rstrip("/") or "/"
    print(f"report: {out}/metrics.json, metrics.csv and {len(result['meta']['figures'])} figures")
    return 0


GLOSSARY = ("rmse: RMS error of the analysis mean; spread/skill: ensemble spread over RMSE (1 = calibrated, "
            "< 1 overconfident); crps: continuous ranked probability score (lower is better); eff. resolution: "
            "shortest wavelength resolved, where 1 - PSD(error)/PSD(truth) >= 0.5")


def _resolution_cell(m: dict) -> tuple[str, str, str]:
    """The effective-resolution column, its footnote marker and the footnote ("" when the number speaks for itself)."""
    status, km, note = m.get("effective_resolution_status"), m.get("effective_resolution_km"), m.get("effective_resolution_note", "")
    if status == "not_resolved":
        return "not resolved*", "*", note or "not resolved at any scale up to the domain size"
    if status == "resolved_to_grid" and km is not None:
        return f"<= {km:.0f}**", "**", note
    return ("n/a" if km is None or math.isnan(km) else f"{km:.0f}"), "", ""


def summary(result: dict) -> str:
    """The printed table: headline variable and why, numbers with units, footnotes, a one-line glossary."""
    meta = result["meta"]
    head, units = meta["headline_variable"], meta.get("headline_units") or "?"
    lines = [f"headline variable: {head} ({units}), {meta.get('headline_rule', '')}"]
    clim = any("rmse_over_climatology" in m for m in result["methods"].values())
    cols = (f"rmse [{units}]", "spread/skill [1]", f"crps [{units}]", "eff. resolution [km]") + (("rmse/clim",) if clim else ())
    width = [max(len(c) + 2, 14) for c in cols]
    lines.append(f"{'method':<20}" + "".join(f"{c:>{w}}" for c, w in zip(cols, width)))
    notes = {}

    def f(v):
        return "n/a" if v is None or math.isnan(v) else f"{v:.4g}"

    for name, m in result["methods"].items():
        res, marker, note = _resolution_cell(m)
        if marker:
            notes[marker] = note
        vals = (f(m["rmse"]), f(m["spread_skill"]), f(m["crps"]), res) + ((f(m.get("rmse_over_climatology")),) if clim else ())
        lines.append(f"{name:<20}" + "".join(f"{v:>{w}}" for v, w in zip(vals, width)))
    lines += [f"{k} {v}" for k, v in sorted(notes.items())]
    lines.append(GLOSSARY)
    return "\n".join(lines)
