"""Baptista, Stuart & Tran (2025), section 6.3: Lagrangian data assimilation on the torus flow,
plus the data-assimilation comparison the paper did not make.

Contrastive model: the fixed Eulerian embedding (the 98 real coefficients, identity) against a
trajectory transformer (last-token pooling, projection to 98), cosine similarity with a learned
temperature, CLIP loss, as in the paper. Tokens (:func:`features`) are generic functions of the
observed (noisy) positions: the finite-difference velocity between consecutive observations,
sin/cos harmonics of the position on the torus, and their products. Observation noise is redrawn
every epoch.

Data assimilation of held-out tracks (positions observed with noise ``sigma`` along the track):

- contrastive generative posterior: a library of prior flows weighted by softmax of the learned
  similarity (the Eulerian embedding is fixed, so the library needs no trajectories);
- stochastic EnKF (oceanda.kalman.enkf) on the augmented state (98 coefficients, drifter x, y),
  ensemble drawn from the coefficient prior, each member's drifter advanced by RK4 in its own flow
  between observation times, positions observed;
- linearised Gaussian: displacements between observations written, by the trapezoid rule, as a
  linear function of the coefficients with the velocity evaluated along the observed path, so the
  posterior is Gaussian in closed form (prior N(0, diag sd^2), exact covariance of differenced
  position noise). It approximates the best achievable.

Field scores: the streamfunction is linear in the coefficients, so each method's coefficient mean
and covariance give the field mean and variance exactly (psi = Phi c); CRPS uses each method's
ensemble. Over the whole torus the RMSE at any time equals the RMSE at t = 0 (Parseval: phases
rotate, moduli stay), so the window and t = 0 numbers agree there; they differ in the band around
the drifter's path (grid points within ``band_radius`` of an observed position).

Public (not ``_torus``) because notebook 03 walks through these steps one by one; ``baptista2025``
runs them all through :func:`run_torus`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import xarray as xr

from oceanda.analysis.posterior import effective_sample_size, resample, softmax_weights, truncate, weighted_covariance
from oceanda.contrastive.encoders import FixedEncoder, TrajectoryTransformer
from oceanda.contrastive.model import ContrastiveModel
from oceanda.contrastive.similarity import Similarity
from oceanda.contrastive.training import embed_in_batches, train
from oceanda.kalman import enkf
from oceanda.contrastive.retrieval import recall_at_k
from oceanda.metrics import crps_ensemble, spread_skill_ratio
from oceanda.testbeds.torus import TorusFlow

START = (0.75, 0.75)


# ------------------------------------------------------------------------- flows and tracks
def prior_sd(flow: TorusFlow) -> np.ndarray:
    """Standard deviation of each real coefficient under ``TorusFlow.sample_coefficients``.

    Parameters
    ----------
    flow : TorusFlow
        The flow family.

    Returns
    -------
    numpy.ndarray
        ``[98]``: the sd of the real parts, then of the imaginary parts.
    """
    sd = flow.amplitude * flow.kmag ** (-flow.decay) / np.sqrt(2.0)
    return np.concatenate([sd, sd])


def tracks(flow: TorusFlow, coeffs: np.ndarray, cfg: dict, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Unwrapped drifter positions [F, L, 2] from ``START`` and their times [L].

    Parameters
    ----------
    flow : TorusFlow
        The flow family.
    coeffs : numpy.ndarray
        ``[F, 98]`` real coefficients of the flows.
    cfg : dict
        Needs ``dt``, ``T`` and ``keep_every`` (RK4 step, duration, positions kept).
    progress : bool
        Show a progress bar.

    Returns
    -------
    (positions, times) : tuple of numpy.ndarray
        ``[F, L, 2]`` positions (not wrapped onto the torus) and ``[L]`` times.
    """
    pos, times = flow.drifters(coeffs, x0=(START[0],), y0=(START[1],), dt=cfg["dt"], T=cfg["T"],
                               keep_every=cfg["keep_every"], wrap=False, progress=progress)
    return pos[:, :, 0, :], times


def features(obs: np.ndarray, dt_obs: float, vel_scale: float, harmonics: int = 3) -> np.ndarray:
    """Tokens [F, L, 2 + 4 H + 8 H]: velocity between observations / vel_scale, Fourier features of the
    observed position (sin, cos of 2 pi m x and 2 pi m y, m = 1..H: periodic, NeRF-style), and their
    products with the velocity (what a drifter measures is velocity at a place). Generic features:
    nothing of the flow family (wavevectors, frequencies) is used.

    Parameters
    ----------
    obs : numpy.ndarray
        ``[F, L, 2]`` observed positions (unwrapped).
    dt_obs : float
        Time between observations.
    vel_scale : float
        Velocity scale the finite differences are divided by.
    harmonics : int
        Number H of Fourier harmonics.

    Returns
    -------
    numpy.ndarray
        float32 tokens ``[F, L, n_features(H)]``.
    """
    prev = np.concatenate([np.broadcast_to(np.array(START), (obs.shape[0], 1, 2)), obs[:, :-1]], 1)
    vel = (obs - prev) / dt_obs / vel_scale
    m = np.arange(1, harmonics + 1)
    ph = 2 * np.pi * obs[..., None] * m  # [F, L, 2, H]
    four = np.concatenate([np.sin(ph), np.cos(ph)], -1).reshape(*obs.shape[:2], -1)  # [F, L, 4H]
    prod = (vel[..., :, None] * four[..., None, :]).reshape(*obs.shape[:2], -1)  # [F, L, 8H]
    return np.concatenate([vel, four, prod], -1).astype(np.float32)


def n_features(harmonics: int = 3) -> int:
    """Token width of :func:`features`.

    Parameters
    ----------
    harmonics : int
        Number H of Fourier harmonics.

    Returns
    -------
    int
        ``2 + 12 H``.
    """
    return 2 + 12 * harmonics


def velocity_basis(flow: TorusFlow, x: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Velocity (u, v) at points (x, y, t) as a linear map of the 98 coefficients: [..., 2, 98].

    psi = sum_k a_k cos(theta_k) - b_k sin(theta_k), theta_k = omega_k t + 2 pi k.x; u = psi_y, v = -psi_x.

    Parameters
    ----------
    flow : TorusFlow
        The flow family.
    x, y, t : numpy.ndarray
        Positions and times, broadcast together.

    Returns
    -------
    numpy.ndarray
        ``[..., 2, 98]``: ``(u, v)`` per coefficient.
    """
    k = flow.k.astype(np.float64)
    th = flow.omega * np.asarray(t)[..., None] + 2 * np.pi * (np.asarray(x)[..., None] * k[:, 0] + np.asarray(y)[..., None] * k[:, 1])
    s, c = np.sin(th), np.cos(th)
    u = np.concatenate([-2 * np.pi * k[:, 1] * s, -2 * np.pi * k[:, 1] * c], -1)
    v = np.concatenate([2 * np.pi * k[:, 0] * s, 2 * np.pi * k[:, 0] * c], -1)
    return np.stack([u, v], -2)


def psi_basis(flow: TorusFlow, n: int, times: np.ndarray) -> np.ndarray:
    """Streamfunction on the n x n grid at ``times`` as a linear map of the coefficients: [T, n, n, 98].

    Parameters
    ----------
    flow : TorusFlow
        The flow family.
    n : int
        Grid points per side.
    times : numpy.ndarray
        ``[T]`` times.

    Returns
    -------
    numpy.ndarray
        ``[T, n, n, 98]`` (rows y, columns x).
    """
    g = flow.grid(n)
    X, Y = np.meshgrid(g, g)
    th = flow.omega * np.asarray(times)[:, None, None, None] + 2 * np.pi * (X[..., None] * flow.k[:, 0] + Y[..., None] * flow.k[:, 1])
    return np.concatenate([np.cos(th), -np.sin(th)], -1)


def rotate(flow: TorusFlow, coeffs: np.ndarray, t: float) -> np.ndarray:
    """Real coefficients of c_k exp(i omega_k t): the same flow seen from time t.

    Parameters
    ----------
    flow : TorusFlow
        The flow family.
    coeffs : numpy.ndarray
        ``[..., 98]`` real coefficients.
    t : float
        Time shift.

    Returns
    -------
    numpy.ndarray
        ``[..., 98]`` rotated coefficients.
    """
    c = flow.complex_coefficients(coeffs) * np.exp(1j * flow.omega * t)
    return np.concatenate([c.real, c.imag], -1)


# ------------------------------------------------------------------------- contrastive model
def build_model(L: int, cfg: dict) -> ContrastiveModel:
    """The paper's model: fixed identity embedding of the coefficients against a trajectory transformer.

    Parameters
    ----------
    L : int
        Positions per track.
    cfg : dict
        Needs ``d_model``, ``nhead``, ``layers`` (and ``harmonics``, default 3).

    Returns
    -------
    ContrastiveModel
        Cosine similarity with a learned temperature (initially 0.07).
    """
    enc = TrajectoryTransformer((L, n_features(cfg.get("harmonics", 3))), 98, d_model=cfg["d_model"], nhead=cfg["nhead"], num_layers=cfg["layers"],
                                dim_feedforward=2 * cfg["d_model"], pooling="last", periodic=False)
    return ContrastiveModel(FixedEncoder(98), enc, Similarity("cosine", tau=0.07, learn_tau=True, tau_min=1e-3))


def retrieval(model: ContrastiveModel, coeffs: np.ndarray, feats: np.ndarray, n: int) -> dict:
    """R@1/R@5 among the first ``n`` held-out pairs, both directions (ties count against).

    Parameters
    ----------
    model : ContrastiveModel
        The trained model.
    coeffs, feats : numpy.ndarray
        Held-out coefficients ``[N, 98]`` and track tokens ``[N, L, D]``, matched by index.
    n : int
        Number of candidates.

    Returns
    -------
    dict
        ``candidates`` and ``{"R@1", "R@5"}`` for ``field_from_trajectory`` and ``trajectory_from_field``.
    """
    zs, zo = embed_in_batches(model, (coeffs[:n], feats[:n]), 256)
    with torch.no_grad():
        S = model.logits(zs, zo).double().numpy()  # [field i, trajectory j]
    f = recall_at_k(S.T, (1, 5))  # queries: trajectories; candidates: fields
    t = recall_at_k(S, (1, 5))
    return {"candidates": int(n), "field_from_trajectory": {"R@1": f[1], "R@5": f[5]},
            "trajectory_from_field": {"R@1": t[1], "R@5": t[5]}}


# ------------------------------------------------------------------------- assimilation methods
def contrastive_posterior(model, lib: np.ndarray, z_lib: torch.Tensor, feats: np.ndarray, members: int,
                          rng: np.random.Generator) -> tuple[list[dict], float]:
    """Weights over the library, posterior mean and a resampled ensemble per track, and the seconds
    that took; the weighted covariance (for scoring only) is computed afterwards, untimed, from the
    members holding all but 1e-6 of the weight.

    Parameters
    ----------
    model : ContrastiveModel
        The trained model.
    lib : numpy.ndarray
        ``[n_lib, 98]`` prior library of coefficients.
    z_lib : torch.Tensor
        Its state embeddings.
    feats : numpy.ndarray
        ``[n, L, D]`` tokens of the tracks to assimilate.
    members : int
        Resampled ensemble size.
    rng : numpy.random.Generator
        For the systematic resampling.

    Returns
    -------
    (results, seconds) : tuple
        Per track a dict ``mean``, ``cov``, ``ensemble``, ``ess``, ``n_members`` (None); the seconds taken.
    """
    t0 = time.perf_counter()
    with torch.no_grad():
        model.eval()
        zo = model.embed_obs(torch.as_tensor(feats))
        S = model.logits(z_lib, zo).double().numpy()  # [n_lib, n_traj]
    W = softmax_weights(S, axis=0)
    means = W.T @ lib
    picks = [resample(W[:, j], members, rng, method="systematic") for j in range(W.shape[1])]
    seconds = time.perf_counter() - t0
    out = []
    for j in range(W.shape[1]):
        tr = truncate(W[:, j], keep_mass=1 - 1e-6)
        _, cov = weighted_covariance(lib[tr.indices], tr.weights)
        out.append({"mean": means[j], "cov": cov, "ensemble": lib[picks[j]], "ess": float(effective_sample_size(W[:, j])),
                    "n_members": None})
    return out, seconds


def enkf_augmented(flow: TorusFlow, obs: np.ndarray, times: np.ndarray, sigma: float, members: int, cfg: dict,
                   rng: np.random.Generator) -> list[dict]:
    """Augmented-state stochastic EnKF over all tracks at once (forecasts batched over tracks x members).

    Parameters
    ----------
    flow : TorusFlow
        The flow family.
    obs : numpy.ndarray
        ``[n, L, 2]`` observed positions.
    times : numpy.ndarray
        ``[L]`` observation times.
    sigma : float
        Observation noise sd.
    members : int
        Ensemble size.
    cfg : dict
        Needs ``dt``, ``keep_every``; optional ``enkf_inflation``, ``enkf_rtps``.
    rng : numpy.random.Generator
        Prior draws and perturbed observations.

    Returns
    -------
    list of dict
        Per track ``mean``, ``cov``, ``ensemble`` of the coefficients and ``n_members``.
    """
    n, L, _ = obs.shape
    C = flow.sample_coefficients(n * members, rng).reshape(n, members, 98)
    P = np.broadcast_to(np.array(START), (n, members, 2)).copy()
    steps = cfg["keep_every"]
    t_prev = 0.0
    H = np.array([98, 99])
    for j in range(L):
        rot = rotate(flow, C.reshape(-1, 98), t_prev)
        fc, _ = flow.drifters(rot, x0=P[..., 0].reshape(-1, 1),
                              y0=P[..., 1].reshape(-1, 1), dt=cfg["dt"], T=times[j] - t_prev, keep_every=steps, wrap=False)
        P = fc[:, -1, 0, :].reshape(n, members, 2)
        for i in range(n):
            E = np.concatenate([C[i], P[i]], 1)
            Ea = enkf(E, obs[i, j], sigma, H, rng=rng, inflation=cfg.get("enkf_inflation", 1.0), rtps=cfg.get("enkf_rtps", 0.0))
            C[i], P[i] = Ea[:, :98], Ea[:, 98:]
        t_prev = times[j]
    out = []
    for i in range(n):
        out.append({"mean": C[i].mean(0), "cov": np.cov(C[i].T), "ensemble": C[i], "n_members": members})
    return out


def linearised_gaussian(flow: TorusFlow, obs: np.ndarray, times: np.ndarray, sigma: float, members: int,
                        rng: np.random.Generator) -> list[dict]:
    """Closed-form Gaussian posterior of the coefficients given the displacements along the observed path.

    Parameters
    ----------
    flow : TorusFlow
        The flow family.
    obs : numpy.ndarray
        ``[n, L, 2]`` observed positions.
    times : numpy.ndarray
        ``[L]`` observation times.
    sigma : float
        Observation noise sd.
    members : int
        Size of the ensemble drawn from the posterior (for CRPS).
    rng : numpy.random.Generator
        For that draw.

    Returns
    -------
    list of dict
        Per track ``mean``, ``cov``, ``ensemble`` and ``n_members`` (None).
    """
    n, L, _ = obs.shape
    t_all = np.concatenate([[0.0], times])
    P0inv = np.diag(prior_sd(flow) ** -2.0)
    # differenced noise: d_j = e_{j+1} - e_j (e_0 = 0: the start is known); same for x and y
    D = np.eye(L) - np.eye(L, k=-1)
    Rinv = np.linalg.inv(sigma**2 * D @ D.T)
    out = []
    for i in range(n):
        path = np.concatenate([np.array(START)[None], obs[i]], 0)  # [L+1, 2]
        V = velocity_basis(flow, path[:, 0], path[:, 1], t_all)  # [L+1, 2, 98]
        dts = np.diff(t_all)[:, None, None]
        J = 0.5 * dts * (V[:-1] + V[1:])  # [L, 2, 98]
        d = np.diff(path, axis=0)  # [L, 2]
        prec = P0inv.copy()
        rhs = np.zeros(98)
        for c in range(2):
            Jc = J[:, c, :]
            prec += Jc.T @ Rinv @ Jc
            rhs += Jc.T @ Rinv @ d[:, c]
        cov = np.linalg.inv(prec)
        cov = 0.5 * (cov + cov.T)
        mean = cov @ rhs
        ens = mean + rng.standard_normal((members, 98)) @ np.linalg.cholesky(cov).T
        out.append({"mean": mean, "cov": cov, "ensemble": ens, "n_members": None})
    return out


def climatology(flow: TorusFlow, n: int, members: int, rng: np.random.Generator) -> list[dict]:
    """The prior as an analysis: zero mean, prior covariance, an ensemble drawn from it.

    Parameters
    ----------
    flow : TorusFlow
        The flow family.
    n : int
        Number of tracks.
    members : int
        Ensemble size.
    rng : numpy.random.Generator
        For the ensembles.

    Returns
    -------
    list of dict
        ``n`` dicts ``mean``, ``cov``, ``ensemble``, ``n_members`` (None).
    """
    cov = np.diag(prior_sd(flow) ** 2)
    return [{"mean": np.zeros(98), "cov": cov, "ensemble": flow.sample_coefficients(members, rng), "n_members": None}
            for _ in range(n)]


# ------------------------------------------------------------------------- field scores
REGIONS = ("domain_t0", "domain_window", "band_t0", "band_window")


def band_mask(flow: TorusFlow, path: np.ndarray, n: int, radius: float) -> np.ndarray:
    """Grid points within ``radius`` (periodic distance) of any position of ``path`` [L, 2]: [n, n] (y, x).

    Parameters
    ----------
    flow : TorusFlow
        The flow family (its grid).
    path : numpy.ndarray
        ``[L, 2]`` positions.
    n : int
        Grid points per side.
    radius : float
        Distance on the unit torus.

    Returns
    -------
    numpy.ndarray
        Boolean ``[n, n]``.
    """
    g = flow.grid(n)
    X, Y = np.meshgrid(g, g)
    p = np.mod(path, 1.0)
    dx = np.abs(X[..., None] - p[:, 0])
    dy = np.abs(Y[..., None] - p[:, 1])
    dx, dy = np.minimum(dx, 1 - dx), np.minimum(dy, 1 - dy)
    return (dx**2 + dy**2 <= radius**2).any(-1)


def score_fields(results: dict[str, list[dict]], truth: np.ndarray, paths: np.ndarray, flow: TorusFlow,
                 grid_times: np.ndarray, n: int, radius: float) -> dict:
    """Pooled RMSE, spread, spread-skill and CRPS of the streamfunction for every method and region.

    Parameters
    ----------
    results : dict of str to list of dict
        Per method, per track ``mean``, ``cov``, ``ensemble``, ``n_members``.
    truth : numpy.ndarray
        ``[n, 98]`` true coefficients.
    paths : numpy.ndarray
        ``[n, L, 2]`` true tracks (for the band).
    flow : TorusFlow
        The flow family.
    grid_times : numpy.ndarray
        Times of the "window" regions.
    n : int
        Grid points per side.
    radius : float
        Band radius.

    Returns
    -------
    dict
        ``{method: {region: {rmse, rmse_fraction_of_climatology, spread, spread_skill, crps, ...}}}``.
    """
    Phi = psi_basis(flow, n, grid_times).reshape(len(grid_times), n * n, 98)  # [T, P, 98]
    acc = {m: {r: {"se": 0.0, "var": 0.0, "crps": 0.0, "truth2": 0.0, "count": 0} for r in REGIONS} for m in results}
    for i in range(truth.shape[0]):
        band = band_mask(flow, paths[i], n, radius).ravel()
        tfield = Phi @ truth[i]  # [T, P]
        for m, res in results.items():
            r = res[i]
            mean = Phi @ r["mean"]
            var = ((Phi @ r["cov"]) * Phi).sum(-1)  # diag(Phi C Phi^T), [T, P]
            ens = np.moveaxis(Phi @ r["ensemble"].T, -1, 0)  # [M, T, P]
            crps = crps_ensemble(xr.DataArray(ens, dims=("member", "time", "point")),
                                 xr.DataArray(tfield, dims=("time", "point"))).values
            se = (mean - tfield) ** 2
            for reg in REGIONS:
                tsel = slice(0, 1) if reg.endswith("t0") else slice(None)
                psel = band if reg.startswith("band") else np.ones(n * n, bool)
                a = acc[m][reg]
                a["se"] += se[tsel][:, psel].sum()
                a["var"] += np.maximum(var[tsel][:, psel], 0).sum()
                a["crps"] += crps[tsel][:, psel].sum()
                a["truth2"] += (tfield[tsel][:, psel] ** 2).sum()
                a["count"] += int(se[tsel][:, psel].size)
    out = {}
    for m, regs in acc.items():
        out[m] = {}
        nm = results[m][0]["n_members"]
        for reg, a in regs.items():
            rmse = math.sqrt(a["se"] / a["count"])
            spread = math.sqrt(a["var"] / a["count"])
            clim = math.sqrt(a["truth2"] / a["count"])
            out[m][reg] = {"rmse": rmse, "rmse_fraction_of_climatology": rmse / clim, "spread": spread,
                           "spread_skill": float(spread_skill_ratio(spread, rmse, nm)), "crps": a["crps"] / a["count"]}
    for m in out:  # CRPS relative to climatology's, where the climatology was scored
        if "climatology" in out:
            for reg in REGIONS:
                out[m][reg]["crps_fraction_of_climatology"] = out[m][reg]["crps"] / out["climatology"][reg]["crps"]
    return out


# ------------------------------------------------------------------------- the experiment
def _simulate(cfg: dict, seed: int, say: Callable[[str], None], quiet: bool) -> dict:
    """The flow, the coefficients of every train/test flow, the drifter tracks and the noisy test tracks."""
    flow = TorusFlow(seed=cfg.get("flow_seed", 0), threads=None)
    rng = np.random.default_rng([seed, 63])
    n_tr, n_te = cfg["n_train"], cfg["n_test"]
    coeffs = flow.sample_coefficients(n_tr + n_te, rng)
    t0 = time.perf_counter()
    pos, times = tracks(flow, coeffs, cfg, progress=not quiet)
    t_tracks = time.perf_counter() - t0
    say(f"torus: {n_tr + n_te} tracks of {pos.shape[1]} positions in {t_tracks:.0f} s")
    te = slice(n_tr, n_tr + n_te)
    obs_te = pos[te] + cfg["sigma"] * np.random.default_rng([seed, 64]).standard_normal(pos[te].shape)
    return {"flow": flow, "coeffs": coeffs, "pos": pos, "times": times, "dt_obs": float(times[0]),
            "tr": slice(0, n_tr), "te": te, "obs_te": obs_te, "t_tracks": t_tracks,
            "feats_te": features(obs_te, float(times[0]), cfg["vel_scale"], cfg.get("harmonics", 3))}


def _train_model(cfg: dict, seed: int, sim: dict, say: Callable[[str], None], quiet: bool) -> tuple[Any, Any, float]:
    """Train the trajectory encoder on fresh observation noise every epoch; ``(model, result, seconds)``."""
    c32 = sim["coeffs"].astype(np.float32)
    pos, tr, te = sim["pos"], sim["tr"], sim["te"]
    sigma, vs, harmonics = cfg["sigma"], cfg["vel_scale"], cfg.get("harmonics", 3)

    def train_pairs(epoch, g):
        return c32[tr], features(pos[tr] + sigma * g.standard_normal(pos[tr].shape), sim["dt_obs"], vs, harmonics)

    torch.manual_seed(seed)
    model = build_model(pos.shape[1], cfg)
    n_val = min(cfg["n_val"], cfg["n_test"])
    t0 = time.perf_counter()
    res = train(model, train_pairs, (c32[te][:n_val], sim["feats_te"][:n_val]), loss="clip", epochs=cfg["epochs"],
                batch_size=cfg["batch"], lr=cfg["lr"], warmup_steps=cfg.get("warmup", 50), weight_decay=1e-4,
                seed=seed, quiet=quiet, retrieval_max=n_val, max_seconds=cfg.get("max_train_seconds"),
                callback=lambda e, m: say(f"torus epoch {e}: loss {m['train_loss']:.3f} val R@5 field<-traj "
                                          f"{m.get('val_r5_state_from_obs', float('nan')):.3f}"))
    return model, res, time.perf_counter() - t0


def _assimilate_all(cfg: dict, seed: int, sim: dict, model: Any, say: Callable[[str], None]) -> tuple[dict, dict, dict]:
    """Every method on the first ``n_da`` test tracks: ``(results, seconds per track, extra numbers)``."""
    flow, times, sigma = sim["flow"], sim["times"], cfg["sigma"]
    n_da = min(cfg["n_da"], cfg["n_test"])
    obs = sim["obs_te"][:n_da]
    results, secs = {}, {}
    g = np.random.default_rng([seed, 65])
    lib = flow.sample_coefficients(cfg["n_library"], g)
    t0 = time.perf_counter()
    with torch.no_grad():
        z_lib = model.embed_state(torch.as_tensor(lib.astype(np.float32)))
    t_lib = time.perf_counter() - t0
    results["contrastive"], t_c = contrastive_posterior(model, lib, z_lib, sim["feats_te"][:n_da], cfg["members"], g)
    secs["contrastive"] = t_c / n_da
    extra = {"contrastive": {"library_size": int(cfg["n_library"]), "library_embedding_seconds": t_lib,
                             "ess_median": float(np.median([r["ess"] for r in results["contrastive"]])),
                             "tau": float(model.tau.detach())}}
    for N in cfg["enkf_members"]:
        t0 = time.perf_counter()
        results[f"enkf_{N}"] = enkf_augmented(flow, obs, times, sigma, N, cfg, np.random.default_rng([seed, 66, N]))
        secs[f"enkf_{N}"] = (time.perf_counter() - t0) / n_da
        say(f"torus EnKF {N} members: {secs[f'enkf_{N}']:.2f} s per track")
    t0 = time.perf_counter()
    results["linearised_gaussian"] = linearised_gaussian(flow, obs, times, sigma, cfg["members"], g)
    secs["linearised_gaussian"] = (time.perf_counter() - t0) / n_da
    results["climatology"] = climatology(flow, n_da, cfg["members"], g)
    secs["climatology"] = 0.0
    return results, secs, extra


def _setting(cfg: dict, L: int, dt_obs: float, n_da: int, grid_times: np.ndarray, epochs_run: int) -> dict:
    """The settings recorded next to the numbers in results.json."""
    return {"n_train": cfg["n_train"], "n_test": cfg["n_test"], "positions_per_track": int(L), "dt": cfg["dt"],
            "T": cfg["T"], "keep_every": cfg["keep_every"], "obs_interval": dt_obs, "obs_noise_sd": cfg["sigma"],
            "n_coefficients": 98, "state_embedding": "fixed (identity on the 98 coefficients)",
            "obs_encoder": {"type": "trajectory_transformer", "layers": cfg["layers"], "d_model": cfg["d_model"],
                            "nhead": cfg["nhead"], "pooling": "last",
                            "tokens": f"velocity, sin/cos of position harmonics 1..{cfg.get('harmonics', 3)}, "
                                      "and their products"},
            "similarity": "cosine, learned temperature", "loss": "clip", "epochs": cfg["epochs"],
            "epochs_run": epochs_run, "batch_size": cfg["batch"], "lr": cfg["lr"],
            "n_da_trajectories": n_da, "grid": cfg["grid"], "grid_times": grid_times.tolist(),
            "band_radius": cfg["band_radius"], "ensemble_members_for_crps": cfg["members"]}


HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_r1_state_from_obs", "val_r5_state_from_obs",
                "val_r5_obs_from_state", "tau", "seconds")


def run_torus(cfg: dict, seed: int, progress: Callable[[str], None] | None = None,
              quiet: bool = True) -> tuple[dict, dict]:
    """Train the contrastive model on drifter tracks, then assimilate held-out tracks with every method.

    Parameters
    ----------
    cfg : dict
        The settings (``baptista2025.QUICK["torus"]`` or ``FULL["torus"]`` have every key).
    seed : int
        Seed of every random draw (flows, noise, training, ensembles).
    progress : callable, optional
        Called with one-line progress messages.
    quiet : bool
        No progress bars.

    Returns
    -------
    (results, figdata) : tuple of dict
        The numbers for results.json (settings, retrieval, training history, field scores, seconds),
        and what :func:`plot_da` and :func:`plot_training` draw.
    """
    say = progress or (lambda s: None)
    t_start = time.perf_counter()
    sim = _simulate(cfg, seed, say, quiet)
    model, res, t_train = _train_model(cfg, seed, sim, say, quiet)
    te = sim["te"]
    ret = retrieval(model, sim["coeffs"].astype(np.float32)[te], sim["feats_te"], min(cfg["n_retrieval"], cfg["n_test"]))
    say(f"torus retrieval: {ret}")
    n_da = min(cfg["n_da"], cfg["n_test"])
    truth, paths, obs = sim["coeffs"][te][:n_da], sim["pos"][te][:n_da], sim["obs_te"][:n_da]
    results, secs, extra = _assimilate_all(cfg, seed, sim, model, say)
    grid_times = np.linspace(0.0, cfg["T"], cfg["n_grid_times"])
    scores = score_fields(results, truth, paths, sim["flow"], grid_times, cfg["grid"], cfg["band_radius"])
    for m in scores:
        scores[m]["seconds_per_trajectory"] = secs[m]
        scores[m].update(extra.get(m, {}))
    out = {
        "setting": _setting(cfg, sim["pos"].shape[1], sim["dt_obs"], n_da, grid_times, len(res.history)),
        "retrieval": ret,
        "training_history": [{k: v for k, v in h.items() if k in HISTORY_KEYS} for h in res.history],
        "data_assimilation": scores,
        "seconds": {"tracks": sim["t_tracks"], "training": t_train, "total": time.perf_counter() - t_start},
    }
    figdata = {"flow": sim["flow"], "truth": truth[0], "path": paths[0], "obs": obs[0],
               "means": {m: results[m][0]["mean"] for m in results}, "history": res.history}
    return out, figdata


def plot_da(fd: dict, scores: dict):
    """Streamfunction of the first held-out flow and each method's posterior mean, and the RMSE bars.

    Parameters
    ----------
    fd : dict
        The figure data of :func:`run_torus`.
    scores : dict
        Its ``data_assimilation`` numbers.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    import matplotlib.pyplot as plt

    flow = fd["flow"]
    n = 48
    Phi = psi_basis(flow, n, np.array([0.0]))[0]
    methods = ["truth"] + [m for m in fd["means"] if m != "climatology"]
    fields = {"truth": Phi @ fd["truth"], **{m: Phi @ fd["means"][m] for m in methods[1:]}}
    lim = np.abs(fields["truth"]).max()
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(3.1 * (len(methods) + 1), 3.3))
    p = np.mod(fd["path"], 1.0)
    for ax, m in zip(axes, methods):
        ax.imshow(fields[m], origin="lower", extent=(0, 1, 0, 1), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.plot(p[:, 0], p[:, 1], "k.", ms=1)
        ax.plot(*START, "k*", ms=6)
        ax.set_title(m if m == "truth" else f"{m}\n(posterior mean)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[-1]
    names = [m for m in scores if m != "climatology"]
    for k, reg in enumerate(("domain_t0", "band_window")):
        ax.bar(np.arange(len(names)) + 0.4 * k, [scores[m][reg]["rmse_fraction_of_climatology"] for m in names], 0.4, label=reg)
    ax.set_xticks(np.arange(len(names)) + 0.2)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_ylabel("RMSE / climatology RMSE")
    ax.legend(fontsize=7)
    fig.suptitle("Torus flow: streamfunction at t = 0 recovered from one drifter (first held-out track)")
    fig.tight_layout()
    return fig


def plot_training(history: list[dict]):
    """Training and validation loss, and validation R@K, by epoch.

    Parameters
    ----------
    history : list of dict
        The training history (``epoch``, ``train_loss``, ``val_loss``, ``val_r*``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].plot(ep, [h["train_loss"] for h in history], label="train")
    axes[0].plot(ep, [h.get("val_loss", np.nan) for h in history], label="validation")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("CLIP loss")
    axes[0].legend()
    for key, lab in (("val_r5_state_from_obs", "R@5 field from trajectory"), ("val_r5_obs_from_state", "R@5 trajectory from field"),
                     ("val_r1_state_from_obs", "R@1 field from trajectory")):
        axes[1].plot(ep, [h.get(key, np.nan) for h in history], label=lab)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=7)
    fig.suptitle("Torus flow: trajectory transformer vs fixed Eulerian embedding")
    fig.tight_layout()
    return fig
