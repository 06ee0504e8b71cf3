"""The library: prior states (a free run, or any ensemble) and their embeddings.

States stay lazy (dask-backed Dataset); embeddings are computed once, chunk by chunk, and cached
next to the model keyed by the library's fingerprint, so a library larger than memory works: the
online cost of an analysis is one matrix of similarities to the cached embeddings, then reading
only the states that carry non-negligible weight.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from oceanda import fields, io
from oceanda.errors import CheckpointError, DataValidationError, OceandaError
from oceanda.grid import time_days

#: Sub-directory of a model directory holding cached library embeddings.
CACHE_DIRNAME = "library_cache"


def _progress(iterable, total: int | None, desc: str, quiet: bool):
    import sys

    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=quiet or not sys.stderr.isatty(), leave=False)


class Library:
    """A set of prior states with their layout, lazy access and a fingerprint.

    ``ds`` holds the states (dimension ``time`` -- or ``member`` for an ensemble -- is the sample
    axis); only the channels in ``variables`` (default: every gridded variable) are read.
    """

    def __init__(self, ds: xr.Dataset, variables: Sequence[str] | None = None, source: str = "library",
                 sample_dim: str | None = None):
        if sample_dim is None:
            sample_dim = "time" if "time" in ds.dims else ("member" if "member" in ds.dims else None)
        if sample_dim is None or sample_dim not in ds.dims:
            raise DataValidationError(f"{source}: no 'time' or 'member' dimension; expected a library of states")
        if variables is None:
            sp = fields.spatial_dims(ds)
            variables = [str(v) for v in ds.data_vars
                         if not str(v).endswith("_error") and set(sp) <= set(ds[v].dims) and sample_dim in ds[v].dims]
        self.ds = ds
        self.source = source
        self.variables = list(variables)
        self.layout = fields.layout_of(ds, self.variables, sample_dim=sample_dim)
        self.sample_dim = sample_dim
        self.n = int(ds.sizes[sample_dim])
        self.shape = tuple(int(ds.sizes[d]) for d in self.layout.spatial)
        self._cache: np.ndarray | None = None
        self._fingerprint: str | None = None
        self._direct: xr.Dataset | None = None  # the same file without dask, for scattered reads
        self._land: np.ndarray | None | bool = False  # False: not read yet

    @classmethod
    def open(cls, paths, variables: Sequence[str] | None = None, chunk: int = 256,
             units: Mapping[str, str] | None = None) -> Library:
        """Open library file(s) lazily through :func:`oceanda.io.open_states`.

        A single file is also opened without dask: reading the few hundred scattered states that
        carry weight then reads just those (one file chunk per state, as oceanda writes them)
        instead of every dask chunk they fall in -- 0.7 s against 20 s for 2000 of 200k states.

        Parameters
        ----------
        paths : a file, a glob or a sequence of files
        variables : channels to read (None: every gridded variable)
        chunk : dask chunk along ``time``
        units : {variable: units} where the files have none (``--units``)

        Returns
        -------
        Library
        """
        ds = io.open_states(paths, chunks={"time": chunk}, check_values=False, units=units)
        single = len(io.iter_files([paths] if isinstance(paths, (str, os.PathLike)) else paths)) == 1  # else dask only
        src = paths if isinstance(paths, (str, os.PathLike)) else ", ".join(map(str, paths))
        lib = cls(ds, variables, source=str(src))
        if single:
            lib._direct = io.open_states(paths, chunks=None, check_values=False, units=units)
        return lib

    def __len__(self) -> int:
        return self.n

    @property
    def grid_fingerprint(self) -> str:
        return fields.grid_fingerprint(self.ds, self.variables)

    @property
    def fingerprint(self) -> str:
        """Hash of grid, variables, sample coordinates, sizes and a few sampled values.

        Cheap for a large library (it reads three samples), yet it changes when the file is
        replaced by other states or the library is sub-selected.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.grid_fingerprint.encode())
            h.update(f"n={self.n};dim={self.sample_dim};".encode())
            if self.sample_dim in self.ds.coords:
                c = np.asarray(self.ds[self.sample_dim].values)
                h.update(c.astype("datetime64[ns]").view(np.int64).tobytes() if np.issubdtype(c.dtype, np.datetime64)
                         else time_days(c).tobytes())  # cftime calendars: days; numbers pass through
            probe = sorted({0, self.n // 2, self.n - 1})
            h.update(np.ascontiguousarray(self.read(probe), dtype=np.float32).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    @property
    def nbytes(self) -> int:
        return self.n * self.layout.n_channels * self.shape[0] * self.shape[1] * 4

    def load(self, max_bytes: float = 2e9) -> bool:
        """Hold all states in memory if they fit in ``max_bytes``; return whether they now are.

        Parameters
        ----------
        max_bytes : largest size (bytes) loaded into memory

        Returns
        -------
        bool: whether the states are in memory
        """
        if self._cache is None and self.nbytes <= max_bytes:
            self._cache = self.read(np.arange(self.n))
        return self._cache is not None

    @property
    def land(self) -> np.ndarray | None:
        """Land: ``[C, Y, X]`` cells NaN in the first state (the same at every time), or None without land.

        Why: windows over land need their land cells left out of weighted means and the analyses NaN
        there (and only there).
        """
        if self._land is False:
            mask = np.isnan(self.read([0])[0]) if self.n else np.zeros((self.layout.n_channels, *self.shape), bool)
            self._land = mask if mask.any() else None
        return self._land  # type: ignore[return-value]

    def mean_state(self, max_states: int = 1000) -> np.ndarray:
        """Mean state ``[C, Y, X]`` over (up to ``max_states`` evenly spaced) library states, NaN on land.

        Parameters
        ----------
        max_states : states averaged at most

        Returns
        -------
        ``[C, Y, X]`` float32
        """
        idx = np.unique(np.linspace(0, self.n - 1, min(self.n, max_states)).astype(np.int64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (land) cells
            return np.nanmean(self.read(idx), axis=0).astype(np.float32)

    @property
    def in_memory(self) -> bool:
        return self._cache is not None

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """States ``[k, C, Y, X]`` (float32, physical units) at sample ``indices``; reads only those.

        Parameters
        ----------
        indices : sample indices in ``[0, n)``

        Returns
        -------
        ``[k, C, Y, X]`` float32 states
        """
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"{self.source}: library index out of range [0, {self.n})")
        if self._cache is not None:
            return self._cache[idx]
        uniq, inv = np.unique(idx, return_inverse=True)
        if uniq.size == 0:
            return np.zeros((0, self.layout.n_channels, *self.shape), np.float32)
        if self._direct is not None:  # contiguous: a slice; scattered: only those states
            contiguous = uniq[-1] - uniq[0] + 1 == uniq.size
            sel = slice(int(uniq[0]), int(uniq[-1]) + 1) if contiguous else uniq
            sub = self._direct[self.variables].isel({self.sample_dim: sel})
        else:
            sub = self.ds[self.variables].isel({self.sample_dim: uniq})
        arr, _ = fields.to_array(sub, self.layout)
        return arr[inv]

    def chunks(self, size: int = 256):
        """Yield ``(start, states)`` blocks of ``size`` samples (streamed; never the whole library).

        Parameters
        ----------
        size : samples per block

        Yields
        ------
        tuple: the block's first sample index and its states ``[k, C, Y, X]``
        """
        for a in range(0, self.n, size):
            yield a, self.read(np.arange(a, min(a + size, self.n)))

    def embeddings(self, embed: Callable[[np.ndarray], np.ndarray], key: str, cache_dir: str | os.PathLike | None = None,
                   chunk: int = 256, quiet: bool = True, desc: str = "embedding library") -> np.ndarray:
        """Embeddings of every library state (or window), computed once in chunks and cached.

        ``embed`` maps a block of states ``[k, C, Y, X]`` to ``[k', ne]`` (k' = k, or k times the
        windows per state). ``key`` names the model and the embedding (global / window spec); the
        cache lives in ``cache_dir/<library fingerprint>-<key>/`` (safetensors, never pickled).

        Parameters
        ----------
        embed : maps states ``[k, C, Y, X]`` to embeddings ``[k', ne]``
        key : names the model and the embedding, for the cache
        cache_dir : cache directory (None: no cache)
        chunk : library states per block
        quiet : no progress bar
        desc : progress bar label

        Returns
        -------
        ``[N, ne]`` float32 embeddings (N = samples, or samples times windows)
        """
        path = None
        if cache_dir is not None:
            path = Path(cache_dir) / f"{self.fingerprint}-{_safe(key)}"
            try:
                tensors, cfg = io.load_checkpoint(path)
                z = tensors["embeddings"].numpy()
                if cfg.get("library_fingerprint") == self.fingerprint and cfg.get("key") == key:
                    return z
            except (CheckpointError, OceandaError, KeyError):
                pass
        blocks = []
        for _, states in _progress(self.chunks(chunk), total=-(-self.n // chunk), desc=desc, quiet=quiet):
            blocks.append(np.asarray(embed(states), dtype=np.float32))
        z = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, 0), np.float32)
        if path is not None:
            try:
                import torch

                io.save_checkpoint(path, {"embeddings": torch.from_numpy(np.ascontiguousarray(z))},
                                   {"library_fingerprint": self.fingerprint, "key": key, "source": self.source,
                                    "n": int(self.n), "shape": list(z.shape)}, overwrite=True)
            except OSError as exc:  # a read-only model directory: work without the cache
                warnings.warn(f"{path}: cannot cache library embeddings ({exc}); they will be recomputed next time",
                              UserWarning, stacklevel=2)
        return z


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)[:120]
