r"""The notebooks in ``notebooks/`` run top to bottom (CI executes them on
every ``pytest`` run): any exception in any cell fails the test.

Each notebook is executed with :mod:`nbclient` in a fresh temporary working
directory (so run outputs land there), with the non-GUI ``Agg`` matplotlib
backend and with the kernel importing the same ``pinsage_pyg`` as this test
process. The MovieLens notebooks need MovieLens-100K: it is fetched first
(into the same cache the notebooks read, ``$PINSAGE_DATA_ROOT`` or
``~/.cache/pinsage_pyg``), and those notebooks are skipped only when it
cannot be downloaded (no network), like the MovieLens loader tests.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import pinsage_pyg

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / 'notebooks'

# name -> (needs MovieLens-100K, per-cell timeout in seconds). The timeouts
# only stop a hung kernel; on an idle 2-core machine every notebook takes
# a minute or two.
NOTEBOOKS = {
    '01_quickstart.ipynb': (True, 1800),
    '02_pyg_pipeline.ipynb': (False, 900),
    '03_sampler.ipynb': (True, 900),
}

# Committed notebooks keep small outputs (a few low-resolution figures).
MAX_NOTEBOOK_BYTES = 400_000


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def test_notebook_list_is_complete():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob('*.ipynb')) == \
        sorted(NOTEBOOKS)


@pytest.mark.parametrize('name', sorted(NOTEBOOKS))
def test_committed_notebook_is_clean(name):
    path = NOTEBOOK_DIR / name
    assert path.stat().st_size <= MAX_NOTEBOOK_BYTES, (
        f'{name} is {path.stat().st_size} bytes: strip its outputs or '
        f'shrink its figures')
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata['kernelspec']['name'] == 'python3'
    assert nb.cells[0].cell_type == 'markdown'
    for cell in nb.cells:
        if cell.cell_type != 'code':
            continue
        for out in cell.get('outputs', []):
            assert out['output_type'] != 'error', f'{name}: stored error'
            text = out.get('text', '') + str(
                out.get('data', {}).get('text/plain', ''))
            # No machine-specific absolute paths in stored outputs:
            assert not re.search(r'/(home|root|tmp|work)/\S+', text), (
                f'{name}: stored output names a local path: {text[:200]}')


@pytest.fixture(scope='module')
def movielens_available() -> bool:
    from pinsage_pyg.data.movielens import fetch_movielens
    root = os.environ.get('PINSAGE_DATA_ROOT',
                          os.path.join(os.path.expanduser('~'), '.cache',
                                       'pinsage_pyg'))
    try:
        fetch_movielens('ml-100k', root)
    except RuntimeError as exc:
        if 'network' in str(exc):
            return False
        raise
    return True


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(NOTEBOOKS))
def test_notebook_runs(name, tmp_path, monkeypatch, request):
    needs_movielens, timeout = NOTEBOOKS[name]
    if needs_movielens and not request.getfixturevalue('movielens_available'):
        pytest.skip('MovieLens-100K cannot be downloaded (no network)')
    # The kernel is a subprocess: it inherits this environment.
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    src = str(Path(pinsage_pyg.__file__).resolve().parents[1])
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
        [src] + [p for p in os.environ.get('PYTHONPATH', '').split(
            os.pathsep) if p]))
    nb = _read(name)
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3',
                            resources={'metadata': {'path': str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    ran = [c for c in nb.cells if c.cell_type == 'code']
    assert ran and all(c.get('execution_count') for c in ran)
