"""What any library-weighting analysis could reach on the QG sample if it knew the truth exactly.

Local mode's analysis is a weighted mean of library windows. Here the weights are the best there can be:
a Gaussian kernel of each library window's distance to the *true* window (width h; h = 0 is the single
nearest window, a perfect retrieval), windows of the bundled model's geometry, blended where they overlap.
No encoder and no observation set can give local mode better weights than the truth does, so (up to the
blending rule) the best of these RMSEs is a ceiling for local mode with this library; an EnOI below it
cannot be matched by retraining the encoders, only by a larger library (``--library-stride``) or a
Kalman step (the hybrid). SSH RMSE / climatology (the library mean) over every day of eval_1-3.

``--obs FILE`` (with ``--truth``) weighs the library by the *observations* instead: the exact Gaussian
likelihood of each window's observed cells (``--halo`` cells around it too), tempered by a width
h that stands for the library's representation error. That is the Bayes posterior mean with the library as
the prior -- what a perfect critic of these observations gives local mode -- so an EnOI below its best is out
of local mode's reach with this library, whatever the encoders learn.

    python benchmarks/bench_library_ceiling.py [--library-stride 8] [--json ceiling.json]
    python benchmarks/bench_library_ceiling.py --obs sample_data/qg/obs_gappy_eval_1.nc \
        --truth sample_data/qg/truth_eval_1.nc
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import xarray as xr

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
WIDTHS = (0.0, 0.001, 0.0015, 0.002, 0.0025, 0.003)  # kernel widths h (m, rms over a window's cells)
OBS_WIDTHS = (0.0, 0.004, 0.008, 0.016, 0.024, 0.032, 0.048)  # per-observation error h (m)


def _windows(f: np.ndarray, size: int, starts: list[tuple[int, int]]) -> np.ndarray:
    """Periodic ``size``-square windows of ``f`` [..., ny, nx] at ``starts``: [len(starts), ..., size * size]."""
    out = [np.roll(f, (-i, -j), axis=(-2, -1))[..., :size, :size] for i, j in starts]
    return np.stack([w.reshape(*w.shape[:-2], -1) for w in out])


def _blend(est: np.ndarray, size: int, starts: list[tuple[int, int]], shape: tuple[int, int]) -> np.ndarray:
    """Overlapping window estimates [P, size * size] averaged cell by cell into a periodic field."""
    acc, cnt = np.zeros(shape), np.zeros(shape)
    for (i, j), v in zip(starts, est):
        blk, m = np.zeros(shape), np.zeros(shape)
        blk[:size, :size], m[:size, :size] = v.reshape(size, size), 1.0
        acc += np.roll(blk, (i, j), axis=(0, 1))
        cnt += np.roll(m, (i, j), axis=(0, 1))
    return acc / cnt


def ceiling(library_stride: int | None = None, widths=WIDTHS) -> dict:
    """SSH RMSE / climatology of the truth-weighted library mean per kernel width (key ``'h=...'``)."""
    size, stride, _ = _geometry()
    lib = xr.open_dataset(SAMPLE / "qg" / "library.nc").ssh.values.astype(np.float64)
    ny, nx = lib.shape[1:]
    ls = library_stride or stride
    L = _windows(lib, size, [(i, j) for i in range(0, ny, ls) for j in range(0, nx, ls)]).reshape(-1, size * size)
    L2, clim = (L ** 2).sum(1), lib.mean(0)
    starts = [(i, j) for i in range(0, ny, stride) for j in range(0, nx, stride)]
    sq, sq_clim, days = dict.fromkeys(widths, 0.0), 0.0, 0
    for e in (1, 2, 3):
        truth = xr.open_dataset(SAMPLE / "qg" / f"truth_eval_{e}.nc").ssh.values.astype(np.float64)
        for t in truth:
            Q = _windows(t, size, starts)
            d2 = np.maximum((Q ** 2).sum(1)[:, None] + L2[None] - 2 * Q @ L.T, 0.0) / (size * size)
            for h in widths:
                if h == 0:
                    est = L[d2.argmin(1)]
                else:
                    lw = -d2 / (2 * h * h)
                    w = np.exp(lw - lw.max(1, keepdims=True))
                    est = (w / w.sum(1, keepdims=True)) @ L
                sq[h] += ((_blend(est, size, starts, (ny, nx)) - t) ** 2).mean()
            sq_clim += ((clim - t) ** 2).mean()
            days += 1
    out = {f"h={h:g}": float(np.sqrt(sq[h] / sq_clim)) for h in widths}
    return {"library_windows": int(len(L)), "library_stride": ls, "days": days, "rmse_over_climatology": out,
            "best": min(out.values())}


def _geometry() -> tuple[int, int, int]:
    geo = json.loads((SAMPLE / "models" / "qg_window" / "config.json").read_text())["extra"]["window"]
    return geo["size"], geo["stride"], geo["halo"]


def _obs_estimates(y: np.ndarray, L: np.ndarray, L2: np.ndarray, inner: np.ndarray, widths) -> dict:
    """Per width, the likelihood-weighted library means [P, inner] of observation windows ``y`` [P, C] (NaN:
    unobserved) over library windows ``L`` [N, C] (``L2``: their squares); a window without observations gets the library mean."""
    M = np.isfinite(y).astype(np.float64)
    Y = np.where(M > 0, y, 0.0)
    n = np.maximum(M.sum(1, keepdims=True), 1.0)
    d2 = np.maximum((Y ** 2).sum(1)[:, None] - 2 * Y @ L.T + M @ L2.T, 0.0) / n  # mean sq misfit
    d2[M.sum(1) == 0] = 0.0
    Li, out = L[:, inner], {}
    for h in widths:
        if h == 0:
            out[h] = Li[d2.argmin(1)]
            continue
        lw = -n * d2 / (2 * h * h)  # the likelihood of all the window's observations, at error h each
        w = np.exp(lw - lw.max(1, keepdims=True))
        out[h] = (w / w.sum(1, keepdims=True)) @ Li
    return out


def obs_ceiling(obs: Path, truth: Path, library_stride: int | None = None, widths=OBS_WIDTHS,
                halo: int = 0) -> dict:
    """SSH RMSE / climatology of the observation-likelihood-weighted library mean per width h.

    ``halo``: cells around each window whose observations also weigh it (0 scored best on eval_1's cloud
    gaps: 0.734 at h = 0.024, against 0.892 with the encoders' 8; a wider patch has no close analogue).
    """
    size, stride, _ = _geometry()
    full = size + 2 * halo
    lib = xr.open_dataset(SAMPLE / "qg" / "library.nc").ssh.values.astype(np.float64)
    ny, nx = lib.shape[1:]
    ls = library_stride or stride
    L = _windows(lib, full, [(i - halo, j - halo) for i in range(0, ny, ls) for j in range(0, nx, ls)])
    L = L.reshape(-1, full * full)
    inner = (np.arange(full)[:, None] >= halo) & (np.arange(full)[:, None] < halo + size)
    inner = (inner & inner.T).ravel()
    L2, clim = L ** 2, lib.mean(0)
    y_all = xr.open_dataset(obs).ssh
    t_all = xr.open_dataset(truth).ssh.sel(time=y_all.time).values.astype(np.float64)
    starts = [(i, j) for i in range(0, ny, stride) for j in range(0, nx, stride)]
    sq, sq_clim = dict.fromkeys(widths, 0.0), 0.0
    for y, t in zip(y_all.values.astype(np.float64), t_all):
        est = _obs_estimates(_windows(y, full, [(i - halo, j - halo) for i, j in starts]), L, L2, inner, widths)
        for h in widths:
            sq[h] += ((_blend(est[h], size, starts, (ny, nx)) - t) ** 2).mean()
        sq_clim += ((clim - t) ** 2).mean()
    out = {f"h={h:g}": float(np.sqrt(sq[h] / sq_clim)) for h in widths}
    return {"library_windows": int(len(L)), "library_stride": ls, "days": len(t_all), "obs": str(obs), "halo": halo,
            "rmse_over_climatology": out, "best": min(out.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--library-stride", type=int, default=None, help="library window spacing (default: the model's)")
    p.add_argument("--obs", type=Path, default=None, help="weigh by these observations' likelihood (needs --truth)")
    p.add_argument("--truth", type=Path, default=None, help="the truth of --obs (scores only)")
    p.add_argument("--halo", type=int, default=0, help="with --obs: observed cells around a window that weigh it")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if (a.obs is None) != (a.truth is None):
        p.error("--obs and --truth go together")
    r = ceiling(a.library_stride) if a.obs is None else obs_ceiling(a.obs, a.truth, a.library_stride, halo=a.halo)
    print(f"{r['library_windows']} library windows (stride {r['library_stride']}), {r['days']} days")
    for k, v in r["rmse_over_climatology"].items():
        print(f"{k:>9s}  SSH RMSE / climatology {v:.3f}")
    if a.json is not None:
        a.json.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
