"""Sampler objects: an encoder pair and settings, prepared once on a library, then one analysis per time.

Why objects: the work of a contrastive analysis splits into what is done once per library (embed it,
cut it into windows, draw the hybrid's static ensemble and build its localizer) and what is done per
observation time (embed the observations, weight, resample). ``prepare(library)`` holds the first,
``analyse(obs, rng) -> Analysis`` the second, so a caller can batch or distribute the times
(:func:`oceanda.analysis.assimilate.assimilate` runs them as dask tasks) or cycle them one by one.

- :class:`GlobalSampler`: whole states weighted against the library (the paper's algorithm; whole-field models).
- :class:`LocalSampler`: window posteriors blended with a taper (window models; the default on grids).
- :class:`HybridSampler`: the local analysis as the background of an EnOI / LETKF update.

``read_obs`` turns an observation Dataset into the per-time inputs (:class:`TimeObs`) a sampler needs.
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from oceanda.analysis.encoding import EncoderPair, obs_arrays, obs_error_arrays
from oceanda.analysis.global_mode import analyse_global
from oceanda.analysis.hybrid import hybrid_update, kalman_window, localizer_for, static_states
from oceanda.analysis.library import Library
from oceanda.analysis.local_mode import LocalAnalysis, WindowLibrary, analyse_local, prepare_fast, window_tau
from oceanda.analysis.result import Analysis
from oceanda.analysis.search import WindowIndex
from oceanda.analysis.settings import LOCAL_KEEP_MASS, SamplerSettings
from oceanda.errors import OceandaError
from oceanda.settings import check_choice

#: The sampler modes, by name.
MODES = ("global", "local", "hybrid")


@dataclass(frozen=True)
class TimeObs:
    """One time's observations as a sampler reads them.

    Attributes
    ----------
    values : ``[C_obs, Y, X]`` in the model's observed-channel order, NaN where unobserved
    index : position of the time in the observation Dataset (seeds its random stream)
    time : the time coordinate value
    kalman : the same observations as :class:`oceanda.kalman.Observations` (hybrid mode), else None
    errors : their error std ``[C_obs, Y, X]`` (models with an error channel), else None
    """

    values: np.ndarray
    index: int = 0
    time: Any = None
    kalman: Any = None
    errors: np.ndarray | None = None

    @property
    def label(self) -> str:
        """How warnings name this time."""
        return f"time {self.time}" if self.time is not None else ""


class Sampler:
    """What every sampler shares: an encoder pair, settings, the temperature, the inputs and the attributes.

    Parameters
    ----------
    encoders : the model's :class:`~oceanda.analysis.encoding.EncoderPair`
    settings : the sampler settings (default: :class:`~oceanda.analysis.settings.SamplerSettings`)
    """

    mode: ClassVar[str] = ""

    def __init__(self, encoders: EncoderPair, settings: SamplerSettings | None = None):
        self._check_model(encoders)
        self.encoders = encoders
        self.settings = settings if settings is not None else SamplerSettings()
        self.tau = self.settings.temperature(encoders.tau)
        self.library: Library | None = None
        self.embeddings: np.ndarray | None = None

    def _check_model(self, encoders: EncoderPair) -> None:
        """Refuse an encoder pair of the wrong kind (whole-field vs window)."""

    def prepare(self, library: Library | xr.Dataset, cache_dir=None, quiet: bool = True, seed: int | None = 0):
        """Do the once-per-library work (embeddings, windows, static ensemble).

        Parameters
        ----------
        library : a :class:`~oceanda.analysis.library.Library` or a Dataset of states
        cache_dir : where the embeddings are cached (None: not cached)
        quiet : no progress bar
        seed : seed of the once-per-library draws (the hybrid's static ensemble)

        Returns
        -------
        self
        """
        raise NotImplementedError

    def analyse(self, obs: TimeObs | np.ndarray, rng: np.random.Generator) -> Analysis:
        """Analysis of one time.

        Parameters
        ----------
        obs : a :class:`TimeObs` (:meth:`read_obs`), or the observed values ``[C_obs, Y, X]``
        rng : the random stream of this time

        Returns
        -------
        Analysis
        """
        raise NotImplementedError

    def read_obs(self, obs: xr.Dataset, library: Library, times: Sequence[int] | None = None) -> list[TimeObs]:
        """The per-time inputs of :meth:`analyse` from gridded observations.

        Parameters
        ----------
        obs : gridded observations on the library grid (NaN where unobserved)
        library : the library (its grid)
        times : indices of the times to analyse (default: all)

        Returns
        -------
        list of :class:`TimeObs`
        """
        y_all = obs_arrays(obs, self.encoders, library.shape)
        _check_errors(obs, self.encoders)
        e_all = obs_error_arrays(obs, self.encoders, y_all) if self.encoders.error_channel else None
        tidx = np.arange(y_all.shape[0]) if times is None else np.asarray(times, dtype=np.int64)
        obs_times = obs["time"].values[tidx] if "time" in obs.coords else tidx
        return [TimeObs(y_all[t], int(t), ot, errors=None if e_all is None else e_all[t])
                for t, ot in zip(tidx, obs_times)]

    def _input(self, obs: TimeObs | np.ndarray) -> TimeObs:
        if self.library is None:
            raise OceandaError(f"{type(self).__name__}: call prepare(library) before analyse()")
        return obs if isinstance(obs, TimeObs) else TimeObs(np.asarray(obs))

    def describe(self) -> dict[str, Any]:
        """Attributes naming the method, the model, the library and the temperature (for the output Dataset).

        Returns
        -------
        dict
        """
        enc, lib = self.encoders, self.library
        return {"mode": self.mode, "method": f"contrastive-{self.mode}", "model_fingerprint": enc.key,
                "grid_fingerprint": str(enc.grid_fingerprint or ""), "library_fingerprint": lib.fingerprint,
                "library_content_hash": lib.content_hash, "library_size": int(lib.n), "similarity": enc.kind,
                "tau": float(self.tau)}

    def geometry(self) -> dict[str, Any]:
        """Attributes of the window geometry and the hybrid's settings (none for whole fields).

        Returns
        -------
        dict
        """
        return {}


class GlobalSampler(Sampler):
    """Whole states weighted against the library: softmax(s(x_i, y) / tau) over every library state.

    Parameters
    ----------
    encoders : a whole-field :class:`~oceanda.analysis.encoding.EncoderPair`
    settings : the sampler settings (default: :class:`~oceanda.analysis.settings.SamplerSettings`)
    """

    mode: ClassVar[str] = "global"

    def _check_model(self, encoders: EncoderPair) -> None:
        if encoders.is_window_model:
            raise OceandaError("mode 'global' needs a whole-field model (oceanda train --kind field); this model encodes "
                               "windows -- use --mode local or --mode hybrid")

    def read_obs(self, obs: xr.Dataset, library: Library, times: Sequence[int] | None = None) -> list[TimeObs]:
        """As :meth:`Sampler.read_obs`; a model trained on N days of observations (``--obs-days N``) sees
        the N days up to each time, stacked as in training (:func:`oceanda.pairs.stack_obs_window`).

        Parameters
        ----------
        obs, library, times : as :meth:`Sampler.read_obs`

        Returns
        -------
        list of :class:`TimeObs` (values ``[N * C_obs, Y, X]``)
        """
        inputs = super().read_obs(obs, library, times)
        if self.encoders.obs_days <= 1:
            return inputs
        from oceanda.pairs import stack_obs_window, time_axis

        days, seg = time_axis(obs)
        y_all = obs_arrays(obs, self.encoders, library.shape)
        stacked = stack_obs_window(y_all, np.asarray([o.index for o in inputs]), self.encoders.obs_days, seg, days)
        return [TimeObs(stacked[i], o.index, o.time) for i, o in enumerate(inputs)]


    def prepare(self, library: Library | xr.Dataset, cache_dir=None, quiet: bool = True, seed: int | None = 0):
        """Embed the library once (cached under ``cache_dir``).

        Parameters
        ----------
        library : a :class:`~oceanda.analysis.library.Library` or a Dataset of states
        cache_dir : where the embeddings are cached (None: not cached)
        quiet : no progress bar
        seed : unused here (the hybrid's static ensemble)

        Returns
        -------
        self
        """
        lib = _library(library)
        enc = self.encoders
        self.library = lib
        self.embeddings = lib.embeddings(lambda s: enc.embed_state(s, lib.layout), key=f"{enc.key}-global",
                                         cache_dir=cache_dir, quiet=quiet)
        return self

    def analyse(self, obs: TimeObs | np.ndarray, rng: np.random.Generator) -> Analysis:
        """Analysis of one time.

        Parameters
        ----------
        obs : a :class:`TimeObs`, or the observed values ``[C_obs, Y, X]``
        rng : the random stream of this time (resampling)

        Returns
        -------
        Analysis with the posterior (retrieval and weights)
        """
        o = self._input(obs)
        s, enc = self.settings, self.encoders
        z_o = enc.embed_obs(o.values[None])[0]
        g = analyse_global(z_o, self.library, self.embeddings, kind=enc.kind, tau=self.tau, members=s.members, rng=rng,
                           top=s.top_k, max_keep=s.max_keep, min_ess=s.min_ess, tempering=s.tempering, where=o.label)
        return Analysis(g.members, g.mean, np.sqrt(g.variance), g.posterior.ess, g.posterior.dropped_mass,
                        posterior=g.posterior)


class LocalSampler(Sampler):
    """Window posteriors against a library of windows, blended with a partition-of-unity taper.

    Parameters
    ----------
    encoders : a window :class:`~oceanda.analysis.encoding.EncoderPair`
    settings : the sampler settings
    allowed_positions : boolean ``[ny, nx]`` map of window starts that may enter the library (default: all)
    """

    mode: ClassVar[str] = "local"

    def __init__(self, encoders: EncoderPair, settings: SamplerSettings | None = None,
                 allowed_positions: np.ndarray | None = None):
        super().__init__(encoders, settings)
        self.allowed_positions = allowed_positions
        self.windows: WindowLibrary | None = None
        self.index: WindowIndex | None = None
        #: ``'auto'`` (dense when the window table fits), ``'dense'`` or ``'loop'`` (:func:`analyse_local`)
        self.engine = "auto"

    def _check_model(self, encoders: EncoderPair) -> None:
        if not encoders.is_window_model:
            raise OceandaError(f"mode '{self.mode}' needs a window model (oceanda train --kind window); this model "
                               "encodes whole fields -- use --mode global")

    def prepare(self, library: Library | xr.Dataset, cache_dir=None, quiet: bool = True, seed: int | None = 0):
        """Load the library (when it fits), cut it into windows and embed them once (cached).

        Parameters
        ----------
        library : a :class:`~oceanda.analysis.library.Library` or a Dataset of states
        cache_dir : where the embeddings are cached (None: not cached)
        quiet : no progress bar
        seed : unused here (the hybrid's static ensemble)

        Returns
        -------
        self
        """
        if self.settings.precision == "fast":
            from oceanda.analysis import kernels
            from oceanda.analysis.local_mode import bf16_products

            bf16_products()  # a bad OCEANDA_BF16 is refused now, not after the library is embedded
            kernels.warm()  # the fast engine's compiled loops, compiled while the library loads and embeds
        lib = _library(library, load=True)  # in memory when it fits (2 GB): windows are then views
        enc = self.encoders
        self.library = lib
        self.windows = WindowLibrary(lib, enc.window, stride=self.settings.library_stride,
                                     allowed=self.allowed_positions)
        self.embeddings = self.windows.embeddings(lambda w: enc.embed_state(w, lib.layout), enc.key,
                                                  cache_dir=cache_dir, quiet=quiet)
        self.index = WindowIndex(self.embeddings, enc.kind, self.tau, self.settings.search)
        self.windows.table()  # the dense engine's window table, built once (None when it does not fit)
        if self.settings.precision == "fast":
            prepare_fast(self.windows, self.index)  # its basis and float32 rows, before analyses run on threads
        return self

    def _local(self, values: np.ndarray, rng: np.random.Generator, errors: np.ndarray | None = None) -> LocalAnalysis:
        s, enc = self.settings, self.encoders
        inputs = enc.obs_field_input(values, errors)  # the encoder's input channels, cut into windows by local mode
        wt = None
        if s.sparse_tau:
            seen = np.isfinite(np.asarray(values)).reshape(-1, *np.shape(values)[-2:]).any(axis=0)
            wt = window_tau(seen, self.windows.spec, self.tau, s.sparse_cells, s.sparse_power)
        return analyse_local(inputs, self.windows, self.embeddings, enc.embed_obs_input, kind=enc.kind, tau=self.tau,
                             members=s.members, rng=rng, spread_factor=s.spread_factor,
                             keep_mass=LOCAL_KEEP_MASS if s.keep_mass is None else s.keep_mass, max_keep=s.max_keep,
                             min_ess=s.min_ess, tempering=s.tempering, engine=self.engine, index=self.index,
                             precision=s.precision, window_tau=wt)

    def analyse(self, obs: TimeObs | np.ndarray, rng: np.random.Generator) -> Analysis:
        """Analysis of one time.

        Parameters
        ----------
        obs : a :class:`TimeObs`, or the observed values ``[C_obs, Y, X]``
        rng : the random stream of this time (coupled member quantiles)

        Returns
        -------
        Analysis (ESS and dropped mass are means over the windows)
        """
        o = self._input(obs)
        return self._analysis_of(self._local(o.values, rng, o.errors))

    @staticmethod
    def _analysis_of(la: LocalAnalysis) -> Analysis:
        """A local analysis as an :class:`Analysis` (ESS and dropped mass: means over the windows)."""
        return Analysis(la.members, la.mean, la.spread, float(np.mean(la.ess)), float(np.mean(la.dropped_mass)),
                        over_windows=True, search=la.search, recall=float(np.mean(la.recall)),
                        logit_error=None if la.logit_error is None else float(np.max(la.logit_error, initial=0.0)))

    def geometry(self) -> dict[str, Any]:
        """Attributes of the window geometry (``window_size``, ``window_stride``, ...).

        Returns
        -------
        dict
        """
        out = {f"window_{k}": int(v) for k, v in self.encoders.window.to_dict().items()}
        s = self.settings
        if s.sparse_tau:  # the per-window temperature rule (window_tau)
            out.update(tau_sparse_cells=int(s.sparse_cells), tau_sparse_power=float(s.sparse_power))
        return out


class HybridSampler(LocalSampler):
    """The local analysis as the background of a Kalman update (:func:`oceanda.analysis.hybrid.hybrid_update`).

    Parameters
    ----------
    encoders : a window :class:`~oceanda.analysis.encoding.EncoderPair`
    settings : the sampler settings (``settings.hybrid``: the Kalman side)
    allowed_positions : boolean ``[ny, nx]`` map of window starts that may enter the library (default: all)
    """

    mode: ClassVar[str] = "hybrid"

    def __init__(self, encoders: EncoderPair, settings: SamplerSettings | None = None,
                 allowed_positions: np.ndarray | None = None):
        super().__init__(encoders, settings, allowed_positions)
        self.static: np.ndarray | None = None
        self.localizer: Any = None
        #: also return each time's local analysis (``Analysis.local``): mode ``local``'s result at no extra cost,
        #: since the local analysis is the Kalman step's background drawn from the same random stream
        self.keep_local = False
        #: the observation error growth per day of the Kalman step's window (set by :meth:`read_obs`)
        self.obs_age_growth: float | None = None

    def prepare(self, library: Library | xr.Dataset, cache_dir=None, quiet: bool = True, seed: int | None = 0):
        """As :meth:`LocalSampler.prepare`, then the static ensemble and the localizer of the Kalman step.

        Parameters
        ----------
        library : a :class:`~oceanda.analysis.library.Library` or a Dataset of states
        cache_dir : where the embeddings are cached (None: not cached)
        quiet : no progress bar
        seed : seed of the static ensemble's draw (stream ``[seed, 99]``; None = 0)

        Returns
        -------
        self
        """
        super().prepare(library, cache_dir, quiet, seed)
        h = self.settings.hybrid
        self.static = static_states(self.library, h.static_members, np.random.default_rng([0 if seed is None else seed, 99]))
        self.localizer = localizer_for(self.library.ds, h, self.encoders.window.periodic)
        return self

    def read_obs(self, obs: xr.Dataset, library: Library, times: Sequence[int] | None = None) -> list[TimeObs]:
        """As :meth:`Sampler.read_obs`, with the Kalman observations of every time.

        Parameters
        ----------
        obs : gridded observations with ``<var>_error``
        library : the library (its grid and layout)
        times : indices of the times to analyse (default: all)

        Returns
        -------
        list of :class:`TimeObs`
        """
        from oceanda.kalman import observations_from_dataset

        inputs = super().read_obs(obs, library, times)
        window = self.settings.hybrid.obs_window > 1 and "time" in obs.dims
        sel = obs.isel(time=[o.index for o in inputs]) if "time" in obs.dims and not window else obs
        src = " + ".join(obs.encoding.get("oceanda_sources", [])) or "observations"
        kalman = observations_from_dataset(sel, library.layout, library.ds, source=src,
                                           variables=[v for v in dict.fromkeys(v for v, _ in self.encoders.obs_channels)
                                                      if v in obs.data_vars])
        if window:  # every time's observations, then each analysed time with the days before it
            full, self.obs_age_growth = kalman_window(kalman, library, self.settings.hybrid)
            kalman = [full[o.index] for o in inputs]
        return [replace(o, kalman=k) for o, k in zip(inputs, kalman)]

    def analyse(self, obs: TimeObs | np.ndarray, rng: np.random.Generator) -> Analysis:
        """Analysis of one time: local analysis, Kalman update, ``members`` of the updated ensemble.

        Parameters
        ----------
        obs : a :class:`TimeObs` with its Kalman observations
        rng : the random stream of this time (local members, Kalman step, member choice)

        Returns
        -------
        Analysis with the local background
        """
        o = self._input(obs)
        if o.kalman is None:
            raise OceandaError("HybridSampler.analyse: the observations lack their Kalman form; build them with read_obs")
        members = self.settings.members
        tic = _time.perf_counter()
        la = self._local(o.values, rng, o.errors)
        local_seconds = _time.perf_counter() - tic
        Ea = hybrid_update(la.mean, la.members, o.kalman, localizer=self.localizer, static=self.static,
                           config=self.settings.hybrid, rng=rng)
        pick = np.sort(rng.choice(len(Ea), size=min(members, len(Ea)), replace=False)) if len(Ea) > members \
            else np.arange(len(Ea))
        mean = Ea.mean(axis=0)
        spread = Ea.std(axis=0, ddof=1) if len(Ea) > 1 else np.zeros_like(mean)
        local = self._analysis_of(la) if self.keep_local else None
        return Analysis(Ea[pick].astype(np.float32), mean.astype(np.float32), spread.astype(np.float32),
                        float(np.mean(la.ess)), float(np.mean(la.dropped_mass)), over_windows=True,
                        background_mean=la.mean, background_spread=la.spread, search=la.search,
                        recall=float(np.mean(la.recall)), local=local,
                        logit_error=None if la.logit_error is None else float(np.max(la.logit_error, initial=0.0)),
                        local_share=None if local is None else local_seconds / max(_time.perf_counter() - tic, 1e-12))

    def geometry(self) -> dict[str, Any]:
        """Attributes of the window geometry and of the hybrid's settings (``hybrid_alpha``, ...).

        Returns
        -------
        dict
        """
        h = self.settings.hybrid
        hyb = {f"hybrid_{f.name}": (v if isinstance(v, str) else float(v))
               for f in fields(h) for v in [getattr(h, f.name)] if v is not None}
        if self.obs_age_growth is not None:  # the growth the window used (estimated from the library when not given)
            hyb["hybrid_obs_age_growth"] = self.obs_age_growth
        return {**super().geometry(), **hyb}


def _check_errors(obs: xr.Dataset, encoders: EncoderPair) -> None:
    """Refuse Inf values and NaN, Inf or non-positive ``<var>_error`` where observed, as ``oceanda enkf`` does.

    Why in every mode: only the hybrid uses the errors, but such values mean a broken file whichever
    mode reads it.
    """
    from oceanda.kalman.obsspace import check_values

    src = " + ".join(obs.encoding.get("oceanda_sources", [])) or "observations"
    for v in dict.fromkeys(v for v, _ in encoders.obs_channels):
        if v in obs.data_vars and f"{v}_error" in obs.variables:
            vals = np.asarray(obs[v].values, dtype=np.float64)
            err = np.asarray(obs[f"{v}_error"].broadcast_like(obs[v]).transpose(*obs[v].dims).values, dtype=np.float64)
            check_values(vals, err, src, v)


def _library(library: Library | xr.Dataset, load: bool = False) -> Library:
    """The library a sampler works on: its states that are NaN outside the land dropped (warned; :meth:`Library.usable`)."""
    lib = library if isinstance(library, Library) else Library(library)
    if load:
        lib.load()  # first: the value scan then reads memory, not the file again
    return lib.usable()


def sampler_for(mode: str | None, encoders: EncoderPair, settings: SamplerSettings | None = None,
                allowed_positions: np.ndarray | None = None) -> Sampler:
    """The sampler of ``mode`` (default: ``local`` for window models, ``global`` for whole-field ones).

    Parameters
    ----------
    mode : ``'global'``, ``'local'``, ``'hybrid'`` or None
    encoders : the encoder pair
    settings : the sampler settings
    allowed_positions : window starts allowed in the library (local and hybrid modes)

    Returns
    -------
    GlobalSampler, LocalSampler or HybridSampler
    """
    if mode is None:
        mode = "local" if encoders.is_window_model else "global"
    check_choice("mode", mode, MODES)
    if mode == "global":
        return GlobalSampler(encoders, settings)
    cls = LocalSampler if mode == "local" else HybridSampler
    return cls(encoders, settings, allowed_positions)
