"""Window geometry for local analyses: positions, extraction (periodic or not) and blending.

A local analysis works on square state windows of ``size`` pixels placed every ``stride`` pixels;
each window sees the observations in a larger window with ``halo`` extra pixels on every side.
Overlapping window analyses are blended with a partition-of-unity taper, as LETKF blends local
analyses: with ``stride = size / 2`` the taper sin^2 sums to exactly one at every pixel, and in
general the blend divides by the summed taper.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from oceanda.errors import DataValidationError


@dataclass(frozen=True)
class WindowSpec:
    """The localisation parameters: state window size, analysis stride and observation halo (pixels)."""

    size: int = 16
    stride: int = 8
    halo: int = 8
    periodic: bool = True

    @property
    def obs_size(self) -> int:
        return self.size + 2 * self.halo

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WindowSpec:
        """A spec from a dict (e.g. a checkpoint's config); unknown keys are ignored.

        Parameters
        ----------
        d : mapping with any of ``size``, ``stride``, ``halo``, ``periodic``

        Returns
        -------
        WindowSpec
        """
        return cls(**{k: d[k] for k in ("size", "stride", "halo", "periodic") if k in d})

    def check(self, ny: int, nx: int, what: str = "grid") -> None:
        """Raise if the spec is invalid or does not fit an ``ny x nx`` grid.

        Parameters
        ----------
        ny, nx : grid size
        what : name of the grid in the error message

        Raises
        ------
        DataValidationError
        """
        if self.size < 1 or self.stride < 1 or self.halo < 0:
            raise DataValidationError(f"window size {self.size}, stride {self.stride}, halo {self.halo}; expected positive sizes")
        if self.periodic and self.size > min(ny, nx):
            raise DataValidationError(f"{what}: window size {self.size} exceeds the periodic grid {ny} x {nx}; "
                                      "expected a smaller window")
        if self.stride > self.size:
            raise DataValidationError(f"window stride {self.stride} > size {self.size} leaves gaps; expected stride <= size")


def starts(n: int, size: int, stride: int, periodic: bool) -> np.ndarray:
    """Window start indices along one axis covering all ``n`` pixels.

    Parameters
    ----------
    n : pixels along the axis
    size : window size
    stride : spacing of the starts
    periodic : wrap around (else the last window ends at ``n``; one window at 0, running past the
        edge, when ``n < size``: the cells beyond are NaN, as outside any non-periodic grid)

    Returns
    -------
    int64 start indices
    """
    if periodic:
        return np.arange(0, n, stride, dtype=np.int64)
    if n <= size:
        return np.zeros(1, dtype=np.int64)
    s = list(range(0, max(n - size, 0) + 1, stride))
    if s[-1] != n - size:
        s.append(n - size)
    return np.asarray(s, dtype=np.int64)


def positions(ny: int, nx: int, spec: WindowSpec, stride: int | None = None,
              allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All window starts ``(iy, ix)`` (flattened) on a grid, optionally restricted by ``allowed``.

    ``allowed`` is a boolean ``[ny, nx]`` map of window *starts* that may enter a library (e.g. away
    from coasts where the statistics differ); statistically homogeneous boxes allow all.

    Parameters
    ----------
    ny, nx : grid size
    spec : the window spec
    stride : overrides ``spec.stride`` when given
    allowed : boolean ``[ny, nx]`` map of allowed starts (None: all)

    Returns
    -------
    tuple: int64 ``iy``, ``ix`` of the window starts
    """
    st = spec.stride if stride is None else stride
    ys, xs = starts(ny, spec.size, st, spec.periodic), starts(nx, spec.size, st, spec.periodic)
    iy, ix = np.meshgrid(ys, xs, indexing="ij")
    iy, ix = iy.ravel(), ix.ravel()
    if allowed is not None:
        keep = np.asarray(allowed, bool)[iy, ix]
        iy, ix = iy[keep], ix[keep]
    return iy, ix


def taper_1d(size: int, stride: int) -> np.ndarray:
    """sin^2 taper over a window; for ``stride == size/2`` shifted copies sum exactly to one.

    Parameters
    ----------
    size : window size
    stride : window stride (no taper, all ones, when ``stride >= size``)

    Returns
    -------
    ``[size]`` taper
    """
    if stride >= size:
        return np.ones(size)
    return np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2


def pad(fields: np.ndarray, before: int, after: int, periodic: bool) -> np.ndarray:
    """Pad the last two axes: wrap-around if periodic, NaN (unobserved) otherwise.

    Parameters
    ----------
    fields : array ``[..., Y, X]``
    before, after : pixels added before and after on each of the last two axes
    periodic : wrap around (else NaN)

    Returns
    -------
    the padded array
    """
    widths = [(0, 0)] * (fields.ndim - 2) + [(before, after), (before, after)]
    if periodic:
        return np.pad(fields, widths, mode="wrap")
    return np.pad(fields.astype(np.float32 if fields.dtype != np.float64 else fields.dtype, copy=False), widths,
                  mode="constant", constant_values=np.nan)


def gather(padded: np.ndarray, t: np.ndarray, iy: np.ndarray, ix: np.ndarray, size: int) -> np.ndarray:
    """Windows ``[k, C, size, size]`` from ``padded`` ``[T, C, Yp, Xp]`` at times ``t`` and starts ``(iy, ix)``.

    Starts are in padded coordinates.

    Parameters
    ----------
    padded : ``[T, C, Yp, Xp]`` padded fields
    t : ``[k]`` time indices
    iy, ix : ``[k]`` window starts (padded coordinates)
    size : window size

    Returns
    -------
    ``[k, C, size, size]`` windows
    """
    from numpy.lib.stride_tricks import sliding_window_view

    # a view of every window, indexed by (time, start): rows are copied whole (8x an element-wise fancy index)
    view = sliding_window_view(padded, (size, size), axis=(2, 3))  # [T, C, Yp - size + 1, Xp - size + 1, size, size]
    return view[np.asarray(t), :, np.asarray(iy), np.asarray(ix)]


def gather_wrapped(fields: np.ndarray, t: np.ndarray, iy: np.ndarray, ix: np.ndarray, size: int) -> np.ndarray:
    """Windows ``[k, C, size, size]`` of unpadded periodic ``fields`` ``[T, C, Y, X]`` (indices wrap).

    No padded copy of the fields is made: what a large in-memory library needs.

    Parameters
    ----------
    fields : ``[T, C, Y, X]`` periodic fields
    t : ``[k]`` time indices
    iy, ix : ``[k]`` window starts
    size : window size

    Returns
    -------
    ``[k, C, size, size]`` windows
    """
    ny, nx = fields.shape[-2:]
    ar = np.arange(size)
    rows = ((np.asarray(iy)[:, None] + ar[None, :]) % ny)[:, None, :, None]
    cols = ((np.asarray(ix)[:, None] + ar[None, :]) % nx)[:, None, None, :]
    ch = np.arange(fields.shape[1])[None, :, None, None]
    return fields[np.asarray(t)[:, None, None, None], ch, rows, cols]


def extract(fields: np.ndarray, iy: np.ndarray, ix: np.ndarray, size: int, halo: int = 0,
            periodic: bool = True) -> np.ndarray:
    """Windows of ``size + 2 halo`` pixels around state windows starting at ``(iy, ix)``.

    ``fields`` is ``[C, Y, X]`` (one time) -> ``[P, C, s, s]``, or ``[T, C, Y, X]`` -> ``[T, P, C, s, s]``.
    Outside a non-periodic grid the halo is NaN (unobserved).

    Parameters
    ----------
    fields : ``[C, Y, X]`` or ``[T, C, Y, X]``
    iy, ix : ``[P]`` state window starts
    size : state window size
    halo : extra pixels on every side
    periodic : wrap around (else NaN outside the grid)

    Returns
    -------
    ``[P, C, s, s]`` or ``[T, P, C, s, s]`` windows, ``s = size + 2 halo``
    """
    one = fields.ndim == 3
    f = fields[None] if one else fields
    p = pad(f, halo, halo + size, periodic)
    T, P = f.shape[0], len(iy)
    t = np.repeat(np.arange(T), P)
    out = gather(p, t, np.tile(iy, T), np.tile(ix, T), size + 2 * halo)
    out = out.reshape(T, P, *out.shape[1:])
    return out[0] if one else out


def blend(windows: np.ndarray, iy: np.ndarray, ix: np.ndarray, shape: tuple[int, int], spec: WindowSpec,
          nan_aware: bool = False) -> np.ndarray:
    """Blend window values ``[P, ..., size, size]`` into fields ``[..., Y, X]`` with the taper.

    The result at each pixel is the taper-weighted average of the windows covering it (a partition
    of unity), so a constant field is reproduced exactly.

    Parameters
    ----------
    windows : ``[P, ..., size, size]`` window values
    iy, ix : ``[P]`` window starts
    shape : ``(Y, X)`` of the grid
    spec : the window spec (size, stride, periodic)
    nan_aware : NaN window values (land, nothing to average) are left out of the average; a pixel
        that only NaN values cover is NaN

    Returns
    -------
    ``[..., Y, X]`` blended fields
    """
    ny, nx = shape
    size = spec.size
    t1 = taper_1d(size, spec.stride)
    taper = t1[:, None] * t1[None, :]
    lead = windows.shape[1:-2]
    if nan_aware:
        return _blend_finite(windows, iy, ix, shape, spec, taper)
    if windows.shape[0] != len(iy) or windows.shape[-2:] != (size, size):
        raise DataValidationError(f"blend: windows of shape {windows.shape}; expected [{len(iy)}, ..., {size}, {size}]")
    geometry = (tuple(int(v) for v in iy), tuple(int(v) for v in ix), (int(ny), int(nx)), (size, spec.stride, spec.periodic))
    win = np.asarray(windows).reshape(len(iy), -1, size * size)
    if win.dtype == np.float32:  # the analyses' windows: scattered in the sparse product's order, no float64 copy
        from oceanda.analysis.kernels import blend_scatter

        pix, wt = _blend_scatter_weights(*geometry)
        return blend_scatter(np.ascontiguousarray(win), pix, wt, ny * nx).reshape(*lead, ny, nx)
    op = _blend_operator(*geometry)
    cols = win.transpose(0, 2, 1).astype(np.float64, order="C")  # one copy
    out = op @ cols.reshape(len(iy) * size * size, -1)  # [Y * X, lead]
    return np.ascontiguousarray(out.T).reshape(*lead, ny, nx)


@functools.lru_cache(maxsize=4)
def _blend_scatter_weights(iy: tuple, ix: tuple, shape: tuple[int, int], geometry: tuple[int, int, bool]):
    """:func:`_blend_operator` as per-window pixel indices ``[P, size * size]`` (-1 off the grid) and weights."""
    op = _blend_operator(iy, ix, shape, geometry).tocsc()  # column p * size * size + j: window p's pixel j
    pix = np.full(op.shape[1], -1, np.int64)
    wt = np.zeros(op.shape[1])
    has = np.diff(op.indptr) > 0
    pix[has], wt[has] = op.indices[op.indptr[:-1][has]], op.data[op.indptr[:-1][has]]
    return pix.reshape(len(iy), -1), wt.reshape(len(iy), -1)


@functools.lru_cache(maxsize=4)
def _blend_operator(iy: tuple, ix: tuple, shape: tuple[int, int], geometry: tuple[int, int, bool]):
    """:func:`blend` as one sparse matrix ``[Y * X, P * size * size]`` (taper / summed taper), built once per geometry.

    Why: the blend is linear and its geometry fixed for a grid, so one sparse product replaces a Python
    loop of strided adds over every window (5x faster for a 20-member analysis of 64 windows).
    """
    from scipy import sparse

    ny, nx = shape
    size, stride, periodic = geometry
    t1 = taper_1d(size, stride)
    taper = (t1[:, None] * t1[None, :]).ravel()
    dy, dx = np.divmod(np.arange(size * size), size)
    y = (np.asarray(iy)[:, None] + dy[None]).ravel()
    x = (np.asarray(ix)[:, None] + dx[None]).ravel()
    if periodic:
        y, x = y % ny, x % nx
    inside = (y < ny) & (x < nx)
    pix, w = (y * nx + x)[inside], np.tile(taper, len(iy))[inside]
    wsum = np.bincount(pix, weights=w, minlength=ny * nx)
    if np.any(wsum <= 0):
        raise DataValidationError("the analysis windows leave pixels uncovered; expected stride <= size")
    return sparse.csr_matrix((w / wsum[pix], (pix, np.flatnonzero(inside))), shape=(ny * nx, len(iy) * size * size))


def _fold(a: np.ndarray, ny: int, nx: int, size: int, periodic: bool) -> np.ndarray:
    """``[..., ny + size, nx + size]`` accumulators -> ``[..., ny, nx]`` (the overhang wrapped if periodic)."""
    if periodic:
        a[..., :size, :] += a[..., ny:, :]
        a[..., :, :size] += a[..., :, nx:]
    return a[..., :ny, :nx]


def _blend_finite(windows: np.ndarray, iy: np.ndarray, ix: np.ndarray, shape: tuple[int, int], spec: WindowSpec,
                  taper: np.ndarray) -> np.ndarray:
    """:func:`blend` leaving NaN window values out (per element weights); NaN where nothing finite covers."""
    ny, nx = shape
    size = spec.size
    lead = windows.shape[1:-2]
    acc = np.zeros((*lead, ny + size, nx + size))
    wsum = np.zeros((*lead, ny + size, nx + size))
    for p in range(len(iy)):
        y0, x0 = int(iy[p]), int(ix[p])
        ok = np.isfinite(windows[p])
        acc[..., y0:y0 + size, x0:x0 + size] += np.where(ok, taper * windows[p], 0.0)
        wsum[..., y0:y0 + size, x0:x0 + size] += np.where(ok, taper, 0.0)
    acc, wsum = _fold(acc, ny, nx, size, spec.periodic), _fold(wsum, ny, nx, size, spec.periodic)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, acc / np.where(wsum > 0, wsum, 1.0), np.nan)
