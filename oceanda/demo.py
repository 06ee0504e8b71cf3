"""`oceanda demo`: the main job, end to end, on the bundled QG altimetry sample.

Given one held-out truth run's daily along-track altimetry, it produces gridded analyses with
uncertainty by every method on the SAME observations and scores them against the truth:

- contrastive sampler, local mode (windows of the library weighted by the learned similarity),
- contrastive sampler, hybrid mode (EnOI-style Kalman update whose background is the local posterior),
- contrastive sampler, global mode (whole-field library weighting: the paper's algorithm, for reference),
- EnOI with a static ensemble drawn from the library,
- a cycled LETKF (QG forecasts between daily analyses, climatological initial ensemble, settings tuned for its N),
- the same LETKF started from the contrastive hybrid analysis of the first day (``contrastive_cycled``; with
  hybrid covariance where tuning chose it for the ensemble size) and its EnOI-started control (``enoi_cycled``),
- climatology (library mean and spread): the no-skill reference.

Nothing is tuned here: the filter settings come from ``oceanda/kalman/tuned.json`` (tuned on the
tuning truth run) and the encoders from the bundled checkpoints (trained on the library only).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from oceanda import fields, io
from oceanda.experiments.qg_twin import cycled_letkf  # moved there; kept importable from here

#: Bundled checkpoints (relative to ``sample_data/``): a window model (local/hybrid) and a whole-field one (global).
WINDOW_MODEL = Path("models") / "qg_window"
FIELD_MODEL = Path("models") / "qg_field"
#: The demo's analyses are written without compression: 20 members of noise-like float32 fields shrink by only
#: 14 % at zlib level 1 (34 -> 29 MB a file) and write 6x slower (1.06 s against 0.18 s; 7 s of the demo)
DEMO_COMPLEVEL = 0


@dataclass
class DemoResult:
    out_dir: Path
    metrics: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def climatology_analysis(library: xr.Dataset, times: Any, members: int, rng: np.random.Generator) -> xr.Dataset:
    """The no-skill reference: at every time, the library mean, spread and ``members`` random library states.

    Parameters
    ----------
    library : library states (dim ``time``)
    times : analysis times
    members : number of library states drawn as the ensemble
    rng : generator of the draw

    Returns
    -------
    xarray.Dataset: an analysis (members, ``<var>_mean``, ``<var>_spread``)
    """
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


def _train_models(sample_dir: Path, model_root: Path, quiet: bool, seed: int) -> tuple[Path, Path]:
    """``--train``: retrain the bundled encoder pairs from the library (same code as the bundled ones)."""
    from oceanda.analysis.window_training import train_bundled_window_model
    from oceanda.pairs import train_bundled_field_model

    window_dir, field_dir = model_root / "qg_window", model_root / "qg_field"
    train_bundled_window_model(sample_dir, window_dir, quiet=quiet, seed=seed)
    train_bundled_field_model(sample_dir, field_dir, quiet=quiet, seed=seed)
    return window_dir, field_dir


@dataclass
class _Inputs:
    """What every method of the demo analyses: the library, the truth run and its observations."""

    library: xr.Dataset
    truth: xr.Dataset
    obs: xr.Dataset
    truth_path: Path


def _read_inputs(data: Path, truth: str, days: int | None, quiet: bool) -> _Inputs:
    truth_path, obs_path = data / f"truth_{truth}.nc", data / f"obs_altimetry_{truth}.nc"
    library = io.open_states(data / "library.nc").load()
    truth_ds = io.open_states(truth_path).load()
    obs = io.open_obs(obs_path, like=library).load()
    if days is not None:
        truth_ds, obs = truth_ds.isel(time=slice(0, days)), obs.isel(time=slice(0, days))
    _log(f"oceanda demo: library {library.sizes['time']} states, truth {truth_path.name} "
         f"({truth_ds.sizes['time']} days), {int(np.isfinite(obs.ssh.values).sum() / obs.sizes['time'])} SSH obs/day", quiet)
    return _Inputs(library, truth_ds, obs, truth_path)


class _Cancelled(Exception):
    """The demo failed or was interrupted in the other stage thread: this one stops."""


class _Saver:
    """Writes each analysis to OUT/analyses/<name>.nc and keeps it for the report."""

    def __init__(self, res: DemoResult, overwrite: bool, quiet: bool):
        self.res, self.overwrite, self.quiet = res, overwrite, quiet
        self.dir = io.make_dir(res.out_dir / "analyses")
        self.analyses: dict[str, xr.Dataset] = {}
        self._lock = threading.Lock()  # the two stage threads save into the same dicts
        self._write_lock = threading.Lock()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        """Make the other stage thread stop at its next stage (:meth:`check`); returns once no write is running."""
        self._cancel.set()
        with self._write_lock:
            pass

    def check(self) -> None:
        """Raise :class:`_Cancelled` once :meth:`cancel` was called."""
        if self._cancel.is_set():
            raise _Cancelled

    def __call__(self, name: str, ds: xr.Dataset, seconds: float) -> None:
        path = self.dir / f"{name}.nc"
        with self._write_lock:  # one NetCDF write at a time (the HDF5 library is not thread-safe)
            self.check()  # after cancel() returns, no write starts
            io.write_netcdf(ds, path, overwrite=self.overwrite, complevel=DEMO_COMPLEVEL)
        with self._lock:
            self.res.files[name] = path
            self.res.seconds[name] = seconds
            self.analyses[name] = ds
            _log(f"  {name:<22s} {seconds:6.1f} s  -> {path.relative_to(self.res.out_dir)}", self.quiet)  # OUT/...

    def in_order(self, names: Sequence[str]) -> dict[str, xr.Dataset]:
        """The saved analyses in the table's order (the threads finish in any order), any others after them."""
        first = {n: self.analyses[n] for n in names if n in self.analyses}
        return {**first, **{n: ds for n, ds in self.analyses.items() if n not in first}}


def _contrastive(inp: _Inputs, save: _Saver, models: tuple[Path, Path], modes: Sequence[str], members: int,
                 seed: int, quiet: bool) -> None:
    from oceanda.analysis.assimilate import assimilate

    window_model, field_model = models
    both = "local" in modes and "hybrid" in modes  # the hybrid run yields the local analyses too (its backgrounds)
    for mode in modes:
        model_dir = field_model if mode == "global" else window_model
        if not (Path(model_dir) / io.CHECKPOINT_CONFIG).exists():
            _log(f"  contrastive_{mode}: no model at {model_dir}; skipped", quiet)
            continue
        if both and mode in ("local", "hybrid"):
            if mode == "local":
                continue  # saved with the hybrid, before it
            tic = _time.perf_counter()
            ds, local = assimilate(model_dir, inp.library, inp.obs, mode="hybrid", members=members, seed=seed,
                                   quiet=quiet, cache_dir=save.res.out_dir / "library_cache", with_local=True)
            seconds = _time.perf_counter() - tic
            share = local.attrs["seconds_per_analysis"] / max(ds.attrs["seconds_per_analysis"], 1e-12)
            save("contrastive_local", local, seconds * share)
            save("contrastive_hybrid", ds, seconds * (1.0 - share))
            continue
        tic = _time.perf_counter()
        ds = assimilate(model_dir, inp.library, inp.obs, mode=mode, members=members, seed=seed, quiet=quiet,
                        cache_dir=save.res.out_dir / "library_cache")
        save(f"contrastive_{mode}", ds, _time.perf_counter() - tic)


def _baselines(inp: _Inputs, save: _Saver, members: int, seed: int) -> None:
    """EnOI and the cycled LETKF at their tuned settings (tuned.json), the EnOI-started control, then climatology."""
    from oceanda.kalman import analyse_dataset, tuned_filter

    tic = _time.perf_counter()
    f = tuned_filter("qg_enoi")
    ds = analyse_dataset(inp.library, inp.obs, f, periodic=True, rng=seed, keep_members=True,
                         write_members=lambda n: _thinned(n, members, np.random.default_rng(seed)))
    save("enoi", ds, _time.perf_counter() - tic)
    tic = _time.perf_counter()
    ds = cycled_letkf(inp.library, inp.obs, rng=seed, quiet=True)  # a bar of its own would cut into the contrastive ones
    save("letkf_cycled", _thin_members(ds, members, np.random.default_rng(seed)), _time.perf_counter() - tic)
    save.check()
    _cycled(inp, save, "enoi_cycled", "enoi", None, members, seed)
    save.check()
    tic = _time.perf_counter()
    clim = climatology_analysis(inp.library, inp.truth.time.values, members, np.random.default_rng(seed))
    save("climatology", clim, _time.perf_counter() - tic)


def _cycled(inp: _Inputs, save: _Saver, name: str, initial: str, oneshot: xr.Dataset | None, members: int,
            seed: int) -> None:
    """A cycled LETKF with the same observations, forecasts and draws as ``letkf_cycled``, started from
    ``initial``: ``'contrastive'`` (the hybrid analysis ``oneshot``; hybrid covariance as tuned for N) or
    ``'enoi'`` (the control)."""
    from oceanda.experiments import qg_cycle

    setup = qg_cycle.Setup.of(inp.library, inp.obs)
    tic = _time.perf_counter()
    choice = qg_cycle.tuned_choice(members, initial)
    analyses, facts = qg_cycle.run_cycle(setup, choice, oneshot=None if oneshot is None else setup.states(oneshot),
                                         seed=seed)
    save(name, qg_cycle.cycle_dataset(setup, analyses, facts), _time.perf_counter() - tic)


def _contrastive_cycled(inp: _Inputs, save: _Saver, members: int, seed: int) -> None:
    """The cycled LETKF started from the contrastive hybrid analysis (none without one)."""
    hybrid = save.analyses.get("contrastive_hybrid")
    if hybrid is not None and "member" in hybrid.dims:
        _cycled(inp, save, "contrastive_cycled", "contrastive", hybrid, members, seed)


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
    map_worker: bool = False,
) -> DemoResult:
    """Run the whole chain on the bundled QG sample and write NetCDF analyses plus the evaluation report.

    Parameters
    ----------
    out_dir : output directory (analyses/, report/, demo.json); built in a temporary folder beside it and
        renamed into place at the end (a failure or Ctrl-C leaves no ``out_dir``, or the old one as it was)
    train : retrain the bundled encoder pairs instead of loading them
    overwrite : replace an existing ``out_dir`` (one a demo wrote: it holds demo.json) once the new one is complete
    quiet : no progress output
    seed : seed of every random draw
    truth : the held-out run (``truth_<name>.nc`` / ``obs_altimetry_<name>.nc``)
    members : analysis members written per method
    modes : contrastive modes to run
    sample_dir : the sample data (default: the bundled one)
    days : keep only the first days (a quick look; tests)
    map_worker : draw half the report's maps in a second process (``report.evaluate(map_worker=True)``): the CLI
        sets it; a script that sets it needs an ``if __name__ == "__main__":`` guard (the process imports it)

    Returns
    -------
    DemoResult: the metrics (as in ``report/metrics.json``), the files written, the seconds of each stage
    """
    from oceanda import folders
    from oceanda.sampledata import bundled_sample_dir

    t_start = _time.perf_counter()
    data = Path(sample_dir) if sample_dir is not None else bundled_sample_dir("qg")
    with folders.build(out_dir, overwrite, "demo.json", "oceanda demo") as tmp:  # OUT appears only complete
        res = DemoResult(out_dir=tmp, metrics={})
        _run_stages(res, data, train, overwrite, quiet, seed, truth, members, modes, days, map_worker)
        res.seconds["total"] = _time.perf_counter() - t_start
        final = folders.final_path(out_dir)
        res.out_dir, res.files = final, folders.moved(res.files, tmp, final)
        io.write_json({"seconds": res.seconds, "files": {k: str(v) for k, v in res.files.items()},
                       "truth": f"truth_{truth}.nc", "seed": seed, "members": members}, tmp / "demo.json",
                      overwrite=True)  # last: the mark of a finished demo folder (--overwrite replaces only those)
    return res


def _run_stages(res: DemoResult, data: Path, train: bool, overwrite: bool, quiet: bool, seed: int, truth: str,
                members: int, modes: Sequence[str], days: int | None, map_worker: bool = False) -> None:
    """Every stage of :func:`run_demo`, written into ``res.out_dir`` (the temporary folder)."""
    from oceanda import report

    inp = _read_inputs(data, truth, days, quiet)
    models = (data.parent / WINDOW_MODEL, data.parent / FIELD_MODEL)
    if train:
        tic = _time.perf_counter()
        models = _train_models(data, res.out_dir / "models", quiet, seed)
        res.seconds["training"] = _time.perf_counter() - tic
    save = _Saver(res, overwrite, quiet)
    with _two_stage_threads():
        baselines = _StageThread(_baselines, save, inp, save, members, seed)
        try:
            _contrastive(inp, save, models, modes, members, seed, quiet)
            _contrastive_cycled(inp, save, members, seed)
        except BaseException as exc:  # a failure or Ctrl-C: the baselines stop at their next stage, before the folder goes
            save.cancel()
            baselines.join()
            if isinstance(exc, _Cancelled) and baselines.error is not None:  # cancelled by the baselines' failure
                raise baselines.error from None
            raise
        baselines.join(reraise=True)  # its error, if any, surfaces here
    tic = _time.perf_counter()
    order = [f"contrastive_{m}" for m in modes] + ["enoi", "letkf_cycled", "contrastive_cycled", "enoi_cycled",
                                                   "climatology"]
    res.metrics = report.evaluate(inp.truth, save.in_order(order), res.out_dir / "report", variables=["ssh"],
                                  obs=inp.obs, overwrite=overwrite, quiet=True, map_worker=map_worker)
    res.seconds["evaluation"] = _time.perf_counter() - tic


class _StageThread:
    """``fn(*args)`` in a daemon thread; a failure there cancels ``save`` (the main thread's stages stop at their
    next save) and is raised again by :meth:`join`.

    Why not a ThreadPoolExecutor: its threads are joined at interpreter exit, so a second Ctrl-C could not end
    the process before the stage did.
    """

    def __init__(self, fn: Any, save: _Saver, *args: Any):
        self.error: BaseException | None = None
        self._save = save
        self._thread = threading.Thread(target=self._run, args=(fn, *args), name="oceanda-demo-baselines", daemon=True)
        self._thread.start()

    def _run(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except _Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to join
            self.error = exc
            self._save.cancel()

    def join(self, reraise: bool = False) -> None:
        """Wait for the stage (in short waits, so Ctrl-C is seen); with ``reraise`` raise its error."""
        while self._thread.is_alive():
            self._thread.join(0.2)
        if reraise and self.error is not None:
            raise self.error


@contextlib.contextmanager
def _two_stage_threads():
    """The Kalman baselines run in a thread beside the contrastive analyses, each on one core.

    Why half the cores each (BLAS threads, dask workers): on 2 cores the two stage threads already fill the
    machine; BLAS's own threads on top spin against each other (the demo's EnOI took 35 s instead of 11 beside
    the contrastive analyses).
    """
    import dask
    from threadpoolctl import threadpool_limits

    from oceanda.threads import physical_cores

    half = max(1, physical_cores() // 2)  # each stage thread: half the cores (one each on the 2-core laptop)
    with threadpool_limits(limits=half), dask.config.set(num_workers=half):
        yield


def _thinned(n: int, members: int, rng: np.random.Generator) -> np.ndarray | None:
    """Which ``members`` random members of an ensemble of ``n`` are written (None: all)."""
    return None if n <= members else np.sort(rng.choice(n, size=members, replace=False))


def _thin_members(ds: xr.Dataset, members: int, rng: np.random.Generator) -> xr.Dataset:
    """Keep ``members`` random members of a large ensemble (mean and spread stay those of the full one)."""
    keep = _thinned(ds.sizes["member"], members, rng) if "member" in ds.dims else None
    if keep is None:
        return ds
    out = ds.isel(member=keep).assign_coords(member=np.arange(members))
    out.attrs["n_members"] = int(ds.sizes["member"])
    return out


def format_table(metrics: dict[str, Any], seconds: dict[str, float] | None = None) -> str:
    """A plain-text table of the headline metrics, one row per method.

    Parameters
    ----------
    metrics : the demo's metrics (``{"methods": {name: {...}}}``)
    seconds : not used (timings come from ``metrics``)

    Returns
    -------
    str
    """
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
    if any(m.get("effective_resolution_status") == "not_resolved" for m in methods.values()):
        lines.append("eff.res km '-': not resolved at any scale up to the domain size")
    return "\n".join(lines)
