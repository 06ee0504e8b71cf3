"""LETKF analysis cost: Lorenz-96 (N = 10, 20) and the QG grid (8192 state values, ~500 obs, N = 40).

References (issue 5): DAPPER's LETKF on Lorenz-96, N = 10, about 2 ms per analysis on a 2-core CPU;
goal on the QG grid: under 1 s per analysis. Prints the median time per analysis over repeats.
``block`` batches B x B tiles of grid points into one local analysis (DAPPER's batch_shape).

    .venv/bin/python benchmarks/bench_letkf_speed.py [--repeats 20]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads only add overhead

import argparse
import time

import numpy as np
import torch

from oceanda.kalman import grid_localizer, letkf, ring_localizer


def timeit(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(1)
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    for N in (10, 20):
        E = 8 + 3 * rng.standard_normal((N, 40))
        y = 8 + 3 * rng.standard_normal(40)
        loc = ring_localizer(40, 12.0)
        t = timeit(lambda E=E, y=y, loc=loc: letkf(E, y, 1.0, np.arange(40), localizer=loc), a.repeats)
        print(f"Lorenz-96 LETKF N={N:2d}, 40 obs, c=12: {t * 1e3:.2f} ms per analysis")
    ny = nx = 64
    dx = 1000.0 / 64
    yk = (np.arange(ny) + 0.5) * dx
    E = rng.standard_normal((40, 2 * ny * nx))
    H = rng.choice(ny * nx, 500, replace=False)
    y = rng.standard_normal(500)
    for block in (1, 2):
        for radius in (40.0, 80.0):
            loc = grid_localizer(yk, yk, radius, period=(1000.0, 1000.0), block=block)
            t = timeit(lambda loc=loc: letkf(E, y, 0.5, H, localizer=loc), max(3, a.repeats // 4))
            print(f"QG grid 2x64x64 = 8192 values, 500 obs, N=40, c={radius:g} km, block {block}: {t:.3f} s per analysis")


if __name__ == "__main__":
    main()
