r"""``pinsage-embed``: checkpoint + dataset -> embeddings directory."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module

from pinsage_pyg.config import ConfigError
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.embed import run as embed_run

TINY_TRAIN = [
    'model.hidden_channels=16', 'model.out_channels=8',
    'sampler.num_walks=10', 'sampler.num_neighbors=5',
    'sampler.num_negatives=20', 'data.batch_size=256', 'data.num_workers=0',
    'trainer.max_epochs=1', 'trainer.enable_progress_bar=false',
    'evaluate.baselines=false', 'seed=3',
]
SAMPLER = ['sampler.num_walks=10', 'sampler.num_neighbors=5', 'seed=3',
           'progress=false', 'chunk_size=16']


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
def trained(tmp_path_factory):
    r"""A 1-epoch pinsage-train run on a tiny CSV dataset (in-process)."""
    from pinsage_pyg.data.synthetic import synthetic_interactions
    from pinsage_pyg.training.pipeline import run as train_run
    root = tmp_path_factory.mktemp('data')
    inter, items = synthetic_interactions(num_users=50, num_items=70,
                                          num_interactions=1200)
    # Five catalogue items nobody interacted with (cold start):
    extra = items.iloc[:5].assign(item=[f'cold{i}' for i in range(5)])
    items = pd.concat([items, extra], ignore_index=True)
    inter.to_csv(root / 'interactions.csv', index=False)
    items.to_csv(root / 'items.csv', index=False)
    run_dir = tmp_path_factory.mktemp('run')
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base='1.3'):
        cfg = compose('train', overrides=[*files_args(root), *TINY_TRAIN,
                                          f'output.dir={run_dir}'])
    threads = torch.get_num_threads()
    train_run(cfg)
    torch.set_num_threads(threads)
    return root, run_dir, items


def compose_embed(overrides):
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base='1.3'):
        return compose('embed', overrides=list(overrides))


def embed_cfg(trained, out, *extra):
    root, run_dir, _ = trained
    return compose_embed([*files_args(root), *SAMPLER,
                          f'checkpoint={run_dir}', f'output.dir={out}',
                          *extra])


def run_cli(args, cwd, timeout=300):
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(Path(__file__).parents[1] / 'src'),
         os.environ.get('PYTHONPATH', '')])}
    code = 'from pinsage_pyg.cli import embed; embed()'
    return subprocess.run([sys.executable, '-c', code, *args], cwd=cwd,
                          env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_cli_end_to_end_matches_training_export(trained, tmp_path):
    root, run_dir, items = trained
    out = tmp_path / 'emb'
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    # The default progress=auto, with stdout a pipe: log lines, no bars;
    # graph=train: the training run's graph (its leave-last-out split):
    args = [a for a in SAMPLER if not a.startswith('progress=')]
    proc = run_cli([*files_args(root), *args, f'checkpoint={run_dir}',
                    f'output.dir={out}', 'graph=train'], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'embedded 75 items in' in proc.stdout
    assert 'items/s' in proc.stdout
    stages = [ln for ln in proc.stdout.splitlines()
              if ln.startswith('[') and '/7] ' in ln]
    names = ['neighbors', 'encode'] + [
        f'{s}{k}' for k in (1, 2) for s in ('project', 'layer')] + ['heads']
    assert [ln.split(':')[0] for ln in stages] == [
        f'[{i + 1}/7] {s}' for i, s in enumerate(names)]
    assert all(': 75 items in ' in ln for ln in stages)
    assert '\r' not in proc.stdout + proc.stderr
    assert '/7] ' not in proc.stderr  # each line once
    assert list(cwd.iterdir()) == []  # nothing in the working directory
    # Same format as the training run's export, raw ids kept, and the same
    # numbers: the walks are the training run's evaluation graph.
    table = pd.read_parquet(out / 'items.parquet')
    assert list(table['item_id']) == list(items['item'].astype(str))
    assert list(table['title']) == list(items['title'])
    emb = np.load(out / 'item_embeddings.npy')
    ref = np.load(run_dir / 'embeddings' / 'item_embeddings.npy')
    assert emb.shape == (75, 8)
    assert np.abs(emb - ref).max() < 1e-5
    assert np.isfinite(emb[-5:]).all()  # cold-start items are embedded
    import faiss
    assert faiss.read_index(str(out / 'index.faiss')).ntotal == 75
    summary = json.loads((out / 'embed.json').read_text())
    assert summary['num_items'] == 75 and summary['index'] == 'flat'
    assert not (out / '.work').exists()
    # A re-run with the same arguments has nothing to do:
    again = embed_run(embed_cfg(trained, out, 'graph=train'))
    assert again['manifest'] == summary['manifest']


def test_recommend_on_an_approximate_index(trained, tmp_path):
    from pinsage_pyg.inference.recommend import Recommender
    out = tmp_path / 'emb'
    embed_run(embed_cfg(trained, out, 'output.index=hnsw',
                        '+output.index_params.hnsw_m=8'))
    import faiss
    assert isinstance(faiss.read_index(str(out / 'index.faiss')),
                      faiss.IndexHNSWFlat)
    rec = Recommender.from_dir(out, index='stored')
    res = rec.recommend(['i1'], k=5)
    assert len(res) == 5 and 'i1' not in set(res['item_id'])
    with pytest.raises(DataError, match='k=80'):
        rec.recommend(['i1'], k=80)  # larger than the catalogue
    with pytest.raises(DataError, match='Unknown item'):
        rec.recommend(['nope'])


def test_missing_and_corrupt_checkpoints(trained, tmp_path):
    with pytest.raises(DataError, match='does not exist'):
        embed_run(embed_cfg(trained, tmp_path / 'a',
                            f'checkpoint={tmp_path / "none.ckpt"}'))
    bad = tmp_path / 'bad.ckpt'
    bad.write_bytes(b'this is not a checkpoint')
    with pytest.raises(DataError, match='not a readable PyTorch checkpoint'):
        embed_run(embed_cfg(trained, tmp_path / 'a', f'checkpoint={bad}'))
    # A truncated real checkpoint:
    real = sorted((trained[1] / 'checkpoints').glob('*.ckpt'))[0]
    cut = tmp_path / 'cut.ckpt'
    cut.write_bytes(real.read_bytes()[:2000])
    with pytest.raises(DataError, match='not a readable'):
        embed_run(embed_cfg(trained, tmp_path / 'a', f'checkpoint={cut}'))
    plain = tmp_path / 'plain.ckpt'
    torch.save({'weights': torch.zeros(2)}, plain)
    with pytest.raises(DataError, match='no PinSage hyper-parameters'):
        embed_run(embed_cfg(trained, tmp_path / 'a', f'checkpoint={plain}'))
    assert not (tmp_path / 'a').exists()  # nothing written


def test_checkpoint_config_mismatch(trained, tmp_path):
    # Another title hashing width: other feature columns than the trained
    # ones (refused by the stored feature schema, before the size check):
    with pytest.raises(ConfigError, match=r"item features of data .* do not "
                       r"fit the checkpoint \(missing \d+ trained column"):
        embed_run(embed_cfg(trained, tmp_path / 'a',
                            'data.features.text_dim=64'))
    with pytest.raises(ConfigError, match=r'model.num_layers=3.*with 2'):
        embed_run(embed_cfg(trained, tmp_path / 'a', '+model.num_layers=3'))
    # Weights that do not fit the saved hyper-parameters (edited K):
    real = sorted((trained[1] / 'checkpoints').glob('*.ckpt'))[0]
    ckpt = torch.load(real, weights_only=True)
    ckpt['hyper_parameters']['model']['hidden_channels'] = 32
    edited = tmp_path / 'edited.ckpt'
    torch.save(ckpt, edited)
    with pytest.raises(ConfigError, match='do not fit its saved model'):
        embed_run(embed_cfg(trained, tmp_path / 'a', f'checkpoint={edited}'))
    assert not (tmp_path / 'a').exists()


def test_output_dir_of_another_run_is_refused(trained, tmp_path):
    out = tmp_path / 'emb'
    embed_run(embed_cfg(trained, out, 'output.keep_work=true'))
    before = (out / 'item_embeddings.npy').read_bytes()
    with pytest.raises(ConfigError, match='different run'):
        embed_run(embed_cfg(trained, out, 'sampler_seed=1'))
    assert (out / 'item_embeddings.npy').read_bytes() == before
    # Another run's partial results (its work dir, half done):
    other = tmp_path / 'other'
    other.mkdir()
    work = other / '.work'
    os.replace(out / '.work', work)
    progress = json.loads((work / 'progress.json').read_text())
    # Only the walks had finished when it stopped:
    progress['done'] = {'neighbors': progress['done']['neighbors']}
    (work / 'progress.json').write_text(json.dumps(progress))
    with pytest.raises(ConfigError, match='partial results of a different'):
        embed_run(embed_cfg(trained, other, 'sampler_seed=1'))
    # ... which the same arguments resume and finish:
    res = embed_run(embed_cfg(trained, other))
    assert res['chunks_resumed'] > 0
    assert (other / 'item_embeddings.npy').read_bytes() == before
    res = embed_run(embed_cfg(trained, out, 'sampler_seed=1',
                              'output.overwrite=true'))
    assert res['manifest']['sampler']['seed'] == 1
    # A directory with embeddings pinsage-embed did not write:
    foreign = trained[1] / 'embeddings'
    with pytest.raises(ConfigError, match='did not write'):
        embed_run(embed_cfg(trained, foreign))


@pytest.mark.slow
def test_cli_error_is_one_clear_line(trained, tmp_path):
    root, _, _ = trained
    proc = run_cli([*files_args(root), f'checkpoint={tmp_path / "x.ckpt"}',
                    f'output.dir={tmp_path / "o"}'], tmp_path)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines()
              if ln.startswith('error:')]
    assert len(errors) == 1 and 'does not exist' in errors[0]
    assert 'Traceback' not in proc.stderr
    assert 'does not exist' not in proc.stdout  # once, on stderr


def test_walk_chunk_size_is_a_memory_setting_only(trained, tmp_path):
    # pinsage-embed walk_chunk_size=8 used to walk other walks (embeddings
    # up to 0.087 away from the default's): the walks are keyed by item.
    def embed(name, *extra):
        embed_run(embed_cfg(trained, tmp_path / name, 'output.index=none',
                            *extra))
        return (tmp_path / name / 'item_embeddings.npy').read_bytes()

    ref = embed('default')
    for walk_chunk in (8, 31):
        assert embed(f'w{walk_chunk}', f'walk_chunk_size={walk_chunk}') == \
            ref, walk_chunk
    # chunk_size too (the dense maths runs on fixed blocks; it used to
    # move embeddings by ~1e-6):
    assert embed('c5', 'chunk_size=5', 'walk_chunk_size=8') == ref


@pytest.mark.parametrize('umask', [0o022, 0o077])
def test_outputs_follow_the_umask(trained, tmp_path, umask):
    import stat
    old = os.umask(umask)
    try:
        embed_run(embed_cfg(trained, tmp_path / 'o'))
    finally:
        os.umask(old)
    files = sorted(p for p in (tmp_path / 'o').iterdir())
    assert [p.name for p in files] == ['embed.json', 'index.faiss',
                                       'item_embeddings.npy',
                                       'items.parquet']
    for p in files:  # as open() creates them, not mkstemp's 0600
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name


@pytest.mark.parametrize('value', ['bars', '1'])
def test_bad_progress_value_is_refused(trained, tmp_path, value):
    with pytest.raises(ConfigError, match=r"progress must be one of "
                       r"\['auto', 'bar', 'log', 'none'\]"):
        embed_run(embed_cfg(trained, tmp_path / 'o', f'progress={value}'))
    assert not (tmp_path / 'o').exists()


def test_memory_budget_and_window(trained, tmp_path):
    # Out of core (budget 0) gives the bytes of the in-RAM default:
    a = embed_run(embed_cfg(trained, tmp_path / 'a'))
    b = embed_run(embed_cfg(trained, tmp_path / 'b', 'memory_budget_gib=0'))
    assert (tmp_path / 'a' / 'item_embeddings.npy').read_bytes() == \
        (tmp_path / 'b' / 'item_embeddings.npy').read_bytes()
    assert a['manifest'] == b['manifest']  # the budget is not part of a run
    with pytest.raises(ConfigError, match='memory_budget_gib must be'):
        embed_run(embed_cfg(trained, tmp_path / 'c', 'memory_budget_gib=-1'))
    # Time-local walks are another run (recorded in the manifest):
    w = embed_run(embed_cfg(trained, tmp_path / 'w', 'sampler.window=2'))
    assert w['manifest']['sampler']['window'] == 2
    assert 'window' not in a['manifest']['sampler']
    assert (tmp_path / 'w' / 'item_embeddings.npy').read_bytes() != \
        (tmp_path / 'a' / 'item_embeddings.npy').read_bytes()


def test_keep_updates_only_new_and_featureless_items(trained, tmp_path):
    # The incremental update: yesterday's embeddings (an older log without
    # some items' interactions) + today's log. Items engaged yesterday keep
    # yesterday's vectors; new items and items embedded from features
    # alone get today's.
    root, run_dir, items = trained
    inter = pd.read_csv(root / 'interactions.csv')
    new = inter['item'].drop_duplicates().iloc[:6].tolist()
    old_root = tmp_path / 'old'
    old_root.mkdir()
    inter[~inter['item'].isin(new)].to_csv(old_root / 'interactions.csv',
                                           index=False)
    (old_root / 'items.csv').write_bytes((root / 'items.csv').read_bytes())

    def embed(name, data_root, *extra):
        out = tmp_path / name
        embed_run(compose_embed([*files_args(data_root), *SAMPLER,
                                 f'checkpoint={run_dir}', f'output.dir={out}',
                                 'output.index=none', *extra]))
        table = pd.read_parquet(out / 'items.parquet')
        return table, np.load(out / 'item_embeddings.npy')

    old_t, old_e = embed('yesterday', old_root)
    assert (old_t.set_index('item_id').loc[[str(i) for i in new],
                                           'num_interactions'] == 0).all()
    today_t, today_e = embed('today', root)
    upd_t, upd_e = embed('update', root, f"keep={tmp_path / 'yesterday'}")
    assert list(upd_t['item_id']) == list(today_t['item_id'])
    prev = old_t.set_index('item_id')
    row = prev.loc[upd_t['item_id'], 'index'].to_numpy()
    was_engaged = prev.loc[upd_t['item_id'], 'num_interactions'].to_numpy() > 0
    assert was_engaged.sum() > 0 and (~was_engaged).sum() >= len(new)
    np.testing.assert_array_equal(upd_e[was_engaged],
                                  old_e[row[was_engaged]])
    np.testing.assert_array_equal(upd_e[~was_engaged], today_e[~was_engaged])
    # Engaged items' vectors do change between the two logs, so the test
    # tells kept from recomputed:
    assert not np.allclose(old_e[row[was_engaged]], today_e[was_engaged])
    summary = json.loads((tmp_path / 'update' / 'embed.json').read_text())
    assert summary['items_kept'] == int(was_engaged.sum())
    # Same command again: nothing to do; without keep= it is another run.
    res = embed_run(compose_embed([
        *files_args(root), *SAMPLER, f'checkpoint={run_dir}',
        f"output.dir={tmp_path / 'update'}", 'output.index=none',
        f"keep={tmp_path / 'yesterday'}"]))
    assert res['items_kept'] == summary['items_kept']
    with pytest.raises(ConfigError, match='different run'):
        embed('update', root)


def test_keep_refusals(trained, tmp_path):
    root, run_dir, _ = trained
    with pytest.raises(ConfigError, match='not an embeddings directory'):
        embed_run(embed_cfg(trained, tmp_path / 'a',
                            f"keep={tmp_path / 'missing'}"))
    embed_run(embed_cfg(trained, tmp_path / 'a', 'output.index=none'))
    with pytest.raises(ConfigError, match='is output.dir itself'):
        embed_run(embed_cfg(trained, tmp_path / 'a', 'output.overwrite=true',
                            f"keep={tmp_path / 'a'}"))
    # Another model's embeddings (other dimension):
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'items.parquet').write_bytes(
        (tmp_path / 'a' / 'items.parquet').read_bytes())
    emb = np.load(tmp_path / 'a' / 'item_embeddings.npy')
    np.save(other / 'item_embeddings.npy', np.concatenate([emb, emb], 1))
    with pytest.raises(ConfigError, match='16-dimensional'):
        embed_run(embed_cfg(trained, tmp_path / 'b', f'keep={other}'))
    assert not (tmp_path / 'b' / 'item_embeddings.npy').exists()
