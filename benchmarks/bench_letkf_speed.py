"""LETKF analysis cost: Lorenz-96 (N = 10, 20) and the QG grid (8192 state values, ~500 obs, N = 40).

References (issue 5): DAPPER's LETKF on Lorenz-96, N = 10, about 2 ms per analysis on a 2-core CPU;
goal on the QG grid: under 1 s per analysis. Prints the median time per analysis over repeats.
``block`` batches B x B tiles of grid points into one local analysis (DAPPER's batch_shape).

    .venv/bin/python benchmarks/bench_letkf_speed.py [--repeats 20]
    .venv/bin/python benchmarks/bench_letkf_speed.py --scaling [--sizes 64 128 256] [--members 20 40]
    .venv/bin/python benchmarks/bench_letkf_speed.py --enoi-dense
    .venv/bin/python benchmarks/bench_letkf_speed.py --interp --members 20 --obs tracks --repeats 3

``--scaling`` (issue 16): CPU seconds per LETKF analysis on a periodic 1000 km box of ``nx x nx`` points
(two channels), radius 40 km, synthetic ensembles, median of repeats, single-threaded; observations
``tracks`` (4 altimetry-like tracks a day: the cells under 4 lines, ~5.4 nx observations) or ``fraction``
(a fixed 12 % of the points); ``cold`` = a new observing pattern every analysis (KD-tree weights
computed), ``warm`` = the pattern of the previous cycle (weights reused). :func:`letkf_seconds` is what
``bench_speed.py`` imports. ``--enoi-dense``: the Schur EnOI with every SSH point of a 64 x 64 x 2 grid
observed (4096 observations, 408 library states, radius 100 km): CPU seconds and peak memory.
``--spacing``: the LETKF's ``weight_spacing`` (transforms every k-th point, interpolated bilinearly;
``auto`` = floor(radius / 4 / dx): 1 at 64^2 and 128^2, 2 at 256^2). ``--interp``: the table with k = 1
and auto, then the relative RMS of the increment difference auto vs k = 1 at the largest size (white-noise
members and smooth Gaussian random fields, with the RMSE of the mean vs a truth).
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


BOX_KM = 1000.0


def track_indices(nx: int, day: int = 0, tracks: int = 4, angle_deg: float = 70.0) -> np.ndarray:
    """Flat indices of the cells of an ``nx x nx`` periodic box under ``tracks`` lines (one day's altimetry)."""
    dx = BOX_KM / nx
    th = np.radians(angle_deg)
    yc = (np.arange(nx) + 0.5)[:, None] * dx
    xc = (np.arange(nx) + 0.5)[None, :] * dx
    half = 0.5 * dx * (np.sin(th) + abs(np.cos(th)))
    rng = np.random.default_rng(day)
    mask = np.zeros((nx, nx), dtype=bool)
    for k in range(tracks):
        u = xc - (1.0 if k % 2 == 0 else -1.0) * yc / np.tan(th) - rng.uniform(0.0, BOX_KM)
        mask |= np.abs((u + BOX_KM / 2) % BOX_KM - BOX_KM / 2) * np.sin(th) <= half
    return np.flatnonzero(mask.ravel())


def _problem(nx: int, n_members: int, obs: str, day: int):
    rng = np.random.default_rng(day)
    if obs == "tracks":
        H = track_indices(nx, day)
    elif obs == "fraction":
        H = np.sort(rng.choice(nx * nx, int(round(0.12 * nx * nx)), replace=False))
    else:
        raise ValueError(f"obs={obs!r}; expected 'tracks' or 'fraction'")
    return rng.standard_normal((n_members, 2 * nx * nx)), rng.standard_normal(H.size), H


def letkf_seconds(nx: int, n_members: int, obs: str = "tracks", repeats: int = 5, warm: bool = False,
                  radius_km: float = 40.0, block: int = 1, weight_spacing="auto") -> float:
    """Median CPU seconds of one LETKF analysis on an ``nx x nx x 2`` periodic box (see the module docstring).

    ``warm=False``: every repeat observes a new pattern (another day's tracks), so the local weights
    are computed each time; ``warm=True``: the same pattern every time (the weights are reused).
    ``weight_spacing``: as :func:`oceanda.kalman.letkf` (``auto``: k = 1 at 64^2 and 128^2, 2 at 256^2).
    """
    from threadpoolctl import threadpool_limits

    yk = (np.arange(nx) + 0.5) * BOX_KM / nx
    loc = grid_localizer(yk, yk, radius_km, period=(BOX_KM, BOX_KM), block=block)
    times = []
    with threadpool_limits(limits=1):
        for k in range(repeats + 1):  # the first call warms caches and imports; not counted
            E, y, H = _problem(nx, n_members, obs, 0 if warm else k)
            t = time.process_time()
            letkf(E, y, 0.5, H, localizer=loc, weight_spacing=weight_spacing)
            times.append(time.process_time() - t)
    return float(np.median(times[1:]))


def scaling(sizes: list[int], members: list[int], repeats: int, spacings=("auto",), obs_kinds=("tracks", "fraction")
            ) -> None:
    """The issue-16 table: CPU ms per analysis at each size, and the ratio of the largest to the smallest."""
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}", flush=True)
    for obs in obs_kinds:
        for N in members:
            for spacing in spacings:
                for warm in (False, True):
                    ms = [1e3 * letkf_seconds(nx, N, obs, repeats, warm, weight_spacing=spacing) for nx in sizes]
                    row = "  ".join(f"{nx}^2 {t:8.1f} ms" for nx, t in zip(sizes, ms))
                    print(f"LETKF {obs:8s} N={N:2d} k={spacing!s:4s} {'warm' if warm else 'cold'}: {row}   "
                          f"ratio {sizes[-1]}^2/{sizes[0]}^2 = {ms[-1] / ms[0]:.1f}", flush=True)
    print(f"load average: {os.getloadavg()[0]:.1f}", flush=True)


def smooth_ensemble(nx: int, n: int, length_km: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit-variance Gaussian random fields ``[n, nx * nx]`` on the periodic box, correlation exp(-r^2 / 2L^2)."""
    k = 2 * np.pi * np.fft.fftfreq(nx, d=BOX_KM / nx)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    amp = np.exp(-0.25 * k2 * length_km**2)  # sqrt of the Gaussian spectrum
    f = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, nx, nx))) * amp).real
    return (f / f.std(axis=(1, 2), keepdims=True)).reshape(n, -1)


def interpolation_difference(nx: int = 256, n_members: int = 20, radius_km: float = 40.0, spacing="auto") -> None:
    """Relative RMS of (increment with ``spacing``) - (increment at k = 1), and the mean's RMSE vs a truth.

    On the timing problem (white-noise members: the transform varies fastest) and on smooth Gaussian
    random fields of correlation length = the radius (two channels, a truth drawn from the same law).
    """
    yk = (np.arange(nx) + 0.5) * BOX_KM / nx
    loc = grid_localizer(yk, yk, radius_km, period=(BOX_KM, BOX_KM))
    E, y, H = _problem(nx, n_members, "tracks", 1)
    rng = np.random.default_rng(5)
    F = np.concatenate([smooth_ensemble(nx, n_members + 1, radius_km, rng) for _ in range(2)], axis=1)
    truth, Es = F[0], F[1:]
    ys = truth[H] + 0.3 * rng.standard_normal(H.size)
    for name, (ens, obs, sig) in {"white-noise members": (E, y, 0.5), "smooth GRF members": (Es, ys, 0.3)}.items():
        ref = letkf(ens, obs, sig, H, localizer=loc, weight_spacing=1)
        got = letkf(ens, obs, sig, H, localizer=loc, weight_spacing=spacing)
        inc = ref - ens
        rel = np.sqrt(np.mean((got - ref) ** 2) / np.mean(inc**2))
        relm = np.sqrt(np.mean((got.mean(0) - ref.mean(0)) ** 2) / np.mean(inc.mean(0) ** 2))
        line = (f"{nx}^2 {name}: k={loc.weight_spacing(spacing)} vs k=1: increment difference relative RMS {rel:.4f}"
                f" (ensemble), {relm:.4f} (mean)")
        if ens is Es:
            r1, rk = (np.sqrt(np.mean((a.mean(0) - truth) ** 2)) for a in (ref, got))
            line += f"; RMSE vs truth {r1:.4f} (k=1) {rk:.4f} (k) ratio {rk / r1:.4f}, prior {np.sqrt(np.mean((ens.mean(0) - truth) ** 2)):.4f}"
        print(line, flush=True)


def enoi_dense(nx: int = 64, members: int = 408, radius_km: float = 100.0) -> None:
    """Schur EnOI, every point of channel 0 observed: CPU seconds and the peak resident memory it added."""
    import resource

    from oceanda.kalman import schur_enoi_ensemble
    from oceanda.kalman.obsspace import Observations

    rng = np.random.default_rng(0)
    G = nx * nx
    lib = rng.standard_normal((members, 2 * G))
    H = np.arange(G)
    obs = Observations(lib.mean(0)[H] + 0.3 * rng.standard_normal(G), np.full(G, 0.3), H)
    yk = (np.arange(nx) + 0.5) * BOX_KM / nx
    loc = grid_localizer(yk, yk, radius_km, period=(BOX_KM, BOX_KM))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.process_time()
    schur_enoi_ensemble(lib.mean(0), lib, obs, alpha=0.5, localizer=loc, rng=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Schur EnOI {nx}x{nx}x2, {G} observations, {members} states, c={radius_km:g} km: "
          f"{time.process_time() - t:.1f} CPU s, peak RSS {peak:.0f} MB ({peak - before:.0f} MB above the start)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--scaling", action="store_true", help="the 64^2 .. 256^2 LETKF table (issue 16)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--members", type=int, nargs="+", default=[20, 40])
    p.add_argument("--enoi-dense", action="store_true", help="the Schur EnOI with a fully observed field")
    p.add_argument("--spacing", nargs="+", default=["auto"],
                   help="--scaling: weight_spacing values to time ('auto', 1, 2, ...): 1 = a transform per point")
    p.add_argument("--obs", nargs="+", default=["tracks", "fraction"], help="--scaling: observing patterns")
    p.add_argument("--interp", action="store_true",
                   help="the weight-interpolation table: --scaling with k = 1 and auto (tracks), and the analysis difference")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.interp:
        scaling(a.sizes, a.members, min(a.repeats, 5), spacings=(1, "auto"), obs_kinds=a.obs)
        interpolation_difference(a.sizes[-1], a.members[0])
        return
    if a.scaling or a.enoi_dense:
        if a.scaling:
            spacings = [int(v) if v.isdigit() else v for v in a.spacing]
            scaling(a.sizes, a.members, min(a.repeats, 5), spacings=spacings, obs_kinds=a.obs)
        if a.enoi_dense:
            enoi_dense()
        return
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
