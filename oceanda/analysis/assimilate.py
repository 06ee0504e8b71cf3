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

import hashlib
import time as _time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from oceanda import fields
from oceanda.analysis.encoding import EncoderPair
from oceanda.analysis.global_mode import analyse_global
from oceanda.analysis.hybrid import (
    HybridConfig,
    grid_localizer_for,
    grid_points,
    hybrid_update,
    static_states,
)
from oceanda.analysis.library import CACHE_DIRNAME, Library
from oceanda.analysis.local_mode import WindowLibrary, analyse_local
from oceanda.errors import DataValidationError, GridMismatchError, OceandaError

MODES = ("global", "local", "hybrid")

#: Attribute marking per-time diagnostics that are not gridded fields (skipped by io validation).
DIAGNOSTIC_ATTR = "oceanda_diagnostic"


def model_fingerprint(model) -> str:
    """Hash of the weights and the configuration of a model."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    import json

    h.update(json.dumps({k: v for k, v in model.config.items() if k != "oceanda_version"}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()[:16]


def load_model(model_dir) -> tuple[Any, EncoderPair]:
    """``(ContrastiveModel, EncoderPair)`` from a checkpoint directory."""
    from oceanda.contrastive.model import ContrastiveModel

    model = ContrastiveModel.load(model_dir)
    return model, EncoderPair.from_model(model, key=model_fingerprint(model))


def check_model_grid(encoders: EncoderPair, library: Library, what: str) -> None:
    """Refuse a model trained on another grid (or other variables) than the library's."""
    expected = encoders.grid_fingerprint
    if not expected:
        return
    state_vars = list(dict.fromkeys(v for v, _ in encoders.state_channels))
    obs_vars = list(dict.fromkeys(v for v, _ in encoders.obs_channels))
    candidates = [state_vars, list(dict.fromkeys(state_vars + obs_vars)), library.variables]
    ds = library.ds
    for vs in candidates:  # on the whole Dataset and on the encoded variables alone (no unrelated level dim)
        if all(v in ds.data_vars for v in vs) and expected in (fields.grid_fingerprint(ds, vs),
                                                               fields.grid_fingerprint(ds[vs], vs)):
            return
    vs = [v for v in state_vars if v in ds.data_vars] or library.variables
    fields.check_fingerprint(expected, ds, vs, what)  # raises GridMismatchError with the details
    raise GridMismatchError(f"{what}: the model encodes {state_vars}, which the library lacks")  # pragma: no cover


def obs_arrays(obs: xr.Dataset, encoders: EncoderPair, shape: tuple[int, int], source: str = "observations") -> np.ndarray:
    """Gridded observations -> ``[T, C_obs, Y, X]`` in the model's observed-channel order (NaN kept)."""
    if "obs" in obs.dims:
        raise DataValidationError(f"{source}: point observations (dim 'obs'); the contrastive sampler expects "
                                  "gridded observations with NaN where unobserved")
    names = list(dict.fromkeys(v for v, _ in encoders.obs_channels))
    missing = [v for v in names if v not in obs.data_vars]
    if missing:
        raise DataValidationError(f"{source}: missing observed variable(s) {missing}; the model encodes {names}")
    layout = fields.layout_of(obs, names)
    sp = layout.spatial
    if (obs.sizes[sp[0]], obs.sizes[sp[1]]) != tuple(shape):
        raise GridMismatchError(f"{source}: grid {obs.sizes[sp[0]]} x {obs.sizes[sp[1]]}; expected the library grid "
                                f"{shape[0]} x {shape[1]}")
    arr, _ = fields.to_array(obs, layout)
    from oceanda.analysis.encoding import channel_index

    return arr[:, channel_index(layout, encoders.obs_channels, source)]


def _progress(total: int, quiet: bool, desc: str):
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=quiet or not sys.stderr.isatty())


def assimilate(
    model: Any,
    library: Library | xr.Dataset,
    obs: xr.Dataset,
    *,
    mode: str | None = None,
    members: int = 20,
    top_k: int = 10,
    seed: int | None = 0,
    cache_dir: str | Path | None = None,
    spread_factor: float | None = None,
    min_ess: float | None = None,
    tempering: bool = False,
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

    ``model`` is a model directory or a ``(ContrastiveModel, EncoderPair)`` pair; the library's
    embeddings are cached under ``cache_dir`` (default ``<model dir>/library_cache``). ``mode``
    defaults to ``local`` for window models and ``global`` for whole-field models. ``spread_factor``
    (default: the model's ``extra.spread_factor``, else 1) rescales ensemble deviations (local and
    hybrid modes). ``tau`` (default: the model's ``extra.tau`` if tuned, else the trained temperature)
    sets the temperature of the weights. ``scheduler``: None = threads; an address = an existing
    dask.distributed cluster.
    """
    model_dir = None
    if isinstance(model, (str, Path)):
        model_dir = Path(model)
        model, enc = load_model(model_dir)
    else:
        model, enc = model
    if cache_dir is None and model_dir is not None:
        cache_dir = model_dir / CACHE_DIRNAME
    lib = library if isinstance(library, Library) else Library(library)
    check_model_grid(enc, lib, lib.source)
    if mode is None:
        mode = "local" if enc.is_window_model else "global"
    if mode not in MODES:
        raise OceandaError(f"mode '{mode}'; expected one of {list(MODES)}")
    if mode in ("local", "hybrid") and not enc.is_window_model:
        raise OceandaError(f"mode '{mode}' needs a window model (config extra.window); this model encodes whole fields "
                           "-- use --mode global")
    if mode == "global" and enc.is_window_model:
        raise OceandaError("mode 'global' needs a whole-field model; this model encodes windows -- use --mode local")
    if members < 1:
        raise OceandaError(f"members={members}; expected at least 1")
    extra = model.config.get("extra") or {}
    if tau is None:  # a temperature tuned on a tuning run (extra.tau) overrides the trained one
        tau = extra.get("tau")
    if tau is not None:
        import copy

        enc = copy.copy(enc)
        enc.tau = float(tau)
    if spread_factor is None:
        spread_factor = float(extra.get("spread_factor", 1.0))
    y_all = obs_arrays(obs, enc, lib.shape)
    tidx = np.arange(y_all.shape[0]) if times is None else np.asarray(times, dtype=np.int64)
    obs_times = obs["time"].values[tidx] if "time" in obs.coords else tidx
    t0 = _time.perf_counter()

    # -- library embeddings (once; cached next to the model) --
    if mode == "global":
        z_lib = lib.embeddings(lambda s: enc.embed_state(s, lib.layout), key=f"{enc.key}-global", cache_dir=cache_dir,
                               quiet=quiet)
        wlib = None
    else:
        lib.load()  # in memory when it fits (2 GB): windows are then views, not gathered copies
        wlib = WindowLibrary(lib, enc.window, stride=library_stride or extra.get("library_stride"),
                             allowed=allowed_positions)
        z_lib = wlib.embeddings(lambda w: enc.embed_state(w, lib.layout), enc.key, cache_dir=cache_dir, quiet=quiet)
    setup_seconds = _time.perf_counter() - t0
    hyb = hybrid or HybridConfig(**(extra.get("hybrid") or {}))
    static = localizer = None
    obs_list = None
    if mode == "hybrid":
        from oceanda.kalman.obsspace import observations_from_dataset

        static = static_states(lib, hyb.static_members, np.random.default_rng([0 if seed is None else seed, 99]))
        localizer = grid_points(lib.ds, enc.window.periodic) if hyb.kalman == "schur" else \
            grid_localizer_for(lib.ds, hyb.radius, enc.window.periodic)
        obs_list = observations_from_dataset(obs.isel(time=tidx) if "time" in obs.dims else obs, lib.layout, lib.ds,
                                             variables=list(dict.fromkeys(v for v, _ in enc.obs_channels)))

    def one(k: int) -> dict:
        rng = np.random.default_rng(None if seed is None else [seed, int(tidx[k])])
        y = y_all[tidx[k]]
        if mode == "global":
            z_o = enc.embed_obs(y[None])[0]
            g = analyse_global(z_o, lib, z_lib, kind=enc.kind, tau=enc.tau, members=members, rng=rng, top=top_k,
                               max_keep=max_keep, min_ess=min_ess, tempering=tempering, where=f"time {obs_times[k]}")
            return {"members": g.members, "mean": g.mean, "spread": np.sqrt(g.variance), "ess": g.posterior.ess,
                    "dropped": g.posterior.dropped_mass, "post": g.posterior}
        la = analyse_local(y, wlib, z_lib, enc.embed_obs, kind=enc.kind, tau=enc.tau, members=members, rng=rng,
                           spread_factor=spread_factor, max_keep=max_keep or 8192, min_ess=min_ess, tempering=tempering)
        out = {"members": la.members, "mean": la.mean, "ess": float(np.mean(la.ess)),
               "dropped": float(np.mean(la.dropped_mass))}
        if mode == "hybrid":
            Ea = hybrid_update(la.mean, la.members, obs_list[k], localizer=localizer, static=static, config=hyb, rng=rng)
            pick = np.sort(rng.choice(len(Ea), size=min(members, len(Ea)), replace=False)) if len(Ea) > members \
                else np.arange(len(Ea))
            mean = Ea.mean(axis=0)
            sub = Ea[pick]
            spread = Ea.std(axis=0, ddof=1) if len(Ea) > 1 else np.zeros_like(mean)
            out.update(members=sub.astype(np.float32), mean=mean.astype(np.float32), spread=spread.astype(np.float32),
                       background_mean=la.mean, background_spread=la.spread)
        return out

    results = _run_times(one, len(tidx), scheduler, batch, quiet)
    seconds = (_time.perf_counter() - t0) / max(len(tidx), 1)
    return _to_dataset(results, lib, obs_times, mode, members, top_k, enc, model, seconds, setup_seconds,
                       spread_factor, hyb if mode == "hybrid" else None, command, obs)


def _run_times(fn, n: int, scheduler: str | None, batch: int, quiet: bool) -> list[dict]:
    """Run ``fn(k)`` for every time: in batches of dask tasks (threads, or a distributed cluster)."""
    import dask

    results: list[dict | None] = [None] * n
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


def _diag(values, dims, long_name: str, units: str = "1") -> xr.DataArray:
    return xr.DataArray(values, dims=dims, attrs={"long_name": long_name, "units": units, DIAGNOSTIC_ATTR: 1})


def _to_dataset(results, lib: Library, times, mode, members, top_k, enc, model, seconds, setup_seconds,
                spread_factor, hyb, command, obs) -> xr.Dataset:
    mem = np.stack([r["members"] for r in results])  # [T, M, C, Y, X]
    attrs = {
        "mode": mode,
        "method": f"contrastive-{mode}",
        "model_fingerprint": enc.key,
        "grid_fingerprint": str(enc.grid_fingerprint or ""),
        "library_fingerprint": lib.fingerprint,
        "library_size": int(lib.n),
        "similarity": enc.kind,
        "tau": float(enc.tau),
        "members": int(mem.shape[1]),
        "seconds_per_analysis": float(seconds),
        "setup_seconds": float(setup_seconds),
        "spread_factor": float(spread_factor),
        "command": command if command is not None else _command(),
    }
    if enc.window is not None:
        attrs.update({f"window_{k}": int(v) for k, v in enc.window.to_dict().items()})
    if hyb is not None:
        attrs.update({f"hybrid_{k}": (v if isinstance(v, str) else float(v)) for k, v in hyb.to_dict().items()})
    like = lib.ds.isel({lib.sample_dim: 0}, drop=True) if lib.sample_dim != "time" else lib.ds
    ds = fields.analysis_dataset(mem, lib.layout, like, times, attrs=attrs)
    # the weighted moments are better estimates than those of the M resampled members
    for key in ("mean", "spread"):
        if all(key in r for r in results):
            arr = np.stack([r[key] for r in results])
            rebuilt = fields.from_array(arr, lib.layout, like, sample_coord=np.asarray(times), sample_dim="time")
            for v in lib.layout.variables:
                ds[f"{v}_{key}"].values[...] = rebuilt[v].transpose(*ds[f"{v}_{key}"].dims).values
    if mode == "hybrid":  # the contrastive (local) background of the Kalman step, for diagnostics
        for key in ("mean", "spread"):
            arr = np.stack([r[f"background_{key}"] for r in results])
            rebuilt = fields.from_array(arr, lib.layout, like, sample_coord=np.asarray(times), sample_dim="time")
            for v in lib.layout.variables:
                da = rebuilt[v]
                da.attrs = {"units": lib.layout.attrs.get(v, {}).get("units", "1"), DIAGNOSTIC_ATTR: 1,
                            "long_name": f"local contrastive analysis {key} of {v} (background of the Kalman step)"}
                ds[f"{v}_background_{key}"] = da
    ds["ess"] = _diag(np.array([r["ess"] for r in results]), ("time",),
                      "effective sample size of the posterior weights" + (" (mean over windows)" if mode != "global" else ""))
    ds["dropped_mass"] = _diag(np.array([r["dropped"] for r in results]), ("time",),
                               "posterior weight dropped by truncation" + (" (mean over windows)" if mode != "global" else ""))
    if mode == "global":
        K = max(len(r["post"].top_indices) for r in results)
        P = max(len(r["post"].indices) for r in results)
        ri = np.full((len(results), K), -1, np.int64)
        rs = np.full((len(results), K), np.nan)
        wi = np.full((len(results), P), -1, np.int64)
        ww = np.zeros((len(results), P))
        for t, r in enumerate(results):
            p = r["post"]
            ri[t, :len(p.top_indices)] = p.top_indices
            rs[t, :len(p.top_scores)] = p.top_scores
            wi[t, :len(p.indices)] = p.indices
            ww[t, :len(p.weights)] = p.weights
        ds["retrieved_index"] = _diag(ri, ("time", "rank"), "library index of the top-K retrieved states (best first; -1 = none)")
        ds["retrieved_score"] = _diag(rs, ("time", "rank"), "similarity / tau of the retrieved states")
        lib_t = lib.ds[lib.sample_dim].values if lib.sample_dim in lib.ds.coords else np.arange(lib.n)
        rt = np.where(ri >= 0, lib_t[np.maximum(ri, 0)], np.array(np.nan).astype(lib_t.dtype) if np.issubdtype(lib_t.dtype, np.datetime64) else -1)
        ds["retrieved_time"] = xr.DataArray(rt, dims=("time", "rank"), attrs={"long_name": "library time of the retrieved states",
                                                                             DIAGNOSTIC_ATTR: 1})
        ds["weight_index"] = _diag(wi, ("time", "particle"), "library index of each state with non-negligible weight (-1 = padding)")
        ds["weight"] = _diag(ww, ("time", "particle"), "posterior weight softmax(s / tau) after truncation; sums to 1 per time")
        ds = ds.assign_coords(rank=np.arange(K), particle=np.arange(P))
    return ds


def _command() -> str:
    from oceanda.io import command_line

    return command_line()
