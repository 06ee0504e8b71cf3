"""oceanda.io under hostile conditions: OS failures, killed runs, odd file kinds, damaged and huge files, calendars.

Each failure must be one :class:`OceandaError` line naming the path, leave no file at the output path or
beside it, and never hang; the CLI must end cleanly on Ctrl-C, out of memory and a closed stdout.
"""

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from oceanda import cli, io
from oceanda.errors import CheckpointError, DataValidationError, OceandaError, OutputError, OutputExistsError

from conftest import make_state_dataset

ROOT = os.geteuid() == 0  # root ignores file permissions: chmod tests are simulated instead


def leftovers(folder):
    """Temporary files or folders oceanda may have left in ``folder`` (recursively)."""
    return sorted(str(p) for p in Path(folder).rglob("*") if p.name.endswith(".tmp"))


def one_line(exc_info, path):
    msg = str(exc_info.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


@pytest.fixture
def small_ds():
    return make_state_dataset(nt=3, ny=6, nx=8, layers=False)


def dead_pid():
    """A pid that belonged to a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ----------------------------------------------------------------------------------------------
# 1. OS errors: one line naming the path
# ----------------------------------------------------------------------------------------------


def writers(ds):
    """Every io writer, as ``name -> callable(path)``."""
    import matplotlib.pyplot as plt

    def figure(path):
        fig = plt.figure(figsize=(1, 1))
        try:
            return io.save_figure(fig, path, overwrite=False)
        finally:
            plt.close(fig)

    return {
        "write_netcdf": lambda p: io.write_netcdf(ds, p),
        "write_json": lambda p: io.write_json({"a": 1.5}, p),
        "write_text": lambda p: io.write_text("text\n", p),
        "save_figure": figure,
        "save_checkpoint": lambda p: io.save_checkpoint(p, {"w": __import__("torch").zeros(3)}, {"a": 1}),
        "prepare_output_dir": lambda p: io.prepare_output_dir(p),
        "make_dir": lambda p: io.make_dir(p),
        "atomic_dir": lambda p: _atomic_dir_write(p),
    }


def _atomic_dir_write(path):
    with io.atomic_dir(path) as tmp:
        io.write_text("x", tmp / "a.txt")
    return path


WRITERS = ["write_netcdf", "write_json", "write_text", "save_figure", "save_checkpoint", "prepare_output_dir",
           "make_dir", "atomic_dir"]


@pytest.mark.parametrize("writer", WRITERS)
def test_out_under_a_regular_file_is_one_line_naming_the_file_in_the_way(tmp_path, small_ds, writer):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("I am a file")
    for target in (blocker / "out.nc", blocker / "sub" / "deeper" / "out.nc"):
        with pytest.raises(OutputError) as e:
            writers(small_ds)[writer](target)
        msg = one_line(e, target)
        assert f"{blocker} is a file, not a folder" in msg and "expected" in msg
    assert blocker.read_text() == "I am a file" and leftovers(tmp_path) == []


@pytest.mark.parametrize("writer", WRITERS)
def test_a_300_character_name_is_one_line(tmp_path, small_ds, writer):
    target = tmp_path / ("n" * 300 + ".nc")
    with pytest.raises(OutputError, match="name too long") as e:
        writers(small_ds)[writer](target)
    one_line(e, target)
    deep = tmp_path / ("d" * 300) / "out.nc"  # a parent folder's name too long
    with pytest.raises(OutputError, match="name too long"):
        writers(small_ds)[writer](deep)
    assert list(tmp_path.iterdir()) == []


def test_a_name_just_under_the_limit_still_writes_atomically(tmp_path, small_ds):
    target = tmp_path / ("m" * 250 + ".nc")  # its temporary sibling would be too long unshortened
    io.write_netcdf(small_ds, target)
    assert target.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("writer", ["write_netcdf", "write_json", "write_text"])
def test_writing_onto_a_folder_is_one_line(tmp_path, small_ds, writer):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "keep").write_text("k")
    fn = {"write_netcdf": lambda: io.write_netcdf(small_ds, folder, overwrite=True),
          "write_json": lambda: io.write_json({}, folder, overwrite=True),
          "write_text": lambda: io.write_text("x", folder, overwrite=True)}[writer]
    with pytest.raises(OutputError, match="is a folder") as e:
        fn()
    one_line(e, folder)
    assert (folder / "keep").read_text() == "k" and leftovers(tmp_path) == []


@pytest.mark.skipif(ROOT, reason="root ignores permissions (simulated in the next test)")
@pytest.mark.parametrize("writer", WRITERS)
def test_read_only_folder_is_one_line(tmp_path, small_ds, writer):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied") as e:
            writers(small_ds)[writer](ro / "out")
        one_line(e, ro / "out")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("code, words", [(errno.EACCES, "(permission denied); expected a writable folder"),
                                         (errno.EROFS, "read-only file system"),
                                         (errno.ENOSPC, "(no space left on device); expected enough free disk space"),
                                         (errno.EDQUOT, "disk quota exceeded")])
def test_simulated_os_failures_while_creating_the_temporary_file(tmp_path, small_ds, monkeypatch, code, words):
    def refuse(path, suffix, folder=False):
        raise OSError(code, os.strerror(code), str(path.parent))

    monkeypatch.setattr(io, "_new_temp", refuse)
    for writer in ("write_netcdf", "write_json", "save_figure", "atomic_dir"):
        target = tmp_path / f"out_{writer}"
        with pytest.raises(OutputError) as e:
            writers(small_ds)[writer](target)
        assert words in one_line(e, target)
    assert list(tmp_path.iterdir()) == []


def test_simulated_permission_denied_for_folders(tmp_path, monkeypatch):
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if str(self).startswith(str(tmp_path)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    for fn in (io.make_dir, io.prepare_output_dir):
        with pytest.raises(OutputError, match=r"cannot write \(permission denied\)") as e:
            fn(tmp_path / "new")
        one_line(e, tmp_path / "new")


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("NetCDF: HDF error")])
def test_disk_full_while_writing_netcdf_leaves_nothing(tmp_path, small_ds, monkeypatch, failure):
    real = xr.Dataset.to_netcdf

    def half_written(self, path, *a, **k):
        real(self, path, *a, **k)  # a real, complete temporary file ...
        with open(path, "ab") as fh:
            fh.write(b"\0" * 1000)
        raise failure  # ... and then the disk is full

    monkeypatch.setattr(xr.Dataset, "to_netcdf", half_written)
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: types.SimpleNamespace(free=1024, total=10**9, used=10**9))
    target = tmp_path / "analysis.nc"
    with pytest.raises(OutputError) as e:
        io.write_netcdf(small_ds, target)
    assert "no space left on device" in one_line(e, target)
    assert list(tmp_path.iterdir()) == []


def test_an_unexplained_hdf_error_while_writing_still_names_the_path(tmp_path, small_ds, monkeypatch):
    def fail(self, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", fail)
    with pytest.raises(OutputError, match="HDF error; the disk may be full") as e:
        io.write_netcdf(small_ds, tmp_path / "a.nc")
    one_line(e, tmp_path / "a.nc")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_json_text_and_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    import torch

    real = Path.write_text

    def full(self, text, *a, **k):
        real(self, text[: len(text) // 2], *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    for fn, target in ((lambda p: io.write_json({"a": list(range(100))}, p), tmp_path / "r.json"),
                       (lambda p: io.write_text("x" * 100, p), tmp_path / "r.txt"),
                       (lambda p: io.save_checkpoint(p, {"w": torch.zeros(4)}, {"a": 1}), tmp_path / "model")):
        with pytest.raises(OutputError, match="no space left on device") as e:
            fn(target)
        one_line(e, target)
    assert list(tmp_path.iterdir()) == []  # the checkpoint folder this call made went too


def test_checkpoint_replaced_both_files_or_neither(tmp_path, monkeypatch):
    import torch

    io.save_checkpoint(tmp_path / "m", {"w": torch.ones(3)}, {"v": 1})
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    real = Path.write_text

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutputError):
        io.save_checkpoint(tmp_path / "m", {"w": torch.zeros(3)}, {"v": 2}, overwrite=True)
    monkeypatch.setattr(Path, "write_text", real)
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before


def test_a_bug_inside_a_writer_keeps_its_exception(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with io.atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("half")
            1 / 0
    assert list(tmp_path.iterdir()) == []


def test_a_lazy_input_that_fails_while_writing_is_not_called_a_disk_problem(tmp_path, small_ds):
    src = tmp_path / "in.nc"
    small_ds.to_netcdf(src, encoding={"ssh": {"zlib": True, "chunksizes": (1, 6, 8)}})
    damage_chunks(src, "ssh", np.random.default_rng(0), every_chunk=True)
    lazy = xr.open_dataset(src, chunks={})
    with pytest.raises(DataValidationError, match="an input could not be read") as e:
        io.write_netcdf(lazy, tmp_path / "out.nc")
    one_line(e, tmp_path / "out.nc")
    assert not (tmp_path / "out.nc").exists() and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# 2-3. atomic_dir, temporary names, stale temporary files of dead runs
# ----------------------------------------------------------------------------------------------


def test_temporary_names_carry_the_pid_and_keep_the_suffix(tmp_path):
    seen = []
    with io.atomic_path(tmp_path / "out.nc", suffix=".nc.tmp") as tmp:
        seen.append(tmp.name)
        tmp.write_text("x")
    with io.atomic_dir(tmp_path / "model") as tmp:
        seen.append(tmp.name)
    pid = os.getpid()
    assert seen[0].startswith(f".out.nc.{pid}.") and seen[0].endswith(".nc.tmp")
    assert seen[1].startswith(f".model.{pid}.") and seen[1].endswith(".tmp")
    assert io._temp_pattern("out.nc").fullmatch(seen[0]) and io._temp_pattern("model").fullmatch(seen[1])
    assert not io._temp_pattern("out").fullmatch(seen[0])  # another final name's temporary is not ours


def test_atomic_dir_renames_into_place_only_on_success(tmp_path):
    final = tmp_path / "model"
    with io.atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and not final.exists()
        io.write_json({"a": 1}, tmp / "config.json")
        (tmp / "resume").mkdir()
    assert (final / "config.json").exists() and (final / "resume").is_dir()
    with pytest.raises(OutputExistsError, match="not empty"):
        with io.atomic_dir(final):
            pass
    with pytest.raises(RuntimeError, match="training diverged"):
        with io.atomic_dir(final, overwrite=True) as tmp:
            io.write_json({"a": 2}, tmp / "config.json")
            raise RuntimeError("training diverged")
    assert io.read_json(final / "config.json") == {"a": 1} and leftovers(tmp_path) == []
    with io.atomic_dir(final, overwrite=True) as tmp:
        io.write_json({"a": 3}, tmp / "config.json")
    assert io.read_json(final / "config.json") == {"a": 3} and sorted(os.listdir(final)) == ["config.json"]
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_atomic_dir_replaces_an_empty_folder_and_refuses_a_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with io.atomic_dir(tmp_path / "empty") as tmp:
        io.write_text("x", tmp / "a.txt")
    assert (tmp_path / "empty" / "a.txt").exists()
    (tmp_path / "f").write_text("file")
    with pytest.raises(OutputExistsError, match="not a folder"):
        with io.atomic_dir(tmp_path / "f", overwrite=True):
            pass
    assert (tmp_path / "f").read_text() == "file"


def test_ctrl_c_inside_atomic_writers_leaves_nothing(tmp_path):
    for ctx in (io.atomic_path(tmp_path / "a.nc"), io.atomic_dir(tmp_path / "d")):
        with pytest.raises(KeyboardInterrupt):
            with ctx as tmp:
                (tmp / "x").write_text("x") if tmp.is_dir() else tmp.write_text("x")
                raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_dead_runs_are_removed_live_ones_kept(tmp_path, small_ds):
    dead = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stale_file = tmp_path / f".out.nc.{dead}.abcdefgh.nc.tmp"
        stale_dir = tmp_path / f".out.nc.{dead}.qwertyui.tmp"
        live_file = tmp_path / f".out.nc.{live.pid}.abcdefgh.nc.tmp"
        other_name = tmp_path / f".other.nc.{dead}.abcdefgh.nc.tmp"
        not_ours = tmp_path / ".out.nc.keepme.tmp"
        stale_file.write_bytes(b"half a file")
        stale_dir.mkdir()
        (stale_dir / "inside").write_text("x")
        for p in (live_file, other_name, not_ours):
            p.write_bytes(b"x")
        io.write_netcdf(small_ds, tmp_path / "out.nc")
        assert not stale_file.exists() and not stale_dir.exists()
        assert live_file.exists() and other_name.exists() and not_ours.exists()
    finally:
        live.kill()
        live.wait()


def test_stale_temporary_folder_of_a_killed_atomic_dir_is_removed_by_the_next_run(tmp_path):
    code = ("import os, signal, sys\nfrom oceanda import io\n"
            "with io.atomic_dir(sys.argv[1]) as tmp:\n"
            "    (tmp / 'resume').mkdir()\n"
            "    io.write_text('x', tmp / 'resume' / 'state.txt')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model")], timeout=60)
    assert r.returncode == -signal.SIGKILL
    assert not (tmp_path / "model").exists()  # never a folder holding only resume/
    assert len(leftovers(tmp_path)) == 1
    with io.atomic_dir(tmp_path / "model") as tmp:
        io.write_text("done", tmp / "config.json")
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_an_output_folder_prepared_again_loses_the_dead_runs_temporaries(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = dead_pid()
    stale = [out / f".metrics.json.{dead}.abcdefgh.json.tmp", out / f".a.5.nc.{dead}.zzzzzzzz.nc.tmp"]
    for p in stale:
        p.write_text("{")
    (out / f".fig.png.{dead}.abcdefgh.png.tmp").mkdir()
    mine = out / f".x.nc.{os.getpid()}.abcdefgh.nc.tmp"
    mine.write_text("being written")
    io.prepare_output_dir(out, overwrite=True)
    assert sorted(os.listdir(out)) == [mine.name]  # this (live) process's own is kept
    mine.unlink()
    for p in stale:
        p.write_text("{")
    io.prepare_output_dir(out)  # a folder holding only a dead run's debris counts as empty
    assert os.listdir(out) == []


def test_remove_stale_temps_reports_what_it_removed(tmp_path):
    stale = tmp_path / f".x.json.{dead_pid()}.zzzzzzzz.json.tmp"
    stale.write_text("{")
    assert io.remove_stale_temps(tmp_path / "x.json") == [stale]
    assert io.remove_stale_temps(tmp_path / "missing" / "x.json") == []


# ----------------------------------------------------------------------------------------------
# 4. Reading: file kinds, external storage, damaged files
# ----------------------------------------------------------------------------------------------


def in_thread(fn, timeout=10):
    """Run ``fn`` in a thread; fail (not hang) if it blocks."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            out["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked"
    return out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "states.nc"
    os.mkfifo(fifo)
    for fn in (lambda: io.open_states(fifo), lambda: io.open_obs(fifo), lambda: io.read_netcdf(fifo),
               lambda: io.read_json(fifo), lambda: io.open_states(str(tmp_path / "*.nc"))):
        out = in_thread(fn)
        assert isinstance(out.get("exc"), DataValidationError), out
        assert "FIFO" in str(out["exc"]) and str(fifo) in str(out["exc"])


def test_a_fifo_in_a_checkpoint_is_refused_without_blocking(tmp_path):
    import torch

    io.save_checkpoint(tmp_path / "m", {"w": torch.ones(2)}, {"a": 1})
    (tmp_path / "m" / "model.safetensors").unlink()
    os.mkfifo(tmp_path / "m" / "model.safetensors")
    out = in_thread(lambda: io.load_checkpoint(tmp_path / "m"))
    assert isinstance(out.get("exc"), CheckpointError) and "FIFO" in str(out["exc"])


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero", "/dev/urandom"])
def test_character_devices_are_refused(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    out = in_thread(lambda: io.open_states(device))
    assert isinstance(out.get("exc"), DataValidationError) and "character device" in str(out["exc"])
    out = in_thread(lambda: io.read_json(device))
    assert isinstance(out.get("exc"), DataValidationError)


def test_a_socket_is_refused():
    folder = tempfile.mkdtemp(prefix="oda")  # short: socket paths are limited to ~100 bytes
    path = os.path.join(folder, "s.nc")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(path)
        with pytest.raises(DataValidationError, match="socket"):
            io.open_states(path)
    finally:
        s.close()
        shutil.rmtree(folder)


def test_a_folder_that_is_not_a_zarr_store_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.nc").write_text("x")
    with pytest.raises(DataValidationError, match="is a folder, not a zarr store") as e:
        io.open_states(tmp_path / "d")
    one_line(e, tmp_path / "d")
    (tmp_path / "e.zarr").mkdir()
    with pytest.raises(DataValidationError) as e:
        io.open_states(tmp_path / "e.zarr")
    one_line(e, tmp_path / "e.zarr")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_zarr_store_still_opens(tmp_path, small_ds):
    small_ds.to_zarr(tmp_path / "s.zarr")
    back = io.open_states(tmp_path / "s.zarr")
    np.testing.assert_array_equal(back.ssh.values, small_ds.ssh.values)


def test_a_missing_input_and_a_too_long_input_name_are_one_line(tmp_path):
    for p in (tmp_path / "missing.nc", tmp_path / "plain" / "x.nc", tmp_path / ("q" * 300 + ".nc")):
        with pytest.raises(DataValidationError) as e:
            io.open_states(p)
        one_line(e, p)


def test_hdf5_external_storage_is_refused(tmp_path, small_ds):
    import h5py

    raw = tmp_path / "elsewhere.raw"
    np.arange(48, dtype="<f4").tofile(raw)
    path = tmp_path / "external.nc"
    small_ds.to_netcdf(path)
    with h5py.File(path, "r+") as f:
        f.create_dataset("sst", shape=(48,), dtype="<f4", external=[(str(raw), 0, 48 * 4)])
    with pytest.raises(DataValidationError, match="'sst' stores its data in another file") as e:
        io.open_states(path)
    one_line(e, path)
    with pytest.raises(DataValidationError, match="another file"):
        io.read_netcdf(path)
    linked = tmp_path / "linked.nc"
    small_ds.to_netcdf(linked)
    with h5py.File(linked, "r+") as f:
        f["sst"] = h5py.ExternalLink(str(path), "/ssh")
    with pytest.raises(DataValidationError, match="a link into"):
        io.open_states(linked)


@pytest.mark.filterwarnings("ignore:You are writing invalid netcdf")
@pytest.mark.parametrize("dtype", ["float16", "complex64"])
def test_hdf5_types_netcdf_does_not_define_are_refused_not_a_crash(tmp_path, small_ds, dtype):
    ds = small_ds.copy()
    ds["ssh"] = ds["ssh"].astype(dtype)  # netCDF-C reads float16 as a string type and crashes on its values
    path = tmp_path / f"{dtype}.nc"
    ds.to_netcdf(path, engine="h5netcdf", invalid_netcdf=True)
    with pytest.raises(DataValidationError, match=f"HDF5 type {dtype}") as e:
        io.open_states(path)
    one_line(e, path)


def test_a_plain_netcdf4_file_passes_the_external_storage_check(tmp_path, small_ds):
    path = tmp_path / "plain.nc"
    small_ds.to_netcdf(path, encoding={"ssh": {"zlib": True}})
    io._refuse_external_storage(path)
    assert io.open_states(path).sizes["time"] == 3


def damage_chunks(path, variable, rng, every_chunk=False):
    """Flip bytes inside the compressed chunks of ``variable`` (found with h5py); return the offsets."""
    import h5py

    with h5py.File(path, "r") as f:
        d = f[variable]
        chunks = [d.id.get_chunk_info(i) for i in range(d.id.get_num_chunks())]
    data = bytearray(Path(path).read_bytes())
    picked = chunks if every_chunk else [chunks[int(rng.integers(len(chunks)))]]
    offsets = []
    for info in picked:
        at = info.byte_offset + int(rng.integers(2, max(info.size - 4, 3)))
        for k in range(4):
            data[at + k] ^= 0xA5
        offsets.append(at)
    Path(path).write_bytes(bytes(data))
    return offsets


@pytest.fixture(scope="module")
def compressed_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("flip") / "clean.nc"
    ds = make_state_dataset(nt=6, ny=16, nx=16, layers=False)
    ds.to_netcdf(path, encoding={"ssh": {"zlib": True, "chunksizes": (1, 16, 16)}})
    return path


@pytest.mark.parametrize("seed", range(30))
def test_bit_flips_in_the_data_are_one_line_naming_the_file(tmp_path, compressed_file, seed):
    path = tmp_path / "flipped.nc"
    shutil.copy(compressed_file, path)
    damage_chunks(path, "ssh", np.random.default_rng(seed))
    with pytest.raises(DataValidationError) as e:
        io.open_states(path)
    assert "cannot be read as NetCDF" in one_line(e, path)
    with pytest.raises(DataValidationError):
        io.read_netcdf(path)


@pytest.mark.filterwarnings("ignore:.*default observation error")
@pytest.mark.parametrize("seed", range(8))
def test_bit_flips_anywhere_are_refused_or_read_never_a_traceback(tmp_path, compressed_file, seed):
    rng = np.random.default_rng(100 + seed)
    clean = compressed_file.read_bytes()
    like = io.open_states(compressed_file).load()
    for i in range(6):
        data = bytearray(clean)
        at = int(rng.integers(len(data)))
        data[at] ^= 1 << int(rng.integers(8))
        path = tmp_path / f"f{i}.nc"
        path.write_bytes(bytes(data))
        for fn in (lambda: io.open_states(path), lambda: io.open_obs(path, like=like),
                   lambda: io.open_states(path, chunks=None), lambda: io.read_netcdf(path)):
            try:
                fn()
            except OceandaError as exc:
                assert "\n" not in str(exc) and str(path) in str(exc)


def test_damage_is_found_at_opening_even_without_value_checks(tmp_path, compressed_file):
    path = tmp_path / "early.nc"
    shutil.copy(compressed_file, path)
    damage_chunks(path, "ssh", np.random.default_rng(1))
    with pytest.raises(DataValidationError, match="cannot be read as NetCDF") as e:
        io.open_states(path, check_values=False)  # small: read once anyway
    one_line(e, path)


def test_read_errors_names_the_file_for_damage_met_late(tmp_path, compressed_file, monkeypatch):
    path = tmp_path / "late.nc"
    shutil.copy(compressed_file, path)
    damage_chunks(path, "ssh", np.random.default_rng(1), every_chunk=True)
    monkeypatch.setattr(io, "INTEGRITY_READ_BYTES", 0)  # as for a file too large to read at opening
    lazy = io.open_states(path, check_values=False)
    with pytest.raises(DataValidationError) as e:
        with io.read_errors(path):
            lazy.ssh.mean().compute()
    one_line(e, path)
    with pytest.raises(ZeroDivisionError):  # not a read error: untouched
        with io.read_errors(path):
            1 / 0


def test_garbage_and_truncated_files_are_one_line(tmp_path, compressed_file):
    for name, data in (("garbage.nc", os.urandom(4000)), ("empty.nc", b""),
                       ("half.nc", compressed_file.read_bytes()[:3000]), ("sig.nc", b"\x89HDF\r\n\x1a\n" + b"\0" * 600)):
        path = tmp_path / name
        path.write_bytes(data)
        for fn in (io.open_states, io.read_netcdf):
            with pytest.raises(DataValidationError) as e:
                fn(path)
            one_line(e, path)


# ----------------------------------------------------------------------------------------------
# 5. Declared sizes against memory
# ----------------------------------------------------------------------------------------------


def huge_declared(path, nt, ny, nx, chunk=(1, 512, 512)):
    """A small compressed file declaring (nt, ny, nx) float32 ``ssh`` with one slice written."""
    import netCDF4

    with netCDF4.Dataset(path, "w") as nc:
        for d, n in (("time", nt), ("y", ny), ("x", nx)):
            nc.createDimension(d, n)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:] = np.arange(nt)
        for d, n in (("y", ny), ("x", nx)):
            v = nc.createVariable(d, "f8", (d,))
            v.units = "km"
            v[:] = np.arange(n) * 10.0
        v = nc.createVariable("ssh", "f4", ("time", "y", "x"), zlib=True, chunksizes=chunk, fill_value=np.float32(np.nan))
        v.units = "m"
        v[0, :8, :8] = np.ones((8, 8), "f4")
    return path


def test_a_small_file_declaring_20_gb_is_refused_before_reading(tmp_path, monkeypatch):
    path = huge_declared(tmp_path / "huge.nc", 20000, 512, 512)
    assert path.stat().st_size < 2**20
    monkeypatch.setattr(io, "available_memory", lambda: 4 * 2**30)
    with pytest.raises(DataValidationError, match="GiB") as e:
        io.open_states(path)
    assert "19.5 GiB" in one_line(e, path)
    with pytest.raises(DataValidationError, match="GiB"):
        io.read_netcdf(path)
    assert io.open_states(path, check_values=False).sizes["time"] == 20000  # lazily, one chunk at a time: fine


def test_a_file_declaring_a_tebibyte_is_refused_with_the_real_memory(tmp_path):
    path = huge_declared(tmp_path / "tib.nc", 4096, 8192, 8192, chunk=(4, 1024, 1024))
    with pytest.raises(DataValidationError, match="iB") as e:  # TiB, or GiB if a chunk is already too large
        io.open_states(path)
    one_line(e, path)
    with pytest.raises(DataValidationError, match="GiB"):
        io.read_netcdf(path)


def test_a_variable_in_millions_of_chunks_is_refused_before_opening(tmp_path):
    path = huge_declared(tmp_path / "tiny_chunks.nc", 4096, 1024, 1024, chunk=(1, 32, 32))
    with pytest.raises(DataValidationError, match="chunks") as e:
        io.open_states(path)
    assert "4.19e+06 chunks" in one_line(e, path)


def test_a_zero_size_dimension_is_one_line(tmp_path, small_ds):
    path = tmp_path / "empty.nc"
    small_ds.isel(y=slice(0, 0)).to_netcdf(path)
    with pytest.raises(DataValidationError, match="dimension 'y' has size 0") as e:
        io.open_states(path)
    one_line(e, path)


@pytest.mark.parametrize("change, words", [
    (lambda ds: ds.assign_coords(lat=ds.lat + 100), "latitude 'lat' has values in"),
    (lambda ds: ds.assign_coords(lon=ds.lon + 1e6), "longitude 'lon' has values in"),
    (lambda ds: ds.assign_coords(lat=ds.lat.where(ds.lat > ds.lat.min())), "coordinate 'lat' has NaN values"),
    (lambda ds: ds.drop_vars("time"), "dimension 'time' has no coordinate"),
])
def test_impossible_coordinates_are_refused(tmp_path, small_ds, change, words):
    path = tmp_path / "c.nc"
    ds = change(small_ds)
    for c in ("lat", "lon"):
        ds[c].attrs.update(units=f"degrees_{'north' if c == 'lat' else 'east'}")
    ds.to_netcdf(path)
    with pytest.raises(DataValidationError, match=words) as e:
        io.open_states(path)
    one_line(e, path)


def test_one_chunk_larger_than_memory_is_refused_even_lazily(tmp_path, monkeypatch, small_ds):
    path = tmp_path / "s.nc"
    small_ds.to_netcdf(path)
    monkeypatch.setattr(io, "available_memory", lambda: 100)  # one (6, 8) float64 step is 384 bytes
    for chunks in ({"time": 1}, None):
        with pytest.raises(DataValidationError, match="one (chunk|time step) of variable 'ssh'") as e:
            io.open_states(path, chunks=chunks, check_values=False)
        one_line(e, path)


def test_valid_files_are_read_exactly_as_before(tmp_path, small_ds):
    path = io.write_netcdf(small_ds, tmp_path / "s.nc")
    for chunks in ("auto", None):
        back = io.open_states(path, chunks=chunks)
        np.testing.assert_array_equal(back.ssh.values, small_ds.ssh.values.astype(np.float32))


# ----------------------------------------------------------------------------------------------
# 6. cftime calendars
# ----------------------------------------------------------------------------------------------

CALENDARS = ["360_day", "noleap", "all_leap", "julian"]


def calendar_file(path, calendar, start=0.5, nt=4, units="days since 2000-01-01"):
    ds = make_state_dataset(nt=nt, ny=6, nx=8, layers=False)
    ds = ds.assign_coords(time=("time", start + np.arange(nt, dtype=float), {"units": units, "calendar": calendar}))
    ds.to_netcdf(path)
    return path


@pytest.mark.filterwarnings("ignore:.*default observation error")
@pytest.mark.parametrize("calendar", CALENDARS)
def test_cftime_calendars_are_read_validated_and_written_back(tmp_path, calendar):
    import cftime

    path = calendar_file(tmp_path / "a.nc", calendar)
    states = io.open_states(path)
    first = states.time.values[0]
    assert isinstance(first, cftime.datetime) and first.calendar == calendar
    obs = io.open_obs(path, like=states)
    assert obs.sizes["time"] == 4
    out = io.write_netcdf(states, tmp_path / "out.nc")
    back = io.open_states(out)
    assert list(back.time.values) == list(states.time.values)
    assert back.time.encoding["calendar"] == calendar
    second = calendar_file(tmp_path / "b.nc", calendar, start=10.5)
    both = io.open_states([path, second])
    assert both.sizes["time"] == 8
    with pytest.raises(DataValidationError, match="time"):  # overlapping times still refused in cftime
        io.open_states([path, path])


def test_months_since_in_a_360_day_calendar_reads(tmp_path):
    path = calendar_file(tmp_path / "m.nc", "360_day", units="months since 2000-01-01")
    assert io.open_states(path).time.values[1].month == 2


def test_months_since_in_a_real_calendar_is_one_line_without_xarrays_hint(tmp_path):
    path = calendar_file(tmp_path / "m.nc", "noleap", units="months since 2000-01-01")
    with pytest.raises(DataValidationError, match="times cannot be decoded") as e:
        io.open_states(path)
    assert "installing cftime" not in one_line(e, path)


# ----------------------------------------------------------------------------------------------
# 7. The CLI shell: Ctrl-C, out of memory, closed stdout
# ----------------------------------------------------------------------------------------------


def fake_verb(run=None, add=None):
    return types.SimpleNamespace(HELP="fake", add_arguments=add or (lambda p: None), run=run or (lambda a: 0))


def test_ctrl_c_while_loading_the_verbs_is_one_line_exit_130(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_load_verbs", interrupted)
    assert cli.main(["demo"]) == 130
    err = capsys.readouterr().err
    assert err == "oceanda: interrupted\n"


@pytest.mark.parametrize("where", ["add_arguments", "run"])
def test_ctrl_c_while_building_the_parser_or_running_is_one_line(monkeypatch, capsys, where):
    def boom(*a):
        raise KeyboardInterrupt

    verb = fake_verb(**({"add": boom} if where == "add_arguments" else {"run": boom}))
    monkeypatch.setattr(cli, "_load_verbs", lambda: {"fake": verb})
    assert cli.main(["fake"]) == 130
    assert capsys.readouterr().err == "oceanda: interrupted\n"


def test_out_of_memory_is_one_line_exit_2(monkeypatch, capsys):
    def big(args):
        raise MemoryError("Unable to allocate 8.00 TiB for an array with shape (100000000, 10000)")

    monkeypatch.setattr(cli, "_load_verbs", lambda: {"fake": fake_verb(run=big)})
    assert cli.main(["fake"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("oceanda fake: error: out of memory (Unable to allocate 8.00 TiB")

    def torch_oom(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:114] DefaultCPUAllocator: can't allocate memory: you tried")

    monkeypatch.setattr(cli, "_load_verbs", lambda: {"fake": fake_verb(run=torch_oom)})
    assert cli.main(["fake"]) == 2
    assert "out of memory" in capsys.readouterr().err


def test_other_runtime_errors_keep_their_traceback(monkeypatch):
    def bug(args):
        raise RuntimeError("a real bug")

    monkeypatch.setattr(cli, "_load_verbs", lambda: {"fake": fake_verb(run=bug)})
    with pytest.raises(RuntimeError, match="a real bug"):
        cli.main(["fake"])


def test_a_closed_stdout_ends_quietly(monkeypatch, capsys):
    r, w = os.pipe()
    os.close(r)
    stdout = os.fdopen(w, "w", buffering=1)

    def chatty(args):
        for _ in range(10000):
            print("a line of a long listing", file=sys.stdout)
        return 0

    monkeypatch.setattr(cli, "_load_verbs", lambda: {"fake": fake_verb(run=chatty)})
    monkeypatch.setattr(sys, "stdout", stdout)
    try:
        assert cli.main(["fake"]) == 141
    finally:
        monkeypatch.undo()
        with contextlib.suppress(OSError):  # the pipe's lost buffer: irrelevant here
            stdout.close()
    assert "Traceback" not in capsys.readouterr().err


def test_a_broken_pipe_that_is_not_stdout_keeps_its_traceback(monkeypatch):
    def pipe_bug(args):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(cli, "_load_verbs", lambda: {"fake": fake_verb(run=pipe_bug)})
    with pytest.raises(BrokenPipeError):
        cli.main(["fake"])


def test_an_oceanda_error_while_building_the_parser_is_one_line(monkeypatch, capsys):
    def bad(p):
        raise OceandaError("settings.json: broken; expected JSON")

    monkeypatch.setattr(cli, "_load_verbs", lambda: {"fake": fake_verb(add=bad)})
    assert cli.main(["fake"]) == 2
    assert capsys.readouterr().err == "oceanda: error: settings.json: broken; expected JSON\n"


def test_cli_module_imports_nothing_heavy():
    code = "import sys, oceanda.cli; print(sorted(m for m in ('torch', 'xarray', 'numpy', 'oceanda.io') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_sigint_during_start_up_prints_one_line(delay, tmp_path):
    """Ctrl-C while a verb is still importing its modules (sample-data runs for minutes, so it is always running)."""
    out = tmp_path / "data"
    # SIGINT as at a terminal: a job started in the background by a non-interactive shell inherits SIGINT ignored,
    # and a signal that arrives before the CLI installs its handler would then be lost (the run finishes: rc 0)
    p = subprocess.Popen([sys.executable, "-m", "oceanda", "sample-data", "--testbed", "qg", "--size", "tiny",
                          "--out", str(out), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    # -SIGINT: after the one line, CPython sometimes (~1 in 4 at 2-3 s, `python -m` only) ends the process by
    # re-raising SIGINT at exit, the POSIX way to report an interrupt; a shell shows both as status 130
    assert p.returncode in (130, -signal.SIGINT) and err == "oceanda: interrupted\n", (p.returncode, err)
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# 8. read_json
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, words", [
    (b'{"a": "\xff\xfe"}', "not UTF-8"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b'{"a": ' + b"9" * 5000 + b"}", "not valid JSON"),
    (b'{"a": 1', "not valid JSON"),
    (b"", "not valid JSON"),
])
def test_bad_json_is_one_line_naming_the_file(tmp_path, content, words):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(DataValidationError, match=words) as e:
        io.read_json(path)
    one_line(e, path)


def test_huge_json_is_refused_before_reading(tmp_path):
    path = tmp_path / "report.json"
    with open(path, "wb") as fh:
        fh.truncate(17 * 2**20)  # sparse: nothing is written, the size is what counts
    with pytest.raises(DataValidationError, match="MiB") as e:
        io.read_json(path)
    one_line(e, path)


def test_json_with_a_bom_and_a_folder_as_json(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert io.read_json(path) == {"a": 1}
    with pytest.raises(DataValidationError, match="is a folder"):
        io.read_json(tmp_path)
    with pytest.raises(OceandaError, match="no such file"):
        io.read_json(tmp_path / "missing.json")


def test_a_bad_checkpoint_config_is_a_checkpoint_error(tmp_path):
    import torch

    io.save_checkpoint(tmp_path / "m", {"w": torch.ones(2)}, {"a": 1})
    (tmp_path / "m" / "config.json").write_bytes(b"[" * 100000)
    with pytest.raises(CheckpointError, match="config.json"):
        io.load_checkpoint(tmp_path / "m")
