"""How the QG testbed's cost grows with the grid: spin-up, and CPU seconds per member-day of a forecast.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_qg_scale.py [--nx 64 128 256] [--with-512]
        [--members 8] [--repeats 3] [--json PATH]

Every grid is the same 1000 km box (``oceanda.testbeds.qg.testbed_model(nx)``, dt = 7200 s x 64 / nx, the
Courant number of the 64 x 64 testbed). The spun-up state of each nx is made on first use and cached
(``spun_up_state_nx``); its spin-up time is read from the cache file. Forecast cost is CPU time
(``time.process_time``, one torch thread), median of ``--repeats``, per member and model day, with the
expected scaling beside it: dt ~ dx gives nx steps a day, each of 5 FFTs of nx^2 log nx2 work, so a
member-day costs ~ nx^3 log nx (exponent 3.2 over 64 -> 256). Numbers, not assertions.

Other benchmarks take their QG states from :func:`qg_ensemble` (``from bench_qg_scale import qg_ensemble``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any

import numpy as np
import torch


def qg_ensemble(nx: int, members: int, seed: int = 0, days: float = 0.0, amplitude: float = 0.05
                ) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """A truth and an ensemble of spun-up QG states at ``nx`` (64 ... 512) for benchmarks: ``(truth, ensemble, coords)``.

    The truth is the last independent member of the spun-up state at ``nx`` (cached; made on first use);
    ensemble member i is spun-up member ``i % 11`` of the others plus ``amplitude`` x its std of white
    noise, run ``days`` (0: none -- cheap, but members beyond 11 are then near copies; the cost of an
    analysis does not depend on it). Returns CF Datasets in the sample-data layout (``psi``, ``ssh``; one
    time; the ensemble with a ``member`` dimension) and the grid: ``x``, ``y`` (km, 1-D), ``lat``, ``lon``
    (2-D), ``dx_km``.

    Parameters
    ----------
    nx : grid size, one of 64, 128, 256, 512
    members : ensemble size
    seed : seed of the noise
    days : free run after the noise
    amplitude : noise std relative to each layer's PV std

    Returns
    -------
    tuple: (truth Dataset, ensemble Dataset, dict of coordinates)
    """
    from oceanda.testbeds.qg import SPINUP_MEMBERS, perturbed_ensemble, spun_up_state_nx, testbed_model

    model = testbed_model(nx)
    base = spun_up_state_nx(nx, SPINUP_MEMBERS, progress=True)
    rng = np.random.default_rng(seed)
    ens = perturbed_ensemble(members, rng, model=model, decorrelation_days=days, amplitude=amplitude,
                             members=np.arange(base.shape[0] - 1), base=base)
    truth = model.to_dataset(base[-1:][None], [0.0], include_q=False)
    ensemble = model.to_dataset(ens[None], [0.0], member=np.arange(members), include_q=False)
    lat, lon = model.latlon()
    coords = {"x": model.x_km, "y": model.y_km, "lat": lat, "lon": lon, "dx_km": np.float64(model.dx / 1e3)}
    return truth, ensemble, coords


def spinup_cost(nx: int) -> dict[str, Any]:
    """Make (or find) the cached spun-up state at ``nx``; the seconds its spin-up took, from the cache file."""
    from oceanda import io
    from oceanda.testbeds.qg import SPINUP_DAYS, spinup_path, spun_up_state_nx, testbed_model

    t = time.process_time()
    q = spun_up_state_nx(nx, progress=True)
    here = time.process_time() - t
    out: dict[str, Any] = {"nx": nx, "members": q.shape[0], "ke": float(testbed_model(nx).kinetic_energy(q).mean())}
    if nx == 64:
        return out
    attrs = io.read_netcdf(spinup_path(nx)).attrs
    out.update(days=SPINUP_DAYS[nx], cpu_s=float(attrs.get("qg_spinup_cpu_seconds", math.nan)),
               wall_s=float(attrs.get("qg_spinup_seconds", math.nan)), this_call_cpu_s=here)
    return out


def forecast_cost(nx: int, members: int, repeats: int) -> dict[str, Any]:
    """CPU seconds per member-day and per step of a batched forecast of ``members`` spun-up members."""
    from oceanda.testbeds.qg import spun_up_state_nx, testbed_model

    model = testbed_model(nx)
    base = spun_up_state_nx(nx)
    q = base[np.arange(members) % base.shape[0]]
    steps = max(4, int(round(2 * model.steps_per_day() * (64 / nx) ** 2)))  # ~ equal work per repeat
    model.step(q, 2)  # warm-up (FFT plans, allocator)
    times = []
    for _ in range(repeats):
        t = time.process_time()
        model.step(q, steps)
        times.append(time.process_time() - t)
    per_step = statistics.median(times) / steps
    return {"nx": nx, "dt_s": model.dt, "steps_per_day": model.steps_per_day(), "members": members,
            "cpu_ms_per_step": per_step * 1e3,
            "cpu_ns_per_point_step": per_step / members / nx**2 * 1e9,
            "cpu_s_per_member_day": per_step * model.steps_per_day() / members, "cfl": model.cfl(q)}


def exponents(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Least-squares log-log slopes: measured member-day cost, per-step cost, and the nx^3 log nx model's."""
    nx = np.array([r["nx"] for r in rows], float)
    day = np.array([r["cpu_s_per_member_day"] for r in rows])
    step = np.array([r["cpu_ms_per_step"] for r in rows])
    x = np.log(nx)
    expect = 3 * x + np.log(np.log(nx))
    return {"member_day": float(np.polyfit(x, np.log(day), 1)[0]), "per_step": float(np.polyfit(x, np.log(step), 1)[0]),
            "expected_cfl_fft": float(np.polyfit(x, expect, 1)[0])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nx", type=int, nargs="+", default=[64, 128, 256], choices=[64, 128, 256, 512])
    p.add_argument("--with-512", action="store_true", help="add nx = 512 (its first spin-up takes ~10 min)")
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    grids = sorted(set(args.nx) | ({512} if args.with_512 else set()))
    spin = [spinup_cost(nx) for nx in grids]
    rows = [forecast_cost(nx, args.members, args.repeats) for nx in grids]
    print(f"{'nx':>5} {'dt s':>6} {'spin-up CPU-s':>14} {'KE m2/s2':>9} {'CFL':>5} {'ms/step':>9} "
          f"{'ns/pt/step':>10} {'CPU-s/member-day':>17} {'vs 64':>7} {'nx^3 log nx':>11}")
    base = rows[0]
    for s, r in zip(spin, rows):
        model_ratio = (r["nx"] / base["nx"]) ** 3 * math.log(r["nx"]) / math.log(base["nx"])
        print(f"{r['nx']:>5} {r['dt_s']:>6g} {s.get('cpu_s', 0.0):>14.1f} {s['ke']:>9.2e} {r['cfl']:>5.2f} "
              f"{r['cpu_ms_per_step']:>9.2f} {r['cpu_ns_per_point_step']:>10.1f} {r['cpu_s_per_member_day']:>17.4f} "
              f"{r['cpu_s_per_member_day'] / base['cpu_s_per_member_day']:>7.1f} {model_ratio:>11.1f}")
    result = {"spinup": spin, "forecast": rows}
    if len(rows) > 1:
        result["exponent"] = exponents(rows)
        e = result["exponent"]
        print(f"exponent: member-day {e['member_day']:.2f} (expected from CFL + FFT: {e['expected_cfl_fft']:.2f}), "
              f"per step {e['per_step']:.2f} (expected {e['expected_cfl_fft'] - 1:.2f})")
    if args.json:
        from oceanda import io

        io.write_json(result, args.json, overwrite=True)
    return result


if __name__ == "__main__":
    main()
