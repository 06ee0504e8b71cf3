"""The library: prior states (a free run, or any ensemble) and their embeddings.

States stay lazy (dask-backed Dataset); embeddings are computed once, chunk by chunk, and cached
next to the model, so a library larger than memory works: the online cost of an analysis is one
matrix of similarities to the cached embeddings, then reading only the states that carry
non-negligible weight.

A cache is trusted only for the content it was computed from: one streamed pass over the states
(:meth:`Library.scan`, about 0.1 s for the 17 MB sample library) hashes every state's float32 bytes
(BLAKE2b) with the layout and sample coordinate, checks the values (Inf, all-NaN variables, NaN
outside the land) and finds the land; the cache records that hash, the model key, the variables and
a checksum of the embeddings themselves, and anything else -- other states, a truncated or damaged
file, a half-replaced cache -- is recomputed.

Beyond one machine: inside :func:`embedding_client` (or with ``client=``) the chunks are embedded by
dask.distributed workers, each reading its chunk of states from the library file (a pickled library
carries its lazy Dataset, never its states in memory), so the states never need to fit in one process;
the client gathers the float32 blocks in order and alone writes the cache. A library unpickled in a
worker reuses the embeddings its sender computed (:meth:`Library.embeddings`), so workers never re-embed.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from oceanda import fields, io
from oceanda.errors import DataValidationError, OceandaError
from oceanda.grid import time_days
from oceanda.analysis.tasks import run_tasks

#: Sub-directory of a model directory holding cached library embeddings.
CACHE_DIRNAME = "library_cache"
#: Version of the content hash and of the cache's records: caches of another version are recomputed.
CACHE_FORMAT = 2
#: The dask.distributed client that embeds library chunks (None: this process); see :func:`embedding_client`.
_CLIENT: contextvars.ContextVar = contextvars.ContextVar("oceanda_embedding_client", default=None)


@contextlib.contextmanager
def embedding_client(client):
    """Within this block, :meth:`Library.embeddings` has its chunks embedded by ``client``'s dask workers.

    Why a context: the samplers call ``embeddings`` from their ``prepare``; a caller distributing a
    run (:func:`oceanda.analysis.assimilate.assimilate` with a scheduler) sets the client once here.

    Parameters
    ----------
    client : a ``distributed.Client`` (None: embed in this process)
    """
    token = _CLIENT.set(client)
    try:
        yield client
    finally:
        _CLIENT.reset(token)


@dataclass(frozen=True)
class LibraryScan:
    """What one streamed pass over every library state found.

    Attributes
    ----------
    content_hash : BLAKE2b (128 bit, hex) of the layout, the sample coordinate and every state's float32 bytes
    land : ``[C, Y, X]`` cells NaN in every state, or None without land
    bad : sample indices of the states that are NaN where other states have values (outside the land)
    """

    content_hash: str
    land: np.ndarray | None
    bad: np.ndarray


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
        self._direct_conversions: dict[str, tuple[float, float]] = {}  # (scale, offset) of _direct reads (in_units)
        self._scan: LibraryScan | None = None
        self._embedded: dict[str, np.ndarray] = {}  # embeddings computed or read here, by key (shipped to workers)
        self._reuse_embedded = False  # True in a copy unpickled by a worker: use _embedded, never re-embed

    def __getstate__(self) -> dict:
        """Pickled without the states held in memory: a worker reads them from the file (or the lazy Dataset)."""
        state = dict(self.__dict__)
        state["_cache"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reuse_embedded = True

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
        ds = io.open_states(paths, chunks={"time": chunk}, check_values=True, units=units)  # Inf, all-NaN: as enkf
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
        """Hash of grid, variables, sample coordinates, sizes and a few sampled values: names the cache folder.

        Cheap for a large library (it reads three samples); whether a cache holds embeddings of these
        states is decided by :attr:`content_hash` (every value), not by this.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.grid_fingerprint.encode())
            h.update(f"n={self.n};dim={self.sample_dim};".encode())
            h.update(self._sample_bytes())
            probe = sorted({0, self.n // 2, self.n - 1})
            h.update(np.ascontiguousarray(self.read(probe), dtype=np.float32).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def _sample_bytes(self) -> bytes:
        """The sample coordinate as bytes: datetime64 as ns, cftime calendars as days, numbers as they are."""
        if self.sample_dim not in self.ds.coords:
            return b""
        c = np.asarray(self.ds[self.sample_dim].values)
        return (c.astype("datetime64[ns]").view(np.int64).tobytes() if np.issubdtype(c.dtype, np.datetime64)
                else time_days(c).tobytes())

    @property
    def content_hash(self) -> str:
        """BLAKE2b of every state's values (and the layout and sample coordinate): what a cache must match."""
        return self.scan().content_hash

    def scan(self, chunk: int = 256) -> LibraryScan:
        """Hash and check every state in one streamed pass (done once; :class:`LibraryScan`).

        Why one pass: the cache key must cover every value, the land is the cells NaN in *every* state
        (not just the first), and a state NaN elsewhere would blank analyses -- all three need each
        state read once, and reading is the cost.

        Parameters
        ----------
        chunk : states read at a time

        Returns
        -------
        LibraryScan

        Raises
        ------
        DataValidationError : Inf values, or a variable (level) NaN in every state
        """
        if self._scan is None:
            self._scan = self._scan_blocks(self.chunks(chunk))
        return self._scan

    def _scan_blocks(self, blocks: Iterable[tuple[int, np.ndarray]]) -> LibraryScan:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"oceanda-library-v{CACHE_FORMAT};{self.grid_fingerprint};{self.sample_dim};n={self.n};"
                 f"variables={self.variables};channels={self.layout.channels};shape={self.shape};".encode())
        h.update(self._sample_bytes())
        C = self.layout.n_channels
        missing = np.zeros((C, *self.shape), np.int64)  # per cell: states without a finite value
        per_state = np.zeros((self.n, C), np.int64)  # per state and channel: cells without a finite value
        inf = np.zeros(C, bool)
        for a, states in blocks:
            x = np.ascontiguousarray(states, dtype=np.float32)
            h.update(memoryview(x.reshape(-1)).cast("B"))
            bad = ~np.isfinite(x)
            if bad.any():
                missing += bad.sum(axis=0)
                per_state[a:a + len(x)] = bad.reshape(len(x), C, -1).sum(axis=2)
                inf |= np.isinf(x).any(axis=(0, 2, 3))
        self._check_channels(inf, missing)
        land = missing == self.n if self.n else np.zeros_like(missing, bool)
        bad = np.flatnonzero((per_state > land.reshape(C, -1).sum(axis=1)[None]).any(axis=1))
        return LibraryScan(h.hexdigest(), land if land.any() else None, bad)

    def _check_channels(self, inf: np.ndarray, missing: np.ndarray) -> None:
        """Refuse Inf values and a variable NaN in every state (the messages of :func:`oceanda.io.validate_dataset`).

        A single all-NaN level is accepted (a level below the sea floor everywhere is land).
        """
        for v in self.layout.variables:
            chans = [c for c, (name, _) in enumerate(self.layout.channels) if name == v]
            if inf[chans].any():
                raise DataValidationError(f"{self.source}: variable '{v}' contains Inf values; "
                                          "expected finite values or NaN")
            if self.n and all((missing[c] == self.n).all() for c in chans):
                raise DataValidationError(f"{self.source}: variable '{v}' is all NaN; "
                                          "expected at least one finite value")

    def usable(self, min_states: int = 2) -> Library:
        """This library without its states that are NaN outside the land (with a warning), else refused.

        Why: one such state carries NaN into every weighted mean it enters; dropped, the others
        still give an analysis. Fewer than ``min_states`` clean states cannot.

        Parameters
        ----------
        min_states : clean states needed

        Returns
        -------
        Library: ``self``, or a new one over the clean states (``retrieved_index`` then counts those)

        Raises
        ------
        DataValidationError : fewer than ``min_states`` clean states
        """
        bad = self.scan().bad
        if bad.size == 0:
            return self
        keep = np.setdiff1d(np.arange(self.n), bad)
        what = (f"{self.source}: {bad.size} of {self.n} library states ({self.sample_dim} indices {_some(bad)}) "
                "are NaN where other states have values (outside the land)")
        if keep.size < min_states:
            raise DataValidationError(f"{what}; expected NaN only on land (the same cells in every state) and at "
                                      f"least {min_states} states without other NaN")
        warnings.warn(f"{what}: dropped, {keep.size} states remain", UserWarning, stacklevel=2)
        sub = Library(self.ds.isel({self.sample_dim: keep}), self.variables, source=self.source,
                      sample_dim=self.sample_dim)
        if self._direct is not None:
            sub._direct = self._direct.isel({self.sample_dim: keep})
            sub._direct_conversions = dict(self._direct_conversions)
        if self._cache is not None:
            sub._cache = self._cache[keep]
        return sub

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
        """Land: ``[C, Y, X]`` cells NaN in every state (:meth:`scan`), or None without land.

        Why: windows over land need their land cells left out of weighted means and the analyses NaN
        there (and only there).
        """
        return self.scan().land

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
            for v, (scale, offset) in self._direct_conversions.items():  # as in_units converted self.ds
                sub[v] = sub[v] * scale + offset
        else:
            sub = self.ds[self.variables].isel({self.sample_dim: uniq})
        arr, _ = fields.to_array(sub, self.layout)
        return arr[inv]

    def in_units(self, units: Mapping[str, str], where: str = "the model") -> Library:
        """This library with its variables in ``units`` (a model's training units), converted with cf-units.

        Why: a model standardises states with the statistics of the units it was trained in; a library
        in ``cm`` given to a model trained in ``m`` would be analysed wrong without a word. Each
        conversion is a warning; incompatible units (``K`` for ``m``) are refused.

        Parameters
        ----------
        units : {variable: units} (variables missing from it are kept as they are)
        where : what the units come from, named in warnings and errors (the model's ``config.json``)

        Returns
        -------
        Library: ``self`` when nothing is to convert, else a new library (the states converted lazily)

        Raises
        ------
        DataValidationError : a variable whose units cannot be converted to ``units``
        """
        conversions = {}
        for v in self.variables:
            have, want = self.ds[v].attrs.get("units"), units.get(v)
            try:
                conversion = io.unit_conversion(have, want)
            except ValueError:
                raise DataValidationError(f"{self.source}: variable '{v}' has units '{have}', incompatible with "
                                          f"the units '{want}' of {where}; expected units convertible to '{want}'") from None
            if conversion is not None:
                conversions[v] = conversion
                warnings.warn(f"{self.source}: library '{v}' converted from '{have}' to the units '{want}' of {where} "
                              f"({io.describe_conversion(*conversion)})", UserWarning, stacklevel=2)
        if not conversions:
            return self
        ds = self.ds.assign({v: (self.ds[v] * s + o).assign_attrs({**self.ds[v].attrs, "units": units[v]})
                             for v, (s, o) in conversions.items()})
        lib = Library(ds, self.variables, source=self.source, sample_dim=self.sample_dim)
        if self._direct is not None:  # converted as read: arithmetic here would read every state
            lib._direct = self._direct
            before = self._direct_conversions
            lib._direct_conversions = {**before, **{v: (before[v][0] * s, before[v][1] * s + o) if v in before else (s, o)
                                                    for v, (s, o) in conversions.items()}}
        return lib

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
                   chunk: int = 256, quiet: bool = True, desc: str = "embedding library",
                   rows_per_state: int = 1, client=None) -> np.ndarray:
        """Embeddings of every library state (or window), computed once in chunks and cached.

        ``embed`` maps a block of states ``[k, C, Y, X]`` to ``[k * rows_per_state, ne]`` (one row per
        state, or per window). ``key`` names the model and the embedding (global / window spec); the
        cache lives in ``cache_dir/<fingerprint>-<key>/`` (safetensors, never pickled) and is used
        only when it was computed from these very states (:attr:`content_hash`), with this key and
        these variables, and is whole (shape ``(n * rows_per_state, ne)``, finite, its checksum
        intact); otherwise it is recomputed. A cache that cannot be written is a warning.

        Parameters
        ----------
        embed : maps states ``[k, C, Y, X]`` to embeddings ``[k * rows_per_state, ne]``
        key : names the model and the embedding, for the cache
        cache_dir : cache directory (None: no cache)
        chunk : library states per block
        quiet : no progress bar
        desc : progress bar label
        rows_per_state : embedding rows per state (windows per state in local mode)
        client : a ``distributed.Client`` whose workers embed the chunks (default: the one of
            :func:`embedding_client`, else none: this process)

        Returns
        -------
        ``[N, ne]`` float32 embeddings (N = samples x rows_per_state)
        """
        shipped = self._embedded.get(key) if self._reuse_embedded else None
        if shipped is not None and shipped.shape[0] == self.n * rows_per_state:
            return shipped  # a worker's copy: the embeddings its sender computed (bit for bit)
        self.scan(chunk)  # the content hash (and the value checks) before any cache is trusted
        path = None if cache_dir is None else Path(cache_dir) / f"{self.fingerprint}-{_safe(key)}"
        z = None if path is None else self._cached(path, key, rows_per_state)
        if z is None:
            client = client if client is not None else _CLIENT.get()
            z = (self._embed_local(embed, chunk, quiet, desc) if client is None
                 else self._embed_distributed(client, embed, chunk, quiet, desc))
            if path is not None:
                self._write_cache(path, z, key)  # by the client only (io.save_checkpoint: atomic)
        self._embedded[key] = z
        return z

    def _embed_local(self, embed: Callable[[np.ndarray], np.ndarray], chunk: int, quiet: bool,
                     desc: str) -> np.ndarray:
        blocks = []
        for _, states in _progress(self.chunks(chunk), total=-(-self.n // chunk), desc=desc, quiet=quiet):
            blocks.append(np.asarray(embed(states), dtype=np.float32))
        return np.ascontiguousarray(np.concatenate(blocks, axis=0) if blocks else np.zeros((0, 0), np.float32))

    def _embed_distributed(self, client, embed: Callable[[np.ndarray], np.ndarray], chunk: int, quiet: bool,
                           desc: str) -> np.ndarray:
        """The chunks of :meth:`_embed_local` embedded by dask workers, each reading its states from the file.

        The library and ``embed`` are sent once to every worker (scattered, broadcast); each task is
        a chunk's bounds. Blocks come back float32 and are joined in chunk order, so the result is the
        local one bit for bit (the workers' torch runs single-threaded, as :func:`_embed_block` sets).
        """
        starts = list(range(0, self.n, chunk))
        if not starts:
            return np.zeros((0, 0), np.float32)
        blocks: list = [None] * len(starts)
        bar = _progress(None, len(starts), f"{desc} (dask)", quiet)

        def span(i: int) -> str:
            return f"{self.source}: embedding {self.sample_dim} indices {starts[i]}-{min(starts[i] + chunk, self.n) - 1}"

        def done(i: int, fut) -> None:
            try:
                blocks[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 -- a worker's failure, named by the states it had
                raise OceandaError(f"{span(i)} failed on a dask worker ({type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())}); expected workers that can read the library "
                                   "file at this path") from None
            bar.update(1)

        try:
            run_tasks(client, _embed_block, [self, embed], [(a, min(a + chunk, self.n)) for a in starts], done, span)
        finally:
            bar.close()
        return np.ascontiguousarray(np.concatenate(blocks, axis=0))

    def _cached(self, path: Path, key: str, rows: int) -> np.ndarray | None:
        """The embeddings cached at ``path`` if they are whole and of these states, else None (with a warning)."""
        try:
            if not path.is_dir():
                return None
            tensors, cfg = io.load_checkpoint(path)
            z = tensors["embeddings"].numpy()
            problem = self._cache_problem(z, cfg, key, rows)
        except Exception as exc:  # noqa: BLE001 -- a damaged cache is recomputed, whatever is wrong with it
            problem = f"unreadable: {' '.join(str(exc).split())}"
        if problem is None:
            return z
        warnings.warn(f"{path}: cached library embeddings not used ({problem}); recomputing them",
                      UserWarning, stacklevel=3)
        return None

    def _cache_problem(self, z: np.ndarray, cfg: Mapping, key: str, rows: int) -> str | None:
        """Why a cache does not fit these states (None: it fits)."""
        if cfg.get("format") != CACHE_FORMAT or cfg.get("key") != key or cfg.get("variables") != self.variables:
            return "written for another model, window geometry, variable set or oceanda version"
        if cfg.get("content_hash") != self.content_hash:
            return "computed from other library states"
        if z.dtype != np.float32 or z.ndim != 2 or z.shape[0] != self.n * rows or z.shape[1] < 1 \
                or list(z.shape) != cfg.get("shape"):
            return f"shape {tuple(z.shape)}; expected ({self.n * rows}, embedding dim)"
        if cfg.get("embeddings_blake2b") != _digest(z):
            return "checksum differs: truncated or damaged"
        if not np.isfinite(z).all():
            return "non-finite values"
        return None

    def _write_cache(self, path: Path, z: np.ndarray, key: str) -> None:
        """Cache ``z`` at ``path``; a failure is a warning and leaves no cache behind."""
        cfg = {"format": CACHE_FORMAT, "key": key, "variables": self.variables, "content_hash": self.content_hash,
               "library_fingerprint": self.fingerprint, "embeddings_blake2b": _digest(z), "source": self.source,
               "n": int(self.n), "shape": list(z.shape)}
        try:
            import torch

            io.save_checkpoint(path, {"embeddings": torch.from_numpy(z)}, cfg, overwrite=True)
        except (OSError, OceandaError) as exc:  # a read-only or full model directory: work without the cache
            io.remove_tree(path)  # never half a cache (its checksum would refuse it; nothing left is better)
            warnings.warn(f"{path}: cannot cache library embeddings ({' '.join(str(exc).split())}); "
                          "they will be recomputed next time", UserWarning, stacklevel=3)


def _embed_block(lib: Library, embed: Callable[[np.ndarray], np.ndarray], a: int, b: int) -> np.ndarray:
    """A dask task: the float32 embeddings of states ``a:b``, read from the library's file by this worker."""
    import torch

    torch.set_num_threads(1)  # what the local path computes, bit for bit, whatever the worker's core count
    return np.asarray(embed(lib.read(np.arange(a, b))), dtype=np.float32)


def _digest(z: np.ndarray) -> str:
    """BLAKE2b of an array's shape and bytes."""
    h = hashlib.blake2b(f"{z.dtype.str}{z.shape}".encode(), digest_size=16)
    h.update(memoryview(np.ascontiguousarray(z).reshape(-1)).cast("B"))
    return h.hexdigest()


def _some(indices: np.ndarray, k: int = 8) -> str:
    """The first ``k`` indices, and how many more."""
    head = ", ".join(str(int(i)) for i in indices[:k])
    return head + (f", ... {len(indices) - k} more" if len(indices) > k else "")


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)[:120]
