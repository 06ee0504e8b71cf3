"""Which library windows a local analysis needs: the ones holding ``keep_mass`` of the softmax(s / tau) weight.

Why a module of its own: a local analysis weighs every library window against every analysis window,
and only the windows holding ``keep_mass`` of that weight are read afterwards. How to find them depends on
the library's size, so :class:`WindowIndex` hides the choice behind one ``search``:

- ``'exact'`` (default below :data:`EXACT_BELOW` entries): every score, in float64 by
  :func:`oceanda.contrastive.similarity.numpy_scores` -- the numbers of the loop path, bit for bit.
- ``'flat'``: every score as a blocked float32 matrix product (half the memory traffic of float64); the
  kept mass is exact up to float32 rounding of the scores.
- ``'fused'`` (default above): one blocked float32 torch pass over the library, each block scored,
  exponentiated and reduced while it is in the cache (no float64 copy, no histogram, no sort of the
  library). A pilot of :data:`_PILOT` evenly spaced rows places each query's provisional threshold where
  it drops :data:`_PILOT_SAFETY` of the allowed weight; the pass then sums, exactly, every query's total
  weight, the weight below its threshold and the squared weights (ESS). ``kept_mass`` is therefore
  exact (float32 terms, float64 accumulation across blocks); a query whose threshold drops too much
  (the pilot missed) is redone exactly on its retained logits. The kept set holds the smallest set
  :func:`oceanda.analysis.posterior.truncate` keeps plus the rows between its threshold and the
  provisional one (a boundary band worth at most ``(1 - _PILOT_SAFETY)(1 - keep_mass)`` of the weight
  when the pilot is right). Logits are retained (``[N, Q]`` float32, as ``'flat'``: 256 MB for 64 queries
  x 1e6 windows). From :data:`LOW_RANK_MIN` rows the library also keeps its rows in their leading
  principal directions (:class:`LowRank`, half the bundled model's 64 dimensions); a search whose queries
  lie close enough to them that no logit moves by more than ``logit_tol`` (:data:`LOGIT_TOL` nats, bounded
  per query) scores those instead, tightens the cut by that bound and reports the kept mass as a guaranteed
  lower bound and the bound itself (``logit_error``; output attribute ``search_logit_error_max``).
- ``'ivf'``: an inverted file. The embeddings are cut into k-means cells (faiss when
  installed, else numpy Lloyd steps); each cell keeps a stratified sample of its members (up to
  :data:`CELL_SAMPLE`), whose mean exp(s / tau) times the cell's size estimates the cell's weight without
  bias. Cells are probed by decreasing estimated weight until the probed cells hold ``search_mass`` of the
  estimated total (this is how ``nprobe`` is chosen, per query), the probed ones scored exactly (float32).
  The unprobed weight is the sum of the unprobed cells' estimates, so ``recall`` (probed / total) and
  ``kept_mass`` are estimates; a benchmark measures them against brute force.

The mass criterion (:func:`mass_threshold`) is the truncation of :func:`oceanda.analysis.posterior.truncate`
(the smallest set holding ``keep_mass``) without a sort of the whole library: a histogram of log-weights
finds the boundary bin and only that bin is sorted. A query's candidates are then the scored rows whose
logit is at least its threshold. The fast local engine (:meth:`WindowIndex.search_rows32`) scores every row
in one float32 product and cuts each query's weights by whole bins (:func:`~oceanda.analysis.kernels.mass_cut`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oceanda.analysis.settings import SEARCH_KINDS
from oceanda.contrastive.similarity import canonical_kind

#: Libraries smaller than this are searched exactly (``'auto'``).
EXACT_BELOW = 100_000
#: Members per IVF cell whose scores estimate the cell's weight.
CELL_SAMPLE = 8
#: Default share of the estimated weight the IVF probes (the ``nprobe`` rule).
SEARCH_MASS = 0.995
#: Log-weight histogram bins per unit (the mass criterion's boundary bins are then small).
_BINS_PER_UNIT = 32
_BINS = 64 * _BINS_PER_UNIT  # weights below exp(-64) of the largest share the last bin
#: Rows scored at once (float32 blocks of ``[_BLOCK, n_queries]``).
_BLOCK = 32768
#: Library rows per block of the fused pass (a ``[_FUSED_BLOCK, Q]`` float32 block stays in the cache).
_FUSED_BLOCK = 4096
#: Library rows the fused search's pilot scores first to place the provisional thresholds.
_PILOT = 8192
#: The pilot's threshold drops this share of the allowed weight (the rest absorbs its sampling error; at 0.75
#: 3 of the 192 windows of the 1e6-window benchmark were redone exactly, ~20 ms each; at 0.6 none).
_PILOT_SAFETY = 0.6
#: Largest gap (nats) between a logit bound and the pilot's maximum without a per-block running maximum
#: (weights up to e^30, squares e^60: far from float32 overflow at e^88).
_EXP_HEADROOM = 30.0
#: Largest gap (nats) between a logit bound and the thresholds for weights relative to the thresholds
#: (:meth:`WindowIndex._fused_pass_relative`): squares up to e^76, block sums of 4096 below e^85 < e^88.
_REL_HEADROOM = 38.0
_LOG2E = 1.4426950408889634
KINDS = SEARCH_KINDS
#: Libraries from this size get a low-rank copy of the fused search's rows (:class:`LowRank`).
LOW_RANK_MIN = 100_000
#: Largest logit error (nats) a low-rank search may make: above it, a search scores the full rows.
LOGIT_TOL = 0.03
#: A rank is worth keeping when no row's residual exceeds this share of the largest row norm.
_LOW_RANK_REL = 0.05


def auto_kind(n: int) -> str:
    """The search ``'auto'`` runs for ``n`` library windows: exact (float64, the loop path's numbers) below
    :data:`EXACT_BELOW`, else ``'fused'`` (flat posteriors leave an index nothing to prune; measured in
    benchmarks/bench_local_engine.py)."""
    return "exact" if n < EXACT_BELOW else "fused"


@dataclass
class SearchResult:
    """The candidates of every query: scored rows, their logits and a threshold per query.

    Attributes
    ----------
    kind : the search that ran (``'exact'``, ``'flat'``, ``'ivf'``)
    rows : library entries scored ``[R]`` (None: all, in order)
    logits : ``[R, Q]`` s / tau of the scored rows (-inf where a query did not probe the row)
    threshold : ``[Q]`` the candidates of query q are the rows with ``logits[:, q] >= threshold[q]``
    log_total : ``[Q]`` log of the whole library's summed exp(s / tau) (estimated for ``'ivf'``)
    kept_mass : ``[Q]`` share of the whole library's weight the candidates hold (estimated for ``'ivf'``)
    recall : ``[Q]`` share of the weight in the scored rows (1 for exact searches; estimated for ``'ivf'``)
    ess : ``[Q]`` effective sample size of the weights of the scored rows
    nprobe : ``[Q]`` cells probed per query (``'ivf'``), else None
    """

    kind: str
    rows: np.ndarray | None
    logits: np.ndarray
    threshold: np.ndarray
    log_total: np.ndarray
    kept_mass: np.ndarray
    recall: np.ndarray
    ess: np.ndarray
    nprobe: np.ndarray | None = None
    #: ``[R, Q]`` float64 ``exp(logits - column max)`` when the search computed them (exact): reused, not redone
    exp_logits: np.ndarray | None = None
    #: ``[Q]`` bound on any logit's error (nats) of a low-rank search (:class:`LowRank`); None: float32 rounding only
    logit_error: np.ndarray | None = None

    def candidates(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """Library entries of query ``q``'s candidates and their renormalised weights (float64).

        Parameters
        ----------
        q : the query

        Returns
        -------
        tuple: int64 entries, weights summing to one
        """
        col = self.logits[:, q]
        pos = np.flatnonzero(col >= self.threshold[q])
        w = np.exp(np.asarray(col[pos], dtype=np.float64) - float(col[pos].max()))
        k = pos if self.rows is None else self.rows[pos]
        return k.astype(np.int64), w / w.sum()

    def dense_weights(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Every query's candidates as a row: float64 weights ``[Q, n]`` (zero elsewhere) and the candidate mask.

        The values of :meth:`candidates` (renormalised in one row sum instead of a sum over the candidates:
        the same up to float64 rounding), for all queries at once.

        Parameters
        ----------
        n : library entries (the rows' length)

        Returns
        -------
        tuple: ``[Q, n]`` float64 weights, ``[Q, n]`` bool candidate mask
        """
        L = self.logits
        mask = L >= self.threshold[None]
        if self.exp_logits is not None:
            E = self.exp_logits
        else:
            E = np.exp(np.asarray(L, dtype=np.float64) - np.max(L, axis=0).astype(np.float64)[None])
        W = np.where(mask, E, 0.0).T
        if self.rows is not None:  # scored rows -> library entries
            full, fmask = np.zeros((W.shape[0], n)), np.zeros((W.shape[0], n), bool)
            full[:, self.rows], fmask[:, self.rows] = W, mask.T
            W, mask = full, fmask
        else:
            W, mask = np.ascontiguousarray(W), np.ascontiguousarray(mask.T)
        W /= W.sum(axis=1, keepdims=True)
        return W, mask


def mass_threshold(logits: np.ndarray, keep_mass: float, log_total: np.ndarray | None = None,
                   max_keep: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``logits`` ``[R, Q]``, the logit above which the rows hold ``keep_mass`` of the weight.

    The smallest such set (:func:`oceanda.analysis.posterior.truncate`'s rule), then at most ``max_keep`` rows.
    Columns are handled in chunks bounding the temporary memory to about 64 MB.

    Parameters
    ----------
    logits : ``[R, Q]`` s / tau (-inf: not scored)
    keep_mass : share of the whole weight to keep, in (0, 1]
    log_total : ``[Q]`` log of the whole library's summed weight (None: the scored rows' own)
    max_keep : at most this many candidates per column (None: no cap)

    Returns
    -------
    tuple: thresholds ``[Q]``, kept share of the whole weight ``[Q]``, ESS of the scored rows' weights ``[Q]``
    """
    thr, kept, ess, _, _ = _mass_threshold(logits, keep_mass, log_total, max_keep)
    return thr, kept, ess


def _mass_threshold(logits: np.ndarray, keep_mass: float, log_total: np.ndarray | None = None,
                    max_keep: int | None = None, keep_exp: bool = False) -> tuple:
    """:func:`mass_threshold`, plus the scored rows' log-sum-exp ``[Q]`` and (``keep_exp``, one chunk only)
    ``exp(logits - column max)`` ``[R, Q]`` -- the numbers a search needs next, so they are not recomputed."""
    L = np.asarray(logits)
    R, Q = L.shape
    step = max(1, (1 << 23) // max(R, 1))
    out = [np.empty(Q), np.empty(Q), np.empty(Q), np.empty(Q)]
    E = None
    for a in range(0, Q, step):
        lt = None if log_total is None else np.asarray(log_total)[a:a + step]
        res = _threshold_chunk(np.ascontiguousarray(L[:, a:a + step]), keep_mass, lt, max_keep, full=True)
        for o, v in zip(out, res[:3] + (np.log(res[4]) + res[5],)):
            o[a:a + step] = v
        if keep_exp and step >= Q:
            E = res[3]
    return out[0], out[1], out[2], out[3], E


def _threshold_chunk(L: np.ndarray, keep_mass: float, log_total: np.ndarray | None,
                     max_keep: int | None, full: bool = False) -> tuple:
    """:func:`mass_threshold` of a few columns: log-weight histogram, then a sort of the boundary bin only.

    ``full``: also the weights ``exp(L - m)``, their column sums and the column maxima ``m`` (float64).
    """
    R, Q = L.shape
    m = np.max(L, axis=0)
    E = np.exp(L - m[None].astype(L.dtype))
    z_scored = E.sum(axis=0, dtype=np.float64)
    z_total = z_scored if log_total is None else np.maximum(np.exp(log_total - m), z_scored)
    ess = z_total ** 2 / np.einsum("rq,rq->q", E, E, dtype=np.float64)
    target = keep_mass * z_total
    b = np.minimum((m[None] - L) * _BINS_PER_UNIT, _BINS - 1).astype(np.int64)  # -inf rows: the last bin
    hist = np.bincount((b + np.arange(Q)[None] * _BINS).ravel(), weights=E.ravel(),
                       minlength=Q * _BINS).reshape(Q, _BINS)
    cum = np.cumsum(hist, axis=1)
    bstar = np.argmax(cum >= target[:, None], axis=1)
    reach = cum[:, -1] >= target  # else (keep_mass 1, or an IVF that did not find enough): every scored row
    thr = np.empty(Q, L.dtype)
    if not reach.all():  # unreached: every scored (finite) row
        Lu = L[:, ~reach]
        thr[~reach] = np.where(np.isfinite(Lu), Lu, np.inf).min(axis=0)
    for q in np.flatnonzero(reach):
        rows = np.flatnonzero(b[:, q] == bstar[q])
        e = E[rows, q].astype(np.float64)
        o = np.argsort(-e, kind="stable")
        need = target[q] - (cum[q, bstar[q] - 1] if bstar[q] > 0 else 0.0)
        n = min(int(np.searchsorted(np.cumsum(e[o]), need, side="left")) + 1, rows.size)
        thr[q] = L[rows[o[n - 1]], q]
    thr = _cap(L, thr, max_keep)
    kept = np.einsum("rq,rq->q", E, L >= thr[None], dtype=np.float64) / z_total
    if full:
        return thr, np.minimum(kept, 1.0), ess, E, z_scored, m.astype(np.float64)
    return thr, np.minimum(kept, 1.0), ess


@dataclass
class RowsResult:
    """The float32 search of :meth:`WindowIndex.search_rows32`: every query's candidate weights as a torch row.

    Attributes
    ----------
    weights : ``[Q, N]`` float32 torch tensor proportional to ``exp(logit)`` on the candidates, 0 elsewhere (not normalised)
    total : ``[Q]`` float64 sum of each row of ``weights`` (divide by it to normalise)
    threshold, log_total, kept_mass, ess : as :class:`SearchResult` (float32 terms, float64 sums)
    """

    kind: str
    weights: object
    total: np.ndarray
    threshold: np.ndarray
    log_total: np.ndarray
    kept_mass: np.ndarray
    ess: np.ndarray


def threshold_rows32(L, keep_mass: float, max_keep: int | None = None) -> tuple:
    """The mass criterion on query-major float32 logits ``L`` ``[Q, N]`` (torch, overwritten), all queries at once.

    Why not :func:`mass_threshold`'s rule: its histogram and boundary sort were 40 % of a fast local
    analysis. Weights ``exp(L - max)`` are made and cut per query by :func:`~oceanda.analysis.kernels.exp_mass_cut`: the
    smallest whole log-spaced bins (1.6-3.1 % wide) holding at most ``1 - keep_mass`` are dropped, so every
    query keeps at least ``keep_mass`` (checked in float64) and a superset of the smallest such set.

    Returns
    -------
    tuple: candidate weights ``[Q, N]`` (torch float32, proportional to ``exp(logit)``, 0 elsewhere), their
    sums ``[Q]``, thresholds ``[Q]`` (logits), log of the summed weight ``[Q]``, kept share ``[Q]``, ESS ``[Q]``
    """
    import torch
    import torch.nn.functional as F

    from oceanda.analysis.kernels import exp_mass_cut

    m = L.amax(dim=1).numpy()
    m64 = m.astype(np.float64)
    E = L  # in place: the logits are m + log(E) from here on
    total, z2, zk, count, cut = exp_mass_cut(E.numpy(), m, min(float(keep_mass), 1.0))
    cut = cut.astype(np.float64)
    thr = np.where(cut > 0, np.log(np.maximum(cut, 1e-300)) + m64, -np.inf)
    if max_keep is not None and max_keep < E.shape[1]:
        for q in np.flatnonzero(count > max_keep):
            kth = float(torch.topk(E[q], int(max_keep)).values[-1])
            E[q] = F.threshold(E[q], float(np.nextafter(np.float32(kth), np.float32(0))), 0.0)
            thr[q] = np.log(kth) + m64[q]
            zk[q] = float(E[q].sum(dtype=torch.float64))
    kept = np.minimum(zk / total, 1.0)
    return E, zk, thr, np.log(total) + m64, kept, total ** 2 / z2


def _cap(L: np.ndarray, thr: np.ndarray, max_keep: int | None) -> np.ndarray:
    """Raise the thresholds of columns with more than ``max_keep`` candidates to their ``max_keep``-th logit."""
    if max_keep is None or max_keep >= L.shape[0]:
        return thr
    count = (L >= thr[None]).sum(axis=0)
    for q in np.flatnonzero(count > max_keep):
        thr[q] = max(thr[q], np.partition(L[:, q], L.shape[0] - int(max_keep))[L.shape[0] - int(max_keep)])
    return thr


def query_tau(tau: np.ndarray, Q: int, name: str) -> np.ndarray:
    """``tau`` as ``Q`` positive float64 temperatures, one per query (or window); else a ValueError naming ``name``."""
    t = np.asarray(tau, dtype=np.float64)
    if t.shape != (Q,) or not np.all(t > 0):
        raise ValueError(f"{name}: expected {Q} positive temperatures, got shape {t.shape}")
    return t


def _prepare(z: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 rows for scoring: unit rows for cosine, squared norms for the negative squared distance."""
    x = np.ascontiguousarray(z, dtype=np.float32)
    if kind == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x, (np.einsum("nd,nd->n", x, x) if kind == "neg_sq_distance" else None)


def scores32(x: np.ndarray, sq: np.ndarray | None, zo: np.ndarray, kind: str, tau: float,
             out: np.ndarray | None = None) -> np.ndarray:
    """Logits ``[len(x), Q]`` in float32 blocks (``x`` and ``sq`` from :func:`_prepare`), numpy_scores' formulas.

    Parameters
    ----------
    x : ``[R, ne]`` prepared rows; ``sq`` their squared norms (negative squared distance)
    zo : ``[Q, ne]`` query embeddings
    kind, tau : the similarity and the temperature (a number, or one per query ``[Q]``)
    out : ``[R, Q]`` float32 array to fill (None: a new one)

    Returns
    -------
    ``[R, Q]`` float32 logits
    """
    q = np.asarray(zo, dtype=np.float32)
    if kind == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    qT = np.ascontiguousarray(q.T)
    out = np.empty((len(x), q.shape[0]), np.float32) if out is None else out
    inv = (1.0 / np.asarray(tau, np.float64)).astype(np.float32)  # [] or [Q]: broadcast along the rows
    q_sq = np.einsum("qd,qd->q", q, q)
    for a in range(0, len(x), _BLOCK):
        blk = out[a:a + _BLOCK]
        np.matmul(x[a:a + _BLOCK], qT, out=blk)
        if kind == "neg_sq_distance":
            blk *= np.float32(2.0)  # -(|x|^2 - 2 x.q + |q|^2) / (2 tau)
            blk -= sq[a:a + _BLOCK, None]
            blk -= q_sq[None]
            blk *= np.float32(0.5) * inv
        else:
            blk *= inv
    return out


@dataclass
class LowRank:
    """The fused search's rows in their leading ``r`` principal directions, with a bound on what that drops.

    Why: trained embeddings use few of their dimensions (the bundled model's 64-dimensional library holds
    99.97 % of its second moment in 32), and the scores' product costs in proportion to the rank. Each
    library row is ``x = P a + r_x`` with ``P`` ``[d, r]`` orthonormal and ``|r_x| <= rmax``; a query
    ``q = P b + r_q`` then has ``x . q = a . b + r_x . r_q``, so every logit of the low-rank product
    ``a . b`` is within ``rmax |r_q|`` of the exact one (Cauchy-Schwarz; ``q`` already carries ``1/tau``).
    The extra columns of the negative squared distance (``-|x|^2/2``, ``1``) are kept exactly.

    Attributes
    ----------
    basis : ``[d, r]`` float64 orthonormal directions (the leading eigenvectors of the rows' second moment)
    rmax : largest residual norm of a library row outside them
    rows : ``[N, r + extra]`` float32 torch rows ``[x P, extra columns]``
    """

    basis: np.ndarray
    rmax: float
    rows: object

    def queries(self, qs: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
        """Scaled (augmented) queries ``[Q, d + extra]`` as low-rank queries ``[Q, r + extra]`` and their logit error bounds ``[Q]``."""
        q = qs[:, :d].astype(np.float64)
        b = q @ self.basis
        err = self.rmax * np.linalg.norm(q - b @ self.basis.T, axis=1)
        low = np.concatenate([b.astype(np.float32), qs[:, d:]], axis=1)
        return np.ascontiguousarray(low, dtype=np.float32), err


def low_rank(x: np.ndarray, d: int, block: int = 65536) -> LowRank | None:
    """The smallest rank (a multiple of 8, at most ``d - 16``) whose residuals stay below :data:`_LOW_RANK_REL`
    of the largest row norm, for the first ``d`` columns of ``x`` ``[N, d + extra]``; None when none does.

    Two float64 passes over the rows: the second moment, then the rows' rotated coordinates, which give
    the low-rank rows and every row's residual (its squared tail coordinates) at each rank from the first
    one the eigenvalues allow (whose mean residual is at most the largest one allowed).
    """
    if d < 24 or len(x) == 0:
        return None
    C = np.zeros((d, d))
    for a in range(0, len(x), block):
        b = x[a:a + block, :d].astype(np.float64)
        C += b.T @ b
    lam, V = np.linalg.eigh(C)
    lam, V = np.maximum(lam[::-1], 0.0), np.ascontiguousarray(V[:, ::-1])
    tail = np.cumsum(lam[::-1])[::-1]  # tail[r]: the rows' summed squares outside the leading r directions
    ranks = [r for r in range(8, d - 15, 8) if tail[r] <= _LOW_RANK_REL ** 2 * lam.sum()]
    if not ranks:
        return None
    rows = np.empty((len(x), ranks[0] + x.shape[1] - d), np.float32)
    res2, norm2 = np.zeros(len(ranks)), 0.0
    for a in range(0, len(x), block):
        c = x[a:a + block, :d].astype(np.float64) @ V
        rows[a:a + block, :ranks[0]], rows[a:a + block, ranks[0]:] = c[:, :ranks[0]], x[a:a + block, d:]
        groups = np.add.reduceat(c[:, ranks[0]:] ** 2, np.arange(0, d - ranks[0], 8), axis=1)
        res2 = np.maximum(res2, np.cumsum(groups[:, ::-1], axis=1)[:, ::-1][:, :len(ranks)].max(axis=0))
        norm2 = max(norm2, float(np.einsum("nd,nd->n", c, c).max()))
    ok = np.flatnonzero(np.sqrt(res2) <= _LOW_RANK_REL * np.sqrt(norm2))
    if not len(ok):
        return None
    r = ranks[ok[0]]
    if r != ranks[0]:  # the eigenvalues allowed a rank the largest residual does not: the rows again
        rows = np.concatenate([(x[:, :d].astype(np.float64) @ V[:, :r]).astype(np.float32), x[:, d:]], axis=1)
    # the truncation's bound; float32 rounding of the product is the full rows' (as for 'flat')
    return LowRank(np.ascontiguousarray(V[:, :r]), float(np.sqrt(res2[ok[0]])), _torch_rows(rows))


def _torch_rows(rows: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))


class WindowIndex:
    """Search of library window embeddings ``z_lib`` ``[N, ne]`` for the windows holding ``keep_mass``.

    Parameters
    ----------
    z_lib : ``[N, ne]`` library embeddings
    kind : similarity kind (:func:`~oceanda.contrastive.similarity.canonical_kind`), ``tau`` its temperature
    method : ``'auto'`` (exact below :data:`EXACT_BELOW` entries, else ``'ivf'``), ``'exact'``, ``'flat'``, ``'ivf'``
    nlist : IVF cells (default ``4 sqrt(N)``); ``seed`` their k-means and member samples
    logit_tol : ``'fused'`` from :data:`LOW_RANK_MIN` rows: largest logit error (nats) of a low-rank search
        (:class:`LowRank`; 0: always the full rows)
    workers : threads of the ``'fused'`` pass (None: :func:`oceanda.threads.intra_op_threads`, i.e. the physical
        cores unless ``OCEANDA_NUM_THREADS`` or ``OMP_NUM_THREADS`` say otherwise; dask workers set the latter
        to 1). The numbers do not depend on it.
    """

    def __init__(self, z_lib: np.ndarray, kind: str, tau: float, method: str = "auto", nlist: int | None = None,
                 seed: int = 0, logit_tol: float = LOGIT_TOL, workers: int | None = None):
        from oceanda.settings import check_choice
        from oceanda.threads import intra_op_threads

        check_choice("search", method, KINDS)
        self.kind, self.tau, self.n = canonical_kind(kind), float(tau), int(len(z_lib))
        self.method = auto_kind(self.n) if method == "auto" else method
        self.z = z_lib
        self.x = self.sq = None
        self._buf = None  # the fused search's logits, reused (see _logits_buffer)
        self._z64 = None  # 'exact': the float64 rows numpy_scores prepares, prepared once (see _exact_scores)
        self.logit_tol, self.low = float(logit_tol), None
        self.workers = intra_op_threads() if workers is None else max(1, int(workers))
        if self.method in ("flat", "ivf", "fused"):
            self.x, self.sq = _prepare(z_lib, self.kind)
        if self.method == "fused":
            self._build_fused()
            if self.n >= LOW_RANK_MIN and self.logit_tol > 0:
                self.low = low_rank(self.xt.numpy(), len(z_lib[0]))
        if self.method == "ivf":
            self._build_ivf(nlist or int(np.clip(4 * np.sqrt(self.n), 8, 65536)), seed)

    def search(self, zo: np.ndarray, keep_mass: float, max_keep: int | None = None,
               search_mass: float = SEARCH_MASS, tau: float | np.ndarray | None = None) -> SearchResult:
        """The candidates of queries ``zo`` ``[Q, ne]`` holding ``keep_mass`` of each query's weight.

        Parameters
        ----------
        zo : ``[Q, ne]`` observation-window embeddings
        keep_mass : share of the weight to keep (the mass criterion)
        max_keep : at most this many candidates per query (None: no cap)
        search_mass : ``'ivf'``: estimated share of the weight the probed cells must hold
        tau : the temperature of these queries, a number or one per query ``[Q]`` (None: the index's)

        Returns
        -------
        SearchResult
        """
        zo = np.atleast_2d(np.asarray(zo))
        tau = self._tau(tau, len(zo))
        if self.method == "ivf":
            return self._search_ivf(zo, keep_mass, max_keep, search_mass, tau)
        if self.method == "fused":
            return self._search_fused(zo, keep_mass, max_keep, tau)
        if self.method == "exact":
            L = self._exact_scores(zo, tau)
        else:
            L = scores32(self.x, self.sq, zo, self.kind, tau)
        thr, kept, ess, log_total, E = _mass_threshold(L, keep_mass, max_keep=max_keep, keep_exp=L.dtype == np.float64)
        return SearchResult(self.method, None, L, thr, log_total, kept, np.ones(len(zo)), ess, exp_logits=E)

    def _tau(self, tau: float | np.ndarray | None, Q: int) -> float | np.ndarray:
        """The temperature of ``Q`` queries: the index's, a number, or ``[Q]`` (why per query: local mode's
        windows see different numbers of observations, :func:`~oceanda.analysis.local_mode.window_tau`)."""
        if tau is None:
            return self.tau
        t = np.asarray(tau, dtype=np.float64)
        return float(t) if t.ndim == 0 else query_tau(t, Q, "tau")

    def prepare_rows32(self) -> None:
        """The fused search's augmented float32 rows (``self.xt``, and transposed ``self.xT``) for :meth:`search_rows32`, once;
        ``self.x`` is kept."""
        if getattr(self, "xt", None) is None:
            keep = (self.x, self.sq)
            if self.x is None:
                self.x, self.sq = _prepare(self.z, self.kind)
            self._build_fused()
            self.x, self.sq = keep
        if getattr(self, "xT", None) is None:
            # query-major scores from a row-major [D + 2, N] copy: 0.72 of the time of the transposed view's
            # product ([64, 65] @ [65, 26112], OpenBLAS, AVX-512), for 1/12 of the window table's memory
            self.xT = np.ascontiguousarray(self.xt.numpy().T)

    def search_rows32(self, zo: np.ndarray, keep_mass: float, max_keep: int | None = None,
                      tau: float | np.ndarray | None = None) -> RowsResult:
        """Every score as one float32 product ``[Q, N]`` and :func:`threshold_rows32` (``precision='fast'``).

        Scores and weights are float32 (the loop path's float64 numbers to float32 rounding); the rule is
        the exact search's. Not for ``'ivf'`` (it scores every row). ``tau`` as for :meth:`search`.
        """
        import torch

        self.prepare_rows32()
        zo = np.atleast_2d(np.asarray(zo))
        qs, _ = self._fused_queries(zo, self._tau(tau, len(zo)))
        L = torch.from_numpy(qs @ self.xT)  # [Q, N]
        Wu, zk, thr, log_total, kept, ess = threshold_rows32(L, keep_mass, max_keep)
        return RowsResult("exact32", Wu, zk, thr, log_total, kept, ess)

    def _exact_scores(self, zo: np.ndarray, tau: float | np.ndarray, chunk: int = 65536) -> np.ndarray:
        """:func:`~oceanda.contrastive.similarity.numpy_scores` bit for bit, the library side prepared once.

        Why: normalising (cosine) or squaring (distance) every float64 library row again on every search
        cost as much as the scores' product.
        """
        if self._z64 is None:
            zs = np.asarray(self.z, dtype=np.float64)
            blocks = [zs[a:a + chunk] for a in range(0, len(zs), chunk)]
            if self.kind == "cosine":
                blocks = [b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12) for b in blocks]
            sq = [np.sum(b * b, axis=1) for b in blocks] if self.kind == "neg_sq_distance" else None
            self._z64 = (blocks, sq)
        blocks, sq = self._z64
        zo = np.asarray(zo, dtype=np.float64)
        if self.kind == "cosine":
            zo = zo / np.maximum(np.linalg.norm(zo, axis=1, keepdims=True), 1e-12)
        out = np.empty((self.n, zo.shape[0]), dtype=np.float64)
        zo_sq, zoT = np.sum(zo * zo, axis=1), zo.T
        for i, block in enumerate(blocks):
            dot = block @ zoT
            if self.kind == "neg_sq_distance":
                out[i * chunk:i * chunk + len(block)] = -(sq[i][:, None] - 2 * dot + zo_sq[None, :]) / (2 * tau)
            else:
                np.divide(dot, tau, out=out[i * chunk:i * chunk + len(block)])
        return out

    def _build_fused(self) -> None:
        """The rows as one torch float32 matrix; the negative squared distance as one product of augmented rows.

        ``[x, -|x|^2 / 2, 1] . [q, 1, -|q|^2 / 2] / tau = -|x - q|^2 / (2 tau)``: the row and query terms
        ride in the matrix product instead of two broadcast passes over every block.
        """
        import torch

        x = self.x
        if self.kind == "neg_sq_distance":
            x = np.concatenate([x, -0.5 * self.sq[:, None], np.ones((self.n, 1), np.float32)], axis=1)
            self.x = None  # the augmented copy replaces it
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.xt = torch.from_numpy(x if x.flags.writeable else x.copy())  # torch refuses read-only memory
        self.xmax = float(np.sqrt(np.einsum("nd,nd->n", x, x).max())) if self.kind == "inner" and self.n else 1.0

    def _fused_queries(self, zo: np.ndarray, tau: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Queries scaled by ``1 / tau`` (unit for cosine, augmented for the distance) and an upper bound of their logits."""
        q = np.asarray(zo, dtype=np.float32)
        if self.kind == "cosine":
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        inv = np.broadcast_to((1.0 / np.asarray(tau, np.float64)).astype(np.float32).reshape(-1, 1), (len(q), 1))
        if self.kind == "neg_sq_distance":
            q_sq = np.einsum("qd,qd->q", q, q)
            qs = np.concatenate([q * inv, inv, (-0.5 * inv) * q_sq[:, None]], axis=1)
            return np.ascontiguousarray(qs, dtype=np.float32), np.zeros(len(q))
        bound = self.xmax * np.linalg.norm(q.astype(np.float64), axis=1) / tau
        return np.ascontiguousarray(q * inv), bound

    def _pilot(self, rows, qT, bound: np.ndarray, keep_mass: float) -> tuple[np.ndarray, np.ndarray, bool]:
        """Reference logits ``[Q]``, provisional float32 thresholds ``[Q]`` and whether the reference bounds every block.

        Evenly spaced rows estimate each query's weight below every logit (a ratio estimate: the pilot's own
        total is the denominator); the threshold drops at most :data:`_PILOT_SAFETY` of ``1 - keep_mass``
        there, by whole log-spaced bins (:func:`~oceanda.analysis.kernels.mass_cut`: no sort of the pilot).
        """
        import torch

        from oceanda.analysis.kernels import mass_cut

        step = max(1, self.n // _PILOT)
        Ls = np.ascontiguousarray(torch.mm(rows[step // 2::step], qT).numpy().T)  # [Q, S] float32
        ref32 = Ls.max(axis=1)
        ref = ref32.astype(np.float64)
        bounded = bool(np.all(bound - ref < _EXP_HEADROOM))
        if keep_mass >= 1.0:
            return ref, np.full(len(ref), -np.inf, np.float32), bounded
        cut = mass_cut(np.exp(Ls - ref32[:, None]), 1.0 - _PILOT_SAFETY * (1.0 - keep_mass))[4]
        with np.errstate(divide="ignore"):
            thr = np.log(cut) + ref32
        return ref, np.where(cut > 0, thr, Ls.min(axis=1)).astype(np.float32), bounded

    def _search_fused(self, zo: np.ndarray, keep_mass: float, max_keep: int | None,
                      tau: float | np.ndarray) -> SearchResult:
        """One blocked float32 pass (:meth:`_fused_pass`), exact kept mass; misses and caps redone per query.

        With a low-rank copy (:class:`LowRank`) whose error bound ``delta`` stays within ``logit_tol`` for
        every query, the pass scores the low-rank rows, the cut keeps ``1 - (1 - keep_mass) e^(-2 delta)`` of
        the approximate weights, and ``kept_mass`` is the guaranteed ``1 - (1 - kept) e^(2 delta)``: weights off
        by at most ``e^(+-delta)`` each change a dropped share by at most ``e^(2 delta)``.
        """
        import torch

        qs, bound = self._fused_queries(zo, tau)
        rows, err, keep = self.xt, None, keep_mass
        if self.low is not None:
            ql, e = self.low.queries(qs, self.low.basis.shape[0])
            if float(e.max()) <= self.logit_tol:
                qs, rows, err, bound = ql, self.low.rows, e, bound + e
                keep = 1.0 - (1.0 - keep_mass) * float(np.exp(-2.0 * e.max()))
        Q = len(qs)
        qT = torch.from_numpy(np.ascontiguousarray(qs.T))
        ref, thr32, bounded = self._pilot(rows, qT, bound, keep)
        L = self._logits_buffer(Q)  # [N, Q] like 'flat' (a query-major copy costs 5x the store)
        if bounded and np.all(np.isfinite(thr32)) and np.all(bound - thr32 < _REL_HEADROOM):
            ref, z, z2, below = self._fused_pass_relative(rows, qT, thr32, ref, torch.from_numpy(L))
        else:
            ref, z, z2, below = self._fused_pass(rows, qT, thr32, ref, bounded, torch.from_numpy(L))
        log_total = np.log(z) + ref
        thr = thr32.astype(np.float64)
        kept = np.minimum(1.0 - below / z, 1.0)
        redo = kept < keep
        if max_keep is not None:
            redo |= (L >= thr32[None]).sum(axis=0) > max_keep
        for q in np.flatnonzero(redo):  # the pilot missed (or a cap): the exact rule on this query's logits
            t, k, _ = _threshold_chunk(L[:, q:q + 1].copy(), keep, log_total[q:q + 1], max_keep)
            thr[q], kept[q] = t[0], k[0]
        if err is not None:
            kept = 1.0 - (1.0 - kept) * np.exp(2.0 * err)
        return SearchResult("fused", None, L, thr, log_total, kept, np.ones(Q), z * z / z2, logit_error=err)

    def _logits_buffer(self, Q: int) -> np.ndarray:
        """The ``[N, Q]`` float32 logits of a search: the previous search's array when nothing else holds it.

        Why: the pages of a fresh 256 MB array are mapped on first write, which costs as much as the
        scores' arithmetic; an array no result (or view of one) refers to any more is safe to overwrite.
        """
        import sys

        from oceanda.io import check_allocation

        buf = self._buf
        if buf is not None and buf.shape == (self.n, Q) and sys.getrefcount(buf) <= 3:  # self._buf, buf, the call
            return buf
        self._buf = None
        check_allocation(4.0 * self.n * Q, f"search of {Q} windows in {self.n} library windows (float32 logits)")
        self._buf = np.empty((self.n, Q), np.float32)
        return self._buf

    def _fused_pass(self, rows, qT, thr32: np.ndarray, ref: np.ndarray, bounded: bool, out) -> tuple:
        """Score every block of rows into ``out`` ``[N, Q]``; sum its weights, squared weights and weights below ``thr32``.

        The general pass (:meth:`_fused_pass_relative` where the logits are bounded near the thresholds).
        Weights are ``exp(logit - ref)`` in float32 (``exp2`` of a base-2 logit), block sums accumulated in float64. Without a bound on the logits (``bounded`` False) a running
        maximum rescales the sums (online log-sum-exp).

        Returns
        -------
        tuple: reference ``[Q]`` the sums are relative to, total, total of squares, total below the thresholds
        """
        import torch

        Q = qT.shape[1]
        eb_, hb_ = torch.empty(_FUSED_BLOCK, Q), torch.empty(_FUSED_BLOCK, Q)
        t = torch.from_numpy(thr32)[None]
        neg = torch.from_numpy((-ref * _LOG2E).astype(np.float32))[None]
        sums = np.zeros((3, Q))
        for lb in self._scored_blocks(rows, qT, out):
            eb, hb = eb_[:len(lb)], hb_[:len(lb)]
            if not bounded:
                m = lb.amax(dim=0).numpy().astype(np.float64)
                if np.any(m > ref + _EXP_HEADROOM):
                    new = np.maximum(ref, m)
                    sums *= np.exp(np.array([1.0, 2.0, 1.0])[:, None] * (ref - new)[None])
                    ref, neg = new, torch.from_numpy((-new * _LOG2E).astype(np.float32))[None]
            torch.add(neg, lb, alpha=_LOG2E, out=eb).exp2_()
            s1, s2 = eb.sum(dim=0), torch.mul(eb, eb, out=hb).sum(dim=0)
            torch.sub(t, lb, out=hb).relu_().sign_().mul_(eb)  # the weights of rows below the threshold
            sums += torch.stack([s1, s2, hb.sum(dim=0)]).numpy().astype(np.float64)
        return ref, sums[0], sums[1], sums[2]

    def _scored_blocks(self, rows, qT, out, starts=None):
        """Score every block of :data:`_FUSED_BLOCK` of ``rows`` (``self.xt`` or the low-rank rows) into ``out``
        ``[N, Q]`` (or only the blocks starting at ``starts``); yield each block."""
        import torch

        for a in range(0, self.n, _FUSED_BLOCK) if starts is None else starts:
            lb = out[a:a + _FUSED_BLOCK]  # rows a:a+n of out are contiguous
            torch.mm(rows[a:a + len(lb)], qT, out=lb)
            yield lb

    def _fused_pass_relative(self, rows, qT, thr32: np.ndarray, ref: np.ndarray, out) -> tuple:
        """:meth:`_fused_pass` with weights relative to each query's threshold: ``exp(logit - thr)``, on
        :attr:`workers` threads.

        Why: each block is then reduced by one compiled pass (:func:`~oceanda.analysis.kernels.relative_sums`:
        total, squares and the weight below the threshold, with the block in the cache) instead of seven
        torch sweeps (a fifth of the time). Needs the logits bounded within :data:`_REL_HEADROOM` nats of
        the thresholds (block sums of squares stay below e^85). Every block is scored by a one-thread
        product and summed into its own row of partial sums, added up in block order afterwards, so the
        numbers do not depend on how many threads ran the blocks.
        """
        from oceanda.analysis.kernels import relative_sums

        starts = np.arange(0, self.n, _FUSED_BLOCK)
        part = np.zeros((len(starts), 3, qT.shape[1]))
        t = np.ascontiguousarray(thr32, dtype=np.float32)

        def blocks(js):
            for j, lb in zip(js, self._scored_blocks(rows, qT, out, starts[js])):
                relative_sums(lb.numpy(), t, part[j])

        _run_blocks(blocks, len(starts), self.workers)
        sums = part.sum(axis=0)
        f = np.exp(thr32.astype(np.float64) - ref)  # back to weights relative to exp(ref)
        return ref, sums[0] * f, sums[1] * f * f, sums[2] * f

    def _build_ivf(self, nlist: int, seed: int) -> None:
        """k-means cells, the rows sorted by cell, and a stratified sample of every cell."""
        nlist = int(min(nlist, self.n))
        rng = np.random.default_rng(seed)
        train = self.x[rng.choice(self.n, min(self.n, 64 * nlist), replace=False)]
        cent = _kmeans(train, nlist, seed)
        cell = _assign(self.x, cent)
        order = np.argsort(cell, kind="stable")
        self.order, self.cell = order, cell[order]
        self.xs = np.ascontiguousarray(self.x[order])
        self.sqs = None if self.sq is None else self.sq[order]
        self.offsets = np.searchsorted(self.cell, np.arange(nlist + 1))
        self.sizes = np.diff(self.offsets)
        pick = [a + rng.choice(n, min(n, CELL_SAMPLE), replace=False) for a, n in zip(self.offsets[:-1], self.sizes)]
        self.sample = np.sort(np.concatenate(pick)) if pick else np.zeros(0, np.int64)
        self.sample_cell = self.cell[self.sample]
        self.nlist = nlist

    def _cell_estimates(self, zo: np.ndarray, tau: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Estimated weight ``[nlist, Q]`` of every cell (relative to ``exp(ref)``) and the reference ``[Q]``."""
        sq = None if self.sqs is None else self.sqs[self.sample]
        Ls = scores32(self.xs[self.sample], sq, zo, self.kind, tau).astype(np.float64)
        ref = Ls.max(axis=0)
        e = np.exp(Ls - ref[None])
        starts = np.searchsorted(self.sample_cell, np.arange(self.nlist))
        sums = np.add.reduceat(e, starts, axis=0)
        counts = np.diff(np.append(starts, len(self.sample)))[:, None]
        return sums / np.maximum(counts, 1) * self.sizes[:, None], ref

    def _search_ivf(self, zo: np.ndarray, keep_mass: float, max_keep: int | None, search_mass: float,
                    tau: float | np.ndarray) -> SearchResult:
        """Probe cells by decreasing estimated weight until ``search_mass``; score the union of probed cells."""
        est, ref = self._cell_estimates(zo, tau)
        order = np.argsort(-est, axis=0, kind="stable")
        cum = np.cumsum(np.take_along_axis(est, order, axis=0), axis=0)
        nprobe = np.minimum((cum < search_mass * cum[-1][None]).sum(axis=0) + 1, self.nlist)
        probed = np.zeros((self.nlist, len(zo)), bool)
        for q in range(len(zo)):
            probed[order[:nprobe[q], q], q] = True
        cells = np.flatnonzero(probed.any(axis=1))
        rows = np.concatenate([np.arange(self.offsets[c], self.offsets[c + 1]) for c in cells])
        sq = None if self.sqs is None else self.sqs[rows]
        L = scores32(self.xs[rows], sq, zo, self.kind, tau)
        L[~probed[self.cell[rows]]] = -np.inf
        m = L.max(axis=0).astype(np.float64)
        z_probed = np.exp(L - m[None].astype(np.float32)).sum(axis=0, dtype=np.float64)
        z_unprobed = (est * ~probed).sum(axis=0) * np.exp(ref - m)
        log_total = np.log(z_probed + z_unprobed) + m
        thr, kept, ess = mass_threshold(L, keep_mass, log_total, max_keep)
        return SearchResult("ivf", self.order[rows], L, thr, log_total, kept, z_probed / (z_probed + z_unprobed),
                            ess, nprobe)


#: Blocks of the fused pass one thread takes at a time (~4 ms of work: the hand-over costs ~0.05 ms).
_BLOCKS_PER_TASK = 8


def _run_blocks(fn, n_blocks: int, workers: int) -> None:
    """``fn(block numbers)`` over ``range(n_blocks)`` in runs of :data:`_BLOCKS_PER_TASK`, on ``workers`` threads.

    Why threads: the block products and :func:`~oceanda.analysis.kernels.relative_sums` release the GIL, so
    a 1e6-window search runs on every core of a laptop; each product runs on one torch thread
    (:func:`oceanda.threads.one_torch_thread`), so its digits are those of a one-thread search.
    """
    if workers <= 1 or n_blocks <= _BLOCKS_PER_TASK:
        fn(np.arange(n_blocks))
        return
    from concurrent.futures import ThreadPoolExecutor

    from oceanda.threads import one_torch_thread

    runs = [np.arange(a, min(a + _BLOCKS_PER_TASK, n_blocks)) for a in range(0, n_blocks, _BLOCKS_PER_TASK)]
    with one_torch_thread(), ThreadPoolExecutor(min(workers, len(runs)), thread_name_prefix="oceanda-search") as ex:
        for f in [ex.submit(fn, js) for js in runs]:
            f.result()


def _kmeans(x: np.ndarray, k: int, seed: int, iters: int = 12) -> np.ndarray:
    """``k`` centroids of ``x`` (faiss k-means when installed, else numpy Lloyd steps)."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is optional
        faiss = None
    if faiss is not None:
        km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, verbose=False, max_points_per_centroid=256)
        km.train(np.ascontiguousarray(x, dtype=np.float32))
        return km.centroids
    rng = np.random.default_rng(seed)
    c = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        a = _assign(x, c)
        for j in range(k):
            if np.any(a == j):
                c[j] = x[a == j].mean(axis=0)
    return c


def _assign(x: np.ndarray, cent: np.ndarray) -> np.ndarray:
    """Nearest centroid (squared distance) of every row, in blocks."""
    csq = np.einsum("kd,kd->k", cent, cent)
    out = np.empty(len(x), np.int64)
    for a in range(0, len(x), _BLOCK):
        out[a:a + _BLOCK] = np.argmin(csq[None] - 2 * x[a:a + _BLOCK] @ cent.T, axis=1)
    return out
