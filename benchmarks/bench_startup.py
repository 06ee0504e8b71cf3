"""CLI start-up: wall seconds of ``oceanda --help`` and of every verb's ``--help``, each in fresh processes.

Why fresh subprocesses: start-up is what a shell user pays -- the interpreter, ``import oceanda`` and the
parser -- and a module imported once stays imported, so an in-process timing would hide it. The median
of several runs damps a shared machine's noise. The goal (issue 16) is <= 1 s for every line.

    python benchmarks/bench_startup.py [--repeats 5] [--json PATH]

``startup_seconds()`` returns the same numbers as a dict, for ``bench_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: the goal of issue 16 for every line of the table
GOAL_SECONDS = 1.0


def _verbs() -> list[str]:
    from oceanda.cli import VERBS  # cheap: cli's top level imports no verb

    return list(VERBS)


def _one_run(argv: list[str]) -> float:
    """Wall seconds of one fresh ``python -m oceanda ARGV`` (output discarded; a failure is an error)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "oceanda", *argv], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=env, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"oceanda {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds


def startup_seconds(repeats: int = 5) -> dict[str, float]:
    """Median wall seconds of ``oceanda --help`` (key ``--help``) and ``oceanda VERB --help`` (key ``VERB``).

    Parameters
    ----------
    repeats : fresh subprocesses per command (the median is kept)

    Returns
    -------
    dict {command: seconds}, plus ``python`` (a bare interpreter start, the floor) and ``max`` (the slowest command)
    """
    commands = {"--help": ["--help"], **{verb: [verb, "--help"] for verb in _verbs()}}
    out = {"python": statistics.median(_bare_python() for _ in range(repeats))}
    for name, argv in commands.items():
        out[name] = statistics.median(_one_run(argv) for _ in range(repeats))
    out["max"] = max(v for k, v in out.items() if k != "python")
    return out


def _bare_python() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def table(seconds: dict[str, float]) -> str:
    """The numbers as a text table, each command marked against :data:`GOAL_SECONDS`."""
    lines = [f"{'command':<32} {'seconds':>8}  goal <= {GOAL_SECONDS:g} s"]
    for name, value in seconds.items():
        if name == "max":
            continue
        label = "python -c pass (floor)" if name == "python" else f"oceanda {'' if name == '--help' else name + ' '}--help"
        mark = "" if name == "python" else ("ok" if value <= GOAL_SECONDS else "SLOW")
        lines.append(f"{label:<32} {value:8.3f}  {mark}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command (median kept; default 5)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    seconds = startup_seconds(max(1, args.repeats))
    print(table(seconds))
    if args.json:
        Path(args.json).write_text(json.dumps({"startup_seconds": seconds, "repeats": args.repeats,
                                               "goal_seconds": GOAL_SECONDS}, indent=2) + "\n")
    return 0 if seconds["max"] <= GOAL_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
