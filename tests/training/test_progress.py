r"""Non-interactive output: one log line per epoch instead of progress bars
when stdout is not a terminal (``progress=bar|log`` forces either), every
message printed once, and honest resume accounting (the bar and the log
show the epoch and the total after a resume; the summary says how much of
the total this process trained)."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pinsage_pyg.config import ConfigError, check_config
from pinsage_pyg.training.checkpointing import loader_position
from pinsage_pyg.training.distributed import InjectedFailure

SRC = Path(__file__).parents[2] / 'src'
CLI = Path(sys.executable).parent / 'pinsage-train'
TINY = ['model.hidden_channels=16', 'model.out_channels=8',
        'sampler.num_walks=10', 'sampler.num_neighbors=5',
        'sampler.num_negatives=20', 'data.batch_size=64',
        'data.num_workers=0', 'evaluate.baselines=false',
        'output.faiss_index=false', 'output.embeddings=false',
        'trainer.max_epochs=2', 'loss.mode=sampled',
        'positives=consecutive']


def test_redirected_cli_logs_one_line_per_epoch_and_each_message_once(
        tiny_csv, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(SRC), os.environ.get('PYTHONPATH', '')]))
    env.pop('HYDRA_FULL_ERROR', None)
    proc = subprocess.run([str(CLI), *tiny_csv, *TINY,
                           f'hydra.run.dir={tmp_path / "run"}'],
                          cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert '\r' not in out  # no progress bar redirected into the file
    assert 'it/s' not in out
    lines = [ln for ln in proc.stdout.splitlines() if ' - epoch ' in ln]
    epochs = [ln.split(' - ')[1] for ln in lines
              if ln.split(' - ')[1].startswith('epoch ') and '/' in
              ln.split(' - ')[1].split(':')[0]]
    assert [e.split(':')[0] for e in epochs] == ['epoch 1/2', 'epoch 2/2']
    assert all('batches in' in e and 'val_hr@10' in e and 'train_loss' in e
               for e in epochs), epochs
    # Lightning's lines went to stdout (Hydra's console) and to stderr
    # (its own handler) before:
    assert out.count('GPU available: False') == 1, out
    assert out.count('`Trainer.fit` stopped') == 1, out
    assert 'trained 2 epochs in' in proc.stdout


def test_progress_flag_values(compose_train):
    for mode in ('auto', 'bar', 'log'):
        check_config(compose_train([f'progress={mode}']))
    with pytest.raises(ConfigError, match='progress must be one of'):
        check_config(compose_train(['progress=bars']))


def test_show_progress_bar_follows_terminal_and_flag(compose_train,
                                                     monkeypatch):
    from pinsage_pyg.training import progress
    for tty, mode, enable, want in [
            (True, 'auto', True, True), (False, 'auto', True, False),
            (False, 'bar', True, True), (True, 'log', True, False),
            (True, 'bar', False, False)]:
        monkeypatch.setattr(progress, 'interactive', lambda: tty)
        cfg = compose_train([f'progress={mode}',
                             f'trainer.enable_progress_bar={enable}'])
        assert progress.show_progress_bar(cfg) is want, (tty, mode, enable)


def test_resume_accounting(tiny_csv, compose_train, tmp_path, monkeypatch,
                           capsys, caplog):
    from pinsage_pyg.training.pipeline import run
    base = [*tiny_csv, *TINY, 'checkpoint.every_n_train_steps=3']
    # A run that fails mid-way through epoch 2 (after step 20):
    monkeypatch.setenv('PINSAGE_TEST_FAIL_RANK', '0:20')
    with pytest.raises(InjectedFailure):
        run(compose_train([*base, 'progress=log',
                           f'output.dir={tmp_path / "a"}']))
    monkeypatch.delenv('PINSAGE_TEST_FAIL_RANK')
    step = tmp_path / 'a' / 'checkpoints' / 'step.ckpt'
    saved = torch.load(step, weights_only=True)
    pos = loader_position(saved)
    assert pos['epoch'] == 1 and pos['batches'] > 0  # mid-epoch
    per_epoch = saved['global_step'] - pos['batches']  # epoch 0's batches
    capsys.readouterr()

    # Resumed with a progress bar: it shows the epoch and the total.
    summary = run(compose_train([*base, 'progress=bar', f'resume={step}',
                                 f'output.dir={tmp_path / "b"}']))
    bar = capsys.readouterr()
    bar = (bar.out + bar.err).replace('\r', '\n')
    assert 'Epoch 2/2' in bar
    assert f'{pos["batches"] + 1}/{per_epoch}' in bar
    assert 'Training: ' not in bar.split('Epoch 2/2')[-1]
    assert summary['epochs'] == 2
    want = (per_epoch - pos['batches']) / per_epoch
    assert summary['epochs_this_run'] == pytest.approx(want, abs=1e-3)
    assert summary['resumed_at_epoch'] == pytest.approx(2 - want, abs=1e-3)
    assert f"trained {want:.3g} of 2 epochs (resumed at epoch " \
           f"{2 - want:.3g})" in bar

    # Resumed with log lines: the resume point and epoch 2/2 are logged.
    with caplog.at_level(logging.INFO):
        summary = run(compose_train([*base, 'progress=log',
                                     f'resume={step}',
                                     f'output.dir={tmp_path / "c"}']))
    assert f"resuming at epoch 2/2 after {pos['batches']} of its batches" \
        in caplog.text
    assert 'epoch 2/2: ' in caplog.text and 'epoch 1/2: ' not in caplog.text
    assert summary['epochs_this_run'] == pytest.approx(want, abs=1e-3)
    # A run that was not resumed trained all of its epochs itself:
    full = run(compose_train([*base, 'progress=log',
                              f'output.dir={tmp_path / "d"}']))
    assert (full['epochs'], full['epochs_this_run']) == (2, 2.0)
    assert full['resumed_at_epoch'] is None
