"""Ensemble Kalman methods as small configured objects: settings checked once, one ``assimilate``.

Why: a method used to be a name plus a bag of keyword arguments, dispatched twice (by the Dataset
verb and by the cycling driver, each with its own tuple of names). Now each method is a frozen
:class:`~oceanda.settings.Settings` (the shape of DAPPER's ``da_methods``) whose settings are
validated on construction and whose :meth:`Filter.assimilate` calls the array-level function
(:func:`~oceanda.kalman.filters.enkf`, ``etkf``, ``letkf``, ``enoi``, ``schur_enoi_ensemble``).
:data:`METHODS` names them once; :func:`make_filter` builds one by name, and is what
:func:`~oceanda.kalman.dataset.analyse_dataset` and the experiments use.

Localisation: ``radius`` (Gaspari-Cohn half-width ``c``, in the units of the grid coordinates),
``taper`` and ``block`` describe it; the :class:`~oceanda.kalman.localization.Localizer` itself
is built on the state's grid by the caller and passed to ``assimilate`` (its radius must agree).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from oceanda.errors import ConfigurationError
from oceanda.kalman.filters import enkf, enoi, etkf
from oceanda.kalman.letkf import letkf
from oceanda.kalman.localization import DEFAULT_TAPER, TAPERS
from oceanda.kalman.obsspace import Observations, as_observations
from oceanda.kalman.schur import schur_enoi_ensemble
from oceanda.settings import Settings, check_choice, check_number

#: EnOI forms: the ETKF/LETKF transform of the static ensemble (any operator), the Schur-localised
#: gain in observation space (direct operators), or ``auto``: Schur when localised with index operators.
ENOI_FORMS = ("auto", "transform", "schur")
#: Largest inflation / EnOI covariance scaling: far beyond any tuned value (inflation 1.0 .. 1.5, alpha
#: 0.1 .. 1); a larger one is a typo, and 1e300 overflows the anomalies to Inf.
MAX_SCALING = 100.0


@dataclasses.dataclass(frozen=True)
class Filter(Settings):
    """Base of the methods: ``name`` (the :data:`METHODS` key) and one :meth:`assimilate`."""

    SCHEMA: ClassVar[str] = "oceanda.kalman.Filter"
    name: ClassVar[str] = ""
    #: Whether the method can be cycled (EnOI's ensemble is static: nothing to carry forward).
    cycles: ClassVar[bool] = True

    def assimilate(self, E: np.ndarray, observations: Observations, rng: Any = None,
                   localizer: Any = None) -> np.ndarray:
        """The analysis ensemble of ``E`` given ``observations``.

        Parameters
        ----------
        E : forecast ensemble ``[N, n]`` (EnOI: the library states of the static ensemble)
        observations : one analysis time's :class:`~oceanda.kalman.obsspace.Observations`
        rng : random generator (or seed): perturbed observations, member repair, static draws
        localizer : a :class:`~oceanda.kalman.localization.Localizer` on the state grid (LETKF, localised EnOI)

        Returns
        -------
        numpy.ndarray: the analysis ensemble ``[N, n]``
        """
        raise NotImplementedError

    def check_localizer(self, localizer: Any, required: bool) -> Any:
        """The localizer to use, refused when missing (``required`` or a ``radius`` set) or of another radius.

        Parameters
        ----------
        localizer : a :class:`~oceanda.kalman.localization.Localizer` or None
        required : the method cannot run without one

        Returns
        -------
        the localizer
        """
        radius = getattr(self, "radius", None)
        if localizer is None and (required or radius is not None):
            raise ConfigurationError(f"{self.name}: radius={radius!r} needs a localizer on the state grid "
                                     "(oceanda.kalman.grid_localizer or localizer_for_dataset)")
        if localizer is not None and radius is not None and float(localizer.radius) != float(radius):
            raise ConfigurationError(f"{self.name}: the localizer's radius {localizer.radius} differs from radius={radius}")
        return localizer


@dataclasses.dataclass(frozen=True)
class _Relaxed(Filter):
    """Prior multiplicative inflation and posterior relaxation, shared by the EnKF, ETKF and LETKF."""

    inflation: float = 1.0
    rtps: float = 0.0
    rtpp: float = 0.0

    def validate(self) -> None:
        check_number("inflation", self.inflation, lo=0.0, lo_open=True, hi=MAX_SCALING)
        check_number("rtps", self.rtps, lo=0.0, hi=1.0)
        check_number("rtpp", self.rtpp, lo=0.0, hi=1.0)

    def _kw(self) -> dict[str, float]:
        return {"inflation": self.inflation, "rtps": self.rtps, "rtpp": self.rtpp}


@dataclasses.dataclass(frozen=True)
class EnKF(_Relaxed):
    """Stochastic EnKF with perturbed observations (:func:`~oceanda.kalman.filters.enkf`)."""

    SCHEMA: ClassVar[str] = "oceanda.kalman.EnKF"
    name: ClassVar[str] = "enkf"
    center_perturbations: bool = True

    def validate(self) -> None:
        super().validate()
        check_choice("center_perturbations", self.center_perturbations, (True, False))

    def assimilate(self, E: np.ndarray, observations: Observations, rng: Any = None,
                   localizer: Any = None) -> np.ndarray:
        """See :meth:`Filter.assimilate` (``localizer`` is ignored: the EnKF is global).

        Parameters
        ----------
        E, observations, rng, localizer : as :meth:`Filter.assimilate`

        Returns
        -------
        numpy.ndarray: the analysis ensemble ``[N, n]``
        """
        return enkf(E, observations, rng=rng, center_perturbations=self.center_perturbations, **self._kw())


@dataclasses.dataclass(frozen=True)
class ETKF(_Relaxed):
    """Ensemble transform Kalman filter, symmetric square root (:func:`~oceanda.kalman.filters.etkf`)."""

    SCHEMA: ClassVar[str] = "oceanda.kalman.ETKF"
    name: ClassVar[str] = "etkf"

    def assimilate(self, E: np.ndarray, observations: Observations, rng: Any = None,
                   localizer: Any = None) -> np.ndarray:
        """See :meth:`Filter.assimilate` (``localizer`` is ignored: the ETKF is global).

        Parameters
        ----------
        E, observations, rng, localizer : as :meth:`Filter.assimilate`

        Returns
        -------
        numpy.ndarray: the analysis ensemble ``[N, n]``
        """
        return etkf(E, observations, rng=rng, **self._kw())


@dataclasses.dataclass(frozen=True)
class LETKF(_Relaxed):
    """Local ETKF with R-localisation (:func:`~oceanda.kalman.letkf.letkf`); needs a localizer.

    ``radius`` is the taper's half-width in the grid's units (required), ``block`` the side of the
    tiles of points sharing one local analysis. ``weight_spacing`` (grid steps): transforms computed
    every k-th point of a grid and interpolated bilinearly (Yang et al. 2009); ``auto`` =
    ``max(1, floor(radius / 4 / grid step))`` (1 on the bundled 64 x 64 grid at 40 km, on rings and with
    ``block`` > 1), 1 = one analysis per point.
    """

    SCHEMA: ClassVar[str] = "oceanda.kalman.LETKF"
    name: ClassVar[str] = "letkf"
    radius: float | None = None
    taper: str = DEFAULT_TAPER
    block: int = 1
    weight_spacing: int | str = "auto"

    def validate(self) -> None:
        super().validate()
        check_number("radius", self.radius, lo=0.0, lo_open=True)
        check_choice("taper", self.taper, TAPERS)
        check_number("block", self.block, lo=1, integer=True)
        if isinstance(self.weight_spacing, str):
            check_choice("weight_spacing", self.weight_spacing, ("auto",))
        else:
            check_number("weight_spacing", self.weight_spacing, lo=1, integer=True)
        if self.block > 1 and self.weight_spacing not in ("auto", 1):
            raise ConfigurationError(f"weight_spacing={self.weight_spacing!r} with block={self.block}; expected one "
                                     "of them (block tiles and interpolated weights both coarsen the analyses)")

    def assimilate(self, E: np.ndarray, observations: Observations, rng: Any = None,
                   localizer: Any = None) -> np.ndarray:
        """See :meth:`Filter.assimilate`; ``localizer`` is required.

        Parameters
        ----------
        E, observations, rng, localizer : as :meth:`Filter.assimilate`

        Returns
        -------
        numpy.ndarray: the analysis ensemble ``[N, n]``
        """
        loc = self.check_localizer(localizer, required=True)
        return letkf(E, observations, localizer=loc, rng=rng, weight_spacing=self.weight_spacing, **self._kw())


def index_operator(observations: Observations) -> bool:
    """Whether the observations are direct: ``H`` an integer array of flat state indices.

    Parameters
    ----------
    observations : the observations

    Returns
    -------
    bool
    """
    H = observations.H
    return isinstance(H, np.ndarray) and np.issubdtype(H.dtype, np.integer)


@dataclasses.dataclass(frozen=True)
class EnOI(Filter):
    """Ensemble optimal interpolation: a Kalman update with a static ensemble of library states.

    ``assimilate(E, ...)`` takes the library states as ``E``; the background is their mean unless
    given. B = ``alpha`` x the anomalies' covariance, ``members`` library states drawn (all if None).
    ``form``: ``transform`` (ETKF, or LETKF with a localizer: any operator,
    :func:`~oceanda.kalman.filters.enoi`), ``schur`` (Schur-localised gain in observation space,
    direct operators, :func:`~oceanda.kalman.schur.schur_enoi_ensemble`) or ``auto`` (Schur when
    localised and the operator is an index array or a sparse matrix -- e.g. bilinear point operators --,
    else the transform).
    """

    SCHEMA: ClassVar[str] = "oceanda.kalman.EnOI"
    name: ClassVar[str] = "enoi"
    cycles: ClassVar[bool] = False
    alpha: float = 1.0
    members: int | None = None
    radius: float | None = None
    taper: str = DEFAULT_TAPER
    block: int = 1
    form: str = "auto"

    def validate(self) -> None:
        check_number("alpha", self.alpha, lo=0.0, lo_open=True, hi=MAX_SCALING)
        check_number("members", self.members, lo=2, integer=True, optional=True)  # anomalies need two states
        check_number("radius", self.radius, lo=0.0, lo_open=True, optional=True)
        check_choice("taper", self.taper, TAPERS)
        check_number("block", self.block, lo=1, integer=True)
        check_choice("form", self.form, ENOI_FORMS)

    def assimilate(self, E: np.ndarray, observations: Observations, rng: Any = None, localizer: Any = None,
                   background: np.ndarray | None = None) -> np.ndarray:
        """See :meth:`Filter.assimilate`; ``E`` are the library states, ``background`` defaults to their mean.

        Parameters
        ----------
        E : library states ``[M, n]``
        observations, rng, localizer : as :meth:`Filter.assimilate`
        background : background state ``[n]`` (default: the library mean)

        Returns
        -------
        numpy.ndarray: the analysis ensemble
        """
        obs = as_observations(observations)
        loc = self.check_localizer(localizer, required=self.form == "schur")
        xb = E.mean(axis=0) if background is None else background
        form = self.form
        if form == "auto":
            form = "schur" if loc is not None and (index_operator(obs) or sp.issparse(obs.H)) else "transform"
        if form == "schur":
            return schur_enoi_ensemble(xb, E, obs, alpha=self.alpha, members=self.members, localizer=loc, rng=rng)
        return enoi(xb, E, obs, alpha=self.alpha, members=self.members, localizer=loc, rng=rng)


#: The methods by name, defined once: the Dataset verb, the CLI choices and cycling all read this.
METHODS: dict[str, type[Filter]] = {cls.name: cls for cls in (EnKF, ETKF, LETKF, EnOI)}


def make_filter(method: str | Filter, *, strict: bool = True, **settings: Any) -> Filter:
    """A configured method: by name from :data:`METHODS`, or a given one with ``settings`` replaced.

    Parameters
    ----------
    method : a name (``enkf``, ``etkf``, ``letkf``, ``enoi``) or a :class:`Filter`
    strict : refuse settings the method does not have; False drops them (one set of options for every method)
    **settings : the method's settings; None = the method's default (or the given filter's value)

    Returns
    -------
    Filter
    """
    if isinstance(method, Filter):
        cls, base = type(method), method
    else:
        check_choice("method", method, list(METHODS))
        cls, base = METHODS[method], None
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(given) - names)
    if unknown and strict:
        raise ConfigurationError(f"method {cls.name!r} has no setting(s) {unknown}; expected some of {sorted(names)}")
    given = {k: v for k, v in given.items() if k in names}
    return base.replace(**given) if base is not None else cls(**given)
