"""The ``sample-data`` sets: prior library, truth runs, their observations and training pairs.

One builder per testbed (qg, torus, lorenz96). Each writes CF NetCDF through ``oceanda.io`` plus a
README.txt saying how the files were made. Truth runs start from states drawn independently of
the library runs, so no truth state is in the library. Every random draw comes from one
``numpy.random.Generator`` seeded by ``seed``: the same seed gives the same data.

Sizes: ``tiny`` (tests, seconds), ``small`` (under 2 minutes on 2 cores; the bundled set under
``sample_data/``), ``full`` (benchmarks).
QG grids: ``nx`` 64 (the bundled set) or 128, 256, 512 -- the same box on a finer grid, for measuring how
costs scale; smaller sets (:data:`QG_SIZES_FINE`) started from a spun-up state at that grid, cached.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from oceanda import io
from oceanda.errors import OceandaError

TESTBEDS = ("qg", "torus", "lorenz96")
SIZES = ("tiny", "small", "full")
ENV_SAMPLE_DATA = "OCEANDA_SAMPLE_DATA"


def bundled_sample_dir(testbed: str | None = None) -> Path:
    """The repository's ``sample_data/`` (or ``$OCEANDA_SAMPLE_DATA``); with ``testbed``, its sub-folder.

    Parameters
    ----------
    testbed : ``qg``, ``torus`` or ``lorenz96`` (None: the root folder)

    Returns
    -------
    pathlib.Path
    """
    env = os.environ.get(ENV_SAMPLE_DATA)
    root = Path(env) if env else Path(__file__).resolve().parents[1] / "sample_data"
    path = root / testbed if testbed else root
    if not path.is_dir():
        raise OceandaError(
            f"{path}: no bundled sample data here; make it with `oceanda sample-data --testbed {testbed or 'qg'} "
            f"--out {path}` or set {ENV_SAMPLE_DATA} to a folder that holds it"
        )
    return path


# ---------------------------------------------------------------------- QG


@dataclass
class QGSize:
    library_runs: int
    library_days: int
    library_every_days: int
    truth_days: int
    decorrelation_days: int
    n_eval: int = 3  # with the tuning run: QG_TRUTH_RUNS


#: truth runs of a QG sample-data set (tune + 3 evaluation); they start from the last shipped members.
QG_TRUTH_RUNS = 4

QG_SIZES = {
    "tiny": QGSize(library_runs=2, library_days=8, library_every_days=2, truth_days=4, decorrelation_days=2),
    "small": QGSize(library_runs=8, library_days=100, library_every_days=2, truth_days=30, decorrelation_days=120),
    "full": QGSize(library_runs=28, library_days=400, library_every_days=2, truth_days=180, decorrelation_days=120),
}
#: Sizes at ``--nx`` 128-512 (the same at every finer nx, so scaling runs compare like with like). Library and
#: truth runs start from distinct independent members of the cached spun-up state (8 + 4 = SPINUP_MEMBERS at
#: small), so a short free run after the 5 % noise suffices; small: 128 library states, 20-day truths.
QG_SIZES_FINE = {
    "tiny": QGSize(library_runs=2, library_days=4, library_every_days=2, truth_days=2, decorrelation_days=1),
    "small": QGSize(library_runs=8, library_days=30, library_every_days=2, truth_days=20, decorrelation_days=5),
    "full": QGSize(library_runs=8, library_days=200, library_every_days=2, truth_days=60, decorrelation_days=5),
}


def _progress(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def qg_library(model: Any, n_runs: int, run_days: int, rng: np.random.Generator, every_days: int = 2,
               decorrelation_days: float = 120.0, members: Any = None, progress: bool = False) -> xr.Dataset:
    """A free-run library: ``n_runs`` independent runs (batched) concatenated along time, coord ``run``.

    Runs follow one another in time (run r starts ``run_days + every_days`` days after run r-1), so
    ``time`` increases; ``run`` says which run a snapshot belongs to. Use it to extend the bundled
    library (a few seconds per hundred model days on a CPU).

    Parameters
    ----------
    model : a QG model (:mod:`oceanda.testbeds.qg`)
    n_runs : number of runs
    run_days : length of each run (days)
    rng : generator of the initial perturbations
    every_days : days between saved snapshots
    decorrelation_days : free run that decorrelates the initial states (days)
    members : shipped members to start from (default: all but the truth runs')
    progress : show progress

    Returns
    -------
    xarray.Dataset with a ``run`` coordinate along ``time``
    """
    from oceanda.testbeds.qg import perturbed_ensemble, spun_up_state

    if members is None:  # keep clear of the members the sample-data truth runs start from
        members = np.arange(spun_up_state().shape[0] - QG_TRUTH_RUNS)
    q0 = perturbed_ensemble(n_runs, rng, model=model, decorrelation_days=decorrelation_days, members=members,
                            progress=progress)
    traj, days = model.run(q0, run_days, save_every_days=every_days, progress=progress)
    return _concat_runs(model, np.asarray(traj), days, run_days + every_days)


def _concat_runs(model: Any, traj: np.ndarray, days: np.ndarray, stride: float, start_day: float = 0.0,
                 include_q: bool = False) -> xr.Dataset:
    nt, nr = traj.shape[:2]
    q = np.concatenate([traj[:, r] for r in range(nr)], axis=0)
    t = np.concatenate([start_day + r * stride + days for r in range(nr)])
    ds = model.to_dataset(q, t, include_q=include_q)
    return ds.assign_coords(run=("time", np.repeat(np.arange(nr), nt).astype(np.int32)))


def _readme(title: str, command: str, seed: int, size: str, files: dict[str, str], notes: str, seconds: float) -> str:
    lines = [title, "=" * len(title), "", f"Made by: {command}", f"Seed: {seed}    Size: {size}",
             f"oceanda version: {_version()}    wall time: {seconds:.0f} s", "", "Files:"]
    lines += [f"  {name:<26} {desc}" for name, desc in files.items()]
    lines += ["", notes.strip(), ""]
    return "\n".join(lines)


def _version() -> str:
    from oceanda._version import __version__

    return __version__


#: CF clocks for the testbeds with a nondimensional time t: (days per unit of t, how). Lorenz (1996): one
#: time unit is about 5 days (the damping time), dt = 0.05 is 6 hours; the torus flow has no physical
#: time scale, t is written as days.
MODEL_CLOCKS = {
    "lorenz96": (5.0, "Lorenz (1996) scaling: one model time unit = 5 days (dt = 0.05 = 6 h)"),
    "torus": (1.0, "the torus flow is nondimensional: t is written as t days (CF needs a dated clock)"),
}
MODEL_CLOCK_EPOCH = np.datetime64("2000-01-01T00:00:00", "ns")


def dated(ds: xr.Dataset, days_per_unit: float, how: str) -> xr.Dataset:
    """``ds`` with its nondimensional ``time`` as CF dates (``days_per_unit`` days after 2000-01-01 per unit).

    Why: CF (and its checkers) read a variable named ``time`` as "<unit> since <date>"; the model time
    itself is kept as the coordinate ``model_time``.

    Parameters
    ----------
    ds : a Dataset with a float ``time`` (any dims)
    days_per_unit : days per model time unit
    how : the scaling, recorded in ``time``'s comment

    Returns
    -------
    xarray.Dataset
    """
    if "time" not in ds.variables or not np.issubdtype(ds["time"].dtype, np.floating):
        return ds
    t = ds["time"]
    ns = np.round(np.asarray(t.values, float) * days_per_unit * 86400e9).astype("timedelta64[ns]")
    comment = f"{how}; time = {str(MODEL_CLOCK_EPOCH)[:10]} + {days_per_unit:g} days x model_time"
    return ds.assign_coords(
        model_time=(t.dims, t.values, {"long_name": "nondimensional model time t", "units": "1"}),
        time=(t.dims, MODEL_CLOCK_EPOCH + ns, {"standard_name": "time", "comment": comment}))


class _Writer:
    """Writes a set's NetCDF files through ``oceanda.io`` and records {file name: path} in order."""

    def __init__(self, out: Path, overwrite: bool, command: str, clock: tuple[float, str] | None = None) -> None:
        self.out, self.overwrite, self.command, self.clock = out, overwrite, command, clock
        self.written: dict[str, Path] = {}

    def __call__(self, ds: xr.Dataset, name: str) -> None:
        if self.clock is not None:
            ds = dated(ds, *self.clock)
        self.written[name] = io.write_netcdf(ds, self.out / name, overwrite=self.overwrite, command=self.command)

    def readme(self, text: str) -> dict[str, Path]:
        """Write README.txt last; return every file written.

        Parameters
        ----------
        text : the README contents

        Returns
        -------
        dict {file name: path}
        """
        self.written["README.txt"] = io.write_text(text, self.out / "README.txt", overwrite=self.overwrite)
        return self.written


def _qg_runs(model: Any, cfg: QGSize, rng: np.random.Generator, quiet: bool,
             base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Daily states ``[day, run]`` of the library runs then the truth runs (one batch), and their days.

    ``base``: the steady states to start from (default: the shipped 64 x 64 state).
    """
    from oceanda.testbeds.qg import perturbed_ensemble, spun_up_state

    n_truth = QG_TRUTH_RUNS
    what = "the shipped state" if base is None else f"the spun-up {model.nx} x {model.nx} state"
    _progress(f"QG: spinning off {cfg.library_runs} library runs and {n_truth} truth runs from {what}", quiet)
    n_ship = spun_up_state().shape[0] if base is None else base.shape[0]
    # truths start from the last shipped members, the library from the others: independent runs
    lib_members = np.arange(n_ship - n_truth)
    members = np.concatenate([lib_members[np.arange(cfg.library_runs) % lib_members.size],
                              np.arange(n_ship - n_truth, n_ship)])
    q0 = perturbed_ensemble(cfg.library_runs + n_truth, rng, model=model, decorrelation_days=cfg.decorrelation_days,
                            members=members, progress=not quiet, base=base)
    ndays = max(cfg.library_days, cfg.truth_days)
    traj, days = model.run(q0, ndays, save_every_days=1, progress=not quiet)
    return np.asarray(traj), days


def _qg_truths(model: Any, cfg: QGSize, traj: np.ndarray, days: np.ndarray, alt: Any, rng: np.random.Generator,
               write: _Writer) -> dict[str, tuple[xr.Dataset, np.ndarray]]:
    """Write each truth run and its along-track altimetry; return {name: (dataset, states)}."""
    truth_names = ["tune"] + [f"eval_{i + 1}" for i in range(cfg.n_eval)]
    truth_start = cfg.library_runs * (cfg.library_days + cfg.library_every_days) + 365
    truths = {}
    for j, name in enumerate(truth_names):
        tr = traj[: cfg.truth_days + 1, cfg.library_runs + j]
        start = truth_start + j * (cfg.truth_days + 365)
        ds = model.to_dataset(tr, start + days[: cfg.truth_days + 1], include_q=False)
        ds.attrs["title"] = f"QG truth run '{name}' (not in the library)"
        truths[name] = (ds, tr)
        write(ds, f"truth_{name}.nc")
        obs = alt.observe(ds, rng, days=np.arange(ds.sizes["time"]))
        obs.attrs["title"] = f"along-track altimetry of truth_{name}.nc"
        write(obs, f"obs_altimetry_{name}.nc")
    return truths


def _qg_other_obs(model: Any, cfg: QGSize, library: xr.Dataset, truth: tuple[xr.Dataset, np.ndarray],
                  days: np.ndarray, rng: np.random.Generator, write: _Writer) -> None:
    """Gappy SSH, in-situ psi profiles and drifters of one truth run (eval_1)."""
    from oceanda.observe import GappyField, InSituPoints, QGDrifters

    ds1, tr1 = truth
    ssh_std = float(library["ssh"].std())
    gappy = GappyField(var="ssh", sigma=0.1 * ssh_std).observe(ds1, rng)
    write(gappy.assign_attrs(title="gappy (cloud-masked) SSH of truth_eval_1.nc"), "obs_gappy_eval_1.nc")
    psi_std = float(library["psi"].std())
    insitu = InSituPoints(n_profiles=20, var="psi", sigma=0.1 * psi_std).observe(ds1, rng)
    write(insitu.assign_attrs(title="Argo-like psi profiles of truth_eval_1.nc"), "obs_insitu_eval_1.nc")
    dr = QGDrifters(n_drifters=10).observe(model, tr1, days[: cfg.truth_days + 1], rng, ds1["time"].values)
    write(dr.assign_attrs(title="drifter positions advected by truth_eval_1.nc"), "obs_drifters_eval_1.nc")


def _qg_training_obs(model: Any, library: xr.Dataset, alt: Any, rng: np.random.Generator) -> xr.Dataset:
    """Along-track altimetry of every library state: the contrastive training pairs."""
    from oceanda.observe import apply_mask

    masks = alt.sample_mask(library.sizes["time"], rng, model.ny, model.nx, dy=model.dy / 1e3, dx=model.dx / 1e3)
    pair_obs = apply_mask(library["ssh"].values, masks, alt.sigma, rng)
    return xr.Dataset(
        {"ssh": (("time", "y", "x"), pair_obs, dict(library["ssh"].attrs)),
         "ssh_error": ((), np.float32(alt.sigma), {"units": "m"})},
        coords={c: library[c] for c in ("time", "y", "x", "lat", "lon", "run")},
        attrs={"operator": alt.name, "title": "training pairs: along-track altimetry of each library state "
               "(pairs with library.nc by time; random orbit phase and day per snapshot)", **alt._attrs(alt.sigma)},
    )


def _qg_readme(cfg: QGSize, library: xr.Dataset, truth_names: list[str], alt: Any, command: str, seed: int,
               size: str, seconds: float, model: Any = None) -> str:
    files = {
        "library.nc": f"{library.sizes['time']} snapshots (psi, ssh) of {cfg.library_runs} independent runs of "
                      f"{cfg.library_days} days, every {cfg.library_every_days} days; coord 'run'",
        **{f"truth_{n}.nc": f"truth run '{n}', {cfg.truth_days} days, daily (psi, ssh)" for n in truth_names},
        **{f"obs_altimetry_{n}.nc": f"along-track SSH of truth_{n}.nc, 1 obs time per day" for n in truth_names},
        "obs_gappy_eval_1.nc": "cloud-masked gridded SSH of truth_eval_1.nc",
        "obs_insitu_eval_1.nc": "Argo-like psi profiles (both layers, 20 a day) of truth_eval_1.nc",
        "obs_drifters_eval_1.nc": "10 surface drifters (positions, daily) in truth_eval_1.nc's upper-layer flow",
        "train_obs.nc": "altimetry of every library state (pairs with library.nc by time)",
    }
    notes = f"""
Model: oceanda.testbeds.qg.QGModel() -- two-layer QG, pyqg "eddy" configuration, 64 x 64, dt = 2 h,
float32, AB3; box centred at 38N 60W. Initial states: independent members of the shipped spun-up
state (oceanda/testbeds/data/qg_spunup_nx64.npy; the truths start from the last {QG_TRUTH_RUNS}, the library
runs from the others) plus 5 % noise, then a {cfg.decorrelation_days}-day free run (perturbed_ensemble),
all in one batch: no truth state is in the library, nor correlated with one.
Altimetry: AlongTrackAltimetry() (2 satellites x 2 passes = 4 tracks a day, 10-day repeat, day index =
days since the truth start), noise sigma = 10 % of the library SSH std = {alt.sigma:.4g} m.
q is not stored: QGModel().q_from_dataset(ds) recomputes it from psi.
More library: oceanda.sampledata.qg_library(QGModel(), n_runs, run_days, rng) (or --size full).
"""
    if model is not None and model.nx != 64:
        notes = _qg_fine_notes(model, cfg, alt)
    return _readme("oceanda sample data: two-layer QG", command, seed, size, files, notes, seconds)


def _qg_fine_notes(model: Any, cfg: QGSize, alt: Any) -> str:
    """The README notes of a set at nx > 64: its model, where its initial states come from."""
    from oceanda.testbeds.qg import SPINUP_DAYS, SPINUP_MEMBERS

    nx = model.nx
    return f"""
Model: oceanda.testbeds.qg.testbed_model({nx}) -- two-layer QG, pyqg "eddy" configuration, the 64 x 64
set's 1000 km box and physics on {nx} x {nx} (dx = {model.dx / 1e3:.3g} km), dt = {model.dt:g} s (7200 s x 64 / nx:
the Courant number of the 64 x 64 set), float32, AB3; box centred at 38N 60W.
Initial states: the {SPINUP_MEMBERS} independent members of the spun-up state at {nx} x {nx}
(oceanda.testbeds.qg.spun_up_state_nx({nx}): the shipped 64 x 64 members regridded spectrally, spun up
{SPINUP_DAYS[128]} days at 128, then {', '.join(f'{d} days at {n}' for n, d in SPINUP_DAYS.items() if 128 < n <= nx) or 'none finer'};
made on first use, cached under oceanda.io.cache_root()/qg_spinup); the truths start from the last
{QG_TRUTH_RUNS}, the library runs from the others, plus 5 % noise, then a {cfg.decorrelation_days}-day free run.
Altimetry: AlongTrackAltimetry() as at 64 x 64 (4 tracks a day, each one cell wide, so the observed
fraction falls as 1/nx), noise sigma = 10 % of the library SSH std = {alt.sigma:.4g} m.
Models trained on the 64 x 64 set (sample_data/models) refuse these files (grid fingerprint): train on library.nc.
q is not stored: testbed_model({nx}).q_from_dataset(ds) recomputes it from psi (QGModel.from_attrs(ds.attrs) too).
"""


def make_qg(out: Path, seed: int, size: str, overwrite: bool, quiet: bool, command: str, nx: int = 64) -> dict[str, Path]:
    """Write the QG set: library, truth runs, their observations, training pairs, README.txt.

    Parameters
    ----------
    out : Path
        The (prepared) output folder.
    seed : int
        Seed of the one random generator behind every draw.
    size : {"tiny", "small", "full"}
        A key of :data:`QG_SIZES`.
    overwrite : bool
        Replace existing files.
    quiet : bool
        No progress messages.
    command : str
        The command line recorded in the files' history and the README.
    nx : {64, 128, 256, 512}
        Grid size (the same 1000 km box); above 64 the sizes are :data:`QG_SIZES_FINE` and the runs start
        from the spun-up state at ``nx``, made on first use and cached (``testbeds.qg.spun_up_state_nx``).

    Returns
    -------
    dict of str to Path
        Every file written, by name.
    """
    from oceanda.observe import AlongTrackAltimetry
    from oceanda.testbeds.qg import spun_up_state_nx, testbed_model

    cfg = QG_SIZES[size] if nx == 64 else QG_SIZES_FINE[size]
    t0 = time.perf_counter()
    model = testbed_model(nx)
    base = None if nx == 64 else spun_up_state_nx(nx, progress=not quiet)
    rng = np.random.default_rng(seed)
    traj, days = _qg_runs(model, cfg, rng, quiet, base)
    write = _Writer(out, overwrite, command)
    lib_idx = np.arange(0, cfg.library_days + 1, cfg.library_every_days)
    library = _concat_runs(model, traj[lib_idx][:, : cfg.library_runs], days[lib_idx],
                           cfg.library_days + cfg.library_every_days)
    library.attrs["title"] = "QG free-run library (prior sample)"
    write(library, "library.nc")
    alt = AlongTrackAltimetry(sigma=0.1 * float(library["ssh"].std()))
    truths = _qg_truths(model, cfg, traj, days, alt, rng, write)
    _qg_other_obs(model, cfg, library, truths["eval_1"], days, rng, write)
    write(_qg_training_obs(model, library, alt, rng), "train_obs.nc")
    text = _qg_readme(cfg, library, list(truths), alt, command, seed, size, time.perf_counter() - t0, model)
    return write.readme(text)


# ---------------------------------------------------------------------- torus


@dataclass
class TorusSize:
    library: int
    truth: int
    dt: float
    keep_every: int


TORUS_SIZES = {
    "tiny": TorusSize(library=16, truth=4, dt=1e-3, keep_every=1),
    "small": TorusSize(library=1024, truth=64, dt=1e-4, keep_every=1),
    "full": TorusSize(library=32768, truth=1024, dt=1e-5, keep_every=10),
}


def make_torus(out: Path, seed: int, size: str, overwrite: bool, quiet: bool, command: str) -> dict[str, Path]:
    """Write the torus set: flows with their drifter paths (library, tuning, evaluation), two obs files, README.txt.

    Parameters
    ----------
    out, seed, size, overwrite, quiet, command
        As in :func:`make_qg` (``size``: a key of :data:`TORUS_SIZES`).

    Returns
    -------
    dict of str to Path
        Every file written, by name.
    """
    from oceanda.observe import GappyField, InSituPoints
    from oceanda.testbeds.torus import TorusFlow

    cfg = TORUS_SIZES[size]
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    flow = TorusFlow(seed=seed)
    write = _Writer(out, overwrite, command, clock=MODEL_CLOCKS["torus"])

    names = ["library", "truth_tune"] + [f"truth_eval_{i + 1}" for i in range(3)]
    counts = [cfg.library] + [cfg.truth] * 4
    for name, n in zip(names, counts):
        _progress(f"torus: {name}: {n} flows, RK4 drifters dt = {cfg.dt:g}", quiet)
        c = flow.sample_coefficients(n, rng)
        pos, t = flow.drifters(c, dt=cfg.dt, T=0.1, keep_every=cfg.keep_every, progress=not quiet)
        ds = flow.to_dataset(c, pos, t)
        ds.attrs["title"] = f"torus flows: {name}"
        write(ds, f"{name}.nc")
        if name == "truth_eval_1":
            grid = ds[["psi"]].isel(sample=0)
            gappy = GappyField(var="psi", length_km=0.15).observe(grid, rng)
            write(gappy.assign_attrs(title="gappy psi of the first flow of truth_eval_1.nc"), "obs_gappy_eval_1.nc")
            insitu = InSituPoints(n_profiles=20, var="psi").observe(grid, rng)
            write(insitu.assign_attrs(title="point values of psi of the first flow of truth_eval_1.nc"),
                  "obs_insitu_eval_1.nc")
    files = {
        "library.nc": f"{cfg.library} flows: 98 coefficients, gridded psi/u/v (32 x 32, t = 0) and the drifter path",
        "truth_tune.nc": f"{cfg.truth} further flows (tuning)",
        **{f"truth_eval_{i + 1}.nc": f"{cfg.truth} further flows (evaluation)" for i in range(3)},
        "obs_gappy_eval_1.nc": "cloud-masked gridded psi of the first flow of truth_eval_1.nc at t = 0",
        "obs_insitu_eval_1.nc": "20 random point values of psi of that flow",
    }
    notes = f"""
Flows: oceanda.testbeds.torus.TorusFlow(seed={seed}) -- psi = Re sum_k psi_k exp(i omega_k t) e_k(x), 49 modes,
psi_k ~ CN(0, |k|^-4), omega_k ~ N(0, 20^2) fixed by the seed. The drifter observations are in every file
(drifter_x, drifter_y: one drifter from (0.75, 0.75), RK4 dt = {cfg.dt:g} to T = 0.1, every {cfg.keep_every}
step(s) kept): the training pairs are (coefficients, drifter path) of library.nc, as in the paper.
The paper's setting (dt = 1e-5, every 10th position, 32k flows) is --size full.
Time: the nondimensional t of the flows is written as the CF date 2000-01-01 + t days; model_time holds t.
"""
    text = _readme("oceanda sample data: torus flow", command, seed, size, files, notes, time.perf_counter() - t0)
    return write.readme(text)


# ---------------------------------------------------------------------- Lorenz-96


@dataclass
class L96Size:
    library_runs: int
    library_steps: int
    library_every: int
    truth_steps: int


L96_SIZES = {
    "tiny": L96Size(library_runs=2, library_steps=100, library_every=5, truth_steps=40),
    "small": L96Size(library_runs=10, library_steps=2000, library_every=5, truth_steps=1000),
    "full": L96Size(library_runs=50, library_steps=20000, library_every=5, truth_steps=10000),
}


def _l96_library(model: Any, cfg: L96Size, traj: np.ndarray, times: np.ndarray) -> tuple[xr.Dataset, float]:
    """The library runs, subsampled and laid end to end in time (coord ``run``), and the time stride between runs."""
    lib = traj[: cfg.library_steps + 1 : cfg.library_every, : cfg.library_runs]
    lt = times[: cfg.library_steps + 1 : cfg.library_every]
    stride = lt[-1] + model.dt * cfg.library_every
    x = np.concatenate([lib[:, r] for r in range(cfg.library_runs)])
    t = np.concatenate([r * stride + lt for r in range(cfg.library_runs)])
    run = np.repeat(np.arange(cfg.library_runs), len(lt)).astype(np.int32)
    library = model.to_dataset(x, t, as_grid=True).assign_coords(run=("time", run))
    library.attrs["title"] = "Lorenz-96 free-run library"
    return library, stride


def _l96_truths(model: Any, cfg: L96Size, traj: np.ndarray, times: np.ndarray, start: float, sigma: float,
                rng: np.random.Generator, write: _Writer) -> list[str]:
    """Write each truth run, its full noisy observations and (eval_1) the even variables; return the names."""
    names = ["tune"] + [f"eval_{i + 1}" for i in range(3)]
    for j, name in enumerate(names):
        tr = traj[: cfg.truth_steps + 1, cfg.library_runs + j]
        ds = model.to_dataset(tr, start + j * 1000.0 + times[: cfg.truth_steps + 1], as_grid=True)
        ds.attrs["title"] = f"Lorenz-96 truth '{name}' (not in the library)"
        write(ds, f"truth_{name}.nc")
        full = tr + sigma * rng.standard_normal(tr.shape)
        obs = ds.copy()
        obs["X"] = (ds["X"].dims, full[:, None, :], dict(ds["X"].attrs))
        obs["X_error"] = ((), np.float32(sigma), {"units": "1"})
        obs.attrs.update({"operator": "identity", "obs_error_std": sigma, "title": f"every variable of truth_{name} + N(0, 1)"})
        write(obs, f"obs_full_{name}.nc")
        if name == "eval_1":
            half = obs.copy()
            half["X"] = obs["X"].where(xr.DataArray(np.arange(model.n) % 2 == 0, dims="x"))
            half.attrs.update({"operator": "every_other_variable", "title": f"even variables of truth_{name} + N(0, 1)"})
            write(half, f"obs_half_{name}.nc")
    return names


def _l96_readme(cfg: L96Size, library: xr.Dataset, names: list[str], command: str, seed: int, size: str,
                seconds: float) -> str:
    files = {
        "library.nc": f"{library.sizes['time']} states X (time, y=1, x=40) of {cfg.library_runs} runs, every {cfg.library_every} steps",
        **{f"truth_{n}.nc": f"truth '{n}', {cfg.truth_steps} steps of dt = 0.05" for n in names},
        **{f"obs_full_{n}.nc": "every variable, every step, error N(0, 1) (Sakov & Oke 2008 setting)" for n in names},
        "obs_half_eval_1.nc": "even-numbered variables of truth_eval_1 (NaN elsewhere)",
        "train_obs.nc": "noisy copies of every library state (pairs with library.nc by time)",
    }
    notes = """
Model: oceanda.testbeds.lorenz96.Lorenz96(n=40, forcing=8.0, dt=0.05), RK4; initial states F + 0.01 noise
spun up 1000 steps; library and truth runs are different members of one batch.
Time: CF dates, model time t written as 2000-01-01 + 5 days x t (Lorenz 1996: one time unit = 5 days);
the coordinate model_time holds t.
"""
    return _readme("oceanda sample data: Lorenz-96", command, seed, size, files, notes, seconds)


def make_lorenz96(out: Path, seed: int, size: str, overwrite: bool, quiet: bool, command: str) -> dict[str, Path]:
    """Write the Lorenz-96 set: library, truth runs, full and half observations, training pairs, README.txt.

    Parameters
    ----------
    out, seed, size, overwrite, quiet, command
        As in :func:`make_qg` (``size``: a key of :data:`L96_SIZES`).

    Returns
    -------
    dict of str to Path
        Every file written, by name.
    """
    from oceanda.testbeds.lorenz96 import Lorenz96

    cfg = L96_SIZES[size]
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    model = Lorenz96()
    write = _Writer(out, overwrite, command, clock=MODEL_CLOCKS["lorenz96"])
    n_truth = 4
    x0 = model.initial_state(rng, (cfg.library_runs + n_truth,), spinup=1000)
    _progress(f"lorenz96: {cfg.library_runs} library runs of {cfg.library_steps} steps, {n_truth} truths", quiet)
    traj, times = model.run(x0, max(cfg.library_steps, cfg.truth_steps), save_every=1)
    library, stride = _l96_library(model, cfg, traj, times)
    write(library, "library.nc")
    sigma = 1.0
    names = _l96_truths(model, cfg, traj, times, cfg.library_runs * stride + 1000.0, sigma, rng, write)
    train = library.copy()
    train["X"] = library["X"] + sigma * rng.standard_normal(library["X"].shape)
    train["X_error"] = ((), np.float32(sigma), {"units": "1"})
    train.attrs.update({"operator": "identity", "title": "training pairs: noisy copies of library states (pairs by time)"})
    write(train, "train_obs.nc")
    return write.readme(_l96_readme(cfg, library, names, command, seed, size, time.perf_counter() - t0))


BUILDERS: dict[str, Callable[..., dict[str, Path]]] = {"qg": make_qg, "torus": make_torus, "lorenz96": make_lorenz96}


def _check_nx(testbed: str, nx: Any) -> dict[str, int]:
    """``{"nx": nx}`` for a finer QG grid, ``{}`` for the default 64 (so that set is made exactly as before)."""
    from oceanda.errors import ConfigurationError
    from oceanda.testbeds.qg import QG_NX

    if isinstance(nx, bool) or nx not in QG_NX:
        raise ConfigurationError(f"--nx: {nx!r}; expected one of {list(QG_NX)}")
    if nx != 64 and testbed != "qg":
        raise ConfigurationError(f"--nx: {nx} for --testbed {testbed}; expected 64 (other grids exist for qg only)")
    return {} if nx == 64 else {"nx": int(nx)}


def make_sample_data(testbed: str, out: str | os.PathLike, seed: int = 0, size: str = "small", overwrite: bool = False,
                     quiet: bool = False, command: str | None = None, nx: int = 64) -> dict[str, Path]:
    """Write a sample-data set for ``testbed`` into ``out``.

    Parameters
    ----------
    testbed : {"qg", "torus", "lorenz96"}
        Which set.
    out : path
        Output folder (must be empty or absent unless ``overwrite``); built in a temporary folder beside
        it and renamed into place when every file is written (a failure leaves no ``out``).
    seed : int
        Seed of the one random generator: the same seed gives the same data.
    size : {"tiny", "small", "full"}
        How much data.
    overwrite : bool
        Replace an existing ``out`` (one sample-data wrote: it holds README.txt) once the new one is complete.
    quiet : bool
        No progress messages.
    command : str, optional
        The command line to record; default the equivalent ``oceanda sample-data`` call.
    nx : {64, 128, 256, 512}
        QG grid size (qg only): 64 is the bundled set; finer grids keep the box (see :func:`make_qg`).

    Returns
    -------
    dict of str to Path
        Every file written, by name.
    """
    if testbed not in BUILDERS:
        raise OceandaError(f"unknown testbed '{testbed}'; expected one of {list(BUILDERS)}")
    if size not in SIZES:
        raise OceandaError(f"unknown size '{size}'; expected one of {list(SIZES)}")
    from oceanda.settings import SEED_MAX, check_number

    from oceanda import folders

    check_number("seed", seed, lo=0, hi=SEED_MAX, integer=True)  # before the folder is made
    grid = _check_nx(testbed, nx)
    final = Path(out)
    if command is None:
        command = f"oceanda sample-data --testbed {testbed} --out {final} --seed {seed} --size {size}"
        command += f" --nx {nx}" if grid else ""
    with folders.build(final, overwrite, "README.txt", "oceanda sample-data") as tmp:  # all files or none
        written = BUILDERS[testbed](tmp, int(seed), size, overwrite, quiet, command, **grid)
    return folders.moved(written, tmp, folders.final_path(final))
