r"""The installed ``pinsage-train`` with ``trainer=ddp_cpu``: Lightning
relaunches the command line once per extra rank (2 gloo processes here),
and start-up errors of distributed settings."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pinsage_pyg.data.synthetic import synthetic_interactions

CLI = Path(sys.executable).parent / 'pinsage-train'
SRC = Path(__file__).parents[1] / 'src'
TINY = [
    'model.hidden_channels=16', 'model.out_channels=8',
    'sampler.num_walks=10', 'sampler.num_neighbors=5',
    'sampler.num_negatives=20', 'data.batch_size=256',
    'data.num_workers=0', 'trainer.max_epochs=1',
    'trainer.enable_progress_bar=false', 'output.faiss_index=false',
]


def run_cli(args, cwd, timeout=300):
    # PYTHONPATH: the checkout's sources win over an installed copy, also in
    # the ranks Lightning relaunches (they inherit the environment).
    env = dict(os.environ, PINSAGE_DATA_ROOT=str(cwd),
               PYTHONPATH=os.pathsep.join(
                   [str(SRC), os.environ.get('PYTHONPATH', '')]))
    env.pop('HYDRA_FULL_ERROR', None)
    return subprocess.run([str(CLI), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines()
              if ln.startswith('error:')]
    assert len(errors) == 1, proc.stderr
    assert 'Traceback' not in proc.stderr + proc.stdout
    return errors[0]


@pytest.mark.slow
def test_cli_ddp_cpu_two_processes(tiny_csv, tmp_path):
    single, ddp = tmp_path / 'single', tmp_path / 'ddp'
    ref = run_cli([*tiny_csv, *TINY, f'hydra.run.dir={single}'], tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    proc = run_cli([*tiny_csv, *TINY, 'trainer=ddp_cpu',
                    f'hydra.run.dir={ddp}'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((ddp / 'summary.json').read_text())
    assert summary['world_size'] == 2 and summary['epochs'] == 1
    a = pd.read_csv(single / 'metrics.csv')
    b = pd.read_csv(ddp / 'metrics.csv')
    assert list(a.columns) == list(b.columns)
    assert list(a['method']) == list(b['method'])
    # Baselines do not depend on training: identical numbers.
    pd.testing.assert_frame_equal(a.iloc[1:].reset_index(drop=True),
                                  b.iloc[1:].reset_index(drop=True))
    # The table is printed once (rank 0), in the single-process format.
    header = [ln for ln in proc.stdout.splitlines()
              if ln.strip().startswith('method')]
    ref_header = [ln for ln in ref.stdout.splitlines()
                  if ln.strip().startswith('method')]
    assert len(header) == 1 and header == ref_header
    assert (ddp / 'embeddings' / 'item_embeddings.npy').exists()
    assert 'Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2' in \
        proc.stderr + proc.stdout
    assert list(tmp_path.glob('outputs')) == []  # ranks share the run dir


@pytest.mark.slow
def test_cli_gpu_trainer_without_gpu_is_one_clear_error(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip('a GPU is visible')
    err = one_error(run_cli(['trainer=ddp', f'hydra.run.dir={tmp_path}'],
                            tmp_path, timeout=120))
    assert 'trainer.accelerator=gpu but no CUDA GPU is visible' in err
    assert 'trainer=ddp_cpu' in err


@pytest.mark.slow
def test_cli_resume_from_other_dataset_is_one_clear_error(tiny_csv, tmp_path):
    first = tmp_path / 'first'
    proc = run_cli([*tiny_csv, *TINY, 'evaluate.baselines=false',
                    f'hydra.run.dir={first}'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = tmp_path / 'other.csv'
    inter, _ = synthetic_interactions(num_users=50, num_items=70,
                                      num_interactions=1200, seed=1)
    inter.to_csv(other, index=False)
    err = one_error(run_cli([
        'data=files', f'data.interactions={other}', *TINY,
        f'resume={first / "checkpoints" / "last.ckpt"}',
        f'hydra.run.dir={tmp_path / "second"}'], tmp_path))
    assert 'comes from an incompatible run' in err
    assert 'num_items: checkpoint 80, this run' in err
