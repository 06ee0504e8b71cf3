"""One module per CLI verb: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``.

Verb modules parse arguments and call the public API (:mod:`oceanda.api`); they hold no numerical logic
and no defaults of their own: an option left out is ``None`` and the API resolves it.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

#: Seeds of every verb: what numpy's and torch's generators take in every form (32 bits).
SEED_MAX = 2**32 - 1
#: Largest integer option: what numpy's int64 holds (a count beyond it is a typo, and overflows).
INT_MAX = 2**63 - 1

#: Allowed values of the options with choices, written out here so that building the parser (``--help``)
#: imports none of the modules that define them (those pull in torch, scipy, xarray). tests/test_startup.py
#: checks that every list equals ``oceanda.api.choices(what)``, so the two cannot drift apart.
CHOICES: dict[str, tuple[str, ...]] = {
    "similarity": ("cosine", "inner_product", "neg_sq_distance"),
    "loss": ("clip", "state|obs", "obs|state", "joint"),
    "encoder": ("cnn", "mlp", "linear"),
    "mode": ("global", "local", "hybrid"),
    "method": ("enkf", "etkf", "letkf", "enoi"),
    "taper": ("gaspari_cohn", "gaussian", "boxcar"),
    "testbed": ("qg", "torus", "lorenz96"),
    "operator": ("altimetry", "gappy", "points", "profiles"),
    "twin": ("lorenz96", "qg"),
    "precision": ("fast", "exact"),
    "initial": ("climatology", "enoi", "contrastive"),
    "extra": ("contrastive", "library"),
    "warm_draw": ("matched", "resampled"),
    "cycle_method": ("letkf", "etkf"),
    "cycle_testbed": ("qg", "lorenz96"),
    "patterns": ("tracks", "clouds", "points", "swaths"),
}


def choices(what: str) -> list[str]:
    """The allowed values of an option for argparse ``choices=`` (see :data:`CHOICES`), without importing the API."""
    return list(CHOICES[what])


def given(args: Any, *names: str, **renames: str) -> dict[str, Any]:
    """The options the user gave (not None), as API keyword arguments.

    Parameters
    ----------
    args : the parsed argparse namespace
    *names : option attributes passed under the same name
    **renames : ``api_name="option_attribute"`` pairs

    Returns
    -------
    dict of the given options
    """
    pairs = [(n, n) for n in names] + list(renames.items())
    return {api_name: getattr(args, attr) for api_name, attr in pairs if getattr(args, attr, None) is not None}


def units_option(values: list[str] | None) -> dict[str, str] | None:
    """``--units VAR=UNITS ...`` as ``{VAR: UNITS}`` (None when not given); bad syntax is a one-line error.

    Parameters
    ----------
    values : the option's words, e.g. ``["sst=degC", "ssh=m"]``

    Returns
    -------
    dict or None
    """
    if not values:
        return None
    from oceanda.errors import ConfigurationError

    out: dict[str, str] = {}
    for item in values:
        var, sep, unit = str(item).partition("=")
        if not sep or not var.strip() or not unit.strip():
            raise ConfigurationError(f"--units {item}: expected VAR=UNITS, e.g. --units sst=degC ssh=m")
        out[var.strip()] = unit.strip()
    return out


def add_units_argument(parser: Any) -> None:
    """The ``--units VAR=UNITS`` option of every verb that reads NetCDF (repeatable, several per use)."""
    parser.add_argument("--units", nargs="+", action="extend", default=None, metavar="VAR=UNITS",
                        help="CF units for variables the input files give none, e.g. --units sst=degC ssh=m")


# ----------------------------------------------------------------------------------------------
# Numeric options: checked as argparse parses them, so a bad value fails before any file is read
# ----------------------------------------------------------------------------------------------


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    def num(v: float) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{num(lo)}, {num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {num(lo)}"
    return f" {'<' if hi_open else '<='} {num(hi)}" if hi is not None else ""


def number(*, integer: bool = False, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False, inf: bool = False, note: str = "") -> Callable[[str], Any]:
    """An argparse ``type=`` that parses one numeric option and checks it: finite (``inf``: +inf too), in range.

    Why argparse: the value is refused before any file is opened, and the error names the option as
    the user typed it (``--inflation=0; expected a finite number > 0``; see :func:`one_line_errors`).

    Parameters
    ----------
    integer : the value must be an integer (``20`` or ``20.0``; never ``20.5``)
    lo, hi, lo_open, hi_open : bounds (inclusive unless open)
    inf : ``inf`` is allowed too (e.g. ``--loc-radius inf``: no localisation)
    note : appended to the expectation (e.g. ``, or inf for no localisation``)

    Returns
    -------
    callable ``str -> int | float`` raising :class:`argparse.ArgumentTypeError`
    """
    expected = ("an integer" if integer else "a finite number") + _range_text(lo, hi, lo_open, hi_open) + note

    def parse(text: str) -> Any:
        value = _as_number(text, integer)
        if inf and value == math.inf:
            return value
        big = integer and math.isfinite(value) and abs(value) > INT_MAX
        ok = math.isfinite(value) and not big and (not integer or float(value).is_integer())
        ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
        ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:  # "=...": one_line_errors writes it as --option=...
            raise argparse.ArgumentTypeError(f"={text}; expected {expected}{' below 2**63' * big}")
        return int(value) if integer else value

    parse.__name__ = "integer" if integer else "number"
    return parse


def _as_number(text: str, integer: bool) -> Any:
    """``text`` as an int (exact, for integer options) or a float; NaN when it is no number."""
    if integer:
        try:
            return int(str(text).strip())
        except ValueError:
            pass
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


positive = number(lo=0.0, lo_open=True)
nonnegative = number(lo=0.0)
unit_interval = number(lo=0.0, hi=1.0)
positive_int = number(integer=True, lo=1)
nonnegative_int = number(integer=True, lo=0)
seed_int = number(integer=True, lo=0, hi=SEED_MAX)


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Argument errors of ``parser`` on one line (exit code 2), as every other oceanda error: no usage block.

    ``argument --alpha: =-1; expected ...`` (from :func:`number`) reads ``--alpha=-1; expected ...``.

    Parameters
    ----------
    parser : a verb's parser
    """
    def error(message: str) -> None:
        text = " ".join(str(message).split())
        m = re.match(r"argument ([^:]+): =(.*)$", text)
        if m:
            text = f"{m.group(1)}={m.group(2)}"
        parser.exit(2, f"{parser.prog}: error: {text} (see {parser.prog} --help)\n")

    parser.error = error  # type: ignore[method-assign]


@contextlib.contextmanager
def cli_spelling(**options: str) -> Iterator[None]:
    """Errors of the API that start with a setting (``members=...``, ``time index 9 ...``) name the option instead.

    Why: the API checks what depends on the data (``members`` at most the library size) and names its
    own keyword; a shell user typed ``--members``.

    Parameters
    ----------
    **options : ``api_keyword="--cli-option"`` pairs
    """
    from oceanda.errors import OceandaError

    try:
        yield
    except OceandaError as exc:
        text = str(exc)
        for key, option in options.items():
            if text.startswith((f"{key}=", f"{key} ")):
                raise type(exc)(option + text[len(key):]) from None
        raise
