"""One training loop for every encoder, similarity and loss.

``train(model, train_data, val_data, loss=..., epochs=..., batch_size=..., lr=..., seed=...)``.
Data are pairs ``(states [N, ...], obs [N, ...])`` (numpy or torch, matched by row) or a callable
``f(epoch, rng) -> pairs`` that redraws them each epoch (fresh observation patterns and noise);
``rng`` is a ``numpy.random.Generator`` seeded from ``(seed, epoch)``, so a run is deterministic
for a seed and a resumed run sees the same data as an uninterrupted one. A callable ``val_data``
is called once as ``f(rng)``. Split by time first (:func:`time_split`) so validation never
shares a time (or its neighbours) with training.

Each epoch: AdamW steps on shuffled minibatches (a contrastive loss depends on the batch size, so
incomplete batches are dropped), warm-up + cosine learning rate, gradient clipping, then metrics
(train loss, validation loss, retrieval R@1/R@5 in both directions), early stopping on the
monitored loss, and (with ``checkpoint_dir``) a resumable state written atomically. At the end the
best weights are restored and saved as ``checkpoint_dir/{model.safetensors, config.json}`` with
``history.json``; the resumable state lives in ``checkpoint_dir/resume/``.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from oceanda.contrastive.losses import Loss, get_loss
from oceanda.errors import OceandaError, OutputExistsError

Pairs = tuple[Any, Any]


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = math.inf
    stopped_early: bool = False


def time_split(n_or_times: int | Sequence, val_fraction: float = 0.2, gap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of a time series: validation is the last block of times, and ``gap``
    samples between the two are dropped so autocorrelated neighbours do not leak."""
    n = int(n_or_times) if np.isscalar(n_or_times) else len(n_or_times)
    n_val = int(round(n * val_fraction))
    if not 0 < n_val < n - gap:
        raise OceandaError(f"time_split: {n} times, val_fraction={val_fraction}, gap={gap}; expected room for both parts")
    return np.arange(0, n - n_val - gap), np.arange(n - n_val, n)


def _n(pairs: Pairs) -> int:
    a, b = pairs
    if len(a) != len(b):
        raise OceandaError(f"training pairs: {len(a)} states but {len(b)} observations; expected matched rows")
    return len(a)


def _take(x, idx: np.ndarray, dtype: torch.dtype, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x[torch.as_tensor(idx)]
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(x)[idx]))
    return t.to(device=device, dtype=dtype)


def _dtype(model: torch.nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def recall_at_k(S: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Retrieval recalls of matched pairs on the diagonal of a square logits matrix (ties count against).

    ``state_from_obs``: for each obs (column), is its state among the k highest of the column;
    ``obs_from_state``: the same along rows.
    """
    d = S.diagonal()
    rank_state = (S > d.unsqueeze(0)).sum(0)  # per column
    rank_obs = (S > d.unsqueeze(1)).sum(1)  # per row
    out = {}
    for k in ks:
        out[f"r{k}_state_from_obs"] = float((rank_state < k).double().mean())
        out[f"r{k}_obs_from_state"] = float((rank_obs < k).double().mean())
    return out


@torch.no_grad()
def embed_in_batches(model, pairs: Pairs, batch_size: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings ``(z_state, z_obs)`` of all pairs, computed in chunks (eval mode)."""
    device = device or "cpu"
    n = _n(pairs)
    dt = _dtype(model)
    zs, zo = [], []
    for i in range(0, n, batch_size):
        idx = np.arange(i, min(n, i + batch_size))
        zs.append(model.embed_state(_take(pairs[0], idx, dt, device)))
        zo.append(model.embed_obs(_take(pairs[1], idx, dt, device)))
    return torch.cat(zs), torch.cat(zo)


@torch.no_grad()
def evaluate(model, pairs: Pairs, loss: Loss | str = "clip", batch_size: int = 256, retrieval_max: int = 1000,
             device=None) -> dict[str, float]:
    """Mean loss over consecutive batches of ``batch_size`` and R@1/R@5 among the first ``retrieval_max`` pairs."""
    loss_fn = get_loss(loss) if isinstance(loss, str) else loss
    was = model.training
    model.eval()
    device = device or "cpu"
    zs, zo = embed_in_batches(model, pairs, batch_size, device)
    n = len(zs)
    vals, weights = [], []
    dt = _dtype(model)
    for i in range(0, n, batch_size):
        j = min(n, i + batch_size)
        if j - i < 2:
            continue
        S = model.logits(zs[i:j], zo[i:j])
        if loss_fn.needs_data:
            idx = np.arange(i, j)
            v = loss_fn(S, _take(pairs[0], idx, dt, device), _take(pairs[1], idx, dt, device))
        else:
            v = loss_fn(S)
        vals.append(float(v))
        weights.append(j - i)
    m = min(n, retrieval_max)
    out = {"loss": float(np.average(vals, weights=weights)) if vals else math.nan}
    out.update(recall_at_k(model.logits(zs[:m], zo[:m])))
    model.train(was)
    return out


def _block_permutation(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of 0..n-1 that keeps blocks of k consecutive indices together (k=1: plain)."""
    if k <= 1:
        return rng.permutation(n)
    starts = rng.permutation(np.arange(0, n, k))
    return np.concatenate([np.arange(s0, min(n, s0 + k)) for s0 in starts])


def _lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


# --- resumable state (safetensors + JSON; no pickle) ------------------------------------------------

def _save_resume(directory: Path, model, opt, best_state, meta: dict) -> None:
    from oceanda.io import save_checkpoint

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    sd = opt.state_dict()
    opt_meta = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{pid}.{k}"] = v.reshape(-1) if v.ndim == 0 else v
                opt_meta[f"{pid}.{k}"] = list(v.shape)
            else:
                opt_meta[f"{pid}.{k}"] = {"value": v}
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    save_checkpoint(directory, tensors, {**meta, "optimizer": {"param_groups": groups, "state": opt_meta}}, overwrite=True)


def _load_resume(directory: Path, model, opt):
    from oceanda.io import load_checkpoint

    tensors, meta = load_checkpoint(directory)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    state: dict[int, dict[str, Any]] = {}
    for key, info in meta["optimizer"]["state"].items():
        pid, name = key.split(".", 1)
        if isinstance(info, dict):
            val = info["value"]
        else:
            val = tensors[f"opt.{key}"].reshape(info)
        state.setdefault(int(pid), {})[name] = val
    groups = meta["optimizer"]["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
    return best, meta


def train(
    model,
    train_data: Pairs | Callable[[int, np.random.Generator], Pairs],
    val_data: Pairs | Callable[[np.random.Generator], Pairs] | None = None,
    *,
    loss: str | Loss = "clip",
    loss_kwargs: dict | None = None,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    grad_clip: float | None = 1.0,
    patience: int | None = None,
    min_delta: float = 0.0,
    seed: int = 0,
    checkpoint_dir=None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool | None = None,
    device: str | torch.device | None = None,
    retrieval_max: int = 1000,
    max_seconds: float | None = None,
    block_size: int = 1,
    block_start: int = 0,
    callback: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train ``model`` (a ``ContrastiveModel``) in place and return the per-epoch history.

    ``patience``: stop after that many epochs without improvement of the validation loss (train
    loss without validation data); the best weights are restored at the end. ``resume`` continues
    from ``checkpoint_dir/resume`` with the same arguments (same seed, epochs, ...). ``max_seconds``
    stops after the epoch during which the wall-clock budget ran out. ``callback(epoch, metrics)``
    is called after each epoch (after the resumable state is written). ``block_size`` k > 1 shuffles
    blocks of k consecutive rows instead of rows, so a batch holds batch_size/k runs of neighbours
    (e.g. consecutive days): hard negatives that teach fine distinctions; from epoch ``block_start``
    on (0-based), since a model that has not yet left its collapsed start learns nothing from them.
    """
    import time

    from tqdm.auto import tqdm

    if schedule not in ("cosine", "constant"):
        raise OceandaError(f"schedule '{schedule}'; expected 'cosine' or 'constant'")
    if batch_size < 2:
        raise OceandaError(f"batch_size={batch_size}; a contrastive batch needs at least 2 pairs")
    loss_fn = get_loss(loss, **(loss_kwargs or {})) if not isinstance(loss, Loss) else loss
    device = torch.device(device or "cpu")
    model.to(device)
    dt = _dtype(model)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    resume_dir = ckpt / "resume" if ckpt is not None else None
    if ckpt is not None and not resume and not overwrite and (ckpt / "model.safetensors").exists():
        raise OutputExistsError(f"{ckpt}: holds a model already; pass overwrite=True (CLI: --overwrite) or resume=True")
    if resume and (resume_dir is None or not (resume_dir / "model.safetensors").exists()):
        raise OceandaError(f"resume: no resumable state in {resume_dir}; expected a checkpoint directory written by train")

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    result = TrainResult()
    start_epoch, step, bad_epochs = 0, 0, 0
    best_state = None
    if resume:
        best_state, meta = _load_resume(resume_dir, model, opt)
        start_epoch, step, bad_epochs = meta["epoch"], meta["step"], meta["bad_epochs"]
        result.history = list(meta["history"])
        result.best_epoch, result.best_metric = meta["best_epoch"], meta["best_metric"]
        if meta.get("finished"):
            start_epoch = epochs

    val_pairs = None
    if val_data is not None:
        val_pairs = val_data(np.random.default_rng([seed, 2**31 - 1])) if callable(val_data) else val_data

    if quiet is None:
        quiet = not sys.stderr.isatty()
    t0 = time.perf_counter()
    bar = tqdm(total=epochs, initial=start_epoch, desc="train", unit="epoch", disable=quiet, leave=False)
    model.train()
    try:
        for epoch in range(start_epoch, epochs):
            rng = np.random.default_rng([seed, epoch])
            pairs = train_data(epoch, rng) if callable(train_data) else train_data
            n = _n(pairs)
            if n < batch_size:
                raise OceandaError(f"{n} training pairs; expected at least batch_size={batch_size}")
            per_epoch = n // batch_size
            total = per_epoch * epochs
            perm = _block_permutation(n, int(block_size) if epoch >= block_start else 1, rng)
            run_loss = 0.0
            for b in range(per_epoch):
                idx = perm[b * batch_size:(b + 1) * batch_size]
                xs, xo = _take(pairs[0], idx, dt, device), _take(pairs[1], idx, dt, device)
                f = _lr_factor(step, total, warmup_steps, schedule, min_lr_ratio)
                for g in opt.param_groups:
                    g["lr"] = lr * f
                S = model(xs, xo)
                L = loss_fn(S, xs, xo) if loss_fn.needs_data else loss_fn(S)
                opt.zero_grad(set_to_none=True)
                L.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                step += 1
                run_loss += float(L.detach())
            metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": run_loss / per_epoch, "lr": lr * f,
                                       "tau": float(model.tau.detach()), "seconds": time.perf_counter() - t0}
            if val_pairs is not None:
                ev = evaluate(model, val_pairs, loss_fn, batch_size, retrieval_max, device)
                metrics.update({f"val_{k}": v for k, v in ev.items()})
                model.train()
            monitor = metrics.get("val_loss", metrics["train_loss"])
            if monitor < result.best_metric - min_delta:
                result.best_metric, result.best_epoch, bad_epochs = float(monitor), epoch + 1, 0
                best_state = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
            else:
                bad_epochs += 1
            result.history.append(metrics)
            stop = (patience is not None and bad_epochs >= patience) or (
                max_seconds is not None and time.perf_counter() - t0 >= max_seconds)
            if resume_dir is not None:
                _save_resume(resume_dir, model, opt, best_state, {
                    "epoch": epoch + 1, "step": step, "bad_epochs": bad_epochs, "history": result.history,
                    "best_epoch": result.best_epoch, "best_metric": result.best_metric, "finished": bool(stop),
                    "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr})
            bar.update(1)
            bar.set_postfix({k: round(v, 4) for k, v in metrics.items() if k in ("train_loss", "val_loss", "val_r5_state_from_obs")})
            if callback is not None:
                callback(epoch + 1, metrics)
            if stop:
                result.stopped_early = True
                break
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.config["loss"] = loss_fn.config()
    model.config["training"] = {"epochs": epochs, "epochs_run": len(result.history), "batch_size": batch_size, "lr": lr,
                                "weight_decay": weight_decay, "schedule": schedule, "seed": seed,
                                "best_epoch": result.best_epoch, "stopped_early": result.stopped_early}
    if ckpt is not None:
        from oceanda.io import write_json

        model.save(ckpt, overwrite=True)
        write_json(result.history, ckpt / "history.json", overwrite=True)
    return result
