"""Peak resident memory (MB) of `oceanda enkf` and `oceanda evaluate` on the bundled sample (goal: < 1 GB each).

Each command runs in a fresh Python process (``oceanda.cli.main``), whose peak RSS (``VmHWM`` of
/proc/self/status, else ``ru_maxrss``) is read at its end; the child also reports whether it imported
torch (neither verb should). The commands are the README's: the EnOI analysis of the first evaluation
altimetry with the bundled library as static ensemble (408 members x 31 times, every member written),
then its evaluation against the truth (figures included). ``--evaluate-only ANALYSIS.nc`` scores an
existing analysis instead of making one.

    .venv/bin/python benchmarks/bench_memory.py [--work DIR] [--json PATH]

``peak_rss_mb()`` returns the same numbers as a dict (for benchmarks/bench_speed.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
def peak_mb():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from oceanda import cli
t0 = time.perf_counter()
rc = cli.main(sys.argv[1:])
print("BENCH_MEMORY " + json.dumps({"rc": rc, "peak_rss_mb": peak_mb(), "seconds": time.perf_counter() - t0,
                                    "torch_imported": "torch" in sys.modules}))
"""


def _sample() -> Path:
    from oceanda.sampledata import bundled_sample_dir

    return Path(bundled_sample_dir("qg"))


def run_child(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``oceanda ARGV`` in a fresh interpreter; its peak RSS (MB), seconds, return code and torch import."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_MEMORY ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"oceanda {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].split(" ", 1)[1])


def commands(work: Path, sample: Path, analysis: Path | None = None) -> dict[str, list[str]]:
    """The README's enkf and evaluate command lines on the bundled sample, writing into ``work``."""
    enoi = analysis or work / "enoi.nc"
    cmds = {
        "enkf": ["enkf", "--ensemble", str(sample / "library.nc"), "--obs", str(sample / "obs_altimetry_eval_1.nc"),
                 "--out", str(enoi), "--method", "enoi", "--loc-radius", "100", "--periodic", "--quiet", "--overwrite"],
        "evaluate": ["evaluate", "--truth", str(sample / "truth_eval_1.nc"), "--analysis", f"enoi={enoi}",
                     "--obs", str(sample / "obs_altimetry_eval_1.nc"), "--out", str(work / "report"), "--quiet",
                     "--overwrite"],
    }
    if analysis is not None:
        cmds.pop("enkf")
    return cmds


def peak_rss_mb(work: str | os.PathLike | None = None, analysis: str | os.PathLike | None = None) -> dict:
    """``{"enkf_peak_rss_mb", "evaluate_peak_rss_mb", ... seconds, torch imported}`` on the bundled sample.

    Parameters
    ----------
    work : folder for the analysis and the report (default: a temporary one, removed after)
    analysis : score this analysis file instead of making one with enkf
    """
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        folder = Path(work) if work is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        out: dict = {}
        for verb, argv in commands(folder, _sample(), Path(analysis) if analysis else None).items():
            res = run_child(argv)
            out[f"{verb}_peak_rss_mb"] = round(res["peak_rss_mb"], 1)
            out[f"{verb}_seconds"] = round(res["seconds"], 2)
            out[f"{verb}_imports_torch"] = bool(res["torch_imported"])
        return out


def table(res: dict) -> str:
    lines = [f"{'command':<10}{'peak RSS [MB]':>15}{'seconds':>10}{'torch':>8}"]
    for verb in ("enkf", "evaluate"):
        if f"{verb}_peak_rss_mb" in res:
            lines.append(f"{verb:<10}{res[f'{verb}_peak_rss_mb']:>15.0f}{res[f'{verb}_seconds']:>10.1f}"
                         f"{'yes' if res[f'{verb}_imports_torch'] else 'no':>8}")
    lines.append("goal: < 1000 MB each (bundled sample: 408 members x 31 times, 64 x 64 x 3 fields)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--work", default=None, help="folder for the outputs (default: temporary)")
    p.add_argument("--evaluate-only", default=None, metavar="ANALYSIS.nc", help="score this analysis; no enkf run")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    res = peak_rss_mb(args.work, args.evaluate_only)
    print(table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
