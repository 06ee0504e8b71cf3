"""Both kinds of model from a user's files: the one entry of ``oceanda train`` and ``oceanda.api.train``.

Why apart from :mod:`oceanda.pairs`: the window model's training lives in ``oceanda.analysis`` (it imports
the pairs), and calibration runs the sampler; a module above both keeps the imports one-way.
``kind="window"`` trains the local/hybrid model (:func:`oceanda.analysis.window_training.train_window_model_from_obs`),
``kind="field"`` the whole-field model (:func:`oceanda.pairs.train_field_model`); both record the validation
retrieval next to chance (``config["health"]``, :func:`oceanda.contrastive.training.training_health`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import xarray as xr

from oceanda import fields, grid
from oceanda.contrastive.training import TrainResult
from oceanda.pairs import mask_sampler, obs_sigma, time_axis, train_field_model
from oceanda.superob import to_grid


KINDS = ("window", "field")
#: Settings only whole-field training has (refused with ``kind="window"``).
_FIELD_ONLY = ("encoder", "cnn", "val_fraction", "patience", "resume", "block", "shift", "weight_decay")
#: Settings only window training has.
_WINDOW_ONLY = ("size", "stride", "halo", "patterns")


def _pattern_mix(patterns: Any) -> Any:
    from oceanda.analysis.obs_patterns import pattern_mix  # numpy-only; kept out of the CLI's start-up

    return pattern_mix(patterns)


def default_kind(states: xr.Dataset) -> str:
    """``window`` for gridded states larger than the default 16-cell window, else ``field``.

    Parameters
    ----------
    states : the training states

    Returns
    -------
    str
    """
    from oceanda.analysis.window_training import WindowTrainingConfig

    return "window" if min(grid.shape(states)) > WindowTrainingConfig.size else "field"


def _periodic(states: xr.Dataset, periodic: bool | None) -> bool:
    """Doubly periodic unless told: as :func:`oceanda.observe.geometry` decides (km boxes yes, others no)."""
    if periodic is not None:
        return bool(periodic)
    from oceanda import observe

    return bool(all(observe.geometry(states).periodic))


def train_model(states: xr.Dataset, obs: xr.Dataset, out_dir, *, kind: str | None = None, obs_days: int | None = None,
                window: int | None = None, periodic: bool | None = None, log: Callable[[str], None] | None = None,
                **settings: Any) -> tuple[Any, TrainResult]:
    """Train a window (local/hybrid) or whole-field (global) model; save it in ``out_dir``.

    Parameters
    ----------
    states, obs : the training states and observations (gridded, or points superobbed onto the grid)
    out_dir : the checkpoint directory
    kind : ``window`` or ``field`` (default: ``field`` when a whole-field-only setting such as ``encoder``,
        ``cnn`` or ``fresh=False`` is given, else :func:`default_kind`)

    obs_days : observation days per sample (window: 1..N days drawn; field: N days stacked)
    window : the former name of ``obs_days`` (deprecated)
    periodic : the grid is doubly periodic (default: automatic, see :func:`oceanda.observe.geometry`)
    log : where adaptations are reported (batch size, epochs, depth, window size)
    **settings : :func:`train_field_model` or
        :func:`oceanda.analysis.window_training.train_window_model_from_obs` settings

    Returns
    -------
    tuple
        ``(model, TrainResult)``; ``TrainResult.health`` (also ``config["health"]``) holds the validation
        R@1/R@5 next to chance and whether the model is weak.
    """
    import warnings

    from oceanda.errors import ConfigurationError

    if window is not None:
        warnings.warn("window= (days of observations) is deprecated; use obs_days=", DeprecationWarning, stacklevel=2)
        obs_days = window if obs_days is None else obs_days
    field_only = [k for k in _FIELD_ONLY if settings.get(k) is not None and not (k == "resume" and settings[k] is False)]
    field_only += ["fresh"] if settings.get("fresh") is False else []
    settings["patterns"] = _pattern_mix(settings.get("patterns"))
    if kind is None:  # a pattern mixture trains a window model, whatever the grid
        kind = "field" if field_only else "window" if settings["patterns"] is not None else default_kind(states)
        if field_only and log is not None and default_kind(states) == "window":
            log(f"kind 'field' (whole-field model): {field_only} given")
    if kind not in KINDS:
        raise ConfigurationError(f"kind '{kind}'; expected one of {list(KINDS)}")
    wrong = field_only if kind == "window" else [k for k in _WINDOW_ONLY if settings.get(k) is not None]
    if wrong:
        raise ConfigurationError(f"setting(s) {wrong} do not apply to kind='{kind}' models")
    check_settings(states, kind, obs_days, settings)
    obs = to_grid(obs, states)
    per = _periodic(states, periodic)
    days = int(obs_days or 1)
    if kind == "field":
        settings.pop("patterns")
        return train_field_model(states, obs, out_dir, window=days, periodic=per, log=log, **settings)
    from oceanda.analysis.window_training import train_window_model_from_obs

    settings = {k: v for k, v in settings.items() if k not in ("fresh", "resume", "resume_dir")}
    return train_window_model_from_obs(states, obs, out_dir, obs_days=days, periodic=per, log=log, **settings)


def check_settings(states: xr.Dataset, kind: str, obs_days: int | None, settings: dict[str, Any]) -> None:
    """Refuse a training setting out of range, or a size that cannot fit, before any data is read or model built.

    Why here: the typed configs (:class:`~oceanda.contrastive.training.TrainConfig`,
    :class:`~oceanda.analysis.window_training.WindowTrainingConfig`) are built after the states are
    loaded and the pairs drawn; ``epochs=0`` must never get as far as writing an untrained model.

    Parameters
    ----------
    states : the training states (their grid bounds window sizes and halos)
    kind : ``window`` or ``field``
    obs_days : observation days per sample
    settings : the other settings, as given
    """
    _check_ranges(obs_days, settings)
    _check_sizes(states, kind, obs_days, settings)
    _pattern_mix(settings.get("patterns"))


def _check_ranges(obs_days: int | None, settings: dict[str, Any]) -> None:
    from oceanda.analysis.settings import TAU_RANGE
    from oceanda.settings import SEED_MAX, check_number

    get = settings.get
    check_number("obs_days", obs_days, lo=1, integer=True, optional=True)
    for name in ("epochs", "embedding_dim", "patience", "block", "stride"):
        check_number(name, get(name), lo=1, integer=True, optional=True)
    check_number("size", get("size"), lo=2, integer=True, optional=True)  # as window_geometry shrinks it at most
    check_number("halo", get("halo"), lo=0, integer=True, optional=True)
    check_number("batch_size", get("batch_size"), lo=2, integer=True, optional=True)  # a contrastive batch: 2 pairs
    check_number("seed", get("seed"), lo=0, hi=SEED_MAX, integer=True, optional=True)
    check_number("lr", get("lr"), lo=0, lo_open=True, hi=1.0, optional=True)
    check_number("tau", get("tau"), lo=TAU_RANGE[0], hi=TAU_RANGE[1], optional=True)
    check_number("seconds", get("seconds"), lo=0, lo_open=True, optional=True)
    check_number("val_fraction", get("val_fraction"), lo=0, hi=1, lo_open=True, hi_open=True, optional=True)
    cnn = get("cnn") or {}
    for name in ("depth", "width", "input_pool"):
        check_number(name, cnn.get(name), lo=1, integer=True, optional=True)


def _check_sizes(states: xr.Dataset, kind: str, obs_days: int | None, settings: dict[str, Any]) -> None:
    """Sizes bounded by the grid, and the largest layers' memory by what is free (a huge dim is refused, not tried)."""
    import math

    from oceanda import io
    from oceanda.errors import ConfigurationError

    ny, nx = grid.shape(states)
    if obs_days is not None and obs_days > 1:
        _check_look_back(states, kind, obs_days)
    halo, pool = settings.get("halo"), (settings.get("cnn") or {}).get("input_pool")
    if halo is not None and halo > max(ny, nx):
        raise ConfigurationError(f"halo={halo}; expected at most {max(ny, nx)} cells (the {ny} x {nx} grid's larger side)")
    size, stride, block = settings.get("size"), settings.get("stride"), settings.get("block")
    if size is not None and size > max(ny, nx):
        raise ConfigurationError(f"size={size}; expected at most {max(ny, nx)} cells (the {ny} x {nx} grid's larger side)")
    if stride is not None and stride > min(int(size or 16), ny, nx):
        raise ConfigurationError(f"stride={stride}; expected at most the window size {min(int(size or 16), ny, nx)}: "
                                 "a larger stride leaves cells no window covers")
    if block is not None and block > int(states.sizes.get("time", 1)):
        raise ConfigurationError(f"block={block}; expected at most the {int(states.sizes.get('time', 1))} times of the states")
    if pool is not None and pool > min(ny, nx):
        raise ConfigurationError(f"input_pool={pool}; expected at most {min(ny, nx)} (the {ny} x {nx} grid's smaller side)")
    per_cell = sum(math.prod(states[v].shape[1:]) for v in states.data_vars if "time" in states[v].dims) / (ny * nx)
    batch = settings.get("batch_size")
    if kind == "window":
        per_epoch = settings.get("pairs_per_epoch") or 8192
        if batch is not None and batch > per_epoch:
            raise ConfigurationError(f"batch_size={batch}; expected at most the {per_epoch} pairs drawn per epoch")
        side = min(int(settings.get("size") or 16), ny, nx) + 2 * int(halo if halo is not None else 8)
        cells, batch, width = side * side, batch or 256, 16
    else:  # a batch larger than the data is fitted to it (pairs.fit_batch)
        cells, width = ny * nx, (settings.get("cnn") or {}).get("width") or 32
        batch = min(batch or 128, int(states.sizes.get("time", 1)))
    values = max(per_cell, 1.0) * cells * int(obs_days or 1)
    emb = settings.get("embedding_dim")
    if emb is not None:  # a dense layer to the embedding: weights, gradient and two Adam moments
        io.check_allocation(16.0 * emb * values, f"embedding_dim={emb}")
    io.check_allocation(16.0 * batch * width * cells, f"width={width}" if kind == "field" else f"batch_size={batch}")


def _check_look_back(states: xr.Dataset, kind: str, obs_days: int) -> None:
    """A sample looks back ``obs_days - 1`` days within its run: some training time must have that much run before it."""
    from oceanda.errors import ConfigurationError

    days, seg = time_axis(states)
    start = {s: float(days[seg == s].min()) for s in np.unique(seg)}
    back = days - np.array([start[s] for s in seg], dtype=np.float64)
    if kind == "window":  # the validation times (last runs, or last 10 %) are never trained on
        from oceanda.analysis.window_training import _validation_times

        back = back[~_validation_times(seg)]
    longest = float(back.max()) if back.size else 0.0
    if obs_days - 1 > longest:
        raise ConfigurationError(f"obs_days={obs_days}; expected at most {int(longest) + 1} (the training states "
                                 f"have at most {longest:g} days of their run before them)")


def held_out_split(states: xr.Dataset, obs: xr.Dataset, variable: str, seed: int = 0) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset]:
    """``(library, truth, observations)`` for calibration without a tuning run: the held-out times as truth.

    The truth is the window model's validation times (never trained on; the last runs, or the last 10 %
    of the times), the library the other times (so no truth state is in it), and the observations of
    the truth are drawn like the training pairs (``obs``' patterns and ``<var>_error`` noise).

    Parameters
    ----------
    states : the training states
    obs : the observations the model was trained like
    variable : the observed variable
    seed : seeds the patterns and the noise

    Returns
    -------
    tuple of xarray.Dataset
    """
    from oceanda.analysis.window_training import _validation_times

    _, seg = time_axis(states)
    is_val = _validation_times(seg)
    lib, truth = states.isel(time=np.flatnonzero(~is_val)), states.isel(time=np.flatnonzero(is_val))
    sp = fields.spatial_dims(truth[variable])
    vals = np.asarray(truth[variable].transpose("time", ..., *sp).values, dtype=np.float32)
    ny, nx = vals.shape[-2:]
    rng = np.random.default_rng([seed, 11])
    mask = np.asarray(mask_sampler(obs, variable, ny, nx)(len(vals), rng), bool)
    mask = mask.reshape(mask.shape[:1] + (1,) * (vals.ndim - 3) + mask.shape[1:])
    sigma = obs_sigma(obs, variable)
    noisy = np.where(mask, vals + sigma * rng.standard_normal(vals.shape).astype(np.float32), np.nan)
    da = truth[variable].transpose("time", ..., *sp).copy(data=noisy)
    out = xr.Dataset({variable: da, f"{variable}_error": ((), np.float32(sigma), {"units": da.attrs.get("units", "1")})})
    out.attrs["title"] = f"synthetic observations of {len(vals)} held-out states (calibration)"
    return lib, truth, out


def resume_dir(out_dir) -> Path:
    """Where an interrupted ``train --out MODEL_DIR`` keeps its resumable state: ``.MODEL_DIR.resume`` beside it.

    Why beside and not inside: MODEL_DIR is built in a temporary folder and appears only complete, so a
    killed run leaves no MODEL_DIR; the state must survive the kill (a dead run's ``.tmp`` folder is
    removed by the next run, this is no ``.tmp``) and be found by ``--resume``. Removed when a run finishes.

    Parameters
    ----------
    out_dir : the model folder

    Returns
    -------
    pathlib.Path
    """
    from oceanda import io
    from oceanda.folders import final_path

    out = final_path(out_dir)
    return out.parent / f".{io.sibling_stem(out.name)}.resume"  # stays a valid file name however long MODEL_DIR is


def _finished_model(out: Path) -> tuple[Any, TrainResult] | None:
    """A finished whole-field model in ``out`` (``resume`` of a run that ended: the model as it is), else None."""
    from oceanda import io
    from oceanda.contrastive.model import ContrastiveModel

    if not ((out / io.CHECKPOINT_CONFIG).is_file() and (out / io.CHECKPOINT_WEIGHTS).is_file()):
        return None
    model = ContrastiveModel.load(out)
    if (model.config.get("extra") or {}).get("window"):
        return None  # window models never resume: train_model says so
    history = io.read_json(out / "history.json") if (out / "history.json").is_file() else []
    done = model.config.get("training") or {}
    res = TrainResult(history=list(history) if isinstance(history, list) else [], best_epoch=int(done.get("best_epoch", -1)),
                      stopped_early=bool(done.get("stopped_early", False)), health=model.config.get("health"))
    return model, res


def train_and_calibrate(states: xr.Dataset, obs: xr.Dataset, out_dir, *, tune_states: xr.Dataset | None = None,
                        tune_obs: xr.Dataset | None = None, calibrate: bool = False, calibration_times: int = 10,
                        log: Callable[[str], None] | None = None, overwrite: bool = False, resume: bool = False,
                        **settings: Any) -> tuple[Any, TrainResult]:
    """:func:`train_model`, then (window models) the spread factor and hybrid settings calibrated.

    ``out_dir`` is built whole: in a temporary sibling (:func:`oceanda.folders.build`) renamed into place
    once training and calibration are done; a failure, Ctrl-C or kill leaves no ``out_dir`` (and an
    existing one, ``overwrite``, as it was). The resumable state of a whole-field run is written each
    epoch to :func:`resume_dir` and removed once the model is in place. Under torchrun (``WORLD_SIZE``
    > 1) every rank trains (:func:`oceanda.contrastive.training.torchrun_group`: gloo, DDP, each global
    batch sharded) and only rank 0 writes the model, the resumable state and the calibration.

    Parameters
    ----------
    states, obs, out_dir, log, **settings : as :func:`train_model`
    tune_states, tune_obs : a tuning truth and its observations (never in ``states``)
    calibrate : calibrate on a held-out part of ``states`` (:func:`held_out_split`) when no tuning run is given
    calibration_times : analyses the calibration runs at most (evenly spaced)
    overwrite : replace an existing model folder (only one that holds a model's ``config.json``)
    resume : continue the interrupted run whose state is in :func:`resume_dir` (a finished model: returned as it is)

    Returns
    -------
    tuple
        ``(model, TrainResult)`` (the model re-read after calibration).
    """
    from oceanda.contrastive.training import torchrun_group
    from oceanda.errors import ConfigurationError

    if (tune_states is None) != (tune_obs is None):
        raise ConfigurationError("tune_states and tune_obs (--tune-states/--tune-obs) go together; expected both")
    cal = (tune_states, tune_obs, calibrate, calibration_times, log)
    if torchrun_group() != 0:
        return _train_follower(states, obs, out_dir, overwrite, resume, settings)
    return _train_writer(states, obs, out_dir, cal, overwrite, resume, settings)


def _finished_or_refused(out: Path, state: Path, log: Callable[[str], None] | None) -> tuple[Any, TrainResult]:
    """``resume`` without a resumable state: the finished model in ``out`` as it is, else a one-line refusal."""
    from oceanda.errors import ConfigurationError

    finished = _finished_model(out)
    if finished is not None:
        if log is not None:
            log(f"nothing to resume: {out} holds a finished model (kept as it is)")
        return finished
    raise ConfigurationError(f"resume (--resume): no resumable state in {state}; expected the state an interrupted "
                             f"`oceanda train --out {out}` keeps there (removed when a run finishes)")


def _train_follower(states: xr.Dataset, obs: xr.Dataset, out_dir, overwrite: bool, resume: bool,
                    settings: dict[str, Any]) -> tuple[Any, TrainResult]:
    """A torchrun rank other than 0: the same training as rank 0, writing nothing (no folder, state or log).

    It makes rank 0's refusals itself (so it stops with them), reads the resumable state rank 0
    keeps (one file system, as for one machine) and leaves calibration to rank 0.
    """
    from oceanda import folders, io

    if out_dir is None:
        return train_model(states, obs, None, **dict(settings, overwrite=overwrite, resume=resume))
    out, state = folders.check_replaceable(out_dir, overwrite, io.CHECKPOINT_CONFIG, "oceanda train"), resume_dir(out_dir)
    if resume and not (state / io.CHECKPOINT_WEIGHTS).is_file():
        return _finished_or_refused(out, state, None)
    return train_model(states, obs, None, **dict(settings, resume=resume, resume_dir=state))


def _train_writer(states: xr.Dataset, obs: xr.Dataset, out_dir, cal: tuple, overwrite: bool, resume: bool,
                  settings: dict[str, Any]) -> tuple[Any, TrainResult]:
    """Train (and calibrate) into a temporary folder renamed onto ``out_dir`` once complete (single process, rank 0)."""
    import os

    from oceanda import folders, io

    if out_dir is None:
        return _train_calibrated(states, obs, None, cal, dict(settings, overwrite=overwrite, resume=resume))
    out, state = folders.final_path(out_dir), resume_dir(out_dir)
    if resume and not (state / io.CHECKPOINT_WEIGHTS).is_file():
        return _finished_or_refused(out, state, cal[-1])
    existed = os.path.lexists(state)
    try:
        with folders.build(out, overwrite, io.CHECKPOINT_CONFIG, "oceanda train") as tmp:
            model, res = _train_calibrated(states, obs, tmp, cal, dict(settings, resume=resume, resume_dir=state))
    except Exception:  # a refusal or failure, not an interruption (Ctrl-C, kill): nothing worth resuming
        if not existed:
            io.remove_tree(state)
        raise
    io.remove_tree(state)
    return model, res


def _train_calibrated(states: xr.Dataset, obs: xr.Dataset, out_dir, cal: tuple, settings: dict[str, Any]):
    """Train into ``out_dir`` (the temporary model folder), then calibrate there when asked."""
    from oceanda.errors import ConfigurationError

    tune_states, tune_obs, calibrate, calibration_times, log = cal
    model, res = train_model(states, obs, out_dir, log=log, **settings)
    if tune_states is None and not calibrate:
        return model, res
    extra = model.config.get("extra") or {}
    if "window" not in extra or out_dir is None:
        raise ConfigurationError("calibration (--calibrate / --tune-states) applies to window models saved in a directory; "
                                 "expected kind='window' and an output directory")
    return _calibrate(model, res, states, obs, out_dir, tune_states, tune_obs, calibration_times,
                      int(settings.get("seed") or 0), log)


def _calibrate(model, res, states, obs, out_dir, tune_states, tune_obs, n_times, seed, log):
    """Calibrate the saved window model in ``out_dir``; return it re-read with ``res``."""
    from pathlib import Path

    from oceanda import io
    from oceanda.analysis.calibration import calibrate_model_spread, enoi_settings
    from oceanda.contrastive.model import ContrastiveModel

    extra = model.config["extra"]
    var = str(extra["obs_channels"][0][0])
    if tune_states is not None:
        lib, truth, tobs, where = states, tune_states, to_grid(tune_obs, states), "the tuning run"
    else:
        lib, truth, tobs = held_out_split(states, obs, var, seed)
        where = f"{truth.sizes['time']} held-out states"
    n = int(tobs.sizes["time"])
    times = np.unique(np.linspace(0, n - 1, min(n, int(n_times))).astype(np.int64))
    hyb = enoi_settings(lib, var, bool(extra.get("window", {}).get("periodic", False)))
    cache = Path(out_dir) / "library_cache"
    factor = calibrate_model_spread(out_dir, lib, tobs, truth, times=times, seed=seed, cache_dir=cache, hybrid_from_enoi=hyb)
    io.remove_tree(cache)
    model = ContrastiveModel.load(out_dir)
    cal = model.config.get("calibration", {})
    if log is not None:
        log(f"calibrated on {where} ({len(times)} times): spread factor {factor:.3g}; {var} RMSE / climatology "
            f"{cal.get(f'{var}_rmse_to_climatology', float('nan')):.3f} (local); hybrid radius {hyb['radius_km']:.4g} km")
    return model, res
