"""`oceanda demo`: the main job, end to end, on the bundled QG altimetry sample.

Given one held-out truth run's daily along-track altimetry, it produces gridded analyses with
uncertainty by every method on the SAME observations and scores them against the truth:

- contrastive sampler, local mode (windows of the library weighted by the learned similarity),
- contrastive sampler, hybrid mode (EnOI-style Kalman update whose background is the local posterior),
- contrastive sampler, global mode (whole-field library weighting: the paper's algorithm, for reference),
- EnOI with a static ensemble drawn from the library,
- a cycled LETKF (QG forecasts between daily analyses, climatological initial ensemble),
- climatology (library mean and spread): the no-skill reference.

Nothing is tuned here: the filter settings come from ``oceanda/kalman/tuned.json`` (tuned on the
tuning truth run) and the encoders from the bundled checkpoints (trained on the library only).
"""

from __future__ import annotations

import sys
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from oceanda import fields, io
from oceanda.errors import OceandaError

#: Bundled checkpoints (relative to ``sample_data/``): a window model (local/hybrid) and a whole-field one (global).
WINDOW_MODEL = Path("models") / "qg_window"
FIELD_MODEL = Path("models") / "qg_field"

#: Fallback LETKF / EnOI settings if tuned.json lacks them (Gaspari-Cohn half-width in km).
DEFAULT_LETKF = {"members": 20, "radius_km": 70.0, "inflation": 1.05, "rtps": 0.0, "block": 2}
DEFAULT_ENOI = {"members": 200, "radius_km": 100.0, "alpha": 1.0}


@dataclass
class DemoResult:
    out_dir: Path
    metrics: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _tuned(name: str, default: dict[str, Any]) -> dict[str, Any]:
    from oceanda.kalman import tuned_settings

    try:
        found = tuned_settings(name)
    except (KeyError, FileNotFoundError):
        return dict(default)
    out = dict(default)
    out.update({k: v for k, v in found.items() if not k.startswith("_") and k != "evaluation"})
    return out


def climatology_analysis(library: xr.Dataset, times: Any, members: int, rng: np.random.Generator) -> xr.Dataset:
    """The no-skill reference: at every time, the library mean, spread and ``members`` random library states."""
    layout = fields.layout_of(library)
    pick = np.sort(rng.choice(library.sizes["time"], size=members, replace=False))
    arr, _ = fields.to_array(library.isel(time=pick), layout, dtype=np.float32)
    ens = np.broadcast_to(arr[None], (len(times), *arr.shape))
    out = fields.analysis_dataset(ens, layout, library, times, attrs={"method": "climatology", "seconds_per_analysis": 0.0})
    full, _ = fields.to_array(library, layout, dtype=np.float64)
    mean = full.mean(axis=0)[None].repeat(len(times), axis=0)
    std = full.std(axis=0, ddof=1)[None].repeat(len(times), axis=0)
    means = fields.from_array(mean.astype(np.float32), layout, library, sample_coord=times, sample_dim="time")
    stds = fields.from_array(std.astype(np.float32), layout, library, sample_coord=times, sample_dim="time")
    for v in layout.variables:
        out[f"{v}_mean"].values[...] = means[v].values
        out[f"{v}_spread"].values[...] = stds[v].values
    return out


def cycled_letkf(
    library: xr.Dataset,
    obs: xr.Dataset,
    *,
    members: int = 20,
    radius_km: float = 70.0,
    inflation: float = 1.05,
    rtps: float = 0.0,
    block: int = 2,
    rng: np.random.Generator | int = 0,
    quiet: bool = True,
) -> xr.Dataset:
    """A cycled LETKF through every time of ``obs`` with QG forecasts between them.

    The initial ensemble is ``members`` library states (a climatological ensemble) forecast to the first
    observation time; the filter state holds every library variable (``psi`` per layer and ``ssh``),
    so SSH observations update psi through the ensemble covariances; forecasts re-derive ssh from psi.
    """
    from oceanda.kalman import FilterSettings, Observations, cycle, localizer_for_dataset
    from oceanda.kalman.obsspace import observations_from_dataset
    from oceanda.testbeds.qg import QGModel

    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    model = QGModel.from_attrs(library.attrs)
    layout = fields.layout_of(library, [v for v in ("psi", "ssh") if v in library])
    if layout.variables[0] != "psi":
        raise OceandaError("cycled LETKF on the QG testbed needs 'psi' in the library")
    ny, nx = library.sizes[layout.spatial[0]], library.sizes[layout.spatial[1]]
    has_ssh = "ssh" in layout.variables
    scale = model.f0 / model.g

    times = obs["time"].values
    days = (times - times[0]) / np.timedelta64(1, "D")
    obs_list = observations_from_dataset(obs, layout, library, variables=[v for v in obs.data_vars if v in layout.variables])
    obs_list = [Observations(o.y, o.error, o.H, o.coords, time=float(d)) for o, d in zip(obs_list, days)]

    pick = np.sort(g.choice(library.sizes["time"], size=members, replace=False))
    X0, _ = fields.to_array(library.isel(time=pick), layout, dtype=np.float64)
    E0 = X0.reshape(members, -1)

    def forecast(E: np.ndarray, t0: float, t1: float) -> np.ndarray:
        X = E.reshape(E.shape[0], layout.n_channels, ny, nx)
        q = np.asarray(model.q_from_psi(X[:, :2]))
        q = np.asarray(model.advance(q, t1 - t0))
        psi = np.asarray(model.psi_from_q(q), dtype=np.float64)
        out = np.concatenate([psi, scale * psi[:, :1]], axis=1) if has_ssh else psi
        return out.reshape(E.shape[0], -1)

    loc = localizer_for_dataset(library, radius_km, block=block, periodic=True)
    settings = FilterSettings("letkf", inflation=inflation, rtps=rtps, localizer=loc)
    # One cycle() call per observation time so that every analysis ensemble is kept for the output.
    ens, seconds = [], []
    E, t_prev = E0, obs_list[0].time - 1.0
    from tqdm.auto import tqdm

    for o in tqdm(obs_list, desc="LETKF cycles", disable=quiet or not sys.stderr.isatty()):
        r = cycle(forecast, E, [o], settings, rng=g, t0=t_prev, progress=False)
        E, t_prev = r.ensemble, o.time
        ens.append(E.copy())
        seconds.append(float(r.stats["seconds_analysis"][0]))
    ensembles = np.stack(ens)
    sec = float(np.mean(seconds))
    members_arr = ensembles.reshape(len(times), members, layout.n_channels, ny, nx)
    return fields.analysis_dataset(
        members_arr.astype(np.float32), layout, library, times,
        attrs={"method": "letkf", "mode": "kalman (cycled)", "seconds_per_analysis": sec, "members": members,
               "loc_radius_km": float(radius_km), "inflation": float(inflation), "rtps": float(rtps)},
    )



def _train_models(sample_dir: Path, model_root: Path, quiet: bool, seed: int) -> tuple[Path, Path]:
    """``--train``: retrain the bundled encoder pairs from the library (same code as the bundled ones)."""
    from oceanda.analysis.window_training import train_bundled_window_model
    from oceanda.pairs import train_bundled_field_model

    window_dir, field_dir = model_root / "qg_window", model_root / "qg_field"
    train_bundled_window_model(sample_dir, window_dir, quiet=quiet, seed=seed)
    train_bundled_field_model(sample_dir, field_dir, quiet=quiet, seed=seed)
    return window_dir, field_dir


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    train: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    seed: int = 0,
    truth: str = "eval_1",
    members: int = 20,
    modes: Sequence[str] = ("local", "hybrid", "global"),
    sample_dir: str | Path | None = None,
    days: int | None = None,
) -> DemoResult:
    """Run the whole chain on the bundled QG sample and write NetCDF analyses plus the evaluation report.

    ``truth`` names the held-out run (``truth_<name>.nc`` / ``obs_altimetry_<name>.nc``); ``days`` keeps only
    its first days (a quick look; tests). Returns the
    metrics (as in ``report/metrics.json``), the files written and the seconds each stage took.
    """
    from oceanda import report
    from oceanda.analysis.assimilate import assimilate
    from oceanda.kalman import analyse_dataset
    from oceanda.sampledata import bundled_sample_dir

    t_start = _time.perf_counter()
    data = Path(sample_dir) if sample_dir is not None else bundled_sample_dir("qg")
    out = io.prepare_output_dir(out_dir, overwrite=overwrite)
    analyses_dir = out / "analyses"
    analyses_dir.mkdir(exist_ok=True)
    res = DemoResult(out_dir=out, metrics={})

    truth_path, obs_path = data / f"truth_{truth}.nc", data / f"obs_altimetry_{truth}.nc"
    library = io.open_states(data / "library.nc").load()
    truth_ds = io.open_states(truth_path).load()
    obs = io.open_obs(obs_path, like=library).load()
    if days is not None:
        truth_ds, obs = truth_ds.isel(time=slice(0, days)), obs.isel(time=slice(0, days))
    _log(f"oceanda demo: library {library.sizes['time']} states, truth {truth_path.name} "
         f"({truth_ds.sizes['time']} days), {int(np.isfinite(obs.ssh.values).sum() / obs.sizes['time'])} SSH obs/day", quiet)

    models_root = data.parent / "models"
    window_model, field_model = models_root / "qg_window", models_root / "qg_field"
    if train:
        tic = _time.perf_counter()
        window_model, field_model = _train_models(data, out / "models", quiet, seed)
        res.seconds["training"] = _time.perf_counter() - tic
    analyses: dict[str, xr.Dataset] = {}

    def save(name: str, ds: xr.Dataset, seconds: float) -> None:
        path = analyses_dir / f"{name}.nc"
        io.write_netcdf(ds, path, overwrite=overwrite)
        res.files[name] = path
        res.seconds[name] = seconds
        analyses[name] = ds
        _log(f"  {name:<22s} {seconds:6.1f} s  -> {path}", quiet)

    for mode in modes:
        model_dir = field_model if mode == "global" else window_model
        if not (Path(model_dir) / io.CHECKPOINT_CONFIG).exists():
            _log(f"  contrastive_{mode}: no model at {model_dir}; skipped", quiet)
            continue
        tic = _time.perf_counter()
        ds = assimilate(model_dir, library, obs, mode=mode, members=members, seed=seed, quiet=quiet,
                        cache_dir=out / "library_cache")
        save(f"contrastive_{mode}", ds, _time.perf_counter() - tic)

    enoi = _tuned("qg_enoi", DEFAULT_ENOI)
    tic = _time.perf_counter()
    ds = analyse_dataset(library, obs, method="enoi", loc_radius_km=enoi["radius_km"], alpha=enoi.get("alpha", 1.0),
                         members=int(enoi.get("members", 200)), periodic=True, rng=seed, keep_members=True)
    ds = _thin_members(ds, members, np.random.default_rng(seed))
    save("enoi", ds, _time.perf_counter() - tic)

    lk = _tuned("qg_altimetry", DEFAULT_LETKF)
    tic = _time.perf_counter()
    ds = cycled_letkf(library, obs, members=int(lk["members"]), radius_km=float(lk["radius_km"]),
                      inflation=float(lk["inflation"]), rtps=float(lk.get("rtps", 0.0)), block=int(lk.get("block", 2)),
                      rng=seed, quiet=quiet)
    save("letkf_cycled", _thin_members(ds, members, np.random.default_rng(seed)), _time.perf_counter() - tic)

    tic = _time.perf_counter()
    save("climatology", climatology_analysis(library, truth_ds.time.values, members, np.random.default_rng(seed)),
         _time.perf_counter() - tic)

    tic = _time.perf_counter()
    res.metrics = report.evaluate(truth_ds, analyses, out / "report", variables=["ssh"], obs=obs, overwrite=overwrite,
                                  quiet=True)
    res.seconds["evaluation"] = _time.perf_counter() - tic
    res.seconds["total"] = _time.perf_counter() - t_start
    io.write_json({"seconds": res.seconds, "files": {k: str(v) for k, v in res.files.items()}, "truth": truth_path.name,
                   "seed": seed, "members": members}, out / "demo.json", overwrite=True)
    return res


def _thin_members(ds: xr.Dataset, members: int, rng: np.random.Generator) -> xr.Dataset:
    """Keep ``members`` random members of a large ensemble (mean and spread stay those of the full one)."""
    if "member" not in ds.dims or ds.sizes["member"] <= members:
        return ds
    keep = np.sort(rng.choice(ds.sizes["member"], size=members, replace=False))
    out = ds.isel(member=keep).assign_coords(member=np.arange(members))
    out.attrs["n_members"] = int(ds.sizes["member"])
    return out


def format_table(metrics: dict[str, Any], seconds: dict[str, float] | None = None) -> str:
    """A plain-text table of the headline metrics, one row per method."""
    cols = [("rmse", "RMSE"), ("crps", "CRPS"), ("spread_skill", "spread/skill"), ("nrmse_score", "1-RMSE/RMS"),
            ("effective_resolution_km", "eff.res km"), ("seconds_per_analysis", "s/analysis")]
    methods = metrics.get("methods", {})
    clim = methods.get("climatology", {}).get("rmse")
    head = f"{'method':<22s}" + "".join(f"{c[1]:>13s}" for c in cols) + (f"{'RMSE/clim':>11s}" if clim else "")
    lines = [head, "-" * len(head)]
    for name, m in methods.items():
        row = f"{name:<22s}"
        for key, _ in cols:
            v = m.get(key)
            row += f"{v:>13.4g}" if isinstance(v, (int, float)) and v is not None else f"{'-':>13s}"
        if clim:
            row += f"{m['rmse'] / clim:>11.3f}" if m.get("rmse") is not None else f"{'-':>11s}"
        lines.append(row)
    return "\n".join(lines)
