"""The fuzz harness: run one malformed input through the CLI in-process and check the promises.

A case is an ``oceanda`` command line over small files built from the bundled sample. For each case
the harness checks what the README promises of a bad input: exit code 2, one error line on stderr
naming the file or option, no traceback, no hang, inputs byte-identical, nothing left at the output
path or beside it. Cases that are legitimate inputs (``expect="ok"``) must instead exit 0 with
finite outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io as _io
import os
import signal
import traceback
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "qg"
MODEL = REPO / "sample_data" / "models" / "qg_window"
FIELD_MODEL = REPO / "sample_data" / "models" / "qg_field"

#: Folders a verb may add inside an input model folder (derived caches, not the model itself).
CACHE_NAMES = ("library_cache",)


@dataclasses.dataclass
class Outcome:
    """What one run of the CLI did."""

    rc: int | None
    stderr: str
    exception: str | None = None  # an exception that escaped main (= a traceback for the user)
    hung: bool = False
    modified: list[str] = dataclasses.field(default_factory=list)
    leftovers: list[str] = dataclasses.field(default_factory=list)

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ": error:" in ln]

    def problems(self, expect: str = "error", names: Sequence[str] = ()) -> list[str]:
        """Every broken promise, as short strings (empty: the case passed)."""
        out = []
        if self.hung:
            return ["hang"]
        if self.exception:
            return [f"traceback: {self.exception}"]
        if self.modified:
            out.append(f"input modified: {self.modified}")
        if "Traceback (most recent call last)" in self.stderr:
            out.append("traceback printed")
        if expect == "ok":
            if self.rc != 0:
                out.append(f"exit {self.rc} for a valid input: {self.stderr.strip()[-300:]}")
            return out
        if self.rc == 0:
            out.append("silently accepted (exit 0)")
        elif self.rc != 2:
            out.append(f"exit code {self.rc}")
        lines = self.error_lines
        if self.rc not in (0, None) and len(lines) != 1:
            out.append(f"{len(lines)} error lines: {self.stderr.strip()[-300:]}")
        if lines and names and not any(n in lines[0] for n in names):
            out.append(f"error names none of {list(names)}: {lines[0][:300]}")
        if self.leftovers:
            out.append(f"left behind: {self.leftovers}")
        return out


def digest(path: Path) -> str:
    """Content hash of a file, or of a folder's files (names + contents), skipping derived caches."""
    h = hashlib.blake2b(digest_size=16)
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            rel = p.relative_to(path)
            if rel.parts and rel.parts[0] in CACHE_NAMES:
                continue
            h.update(str(rel).encode())
            if p.is_file():
                h.update(p.read_bytes())
    elif path.is_file():
        h.update(path.read_bytes())
    else:
        h.update(b"<missing or special>")
    return h.hexdigest()


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Timeout()


def run_cli(argv: Sequence[str], inputs: Sequence[Path] = (), outputs: Sequence[Path] = (),
            timeout: int = 60) -> Outcome:
    """Run ``oceanda argv`` in this process; watch the inputs and the outputs' folders.

    Parameters
    ----------
    argv : the arguments after ``oceanda`` (strings)
    inputs : files or folders that must be byte-identical afterwards
    outputs : paths the command would write; on an error nothing may appear at them or beside them
    timeout : seconds before the run counts as a hang
    """
    from oceanda import cli

    before = {str(p): digest(Path(p)) for p in inputs}
    folders = {Path(o).parent for o in outputs}
    seen = {f: listing(f) for f in folders}
    err, out = _io.StringIO(), _io.StringIO()
    rc, exc, hung = None, None, False
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = cli.main([str(a) for a in argv])
            except SystemExit as e:  # argparse
                rc = e.code if isinstance(e.code, int) else 2
    except _Timeout:
        hung = True
    except BaseException as e:  # noqa: BLE001 - anything escaping main is a traceback for the user
        exc = f"{type(e).__name__}: {str(e)[:200]} @ {traceback.extract_tb(e.__traceback__)[-1].filename.split('/')[-1]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    modified = [p for p, d in before.items() if digest(Path(p)) != d]
    oc = Outcome(rc=rc, stderr=err.getvalue(), exception=exc, hung=hung, modified=modified)
    if rc != 0:
        for f in folders:
            new = listing(f) - seen[f]
            oc.leftovers += [str(f / n) for n in sorted(new)]
    for f in folders:  # temp files never survive, success or not
        oc.leftovers += [str(f / n) for n in sorted(listing(f)) if n.endswith(".tmp") and str(f / n) not in oc.leftovers]
    return oc


# ----------------------------------------------------------------------------------------------
# Small base inputs: subsets of the bundled sample, written as their producer (oceanda) writes them
# ----------------------------------------------------------------------------------------------


def _subset(name: str, times: int, dest: Path) -> Path:
    with xr.open_dataset(SAMPLE / f"{name}.nc") as ds:
        sub = ds.isel(time=slice(0, times)).load() if "time" in ds.dims else ds.load()
    for v in sub.variables.values():
        v.encoding = {k: v.encoding[k] for k in ("dtype", "zlib", "complevel", "_FillValue", "units", "calendar")
                      if k in v.encoding}
    sub.to_netcdf(dest)
    return dest


def base_inputs(folder: Path) -> dict[str, Path]:
    """Write a small library (48 states), 3 days of altimetry, truth and points; return their paths.

    ``model`` is the bundled window model (read-only: never modified by any case).
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "library": _subset("library", 48, folder / "library.nc"),
        "obs": _subset("obs_altimetry_eval_1", 3, folder / "obs.nc"),
        "truth": _subset("truth_eval_1", 3, folder / "truth.nc"),
        "points": _subset("obs_insitu_eval_1", 0, folder / "points.nc"),
    }
    paths["model"] = MODEL
    paths["field_model"] = FIELD_MODEL
    return paths


def mutate(src: Path, dest: Path, change: Callable[[xr.Dataset], xr.Dataset]) -> Path:
    """Write ``change(ds)`` of ``src`` to ``dest`` (a producer rewriting a file with one thing wrong)."""
    with xr.open_dataset(src, decode_times=False, mask_and_scale=False) as ds:
        new = change(ds.load().copy(deep=True))
    for v in new.variables.values():
        v.encoding = {}
    new.to_netcdf(dest)
    return dest


def finite_output(path: Path) -> bool:
    """An output a valid case wrote: exists and its float fields are not all NaN or Inf anywhere."""
    with xr.open_dataset(path) as ds:
        for v in ds.data_vars.values():
            if np.issubdtype(v.dtype, np.floating):
                a = v.values
                if np.isinf(a).any() or (a.size and np.isnan(a).all()):
                    return False
    return True


def flip_bytes(src: Path, dest: Path, seed: int, count: int = 8) -> Path:
    """Copy ``src`` with ``count`` random bytes flipped (seeded), away from the first 512 bytes."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.integers(512, len(data), size=count):
        data[i] ^= 0xFF
    dest.write_bytes(bytes(data))
    return dest


def truncate(src: Path, dest: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def special_file(kind: str, dest: Path) -> Path:
    """A FIFO, an empty file, a folder or a dangling link at ``dest``."""
    if kind == "fifo":
        os.mkfifo(dest)
    elif kind == "empty":
        dest.write_bytes(b"")
    elif kind == "dir":
        dest.mkdir()
    elif kind == "dangling":
        dest.symlink_to(dest.parent / "does-not-exist.nc")
    elif kind == "text":
        dest.write_text("time,ssh\n0,1.0\n")
    elif kind == "pickle":
        import pickle

        dest.write_bytes(pickle.dumps({"a": 1}))
    return dest


# ----------------------------------------------------------------------------------------------
# File-mutation helpers (tests/test_fuzz_files.py)
# ----------------------------------------------------------------------------------------------


def member_ensemble(library: Path, dest: Path, time_like: Path, members: int = 20) -> Path:
    """An ensemble (time=1, member) of the first ``members`` library states, at ``time_like``'s first time."""
    with xr.open_dataset(library, decode_times=False, mask_and_scale=False) as lib, \
            xr.open_dataset(time_like, decode_times=False) as ref:
        lib = lib.load()
        t = ref["time"].load()
    coords = {"time": ("time", t.values[:1], t.attrs),
              "member": ("member", np.arange(members, dtype="int32"), {"long_name": "ensemble member"})}
    coords.update({c: lib[c] for c in ("layer", "y", "x", "lat", "lon") if c in lib.variables})
    ens = xr.Dataset(coords=coords, attrs={**lib.attrs, "title": "forecast ensemble"})
    for name, da in lib.data_vars.items():
        if da.dims[:1] == ("time",):
            ens[name] = (("time", "member") + da.dims[1:], da.values[None, :members], da.attrs)
    ens.to_netcdf(dest)
    return dest


def flip_at(src: Path, dest: Path, fraction: float, count: int = 1) -> Path:
    """Copy ``src`` with ``count`` consecutive bytes flipped at ``fraction`` of its length (past byte 512)."""
    data = bytearray(src.read_bytes())
    start = max(512, min(len(data) - count, int(len(data) * fraction)))
    for i in range(start, start + count):
        data[i] ^= 0xFF
    dest.write_bytes(bytes(data))
    return dest


def random_bytes(dest: Path, size: int = 65536, seed: int = 0, prefix: bytes = b"") -> Path:
    """``size`` seeded random bytes (after ``prefix``, e.g. the HDF5 signature) at ``dest``."""
    dest.write_bytes(prefix + np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return dest


def run_cli_isolated(argv: Sequence[str], inputs: Sequence[Path] = (), outputs: Sequence[Path] = (),
                     timeout: int = 60) -> Outcome:
    """:func:`run_cli` in a child Python, for inputs that may crash the process (a segfault in a C library).

    A child killed by a signal is reported as ``exception = "crash: signal N"`` (worse than a traceback).
    """
    import json
    import subprocess
    import sys

    code = ("import json, sys, dataclasses; sys.path.insert(0, sys.argv[1]); import fuzzkit; "
            "a = json.loads(sys.argv[2]); "
            "P = fuzzkit.Path; ins, outs = [P(p) for p in a['inputs']], [P(p) for p in a['outputs']]; "
            "oc = fuzzkit.run_cli(a['argv'], ins, outs, a['timeout']); "
            "print('\\nFUZZKIT-OUTCOME ' + json.dumps(dataclasses.asdict(oc)))")
    payload = json.dumps({"argv": [str(a) for a in argv], "inputs": [str(p) for p in inputs],
                          "outputs": [str(p) for p in outputs], "timeout": int(timeout)})
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), payload],
                              capture_output=True, text=True, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        return Outcome(rc=None, stderr="", hung=True)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("FUZZKIT-OUTCOME "):
            return Outcome(**json.loads(line[len("FUZZKIT-OUTCOME "):]))
    what = f"crash: signal {-proc.returncode}" if proc.returncode < 0 else f"child exit {proc.returncode}"
    return Outcome(rc=proc.returncode, stderr=proc.stderr[-2000:],
                   exception=f"{what} ({proc.stderr.strip()[-200:]})")


# ----------------------------------------------------------------------------------------------
# SIGKILL helpers (tests/test_kill.py, benchmarks/bench_kill.py): kill a writing verb, judge what it left
# ----------------------------------------------------------------------------------------------


def temp_leftovers(out: Path) -> list[str]:
    """Hidden entries (``.<name>.XXXX.tmp``, a temporary folder, a figure's ``.<name>.XXXX.png``) beside
    ``out`` or anywhere inside it: what an atomic writer leaves behind when it dies."""
    out = Path(out)
    found = [p for p in (out.parent.iterdir() if out.parent.is_dir() else []) if p.name.startswith(".")]
    if out.is_dir():
        found += [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    return sorted(str(p) for p in found)


def _complete(p: Path) -> str | None:
    """None if ``p`` reads back whole as what its name says, else why not."""
    import json

    try:
        if p.suffix in (".nc", ".nc4"):
            with xr.open_dataset(p) as ds:
                ds.load()
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".png":
            from PIL import Image

            with Image.open(p) as im:
                im.load()
        elif p.suffix == ".safetensors":
            from safetensors.numpy import load_file

            load_file(str(p))
        elif p.suffix in (".csv", ".txt", ".md"):
            if not p.read_text():
                return "empty"
    except Exception as exc:  # noqa: BLE001 - any failure to read back is a partial file
        return f"{type(exc).__name__}: {str(exc)[:100]}"
    return None


def partial_outputs(out: Path, model: bool = False) -> list[str]:
    """Files at the final path that do not read back whole (temporary files are not final paths).

    ``model``: ``out`` is a checkpoint folder, which must be absent or hold a loadable
    ``config.json`` and ``model.safetensors`` (a folder holding only ``resume/`` is partial).
    """
    out = Path(out)
    if not out.exists():
        return []
    files = [out] if out.is_file() else [p for p in out.rglob("*") if p.is_file()]
    bad = [f"{p}: {why}" for p in files if not any(part.startswith(".") for part in p.relative_to(out.parent).parts)
           and (why := _complete(p))]
    if model and out.is_dir():
        bad += [f"{out}: no {n}" for n in ("config.json", "model.safetensors") if not (out / n).is_file()]
    return bad


def kill_during(argv: Sequence[str], out: Path, rng: np.random.Generator, at_write: bool,
                expected_s: float, limit_s: float = 120.0) -> dict:
    """Start ``python -m oceanda argv``, SIGKILL it, return what happened.

    at_write: kill ``U(0, 0.05 s)`` after a temporary file first appears beside or inside ``out`` (the
    writer is at work); otherwise kill at a random moment ``U(0.3, 1.1) x expected_s`` (pass the time a
    previous run took to start writing: load on the machine stretches every run). A run that ends first
    (or never writes within ``limit_s``) is reported as not killed / killed at the limit.

    Returns ``{"killed", "at_s", "saw_tmp" (seconds to the first temporary file, or None), "mid_write"
    (a temporary file existed at the kill), "stderr"}``.
    """
    import subprocess
    import sys
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    stale = set(temp_leftovers(out))  # a previous run's leftovers are not this run writing
    deadline = float(rng.uniform(0.3, 1.1)) * expected_s if not at_write else limit_s
    proc = subprocess.Popen([sys.executable, "-m", "oceanda", *map(str, argv)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0, seen, kill_at = time.monotonic(), None, None
    try:
        while proc.poll() is None:
            now = time.monotonic() - t0
            if at_write and seen is None and set(temp_leftovers(out)) - stale:
                seen = now
                kill_at = now + float(rng.uniform(0.0, 0.05))
            target = kill_at if kill_at is not None else deadline
            if now >= target or now > limit_s:
                mid_write = bool(set(temp_leftovers(out)) - stale)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return {"killed": True, "at_s": round(now, 3), "saw_tmp": seen, "mid_write": mid_write,
                        "stderr": proc.stderr.read().decode(errors="replace")[-500:]}
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"killed": False, "at_s": round(time.monotonic() - t0, 3), "saw_tmp": seen, "mid_write": False,
            "rc": proc.returncode,
            "stderr": proc.stderr.read().decode(errors="replace")[-500:]}
