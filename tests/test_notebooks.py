"""Every notebook in notebooks/ runs top to bottom, with small sizes, in a kernel of this interpreter.

The notebooks read ``OCEANDA_NB_SMALL=1`` and shrink their problem sizes; they write only to temporary
directories. nbclient starts the ``python3`` kernel: jupyter_client replaces the kernelspec's
``python`` by ``sys.executable`` (and ipykernel's built-in spec is ``sys.executable`` itself), so the
kernel runs the interpreter running pytest -- checked below. Before the notebook's own cells the test
runs a set-up cell that makes any cartopy download fail, as ``conftest.py`` does for the other tests.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
EXPECTED = ["01_quickstart", "02_gaussian_theory", "03_lagrangian_drifters", "04_altimetry_vs_enkf",
            "05_bring_your_own_data"]
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

SETUP = """\
import sys, warnings
import cartopy.io
warnings.filterwarnings("error", category=cartopy.io.DownloadWarning)
def _refuse(self, format_dict):
    raise AssertionError(f"cartopy tried to download {self.url(format_dict)}")
cartopy.io.Downloader.acquire_resource = _refuse
print("KERNEL_EXECUTABLE=" + sys.executable)
"""


def _outputs(nb, kind: str) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if kind in o.get("data", {})]


def _repo_caches() -> set[Path]:
    """Files a notebook must never write into the repository (library caches, outputs next to the notebooks)."""
    found = {p for p in (ROOT / "sample_data").rglob("library_cache") if p.is_dir()}
    found |= {p for p in NOTEBOOK_DIR.iterdir() if p.suffix != ".ipynb" and p.name != "README.md"}
    return found


def test_the_five_notebooks_are_there_without_outputs():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code, path
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name}: stored with outputs"
        prose = [c for c in nb.cells if c.cell_type == "markdown"]
        assert len(prose) >= 3 and nb.cells[0].cell_type == "markdown", f"{path.name}: needs prose explaining it"
        assert sum(len(c.source) for c in prose) > 800, f"{path.name}: too little explanation"
        assert path.stat().st_size < 100_000, f"{path.name}: keep notebooks small"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("OCEANDA_NB_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # headless, figures become outputs
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    before = _repo_caches()
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(SETUP))
    client = NotebookClient(nb, kernel_name="python3", timeout=900, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    print(f"{path.name}: {seconds:.1f} s")
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("output_type") == "stream")
    assert f"KERNEL_EXECUTABLE={sys.executable}" in text or \
        os.path.realpath(text.split("KERNEL_EXECUTABLE=")[-1].strip()) == os.path.realpath(sys.executable)
    assert _outputs(nb, "image/png"), f"{path.name}: no figure was drawn"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert _repo_caches() == before, f"{path.name} wrote into the repository: {_repo_caches() - before}"
