"""`oceanda <verb>`: a thin shell over the public Python API.

Each verb lives in ``oceanda/commands/<verb>.py`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Errors of the :class:`OceandaError` family are
printed on one line (exit code 2); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Sequence

from oceanda._version import __version__
from oceanda.errors import OceandaError

#: verb -> module; the order is the order of ``oceanda --help``.
VERBS = {
    "sample-data": "oceanda.commands.sample_data",
    "observe": "oceanda.commands.observe",
    "train": "oceanda.commands.train",
    "assimilate": "oceanda.commands.assimilate",
    "enkf": "oceanda.commands.enkf",
    "evaluate": "oceanda.commands.evaluate",
    "demo": "oceanda.commands.demo",
    "reproduce": "oceanda.commands.reproduce",
}

DESCRIPTION = """\
oceanda: ocean data assimilation with contrastive learning as conditional probability.

Encoders of model states and observations, trained contrastively, define the conditional law of
the state given the observations as an exponential tilt of the state prior; a library of states
weighted by softmax(similarity / tau) gives the analysis mean, spread and ensemble. Every analysis
is written as CF NetCDF and can be compared with ensemble Kalman filters on the same observations.

Start with `oceanda demo`; every verb has its own --help."""


def _load_verbs() -> dict[str, object]:
    modules = {}
    for verb, path in VERBS.items():
        try:
            modules[verb] = importlib.import_module(path)
        except ModuleNotFoundError as exc:
            if exc.name != path:  # a real missing dependency inside the verb: surface it
                raise
    return modules


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="oceanda", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"oceanda {__version__}")
    modules = _load_verbs()
    sub = parser.add_subparsers(dest="verb", metavar="VERB", title="verbs")
    for verb, mod in modules.items():
        p = sub.add_parser(
            verb,
            help=getattr(mod, "HELP", ""),
            description=getattr(mod, "DESCRIPTION", getattr(mod, "HELP", "")),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)  # type: ignore[attr-defined]
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``oceanda`` command line.

    Parameters
    ----------
    argv : the arguments after ``oceanda`` (default: ``sys.argv[1:]``)

    Returns
    -------
    int: the exit status (2 on an oceanda error, 130 on interrupt)
    """
    from oceanda import io

    parser, modules = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    io.set_command_line(["oceanda", *argv])
    if not args.verb:
        parser.print_help()
        return 0
    shown = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # the user's warnings, one line each, not Python's two
    try:
        return int(modules[args.verb].run(args) or 0)  # type: ignore[attr-defined]
    except OceandaError as exc:
        msg = " ".join(str(exc).split())
        print(f"oceanda {args.verb}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("oceanda: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = shown
        io.set_command_line(None)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """``oceanda: warning: ...`` on one line (the source line of the warning means nothing to a shell user)."""
    return f"oceanda: {'warning' if issubclass(category, UserWarning) else category.__name__}: {' '.join(str(message).split())}\n"


if __name__ == "__main__":
    raise SystemExit(main())
