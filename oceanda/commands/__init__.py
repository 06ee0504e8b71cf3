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
