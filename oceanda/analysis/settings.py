"""Typed settings of the contrastive sampler and its hybrid Kalman step, and where their values come from.

Why a module of its own: a sampler's settings arrive from three places -- the class defaults here
(each defined once), the calibration a checkpoint stores (``config["sampler"]``, written by
:func:`oceanda.analysis.calibration.calibrate_model_spread`; older checkpoints carry the same values as
``extra.tau`` / ``extra.spread_factor`` / ``extra.hybrid`` / ``extra.library_stride``) and what a caller
passes. :func:`stored_settings` reads the checkpoint (both forms, validated), ``Settings.replace`` lays
the caller's values on top. The temperature follows one rule, :meth:`SamplerSettings.temperature`: the
caller's, else the tuned one a checkpoint stores, else the trained temperature of the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


from oceanda.errors import ConfigurationError
from oceanda.settings import Settings, check_choice, check_number

#: Share of the posterior weight local and hybrid modes keep per analysis window (the mass criterion that
#: replaced a fixed cap of 8192 windows, which kept 22-91 % of the weight of flat posteriors).
LOCAL_KEEP_MASS = 1.0 - 1e-3
#: Memory safety cap of the loop engine (``engine='loop'``), which gathers every candidate window: 2**18
#: windows of 16 x 16 x 1 float32 are 256 MB. The dense engine needs no cap (its products read the table).
LOCAL_MAX_KEEP = 1 << 18
#: Search kinds of local mode (:class:`oceanda.analysis.search.WindowIndex`).
SEARCH_KINDS = ("auto", "exact", "flat", "ivf", "fused")
#: Local mode's arithmetic (:func:`oceanda.analysis.local_mode.analyse_local`); the first is the default.
PRECISIONS = ("fast", "exact")

#: Temperatures beyond these over- or underflow exp(similarity / tau) in float32 (NaN weights).
TAU_RANGE = (1e-6, 1e6)
#: Largest covariance scaling, inflation or spread factor: far beyond any tuned value (a typo, not a setting).
MAX_SCALING = 100.0

#: Legacy ``config["extra"]`` keys that held sampler settings before ``config["sampler"]`` (checkpoints up to 0.1.0).
LEGACY_EXTRA_KEYS = ("tau", "spread_factor", "library_stride", "hybrid")


@dataclass(frozen=True)
class HybridSettings(Settings):
    """The Kalman side of the hybrid: covariance source, EnOI scaling, localisation, member spread.

    Attributes
    ----------
    ensemble : ``'static'`` (library anomalies x ``alpha``: EnOI), ``'local'`` (the local posterior members,
        LETKF) or ``'both'`` (their union; the local anomalies x ``beta``)
    alpha, beta : scalings of the static and of the local covariance
    radius : Gaspari-Cohn half-width in the units of the grid coordinates (km on the testbeds)
    static_members : library states drawn for the static ensemble
    inflation : LETKF multiplicative inflation (``kalman='letkf'``)
    kalman : ``'schur'`` (Schur-localised EnOI in observation space) or ``'letkf'``
    spread_channels : ``'observed'`` (Kalman spread on observed channels only) or ``'all'``
    spread : ``'reduction'`` (contrastive spread x Kalman variance reduction) or ``'kalman'`` (EnOI's own)
    spread_factor : anomalies x this after the update (calibrated on a tuning run)
    obs_window : the Kalman step also uses the observations of the ``obs_window - 1`` days before each analysis
        time, their errors grown with age (:mod:`oceanda.kalman.obswindow`); 1: that day's only
    obs_age_growth : that growth per day, a fraction of the climatological std (None: estimated from the library)
    """

    SCHEMA: ClassVar[str] = "oceanda.analysis.HybridSettings"
    VERSION: ClassVar[int] = 1

    ensemble: str = "static"
    alpha: float = 0.3
    beta: float = 1.0
    radius: float = 200.0
    static_members: int = 500
    inflation: float = 1.0
    kalman: str = "schur"
    spread_channels: str = "observed"
    spread: str = "reduction"
    spread_factor: float = 1.0
    obs_window: int = 1
    obs_age_growth: float | None = None

    def validate(self) -> None:
        check_choice("ensemble", self.ensemble, ("static", "local", "both"))
        check_number("alpha", self.alpha, lo=0, lo_open=True, hi=MAX_SCALING)
        check_number("beta", self.beta, lo=0, hi=MAX_SCALING)
        check_number("radius", self.radius, lo=0, lo_open=True)
        check_number("static_members", self.static_members, lo=1, integer=True)
        check_number("inflation", self.inflation, lo=0, lo_open=True, hi=MAX_SCALING)
        check_choice("kalman", self.kalman, ("schur", "letkf"))
        check_choice("spread_channels", self.spread_channels, ("observed", "all"))
        check_choice("spread", self.spread, ("reduction", "kalman"))
        check_number("spread_factor", self.spread_factor, lo=0, lo_open=True, hi=MAX_SCALING)
        from oceanda.kalman.obswindow import MAX_OBS_DAYS

        check_number("obs_window", self.obs_window, lo=1, hi=MAX_OBS_DAYS, integer=True)
        check_number("obs_age_growth", self.obs_age_growth, lo=0, hi=MAX_SCALING, optional=True)

    @property
    def uses_schur(self) -> bool:
        """Whether the update is the Schur-localised EnOI (static ensemble, ``kalman='schur'``)."""
        return self.ensemble == "static" and self.kalman == "schur"


@dataclass(frozen=True)
class SamplerSettings(Settings):
    """Settings of the contrastive sampler (global, local and hybrid modes).

    Attributes
    ----------
    members : ensemble members per analysis
    top_k : retrieved library states recorded per analysis (global mode)
    tau : temperature of the weights softmax(s / tau); None = the trained temperature (:meth:`temperature`)
    spread_factor : ensemble deviations x this (local and hybrid modes; calibrated on a tuning run)
    min_ess : effective sample size below which a warning is issued (or, with ``tempering``, tau raised)
    tempering : raise tau until the ESS reaches ``min_ess`` instead of warning
    max_keep : most library entries kept per posterior (None: no cap; the local loop engine caps at
        ``LOCAL_MAX_KEEP`` for memory)
    keep_mass : share of the posterior weight kept per analysis window, in (0, 1] (None: ``LOCAL_KEEP_MASS``
        in local and hybrid modes; global mode keeps its own default)
    search : how local mode finds the windows holding ``keep_mass``: ``'auto'`` (exact below 1e5 library
        windows, else one fused float32 pass), ``'exact'``, ``'flat'``, ``'ivf'`` or ``'fused'``
        (:mod:`oceanda.analysis.search`)
    library_stride : pixels between library window starts (None: the window stride)
    precision : local mode's arithmetic: ``'fast'`` (default: float32 search and picks, window means in a
        low-rank basis holding all but 1e-6 of the window table's variance; 2-3x cheaper, RMSE the same to 4
        digits on the bundled sample) or ``'exact'`` (float64 search and picks, the loop engine's numbers bit for
        bit; :func:`oceanda.analysis.local_mode.analyse_local`)
    sparse_cells : local and hybrid modes: an analysis window whose observation window has ``n`` observed cells,
        fewer than this, gets the temperature ``tau (sparse_cells / n) ** sparse_power`` (None: one tau for all).
        Why: a cosine similarity bounds every logit by ``1 / tau`` however few the observations, so a window
        seeing a handful of profiles is weighted as sharply as one seeing a whole track; measured in
        docs/observations.md
    sparse_power : the exponent of that rule (0: off)
    hybrid : the hybrid's Kalman settings
    """

    SCHEMA: ClassVar[str] = "oceanda.analysis.SamplerSettings"
    VERSION: ClassVar[int] = 1

    members: int = 20
    top_k: int = 10
    tau: float | None = None
    spread_factor: float = 1.0
    min_ess: float | None = None
    tempering: bool = False
    max_keep: int | None = None
    keep_mass: float | None = None
    search: str = "auto"
    library_stride: int | None = None
    precision: str = "fast"
    sparse_cells: int | None = None
    sparse_power: float = 0.3
    hybrid: HybridSettings = field(default_factory=HybridSettings)

    def __post_init__(self) -> None:
        if isinstance(self.hybrid, Mapping):  # from JSON
            object.__setattr__(self, "hybrid", HybridSettings.from_dict(self.hybrid, where="hybrid"))
        super().__post_init__()

    def validate(self) -> None:
        check_number("members", self.members, lo=1, integer=True)
        check_number("top_k", self.top_k, lo=1, integer=True)
        check_number("tau", self.tau, lo=TAU_RANGE[0], hi=TAU_RANGE[1], optional=True)
        check_number("spread_factor", self.spread_factor, lo=0, lo_open=True, hi=MAX_SCALING)
        check_number("min_ess", self.min_ess, lo=0, optional=True)
        if not isinstance(self.tempering, bool):
            _type_error("tempering", self.tempering, "True or False")
        check_number("max_keep", self.max_keep, lo=1, integer=True, optional=True)
        check_number("keep_mass", self.keep_mass, lo=0, lo_open=True, hi=1, optional=True)
        check_choice("search", self.search, SEARCH_KINDS)
        check_number("library_stride", self.library_stride, lo=1, integer=True, optional=True)
        check_choice("precision", self.precision, PRECISIONS)
        check_number("sparse_cells", self.sparse_cells, lo=1, integer=True, optional=True)
        check_number("sparse_power", self.sparse_power, lo=0, hi=4)
        if not isinstance(self.hybrid, HybridSettings):
            _type_error("hybrid", self.hybrid, "HybridSettings or a dict of its settings")

    @property
    def sparse_tau(self) -> bool:
        """Whether local and hybrid modes give each window its own temperature (``sparse_cells`` set, power > 0)."""
        return self.sparse_cells is not None and self.sparse_power > 0

    def temperature(self, trained: float) -> float:
        """The temperature of the weights: ``tau`` when set (given, or tuned and stored), else ``trained``.

        The one rule for the sampler's tau on every path (global, local, hybrid, calibration).

        Parameters
        ----------
        trained : the model's trained temperature (:func:`trained_temperature`)

        Returns
        -------
        float
        """
        return float(self.tau) if self.tau is not None else float(trained)


def _type_error(name: str, value: Any, expected: str) -> None:
    raise ConfigurationError(f"{name}={value!r}; expected {expected}")


def trained_temperature(config: Mapping[str, Any]) -> float:
    """The temperature a model was trained with (``temperature``, else ``similarity.tau``, else 1).

    Parameters
    ----------
    config : the model's ``config`` (``config.json``)

    Returns
    -------
    float
    """
    sim = config.get("similarity") or {}
    return float(config.get("temperature", sim.get("tau", 1.0)))


def stored_settings(config: Mapping[str, Any], where: str = "config.json") -> SamplerSettings:
    """The sampler settings a checkpoint stores: ``config["sampler"]``, or the legacy ``extra`` keys.

    Parameters
    ----------
    config : the model's ``config``
    where : the file to name in errors (``<model dir>/config.json``)

    Returns
    -------
    SamplerSettings (class defaults where nothing is stored); a stored value out of range raises
    :class:`~oceanda.errors.ConfigurationError` naming ``where`` and the key
    """
    if config.get("sampler") is not None:
        return SamplerSettings.from_dict(config["sampler"], where=f"{where}: sampler")
    extra = config.get("extra") or {}
    legacy = {k: extra[k] for k in LEGACY_EXTRA_KEYS if extra.get(k) is not None}
    return SamplerSettings.from_dict(legacy, where=f"{where}: extra")
