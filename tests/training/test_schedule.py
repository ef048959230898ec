import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pinsage_pyg.data import synthetic_interactions

CLI = Path(sys.executable).parent / 'pinsage-train'


def test_warmup_then_exponential_decay_is_logged(tmp_path):
    inter, items = synthetic_interactions(60, 80, 1500)
    inter.to_csv(tmp_path / 'log.csv', index=False)
    items.to_csv(tmp_path / 'items.csv', index=False)
    proc = subprocess.run([
        str(CLI), 'data=files', f'data.interactions={tmp_path}/log.csv',
        f'data.items={tmp_path}/items.csv',
        'data.unknown_feature_items=embed',
        'data.features.multilabel_columns=[genres]',
        'model.hidden_channels=16', 'model.out_channels=8',
        'sampler.num_walks=10', 'sampler.num_negatives=20',
        'data.batch_size=256', 'data.num_workers=0', 'trainer.max_epochs=3',
        'trainer.enable_progress_bar=false', 'trainer.log_every_n_steps=1',
        'optimizer.lr=0.001', 'optimizer.warmup_epochs=1',
        'optimizer.decay=0.5', 'optimizer.reference_batch_size=null',
        # full-softmax steps take optimizer.lr too (their own rate unset):
        'loss.full.lr=null', 'loss.full.steps_per_epoch=4',
        'evaluate.baselines=false',
        f'hydra.run.dir={tmp_path}/run'], capture_output=True, text=True,
        cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = pd.read_csv(tmp_path / 'run/logs/version_0/metrics.csv')
    lr = m[['step', 'lr']].dropna().sort_values('step')['lr'].to_numpy()
    steps = len(lr) // 3  # steps per epoch
    assert len(lr) == 3 * steps and steps >= 2
    # Linear warm-up over epoch 1 to the peak:
    assert lr[:steps] == pytest.approx(
        [1e-3 * (s + 1) / steps for s in range(steps)])
    # Then x0.5 per epoch, applied per step:
    assert lr[steps] == pytest.approx(1e-3)
    assert lr[2 * steps] == pytest.approx(0.5e-3)
    assert (lr[steps + 1:] < lr[steps:-1]).all()
