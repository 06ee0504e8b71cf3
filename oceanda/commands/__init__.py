"""One module per CLI verb: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``.

Verb modules parse arguments and call the public API (:mod:`oceanda.api`); they hold no numerical logic
and no defaults of their own: an option left out is ``None`` and the API resolves it.
"""

from __future__ import annotations

from typing import Any


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
