"""One training loop for every encoder, similarity and loss: :class:`Trainer` with a :class:`TrainConfig`.

Why a class: the loop has several separate concerns -- the learning-rate schedule, shuffling,
early stopping, resuming, progress and checkpoint writing -- each now a small method, and every
training setting lives in one frozen, validated :class:`TrainConfig` (defaults written once, a
versioned JSON round trip stored in the checkpoint as ``config["train"]``). Field training
(``oceanda.pairs``) and window training (``oceanda.analysis.window_training``) use the same
trainer. :func:`train` is the former function API, a thin wrapper with the same results.

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
``history.json``; the resumable state lives in ``checkpoint_dir/resume/`` unless ``resume_dir`` says
where (``oceanda train`` keeps it beside the model folder it builds: ``.MODEL_DIR.resume``).

Several processes (torchrun; :func:`torchrun_group` starts the gloo group): every rank draws the same
pairs, shuffles and batches as one process would, embeds its contiguous slice of each global batch,
and gathers every slice with gradient (:func:`gather_rows`), so the loss is the single-process loss
of the whole batch and DDP's averaged gradient is the single-process gradient; only rank 0 writes
(checkpoint, resumable state, progress, callback). Results equal one process's to float rounding
(runs ending on ``max_seconds`` stop on an epoch all ranks agree on, not one process's).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from oceanda.contrastive.losses import LOSSES, Loss, get_loss
from oceanda.contrastive.retrieval import retrieval_recalls
from oceanda.errors import ConfigurationError, OceandaError, OutputExistsError
from oceanda.settings import Settings, check_choice, check_number

Pairs = tuple[Any, Any]
TrainData = Pairs | Callable[[int, np.random.Generator], Pairs]
ValData = Pairs | Callable[[np.random.Generator], Pairs] | None
SCHEDULES = ("cosine", "constant")
MONITORS = ("loss", "retrieval")


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Every setting of a training run (defaults defined here once; checked on construction).

    ``loss``/``loss_kwargs``: the loss by name and its numeric options (:func:`get_loss`);
    ``schedule``: ``cosine`` (after ``warmup_steps`` of linear warm-up, down to ``min_lr_ratio`` x
    ``lr``) or ``constant``; ``grad_clip``: gradient-norm clip (``None``/0: off); ``patience``: stop
    after that many epochs without an improvement larger than ``min_delta`` of the monitored loss
    (validation, else training); ``max_seconds``: stop after the epoch during which the wall-clock
    budget ran out; ``block_size`` k > 1: shuffle blocks of k consecutive rows (hard negatives)
    from epoch ``block_start`` (0-based) on; ``retrieval_max``: validation pairs scored for R@K (0: none,
    the recalls read NaN); ``monitor``: what picks the best epoch and drives patience -- ``loss`` (the
    validation loss, else the training loss) or ``retrieval`` (minus the mean of validation R@1 and
    R@5, state from obs; the loss where no recall is finite). Why ``retrieval``: on small validation
    sets the conditional loss is 0 at chance and rises above 0 when a learning model turns
    over-confident, so the loss would keep a collapsed early epoch over a later one that retrieves.
    """

    SCHEMA: ClassVar[str] = "oceanda.TrainConfig"
    VERSION: ClassVar[int] = 1

    loss: str | None = "clip"  # None: a Loss object not in LOSSES, given to the Trainer
    loss_kwargs: Mapping[str, Any] | None = None
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    patience: int | None = None
    min_delta: float = 0.0
    seed: int = 0
    max_seconds: float | None = None
    block_size: int = 1
    block_start: int = 0
    retrieval_max: int = 1000
    monitor: str = "loss"

    def validate(self) -> None:
        """Raise :class:`~oceanda.errors.ConfigurationError` naming the first setting out of range."""
        from oceanda.settings import SEED_MAX

        if self.loss is not None:
            check_choice("loss", self.loss, LOSSES)
        for k, v in (self.loss_kwargs or {}).items():
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise ConfigurationError(f"loss_kwargs[{k!r}]={v!r}; expected a number or a string (pass a Loss "
                                         "object to the Trainer for kernel functions)")
        check_number("epochs", self.epochs, lo=1, integer=True)
        check_number("batch_size", self.batch_size, lo=2, integer=True)  # a contrastive batch needs 2 pairs
        check_number("lr", self.lr, lo=0, lo_open=True, hi=1.0)  # Adam beyond 1: divergence to NaN weights
        check_number("weight_decay", self.weight_decay, lo=0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_number("warmup_steps", self.warmup_steps, lo=0, integer=True)
        check_number("min_lr_ratio", self.min_lr_ratio, lo=0, hi=1)
        check_number("grad_clip", self.grad_clip, lo=0, optional=True)
        check_number("patience", self.patience, lo=1, integer=True, optional=True)
        check_number("min_delta", self.min_delta, lo=0)
        check_number("seed", self.seed, lo=0, hi=SEED_MAX, integer=True)
        check_number("max_seconds", self.max_seconds, lo=0, lo_open=True, optional=True)
        check_number("block_size", self.block_size, lo=1, integer=True)
        check_number("block_start", self.block_start, lo=0, integer=True)
        check_number("retrieval_max", self.retrieval_max, lo=0, integer=True)
        check_choice("monitor", self.monitor, MONITORS)

    def make_loss(self) -> Loss:
        """The loss these settings name.

        Returns
        -------
        Loss
            ``get_loss(loss, **loss_kwargs)``.
        """
        if self.loss is None:
            raise ConfigurationError("TrainConfig.loss=None names no loss; give the Loss object to the Trainer (loss=)")
        return get_loss(self.loss, **dict(self.loss_kwargs or {}))


@dataclass
class TrainResult:
    """Per-epoch ``history`` (dicts of metrics), the best epoch (1-based) and its monitored loss."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = math.inf
    stopped_early: bool = False
    health: dict[str, Any] | None = None  # :func:`training_health` of the best epoch (None without validation)

    def health_summary(self) -> str:
        """One line: validation R@1/R@5 next to chance, and the verdict (:func:`health_summary`)."""
        return health_summary(self.health)



def training_health(metrics: Mapping[str, Any], candidates: int) -> dict[str, Any] | None:
    """Validation retrieval next to chance: did the model learn anything?

    Why: the conditional losses here are log-mean-exp forms whose value is exactly 0 when every logit
    is equal (a model that ignores its inputs), and reach -log(batch) when each observation picks out
    its own state. A loss creeping down to 1e-7 is thus a model collapsing *towards* chance, not one
    that has learned; only retrieval against the chance level says which. Chance is K / candidates
    for R@K. A model is ``weak`` when its R@5 is within 2x of chance (R@5 < 2 x 5 / candidates); with
    10 candidates or fewer, where that bound reaches 1, R@1 < 2 / candidates is the test instead.

    Parameters
    ----------
    metrics : an epoch's metrics (``val_r1_state_from_obs``, ``val_r5_state_from_obs``)
    candidates : the number of validation pairs scored for retrieval (each observation's candidates)

    Returns
    -------
    dict or None
        ``{r1, r5, chance_r1, chance_r5, candidates, weak, criterion}``; None without validation recalls.
    """
    r1, r5 = metrics.get("val_r1_state_from_obs"), metrics.get("val_r5_state_from_obs")
    n = int(candidates)
    if r1 is None or r5 is None or n < 2 or not (math.isfinite(r1) and math.isfinite(r5)):
        return None
    chance_r1, chance_r5 = 1.0 / n, min(5, n) / n
    if 2 * chance_r5 < 1:
        weak, criterion = r5 < 2 * chance_r5, "R@5 < 2 x chance"
    else:
        weak, criterion = r1 < min(1.0, 2 * chance_r1), "R@1 < 2 x chance (10 candidates or fewer)"
    return {"r1": float(r1), "r5": float(r5), "chance_r1": chance_r1, "chance_r5": chance_r5, "candidates": n,
            "weak": bool(weak), "criterion": criterion, "epoch": int(metrics.get("epoch", 0))}


def health_summary(health: Mapping[str, Any] | None) -> str:
    """One line: validation R@1/R@5 next to chance, and the verdict.

    Parameters
    ----------
    health : :func:`training_health` (None: no validation)

    Returns
    -------
    str
    """
    if not health:
        return "no validation retrieval (no validation pairs): cannot tell whether the model learned"
    h = health
    line = (f"validation R@1 {h['r1']:.3f} (chance {h['chance_r1']:.3f}), R@5 {h['r5']:.3f} (chance {h['chance_r5']:.3f}; "
            f"{h['r5'] / h['chance_r5']:.1f}x) among {h['candidates']} candidates")
    if h["weak"]:
        line += f"; WEAK: {h['criterion']} -- the model has learned next to nothing"
    return line


def time_split(n_or_times: int | Sequence, val_fraction: float = 0.2, gap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` of a time series: validation is the last block of times.

    Parameters
    ----------
    n_or_times : the number of times, or the times themselves
    val_fraction : fraction of the times that validates
    gap : samples dropped between the two parts, so autocorrelated neighbours do not leak

    Returns
    -------
    tuple of numpy.ndarray
        ``(train indices, validation indices)``.
    """
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


@torch.no_grad()
def embed_in_batches(model, pairs: Pairs, batch_size: int, device=None,
                     shard: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of all pairs, computed in chunks (the model's current mode).

    Parameters
    ----------
    model : a ``ContrastiveModel``
    pairs : ``(states, obs)`` matched by row
    batch_size : rows embedded at once
    device : where to compute (default: cpu)
    shard : in a process group (torchrun), each rank embeds a contiguous slice and every rank gets
        all rows (:func:`gather_rows`); without a group this changes nothing

    Returns
    -------
    tuple of torch.Tensor
        ``(z_state [N, ne], z_obs [N, ne])``.
    """
    device = device or "cpu"
    n = _n(pairs)
    dt = _dtype(model)
    rank, size = world() if shard else (0, 1)
    sizes = shard_sizes(n, size)
    lo = sum(sizes[:rank])
    zs, zo = [], []
    for i in range(lo, lo + sizes[rank], batch_size):
        idx = np.arange(i, min(lo + sizes[rank], i + batch_size))
        zs.append(model.embed_state(_take(pairs[0], idx, dt, device)))
        zo.append(model.embed_obs(_take(pairs[1], idx, dt, device)))
    if size == 1:
        return torch.cat(zs), torch.cat(zo)
    ne = int(model.state_encoder.out_dim)
    zs, zo = (torch.cat(z) if z else torch.zeros((0, ne), dtype=dt, device=device) for z in (zs, zo))
    return gather_rows(zs, sizes), gather_rows(zo, sizes)


@torch.no_grad()
def evaluate(model, pairs: Pairs, loss: Loss | str = "clip", batch_size: int = 256, retrieval_max: int = 1000,
             device=None, shard: bool = False) -> dict[str, float]:
    """Mean loss over consecutive batches and retrieval recalls, in eval mode.

    Parameters
    ----------
    model : a ``ContrastiveModel``
    pairs : ``(states, obs)`` matched by row
    loss : a loss or its name
    batch_size : pairs per loss batch (batches of fewer than 2 pairs are skipped)
    retrieval_max : R@1/R@5 are scored among the first this many pairs
    device : where to compute (default: cpu)
    shard : split the embedding over the ranks of a process group (:func:`embed_in_batches`)

    Returns
    -------
    dict
        ``loss`` (weighted by batch size) and the keys of :func:`retrieval_recalls`.
    """
    loss_fn = get_loss(loss) if isinstance(loss, str) else loss
    was = model.training
    model.eval()
    device = device or "cpu"
    zs, zo = embed_in_batches(model, pairs, batch_size, device, shard=shard)
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
    out.update(retrieval_recalls(model.logits(zs[:m], zo[:m])))
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


# --- several processes (torchrun): one global batch, each rank embedding its slice ------------------

#: Seconds a rank waits for the others -- to start, and at every collective -- before it gives up with
#: one line (the default outlasts an epoch's non-collective work on rank 0: writing the resumable state).
DDP_TIMEOUT_ENV = "OCEANDA_DDP_TIMEOUT"
DDP_TIMEOUT = 600.0


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised ``torch.distributed`` group; ``(0, 1)`` without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"environment {name}={raw!r}; expected a whole number (torchrun sets it)") from None


def _one_line(exc: BaseException) -> str:
    """The gist of a torch.distributed error: gloo's source location and its boilerplate advice dropped."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[[^\]]*\]\s*", "", text).split(" This is typically")[0]
    return text[:300] or type(exc).__name__


def _init_gloo(size: int) -> None:
    """``torch.distributed.init_process_group('gloo')`` from torchrun's environment, refusals on one line."""
    dist = torch.distributed
    launch = "python -m torch.distributed.run --nproc_per_node N -m oceanda train ..."
    if not dist.is_available():
        raise ConfigurationError(f"environment WORLD_SIZE={size}: this torch has no torch.distributed; expected a "
                                 "torch build with it, or a single process")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise ConfigurationError(f"environment WORLD_SIZE={size} without {', '.join(missing)}; expected a launch by "
                                 f"torchrun ({launch})")
    raw = os.environ.get(DDP_TIMEOUT_ENV, "")
    try:
        timeout = float(raw) if raw else DDP_TIMEOUT
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigurationError(f"environment {DDP_TIMEOUT_ENV}={raw!r}; expected seconds > 0")
    rank = _env_int("RANK", 0)
    try:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout), rank=rank, world_size=size)
    except (RuntimeError, ValueError) as exc:
        raise OceandaError(f"torchrun rank {rank}: the {size} processes did not all start ({_one_line(exc)}); expected "
                           f"every rank up within {DDP_TIMEOUT_ENV}={timeout:g} s") from None


def torchrun_group() -> int:
    """This process's rank in the gloo group of a torchrun launch (``WORLD_SIZE`` > 1), started on first call.

    Why once per process, kept to its end: ``oceanda train`` starts the group before any rank builds
    a model; a group destroyed and started again under one torchrun launch can hang in gloo's
    connection set-up (the launch's store keeps the old group's addresses), so a second training in
    the same process reuses the first group. A group the caller started is used as it is; without
    torchrun nothing happens and the rank is 0 (the one that writes).
    """
    dist = torch.distributed
    size = _env_int("WORLD_SIZE", 1)
    if size > 1 and not (dist.is_available() and dist.is_initialized()):
        _init_gloo(size)
    return world()[0]


def shard_sizes(n: int, size: int) -> list[int]:
    """Rows of a batch of ``n`` each of ``size`` ranks embeds, in rank order (contiguous slices)."""
    return [n // size + (r < n % size) for r in range(size)]


class _GatherRows(torch.autograd.Function):
    """Every rank's rows, in rank order (one tensor, as if one process had embedded the whole batch).

    Backward: each rank computes the same loss of the gathered rows, so the gradient of this rank's
    rows is the SUM over ranks of their gradients (an all-reduce) -- with DDP then averaging the
    parameter gradients over ranks, the result is exactly the single-process gradient (a gather
    that kept only the local gradient would be ``1 / world size`` of it). Ranks may hold different
    numbers of rows (padded for the all-gather, which needs equal shapes).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        dist = torch.distributed
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        padded = x.new_zeros((max(sizes),) + tuple(x.shape[1:]))
        padded[:len(x)] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:k] for p, k in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        sizes = ctx.sizes
        stacked = grad.new_zeros((len(sizes), max(sizes)) + tuple(grad.shape[1:]))
        for r, g in enumerate(torch.split(grad, list(sizes))):
            stacked[r, :len(g)] = g
        torch.distributed.all_reduce(stacked)  # SUM
        return stacked[ctx.rank, :sizes[ctx.rank]].contiguous(), None


def gather_rows(x: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """All ranks' rows of ``x`` (``sizes[r]`` from rank r) in rank order, with gradient (:class:`_GatherRows`)."""
    return _GatherRows.apply(x, tuple(int(k) for k in sizes))


class _ShardedLogits(torch.nn.Module):
    """What DDP wraps: this rank's slice embedded, every slice gathered, the global batch's logits.

    Why inside ``forward``: DDP reduces the gradients of what its forward uses; the temperature
    enters only the logits, so they are computed here too.
    """

    def __init__(self, model, sizes: Sequence[int]):
        super().__init__()
        self.model, self.sizes = model, tuple(int(k) for k in sizes)

    def forward(self, xs: torch.Tensor, xo: torch.Tensor) -> torch.Tensor:
        return self.model.logits(gather_rows(self.model.embed_state(xs), self.sizes),
                                 gather_rows(self.model.embed_obs(xo), self.sizes))


@contextlib.contextmanager
def _peer_errors():
    """A failed collective (a peer died, or stalled past the timeout) as one line, not a traceback."""
    try:
        yield
    except RuntimeError as exc:
        rank, size = world()
        dist_error = getattr(torch.distributed, "DistError", ())
        if size <= 1 or not (isinstance(exc, dist_error) or "gloo" in str(exc).lower()):
            raise
        raise OceandaError(f"torchrun rank {rank}: lost the other processes ({_one_line(exc)}); expected all {size} "
                           f"ranks alive -- see the first rank's error (a stall past {DDP_TIMEOUT_ENV} seconds "
                           "ends the run too)") from None


def _any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (ranks stop together: a wall-clock budget differs between them)."""
    if world()[1] <= 1:
        return bool(flag)
    t = torch.tensor([int(bool(flag))])
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


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
    """Restore ``model`` and ``opt`` from ``directory``; every part checked first (one-line CheckpointError)."""
    from oceanda.contrastive.checkpoint import check_resume, config_file
    from oceanda.errors import CheckpointError

    weights, best, opt_state, meta = check_resume(directory, model, opt)
    model.load_state_dict(weights, strict=True)
    try:
        opt.load_state_dict(opt_state)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{config_file(directory)}: the optimiser state does not fit this model ({msg})") from exc
    return best, meta


# --- the trainer ----------------------------------------------------------------------------------

@dataclass
class _Run:
    """Mutable state of one run: what a resumable checkpoint restores."""

    result: TrainResult
    epoch: int = 0  # first epoch to run (0-based)
    step: int = 0
    bad_epochs: int = 0
    best_state: dict | None = None
    t0: float = 0.0


class Trainer:
    """Trains a ``ContrastiveModel`` in place with the settings of a :class:`TrainConfig`.

    Parameters
    ----------
    config : the training settings (default: ``TrainConfig()``)
    loss : a ready :class:`~oceanda.contrastive.losses.Loss` (e.g. with kernel functions); default
        ``config.make_loss()``
    device : where to train (default: cpu)
    quiet : no progress bar (default: quiet unless stderr is a terminal)
    callback : ``callback(epoch, metrics)`` after each epoch (after the resumable state is written)
    """

    def __init__(self, config: TrainConfig | None = None, *, loss: Loss | None = None,
                 device: str | torch.device | None = None, quiet: bool | None = None,
                 callback: Callable[[int, dict], None] | None = None):
        self.config = config if config is not None else TrainConfig()
        self.loss_fn = loss if loss is not None else self.config.make_loss()
        self.device = torch.device(device or "cpu")
        self.quiet = (not sys.stderr.isatty()) if quiet is None else bool(quiet)
        self.callback = callback
        self._candidates = 0  # validation pairs of the current fit (the health's candidates)
        self._ddp: torch.nn.Module | None = None  # the DDP-wrapped model of the current fit (torchrun)
        self._rows = slice(None)  # this rank's rows of each global batch

    def fit(
self, model, train_data: TrainData, val_data: ValData = None, *, checkpoint_dir=None,
            resume: bool = False, overwrite: bool = False, resume_dir=None) -> TrainResult:
        """Train ``model``; restore its best weights; with ``checkpoint_dir`` save it there.

        Parameters
        ----------
        model : a ``ContrastiveModel`` (trained in place)
        train_data : pairs, or ``f(epoch, rng) -> pairs`` redrawn each epoch
        val_data : pairs, ``f(rng) -> pairs`` (called once), or ``None`` (monitor the training loss)
        checkpoint_dir : where the model, ``history.json`` and the resumable state are written
        resume : continue from ``resume_dir`` (same settings as the interrupted run)
        overwrite : replace a model already in ``checkpoint_dir``
        resume_dir : where the resumable state is written each epoch and read by ``resume``
            (default ``checkpoint_dir/resume``; none without ``checkpoint_dir``)

        Returns
        -------
        TrainResult
            The per-epoch history, the best epoch and whether the run stopped early.
        """
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if resume_dir is not None:
            resume_dir = Path(resume_dir)
        elif ckpt is not None:
            resume_dir = ckpt / "resume"
        self._check_outputs(ckpt, resume_dir, resume, overwrite)
        model.to(self.device)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=self.config.lr,
                                weight_decay=self.config.weight_decay)
        run = self._start(model, opt, resume_dir if resume else None)
        val_pairs = self._validation_pairs(val_data)
        self._candidates = _n(val_pairs) if val_pairs is not None else 0

        with _peer_errors():
            self._distribute(model)
            try:
                self._loop(model, opt, run, train_data, val_pairs, resume_dir)
            finally:
                self._ddp, self._rows = None, slice(None)
        self._finish(model, run, ckpt)
        return run.result

    # -- before the loop ---------------------------------------------------------------------------

    def _check_outputs(self, ckpt: Path | None, resume_dir: Path | None, resume: bool, overwrite: bool) -> None:
        if ckpt is not None and not resume and not overwrite and (ckpt / "model.safetensors").exists():
            raise OutputExistsError(f"{ckpt}: holds a model already; pass overwrite=True (CLI: --overwrite) or resume=True")
        if resume and (resume_dir is None or not (resume_dir / "model.safetensors").exists()):
            raise OceandaError(f"resume: no resumable state in {resume_dir}; expected a checkpoint directory written by train")

    def _start(self, model, opt, resume_dir: Path | None) -> _Run:
        """A fresh run, or the one stored in ``resume_dir``."""
        run = _Run(TrainResult())
        if resume_dir is not None:
            run.best_state, meta = _load_resume(resume_dir, model, opt)
            run.epoch, run.step, run.bad_epochs = meta["epoch"], meta["step"], meta["bad_epochs"]
            run.result.history = list(meta["history"])
            run.result.best_epoch, run.result.best_metric = meta["best_epoch"], meta["best_metric"]
            if meta.get("finished"):
                run.epoch = self.config.epochs
        return run

    def _distribute(self, model) -> None:
        """In a process group: wrap ``model`` in DDP and pick this rank's rows of every global batch.

        Why the global batch on every rank: pairs, shuffles and batches are drawn from the same
        seeded generators as a single process, so the run is the single-process run with each
        rank embedding a contiguous slice of each batch (:func:`shard_sizes`).
        """
        rank, size = world()
        if size <= 1:
            return
        if self.config.batch_size < size:
            raise ConfigurationError(f"batch_size={self.config.batch_size}; expected at least the {size} torchrun "
                                     "processes (each embeds a slice of every batch)")
        sizes = shard_sizes(self.config.batch_size, size)
        lo = sum(sizes[:rank])
        self._rows = slice(lo, lo + sizes[rank])
        self._ddp = torch.nn.parallel.DistributedDataParallel(_ShardedLogits(model, sizes))

    def _validation_pairs(self, val_data: ValData) -> Pairs | None:
        if val_data is None:
            return None
        return val_data(np.random.default_rng([self.config.seed, 2**31 - 1])) if callable(val_data) else val_data

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self, model, opt, run: _Run, train_data: TrainData, val_pairs: Pairs | None,
              resume_dir: Path | None) -> None:
        from tqdm.auto import tqdm

        cfg = self.config
        run.t0 = time.perf_counter()
        writer = world()[0] == 0  # under torchrun only rank 0 writes, shows progress and calls back
        bar = tqdm(total=cfg.epochs, initial=run.epoch, desc="train", unit="epoch", disable=self.quiet or not writer,
                   leave=False)
        model.train()
        try:
            for epoch in range(run.epoch, cfg.epochs):
                metrics = self._epoch(model, opt, run, epoch, train_data, val_pairs)
                stop = self._track(model, run, epoch, metrics)
                if resume_dir is not None and writer:
                    self._write_resume(resume_dir, model, opt, run, epoch, stop)
                self._progress(bar, metrics)
                if self.callback is not None and writer:
                    self.callback(epoch + 1, metrics)
                if stop:
                    run.result.stopped_early = True
                    break
        finally:
            bar.close()

    def _epoch(self, model, opt, run: _Run, epoch: int, train_data: TrainData, val_pairs: Pairs | None) -> dict:
        """One epoch of optimiser steps, then its metrics."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch])
        pairs = train_data(epoch, rng) if callable(train_data) else train_data
        n = _n(pairs)
        if n < cfg.batch_size:
            raise OceandaError(f"{n} training pairs; expected at least batch_size={cfg.batch_size}")
        per_epoch = n // cfg.batch_size
        perm = self._permutation(n, epoch, rng)
        dt = _dtype(model)
        run_loss, f = 0.0, 1.0
        for b in range(per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            f = self._set_lr(opt, run.step, per_epoch * cfg.epochs)
            run_loss += self._step(model, opt, _take(pairs[0], idx, dt, self.device), _take(pairs[1], idx, dt, self.device))
            run.step += 1
        metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": run_loss / per_epoch, "lr": cfg.lr * f,
                                   "tau": float(model.tau.detach()), "seconds": time.perf_counter() - run.t0}
        if val_pairs is not None:
            ev = evaluate(model, val_pairs, self.loss_fn, cfg.batch_size, cfg.retrieval_max, self.device, shard=True)
            metrics.update({f"val_{k}": v for k, v in ev.items()})
            model.train()
        return metrics

    def _permutation(self, n: int, epoch: int, rng: np.random.Generator) -> np.ndarray:
        """Shuffled row order: blocks of ``block_size`` rows from epoch ``block_start`` on."""
        k = int(self.config.block_size) if epoch >= self.config.block_start else 1
        return _block_permutation(n, k, rng)

    def _set_lr(self, opt, step: int, total: int) -> float:
        """Set the learning rate of ``step`` (of ``total``); return its factor of ``lr``."""
        cfg = self.config
        f = _lr_factor(step, total, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        return f

    def _step(self, model, opt, xs: torch.Tensor, xo: torch.Tensor) -> float:
        """One optimiser step on a (global) batch; return its loss.

        Under torchrun this rank embeds its rows, the logits are of the whole batch on every rank
        (the same loss as one process), and DDP averages the gradients (:class:`_GatherRows`).
        """
        S = model(xs, xo) if self._ddp is None else self._ddp(xs[self._rows], xo[self._rows])
        L = self.loss_fn(S, xs, xo) if self.loss_fn.needs_data else self.loss_fn(S)
        opt.zero_grad(set_to_none=True)
        L.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
        opt.step()
        return float(L.detach())

    def _track(self, model, run: _Run, epoch: int, metrics: dict) -> bool:
        """Record the epoch, keep the best weights; return whether to stop (patience or time budget)."""
        cfg, res = self.config, run.result
        monitor = metrics.get("val_loss", metrics["train_loss"])
        r1, r5 = metrics.get("val_r1_state_from_obs", math.nan), metrics.get("val_r5_state_from_obs", math.nan)
        if cfg.monitor == "retrieval" and math.isfinite(r1) and math.isfinite(r5):
            monitor = -0.5 * (r1 + r5)

        if monitor < res.best_metric - cfg.min_delta:
            res.best_metric, res.best_epoch, run.bad_epochs = float(monitor), epoch + 1, 0
            run.best_state = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
        else:
            run.bad_epochs += 1
        res.history.append(metrics)
        late = _any_rank(cfg.max_seconds is not None and time.perf_counter() - run.t0 >= cfg.max_seconds)
        return (cfg.patience is not None and run.bad_epochs >= cfg.patience) or late

    def _write_resume(self, resume_dir: Path, model, opt, run: _Run, epoch: int, stop: bool) -> None:
        cfg, res = self.config, run.result
        _save_resume(resume_dir, model, opt, run.best_state, {
            "epoch": epoch + 1, "step": run.step, "bad_epochs": run.bad_epochs, "history": res.history,
            "best_epoch": res.best_epoch, "best_metric": res.best_metric, "finished": bool(stop),
            "seed": cfg.seed, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
            "train": cfg.to_dict()})

    @staticmethod
    def _progress(bar, metrics: dict) -> None:
        bar.update(1)
        bar.set_postfix({k: round(v, 4) for k, v in metrics.items() if k in ("train_loss", "val_loss", "val_r5_state_from_obs")})

    # -- after the loop ----------------------------------------------------------------------------

    def _finish(self, model, run: _Run, ckpt: Path | None) -> None:
        """Restore the best weights, record the settings in ``model.config``, write the checkpoint."""
        cfg, res = self.config, run.result
        if run.best_state is not None:
            model.load_state_dict(run.best_state)
        best = res.history[res.best_epoch - 1] if 0 < res.best_epoch <= len(res.history) else {}
        res.health = training_health(best, min(self._candidates, cfg.retrieval_max)) if self._candidates else None
        model.config["health"] = res.health
        model.config["loss"] = self.loss_fn.config()
        model.config["training"] = {"epochs": cfg.epochs, "epochs_run": len(res.history), "batch_size": cfg.batch_size,
                                    "lr": cfg.lr, "weight_decay": cfg.weight_decay, "schedule": cfg.schedule,
                                    "seed": cfg.seed, "best_epoch": res.best_epoch, "stopped_early": res.stopped_early}
        model.config["train"] = cfg.to_dict()
        if ckpt is not None and world()[0] == 0:
            from oceanda.io import write_json

            model.save(ckpt, overwrite=True)
            write_json(res.history, ckpt / "history.json", overwrite=True)


def train(
    model,
    train_data: TrainData,
    val_data: ValData = None,
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
    """Train ``model`` (a ``ContrastiveModel``) in place: ``Trainer(TrainConfig(...)).fit(...)``.

    Parameters
    ----------
    model, train_data, val_data, checkpoint_dir, resume, overwrite : as :meth:`Trainer.fit`
    loss : a loss name or a ready :class:`~oceanda.contrastive.losses.Loss`
    loss_kwargs, epochs, batch_size, lr, weight_decay, schedule, warmup_steps, min_lr_ratio, grad_clip,
    patience, min_delta, seed, retrieval_max, max_seconds, block_size, block_start : the fields of
        :class:`TrainConfig`
    quiet, device, callback : as :class:`Trainer`

    Returns
    -------
    TrainResult
        The per-epoch history, the best epoch and whether the run stopped early.
    """
    loss_fn = loss if isinstance(loss, Loss) else get_loss(loss, **(loss_kwargs or {}))
    named = loss_fn.name in LOSSES  # a custom Loss object is used as given; the config names no loss then
    options = {k: v for k, v in loss_fn.config().items() if k != "name"} if named else {}
    config = TrainConfig(loss=loss_fn.name if named else None, loss_kwargs=options or None, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, schedule=schedule, warmup_steps=warmup_steps,
                         min_lr_ratio=min_lr_ratio, grad_clip=grad_clip, patience=patience, min_delta=min_delta,
                         seed=seed, max_seconds=max_seconds, block_size=block_size, block_start=block_start,
                         retrieval_max=retrieval_max)
    trainer = Trainer(config, loss=loss_fn, device=device, quiet=quiet, callback=callback)
    return trainer.fit(model, train_data, val_data, checkpoint_dir=checkpoint_dir, resume=resume, overwrite=overwrite)
