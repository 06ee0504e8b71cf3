"""`oceanda <verb>`: a thin shell over the public Python API.

Each verb lives in ``oceanda/commands/<verb>.py`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Errors of the :class:`OceandaError` family and
running out of memory are printed on one line (exit code 2), Ctrl-C at any moment as
``oceanda: interrupted`` (130); anything else is a bug and keeps its traceback. The top-level
imports stay tiny and building the parser imports no verb's heavy modules (torch, xarray, scipy,
matplotlib: only the verb's ``run`` does; tests/test_startup.py checks it), so ``--help`` takes well under
a second. A verb that declares ``RUNS_TORCH = True`` runs under :func:`oceanda.threads.configured`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from typing import Any, Sequence

from oceanda._version import __version__
from oceanda.errors import OceandaError

#: verb -> module; the order is the order of ``oceanda --help``.
VERBS = {
    "sample-data": "oceanda.commands.sample_data",
    "observe": "oceanda.commands.observe",
    "train": "oceanda.commands.train",
    "assimilate": "oceanda.commands.assimilate",
    "enkf": "oceanda.commands.enkf",
    "cycle": "oceanda.commands.cycle",
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

EPILOG = """\
Environment: OCEANDA_NUM_THREADS=N torch threads of the verbs that run torch (train, assimilate, cycle,
demo, reproduce; default one per physical core, or OMP_NUM_THREADS when set). OCEANDA_BF16=0|1 local
mode's window means in float32 | bfloat16 products (default: bfloat16 where the CPU has the instructions)."""


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
    from oceanda import threads  # no torch: only its help text

    parser = argparse.ArgumentParser(
        prog="oceanda", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
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
        if getattr(mod, "RUNS_TORCH", False):
            p.epilog = f"{p.epilog}\n\n{threads.HELP}" if p.epilog else threads.HELP
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``oceanda`` command line.

    Everything -- loading the verbs, parsing, running (torch) -- happens inside one ``try``, so
    Ctrl-C at any moment prints one line. An :class:`OceandaError` or running out of memory is one
    line too; a closed stdout (``oceanda ... | head``) ends quietly; anything else is a bug and
    keeps its traceback.

    Parameters
    ----------
    argv : the arguments after ``oceanda`` (default: ``sys.argv[1:]``)

    Returns
    -------
    int: the exit status (2 on an oceanda error or out of memory, 130 on interrupt, 141 on a closed stdout)
    """
    shown = warnings.formatwarning
    verb = None
    try:
        parser, modules = build_parser()
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        verb = args.verb
        if not verb:
            parser.print_help()
            return 0
        from oceanda import io  # after parsing: io imports xarray, which --help does not need

        io.set_command_line(["oceanda", *argv])
        warnings.formatwarning = _one_line_warning  # the user's warnings, one line each, not Python's two
        with _threads(modules[verb]):
            return int(modules[verb].run(args) or 0)  # type: ignore[attr-defined]
    except OceandaError as exc:
        return _error(verb, " ".join(str(exc).split()))
    except KeyboardInterrupt:
        print("oceanda: interrupted", file=sys.stderr)
        return 130
    except MemoryError as exc:
        return _error(verb, _out_of_memory(exc))
    except RuntimeError as exc:  # torch's CPU allocator says so in a RuntimeError; any other one is a bug
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc).lower():
            raise
        return _error(verb, _out_of_memory(exc))
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        _silence_stdout()
        return 141
    finally:
        warnings.formatwarning = shown
        io_module = sys.modules.get("oceanda.io")
        if io_module is not None:
            io_module.set_command_line(None)


def _threads(module: object) -> Any:
    """Torch's threads set by :func:`oceanda.threads.configured` for a verb that runs torch; else nothing."""
    if not getattr(module, "RUNS_TORCH", False):
        return contextlib.nullcontext()
    from oceanda import threads

    return threads.configured()


def _error(verb: str | None, message: str) -> int:
    print(f"oceanda {verb}: error: {message}" if verb else f"oceanda: error: {message}", file=sys.stderr)
    return 2


def _out_of_memory(exc: BaseException) -> str:
    detail = " ".join(str(exc).split()) or "an allocation failed"
    return f"out of memory ({detail}); expected smaller inputs or options (fewer members, times or a smaller grid)"


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (so a BrokenPipeError came from it, not from a bug)."""
    try:
        import select

        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no real stdout (captured): it was not stdout
        return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's flush at exit does not complain about the closed pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """``oceanda: warning: ...`` on one line (the source line of the warning means nothing to a shell user)."""
    return f"oceanda: {'warning' if issubclass(category, UserWarning) else category.__name__}: {' '.join(str(message).split())}\n"


if __name__ == "__main__":
    raise SystemExit(main())
