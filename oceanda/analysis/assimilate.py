"""Dataset-level entry point: a trained encoder pair, a library and observations -> an analysis Dataset.

``assimilate(model, library, obs, mode=...)`` analyses every time of ``obs`` and returns the common
analysis layout (``fields.analysis_dataset``): ``<var>_mean``, ``<var>_spread`` and the ensemble
``<var>`` (``member`` dim) for every library variable, per-time ``ess`` and ``dropped_mass`` (in
hybrid mode also ``<var>_background_mean``/``_spread``, the local analysis the Kalman step used), and in
global mode the retrieved library entries (``retrieved_index``/``retrieved_time``/``retrieved_score``
over ``rank``) and the non-negligible weights (``weight_index``/``weight`` over ``particle``,
summing to one per time). Attributes record the model and library fingerprints, the mode, the
command and ``seconds_per_analysis``.

Beyond one machine (``scheduler=``: an address, ``local:N`` or a ``distributed.Client``): the library
chunks are embedded by the dask workers (:func:`oceanda.analysis.library.embedding_client`), then
every worker receives once (scattered) what rebuilds the prepared sampler -- the encoder pair, the
settings and the library (its lazy Dataset, read from its file; its embeddings) -- and analyses one
time per task with the same per-time random stream ``[seed, t]`` as this process would, so the
results are the local ones bit for bit, whichever worker runs which time. Several observation
files are analysed in one run (the sampler prepared once), one Dataset per file.
"""

from __future__ import annotations

import contextlib
import threading
import time as _time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from oceanda import io
from oceanda.errors import ConfigurationError, OceandaError
from oceanda.analysis.encoding import (check_model_grid, load_model, model_fingerprint, obs_arrays, obs_in_model_units,
                                      to_model_units)
from oceanda.analysis.hybrid import HybridConfig
from oceanda.analysis.library import CACHE_DIRNAME, Library, embedding_client
from oceanda.analysis.result import DIAGNOSTIC_ATTR, Analysis, analyses_to_dataset
from oceanda.analysis.samplers import MODES, LocalSampler, Sampler, TimeObs, sampler_for
from oceanda.analysis.settings import SamplerSettings, stored_settings
from oceanda.analysis.tasks import run_tasks

__all__ = ["DIAGNOSTIC_ATTR", "MODES", "analyse_times", "assimilate", "check_model_grid", "load_model", "local_cluster",
           "model_fingerprint", "obs_arrays", "resolve_settings"]

#: ``--scheduler local:N``: a LocalCluster of N worker processes for the run.
LOCAL_PREFIX = "local:"


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
    obs: xr.Dataset | Sequence[xr.Dataset],
    *,
    mode: str | None = None,
    members: int | None = None,
    top_k: int | None = None,
    seed: int | None = 0,
    cache_dir: str | Path | None = None,
    spread_factor: float | None = None, min_ess: float | None = None, tempering: bool | None = None,
    max_keep: int | None = None, library_stride: int | None = None,
    allowed_positions: np.ndarray | None = None,
    hybrid: HybridConfig | None = None,
    scheduler: Any = None, batch: int = 4, quiet: bool = True,
    command: str | None = None,
    times: Sequence[int] | None = None,
    tau: float | None = None,
    precision: str | None = None, keep_mass: float | None = None, search: str | None = None, with_local: bool = False,
    sparse_cells: int | None = None, sparse_power: float | None = None, obs_window: int | None = None,
) -> xr.Dataset | list[xr.Dataset] | tuple:
    """Analyse every time of ``obs`` (or the indices ``times``) with the contrastive sampler.

    Settings not given (None) come from the model's stored calibration (``config["sampler"]``, or the
    legacy ``extra`` keys), else the defaults of :class:`~oceanda.analysis.settings.SamplerSettings`
    (20 members, top 10, the trained temperature, spread factor 1, ...).

    Parameters
    ----------
    model : a model directory or a ``(ContrastiveModel, EncoderPair)`` pair
    library : a :class:`~oceanda.analysis.library.Library` or a Dataset of states
    obs : gridded observations (NaN where unobserved; ``<var>_error`` for the hybrid), or a list of them
        (one analysis Dataset each, as if analysed one by one, in one run)
    mode : ``global``, ``local`` or ``hybrid`` (default: ``local`` for window models, else ``global``)
    members, top_k, spread_factor, min_ess, tempering, max_keep, library_stride, hybrid, tau, precision, keep_mass, search,
    sparse_cells, sparse_power :
        sampler settings (:class:`~oceanda.analysis.settings.SamplerSettings`; ``spread_factor`` acts in local and
        hybrid modes)
    seed : per-time random streams ``[seed, t]`` (the hybrid's static ensemble: ``[seed, 99]``); None = fresh
    cache_dir : where library embeddings are cached (default ``io.cache_root()/library_cache``)
    allowed_positions : boolean ``[ny, nx]`` window starts allowed in the library (local and hybrid modes)
    scheduler : None = local threads; an address = an existing dask.distributed cluster; ``local:N`` = a
        LocalCluster of N worker processes for this run; or a ``distributed.Client``
    batch, quiet : times per batch of local threads; no progress bars
    command : recorded in the ``command`` attribute (default: this process's command line)
    times : indices of the times of ``obs`` to analyse (default: all; of every Dataset of a list)
    with_local : mode ``hybrid``: also return ``(hybrid, local)``, its Kalman backgrounds = mode ``local``'s result
    obs_window : mode ``hybrid``: days of observations in each Kalman step (``HybridSettings.obs_window``; None: the
        model's)

    Returns
    -------
    xarray.Dataset (:func:`~oceanda.analysis.result.analyses_to_dataset`); a list for a list ``obs``; ``with_local``: a pair
    """
    model_dir = Path(model) if isinstance(model, (str, Path)) else None
    model, enc = load_model(model_dir) if model_dir is not None else model
    if cache_dir is None:  # a user cache, never the model folder: inputs are not modified
        cache_dir = io.cache_root() / CACHE_DIRNAME
    many = isinstance(obs, (list, tuple))
    lib = library if isinstance(library, Library) else Library(library)
    check_model_grid(enc, lib, lib.source)
    lib, obs_list = _in_model_units(enc, lib, list(obs) if many else [obs])
    settings = _settings(model, model_dir, lib, members=members, top_k=top_k, tau=tau, spread_factor=spread_factor,
                         min_ess=min_ess, tempering=tempering, max_keep=max_keep, library_stride=library_stride,
                         hybrid=hybrid, precision=precision, keep_mass=keep_mass, search=search,
                         sparse_cells=sparse_cells, sparse_power=sparse_power, obs_window=obs_window)
    sampler = _keeping_local(sampler_for(mode, enc, settings, allowed_positions), with_local, obs_window)
    inputs = [sampler.read_obs(o, lib, times) for o in obs_list]
    labels = [f"{_source(o, i if many else None)} {x.label}".strip()  # how a failure names its time
              for i, (o, per) in enumerate(zip(obs_list, inputs)) for x in per]
    with _client(scheduler) as client:
        t0 = _time.perf_counter()
        with embedding_client(client):
            sampler.prepare(lib, cache_dir=cache_dir, quiet=quiet, seed=seed)
        setup_seconds = _time.perf_counter() - t0
        flat = [x for per in inputs for x in per]
        analyses = analyse_times(sampler, flat, seed=seed, scheduler=client, batch=batch, quiet=quiet, labels=labels)
    attrs = dict(seconds=(_time.perf_counter() - t0) / max(len(flat), 1), setup_seconds=setup_seconds, command=command)
    out = _datasets(sampler, inputs, analyses, **attrs)
    return _shaped(out, _local_datasets(sampler, inputs, analyses, attrs) if with_local else None, many)


def _shaped(out: list[xr.Dataset], local: list[xr.Dataset] | None, many: bool) -> Any:
    """:func:`assimilate`'s result: a Dataset (a list for a list of obs), paired with the local ones if any."""
    if local is None:
        return out if many else out[0]
    return (out, local) if many else (out[0], local[0])


def _keeping_local(sampler: Sampler, with_local: bool, obs_window: int | None = None) -> Sampler:
    """``sampler``, set to keep its local analyses when ``with_local``; both that and ``obs_window``: a hybrid's only."""
    if obs_window is not None and sampler.mode != "hybrid":
        raise ConfigurationError(f"obs_window={obs_window}: a setting of mode 'hybrid' (its Kalman step); got mode "
                                 f"'{sampler.mode}'")
    if with_local:
        if sampler.mode != "hybrid":
            raise ConfigurationError(f"with_local=True: expected mode 'hybrid' (its local backgrounds); got mode "
                                     f"'{sampler.mode}'")
        sampler.keep_local = True
    return sampler


def _local_datasets(sampler: Sampler, inputs: Sequence[Sequence[TimeObs]], analyses: Sequence[Analysis],
                    attrs: dict[str, Any]) -> list[xr.Dataset]:
    """The hybrid's local analyses as mode ``local``'s Datasets; their seconds the local part's share."""
    if any(a.local is None for a in analyses):
        raise OceandaError("with_local=True: an analysis came back without its local analysis (a sampler that does "
                           "not keep them)")
    share = float(np.mean([a.local_share for a in analyses])) if analyses else 0.0
    return _datasets(sampler, inputs, [a.local for a in analyses], **{**attrs, "seconds": attrs["seconds"] * share},
                     as_local=True)


def _settings(model: Any, model_dir: Path | None, lib: Library, obs_window: int | None = None,
              **given: Any) -> SamplerSettings:
    """The run's sampler settings (:func:`resolve_settings`; ``obs_window``: the hybrid's), a reachable tempering target."""
    settings = resolve_settings(model, str(model_dir / "config.json") if model_dir is not None else "model config",
                                **given)
    if obs_window is not None:
        settings = settings.replace(hybrid=settings.hybrid.replace(obs_window=obs_window))
    if settings.tempering and settings.min_ess is not None and settings.min_ess > lib.n:
        raise ConfigurationError(f"min_ess={settings.min_ess:g} (--min-ess); expected at most the {lib.n} states of "
                                 f"{lib.source}: tempering can never reach a larger effective sample size")
    return settings


def _in_model_units(enc: Any, lib: Library, obs_list: list[xr.Dataset]) -> tuple[Library, list[xr.Dataset]]:
    """The library (converted once) and every observation Dataset in the model's units (:func:`to_model_units`)."""
    if not obs_list:
        return lib, []
    lib, first = to_model_units(enc, lib, obs_list[0])  # a cm library for a model trained in m: converted (or refused)
    return lib, [first, *[obs_in_model_units(enc, o) for o in obs_list[1:]]]


def _datasets(sampler: Sampler, inputs: Sequence[Sequence[TimeObs]], analyses: Sequence[Analysis], seconds: float,
              setup_seconds: float, command: str | None, as_local: bool = False) -> list[xr.Dataset]:
    """One analysis Dataset per observation Dataset, from the analyses of all their times (in order).

    ``as_local``: the hybrid sampler's local analyses, described as mode ``local`` describes its own.
    """
    out, a = [], 0
    for per in inputs:  # the sampler's library: states NaN outside the land may have been dropped from it
        these, a = analyses[a:a + len(per)], a + len(per)
        out.append(analyses_to_dataset(these, sampler.library, np.asarray([o.time for o in per]),
                                       _attrs(sampler, these, seconds, setup_seconds, command, as_local)))
    return out


def _source(obs: xr.Dataset, i: int | None) -> str:
    """How errors name an observation Dataset: its file(s), else its position in the list."""
    files = obs.encoding.get("oceanda_sources") or []
    return " + ".join(map(str, files)) or ("observations" if i is None else f"observations[{i}]")


def _attrs(sampler: Sampler, analyses: Sequence[Analysis], seconds: float, setup_seconds: float,
           command: str | None, as_local: bool = False) -> dict[str, Any]:
    describe, geometry = sampler.describe(), sampler.geometry()
    if as_local:
        describe.update(mode="local", method="contrastive-local")
        geometry = LocalSampler.geometry(sampler)
    return {**describe, "members": int(analyses[0].members.shape[0]) if analyses else 0,
            "seconds_per_analysis": float(seconds), "setup_seconds": float(setup_seconds),
            "spread_factor": float(sampler.settings.spread_factor),
            "command": command if command is not None else _command(), **geometry}


def _rng(seed: int | None, index: int) -> np.random.Generator:
    """The random stream of a time: ``[seed, t]``, whichever process analyses it."""
    return np.random.default_rng(None if seed is None else [seed, index])


def analyse_times(sampler: Sampler, inputs: Sequence[TimeObs], *, seed: int | None = 0, scheduler: Any = None,
                  batch: int = 4, quiet: bool = True, labels: Sequence[str] | None = None) -> list[Analysis]:
    """Analyses of a prepared sampler at every input time, in local threads or on dask.distributed workers.

    Parameters
    ----------
    sampler : a sampler after ``prepare(library)``
    inputs : the times (:meth:`~oceanda.analysis.samplers.Sampler.read_obs`)
    seed : per-time random streams ``[seed, TimeObs.index]`` (None: fresh)
    scheduler : None (local threads), an address, ``local:N`` or a ``distributed.Client``
    batch : times per batch of local threads
    quiet : no progress bar
    labels : how errors name each time (default: ``time <t>``)

    Returns
    -------
    list of :class:`~oceanda.analysis.result.Analysis`, in the order of ``inputs``
    """
    labels = list(labels) if labels is not None else [x.label or f"time index {x.index}" for x in inputs]
    with _client(scheduler) as client:
        if client is not None:
            return _run_distributed(client, _Remote(sampler, seed), inputs, labels, quiet)
        return _run_times(lambda k: sampler.analyse(inputs[k], _rng(seed, inputs[k].index)), len(inputs), batch, quiet)


def _run_times(fn, n: int, batch: int, quiet: bool) -> list:
    """Run ``fn(k)`` for every time in batches of dask tasks on local threads."""
    import dask

    results: list = [None] * n
    bar = _progress(n, quiet, "analyses")
    try:
        for a in range(0, n, max(batch, 1)):
            ks = list(range(a, min(a + batch, n)))
            out = dask.compute(*[dask.delayed(fn)(k) for k in ks], scheduler="threads" if len(ks) > 1 else "sync")
            for k, r in zip(ks, out):
                results[k] = r
            bar.update(len(ks))
    finally:
        bar.close()
    return results


@contextlib.contextmanager
def _client(scheduler: Any):
    """A ``distributed.Client`` for ``scheduler`` (closed after; a given Client is left open), or None."""
    if scheduler is None or isinstance(scheduler, str) and scheduler == "":
        yield None
        return
    if not isinstance(scheduler, str):
        yield scheduler  # a distributed.Client of the caller's
        return
    from distributed import Client

    n = local_workers(scheduler)
    if n is None:
        try:
            client = Client(scheduler, timeout=30)
        except (OSError, ValueError, TypeError, TimeoutError) as exc:
            raise ConfigurationError(f"scheduler={scheduler!r}: {' '.join(str(exc).split())}; expected the address "
                                     "of a running dask.distributed scheduler, e.g. tcp://host:8786") from None
        with client:
            yield client
        return
    with local_cluster(n) as cluster, Client(cluster) as client:
        yield client


def local_cluster(n: int):
    """A ``distributed.LocalCluster`` of ``n`` single-threaded worker processes (``--scheduler local:N``).

    Bound to localhost, with the dashboard (if bokeh is installed) on a free port, so runs never clash.
    Why not dask's worker defaults as they are: its ``MALLOC_TRIM_THRESHOLD_`` fixes glibc's mmap
    threshold, so every large numpy temporary is mapped afresh -- a local analysis cost 1.7x the CPU
    on a worker (0.47 against 0.28 CPU-s on the sample) -- and its statistical profiler (every 10 ms)
    took another 15-25 %; both are off here. BLAS and OpenMP stay at one thread per worker.

    Parameters
    ----------
    n : worker processes

    Returns
    -------
    distributed.LocalCluster (close it, or use it as a context manager)
    """
    import dask
    from distributed import LocalCluster

    env = {k: v for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ", None) or {}).items()
           if k != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env, "distributed.worker.profile.enabled": False}):
        return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address="127.0.0.1:0")


def local_workers(scheduler: str) -> int | None:
    """N of ``local:N`` (a LocalCluster of N worker processes), or None for an address.

    Raises
    ------
    ConfigurationError : ``local:`` followed by anything but an integer from 1 to 1024
    """
    if not scheduler.startswith(LOCAL_PREFIX):
        return None
    tail = scheduler[len(LOCAL_PREFIX):]
    if not tail.isdigit() or not 1 <= int(tail) <= 1024:
        raise ConfigurationError(f"scheduler={scheduler!r}: '{tail}' is not a number of workers; expected "
                                 "local:N with N an integer from 1 to 1024 (or a scheduler address)")
    return int(tail)


class _Remote:
    """What a worker needs to rebuild the client's prepared sampler: sent once, prepared once per worker.

    The library travels without its states in memory (it reads them from its file) but with the
    embeddings the client computed, so a worker never re-embeds and weights exactly what the client would.
    """

    _lock = threading.Lock()

    def __init__(self, sampler: Sampler, seed: int | None):
        self.encoders, self.settings, self.mode = sampler.encoders, sampler.settings, sampler.mode
        self.allowed = getattr(sampler, "allowed_positions", None)
        self.library, self.seed = sampler.library, seed
        self.keep_local = getattr(sampler, "keep_local", False)  # with_local: the workers keep them too
        self._prepared: Sampler | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_prepared": None}

    def sampler(self) -> Sampler:
        with self._lock:  # one preparation per worker, whatever its thread count
            if self._prepared is None:
                import torch

                torch.set_num_threads(1)  # single-threaded, as the library embedding tasks
                s = _keeping_local(sampler_for(self.mode, self.encoders, self.settings, self.allowed),
                                   self.keep_local)
                self._prepared = s.prepare(self.library, cache_dir=None, quiet=True, seed=self.seed)
        return self._prepared


def _analyse_remote(remote: _Remote, obs: TimeObs) -> tuple[Analysis, list]:
    """A dask task: one time's analysis, with the warnings it raised (re-issued by the client)."""
    sampler = remote.sampler()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = sampler.analyse(obs, _rng(remote.seed, obs.index))
    return a, [(w.category, str(w.message)) for w in caught]


def _run_distributed(client, remote: _Remote, inputs: Sequence[TimeObs], labels: Sequence[str],
                     quiet: bool) -> list[Analysis]:
    """Every time as a task on ``client``'s workers (the sampler sent once); a few per worker in flight."""
    results: list = [None] * len(inputs)
    if not inputs:
        return results
    bar = _progress(len(inputs), quiet, "analyses (dask)")

    def done(k: int, fut) -> None:
        results[k] = _result(fut, labels[k])
        bar.update(1)

    try:  # bounded: observations and analyses not all at once
        run_tasks(client, _analyse_remote, [remote], [(o,) for o in inputs], done, lambda k: labels[k],
                  limit=max(2 * sum(client.nthreads().values()), 2))
    finally:
        bar.close()
    return results


def _result(fut, label: str) -> Analysis:
    """A task's analysis, its warnings re-issued here; a worker's failure is one line naming the time."""
    try:
        analysis, caught = fut.result()
    except OceandaError as exc:
        msg = f"{label}: {exc}"
        try:
            err = type(exc)(msg)
        except Exception:  # noqa: BLE001 -- an error class with another signature
            err = OceandaError(msg)
        raise err from None
    except Exception as exc:  # noqa: BLE001 -- a lost worker, a bug on a worker: named, one line
        raise OceandaError(f"{label}: analysis failed on a dask worker ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())}); expected workers that can run oceanda and read the "
                           "library file") from None
    for category, message in caught:
        warnings.warn(message, category, stacklevel=2)
    return analysis


def _command() -> str:
    from oceanda.io import command_line

    return command_line()
