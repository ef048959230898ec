r"""A rank that dies fails the whole ``pinsage-train trainer=ddp_cpu`` run
promptly (no hang, no leftover process), with a clear error line, and the
last periodic checkpoint stays loadable and resumable.

The failure comes from the ``PINSAGE_TEST_FAIL_RANK=<rank>:<step>[:kill]``
test hook (:class:`pinsage_pyg.training.distributed.FailureInjection`)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pinsage_pyg.config import ConfigError
from pinsage_pyg.training.checkpointing import (load_checkpoint,
                                                loader_position)
from pinsage_pyg.training.distributed import (FAIL_RANK_ENV,
                                              FailureInjection,
                                              InjectedFailure)

CLI = Path(sys.executable).parent / 'pinsage-train'
SRC = Path(__file__).parents[1] / 'src'
# 1,500 interactions of 60 users: ~1,400 pairs, 16 per rank and step, so
# about 44 steps per epoch; step.ckpt every 2 steps, rank 1 fails at step
# 5, so the last complete checkpoint is the one of step 4.
TINY = [
    'model.hidden_channels=16', 'model.out_channels=8',
    'sampler.num_walks=10', 'sampler.num_neighbors=5',
    'sampler.num_negatives=20', 'data.batch_size=32', 'data.num_workers=0',
    'trainer.max_epochs=1', 'trainer.enable_progress_bar=false',
    'evaluate.baselines=false', 'output.faiss_index=false',
    'output.embeddings=false', 'trainer=ddp_cpu',
    'checkpoint.every_n_train_steps=2',
]
TIMEOUT = 180  # seconds; a failed run takes ~20 s on a contended 2-core box


def processes_mentioning(text: str):
    r"""PIDs of live processes whose command line contains :obj:`text`."""
    pids = []
    for proc in Path('/proc').iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / 'cmdline').read_bytes().replace(b'\0', b' ')
            state = (proc / 'stat').read_text().split(') ')[-1][:1]
        except OSError:
            continue
        if text.encode() in cmd and state != 'Z':
            pids.append(int(proc.name))
    return pids


def run_cli(args, cwd, fail=None):
    r"""Runs the CLI in its own session; on timeout the whole session
    (every relaunched rank) is killed and the test fails."""
    env = dict(os.environ, PINSAGE_DATA_ROOT=str(cwd),
               PYTHONPATH=os.pathsep.join(
                   [str(SRC), os.environ.get('PYTHONPATH', '')]))
    env.pop('HYDRA_FULL_ERROR', None)
    env.pop(FAIL_RANK_ENV, None)
    if fail is not None:
        env[FAIL_RANK_ENV] = fail
    t = time.monotonic()
    proc = subprocess.Popen([str(CLI), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the run did not end within {TIMEOUT} s (hang); "
                    f"stderr tail:\n{err[-3000:]}")
    return proc.returncode, out, err, time.monotonic() - t


def assert_no_leftovers(run_dir: Path) -> None:
    if not Path('/proc/self/cmdline').exists():
        return  # not Linux: nothing to scan
    deadline = time.monotonic() + 10  # killed ranks may take a moment
    while processes_mentioning(str(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(str(run_dir)) == []


def test_failure_hook_from_env(monkeypatch):
    monkeypatch.delenv(FAIL_RANK_ENV, raising=False)
    assert FailureInjection.from_env() is None
    monkeypatch.setenv(FAIL_RANK_ENV, '1:7')
    hook = FailureInjection.from_env()
    assert (hook.rank, hook.step, hook.kill) == (1, 7, False)
    monkeypatch.setenv(FAIL_RANK_ENV, '0:3:kill')
    assert FailureInjection.from_env().kill
    for bad in ('1', '1:x', '1:2:3', 'a:b:kill'):
        monkeypatch.setenv(FAIL_RANK_ENV, bad)
        with pytest.raises(ConfigError, match=FAIL_RANK_ENV):
            FailureInjection.from_env()

    class Trainer:
        global_rank, global_step = 1, 6
    hook = FailureInjection(1, 7)
    hook.on_train_batch_start(Trainer, None, None, 0)  # step 6: no failure
    Trainer.global_step = 7
    with pytest.raises(InjectedFailure, match='rank 1 at global step 7'):
        hook.on_train_batch_start(Trainer, None, None, 0)
    Trainer.global_rank = 0  # another rank: no failure
    hook.on_train_batch_start(Trainer, None, None, 0)


@pytest.mark.slow
def test_dead_rank_fails_run_and_checkpoint_resumes(tiny_csv, tmp_path):
    run_dir = tmp_path / 'failed'
    rc, out, err, seconds = run_cli(
        [*tiny_csv, *TINY, f'hydra.run.dir={run_dir}'], tmp_path, fail='1:5')
    assert rc != 0, err[-3000:]
    assert seconds < TIMEOUT
    assert_no_leftovers(run_dir)
    errors = [ln for ln in err.splitlines() if ln.startswith('error:')]
    assert any('rank 1 of 2 failed during training (InjectedFailure' in ln
               for ln in errors), err[-3000:]
    step_ckpt = run_dir / 'checkpoints' / 'step.ckpt'
    assert all(f'resume={step_ckpt}' in ln for ln in errors), errors
    assert 'metrics.csv' not in os.listdir(run_dir)

    # The last periodic checkpoint is complete and safe to load ...
    saved = load_checkpoint(step_ckpt)  # torch.load(weights_only=True)
    assert saved['global_step'] == 4
    assert loader_position(saved)['batches'] == 4
    assert all(torch.isfinite(v).all() for v in saved['state_dict'].values())
    assert not [p for p in step_ckpt.parent.iterdir()
                if p.name != 'step.ckpt' and not p.name.endswith('.ckpt')]
    # ... and resumable (a mid-epoch checkpoint: same world size).
    resumed = tmp_path / 'resumed'
    rc, out, err, _ = run_cli([*tiny_csv, *TINY, f'resume={step_ckpt}',
                               f'hydra.run.dir={resumed}'], tmp_path)
    assert rc == 0, err[-3000:]
    summary = json.loads((resumed / 'summary.json').read_text())
    assert summary['resumed_from'] == str(step_ckpt)
    assert summary['world_size'] == 2 and summary['epochs'] == 1
    assert 'resuming epoch 0 after batch 4' in err + out
    assert_no_leftovers(resumed)


@pytest.mark.slow
def test_killed_rank_fails_run_promptly(tiny_csv, tmp_path):
    # SIGKILL (e.g. the OOM killer): no Python exception on that rank.
    run_dir = tmp_path / 'killed'
    rc, out, err, seconds = run_cli(
        [*tiny_csv, *TINY, f'hydra.run.dir={run_dir}'], tmp_path,
        fail='1:5:kill')
    assert rc != 0, err[-3000:]
    assert seconds < TIMEOUT
    assert_no_leftovers(run_dir)
    errors = [ln for ln in err.splitlines() if ln.startswith('error:')]
    assert any(ln.startswith('error: rank 0 of 2 failed during training')
               for ln in errors), err[-3000:]
    assert load_checkpoint(run_dir / 'checkpoints' / 'step.ckpt')[
        'global_step'] == 4
