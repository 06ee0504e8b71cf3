"""Compiled row loops of the fast local engine (``precision='fast'``): the mass cut and the copula's picks.

Why compiled (numba): each is a histogram of every candidate weight of every analysis window (``[P, N]``,
1.7 M entries on the bundled sample) followed by a little work in a few bins. As array operations they
took eight to ten sweeps of the rows and 40 % of a fast analysis; a loop per row takes two, in cache.
Everything here is single-threaded and deterministic, so a result does not depend on the thread count
(dask workers, notebooks). Compiled on first use and cached on disk (numba's ``cache=True``).
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

#: Bins per octave of weight in :func:`mass_cut`'s histogram: a float32's exponent and top mantissa bits
#: (edges 1.6-3.1 % apart).
CUT_BINS_PER_OCTAVE = 32
_SHIFT = 24 - CUT_BINS_PER_OCTAVE.bit_length()  # float32 bits >> _SHIFT: its bin
_NBINS = 1 << 13  # every positive float32
#: The float32 bin sums may be off by up to n x 6e-8 (1.6e-3 of a sum of 26112 weights): the cut allows a
#: little less than ``1 - keep_mass`` to be dropped, and the kept sum is checked in float64 anyway.
_MARGIN = 4e-3
#: 2^f on [-1/2, 1/2] (minimax-like least squares fit of the relative error at Chebyshev nodes, highest first):
#: relative error below 8e-8 there, so float32 rounding of the argument (4e-6 at 87 nats) dominates.
_EXP2_COEF = (1.3266970e-3, 9.6754597e-3, 5.5507426e-2, 2.4022122e-1, 6.9314695e-1, 1.0000001)
#: Below this many nats a relative weight is taken as e^-87 (about 1.6e-38, the smallest normal float32 region):
#: the float32 exponent trick stays in range, and such weights add nothing a float64 sum would see.
_EXP_FLOOR = -87.0


@njit(cache=True, nogil=True, fastmath=True)
def _sums(row):
    t, s2 = 0.0, 0.0
    for k in range(row.shape[0]):
        e = np.float64(row[k])
        t += e
        s2 += e * e
    return t, s2


@njit(cache=True, nogil=True, fastmath=True)
def _kept(row, bits, edge):
    kept, n = 0.0, 0
    for k in range(row.shape[0]):
        if bits[k] >= edge:
            kept += row[k]
            n += 1
    return kept, n


@njit(cache=True, nogil=True)
def _cut_row(row, keep_mass, hist):
    """One row of :func:`mass_cut`; returns (total, sum of squares, kept sum, kept count, edge bits)."""
    bits = row.view(np.int32)
    t, s2 = _sums(row)
    hist[:] = 0.0
    for k in range(row.shape[0]):  # weights are >= 0: their bits order them, and >> _SHIFT bins them by log
        hist[bits[k] >> _SHIFT] += row[k]
    allow = (1.0 - keep_mass) * t * (1.0 - _MARGIN)
    c, b = 0.0, 0
    while b < _NBINS - 1 and c + hist[b] <= allow:  # whole bins from the smallest while they fit the allowance
        c += hist[b]
        b += 1
    while True:
        edge = np.int32(b << _SHIFT)
        kept, n = _kept(row, bits, edge)
        if kept >= keep_mass * t or b == 0:
            break
        b -= 1  # never seen: the float32 bin sums rounded past the margin
    for k in range(row.shape[0]):
        if bits[k] < edge:
            row[k] = 0.0
    return t, s2, kept, n, edge


@njit(cache=True, nogil=True)
def mass_cut(E, keep_mass):
    """Per row of weights ``E`` ``[Q, N]`` (float32, >= 0; zeroed in place below the cut): drop the smallest
    whole log-spaced bins holding at most ``1 - keep_mass`` of the row's weight.

    So every row keeps at least ``keep_mass`` (checked in float64) and a superset of the smallest such set
    (the boundary bin is kept whole). Returns the totals, sums of squares, kept sums (float64), kept counts
    and cuts (float32; entries ``>= cut`` are kept, 0: all).
    """
    return _cut_rows(E, None, keep_mass)


@njit(cache=True, nogil=True)
def _cut_rows(E, m, keep_mass):
    """:func:`mass_cut`'s rows; with shifts ``m`` ``[Q]`` (not None) each row is first made ``exp(row - m)``."""
    Q = E.shape[0]
    total, z2, zk = np.empty(Q), np.empty(Q), np.empty(Q)
    count = np.empty(Q, np.int64)
    edges = np.empty(Q, np.int32)
    hist = np.empty(_NBINS, np.float32)
    sh = np.empty(E.shape[1] if m is not None else 0, np.int32)
    for q in range(Q):
        if m is not None:  # resolved when compiled: mass_cut's specialisation has no exp
            _exp_row(E[q], m[q], sh)
        total[q], z2[q], zk[q], count[q], edges[q] = _cut_row(E[q], keep_mass, hist)
    return total, z2, zk, count, edges.view(np.float32)


@njit(inline="always", fastmath=True)
def _exp_split(d):
    """``e^d`` (float32 ``d <= 0``) as ``2^f`` and the exponent bits of ``2^k`` (``k << 23``), to be added to the
    float's bits in a separate loop; ``d`` below :data:`_EXP_FLOOR` counts as the floor."""
    c0, c1, c2, c3, c4, c5 = _EXP2_COEF
    y = max(d, np.float32(_EXP_FLOOR)) * np.float32(1.4426950408889634)
    k = np.floor(y + np.float32(0.5))
    f = y - k
    p = np.float32(c0) * f + np.float32(c1)
    p = p * f + np.float32(c2)
    p = p * f + np.float32(c3)
    p = p * f + np.float32(c4)
    return p * f + np.float32(c5), np.int32(k) << 23


@njit(cache=True, nogil=True, fastmath=True)
def _exp_row(row, m, sh):
    """``row <- exp(row - m)`` in place (float32; relative error ~1e-7 per nat below ``m``, see :func:`relative_sums`)."""
    for k in range(row.shape[0]):
        row[k], sh[k] = _exp_split(row[k] - m)
    bits = row.view(np.int32)
    for k in range(row.shape[0]):  # times 2^k: a separate loop, or the float and int views keep it scalar
        bits[k] += sh[k]


@njit(cache=True, nogil=True)
def exp_mass_cut(L, m, keep_mass):
    """:func:`mass_cut` of the weights ``exp(L - m)`` of logits ``L`` ``[Q, N]`` (float32, overwritten by the
    cut weights) with per-row shifts ``m`` ``[Q]`` (float32, the rows' maxima).

    Why fused: torch's ``exp_`` of every logit was as costly as the whole cut; the vectorised polynomial of
    :func:`relative_sums` takes a fifth of it, on the row while it is in cache.
    """
    return _cut_rows(L, m, keep_mass)


@njit(cache=True, nogil=True)
def _quantile_bins(hist, cum, q, slot):
    """The bin of each quantile (first whose cumulative share exceeds it, at most the last holding weight);
    ``slot[bin]`` numbers the distinct ones. Returns (bins, their count, the total)."""
    total, last = 0.0, 0
    for b in range(hist.shape[0]):
        if hist[b] > 0:
            last = b
        total += hist[b]
        cum[b] = total
    qb = np.empty(q.shape[0], np.int64)
    slot[:] = -1
    G = 0
    for m in range(q.shape[0]):
        lo, hi = 0, hist.shape[0]
        while lo < hi:  # searchsorted(cum / total, q, 'right')
            mid = (lo + hi) // 2
            if cum[mid] / total <= q[m]:
                lo = mid + 1
            else:
                hi = mid
        qb[m] = min(lo, last)
        if slot[qb[m]] < 0:
            slot[qb[m]] = G
            G += 1
    return qb, G, total


@njit(cache=True, nogil=True, fastmath=True)
def _bins_of(x, bins, ib):
    """Each entry's bin (``int(x)`` within ``[0, bins)``), vectorised: computed once, read by the histogram and the members."""
    for k in range(x.shape[0]):
        ib[k] = np.int32(min(max(x[k], np.float32(0.0)), np.float32(bins - 1)))  # clamped first: no overflow


@njit(cache=True, nogil=True)
def _bin_members(x, ib, w, slot, G, buf):
    """The weighted entries of the slotted bins, grouped by bin, each group by position then entry order.
    Returns (entries, group starts ``[G + 1]``)."""
    starts = np.zeros(G + 1, np.int64)
    cnt = 0
    for k in range(x.shape[0]):
        g = slot[ib[k]]
        if g >= 0 and w[k] > 0:
            buf[cnt] = k
            cnt += 1
            starts[g + 1] += 1
    for g in range(G):
        starts[g + 1] += starts[g]
    order = np.empty(cnt, np.int64)
    fill = starts[:G].copy()
    for i in range(cnt):
        g = slot[ib[buf[i]]]
        order[fill[g]] = buf[i]
        fill[g] += 1
    for g in range(G):  # a stable insertion sort per bin (a few dozen entries)
        for i in range(starts[g] + 1, starts[g + 1]):
            k = order[i]
            j = i - 1
            while j >= starts[g] and x[order[j]] > x[k]:
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = k
    return order, starts


@njit(cache=True, nogil=True)
def _picks_row(x, ib, w, q, hist, cum, slot, buf, out):
    hist[:] = 0.0
    for k in range(x.shape[0]):  # zero weights add nothing: no branch
        hist[ib[k]] += w[k]
    qb, G, total = _quantile_bins(hist, cum, q, slot)
    order, starts = _bin_members(x, ib, w, slot, G, buf)
    for m in range(q.shape[0]):
        g = slot[qb[m]]
        target = q[m] * total - (cum[qb[m] - 1] if qb[m] > 0 else 0.0)
        cs, pick = 0.0, order[starts[g + 1] - 1]
        for i in range(starts[g], starts[g + 1]):
            cs += w[order[i]]
            if cs > target:
                pick = order[i]
                break
        out[m] = pick


@njit(cache=True, nogil=True)
def ranked_picks(x, w, q, bins):
    """Per row of positions ``x`` ``[P, n]`` (float32 in ``[0, bins)``) and weights ``w`` (float32, >= 0),
    the entries at the weighted quantiles ``q`` ``[P, M]`` of the row ranked by position (ties: entry order).

    A weighted histogram finds each quantile's bin; only those bins' entries are sorted. Returns int64
    column indices ``[P, M]``.
    """
    P, n = x.shape
    out = np.empty((P, q.shape[1]), np.int64)
    hist = np.empty(bins, np.float32)
    cum = np.empty(bins, np.float64)
    slot = np.empty(bins, np.int64)
    buf = np.empty(n, np.int64)
    ib = np.empty(n, np.int32)
    for p in range(P):
        _bins_of(x[p], bins, ib)
        _picks_row(x[p], ib, w[p], q[p], hist, cum, slot, buf, out[p])
    return out


@njit(cache=True, nogil=True)
def ranked_picks_affine(coef, rows, w, q, bins):
    """:func:`ranked_picks` on positions ``coef @ rows`` (``[P, K]`` and ``[K, n]`` float32), one row at a time.

    Why: the ``[P, n]`` positions never exist (a window's row is made in cache, summed in the order
    ``k = 0..K-1`` in float32, as ``sum(coef[:, k:k+1] * rows[k])`` in numpy).
    """
    P, K = coef.shape
    n = rows.shape[1]
    out = np.empty((P, q.shape[1]), np.int64)
    hist = np.empty(bins, np.float32)
    cum = np.empty(bins, np.float64)
    slot = np.empty(bins, np.int64)
    buf = np.empty(n, np.int64)
    x = np.empty(n, np.float32)
    ib = np.empty(n, np.int32)
    for p in range(P):
        a = coef[p, 0]
        for i in range(n):
            x[i] = a * rows[0, i]
        for k in range(1, K):
            a = coef[p, k]
            for i in range(n):
                x[i] += a * rows[k, i]
        _bins_of(x, bins, ib)
        _picks_row(x, ib, w[p], q[p], hist, cum, slot, buf, out[p])
    return out


@njit(cache=True, nogil=True)
def blend_scatter(win, pix, wt, npix):
    """``out[l, pix[p, j]] += wt[p, j] * win[p, l, j]`` in float64, windows ``p`` in order (``pix < 0``: off the grid).

    Why: the sparse blend operator's product, summed in the same order (each pixel's windows ascending),
    without its float64 copy of every member window.
    """
    P, L, S = win.shape
    out = np.zeros((L, npix))
    for p in range(P):
        for l in range(L):
            for j in range(S):
                k = pix[p, j]
                if k >= 0:
                    out[l, k] += wt[p, j] * np.float64(win[p, l, j])
    return out



@njit(cache=True, nogil=True, fastmath=True)
def relative_sums(L, t, sums):
    """Add to ``sums`` ``[3, Q]`` (float64) the weights ``exp(L - t)`` of the block ``L`` ``[n, Q]`` (float32)
    per query: their sum, their sum of squares, and the sum of those of rows below the threshold (``L < t``).

    Why one kernel: the fused search scored each block and then swept it seven times (subtract, exp, two
    sums, a square, a threshold, a sum); here each row is read once. Why exp by hand: a scalar ``exp``
    call does not vectorise, while 2^k times a polynomial in the rest (a floor, arithmetic and an add to
    the exponent bits) does. The polynomial and the exponent add are separate loops over the row: with
    both in one loop the float and the integer view of the same array kept it from vectorising (half the
    speed). Weights are float32 (relative error below 4e-6; differences below :data:`_EXP_FLOOR` nats
    count as e^-87), summed in float32 over 256 rows and then in float64.
    """
    n, Q = L.shape
    e = np.empty(Q, np.float32)
    bits = e.view(np.int32)
    shift = np.empty(Q, np.int32)
    a1, a2, a3 = np.zeros(Q, np.float32), np.zeros(Q, np.float32), np.zeros(Q, np.float32)
    for i in range(n):
        row = L[i]
        for q in range(Q):
            e[q], shift[q] = _exp_split(row[q] - t[q])
        for q in range(Q):  # times 2^k, and the sums
            bits[q] += shift[q]
            v = e[q]
            a1[q] += v
            a2[q] += v * v
            a3[q] += v if row[q] < t[q] else np.float32(0.0)
        if (i & 255) == 255 or i == n - 1:
            for q in range(Q):
                sums[0, q] += a1[q]
                sums[1, q] += a2[q]
                sums[2, q] += a3[q]
                a1[q], a2[q], a3[q] = 0.0, 0.0, 0.0


_WARM: list = []
_WARM_LOCK = threading.Lock()


def warm() -> threading.Thread:
    """Compile (or load from numba's disk cache) every kernel, in a daemon thread, once per process.

    Why: compiling them takes ~7 s on a fresh install (0.8 s to load once cached); a sampler starts this
    before it loads and embeds its library, so the compile overlaps that work instead of the first analysis.
    The arguments have the types the engine passes, so the engine finds these specialisations.
    """
    with _WARM_LOCK:
        if not _WARM:
            _WARM.append(threading.Thread(target=_warm_all, name="oceanda-kernels", daemon=True))
            _WARM[0].start()
    return _WARM[0]


def _warm_all() -> None:
    try:
        w = np.ones((2, 8), np.float32)
        q = np.full((2, 2), 0.5)
        mass_cut(w.copy(), 0.999)
        exp_mass_cut(w.copy(), np.ones(2, np.float32), 0.999)
        ranked_picks(w * 3, w, q, 16)
        ranked_picks_affine(np.ones((2, 2), np.float32), np.ones((2, 8), np.float32), w, q, 16)
        blend_scatter(np.ones((2, 3, 4), np.float32), np.zeros((2, 4), np.int64), np.ones((2, 4)), 4)
        relative_sums(w, np.zeros(8, np.float32), np.zeros((3, 8)))
    except Exception:  # noqa: BLE001 -- the engine compiles on first use anyway; this is only a head start
        pass
