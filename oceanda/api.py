"""The front door: what the CLI verbs and the notebooks call. Dataset in, Dataset out.

Why a module of its own: each function here is a thin composition of the modules below (io, the
sampler, kalman, report), so a user learns one page and the verbs hold no logic. Heavy imports (torch,
dask) happen inside the functions, so ``import oceanda`` and ``oceanda --help`` stay light.

=====================  ==============================================================
``open_states``        a validated, lazy Dataset of gridded states (NetCDF/zarr, globs)
``open_obs``           observations (gridded with NaN, or points), checked against a grid
``observe_states``     synthetic observations of states on any grid (an OSSE): tracks, clouds, points, profiles
``open_library``       a :class:`~oceanda.analysis.Library` of prior states for the sampler
``load_model``         a trained encoder pair from a checkpoint directory
``train``              train a window (local/hybrid) or whole-field encoder pair; write its checkpoint
``assimilate``         contrastive analyses (global, local, hybrid) of every observation time
``analyse``            ensemble Kalman analyses (EnKF, ETKF, LETKF, EnOI) of every observation time
``cycle``              a forecast-analysis cycle for any model ``forecast(E, t0, t1)``
``cycle_testbed``      a cycled filter through a testbed's files (QG, Lorenz-96): contrastive warm start, hybrid covariance
``run_twin``           a cycled twin experiment on a bundled testbed (Lorenz-96, QG altimetry)
``climatology``        the no-skill reference analysis (library mean, spread, random members)
``evaluate``           score analyses against a truth; metrics.json, metrics.csv, figures
``write``              atomic CF-1.8 NetCDF (never over an input, never over a file without overwrite)
``check_outputs``      before any work: no output is (or holds, or lies in) an input; none exists unless overwrite
``check_cache_dir``    an embedding cache folder may sit in the model folder, never on an input
``check_units``        ``units={VAR: UNITS}`` naming no variable of the inputs is refused (not ignored)
``sample_data``        write a testbed's sample data set
``demo``               the whole chain on the bundled QG sample
``reproduce``          a published experiment (``baptista2025``)
=====================  ==============================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from oceanda import io
from oceanda.errors import ConfigurationError, OceandaError
from oceanda.settings import SEED_MAX, check_number

PathLike = str | os.PathLike
Paths = PathLike | Sequence[PathLike]


def open_states(paths: Paths, *, variables: Sequence[str] | None = None, check_values: bool = True,
                units: Mapping[str, str] | None = None, **kwargs: Any) -> xr.Dataset:
    """Open gridded states lazily in the canonical layout (any CF producer's axes) and validate them.

    Parameters
    ----------
    paths : file(s) or glob(s), NetCDF or zarr; several are joined along time
    variables : data variables to keep (default: all)
    check_values : refuse Inf / all-NaN variables (False for analyses to score)
    units : {variable: units} where the files have none (CLI ``--units VAR=UNITS``)
    **kwargs : passed to :func:`oceanda.io.open_states` (``chunks``, ``engine``)

    Returns
    -------
    xarray.Dataset
    """
    return io.open_states(paths, variables=variables, check_values=check_values, units=units, **kwargs)


def open_obs(paths: Paths, *, like: xr.Dataset | None = None, variables: Sequence[str] | None = None,
             units: Mapping[str, str] | None = None, superob: bool = True, representativeness: float | None = None,
             **kwargs: Any) -> xr.Dataset:
    """Open observations (gridded with NaN where unobserved, or points along ``obs``, L3 along-track included).

    Point observations of state variables opened with a gridded ``like`` come back superobbed onto its grid
    (:func:`oceanda.superob.superob`: cell means, error sqrt(sigma^2/n + r^2), dropped points counted in the
    attributes), so every verb accepts L3 point files; ``superob=False`` returns the raw points.

    Parameters
    ----------
    paths : file(s) or glob(s)
    like : the states the observations must match: grid checked, names matched, units converted (cf-units)
    variables : observed variables to keep (default: all)
    units : {variable: units} where the files have none (CLI ``--units VAR=UNITS``)
    superob : map point observations onto ``like``'s grid (default True)
    representativeness : the superobs' representativeness error r (default: estimated from the points)
    **kwargs : passed to :func:`oceanda.io.open_obs`

    Returns
    -------
    xarray.Dataset with ``<var>_error`` for every observed variable
    """
    obs = io.open_obs(paths, like=like, variables=variables, units=units, **kwargs)
    if not superob or like is None:
        return obs
    from oceanda.superob import to_grid

    return to_grid(obs, like, representativeness=representativeness)


def observe_states(states: xr.Dataset, operator: str, *, sigma: float | None = None, sigma_fraction: float | None = None,
                   seed: int = 0, **options: Any) -> xr.Dataset:
    """Synthetic observations of ``states`` on any grid (an OSSE): altimetry, gappy, points or profiles.

    Parameters
    ----------
    states : gridded states (y/x km, lat/lon, curvilinear; land as NaN)
    operator : ``altimetry`` (gridded along-track), ``gappy`` (cloud-masked), ``points`` (L3 along-track
        points) or ``profiles`` (Argo-like, every level)
    sigma : noise standard deviation in the variable's units (default: ``sigma_fraction`` x its std)
    sigma_fraction : noise as a fraction of the field's standard deviation (default 0.1)
    seed : seed of the random generator (patterns, positions, noise)
    **options : ``variables``, ``track_spacing_km``, ``track_width_km``, ``along_track_km``, ``repeat_days``,
        ``n_satellites``, ``passes_per_day``, ``angle_deg``, ``cloud_fraction``, ``cloud_size_km``,
        ``profiles_per_day``, ``layer``, ``periodic`` (see :func:`oceanda.observe.observe_states`)

    Returns
    -------
    xarray.Dataset: gridded observations, or points along ``obs`` (the canonical layouts)
    """
    from oceanda.observe import observe_states

    _check_seed("seed", seed)
    return observe_states(states, operator, sigma=sigma, sigma_fraction=sigma_fraction, seed=seed, **options)


def open_library(paths: Paths, *, variables: Sequence[str] | None = None, units: Mapping[str, str] | None = None) -> Any:
    """A library of prior states for the contrastive sampler (lazy; scattered reads without dask).

    Parameters
    ----------
    paths : file(s) or glob(s)
    variables : state variables (default: all)
    units : {variable: units} where the files have none (CLI ``--units VAR=UNITS``)

    Returns
    -------
    oceanda.analysis.Library
    """
    from oceanda.analysis.library import Library

    return Library.open(paths, variables=variables, units=units)


def load_model(model_dir: PathLike) -> Any:
    """A trained encoder pair: ``(ContrastiveModel, EncoderPair)`` from ``model_dir``.

    Parameters
    ----------
    model_dir : directory with ``model.safetensors`` and ``config.json``

    Returns
    -------
    tuple of the model and its numpy-facing encoder pair
    """
    from oceanda.analysis.assimilate import load_model as _load

    return _load(model_dir)


def train(states: xr.Dataset, obs: xr.Dataset, out: PathLike, **settings: Any) -> Any:
    """Train a window (local/hybrid) or whole-field (global) encoder pair on ``states`` observed like ``obs``.

    Parameters
    ----------
    states : training states (validation: the last times / runs, never trained on)
    obs : observations whose patterns (operator or masks) and errors are applied to the states
        (point observations are superobbed onto the states' grid first)
    out : checkpoint directory (``model.safetensors``, ``config.json``, ``history.json``); it appears only
        complete (built in a temporary folder beside it), an interrupted run's resumable state is kept in
        ``.OUT.resume`` beside it (:func:`oceanda.training.resume_dir`)
    **settings : ``kind`` (``window`` | ``field``; default window for grids larger than a window),
        ``obs_days``, ``periodic``, ``log``, and the settings of :func:`oceanda.pairs.train_field_model`
        (``similarity``, ``loss``, ``encoder``, ``embedding_dim``, ``epochs``, ``batch_size``, ``lr``,
        ``seconds``, ``seed``, ``resume``, ``overwrite``, ...) or of
        :func:`oceanda.analysis.window_training.train_window_model_from_obs` (``size``, ``stride``, ``halo``, ...);
        ``tune_states``/``tune_obs`` (a tuning truth and its observations) or ``calibrate=True`` (a held-out
        part of ``states``) calibrate a window model's spread and hybrid settings after training;
        ``patterns`` (window models: ``"all"``, a list of families, a dict of
        :class:`~oceanda.analysis.obs_patterns.PatternMix` fields or a PatternMix) trains one model for any
        observation set on that mixture of patterns and noise levels (``obs`` then names the observed variables)

    Returns
    -------
    ``(ContrastiveModel, TrainResult)``; ``TrainResult.health`` is the validation R@1/R@5 next to chance
    """
    import torch

    from oceanda.pairs import FIELD_TRAINING
    from oceanda.training import train_and_calibrate

    seed = settings.get("seed", FIELD_TRAINING.seed)
    _check_seed("seed", seed)  # torch.manual_seed takes more than a model's settings do
    with torch.random.fork_rng(devices=[]):  # encoder initialisation from the seed; the caller's RNG is untouched
        torch.manual_seed(seed)
        return train_and_calibrate(states, obs, out, **settings)



def assimilate(model: Any, library: Any, obs: xr.Dataset, **settings: Any) -> Any:
    """Contrastive analyses of every time of ``obs``: weight the library by softmax(similarity / tau).

    Parameters
    ----------
    model : a model directory or a ``(ContrastiveModel, EncoderPair)`` from :func:`load_model`
    library : a Library (:func:`open_library`), a Dataset of states, or file path(s)
    obs : gridded observations (NaN where unobserved), or a list of observation Datasets / files: one
        analysis Dataset each (as if analysed one by one), all in one run with the sampler prepared once
    **settings : ``mode`` (global, local, hybrid; default by model), ``members``, ``seed``, ``tau``,
        ``spread_factor``, ``min_ess``, ``tempering``, ``hybrid``, ``obs_window`` (the hybrid's Kalman step: days of
        observations per analysis), ``cache_dir``, ``scheduler`` (a
        dask.distributed address, ``local:N`` for N local worker processes, or a Client: results identical
        to the local run), ``quiet``, ... (see :func:`oceanda.analysis.assimilate.assimilate`)

    Returns
    -------
    xarray.Dataset: ``<var>_mean``, ``<var>_spread``, ensemble ``<var>`` (``member``), ``ess``, attributes;
    a list of them for a list ``obs``; with ``with_local=True`` (mode hybrid) the pair ``(hybrid, local)`` of those
    """
    from oceanda.analysis.assimilate import assimilate as _assimilate

    if isinstance(library, (str, os.PathLike, list, tuple)):
        library = open_library(library)
    from oceanda.superob import to_grid

    if settings.get("seed") is not None:  # None: fresh streams
        _check_seed("seed", settings["seed"])
    if settings.get("scheduler"):
        _check_scheduler(settings["scheduler"])
    like = getattr(library, "ds", library)
    many = isinstance(obs, (list, tuple))  # several files (or Datasets): one analysis Dataset each, one run
    gridded = [to_grid(open_obs(o, like=like) if isinstance(o, (str, os.PathLike)) else o, like)
               for o in (obs if many else [obs])]
    for g in gridded:
        _check_members_memory(settings.get("members"), like, g)
    _check_top_k(settings.get("top_k"), like)
    out = _assimilate(model, library, gridded if many else gridded[0], **settings)
    parts = out if settings.get("with_local") else (out,)  # with_local: (hybrid, local), each a Dataset or a list
    for part in parts:
        for o, g in zip(part if many else [part], gridded):  # superobbed points: used/dropped counts, as enkf records
            o.attrs.update({k: v for k, v in g.attrs.items() if str(k).startswith("superob_")})
    return out


def analyse(ensemble: xr.Dataset, obs: xr.Dataset, method: str = "letkf", **settings: Any) -> xr.Dataset:
    """Ensemble Kalman analyses of every time of ``obs`` (EnKF, ETKF, LETKF or EnOI).

    Point observations at arbitrary positions (L3 along-track, profiles) are used as they are, through
    the exact sparse bilinear operator of :func:`oceanda.kalman.obsspace.point_operator` (not superobbed:
    a cell mean of points is not the cell value the state holds); each point goes to its analysis time by
    the superobbing time rule (:mod:`oceanda.superob`), and the attributes record how (``observation_operator``,
    ``points_used``, ``points_dropped_*``, ``points_time_rule``).

    Parameters
    ----------
    ensemble : forecast ensemble (dim ``member``) or a library along ``time`` (a static ensemble)
    obs : gridded or point observations
    method : ``enkf``, ``etkf``, ``letkf`` or ``enoi``
    **settings : ``loc_radius_km``, ``taper``, ``inflation``, ``rtps``, ``rtpp``, ``alpha``, ``members``,
        ``block``, ``periodic``, ``rng``, ``obs_window`` (days of observations per analysis: the days before it too,
        errors grown with age), ``obs_age_growth``, ``out`` (write to this file time by time, one time's ensemble in
        memory; returns it opened lazily), ``overwrite``, ``command``, ... (see :func:`oceanda.kalman.analyse_dataset`)

    Returns
    -------
    xarray.Dataset in the layout of :func:`assimilate`
    """
    from oceanda.kalman import analyse_dataset
    from oceanda.superob import points_at_times

    _check_analyse(ensemble, method, settings)
    points, timing = points_at_times(obs, ensemble)
    if points is None:
        return analyse_dataset(ensemble, obs, method, **settings)
    # the time rule goes into the attributes when the result is made: a file streamed to ``out`` holds it too
    return analyse_dataset(ensemble, points, method, **{**settings, "attrs": {**(settings.get("attrs") or {}), **timing}})


def cycle(forecast: Callable[..., Any], initial: Any, observations: Sequence[Any], filter: Any, **kwargs: Any) -> Any:
    """Forecast-analysis cycling for any model: ``forecast(E, t0, t1) -> E`` is all that is known of it.

    Parameters
    ----------
    forecast : advances an ensemble ``E [N, n]`` from ``t0`` to ``t1``
    initial : the initial ensemble ``[N, n]``
    observations : one :class:`oceanda.kalman.Observations` per cycle
    filter : a cycling method: ``oceanda.kalman.make_filter('letkf', inflation=1.03)``, ``EnKF()``, ...
    **kwargs : ``localizer``, ``adaptive``, ``rng``, ``t0``, ``truth``, ``checkpoint_dir``, ``checkpoint_every``,
        ``resume``, ``progress``, ``keep_means``, ``keep_ensembles``; hybrid covariance: ``extra`` (a callback
        ``extra(k, E_f) -> [M, n]``: members for cycle ``k``, e.g. contrastive posterior members or library
        states) and ``hybrid_beta`` (the analysis uses ``(1 - beta) P_f + beta P_extra``; 0, the default, is
        the plain filter bit for bit)

    Returns
    -------
    oceanda.kalman.CycleResult (per-cycle RMSE and spread; ``to_dataset()``)
    """
    from oceanda.kalman import cycle as _cycle

    return _cycle(forecast, initial, observations, filter, **kwargs)


def cycle_testbed(testbed: str, library: Any, obs: Any, *, truth: Any = None, model: Any = None, method: str = "letkf",
                  initial: str = "climatology", hybrid_beta: float = 0.0, extra: str | None = None,
                  members: int | None = None, seed: int = 0, quiet: bool = True, cache_dir: PathLike | None = None,
                  warm_draw: str = "matched") -> xr.Dataset:
    """A cycled filter through the observation files of a bundled testbed (``oceanda cycle``).

    QG: QG forecasts between the (daily) analyses of the state psi (+ ssh); the LETKF's radius and
    inflation are those tuned for the ensemble size in use (``tuned.json``). Lorenz-96: RK4 forecasts
    between the observation times, ring-localised LETKF / ETKF (``tuned.json`` ``lorenz96``).

    Parameters
    ----------
    testbed : ``qg`` or ``lorenz96``
    library : library states (file(s) or a Dataset): the climatological initial ensemble, EnOI's static
        ensemble, the hybrid covariance's library members, the climatology scored against
    obs : observations on the library's grid (file(s) or a Dataset; NaN where unobserved; points are superobbed)
    truth : true states at the observation times (file(s) or a Dataset): adds ``<var>_rmse``,
        ``<var>_spread_rms`` and ``<var>_rmse_climatology`` per time and the summary attributes
    model : a window model folder (QG): needed by ``initial='contrastive'`` and by contrastive hybrid members
    method : ``letkf`` or ``etkf``
    initial : ``climatology`` (library states forecast to the first time), ``enoi`` (members of the EnOI
        analysis of the first observations) or ``contrastive`` (members drawn from the one-shot
        contrastive hybrid analysis of the first observations; QG only)
    hybrid_beta : weight of the extra members' covariance in every analysis, ``(1 - beta) P_f + beta P_extra``
        (0 = the plain filter, bit for bit; below 1)
    extra : the extra members: ``contrastive`` (posterior members of the same observations) or ``library``
        (static library states); None = contrastive with a model, library without
    members : ensemble size (None = the tuned default, 20)
    seed : seed of the initial draw (the filter uses ``seed + 1``) and of the contrastive resampling
    quiet : no progress bars
    cache_dir : where the library embedding is cached (default: the user cache)
    warm_draw : how a warm start (``enoi``, ``contrastive``) draws its members from the analysis':
        ``matched`` (resampled, then shifted and scaled element by element to the analysis' mean and
        spread) or ``resampled`` (as drawn)

    Returns
    -------
    xarray.Dataset in the layout of :func:`assimilate` (``<var>_mean``, ``<var>_spread``, members ``<var>``)
    """
    from oceanda.experiments.testbed_cycle import cycle_testbed as _cycle_testbed

    if isinstance(model, (str, os.PathLike)) and cache_dir is not None:
        files = [p for x in (library, obs, truth) for p in (x if isinstance(x, (list, tuple)) else [x])
                 if isinstance(p, (str, os.PathLike))]
        check_cache_dir(cache_dir, model, files)
    return _cycle_testbed(testbed, library, obs, truth=truth, model=model, method=method, initial=initial,
                          hybrid_beta=hybrid_beta, extra=extra, members=members, seed=seed, quiet=quiet,
                          cache_dir=cache_dir, warm_draw=warm_draw)


def run_twin(testbed: str, method: str = "letkf", **settings: Any) -> tuple[Any, dict[str, Any]]:
    """A cycled twin experiment on a bundled testbed: ``lorenz96`` or ``qg`` (daily altimetry).

    Parameters
    ----------
    testbed : ``lorenz96`` or ``qg``
    method : filter name (``enkf``, ``etkf``, ``letkf``)
    **settings : ``members``, ``cycles``, ``seed``, ``inflation``, ``rtps``, ``radius``, ``taper``,
        ``checkpoint_dir``, ``checkpoint_every``, ``resume``, ``progress``; None = the tuned value

    Returns
    -------
    ``(CycleResult, extra scores)`` (the QG twin adds SSH scores)
    """
    from oceanda.experiments.twins import run_twin as _run

    _check_twin(testbed, settings)
    return _run(testbed, method, **settings)


def cycle_summary(result: Any, burn_in: int | None = None) -> dict[str, float]:
    """Means of a cycled run's RMSE, spread and timings after ``burn_in`` cycles (default 100, at most a third).

    Parameters
    ----------
    result : a CycleResult from :func:`cycle` or :func:`run_twin`
    burn_in : cycles to skip

    Returns
    -------
    dict (``rmse_a``, ``spread_a``, ``seconds_per_analysis``, ``cycles_per_second``, ...)
    """
    from oceanda.experiments.twins import summary

    check_number("burn_in", burn_in, lo=0, integer=True, optional=True)
    return summary(result, burn_in)


def evaluate(truth: xr.Dataset, analyses: Mapping[str, xr.Dataset], out: PathLike, **settings: Any) -> dict[str, Any]:
    """Score analyses against a truth; write ``metrics.json``, ``metrics.csv`` and figures into ``out``.

    Parameters
    ----------
    truth : true states on the analyses' grid
    analyses : ``{name: analysis Dataset}``
    out : report directory
    **settings : ``variables``, ``obs`` (drawn on maps), ``time_index``, ``overwrite``, ``spectrum``, ``quiet``,
        ``figures``

    Returns
    -------
    dict: the content of metrics.json

    Raises
    ------
    DataValidationError: analyses in units incompatible with the truth's (convertible ones are converted),
        with Inf values or an all-NaN mean, or on another grid -- before ``out`` is created
    """
    from oceanda import report

    return report.evaluate(truth, analyses, out, **settings)


def climatology(library: xr.Dataset, times: Any, *, members: int = 20, seed: int = 0) -> xr.Dataset:
    """The no-skill reference analysis at ``times``: the library's mean and spread, ``members`` random library states.

    Parameters
    ----------
    library : library states (dim ``time``)
    times : analysis times (e.g. the truth's)
    members : library states drawn as the ensemble (at most the library size)
    seed : seed of that draw

    Returns
    -------
    xarray.Dataset: an analysis (``<var>_mean``, ``<var>_spread``, members), ``method = "climatology"``
    """
    import numpy as np

    from oceanda.demo import climatology_analysis

    check_number("members", members, lo=1, integer=True)
    _check_seed("seed", seed)
    members = min(int(members), int(library.sizes["time"]))
    return climatology_analysis(library.load(), times, members, np.random.default_rng(seed))


def write(ds: xr.Dataset, path: PathLike, *, overwrite: bool = False, command: str | None = None) -> Path:
    """Write ``ds`` as CF-1.8 NetCDF atomically; refuse to replace an input of ``ds`` or, without overwrite, any file.

    Parameters
    ----------
    ds : the Dataset
    path : output file
    overwrite : replace an existing file (never one ``ds`` was read from)
    command : command line recorded in ``history`` (default: the current one)

    Returns
    -------
    pathlib.Path of the written file
    """
    return io.write_netcdf(ds, path, overwrite=overwrite, command=command)


def check_output(path: PathLike, overwrite: bool = False) -> Path:
    """Fail early (before a long computation) if ``path`` exists and ``overwrite`` is not given.

    Parameters
    ----------
    path : the output file
    overwrite : an existing file may be replaced

    Returns
    -------
    pathlib.Path
    """
    return io.refuse_existing(path, overwrite)


def _expanded(paths: Sequence[PathLike | None]) -> list[Path]:
    """Input paths with their globs expanded (a pattern matching nothing adds nothing: opening it says so)."""
    import glob

    out: list[Path] = []
    for p in paths:
        if p is None:
            continue
        s = os.fspath(p)
        out += [Path(m) for m in sorted(glob.glob(s))] if any(ch in s for ch in "*?[") else [Path(s)]
    return out


def check_outputs(inputs: Sequence[PathLike | None], outputs: Sequence[PathLike | None], overwrite: bool = False, *,
                  folders: Sequence[PathLike | None] = ()) -> list[Path | None]:
    """Fail before any work if an output is an input (or holds one, or lies in an input folder) or exists already.

    Why: ``--obs obs.nc --out obs.nc --overwrite`` would replace the observations with the analysis;
    inputs are never modified. Paths are compared resolved and with :func:`os.path.samefile`
    (:func:`oceanda.io.check_distinct`).

    Parameters
    ----------
    inputs : every file or folder the command reads (globs expanded here; None entries ignored)
    outputs : output files: an existing one is refused unless ``overwrite`` (:func:`check_output`)
    overwrite : existing output files may be replaced (never an input)
    folders : output folders the command fills or reuses (reports, checkpoints, caches): compared with the inputs

    Returns
    -------
    list of pathlib.Path (None for None entries), one per output file
    """
    for o in [*outputs, *folders]:
        if o is not None and not str(o).strip():
            raise ConfigurationError("--out ''; expected a file or folder name, not an empty path")
    io.check_distinct(_expanded(inputs), [*outputs, *folders])
    return [None if o is None else check_output(o, overwrite) for o in outputs]


def check_cache_dir(cache_dir: PathLike | None, model: PathLike, inputs: Sequence[PathLike | None] = ()) -> None:
    """Refuse an embedding cache folder that is (or holds) an input or the model's files.

    It may lie inside the model folder if the user puts it there: the cache is derived data, and the
    model's own files are never touched (the default is a user cache, :func:`oceanda.io.cache_root`).

    Parameters
    ----------
    cache_dir : the cache folder (None: the default)
    model : the model folder
    inputs : the other inputs (library, observations; globs expanded here)
    """
    if cache_dir is None:
        return
    m = Path(model)
    files = [m / io.CHECKPOINT_WEIGHTS, m / io.CHECKPOINT_CONFIG] if m.is_dir() else [m]
    io.check_distinct([*_expanded(inputs), *files], [cache_dir])


def check_units(units: Mapping[str, str] | None, datasets: Sequence[Any], paths: Sequence[PathLike | None] = (), *,
                option: str = "--units") -> None:
    """Refuse ``units`` (``--units VAR=UNITS``) naming a variable that no input has: a misspelt name would be ignored.

    Parameters
    ----------
    units : ``{variable: units}`` as given
    datasets : the opened inputs (Datasets or Libraries)
    paths : their files: names as written there count too (an observed ``sla`` is read as the state's ``ssh``)
    option : what to call the setting in the error
    """
    if not units:
        return
    data = [getattr(d, "ds", d) for d in datasets if d is not None]
    have = {str(n) for d in data for n in d.variables}
    missing = [k for k in units if k not in have]
    if missing and paths:
        have |= _file_variables(_expanded(paths))
        missing = [k for k in missing if k not in have]
    if missing:
        names = sorted({str(n) for d in data for n in d.data_vars})
        raise ConfigurationError(f"{option} {' '.join(f'{k}={units[k]}' for k in missing)}: no variable "
                                 f"{', '.join(map(repr, missing))} in the inputs; expected some of {names}")


def _file_variables(paths: Sequence[Path]) -> set[str]:
    """Variable names as the files hold them (before oceanda's renaming); unreadable files add none."""
    import contextlib

    names: set[str] = set()
    for p in paths:
        with contextlib.suppress(Exception), xr.open_dataset(p, decode_cf=False, decode_times=False) as ds:
            names |= {str(n) for n in ds.variables}
    return names


def _check_seed(name: str, seed: Any) -> None:
    """Seeds every generator takes: integers 0 .. 2**32 - 1 (numpy refuses negatives; torch 64-bit ones)."""
    check_number(name, seed, lo=0, hi=SEED_MAX, integer=True)


def _sample_size(ds: xr.Dataset) -> int:
    return int(ds.sizes["member"] if "member" in ds.dims else ds.sizes.get("time", 0))


def _check_analyse(ensemble: xr.Dataset, method: Any, settings: Mapping[str, Any]) -> None:
    """What :func:`analyse` can refuse before any work: the seed, members beyond the ensemble, a memory-busting size."""
    import numpy as np

    rng = settings.get("rng", 0)  # a seed, or what numpy seeds from (a Generator, SeedSequence, sequence, None)
    if rng is not None and not isinstance(rng, (np.random.Generator, np.random.SeedSequence, list, tuple, np.ndarray)):
        _check_seed("rng", rng)
    block = settings.get("block")
    if block is not None:  # LETKF tiles of block x block points: one tile covers the grid at most
        from oceanda import grid

        check_number("block", block, lo=1, integer=True)
        side = max(grid.shape(ensemble))
        if block > side:
            raise ConfigurationError(f"block={block}; expected at most {side} (the grid's larger side: one tile)")
    members = settings.get("members")
    name = getattr(method, "name", method)
    if members is not None and name == "enoi":
        check_number("members", members, lo=2, integer=True)
        n = _sample_size(ensemble)
        if n and members > n:
            src = settings.get("source", "the ensemble")
            raise ConfigurationError(f"members={members}; expected at most the {n} states of {src} (the static "
                                     "ensemble is drawn from them without replacement)")


def _check_members_memory(members: Any, library: xr.Dataset, obs: xr.Dataset) -> None:
    """Refuse an ensemble that cannot fit in memory (members x times x state values), before any analysis."""
    import math

    if members is None:
        return
    check_number("members", members, lo=1, integer=True)
    values = sum(math.prod(library[v].shape[1:]) for v in library.data_vars if "time" in library[v].dims)
    times = int(obs.sizes.get("time", 1))
    io.check_allocation(float(members) * max(values, 1) * (4.0 * times + 8.0), f"members={members}")


def _check_top_k(top_k: Any, library: xr.Dataset) -> None:
    """The retrieved states recorded cannot outnumber the library."""
    if top_k is None:
        return
    check_number("top_k", top_k, lo=1, integer=True)
    n = _sample_size(library)
    if n and top_k > n:
        raise ConfigurationError(f"top_k={top_k}; expected at most the {n} states of the library")


def _check_scheduler(address: str, timeout: float = 10.0) -> None:
    """A dask.distributed scheduler that answers, before any work (a dead or malformed address is one line).

    ``local:N`` (N local worker processes, started for the run) and a ``distributed.Client`` pass.
    """
    if not isinstance(address, str):
        return  # a distributed.Client of the caller's
    from oceanda.analysis.assimilate import local_workers

    if local_workers(address) is not None:  # local:N, N an integer from 1 to 1024 (else a one-line error)
        return
    try:
        from distributed import Client
    except ImportError as exc:
        raise ConfigurationError(f"scheduler={address!r}: dask.distributed is not installed ({exc}); expected it "
                                 "installed, or no scheduler (local threads)") from None
    try:
        Client(address, timeout=timeout).close()
    except (OSError, ValueError, TypeError, TimeoutError) as exc:
        raise ConfigurationError(f"scheduler={address!r}: {' '.join(str(exc).split())}; expected the address of a "
                                 "running dask.distributed scheduler, e.g. tcp://host:8786") from None


def _check_twin(testbed: str, settings: Mapping[str, Any]) -> None:
    """Ranges of the cycled twins' settings, and their stored cycles bounded by memory, before the run."""
    check_number("members", settings.get("members"), lo=2, integer=True, optional=True)
    check_number("cycles", settings.get("cycles"), lo=1, integer=True, optional=True)
    check_number("checkpoint_every", settings.get("checkpoint_every"), lo=1, integer=True, optional=True)
    if settings.get("seed") is not None:
        _check_seed("seed", settings["seed"])
    values = {"lorenz96": 40, "qg": 2 * 64 * 64}.get(testbed, 0)
    members, cycles = settings.get("members") or 40, settings.get("cycles") or 1
    per_cycle, ensemble = 32.0 * values * cycles, 24.0 * values * members  # truth, obs, statistics; ensemble copies
    io.check_allocation(per_cycle + ensemble, f"cycles={cycles}" if per_cycle > ensemble else f"members={members}")


def command_line() -> str:
    """The command line recorded in output ``history`` attributes."""
    return io.command_line()


def sample_data(testbed: str, out: PathLike, **settings: Any) -> dict[str, Path]:
    """Write a testbed's sample data (library, truths, observations, pairs) into ``out``.

    Parameters
    ----------
    testbed : ``qg``, ``torus`` or ``lorenz96``
    out : output folder (appears only complete: built beside it, renamed into place)
    **settings : ``seed``, ``size`` (tiny, small, full), ``nx`` (qg: 64, 128, 256, 512), ``overwrite``, ``quiet``

    Returns
    -------
    dict {file name: path}
    """
    from oceanda.sampledata import make_sample_data

    _check_seed("seed", settings.get("seed", 0))
    return make_sample_data(testbed, out, **settings)


def demo(out: PathLike = "demo_out", **settings: Any) -> Any:
    """The whole chain on the bundled QG sample: contrastive analyses vs EnOI and a cycled LETKF, a report.

    Parameters
    ----------
    out : output directory (appears only complete: built beside it, renamed into place)
    **settings : ``train``, ``truth``, ``members``, ``modes``, ``days``, ``seed``, ``overwrite``, ``quiet``,
        ``map_worker`` (half the report's maps drawn by a second process: for scripts with a main guard, the CLI)

    Returns
    -------
    oceanda.demo.DemoResult (``metrics``, ``seconds``, ``out_dir``); ``demo_table(result.metrics)`` prints it
    """
    from oceanda.demo import run_demo
    from oceanda.sampledata import bundled_sample_dir

    _check_seed("seed", settings.get("seed", 0))
    check_number("members", settings.get("members"), lo=2, integer=True, optional=True)
    check_number("days", settings.get("days"), lo=1, integer=True, optional=True)
    data = Path(settings.get("sample_dir") or bundled_sample_dir("qg"))
    check_outputs([data, data.parent / "models"], [], folders=[out])  # the bundled sample is the input
    truth = settings.get("truth", "eval_1")
    runs = sorted(p.name[len("truth_"):-len(".nc")] for p in data.glob("truth_*.nc")
                  if (data / f"obs_altimetry_{p.name[len('truth_'):]}").exists())
    if truth not in runs:
        raise ConfigurationError(f"truth={truth!r}; expected one of the sample's truth runs {runs}")
    n_lib = io.open_states(data / "library.nc", check_values=False).sizes["time"]  # the header only
    check_number("members", settings.get("members"), hi=n_lib, integer=True, optional=True)  # drawn from the library
    return run_demo(out, **settings)


def demo_table(metrics: Mapping[str, Any]) -> str:
    """The demo's results table (as in the README) from its metrics.

    Parameters
    ----------
    metrics : ``result.metrics`` of :func:`demo`

    Returns
    -------
    str
    """
    from oceanda.demo import format_table

    return format_table(dict(metrics))


def reproduce(experiment: str, out: PathLike | None = None, **settings: Any) -> dict[str, Any]:
    """Run a published experiment (``baptista2025``) and write its results.json and figures.

    Parameters
    ----------
    experiment : name (see :data:`oceanda.experiments.EXPERIMENTS`)
    out : output directory (default ``reproduce-<name>[-quick]``; appears only complete)
    **settings : ``quick``, ``seed``, ``overwrite``, ``quiet``, ``log``

    Returns
    -------
    dict: the results
    """
    from oceanda import experiments

    module = experiments.get(experiment)
    _check_seed("seed", settings.get("seed", 0))
    out = out or f"reproduce-{experiment}{'-quick' if settings.get('quick') else ''}"
    return module.run(out, **settings)


def choices(what: str) -> list[str]:
    """Allowed values of an option, for the CLI's ``--help``: similarity, loss, encoder, mode, method, taper, testbed.

    Parameters
    ----------
    what : the option (``similarity``, ``loss``, ..., ``testbed``, ``twin``)

    Returns
    -------
    list of str
    """
    if what == "similarity":
        from oceanda.contrastive.similarity import KINDS

        return list(KINDS)
    if what == "loss":
        from oceanda.contrastive.losses import LOSSES

        return [name for name in LOSSES if not name.startswith("mmd") and name != "weighted"]
    if what == "encoder":
        from oceanda.pairs import ENCODER_CHOICES

        return list(ENCODER_CHOICES)
    if what == "mode":
        from oceanda.analysis.samplers import MODES

        return list(MODES)
    if what in ("method", "taper"):
        from oceanda.kalman import METHODS, TAPERS

        return list(METHODS if what == "method" else TAPERS)
    if what == "testbed":
        from oceanda.sampledata import BUILDERS

        return list(BUILDERS)
    if what == "operator":
        from oceanda.observe import OPERATORS

        return list(OPERATORS)
    if what == "twin":
        from oceanda.experiments.twins import TWINS

        return list(TWINS)
    if what == "precision":
        from oceanda.analysis.settings import PRECISIONS

        return list(PRECISIONS)
    if what == "patterns":
        from oceanda.analysis.obs_patterns import FAMILIES

        return list(FAMILIES)
    if what in ("initial", "extra", "cycle_method", "cycle_testbed", "warm_draw"):
        from oceanda.experiments import qg_cycle, testbed_cycle

        return list({"initial": qg_cycle.INITIALS, "extra": qg_cycle.EXTRAS, "cycle_method": qg_cycle.METHODS,
                     "warm_draw": qg_cycle.WARM_DRAWS,
                     "cycle_testbed": testbed_cycle.TESTBEDS}[what])
    raise OceandaError(f"no choices for '{what}'")


__all__ = [
    "analyse", "assimilate", "check_cache_dir", "check_output", "check_outputs", "check_units", "choices", "climatology", "command_line", "cycle", "cycle_summary", "cycle_testbed", "demo", "demo_table", "evaluate",
    "load_model", "observe_states", "open_library", "open_obs", "open_states", "reproduce", "run_twin", "sample_data", "train", "write",
]
