"""Dataset-level entry point: a trained encoder pair, a library and observations -> an analysis Dataset.

``assimilate(model, library, obs, mode=...)`` analyses every time of ``obs`` and returns the common
analysis layout (``fields.analysis_dataset``): ``<var>_mean``, ``<var>_spread`` and the ensemble
``<var>`` (``member`` dim) for every library variable, per-time ``ess`` and ``dropped_mass`` (in
hybrid mode also ``<var>_background_mean``/``_spread``, the local analysis the Kalman step used), and in
global mode the retrieved library entries (``retrieved_index``/``retrieved_time``/``retrieved_score``
over ``rank``) and the non-negligible weights (``weight_index``/``weight`` over ``particle``,
summing to one per time). Attributes record the model and library fingerprints, the mode, the
command and ``seconds_per_analysis``.
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from oceanda import io
from oceanda.errors import ConfigurationError
from oceanda.analysis.encoding import check_model_grid, load_model, model_fingerprint, obs_arrays, to_model_units
from oceanda.analysis.hybrid import HybridConfig
from oceanda.analysis.library import CACHE_DIRNAME, Library
from oceanda.analysis.result import DIAGNOSTIC_ATTR, Analysis, analyses_to_dataset
from oceanda.analysis.samplers import MODES, Sampler, sampler_for
from oceanda.analysis.settings import SamplerSettings, stored_settings

__all__ = ["DIAGNOSTIC_ATTR", "MODES", "assimilate", "check_model_grid", "load_model", "model_fingerprint",
           "obs_arrays", "resolve_settings"]


def _progress(total: int, quiet: bool, desc: str):
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=quiet or not sys.stderr.isatty())


def resolve_settings(model: Any, where: str = "model config", **given: Any) -> SamplerSettings:
    """The sampler settings of a run: what the checkpoint stores, with the caller's values (not None) on top.

    Parameters
    ----------
    model : the :class:`~oceanda.contrastive.model.ContrastiveModel` (its ``config``)
    where : the checkpoint's ``config.json``, named in errors about stored values
    **given : :class:`~oceanda.analysis.settings.SamplerSettings` fields (None = not given)

    Returns
    -------
    SamplerSettings
    """
    return stored_settings(model.config, where).replace(**given)


def assimilate(
    model: Any,
    library: Library | xr.Dataset,
    obs: xr.Dataset,
    *,
    mode: str | None = None,
    members: int | None = None,
    top_k: int | None = None,
    seed: int | None = 0,
    cache_dir: str | Path | None = None,
    spread_factor: float | None = None,
    min_ess: float | None = None,
    tempering: bool | None = None,
    max_keep: int | None = None,
    library_stride: int | None = None,
    allowed_positions: np.ndarray | None = None,
    hybrid: HybridConfig | None = None,
    scheduler: str | None = None,
    batch: int = 4,
    quiet: bool = True,
    command: str | None = None,
    times: Sequence[int] | None = None,
    tau: float | None = None,
) -> xr.Dataset:
    """Analyse every time of ``obs`` (or the indices ``times``) with the contrastive sampler.

    Settings not given (None) come from the model's stored calibration (``config["sampler"]``, or the
    legacy ``extra`` keys), else the defaults of :class:`~oceanda.analysis.settings.SamplerSettings`
    (20 members, top 10, the trained temperature, spread factor 1, ...).

    Parameters
    ----------
    model : a model directory or a ``(ContrastiveModel, EncoderPair)`` pair
    library : a :class:`~oceanda.analysis.library.Library` or a Dataset of states
    obs : gridded observations (NaN where unobserved; ``<var>_error`` for the hybrid)
    mode : ``global``, ``local`` or ``hybrid`` (default: ``local`` for window models, else ``global``)
    members, top_k, spread_factor, min_ess, tempering, max_keep, library_stride, hybrid, tau : sampler settings
        (:class:`~oceanda.analysis.settings.SamplerSettings`; ``spread_factor`` acts in local and hybrid modes)
    seed : per-time random streams ``[seed, t]`` (the hybrid's static ensemble: ``[seed, 99]``); None = fresh
    cache_dir : where library embeddings are cached (default ``io.cache_root()/library_cache``)
    allowed_positions : boolean ``[ny, nx]`` window starts allowed in the library (local and hybrid modes)
    scheduler : None = local threads; an address = an existing dask.distributed cluster
    batch : times per batch of dask tasks
    quiet : no progress bars
    command : recorded in the ``command`` attribute (default: this process's command line)
    times : indices of the times of ``obs`` to analyse (default: all)

    Returns
    -------
    xarray.Dataset (:func:`~oceanda.analysis.result.analyses_to_dataset`)
    """
    model_dir = Path(model) if isinstance(model, (str, Path)) else None
    model, enc = load_model(model_dir) if model_dir is not None else model
    if cache_dir is None:  # a user cache, never the model folder: inputs are not modified
        cache_dir = io.cache_root() / CACHE_DIRNAME
    lib = library if isinstance(library, Library) else Library(library)
    check_model_grid(enc, lib, lib.source)
    lib, obs = to_model_units(enc, lib, obs)  # a cm library for a model trained in m: converted (or refused)
    settings = resolve_settings(model, str(model_dir / "config.json") if model_dir is not None else "model config",
                                members=members, top_k=top_k, tau=tau, spread_factor=spread_factor, min_ess=min_ess,
                                tempering=tempering, max_keep=max_keep, library_stride=library_stride, hybrid=hybrid)
    if settings.tempering and settings.min_ess is not None and settings.min_ess > lib.n:
        raise ConfigurationError(f"min_ess={settings.min_ess:g} (--min-ess); expected at most the {lib.n} states of "
                                 f"{lib.source}: tempering can never reach a larger effective sample size")
    sampler = sampler_for(mode, enc, settings, allowed_positions)
    inputs = sampler.read_obs(obs, lib, times)
    t0 = _time.perf_counter()
    sampler.prepare(lib, cache_dir=cache_dir, quiet=quiet, seed=seed)
    setup_seconds = _time.perf_counter() - t0

    def one(k: int) -> Analysis:
        return sampler.analyse(inputs[k], np.random.default_rng(None if seed is None else [seed, inputs[k].index]))

    analyses = _run_times(one, len(inputs), scheduler, batch, quiet)
    seconds = (_time.perf_counter() - t0) / max(len(inputs), 1)
    # the sampler's library: states NaN outside the land may have been dropped from it
    return analyses_to_dataset(analyses, sampler.library, np.asarray([o.time for o in inputs]),
                               _attrs(sampler, analyses, seconds, setup_seconds, command))


def _attrs(sampler: Sampler, analyses: Sequence[Analysis], seconds: float, setup_seconds: float,
           command: str | None) -> dict[str, Any]:
    return {**sampler.describe(), "members": int(analyses[0].members.shape[0]) if analyses else 0,
            "seconds_per_analysis": float(seconds), "setup_seconds": float(setup_seconds),
            "spread_factor": float(sampler.settings.spread_factor),
            "command": command if command is not None else _command(), **sampler.geometry()}


def _run_times(fn, n: int, scheduler: str | None, batch: int, quiet: bool) -> list:
    """Run ``fn(k)`` for every time: in batches of dask tasks (threads, or a distributed cluster)."""
    import dask

    results: list = [None] * n
    bar = _progress(n, quiet, "analyses")
    client = None
    if scheduler:
        from distributed import Client

        client = Client(scheduler)
    try:
        for a in range(0, n, max(batch, 1)):
            ks = list(range(a, min(a + batch, n)))
            tasks = [dask.delayed(fn)(k) for k in ks]
            if client is not None:
                out = client.compute(tasks, sync=True)
            else:
                out = dask.compute(*tasks, scheduler="threads" if len(ks) > 1 else "sync")
            for k, r in zip(ks, out):
                results[k] = r
            bar.update(len(ks))
    finally:
        bar.close()
        if client is not None:
            client.close()
    return results  # type: ignore[return-value]


def _command() -> str:
    from oceanda.io import command_line

    return command_line()
