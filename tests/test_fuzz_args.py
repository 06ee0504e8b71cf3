"""Fuzz table (issue 17): argument values, checkpoint folders and output paths, through the CLI in-process.

Each case is one ``oceanda`` command line over small files built once per module (subsets of the bundled
sample, :func:`fuzzkit.base_inputs`) and run by :func:`fuzzkit.run_cli`, which checks what the README
promises: a bad input gives exit code 2 and one error line naming the option, file or folder, no traceback,
inputs byte-identical, nothing left at or beside the output; a legitimate input (``expect="ok"``) exits 0
with a complete, finite output. Why expectations are what they are is said next to each group; the
findings of a run are summarised in /tmp/team/fuzz_args_findings.md (issue 17).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import resource
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest

import fuzzkit as fk

E, OK = "error", "ok"
#: A value with an obvious meaning beyond what the data hold (top 1e8 of 16 states, a radius of 1e300 km
#: for a documented "inf"): refusing it in one line naming the option and honouring it (clipped, said)
#: are both what a user can expect; a traceback, a hang or a NaN output are not.
EITHER = "either"


# ----------------------------------------------------------------------------------------------
# Inputs, built once per module
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Env:
    """Paths every case may use (read-only; a case that must overwrite an input copies it first)."""

    base: Path
    library: Path  # 48 states
    obs: Path  # 3 days of along-track altimetry (times of truth)
    truth: Path  # 3 days
    points: Path
    lib16: Path  # 16 states: fast valid runs
    obs1: Path  # 1 day
    analysis: Path  # an EnOI analysis of obs (evaluate's input)
    cache: Path  # --cache-dir of the bundled models (never written into sample_data)
    model: Path = fk.MODEL
    field_model: Path = fk.FIELD_MODEL


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    base = tmp_path_factory.mktemp("fuzz_args_base")
    p = fk.base_inputs(base)
    lib16 = fk.mutate(p["library"], base / "lib16.nc", lambda ds: ds.isel(time=slice(0, 16)))
    obs1 = fk.mutate(p["obs"], base / "obs1.nc", lambda ds: ds.isel(time=slice(0, 1)))
    analysis = base / "enoi.nc"
    oc = fk.run_cli(["enkf", "--method", "enoi", "--ensemble", lib16, "--obs", p["obs"], "--loc-radius", "100",
                     "--out", analysis, "--quiet"])
    assert oc.rc == 0, oc.stderr
    return Env(base=base, library=p["library"], obs=p["obs"], truth=p["truth"], points=p["points"], lib16=lib16,
               obs1=obs1, analysis=analysis, cache=base / "cache")


@pytest.fixture(scope="module", autouse=True)
def _memory_guard():
    """Bound the address space: an unchecked allocation (a 160 GB encoder, a 14 TiB halo) fails fast
    as MemoryError (a traceback, reported) instead of swapping a shared machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = 12 * 2**30
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclasses.dataclass
class Run:
    """What a case runs: the argv, the inputs that must stay byte-identical, the outputs watched."""

    argv: list
    inputs: list
    outputs: list
    cwd: Path | None = None
    check: Callable[[fk.Outcome], list[str]] | None = None  # extra promise of the case (empty list: kept)
    cleanup: Callable[[], None] | None = None


@dataclasses.dataclass
class Case:
    id: str
    build: Callable[[Env, Path], Run]
    expect: str = E
    names: tuple[str, ...] | Callable[[Env, Path], tuple[str, ...]] = ()
    timeout: int = 30

    def __repr__(self) -> str:  # pytest ids
        return self.id


# ----------------------------------------------------------------------------------------------
# 1. Argument values of every numeric option of every verb
# ----------------------------------------------------------------------------------------------


def _observe(op: str, *extra: str):
    def base(e: Env, t: Path) -> Run:
        out = t / "obs_out.nc"
        return Run(["observe", "--states", e.truth, "--operator", op, *extra, "--out", out, "--quiet"], [e.truth], [out])
    return base


def _enkf(method: str, *extra: str):
    def base(e: Env, t: Path) -> Run:
        out = t / "analysis.nc"
        return Run(["enkf", "--method", method, "--ensemble", e.lib16, "--obs", e.obs1, *extra, "--out", out, "--quiet"],
                   [e.lib16, e.obs1], [out])
    return base


def _cycle(*extra: str):
    def base(e: Env, t: Path) -> Run:
        out = t / "cycle.nc"
        return Run(["enkf", "--cycle", "lorenz96", "--method", "letkf", "--loc-radius", "12", "--cycles", "5",
                    "--burn-in", "1", *extra, "--out", out, "--quiet"], [], [out])
    return base


def _assim(mode: str = "local", *extra: str):
    def base(e: Env, t: Path) -> Run:
        out = t / "analysis.nc"
        model = e.model if mode != "global" else e.field_model
        return Run(["assimilate", "--model", model, "--mode", mode, "--library", e.lib16, "--obs", e.obs1,
                    "--cache-dir", e.cache / mode, *extra, "--out", out, "--quiet"], [e.lib16, e.obs1, model], [out])
    return base


def _train(kind: str, *extra: str):
    def base(e: Env, t: Path) -> Run:
        out = t / "model"
        budget = ["--epochs", "1"] if kind == "field" else ["--epochs", "1", "--seconds", "1"]
        return Run(["train", "--kind", kind, "--states", e.library, "--obs", e.obs, *budget, "--allow-weak", *extra,
                    "--out", out, "--quiet"], [e.library, e.obs], [out])
    return base


def _sample_data(e: Env, t: Path) -> Run:
    out = t / "sample"
    return Run(["sample-data", "--testbed", "lorenz96", "--size", "tiny", "--out", out, "--quiet"], [], [out])


def _demo(e: Env, t: Path) -> Run:
    out = t / "demo"
    return Run(["demo", "--out", out, "--days", "1", "--mode", "global", "--quiet"], [], [out])


def _reproduce(e: Env, t: Path) -> Run:
    out = t / "repro"
    return Run(["reproduce", "baptista2025", "--quick", "--out", out, "--quiet"], [], [out])


#: Values every float option refuses: not finite, absurd, not a number.
FLOAT_BAD = {"-1": E, "nan": E, "inf": E, "-inf": E, "1e300": E, "abc": E}
#: Values every count option refuses: negative, not an integer, beyond any machine.
INT_BAD = {"-1": E, "99999999999999999999": E, "abc": E, "1.5": E}

# (label, base, option, values {value: expect}); values override the defaults of the option's kind.
# Legitimate edge values are "ok": --rtps 0/1 (the documented range 0..1), --loc-radius inf for EnOI
# ("inf: no localisation" in --help), a seed of 0 or 100000000, --angle-deg 0, --burn-in beyond the run
# ("at most a third" per the API), --cloud-fraction 0 (no clouds). Zero is refused where it divides
# (tau, lr, sigma used as the error std), empties the output (satellites, passes, profiles) or makes no
# sense (window 0, epochs 0 writes an untrained model). 100000000 is refused where it sizes an allocation
# (members, widths, halo, satellites) and legitimate where it is a count of days or a seed.
ARG_SPECS: list[tuple[str, Callable, str, str, dict[str, str]]] = [
    ("observe", _observe("altimetry"), "--sigma", "float", {"0": E, "0.002": OK, "": E}),
    ("observe", _observe("altimetry"), "--sigma-fraction", "float", {"0": E, "0.5": OK}),
    ("observe", _observe("altimetry"), "--seed", "own", {"0": OK, "100000000": OK, "-1": E, "abc": E, "": E}),
    ("observe", _observe("altimetry"), "--track-spacing-km", "float", {"0": E, "50": OK}),
    ("observe", _observe("altimetry"), "--track-width-km", "float", {"0": E, "30": OK}),
    ("observe-points", _observe("points"), "--along-track-km", "float", {"0": E, "7": OK}),
    ("observe", _observe("altimetry"), "--repeat-days", "int", {"0": E, "100000000": EITHER, "10": OK}),
    ("observe", _observe("altimetry"), "--satellites", "int", {"0": E, "100000000": E, "1": OK}),
    ("observe", _observe("altimetry"), "--passes-per-day", "int", {"0": E, "100000000": E, "1": OK}),
    ("observe", _observe("altimetry"), "--angle-deg", "float", {"0": E, "180": E, "-1": OK, "-30": OK}),
    ("observe-gappy", _observe("gappy"), "--cloud-fraction", "float",
     {"0": OK, "1": E, "2": E, "0.2 0.4": OK, "0.7 0.3": E, "0.1 0.2 0.3": E}),
    ("observe-gappy", _observe("gappy"), "--cloud-size-km", "float", {"0": E, "50": OK}),
    ("observe-gappy-psi", _observe("gappy", "--variables", "psi"), "--layer", "int",
     {"0": OK, "1": OK, "2": E, "100000000": E}),
    ("observe-profiles", _observe("profiles"), "--profiles-per-day", "float", {"0": E, "100000000": E, "5": OK}),
    ("enkf-enoi", _enkf("enoi", "--loc-radius", "100"), "--alpha", "float", {"0": E, "0.5": OK, "": E}),
    ("enkf-enoi", _enkf("enoi"), "--loc-radius", "float", {"0": E, "inf": OK, "1e300": EITHER, "100": OK}),
    ("enkf-enoi", _enkf("enoi", "--loc-radius", "100"), "--members", "int",
     {"0": E, "1": E, "100000000": E, "8": OK}),
    ("enkf-enoi", _enkf("enoi", "--loc-radius", "100"), "--seed", "own", {"0": OK, "100000000": OK, "-1": E, "abc": E}),
    ("enkf-letkf", _enkf("letkf", "--loc-radius", "100", "--block", "4"), "--inflation", "float",
     {"0": E, "1.05": OK, "": E}),
    ("enkf-letkf", _enkf("letkf", "--loc-radius", "100", "--block", "4"), "--rtps", "float",
     {"0": OK, "1": OK, "2": E}),
    ("enkf-letkf", _enkf("letkf", "--loc-radius", "100", "--block", "4"), "--rtpp", "float",
     {"0": OK, "1": OK, "2": E}),
    ("enkf-letkf", _enkf("letkf", "--loc-radius", "100"), "--block", "int", {"0": E, "8": OK}),
    ("enkf-letkf", _enkf("letkf", "--block", "4"), "--loc-radius", "float", {"0": E, "inf": E, "1e300": EITHER, "100": OK}),
    ("enkf-cycle", _cycle(), "--cycles", "int", {"0": E, "100000000": E}),
    ("enkf-cycle", _cycle(), "--burn-in", "own", {"0": OK, "100000000": OK}),
    ("enkf-cycle", _cycle(), "--members", "int", {"0": E, "1": E, "100000000": E}),
    ("enkf-cycle", _cycle(), "--inflation", "own", {"0": E, "nan": E, "1.02": OK}),
    ("enkf-cycle", _cycle(), "--rtps", "own", {"2": E, "0.5": OK}),
    ("enkf-cycle", _cycle(), "--loc-radius", "own", {"0": E}),
    ("enkf-cycle", _cycle(), "--checkpoint-every", "own", {"0": E}),
    ("assimilate", _assim("local"), "--members", "int", {"0": E, "100000000": E, "1": OK, "": E}),
    ("assimilate", _assim("local"), "--seed", "own", {"0": OK, "100000000": OK, "-1": E, "abc": E}),
    ("assimilate", _assim("local"), "--spread-factor", "float", {"0": E, "1.2": OK}),
    ("assimilate", _assim("local"), "--tau", "float", {"0": E, "0.05": OK, "": E}),
    ("assimilate", _assim("local"), "--min-ess", "float", {"0": OK, "5": OK, "1e300": EITHER}),
    ("assimilate-temper", _assim("local", "--temper"), "--min-ess", "own", {"1e300": E, "5": OK}),
    ("assimilate-global", _assim("global"), "--top-k", "int", {"0": E, "100000000": EITHER, "99999999999999999999": EITHER, "3": OK}),
    ("assimilate-global", _assim("global"), "--tau", "own", {"0": E}),
    ("train-field", _train("field"), "--obs-days", "int", {"0": E, "100000000": E, "2": OK}),
    ("train-field", _train("field"), "--window", "own", {"0": E, "-1": E, "abc": E}),
    ("train-field", _train("field"), "--embedding-dim", "int", {"0": E, "100000000": E, "16": OK}),
    ("train-field", _train("field"), "--tau", "float", {"0": E, "0.2": OK}),
    ("train-field", _train("field"), "--epochs", "int", {"0": E}),
    ("train-field", _train("field"), "--batch-size", "int", {"0": E, "1": E, "100000000": EITHER, "99999999999999999999": EITHER}),
    ("train-field", _train("field"), "--lr", "float", {"0": E, "": E}),
    ("train-field", _train("field"), "--seconds", "own", {"0": E, "-1": E, "nan": E, "abc": E}),
    ("train-field", _train("field"), "--seed", "own", {"0": OK, "-1": E, "abc": E}),
    ("train-field", _train("field"), "--depth", "int", {"0": E, "100000000": EITHER, "99999999999999999999": EITHER}),
    ("train-field", _train("field"), "--width", "int", {"0": E, "100000000": E}),
    ("train-field", _train("field"), "--input-pool", "int", {"0": E, "100000000": E}),
    ("train-field", _train("field"), "--val-fraction", "float", {"0": E, "1": E}),
    ("train-field", _train("field"), "--patience", "own", {"-1": E, "abc": E}),
    ("train-field", _train("field"), "--block", "int", {"0": E, "100000000": E}),
    ("train-window", _train("window"), "--window-size", "own", {"0": E, "100000000": E, "abc": E}),
    ("train-window", _train("window"), "--window-stride", "own", {"0": E, "100000000": E}),
    ("train-window", _train("window"), "--halo", "own", {"-1": E, "100000000": E}),
    ("train-window", _train("window"), "--obs-days", "own", {"0": E}),
    ("sample-data", _sample_data, "--seed", "own", {"0": OK, "-1": E, "abc": E, "": E}),
    ("demo", _demo, "--members", "own", {"0": E, "-1": E, "100000000": E, "abc": E}),
    ("demo", _demo, "--days", "own", {"0": E, "-1": E, "abc": E}),
    ("demo", _demo, "--seed", "own", {"-1": E, "abc": E}),
    ("reproduce", _reproduce, "--seed", "own", {"-1": E, "abc": E, "nan": E}),
]



def _arg_case(label: str, base: Callable, flag: str, value: str, expect: str) -> Case:
    slow = label.startswith(("train", "demo", "reproduce"))  # an unrefused value trains or runs minutes

    def build(e: Env, t: Path) -> Run:
        run = base(e, t)
        words = value.split(" ") if value else [""]
        if flag == "--checkpoint-every":
            run.argv[1:1] = ["--checkpoint-dir", str(t / "ckpt")]
        run.argv += [flag, *words]
        return run

    shown = value.replace(" ", "_") if value else "EMPTY"
    return Case(f"args-{label}-{flag.lstrip('-')}={shown}", build, expect, (flag,), timeout=10 if slow else 20)


def _arg_cases() -> list[Case]:
    cases = []
    for label, base, flag, kind, own in ARG_SPECS:
        values = dict({"float": FLOAT_BAD, "int": INT_BAD}.get(kind, {}))
        values.update(own)
        cases += [_arg_case(label, base, flag, v, x) for v, x in values.items()]
    return cases


# ----------------------------------------------------------------------------------------------
# 2. Checkpoint folders: copies of the bundled models with config.json / model.safetensors mutated
# ----------------------------------------------------------------------------------------------

_MISSING = object()


def _copy_model(src: Path, dest: Path) -> Path:
    """The model's own files (not its derived library_cache)."""
    dest.mkdir()
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
    return dest


def _set(cfg: dict, key: str, value: Any) -> None:
    *path, last = key.split(".")
    node = cfg
    for p in path:
        node = node[p]
    if value is _MISSING:
        del node[last]
    else:
        node[last] = value


def _config_edit(key: str, value: Any) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        cfg = json.loads((model / "config.json").read_text())
        _set(cfg, key, value)
        (model / "config.json").write_text(json.dumps(cfg, indent=1, ensure_ascii=False), encoding="utf-8")
    return edit


def _config_text(text: str | Callable[[str], str]) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        f = model / "config.json"
        f.write_text(text(f.read_text()) if callable(text) else text)
    return edit


def _config_bytes(change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        f = model / "config.json"
        f.write_bytes(change(f.read_bytes()))
    return edit


def _deep(text: str) -> str:
    cfg = json.loads(text)
    return json.dumps(cfg)[:-1] + ', "deep": ' + "[" * 10000 + "]" * 10000 + "}"


def _tensors(change: Callable[[dict], dict]) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        from safetensors.numpy import load_file, save_file

        f = model / "model.safetensors"
        t = load_file(str(f))
        save_file(change(t), str(f))
    return edit


def _first(t: dict) -> str:
    return sorted(t)[0]


def _largest(t: dict) -> str:
    return max(sorted(t), key=lambda k: t[k].size)


def _nan_weights(t):
    k = _largest(t)
    t[k] = t[k].copy()
    t[k].flat[::7] = float("nan")
    return t


def _inf_weight(t):
    k = _first(t)
    t[k] = t[k].copy()
    t[k].flat[0] = float("inf")
    return t


def _drop_tensor(t):
    del t[_largest(t)]
    return t


def _extra_tensor(t):
    import numpy as np

    t["state_encoder.unexpected.weight"] = np.zeros((4, 4), dtype="float32")
    return t


def _wrong_shape(t):
    k = next(k for k in sorted(t) if t[k].ndim == 2)
    t[k] = t[k].T.copy()
    if t[k].shape[0] == t[k].shape[1]:
        t[k] = t[k][:-1].copy()
    return t


def _weights_bytes(make: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        f = model / "model.safetensors"
        f.write_bytes(make(f.read_bytes()))
    return edit


def _random_bytes(data: bytes) -> bytes:
    import numpy as np

    return np.random.default_rng(17).bytes(len(data))


def _huge_header(data: bytes) -> bytes:
    """A safetensors header declaring a 4 TB tensor (the file holds a few bytes)."""
    n = 2**20
    header = json.dumps({"w": {"dtype": "F32", "shape": [n, n], "data_offsets": [0, 4 * n * n]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 64


class _Payload:
    """Unpickling this creates a marker file: proof that the loader ran a pickle."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_edit(model: Path) -> None:
    (model / "model.safetensors").write_bytes(pickle.dumps({"state_encoder.w": _Payload(str(model.parent / "PWNED"))}))


def _remove(name: str) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        f = model / name
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    return edit


def _replace_by_dir(name: str) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        (model / name).unlink()
        (model / name).mkdir()
    return edit


def _fifo(name: str) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        (model / name).unlink()
        os.mkfifo(model / name)
    return edit


NAN, INF = float("nan"), float("inf")

#: Window model (local mode). Metadata deletions are legitimate (a model that lost its training record
#: still works: loss, training, oceanda_version, a redundant temperature/embedding_dim, an extra comment);
#: anything the analysis is built from is refused when missing, mistyped, non-finite or out of range.
WINDOW_MUTATIONS: list[tuple[str, Callable[[Path], None] | None, str]] = [
    ("unmodified", None, OK),
    ("add-comment", _config_edit("comment", "hand-edited"), OK),
    *[(f"del-{k}", _config_edit(k, _MISSING), OK) for k in ("loss", "training", "oceanda_version", "temperature",
                                                             "embedding_dim", "window_training",
                                                             "extra.observation_patterns")],
    *[(f"del-{k}", _config_edit(k, _MISSING), E) for k in (
        "normalization", "grid_fingerprint", "extra", "state_encoder", "obs_encoder", "similarity",
        "normalization.state", "normalization.obs.std", "extra.state_channels", "extra.obs_channels",
        "extra.window.halo", "state_encoder.in_shape", "state_encoder.type", "similarity.kind",
        "extra.obs_error_channel")],  # the bundled window model reads errors: its obs encoder takes 9 channels
    ("type-error-channel-string", _config_edit("extra.obs_error_channel", "yes"), E),
    ("type-std-string", _config_edit("normalization.state.std", "0.01"), E),
    ("type-mean-object", _config_edit("normalization.state.mean", {}), E),
    ("type-window-size-string", _config_edit("extra.window.size", "16"), E),
    ("type-window-size-float", _config_edit("extra.window.size", 16.5), E),
    ("type-periodic-string", _config_edit("extra.window.periodic", "yes"), E),
    ("type-hidden-string", _config_edit("state_encoder.hidden", "256"), E),
    ("type-hidden-mixed", _config_edit("state_encoder.hidden", [256, "x"]), E),
    ("type-tau-string", _config_edit("similarity.tau", "0.1"), E),
    ("type-fingerprint-int", _config_edit("grid_fingerprint", 12345), E),
    ("type-channels-string", _config_edit("extra.state_channels", "ssh"), E),
    ("unknown-encoder-type", _config_edit("state_encoder.type", "transformer"), E),
    ("unknown-similarity", _config_edit("similarity.kind", "euclid"), E),
    *[(f"tau={v}", _config_edit("similarity.tau", v), E) for v in (NAN, INF, 0, -1)],
    ("temperature=nan", _config_edit("temperature", NAN), E),
    *[(f"state-std={v}", _config_edit("normalization.state.std", [v]), E) for v in (0, -1, NAN)],
    ("obs-std=0", _config_edit("normalization.obs.std", [0.0]), E),
    *[(f"state-mean={v}", _config_edit("normalization.state.mean", [v]), E) for v in (INF, NAN)],
    ("state-mean-2-values", _config_edit("normalization.state.mean", [0.0, 0.0]), E),
    ("halo=1e6", _config_edit("extra.window.halo", 1000000), E),
    ("halo=-1", _config_edit("extra.window.halo", -1), E),
    ("halo-5000-digits", _config_text(lambda s: s.replace('"halo": 8', '"halo": ' + "9" * 5000)), E),
    ("window-size=0", _config_edit("extra.window.size", 0), E),
    ("window-size=100000", _config_edit("extra.window.size", 100000), E),
    ("window-stride=0", _config_edit("extra.window.stride", 0), E),
    ("hidden=200000x200000", _config_edit("state_encoder.hidden", [200000, 200000]), E),
    ("obs-width=1e8", _config_edit("obs_encoder.width", 100000000), E),
    ("obs-depth=1000", _config_edit("obs_encoder.depth", 1000), E),
    ("out-dim=32", _config_edit("state_encoder.out_dim", 32), E),
    ("state-in-shape-2ch", _config_edit("state_encoder.in_shape", [2, 16, 16]), E),
    ("obs-in-shape-wrong", _config_edit("obs_encoder.in_shape", [2, 64, 64]), E),
    ("state-channels-plus-one", _config_edit("extra.state_channels", [["ssh", None], ["psi", 0]]), E),
    ("obs-channels-sst", _config_edit("extra.obs_channels", [["sst", None]]), E),
    ("fingerprint-changed", _config_edit("grid_fingerprint", "0000000000000000"), E),
    ("spread-factor=nan", _config_edit("sampler.spread_factor", NAN), E),
    ("spread-factor=-1", _config_edit("sampler.spread_factor", -1), E),
    ("deep-nesting-10000", _config_text(_deep), E),
    ("config-array", _config_text("[]"), E),
    ("config-null", _config_text("null"), E),
    ("config-empty", _config_text(""), E),
    ("config-not-json", _config_text("{not json"), E),
    ("config-utf8-note", _config_edit("note", "caf\xe9 \u00b0C"), OK),
    ("config-latin1-byte", _config_bytes(lambda b: b.replace(b'"gelu"', b'"g\xe9lu"', 1)), E),
    ("config-dir", _replace_by_dir("config.json"), E),
    ("config-missing", _remove("config.json"), E),
    ("config-fifo", _fifo("config.json"), E),
    ("weights-nan", _tensors(_nan_weights), E),
    ("weights-inf", _tensors(_inf_weight), E),
    ("weights-tensor-removed", _tensors(_drop_tensor), E),
    ("weights-extra-tensor", _tensors(_extra_tensor), E),
    ("weights-wrong-shape", _tensors(_wrong_shape), E),
    ("weights-truncated-half", _weights_bytes(lambda d: d[: len(d) // 2]), E),
    ("weights-truncated-8-bytes", _weights_bytes(lambda d: d[:8]), E),
    ("weights-random-bytes", _weights_bytes(_random_bytes), E),
    ("weights-empty", _weights_bytes(lambda d: b""), E),
    ("weights-huge-header", _weights_bytes(_huge_header), E),
    ("weights-pickle", _pickle_edit, E),
    ("weights-dir", _replace_by_dir("model.safetensors"), E),
    ("weights-missing", _remove("model.safetensors"), E),
    ("weights-fifo", _fifo("model.safetensors"), E),
]

#: Whole-field model (--mode global): the parts a field model adds (stacked days, layout, CNN pooling).
FIELD_MUTATIONS: list[tuple[str, Callable[[Path], None] | None, str]] = [
    ("unmodified", None, OK),
    *[(f"del-{k}", _config_edit(k, _MISSING), E) for k in ("normalization", "grid_fingerprint", "extra.state_channels",
                                                            "normalization.state.std")],
    ("del-extra.layout", _config_edit("extra.layout", _MISSING), OK),  # training record: the data give the layout
    ("state-std=0", _config_edit("normalization.state.std", [1506.1, 0.0, 0.0138]), E),
    ("state-mean=nan", _config_edit("normalization.state.mean", [0.0, NAN, 0.0]), E),
    ("state-channels-minus-one", _config_edit("extra.state_channels", [["psi", 0], ["ssh", None]]), E),
    ("state-in-shape-2ch", _config_edit("state_encoder.in_shape", [2, 64, 64]), E),
    ("obs-window-days=0", _config_edit("extra.obs_window_days", 0), E),
    ("obs-window-days=1e6", _config_edit("extra.obs_window_days", 1000000), E),
    ("input-pool=0", _config_edit("state_encoder.input_pool", 0), E),
    ("depth=1000", _config_edit("state_encoder.depth", 1000), E),
    ("fingerprint-changed", _config_edit("grid_fingerprint", "0000000000000000"), E),
    ("weights-nan", _tensors(_nan_weights), E),
    ("weights-tensor-removed", _tensors(_drop_tensor), E),
]


def _ckpt_case(kind: str, label: str, edit: Callable[[Path], None] | None, expect: str, mode: str | None = None,
               also: tuple[str, ...] = ()) -> Case:
    src = fk.MODEL if kind == "window" else fk.FIELD_MODEL
    mode = mode or ("local" if kind == "window" else "global")

    def build(e: Env, t: Path) -> Run:
        model = _copy_model(src, t / "model")
        if edit is not None:
            edit(model)
        out = t / "analysis.nc"
        marker = t / "PWNED"

        def no_payload(oc: fk.Outcome) -> list[str]:
            return ["a pickle payload ran"] if marker.exists() else []

        argv = ["assimilate", "--model", model, "--mode", mode, "--library", e.lib16, "--obs", e.obs1, "--out", out,
                "--quiet"]
        return Run(argv, [e.lib16, e.obs1, model], [out], check=no_payload)

    def names(e: Env, t: Path) -> tuple[str, ...]:
        return (str(t / "model"), *[str(getattr(e, a, a)) for a in also])

    return Case(f"ckpt-{kind}-{label}", build, expect, names, timeout=15 if "fifo" in label else 40)


def _ckpt_cases() -> list[Case]:
    # a model encoding a variable the observations lack: the model or the observation file may be named
    also = {"obs-channels-sst": ("obs1",)}
    cases = [_ckpt_case("window", lbl, ed, x, also=also.get(lbl, ())) for lbl, ed, x in WINDOW_MUTATIONS]
    cases += [_ckpt_case("field", lbl, ed, x) for lbl, ed, x in FIELD_MUTATIONS]
    cases.append(_ckpt_case("window", "hybrid-alpha=nan", _config_edit("sampler.hybrid.alpha", NAN), E, mode="hybrid"))
    cases.append(_ckpt_case("window", "hybrid-radius=0", _config_edit("sampler.hybrid.radius", 0.0), E, mode="hybrid"))
    # a model of the other kind: refused, naming the model folder (and what --mode or train --kind would fit)
    cases.append(_ckpt_case("window", "mode-global", None, E, mode="global", also=("--mode",)))
    cases.append(_ckpt_case("field", "mode-local", None, E, mode="local", also=("--mode",)))

    def missing(e: Env, t: Path) -> Run:
        out = t / "analysis.nc"
        return Run(["assimilate", "--model", t / "model", "--library", e.lib16, "--obs", e.obs1, "--out", out, "--quiet"],
                   [e.lib16, e.obs1], [out])

    def is_file(e: Env, t: Path) -> Run:
        (t / "model").write_text("not a folder")
        return missing(e, t)

    def empty(e: Env, t: Path) -> Run:
        (t / "model").mkdir()
        return missing(e, t)

    names = lambda e, t: (str(t / "model"),)  # noqa: E731
    cases += [Case("ckpt-folder-missing", missing, E, names), Case("ckpt-folder-is-a-file", is_file, E, names),
              Case("ckpt-folder-empty", empty, E, names)]
    return cases


# ----------------------------------------------------------------------------------------------
# 3. Output paths
# ----------------------------------------------------------------------------------------------


def _own_inputs(e: Env, t: Path) -> dict[str, Path]:
    """Private copies of the inputs: a case that (wrongly) overwrites one must not spoil the others."""
    d = t / "in"
    d.mkdir()
    return {k: Path(shutil.copy2(getattr(e, k), d / getattr(e, k).name)) for k in ("lib16", "obs1", "truth", "analysis")}


def _enoi_to(out_of: Callable[[dict[str, Path], Path], Path], overwrite: bool, cwd_rel: bool = False,
             rel_out: bool = False):
    def build(e: Env, t: Path) -> Run:
        p = _own_inputs(e, t)
        out = out_of(p, t)
        ens, obs = p["lib16"], p["obs1"]
        cwd = None
        if cwd_rel:  # inputs spelled relative to the working folder, the output absolute (or the reverse)
            cwd = p["obs1"].parent
            ens, obs = Path(ens.name), Path(obs.name)
        if rel_out:  # inputs absolute, the output relative to the working folder
            cwd, out = p["obs1"].parent, Path(out).name
        argv = ["enkf", "--method", "enoi", "--loc-radius", "100", "--ensemble", ens, "--obs", obs, "--out", out,
                "--quiet", *(["--overwrite"] if overwrite else [])]
        return Run(argv, [p["lib16"], p["obs1"]], [out], cwd=cwd)
    return build


def _assim_to(out_of: Callable[[dict[str, Path], Path], Path], overwrite: bool):
    def build(e: Env, t: Path) -> Run:
        p = _own_inputs(e, t)
        out = out_of(p, t)
        argv = ["assimilate", "--model", e.field_model, "--mode", "global", "--cache-dir", e.cache / "global",
                "--library", p["lib16"], "--obs", p["obs1"], "--out", out, "--quiet",
                *(["--overwrite"] if overwrite else [])]
        return Run(argv, [p["lib16"], p["obs1"], e.field_model], [out])
    return build


def _observe_to(out_of: Callable[[dict[str, Path], Path], Path], overwrite: bool):
    def build(e: Env, t: Path) -> Run:
        p = _own_inputs(e, t)
        out = out_of(p, t)
        argv = ["observe", "--states", p["truth"], "--operator", "altimetry", "--out", out, "--quiet",
                *(["--overwrite"] if overwrite else [])]
        return Run(argv, [p["truth"]], [out])
    return build


def _evaluate_to(out_of: Callable[[dict[str, Path], Path], Path], overwrite: bool):
    def build(e: Env, t: Path) -> Run:
        p = _own_inputs(e, t)
        out = out_of(p, t)
        argv = ["evaluate", "--truth", p["truth"], "--analysis", f"enoi={p['analysis']}", "--out", out, "--quiet",
                *(["--overwrite"] if overwrite else [])]
        return Run(argv, [p["truth"], p["analysis"]], [out])
    return build


def _train_to(out_of: Callable[[dict[str, Path], Path], Path], overwrite: bool):
    def build(e: Env, t: Path) -> Run:
        p = _own_inputs(e, t)
        lib = Path(shutil.copy2(e.library, p["obs1"].parent / "library.nc"))
        obs = Path(shutil.copy2(e.obs, p["obs1"].parent / "obs.nc"))
        out = out_of({**p, "library": lib, "obs": obs}, t)
        argv = ["train", "--kind", "field", "--epochs", "1", "--allow-weak", "--states", lib, "--obs", obs, "--out", out,
                "--quiet", *(["--overwrite"] if overwrite else [])]
        return Run(argv, [lib, obs], [out])
    return build


def _sample_to(out_of: Callable[[dict[str, Path], Path], Path], overwrite: bool):
    def build(e: Env, t: Path) -> Run:
        out = out_of({"analysis": e.analysis}, t)
        argv = ["sample-data", "--testbed", "lorenz96", "--size", "tiny", "--out", out, "--quiet",
                *(["--overwrite"] if overwrite else [])]
        return Run(argv, [], [out])
    return build


def _symlink(p, t):
    (t / "link.nc").symlink_to(p["obs1"])
    return t / "link.nc"


def _hardlink(p, t):
    os.link(p["obs1"], t / "hard.nc")
    return t / "hard.nc"


def _dotdot(p, t):
    (t / "sub").mkdir()
    return Path(f"{t}/sub/../in/{p['obs1'].name}")


def _existing(p, t):
    f = t / "previous.nc"
    shutil.copy2(p["analysis"], f)
    return f


def _existing_dir(p, t):
    (t / "adir").mkdir()
    (t / "adir" / "keep.txt").write_text("keep me")
    return t / "adir"


def _empty_dir(p, t):
    (t / "adir").mkdir()
    return t / "adir"


def _under_file(p, t):
    return p["obs1"] / "analysis.nc"


def _deep_missing(p, t):
    return t / "a" / "b" / "c" / "d" / "analysis.nc"


def _name(n: int):
    def make(p, t):
        return t / ("a" * (n - 3) + ".nc")
    return make


def _report_existing(p, t):
    (t / "report").mkdir()
    (t / "report" / "metrics.json").write_text('{"old": true}')
    return t / "report"


def _model_existing(p, t):
    dest = _copy_model(fk.FIELD_MODEL, t / "oldmodel")
    return dest


def _path_case(cid: str, build: Callable[[Env, Path], Run], expect: str, names: Callable | tuple = (),
               watch_extra: Callable[[Env, Path], list[Path]] | None = None) -> Case:
    def with_checks(e: Env, t: Path) -> Run:
        run = build(e, t)
        given = str(run.argv[run.argv.index("--out") + 1])
        out = Path(given) if run.cwd is None else run.cwd / given
        if given and _exists(out) and out.resolve() not in [Path(i).resolve() for i in run.inputs]:
            run.inputs = [*run.inputs, out]  # an existing output not replaced must stay byte-identical on error
        if given and _exists(out) and out.is_dir():
            run.outputs = [out, out / "analysis.nc"]  # watch beside and inside the folder
        run.outputs = [Path(o) if run.cwd is None or Path(o).is_absolute() else run.cwd / o for o in run.outputs]
        link = t / "link.nc"
        was_link = link.is_symlink()

        def check(oc: fk.Outcome) -> list[str]:
            bad = []
            if was_link and not link.is_symlink():
                bad.append("the symlink was replaced")
            if expect == OK and out.suffix == ".nc" and not (_exists(out) and out.is_file() and fk.finite_output(out)):
                bad.append("no complete output")
            return bad
        run.check = check
        return run
    return Case(f"out-{cid}", with_checks, expect, names, timeout=40)


def _exists(p: Path) -> bool:
    """``p.exists()``, False for a name the OS refuses (too long)."""
    try:
        return p.exists()
    except OSError:
        return False


def _path_names(e: Env, t: Path) -> tuple[str, ...]:
    return (str(t),)


def _path_cases() -> list[Case]:
    n = _path_names
    obs = lambda p, t: p["obs1"]  # noqa: E731
    lib = lambda p, t: p["lib16"]  # noqa: E731
    truth = lambda p, t: p["truth"]  # noqa: E731
    cases = [
        # an output that is an input: refused with or without --overwrite, input byte-identical
        _path_case("enkf-is-obs", _enoi_to(obs, False), E, n),
        _path_case("enkf-is-obs-overwrite", _enoi_to(obs, True), E, n),
        _path_case("enkf-is-ensemble-overwrite", _enoi_to(lib, True), E, n),
        _path_case("enkf-symlink-to-obs-overwrite", _enoi_to(_symlink, True), E, n),
        _path_case("enkf-hardlink-to-obs-overwrite", _enoi_to(_hardlink, True), E, n),
        _path_case("enkf-dotdot-obs-overwrite", _enoi_to(_dotdot, True), E, n),
        _path_case("enkf-relative-inputs-absolute-out-overwrite", _enoi_to(obs, True, cwd_rel=True), E, n),
        _path_case("enkf-absolute-inputs-relative-out-overwrite", _enoi_to(obs, True, rel_out=True), E, n),
        _path_case("assimilate-is-obs-overwrite", _assim_to(obs, True), E, n),
        _path_case("assimilate-is-library-overwrite", _assim_to(lib, True), E, n),
        _path_case("observe-is-states-overwrite", _observe_to(truth, True), E, n),
        _path_case("observe-symlink-to-states-overwrite", _observe_to(lambda p, t: _symlink({"obs1": p["truth"]}, t), True),
                   E, n),
        _path_case("evaluate-is-truth-file-overwrite", _evaluate_to(truth, True), E, n),
        # a report folder that holds an input: --overwrite may replace files in it (the shared contract
        # io.check_distinct refuses a folder holding an input)
        _path_case("evaluate-folder-holds-inputs-overwrite", _evaluate_to(lambda p, t: p["truth"].parent, True), E, n),
        _path_case("train-is-obs-overwrite", _train_to(lambda p, t: p["obs"], True), E, n),
        _path_case("train-folder-holds-states-overwrite", _train_to(lambda p, t: p["library"].parent, True), E, n),
        # existing outputs without --overwrite: refused, untouched
        _path_case("enkf-existing", _enoi_to(_existing, False), E, n),
        _path_case("observe-existing", _observe_to(_existing, False), E, n),
        _path_case("assimilate-existing", _assim_to(_existing, False), E, n),
        _path_case("evaluate-existing-report", _evaluate_to(_report_existing, False), E, n),
        _path_case("train-existing-model", _train_to(_model_existing, False), E, n),
        _path_case("sample-data-existing-folder", _sample_to(_existing_dir, False), E, n),
        _path_case("sample-data-out-is-file-overwrite", _sample_to(_existing, True), E, n),
        # wrong kinds of path
        _path_case("enkf-out-is-dir", _enoi_to(_existing_dir, False), E, n),
        _path_case("enkf-out-is-dir-overwrite", _enoi_to(_existing_dir, True), E, n),
        _path_case("enkf-out-is-empty-dir-overwrite", _enoi_to(_empty_dir, True), E, n),
        _path_case("evaluate-out-is-file", _evaluate_to(_existing, False), E, n),
        _path_case("evaluate-out-is-file-overwrite", _evaluate_to(_existing, True), E, n),
        _path_case("train-out-is-file-overwrite", _train_to(_existing, True), E, n),
        _path_case("enkf-under-regular-file", _enoi_to(_under_file, False), E, n),
        _path_case("observe-under-regular-file", _observe_to(_under_file, False), E, n),
        _path_case("evaluate-under-regular-file", _evaluate_to(lambda p, t: p["truth"] / "report", False), E, n),
        _path_case("enkf-name-300-chars", _enoi_to(_name(300), False), E, n),
        _path_case("observe-name-300-chars", _observe_to(_name(300), False), E, n),
        _path_case("enkf-empty-out", _enoi_to(lambda p, t: "", False), E, ("--out",)),
        # legitimate: a missing folder is created (as `mkdir -p`: the help says folders are created, and a
        # refusal would only make the user type the mkdir); a 250-byte name is a legal name even though
        # the temporary file beside it needs a longer one
        _path_case("enkf-deep-missing-folder", _enoi_to(_deep_missing, False), OK),
        _path_case("observe-deep-missing-folder", _observe_to(_deep_missing, False), OK),
        _path_case("evaluate-deep-missing-folder", _evaluate_to(lambda p, t: t / "x" / "y" / "report", False), OK),
        _path_case("enkf-name-250-chars", _enoi_to(_name(250), False), OK),
        _path_case("enkf-relative-out", _enoi_to(lambda p, t: Path("rel_analysis.nc"), False, cwd_rel=True), OK),
    ]
    cases.append(Case("out-enkf-read-only-folder", _read_only(_enoi_to, False), E, _path_names))
    cases.append(Case("out-observe-read-only-folder", _read_only(_observe_to, False), E, _path_names))
    # a cache is an optimisation: refusing the file, or warning (naming it) and running uncached, both do
    cases.append(Case("out-assimilate-cache-dir-is-file", _cache_is_file, EITHER, lambda e, t: ("--cache-dir", str(t))))
    return cases


def _read_only(maker, overwrite: bool):
    """A folder the process may not write into: chmod 0555, or for root (whom modes do not stop) the
    immutable attribute (``chattr +i``); skipped only where root cannot set it either."""
    import subprocess

    def build(e: Env, t: Path) -> Run:
        ro = t / "ro"
        ro.mkdir()
        run = maker(lambda p, t_: ro / "out.nc", overwrite)(e, t)
        if os.geteuid() != 0:
            ro.chmod(0o555)
            run.cleanup = lambda: ro.chmod(0o755)
            return run
        try:
            subprocess.run(["chattr", "+i", str(ro)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            pytest.skip("running as root without chattr +i: chmod 0555 does not stop root from writing, so a "
                        "read-only folder cannot be made without a read-only mount")
        run.cleanup = lambda: subprocess.run(["chattr", "-i", str(ro)], check=False, capture_output=True)
        return run
    return build


def _cache_is_file(e: Env, t: Path) -> Run:
    cache = t / "cache_file"
    cache.write_text("a file, not a folder")
    out = t / "analysis.nc"

    def warned(oc: fk.Outcome) -> list[str]:
        ok = oc.rc != 0 or any("warning" in ln and str(cache) in ln for ln in oc.stderr.splitlines())
        return [] if ok else ["exit 0 without a warning naming the --cache-dir file"]

    return Run(["assimilate", "--model", e.field_model, "--mode", "global", "--cache-dir", cache, "--library", e.lib16,
                "--obs", e.obs1, "--out", out, "--quiet"], [e.lib16, e.obs1, cache], [out], check=warned)


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------

CASES = _arg_cases() + _ckpt_cases() + _path_cases()


def run_case(case: Case, e: Env, t: Path) -> list[str]:
    """Every promise the case breaks (empty: it passed)."""
    run = case.build(e, t)
    names = case.names(e, t) if callable(case.names) else case.names
    old = Path.cwd()
    try:
        if run.cwd is not None:
            os.chdir(run.cwd)
        with warnings.catch_warnings(record=True) as seen:  # as the user's stderr shows them, under pytest too
            warnings.simplefilter("always")
            oc = fk.run_cli(run.argv, inputs=run.inputs, outputs=run.outputs, timeout=case.timeout)
        oc.stderr += "".join(f"oceanda: warning: {' '.join(str(w.message).split())}\n" for w in seen)
    finally:
        os.chdir(old)
        if run.cleanup is not None:
            run.cleanup()
    expect = case.expect if case.expect != EITHER else (OK if oc.rc == 0 else E)
    problems = oc.problems(expect, names)
    if run.check is not None and not oc.hung:
        problems += run.check(oc)
    if expect == OK and not problems and run.outputs:
        problems += _complete_output(Path(run.outputs[0]) if run.cwd is None else run.cwd / run.outputs[0])
    return problems


def _complete_output(out: Path) -> list[str]:
    """What a valid case must leave: a finite NetCDF, a model folder with its checkpoint, a folder."""
    if out.suffix == ".nc":
        return [] if _exists(out) and out.is_file() and fk.finite_output(out) else [f"no complete, finite output {out.name}"]
    if out.name == "model":
        return [] if (out / "config.json").is_file() and (out / "model.safetensors").is_file() else ["no model written"]
    return [] if out.is_dir() else [f"no output folder {out.name}"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fuzz(case: Case, env: Env, tmp_path: Path) -> None:
    assert run_case(case, env, tmp_path) == []


def test_table_covers_every_category() -> None:
    """>= 150 cases, every verb's numeric options, both model kinds, every output-path kind."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 150
    for verb in ("observe", "enkf", "assimilate", "train", "sample-data", "demo", "reproduce"):
        assert any(i.startswith(f"args-{verb}") for i in ids), verb
    assert sum(i.startswith("ckpt-window") for i in ids) >= 40 and sum(i.startswith("ckpt-field") for i in ids) >= 10
    assert sum(i.startswith("out-") for i in ids) >= 25
