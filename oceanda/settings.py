"""Typed, validated settings: one base for every settings dataclass of oceanda.

Why: settings used to travel as keyword arguments with defaults written in several places and as a
free-form ``config["extra"]`` dict in checkpoints. Each settings class now defines its defaults once,
checks them on construction (a :class:`~oceanda.errors.ConfigurationError` naming the setting, its
value and the allowed range) and round-trips through versioned JSON (``to_dict`` / ``from_dict``),
which is what checkpoints store. Knows nothing of oceans: the contrastive core uses it too.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from oceanda.errors import ConfigurationError

S = TypeVar("S", bound="Settings")

#: Largest seed: every generator oceanda seeds (numpy, torch) takes 0 .. 2**32 - 1 in every form.
SEED_MAX = 2**32 - 1


def check_number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False, integer: bool = False,
                 optional: bool = False) -> None:
    """Raise :class:`ConfigurationError` unless ``value`` is a finite number in the range.

    Parameters
    ----------
    name : the setting's name, as the user spells it (``tau``, ``--loc-radius``)
    value : the value to check
    lo, hi : bounds (inclusive unless ``lo_open`` / ``hi_open``)
    integer : the value must be an integer
    optional : ``None`` is allowed
    """
    if value is None and optional:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or (
            integer and not float(value).is_integer()):
        raise ConfigurationError(f"{name}={value!r}; expected {'an integer' if integer else 'a number'}"
                                 f"{_range_text(lo, hi, lo_open, hi_open)}")
    ok = math.isfinite(float(value))
    ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
    ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        raise ConfigurationError(f"{name}={value!r}; expected {'an integer' if integer else 'a finite number'}"
                                 f"{_range_text(lo, hi, lo_open, hi_open)}")


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise :class:`ConfigurationError` unless ``value`` is one of ``choices``.

    Parameters
    ----------
    name : the setting's name, as the user spells it
    value : the value to check
    choices : the allowed values
    """
    if value not in choices:
        raise ConfigurationError(f"{name}={value!r}; expected one of {list(choices)}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of every settings dataclass: validated on construction, versioned JSON round trip.

    Subclasses are frozen dataclasses that set ``SCHEMA`` (a stable name) and ``VERSION`` and
    override :meth:`validate`. ``replace(**changes)`` returns a validated copy.
    """

    SCHEMA: ClassVar[str] = "oceanda.Settings"
    VERSION: ClassVar[int] = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # numpy scalars (from arrays, JSON of numpy) as Python values
            v = getattr(self, f.name)
            if isinstance(v, np.generic):
                object.__setattr__(self, f.name, v.item())
        self.validate()

    def validate(self) -> None:
        """Check every field; raise :class:`ConfigurationError` naming the first bad one."""

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied (``None`` values are ignored: 'not given')."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ``schema`` and ``version`` keys."""
        out: dict[str, Any] = {"schema": self.SCHEMA, "version": self.VERSION}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Settings) else (list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def from_dict(cls: type[S], d: Mapping[str, Any], where: str = "settings") -> S:
        """Rebuild from :meth:`to_dict` output; unknown keys, another schema or a newer version are refused.

        Parameters
        ----------
        d : the dict (e.g. read from a checkpoint's ``config.json``)
        where : what to name in errors (a file and key)
        """
        if not isinstance(d, Mapping):
            raise ConfigurationError(f"{where}: expected a JSON object for {cls.SCHEMA}, got {type(d).__name__}")
        schema = d.get("schema", cls.SCHEMA)
        if schema != cls.SCHEMA:
            raise ConfigurationError(f"{where}: schema {schema!r}; expected {cls.SCHEMA!r}")
        version = d.get("version", cls.VERSION)
        if not isinstance(version, int) or version > cls.VERSION or version < 1:
            raise ConfigurationError(f"{where}: {cls.SCHEMA} version {version!r}; this oceanda reads 1..{cls.VERSION}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields) - {"schema", "version"})
        if unknown:
            raise ConfigurationError(f"{where}: unknown {cls.SCHEMA} setting(s) {unknown}; expected some of {sorted(fields)}")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
        try:
            return cls(**kwargs)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        except TypeError as exc:  # a nested value of the wrong type
            raise ConfigurationError(f"{where}: {cls.SCHEMA}: {exc}") from None
