"""SIGKILL x N per writing verb (issue 17 acceptance): partial outputs, leftover temporary files, identical reruns.

For each writing verb (observe, enkf, assimilate, evaluate, train, sample-data) on the small inputs of
tests/fuzzkit.py: one clean run gives the reference output; then N times, start the same command as
``python -m oceanda ...`` and SIGKILL it (seeded: every other kill just after its first temporary file
appears, the others at a random moment of the run; even kills on a fresh path, odd ones while replacing
the previous output), check the final path holds no partial file, rerun the command to completion
in-process, and compare the rerun's output with the reference (data values, not timings or dates).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_kill.py [--kills 10] [--verbs enkf train]

Prints one row per verb: kills that landed (and how many while a temporary file existed), partial outputs
at the final path, failed reruns, temporary files left after the rerun, reruns identical to the reference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzkit as fk  # noqa: E402
from test_kill import EXPECTED_S, VERBS, command, leftovers, make_inputs  # noqa: E402

#: Keys of metrics.json / config.json that record timings, not results.
_TIMING = ("second", "date", "history", "time_", "elapsed")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not any(t in str(k).lower() for t in _TIMING)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _same_nc(a: Path, b: Path) -> str | None:
    import xarray as xr

    with xr.open_dataset(a) as da, xr.open_dataset(b) as db:
        if set(da.variables) != set(db.variables):
            return f"{a.name}: variables differ"
        for v in da.variables:
            x, y = da[v].values, db[v].values
            eq = np.array_equal(x, y, equal_nan=True) if x.dtype.kind in "fc" else np.array_equal(x, y)
            if not eq:
                return f"{a.name}: {v} differs"
    return None


def _same_file(a: Path, b: Path) -> str | None:
    if a.suffix == ".nc":
        return _same_nc(a, b)
    if a.suffix == ".json":
        return None if _strip(json.loads(a.read_text())) == _strip(json.loads(b.read_text())) else f"{a.name} differs"
    if a.suffix == ".safetensors":
        from safetensors.numpy import load_file

        ta, tb = load_file(str(a)), load_file(str(b))
        ok = ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)
        return None if ok else f"{a.name}: tensors differ"
    return None  # figures, CSV and text: their names are compared, their bytes hold timings and dates


def same(a: Path, b: Path) -> str | None:
    """None if the rerun output ``a`` equals the reference ``b`` (values, not timings), else the first difference."""
    if not a.exists():
        return "missing"
    if a.is_file():
        return _same_file(a, b)
    names = lambda p: sorted(str(q.relative_to(p)) for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))  # noqa: E731
    if names(a) != names(b):
        return f"files differ: {sorted(set(names(a)) ^ set(names(b)))[:4]}"
    for rel in names(a):
        if why := _same_file(a / rel, b / rel):
            return why
    return None


def _remove(out: Path) -> None:
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()


def bench_verb(verb: str, p: dict[str, Path], root: Path, kills: int, seed: int) -> dict:
    d = root / verb
    d.mkdir()
    argv, out, extra = command(verb, p, d)
    oc = fk.run_cli(argv, timeout=300)
    assert oc.rc == 0, f"{verb}: reference run failed: {oc.stderr[-500:]}"
    ref = root / f"{verb}_reference{out.suffix}"
    shutil.copytree(out, ref) if out.is_dir() else shutil.copy2(out, ref)
    rng = np.random.default_rng(seed + VERBS.index(verb))
    row = {"verb": verb, "kills": 0, "mid_write": 0, "partial": 0, "rerun_failed": 0, "leftover_temps": 0,
           "identical": 0, "runs": kills, "notes": []}
    expected = EXPECTED_S[verb]
    for i in range(kills):
        if i % 2 == 0:
            _remove(out)  # a fresh path; odd kills replace the previous output
        info = fk.kill_during(argv, out, rng, at_write=i % 4 < 2, expected_s=expected)
        expected = info["saw_tmp"] or expected  # random moments scale with this machine's pace
        row["kills"] += info["killed"]
        row["mid_write"] += info["mid_write"]
        if bad := fk.partial_outputs(out, model=verb == "train"):
            row["partial"] += 1
            row["notes"].append(f"kill {i} at {info['at_s']} s: partial {bad[:2]}")
        oc = fk.run_cli(argv, timeout=300)
        if oc.problems("ok"):
            row["rerun_failed"] += 1
            row["notes"].append(f"rerun {i}: {oc.problems('ok')[:1]}")
        if left := leftovers(out, extra):
            row["leftover_temps"] += 1
            row["notes"].append(f"rerun {i}: left {left[:2]}")
        why = same(out, ref)
        row["identical"] += why is None
        if why:
            row["notes"].append(f"rerun {i}: not identical ({why})")
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10, help="kills per verb (default 10)")
    ap.add_argument("--verbs", nargs="+", default=VERBS, choices=VERBS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench_kill_"))
    t0 = time.time()
    try:
        p = make_inputs(root / "inputs")
        rows = [bench_verb(v, p, root, args.kills, args.seed) for v in args.verbs]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    head = f"{'verb':<12} {'kills':>7} {'mid-write':>10} {'partial outputs':>16} {'rerun failed':>13} " \
           f"{'leftover temps':>15} {'rerun identical':>16}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['verb']:<12} {r['kills']:>4}/{r['runs']:<2} {r['mid_write']:>10} {r['partial']:>16} "
              f"{r['rerun_failed']:>13} {r['leftover_temps']:>15} {r['identical']:>13}/{r['runs']:<2}")
    for r in rows:
        for n in r["notes"]:
            print(f"  {r['verb']}: {n}")
    print(f"({time.time() - t0:.0f} s; mid-write: a temporary file existed at the moment of the kill)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    bad = sum(r["partial"] + r["rerun_failed"] + r["leftover_temps"] + (r["runs"] - r["identical"]) for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
