r"""No lost work: atomic checkpoint files, exact mid-epoch resume, refusal
of incompatible checkpoints, and a real training process killed with
SIGKILL and resumed."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch

from pinsage_pyg.config import ConfigError
from pinsage_pyg.training.checkpointing import (AtomicCheckpointIO,
                                                check_resume,
                                                load_checkpoint,
                                                loader_position)

SRC = Path(__file__).parents[2] / 'src'
try:  # optimizer.ema_decay needs Lightning's EMAWeightAveraging (>= 2.6)
    from lightning.pytorch.callbacks import EMAWeightAveraging  # noqa: F401
    HAS_EMA = True
except ImportError:
    HAS_EMA = False
NEEDS_EMA = pytest.mark.skipif(not HAS_EMA, reason='lightning < 2.6 has no '
                               'EMAWeightAveraging')
CLI = Path(sys.executable).parent / 'pinsage-train'
TINY = ['model.hidden_channels=16', 'model.out_channels=8',
        'sampler.num_walks=10', 'sampler.num_neighbors=5',
        'sampler.num_negatives=20', 'data.batch_size=32',
        'data.num_workers=0', 'trainer.enable_progress_bar=false',
        'evaluate.baselines=false', 'output.faiss_index=false',
        'output.embeddings=false']


# ------------------------------------------------------ atomic writes ---
def test_atomic_checkpoint_io_never_truncates(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / 'ck' / 'a.ckpt'
    io.save_checkpoint({'state_dict': {'w': torch.ones(3)}}, path)
    assert torch.equal(io.load_checkpoint(path)['state_dict']['w'],
                       torch.ones(3))

    def crash(obj, f, *a, **k):  # dies half-way through the write
        f.write(b'partial')
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({'state_dict': {'w': torch.zeros(3)}}, path)
    monkeypatch.undo()
    # The previous checkpoint is intact and no temporary file is left.
    assert torch.equal(io.load_checkpoint(path)['state_dict']['w'],
                       torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ['a.ckpt']


def test_loading_is_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ('true', ))
    path = tmp_path / 'evil.ckpt'
    torch.save({'state_dict': {}, 'x': Evil()}, path)
    with pytest.raises(ConfigError, match='not a readable checkpoint'):
        load_checkpoint(path)
    with pytest.raises(Exception):
        AtomicCheckpointIO().load_checkpoint(path)
    (tmp_path / 'junk.ckpt').write_bytes(b'not a checkpoint')
    with pytest.raises(ConfigError, match='not a readable checkpoint'):
        load_checkpoint(tmp_path / 'junk.ckpt')
    with pytest.raises(ConfigError, match='no such checkpoint file'):
        load_checkpoint(tmp_path / 'missing.ckpt')


def test_check_resume_lists_every_mismatch():
    model = dict(in_channels=30, hidden_channels=16, out_channels=8,
                 num_layers=2, aggr='importance', asymmetric=False)
    data = dict(dataset='files', num_items=80, num_users=60,
                num_features=30, world_size=1, batch_size=32)
    ckpt = {'hyper_parameters': {'model': model},
            'PinSageDataModule': data,
            'loops': {'fit_loop': {'state_dict': {'combined_loader': [
                {'epoch': 1, 'batches': 5, 'batch_size': 32}]}}}}
    check_resume(ckpt, 'x.ckpt', model, data)  # same setup: fine
    assert loader_position(ckpt)['batches'] == 5
    with pytest.raises(ConfigError) as e:
        check_resume(ckpt, 'x.ckpt', {**model, 'hidden_channels': 32,
                                      'in_channels': 31},
                     {**data, 'num_items': 81, 'world_size': 2})
    msg = str(e.value)
    assert msg.startswith('Invalid config: resume=x.ckpt comes from an '
                          'incompatible run')
    for part in ('model.hidden_channels: checkpoint 16, this run 32',
                 'feature dimension (model.in_channels): checkpoint 30',
                 'num_items: checkpoint 80, this run 81',
                 'world size'):
        assert part in msg, msg
    # At an epoch boundary another world size is fine:
    ckpt['loops']['fit_loop']['state_dict']['combined_loader'][0][
        'batches'] = 0
    check_resume(ckpt, 'x.ckpt', model, {**data, 'world_size': 2})


# ------------------------------------------------- in-process resume ---
class KeepStep(pl.Callback):
    r"""Copies the periodic checkpoint written at global step :obj:`step`
    (at the start of the next batch: Lightning runs checkpoint callbacks
    after all others)."""
    def __init__(self, step: int, dst: Path):
        self.step, self.dst = step, dst

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step and not self.dst.exists():
            src = Path(trainer.default_root_dir) / 'checkpoints' / 'step.ckpt'
            shutil.copy(src, self.dst)


def final_weights(run_dir: Path):
    ckpt = torch.load(run_dir / 'checkpoints' / 'last.ckpt',
                      weights_only=True)
    return ckpt['state_dict'], ckpt['global_step']


@pytest.mark.parametrize('mode', [
    ['loss.mode=sampled', 'positives=consecutive'],
    # 24 full-graph steps per epoch: step 36 is mid-way through epoch 2.
    ['loss.mode=full', 'loss.full.steps_per_epoch=24',
     'loss.full.rows_per_step=20'],
    # The weight average resumes too (raw weights and average both):
    pytest.param(['loss.mode=sampled', 'positives=consecutive',
                  'optimizer.ema_decay=0.9'], marks=NEEDS_EMA)])
def test_mid_epoch_resume_replays_exactly(tiny_csv, compose_train, tmp_path,
                                          mode):
    from pinsage_pyg.training.pipeline import run
    base = [*tiny_csv, *TINY, *mode, 'trainer.max_epochs=2',
            'checkpoint.every_n_train_steps=4']
    saved = tmp_path / 'step36.ckpt'
    run(compose_train([*base, f'output.dir={tmp_path / "a"}']),
        callbacks=[KeepStep(36, saved)])
    pos = loader_position(torch.load(saved, weights_only=True))
    steps_per_epoch = final_weights(tmp_path / 'a')[1] // 2
    assert pos['epoch'] == 1
    assert pos['batches'] == 36 - steps_per_epoch > 0
    summary = run(compose_train([*base, f'output.dir={tmp_path / "b"}',
                                 f'resume={saved}']))
    assert summary['resumed_from'] == str(saved)
    (wa, sa), (wb, sb) = (final_weights(tmp_path / d) for d in 'ab')
    assert sa == sb
    for key in wa:  # the same batches, negatives and optimizer steps
        torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=1e-6)
    ma = pd.read_csv(tmp_path / 'a' / 'metrics.csv')
    mb = pd.read_csv(tmp_path / 'b' / 'metrics.csv')
    pd.testing.assert_frame_equal(ma, mb, atol=1e-6)


def test_resume_from_other_model_size_is_refused(tiny_csv, compose_train,
                                                tmp_path):
    from pinsage_pyg.training.pipeline import run
    base = [*tiny_csv, *TINY, 'trainer.max_epochs=1']
    run(compose_train([*base, f'output.dir={tmp_path / "a"}']))
    last = tmp_path / 'a' / 'checkpoints' / 'last.ckpt'
    with pytest.raises(ConfigError, match=r'model.hidden_channels: '
                       r'checkpoint 16, this run 24'):
        run(compose_train([*base, 'model.hidden_channels=24',
                           f'output.dir={tmp_path / "b"}',
                           f'resume={last}']))
    assert not (tmp_path / 'b' / 'checkpoints').exists()  # nothing trained


class RecordWeights(pl.Callback):
    r"""The raw weights after every optimizer step."""
    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.steps.append({k: v.detach().clone() for k, v in
                           pl_module.state_dict().items()})


@NEEDS_EMA
def test_ema_decay_validates_and_saves_the_moving_average(tiny_csv,
                                                          compose_train,
                                                          tmp_path):
    from pinsage_pyg.training.pipeline import run
    decay = 0.8
    rec = RecordWeights()
    base = [*tiny_csv, *TINY, 'loss.mode=sampled', 'trainer.max_epochs=1']
    ema = [f'optimizer.ema_decay={decay}']
    run(compose_train([*base, *ema, f'output.dir={tmp_path / "a"}']),
        callbacks=[rec])
    last = tmp_path / 'a' / 'checkpoints' / 'last.ckpt'
    ckpt = torch.load(last, weights_only=True)
    assert len(rec.steps) == ckpt['global_step'] > 3
    # Hand-computed EMA of the raw weights (the first step copies them):
    avg = dict(rec.steps[0])
    for w in rec.steps[1:]:
        avg = {k: decay * v + (1 - decay) * w[k] if v.is_floating_point()
               else w[k] for k, v in avg.items()}
    raw = ckpt['current_model_state']
    moved = 0
    for key, value in ckpt['state_dict'].items():
        torch.testing.assert_close(value, avg[key], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(raw[key], rec.steps[-1][key])
        moved += not torch.allclose(value, raw[key])
    assert moved > 0  # the average is not the last weights
    # Resuming without the averaging (or the other way round) is refused
    # before anything is trained:
    with pytest.raises(ConfigError, match='trained with weight averaging'):
        run(compose_train([*base, 'trainer.max_epochs=2', f'resume={last}',
                           f'output.dir={tmp_path / "b"}']))
    plain = tmp_path / 'c' / 'checkpoints' / 'last.ckpt'
    run(compose_train([*base, f'output.dir={tmp_path / "c"}']))
    with pytest.raises(ConfigError, match='trained without weight'):
        run(compose_train([*base, *ema, 'trainer.max_epochs=2',
                           f'resume={plain}', f'output.dir={tmp_path / "d"}']))
    for refused in 'bd':  # nothing trained
        assert not (tmp_path / refused / 'checkpoints').exists()


# ---------------------------------------------- kill -9 and resume ---
def cli(args, cwd, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(SRC), os.environ.get('PYTHONPATH', '')]))
    env.pop('HYDRA_FULL_ERROR', None)
    return subprocess.Popen([str(CLI), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted(tiny_csv,
                                                           tmp_path):
    args = [*tiny_csv, *TINY, 'trainer.max_epochs=4',
            'checkpoint.every_n_train_steps=5']
    # 1. A training process killed with SIGKILL once a periodic checkpoint
    #    exists (mid-epoch, with high probability mid-write of another).
    killed = tmp_path / 'killed'
    proc = cli([*args, f'hydra.run.dir={killed}'], tmp_path)
    step = killed / 'checkpoints' / 'step.ckpt'
    deadline = time.time() + 240
    while not step.exists() and proc.poll() is None and \
            time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, 'the run ended before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / 'metrics.csv').exists()
    saved = torch.load(step, weights_only=True)  # complete, loadable
    assert saved['global_step'] >= 5

    # 2. Resume it; 3. an uninterrupted run for reference.
    resumed, full = tmp_path / 'resumed', tmp_path / 'full'
    for extra, run_dir in (([f'resume={step}'], resumed), ([], full)):
        p = cli([*args, *extra, f'hydra.run.dir={run_dir}'], tmp_path)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    a = pd.read_csv(full / 'metrics.csv').set_index('method')
    b = pd.read_csv(resumed / 'metrics.csv').set_index('method')
    assert list(a.columns) == list(b.columns)
    # Batches and negatives are functions of (seed, epoch, rank, position)
    # and the optimizer state is restored, so the resumed run retraces the
    # uninterrupted one; tolerance: 0.02 absolute (under one user of the
    # ~45 evaluated on this tiny graph), for float noise only.
    diff = (a - b).abs().to_numpy().max()
    assert diff <= 0.02, (a, b)
