"""Torch's thread counts for a command that runs torch, chosen once and on purpose.

Why a module of its own (and a tiny one): the policy is the process's, not a model's -- the CLI applies it
around the verbs that declare ``RUNS_TORCH`` (see :mod:`oceanda.cli`), benchmarks and notebooks may call
it too -- and it must be importable without torch, so ``oceanda --help`` stays light (torch is imported
only inside :func:`configured`).

The rule: intra-op threads = the physical cores this process may run on (``psutil.cpu_count(logical=False)``,
else ``os.cpu_count()``, capped by the CPU affinity mask), which is what torch picks itself on an ordinary
machine, so results do not change; ``OCEANDA_NUM_THREADS`` overrides it, else a user's ``OMP_NUM_THREADS``
is respected (torchrun sets it to 1 for each of several processes on one machine, so ranks do not
oversubscribe the cores). Inter-op threads = 1: the encoders run one op at a time, and a second pool only competes
for the same cores. Code that knows better pins its own count inside (the testbeds integrate on one
thread, :mod:`oceanda.testbeds._threads`; ``reproduce baptista2025`` runs on one; the encoders' inference and
the fast local engine run on one, :func:`one_torch_thread`, so their digits do not depend on the machine),
and that wins. Many analyses use many cores through dask (``assimilate --scheduler local:N``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator

#: the environment variable that sets torch's intra-op threads (a positive integer)
ENV = "OCEANDA_NUM_THREADS"

#: what ``--help`` says about it (appended to the help of every verb that runs torch)
HELP = f"""\
Threads: torch runs on one thread per physical core (one inter-op thread). {ENV}=N sets N threads;
otherwise OMP_NUM_THREADS, when set, is respected. On a busy shared machine {ENV}=1 is often fastest."""


def physical_cores() -> int:
    """Physical cores this process may use: psutil's count (else ``os.cpu_count()``), capped by its affinity."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:  # psutil is a dependency; keep a sane answer without it
        cores = None
    cores = cores or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):  # a container or `taskset` may allow fewer CPUs than the machine has
        cores = min(cores, len(os.sched_getaffinity(0)) or cores)
    return max(1, int(cores))


def _env_count(name: str, strict: bool) -> int | None:
    """A positive thread count from the environment variable ``name`` (None when unset or, unless strict, unusable)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    first = text.split(",")[0].strip()  # OMP_NUM_THREADS may list nested levels: "4,2"
    if first.isdigit() and int(first) >= 1:
        return int(first)
    if strict:
        from oceanda.errors import ConfigurationError

        raise ConfigurationError(f"{name}={text}: not a thread count; expected a positive integer, e.g. {name}=1")
    return None


def intra_op_threads() -> int:
    """The intra-op thread count of the rule above: ``OCEANDA_NUM_THREADS``, ``OMP_NUM_THREADS``, physical cores."""
    return _env_count(ENV, strict=True) or _env_count("OMP_NUM_THREADS", strict=False) or physical_cores()


@contextlib.contextmanager
def configured() -> Iterator[int]:
    """Run the block with torch's threads set by the rule above; the intra-op count is restored afterwards.

    Inter-op threads can be set once per process only, before torch's first parallel work: they are set
    to 1 when still possible and left as they are otherwise. An unusable ``OCEANDA_NUM_THREADS`` is a
    :class:`~oceanda.errors.ConfigurationError` (one line from the CLI), raised before torch is imported.

    Yields
    ------
    int: the intra-op thread count in use
    """
    n = intra_op_threads()
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    if torch.get_num_interop_threads() != 1:
        with contextlib.suppress(RuntimeError):  # torch: "cannot set ... after parallel work has started"
            torch.set_num_interop_threads(1)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


_ONE = threading.RLock()  # re-entrant: an encoder call inside a single-threaded block


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block on one torch intra-op thread and one thread of numpy's BLAS (restored afterwards), one such
    block at a time.

    Why: a multi-threaded matrix product splits its sums by the thread count, so an encoder's embeddings
    (the last digits of the dense head's outputs) depended on how many threads ran it -- a dask worker
    (one thread) and the client (one per core) then gave different analyses, and a cached library
    embedding depended on the machine. The lock keeps concurrent analyses (dask threads) from restoring
    each other's count mid-block.
    """
    import torch

    with _ONE:
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with _blas().limit(limits=1, user_api="blas"):  # numpy's BLAS too (the fast engine's scores)
                yield
        finally:
            torch.set_num_threads(old)


@functools.cache
def _blas():
    """One threadpoolctl controller for the process (building one scans the loaded libraries: ~1 ms; its
    ``limit`` then costs ~0.04 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
