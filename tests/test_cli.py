r"""Hydra config composition and the installed ``pinsage-train`` CLI."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pinsage_pyg.config import ConfigError, check_config

CLI = Path(sys.executable).parent / 'pinsage-train'
METHODS = ['PinSage', 'popularity', 'co-occurrence cosine', 'transition',
           'random']
TINY = [
    'model.hidden_channels=16', 'sampler.num_walks=10',
    'sampler.num_neighbors=5', 'sampler.num_negatives=20',
    'data.batch_size=256', 'data.num_workers=0', 'trainer.max_epochs=1',
    'trainer.enable_progress_bar=false',
]


# ---------------------------------------------------------- compose API ---
def test_compose_defaults(compose_train, monkeypatch, tmp_path):
    monkeypatch.setenv('PINSAGE_DATA_ROOT', str(tmp_path))
    cfg = compose_train()
    assert cfg.data.name == 'movielens_100k'
    assert cfg.data.root == str(tmp_path)  # env interpolation resolves
    assert cfg.model.hidden_channels == 256
    assert cfg.loss.name == 'softmax' and 'margin' not in cfg.loss
    assert cfg.trainer._target_ == 'lightning.pytorch.Trainer'
    assert cfg.trainer.max_epochs == 15
    check_config(cfg)


def test_compose_overrides_land(compose_train, monkeypatch, tmp_path):
    monkeypatch.setenv('PINSAGE_DATA_ROOT', str(tmp_path))
    cfg = compose_train(['data=movielens_1m', 'model.hidden_channels=512',
                         'trainer.max_epochs=5', 'loss=softmax'])
    assert cfg.data.name == 'movielens_1m'
    assert cfg.data.source == 'movielens'
    assert cfg.data.root == str(tmp_path)
    assert cfg.model.hidden_channels == 512
    assert cfg.model.out_channels == 128  # untouched neighbour
    assert cfg.trainer.max_epochs == 5
    assert cfg.loss.name == 'softmax'
    assert cfg.loss.temperature == 0.1 and 'margin' not in cfg.loss
    assert cfg.loss.mode == 'auto' and cfg.data.positives.window == 8
    check_config(cfg)


def test_compose_gpu_trainer_extends_cpu(compose_train):
    cfg = compose_train(['trainer=gpu'])
    assert cfg.trainer.accelerator == 'gpu'
    assert cfg.trainer.reload_dataloaders_every_n_epochs == 1
    assert cfg.trainer._target_ == 'lightning.pytorch.Trainer'


@pytest.mark.parametrize('data', ['files', 'movielens_100k', 'movielens_1m'])
@pytest.mark.parametrize('loss', ['max_margin', 'softmax'])
@pytest.mark.parametrize('curriculum', ['none', 'paper'])
def test_every_shipped_config_passes_check_config(compose_train, data, loss,
                                                  curriculum):
    extra = ['data.interactions=log.csv'] if data == 'files' else []
    cfg = compose_train([f'data={data}', f'loss={loss}',
                         f'curriculum={curriculum}', *extra])
    check_config(cfg)
    # Every data option carries the keys the pipeline reads.
    for key in ('name', 'source', 'batch_size', 'num_workers', 'features',
                'positives', 'unknown_feature_items', 'allow_duplicates'):
        assert key in cfg.data, (data, key)


def test_check_config_rejects_composed_override(compose_train):
    cfg = compose_train(['data=movielens_1m', 'loss=softmax',
                         'loss.temperature=0'])
    with pytest.raises(ConfigError, match='loss.temperature must be > 0'):
        check_config(cfg)


# ------------------------------------------------------------- the CLI ---
def run_cli(args, cwd, timeout=300):
    env = dict(os.environ, PINSAGE_DATA_ROOT=str(cwd))
    env.pop('HYDRA_FULL_ERROR', None)
    return subprocess.run([str(CLI), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_is_installed():
    assert CLI.exists(), f'{CLI} missing: pip install -e . in the venv'


def test_help_lists_config_groups(tmp_path):
    proc = run_cli(['--help'], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in ('data: files, movielens_100k, movielens_1m',
                 'loss: full_softmax, max_margin, sampled_softmax, softmax',
                 'positives: consecutive, window', 'model: pinsage',
                 'sampler: default', 'trainer: cpu, ddp, ddp_cpu, gpu'):
        assert line in out, out
    assert 'hidden_channels' in out
    assert list(tmp_path.iterdir()) == []  # --help runs nothing


def test_cfg_job_prints_composed_config(tmp_path):
    proc = run_cli(['--cfg', 'job', 'model.hidden_channels=77',
                    'loss=softmax'], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'hidden_channels' in proc.stdout
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.model.hidden_channels == 77
    assert cfg.loss.name == 'softmax'
    assert cfg.data.name == 'movielens_100k'
    assert 'hydra' not in cfg  # job config only
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope='module')
def tiny_files(tmp_path_factory):
    from pinsage_pyg.data.synthetic import synthetic_interactions
    root = tmp_path_factory.mktemp('tiny_data')
    inter, items = synthetic_interactions(num_users=60, num_items=80,
                                          num_interactions=1500)
    inter.to_csv(root / 'interactions.csv', index=False)
    items.to_csv(root / 'items.csv', index=False)
    return root, items


def files_args(root):
    return [
        'data=files', f'data.interactions={root / "interactions.csv"}',
        f'data.items={root / "items.csv"}',
        'data.unknown_feature_items=embed',
        'data.features.text_columns=[title]',
        'data.features.multilabel_columns=[genres]',
        'data.features.numeric_columns=[year]',
    ]


@pytest.fixture(scope='module')
def e2e(tiny_files, tmp_path_factory):
    root, items = tiny_files
    base = tmp_path_factory.mktemp('e2e')
    cwd, run_dir = base / 'cwd', base / 'run'
    cwd.mkdir()
    proc = run_cli([*files_args(root), *TINY, 'model.out_channels=8',
                    f'hydra.run.dir={run_dir}'], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, run_dir, cwd, items


def test_e2e_prints_metrics_table(e2e):
    proc, run_dir, _, _ = e2e
    table = pd.read_csv(run_dir / 'metrics.csv')
    methods = list(table['method'])
    for m in METHODS:
        assert any(x.startswith(m) for x in methods), (m, methods)
    values = table.drop(columns='method').to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    assert (values <= 1).all()
    # Every row of metrics.csv is printed, with the same numbers.
    lines = [ln.strip() for ln in proc.stdout.splitlines()]
    header = next(ln for ln in lines if ln.startswith('method'))
    assert header.split() == list(table.columns)
    for _, row in table.iterrows():
        nums = ' '.join(f'{v:.4f}' for v in row.drop('method'))
        printed = [ln for ln in lines if ln.startswith(row['method'])]
        assert printed, row['method']
        assert re.sub(r'\s+', ' ', printed[0]).endswith(nums), printed[0]


def test_e2e_writes_embeddings(e2e):
    _, run_dir, _, items = e2e
    emb_dir = run_dir / 'embeddings'
    emb = np.load(emb_dir / 'item_embeddings.npy')
    assert emb.shape == (80, 8) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    table = pd.read_parquet(emb_dir / 'items.parquet')
    assert list(table['item_id']) == list(items['item'])
    assert list(table['index']) == list(range(80))
    assert list(table['title']) == list(items['title'])
    assert not (emb_dir / 'query_embeddings.npy').exists()  # symmetric
    import faiss
    index = faiss.read_index(str(emb_dir / 'index.faiss'))
    assert (index.ntotal, index.d) == (80, 8)
    scores, _ = index.search(emb[:5], 1)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)


def test_e2e_writes_reports_into_run_dir(e2e):
    _, run_dir, cwd, _ = e2e
    summary = json.loads((run_dir / 'summary.json').read_text())
    assert summary['dataset'] == 'files'
    assert (summary['num_users'], summary['num_items']) == (60, 80)
    assert summary['epochs'] == 1
    assert Path(summary['output_dir']) == run_dir
    assert len(summary['metrics']) == len(pd.read_csv(run_dir /
                                                      'metrics.csv'))
    assert (run_dir / '.hydra' / 'config.yaml').exists()
    # Nothing is written to the working directory.
    assert list(cwd.iterdir()) == []


def test_multirun_sweeps_out_channels(tiny_files, tmp_path):
    root, _ = tiny_files
    sweep = tmp_path / 'sweep'
    proc = run_cli(['-m', *files_args(root), *TINY,
                    'model.out_channels=4,8', f'hydra.sweep.dir={sweep}'],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ['0', '1']
    widths = {}
    for run in runs:
        overrides = OmegaConf.load(run / '.hydra' / 'overrides.yaml')
        (width, ) = [int(o.split('=')[1]) for o in overrides
                     if o.startswith('model.out_channels=')]
        emb = np.load(run / 'embeddings' / 'item_embeddings.npy')
        assert emb.shape == (80, width)
        assert (run / 'summary.json').exists()
        widths[run.name] = width
    assert sorted(widths.values()) == [4, 8]


def test_bad_config_value_is_one_clear_error(tmp_path):
    run_dir = tmp_path / 'run'
    proc = run_cli(['sampler.num_neighbors=0', f'hydra.run.dir={run_dir}'],
                   tmp_path, timeout=120)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines()
              if ln.startswith('error:')]
    assert len(errors) == 1, proc.stderr
    assert 'sampler.num_neighbors' in errors[0] and '>= 1' in errors[0]
    assert 'Traceback' not in proc.stderr + proc.stdout
    # Once: not also logged to stdout by Hydra's console handler.
    assert errors[0][len('error: '):] not in proc.stdout
    # It fails before any data is read or anything is trained.
    assert not (run_dir / 'embeddings').exists()
    assert not (run_dir / 'metrics.csv').exists()


def test_recommend_cli_on_e2e_embeddings(e2e, tmp_path):
    _, run_dir, _, items = e2e
    exe = CLI.parent / 'pinsage-recommend'
    first, second = [str(i) for i in items['item'][:2]]
    proc = subprocess.run(
        [str(exe), f'embeddings={run_dir / "embeddings"}',
         f'items=[{first},{second}]', 'k=3'], cwd=tmp_path,
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines[0].split()[:4] == ['query', 'rank', 'item_id', 'score']
    assert len(lines) == 1 + 2 * 3
    assert not list(tmp_path.iterdir()), 'wrote into the working dir'
    proc = subprocess.run(
        [str(exe), f'embeddings={run_dir / "embeddings"}', 'items=[nope]'],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'error: Unknown item id' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert 'Unknown item id' not in proc.stdout  # once, on stderr


def test_bad_curriculum_is_one_clear_error_before_training(tmp_path):
    run_dir = tmp_path / 'run'
    proc = run_cli(['curriculum=paper', 'curriculum.stages.2.start_epoch=1',
                    f'hydra.run.dir={run_dir}'], tmp_path, timeout=120)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines()
              if ln.startswith('error:')]
    assert len(errors) == 1, proc.stderr
    assert 'curriculum.stages' in errors[0]
    assert 'strictly increasing' in errors[0]
    assert not (run_dir / 'checkpoints').exists()


EXPERIMENTS = sorted(
    str(p.relative_to(p.parents[1] if p.parent.name == 'ablation'
                      else p.parent).with_suffix(''))
    for p in (Path(__file__).parents[1] / 'src' / 'pinsage_pyg' / 'configs'
              / 'experiment').rglob('*.yaml'))


@pytest.mark.parametrize('experiment', EXPERIMENTS)
def test_every_experiment_composes(compose_train, experiment):
    cfg = compose_train([f'experiment={experiment}'])
    check_config(cfg)
    if experiment.startswith('ablation/'):
        want = {'features_only': (0, 'none'), 'pinsage': (2, 'paper'),
                'mean_pool_hard': (2, 'paper'), 'max_pool': (2, 'none')}
        name = experiment.split('/')[1]
        if name in want:
            assert (cfg.model.num_layers, cfg.curriculum.name) == want[name]


def test_compose_without_output_dir_is_a_clear_error(compose_train):
    from pinsage_pyg.training.pipeline import run
    with pytest.raises(ConfigError, match='pass output.dir='):
        run(compose_train())
