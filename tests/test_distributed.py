"""Analyses and library embedding on a dask.distributed LocalCluster: the single-process results, bit for bit.

One LocalCluster of 2 worker processes (real pickling between processes) serves the module; each
worker imports torch once (seconds), so the tests share it. The real sample window model (a CNN
and an MLP) checks that workers compute what this process computes; small fixed encoders check the
rest (failures, the CLI) cheaply.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from oceanda import api, fields, io
from oceanda.analysis.assimilate import analyse_times, local_cluster
from oceanda.analysis.library import Library
from oceanda.analysis.posterior import DegenerateWeightsWarning
from oceanda.analysis.samplers import sampler_for
from oceanda.analysis.settings import SamplerSettings
from oceanda.contrastive.encoders import FixedEncoder
from oceanda.contrastive.model import ContrastiveModel
from oceanda.contrastive.similarity import Similarity
from oceanda.errors import ConfigurationError, OceandaError

distributed = pytest.importorskip("distributed")

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TIMING = ("seconds_per_analysis", "setup_seconds")


@pytest.fixture(scope="module")
def cluster():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cluster's own start-up notices
        lc = local_cluster(2)  # distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, ...)
    try:
        yield lc
    finally:
        lc.close()


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster) as c:
        yield c


def _same(a: xr.Dataset, b: xr.Dataset) -> None:
    """Every variable and coordinate equal bit for bit (NaN where NaN); attributes equal but the timings."""
    assert set(a.variables) == set(b.variables)
    for v in a.variables:
        x, y = a[v].values, b[v].values
        assert x.dtype == y.dtype and x.shape == y.shape, v
        assert (np.array_equal(x, y, equal_nan=x.dtype.kind == "f") if x.dtype.kind != "O" else (x == y).all()), v
    assert {k: v for k, v in a.attrs.items() if k not in TIMING} == {k: v for k, v in b.attrs.items() if k not in TIMING}


def _sample_files(tmp_path, n_states=16):
    with xr.open_dataset(SAMPLE / "qg" / "library.nc") as lib:
        io.write_netcdf(lib.isel(time=slice(0, n_states)).load(), tmp_path / "lib.nc")
    files = []
    for i, (name, k) in enumerate([("obs_altimetry_eval_1.nc", 2), ("obs_altimetry_eval_2.nc", 1)]):
        with xr.open_dataset(SAMPLE / "qg" / name) as o:
            io.write_netcdf(o.isel(time=slice(0, k)).load(), tmp_path / f"obs{i}.nc")
        files.append(tmp_path / f"obs{i}.nc")
    return tmp_path / "lib.nc", files


@pytest.mark.slow  # worker processes import torch: seconds each
def test_sample_model_on_two_workers_equals_the_local_run_for_two_files(tmp_path, cluster):
    lib_path, files = _sample_files(tmp_path)
    model = SAMPLE / "models" / "qg_window"
    local = api.assimilate(model, api.open_library(lib_path), files, cache_dir=tmp_path / "c_local", members=6)
    assert isinstance(local, list) and [d.sizes["time"] for d in local] == [2, 1]
    # a fresh cache: the library windows are embedded by the workers, each reading its states from the file
    dist = api.assimilate(model, api.open_library(lib_path), files, cache_dir=tmp_path / "c_dist", members=6,
                          scheduler=cluster.scheduler_address)
    for a, b in zip(local, dist):
        _same(a, b)
    # a list gives what each file alone gives (its own streams [seed, t])
    _same(api.assimilate(model, api.open_library(lib_path), api.open_obs(files[1], like=xr.open_dataset(lib_path)),
                         cache_dir=tmp_path / "c_local", members=6), local[1])
    (c1,), (c2,) = list((tmp_path / "c_local").iterdir()), list((tmp_path / "c_dist").iterdir())
    z1, z2 = io.load_checkpoint(c1)[0]["embeddings"].numpy(), io.load_checkpoint(c2)[0]["embeddings"].numpy()
    assert c1.name == c2.name and z1.shape == (16 * 64, 64) and np.array_equal(z1, z2)


def _tiny(tmp_path, n=24, ny=8, nx=8, field=False):
    """A small library file and a window (or ``field``) model of fixed encoders (state -> values; obs -> centre values)."""
    rng = np.random.default_rng(0)
    ssh = rng.normal(size=(n, ny, nx)).astype(np.float32)
    time = np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    ds = xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"})},
                    coords={"time": time, "y": ("y", np.arange(ny) * 20.0 + 10, {"units": "km"}),
                            "x": ("x", np.arange(nx) * 20.0 + 10, {"units": "km"})})
    io.write_netcdf(ds, tmp_path / "lib.nc")
    w, h = (ny, 0) if field else (4, 2)
    o = w + 2 * h
    m = np.zeros((w * w, 2 * o * o))
    for i in range(w):
        for j in range(w):
            m[i * w + j, (h + i) * o + (h + j)] = 1.0
    st = fields.Standardizer.fit(fields.to_array(ds, fields.layout_of(ds, ["ssh"]))[0])
    cfg = {"grid_fingerprint": fields.grid_fingerprint(ds, ["ssh"]), "normalization": {"state": st.to_dict()},
           "extra": {"state_channels": [["ssh", None]], "obs_channels": [["ssh", None]]}}
    if not field:
        cfg["extra"]["window"] = {"size": w, "stride": 2, "halo": h, "periodic": True}
    ContrastiveModel(FixedEncoder((1, w, w)), FixedEncoder((2, o, o), matrix=m), Similarity("neg_sq_distance", tau=0.3),
                     cfg).save(tmp_path / "model")
    obs = ds[["ssh"]].isel(time=[3, 11, 20]).copy(deep=True)
    obs["ssh"] = obs.ssh.where(rng.random(obs.ssh.shape) < 0.5)
    obs["ssh_error"] = xr.DataArray(0.05, attrs={"units": "m"})
    io.write_netcdf(obs, tmp_path / "obs.nc")
    return ds, tmp_path / "model", tmp_path / "lib.nc", tmp_path / "obs.nc"


@pytest.mark.parametrize("mode", ["global", "local", "hybrid"])
def test_what_a_worker_receives_rebuilds_the_prepared_sampler(tmp_path, mode):
    """In process, no cluster: the pickled recipe gives the same analyses, without re-embedding the library."""
    import pickle

    import torch

    from oceanda.analysis.assimilate import _analyse_remote, _Remote

    _, model, lib_path, obs_path = _tiny(tmp_path, field=mode == "global")
    _, enc = api.load_model(model)
    lib = Library.open(lib_path)
    sampler = sampler_for(mode, enc).prepare(lib, cache_dir=None, seed=2)
    inputs = sampler.read_obs(xr.open_dataset(obs_path), lib)
    blob = pickle.dumps(_Remote(sampler, seed=2))
    assert len(blob) < 200_000  # the encoders, the settings, the lazy library and its embeddings: no states
    threads = torch.get_num_threads()
    try:
        remote = pickle.loads(blob)
        remote.library._embed_local = None  # a worker never re-embeds: this would raise if it tried
        got = [_analyse_remote(remote, x)[0] for x in inputs]
    finally:
        torch.set_num_threads(threads)
    for x, b in zip(inputs, got):
        a = sampler.analyse(x, np.random.default_rng([2, x.index]))
        assert np.array_equal(a.members, b.members) and np.array_equal(a.mean, b.mean, equal_nan=True)
        assert np.array_equal(a.spread, b.spread, equal_nan=True) and a.ess == b.ess


def test_library_embedded_by_workers_reading_the_file_equals_the_local_embedding(tmp_path, client):
    _, _, lib_path, _ = _tiny(tmp_path, n=40)
    w = np.random.default_rng(3).normal(size=(64, 5)).astype(np.float32)

    def embed(states):  # any callable: pickled to the workers
        return np.tanh(states.reshape(len(states), -1) @ w)

    local = Library.open(lib_path).embeddings(embed, "k", cache_dir=None, chunk=7)
    lib = Library.open(lib_path)
    z = lib.embeddings(embed, "k", cache_dir=tmp_path / "cache", chunk=7, client=client)
    assert z.dtype == np.float32 and z.shape == (40, 5) and np.array_equal(z, local)
    assert not lib.in_memory  # the states were read by the workers, never loaded here
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache the client wrote is whole: used, no warning
        again = Library.open(lib_path).embeddings(embed, "k", cache_dir=tmp_path / "cache", chunk=7)
    assert np.array_equal(again, local)
    # workers that cannot read the library file: one line naming it and the states
    moved = Library.open(lib_path)
    moved.scan()
    lib_path.rename(tmp_path / "elsewhere.nc")
    with pytest.raises(OceandaError, match=r"lib\.nc: embedding time indices \d+-\d+ failed on a dask worker \(FileNotFoundError") as e:
        moved.embeddings(embed, "k2", cache_dir=None, chunk=7, client=client)
    assert "\n" not in str(e.value)


def test_a_failing_time_is_one_line_naming_it_and_the_others_match(tmp_path, client):
    ds, model, lib_path, obs_path = _tiny(tmp_path)
    _, enc = api.load_model(model)
    lib = Library.open(lib_path)
    sampler = sampler_for(None, enc).prepare(lib, cache_dir=None)
    inputs = sampler.read_obs(xr.open_dataset(obs_path), lib)
    local = analyse_times(sampler, inputs, seed=5)
    dist = analyse_times(sampler, inputs, seed=5, scheduler=client)
    for a, b in zip(local, dist):
        assert np.array_equal(a.members, b.members) and np.array_equal(a.mean, b.mean) and a.ess == b.ess
    # the workers' warnings are issued here, as the local run issues them
    degenerate = sampler_for(None, enc, SamplerSettings(min_ess=1e4)).prepare(lib, cache_dir=None)
    with pytest.warns(DegenerateWeightsWarning) as here:
        analyse_times(degenerate, inputs[:1], seed=5)
    with pytest.warns(DegenerateWeightsWarning) as there:
        analyse_times(degenerate, inputs[:1], seed=5, scheduler=client)
    assert sorted(str(w.message) for w in here) == sorted(str(w.message) for w in there)
    # workers that cannot read the library file (not on a shared file system): one line naming the time
    moved = sampler_for(None, enc).prepare(Library.open(lib_path), cache_dir=None)
    lib_path.rename(tmp_path / "elsewhere.nc")
    with pytest.raises(OceandaError, match=r"^time 2001-01-\d\d.*: analysis failed on a dask worker \(FileNotFound") as e:
        analyse_times(moved, inputs, seed=5, scheduler=client)
    assert "\n" not in str(e.value)


@pytest.mark.slow  # worker processes import torch: seconds each
def test_cli_scheduler_address_and_local_n_write_the_local_analysis(tmp_path, cluster):
    from oceanda.cli import main

    _, model, lib_path, obs_path = _tiny(tmp_path)
    base = ["assimilate", "--model", str(model), "--library", str(lib_path), "--obs", str(obs_path), "--members", "4",
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    outs = {}
    for name, extra in [("threads", []), ("address", ["--scheduler", cluster.scheduler_address]),
                        ("local", ["--scheduler", "local:1"])]:
        assert main([*base, "--out", str(tmp_path / f"{name}.nc"), *extra]) == 0
        outs[name] = xr.load_dataset(tmp_path / f"{name}.nc")
    for name in ("address", "local"):
        _same(outs["threads"].drop_attrs(), outs[name].drop_attrs())
        assert outs[name].attrs["mode"] == "local"


@pytest.mark.parametrize("bad", ["local:0", "local:x", "local:", "local:2000"])
def test_bad_local_worker_counts_are_refused_before_any_work(tmp_path, bad, capsys):
    from oceanda.cli import main

    with pytest.raises(ConfigurationError, match="expected local:N with N an integer from 1 to 1024"):
        api._check_scheduler(bad)
    _, model, lib_path, obs_path = _tiny(tmp_path)
    rc = main(["assimilate", "--model", str(model), "--library", str(lib_path), "--obs", str(obs_path),
               "--out", str(tmp_path / "a.nc"), "--scheduler", bad, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--scheduler" in err and len(err.splitlines()) == 1 and not (tmp_path / "a.nc").exists()
