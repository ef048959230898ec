r"""``pinsage-embed`` on a newer interaction log than the checkpoint's
(embed new items without retraining), and the refusals of logs and item
tables that do not fit the checkpoint."""
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
from pinsage_pyg.data import build_dataset
from pinsage_pyg.data.features import (FeatureSpec, build_item_features,
                                       standardize_column)
from pinsage_pyg.data.synthetic import synthetic_interactions
from pinsage_pyg.evaluation.cold_start import new_item_split
from pinsage_pyg.inference.embed import build_model, load_checkpoint
from pinsage_pyg.inference.embed import run as embed_run

TRAIN = [
    'model.hidden_channels=16', 'model.out_channels=8',
    'sampler.num_walks=10', 'sampler.num_neighbors=5',
    'sampler.num_negatives=20', 'data.batch_size=256', 'data.num_workers=0',
    'trainer.max_epochs=1', 'trainer.enable_progress_bar=false',
    'evaluate.baselines=false', 'output.embeddings=false', 'seed=3',
]
SAMPLER = ['sampler.num_walks=10', 'sampler.num_neighbors=5', 'seed=3',
           'progress=false', 'chunk_size=16', 'output.index=none']
SPEC = FeatureSpec(multilabel_columns=['genres'], numeric_columns=['year'])
NEVER = [f'never{i}' for i in range(3)]  # in no log, only the newer table
LATE = 'late0'  # only in the newer log, and only as users' last items


def files_args(log, items):
    return ['data=files', f'data.interactions={log}', f'data.items={items}',
            'data.unknown_feature_items=embed',
            'data.features.multilabel_columns=[genres]',
            'data.features.numeric_columns=[year]']


@pytest.fixture(scope='module')
def logs(tmp_path_factory):
    r"""A checkpoint trained on an old log and catalogue, and a newer log
    and catalogue: the items first engaged in the last 30% of the timeline
    (new items, with interactions only in the newer log), an item engaged
    only as five users' latest interaction, and three items of the newer
    item table that no log holds."""
    from pinsage_pyg.training.pipeline import run as train_run
    root = tmp_path_factory.mktemp('newer_log')
    inter, items = synthetic_interactions(num_users=50, num_items=70,
                                          num_interactions=1500, seed=4)
    split = new_item_split(inter, 0.3)
    old_items = items[~items['item'].isin(split.new_items)]
    users = inter['user'].drop_duplicates().to_numpy()[:5]
    late = pd.DataFrame({'user': users, 'item': LATE,
                         'timestamp': inter['timestamp'].max() + 1})
    newer = pd.concat([inter, late], ignore_index=True)
    extra = items.iloc[:4].assign(item=[LATE, *NEVER])
    new_items = pd.concat([items, extra], ignore_index=True)
    paths = {name: root / f'{name}.csv' for name in
             ('old', 'old_items', 'newer', 'new_items')}
    for name, df in (('old', split.train), ('old_items', old_items),
                     ('newer', newer), ('new_items', new_items)):
        df.to_csv(paths[name], index=False)
    run_dir = root / 'run'
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base='1.3'):
        cfg = compose('train', overrides=[
            *files_args(paths['old'], paths['old_items']), *TRAIN,
            f'output.dir={run_dir}'])
    threads = torch.get_num_threads()
    train_run(cfg)
    torch.set_num_threads(threads)
    return dict(paths, run=run_dir, split=split, newer_log=newer,
                new_table=new_items)


def embed_cfg(logs, log, items, out, *extra):
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base='1.3'):
        return compose('embed', overrides=[
            *files_args(log, items), *SAMPLER, f'checkpoint={logs["run"]}',
            f'output.dir={out}', *extra])


def read(out):
    ids = pd.read_parquet(out / 'items.parquet')['item_id'].astype(str)
    return pd.Index(ids), np.load(out / 'item_embeddings.npy')


def features_only(logs, ids):
    r"""The checkpoint's embeddings of :obj:`ids` from their features
    alone (no neighbours), features standardised with the training run's
    statistics."""
    kwargs, weights, schema = load_checkpoint(logs['run'],
                                              return_features=True)
    stats = schema['feature_stats']
    table = logs['new_table'].set_index('item')
    x, names = build_item_features(table, SPEC, stats=stats)
    rows = table.index.get_indexer(list(ids))
    # No interactions: the trained average log degree.
    degree = standardize_column(np.full(len(rows), stats['log_degree'][
        'mean']), 'log_degree', stats, clip=True)
    x = torch.from_numpy(np.concatenate([x[rows], degree], axis=1))
    assert names + ['log_degree'] == schema['feature_names']
    model = build_model(kwargs, weights, x.size(1))
    with torch.no_grad():
        emb = model.inference(x, torch.empty(2, 0, dtype=torch.long))[1]
    return pd.Index(list(ids)), emb.numpy()


def test_newer_log_embeds_new_items_without_retraining(logs, tmp_path):
    out = tmp_path / 'newer'
    summary = embed_run(embed_cfg(logs, logs['newer'], logs['new_items'],
                                  out))
    ids, emb = read(out)
    # Every item of the newer table, in its order, the new ones included:
    assert list(ids) == list(logs['new_table']['item'].astype(str))
    assert np.isfinite(emb).all()
    # All interactions of the newer log are in its graph (none held out):
    assert summary['graph'] == 'all'
    assert summary['num_interactions'] == len(logs['newer_log'])
    # Items in no log get features-only embeddings ...
    fo_ids, fo = features_only(logs, [*NEVER, LATE])
    for item in NEVER:
        np.testing.assert_allclose(emb[ids.get_loc(item)],
                                   fo[fo_ids.get_loc(item)], atol=1e-5)
    # ... the same ones as on the old log, where the new items had no
    # interactions yet (the training statistics standardise both):
    old = tmp_path / 'old'
    embed_run(embed_cfg(logs, logs['old'], logs['new_items'], old))
    old_ids, old_emb = read(old)
    assert list(old_ids) == list(ids)
    never = ids.get_indexer(NEVER)
    np.testing.assert_allclose(emb[never], old_emb[never], atol=1e-5)
    # The new items gained neighbourhoods from their newer interactions:
    new = ids.get_indexer(logs['split'].new_items)
    moved = np.abs(emb[new] - old_emb[new]).max(axis=1)
    assert (moved > 1e-4).mean() > 0.9


def test_newer_log_keeps_each_users_last_interactions(logs, tmp_path):
    # LATE is engaged only as five users' latest interaction: the
    # leave-last-out train split would hold all of them out (features only),
    # the default graph=all embeds it from its neighbourhood.
    emb = {}
    for graph in ('all', 'train'):
        out = tmp_path / graph
        summary = embed_run(embed_cfg(logs, logs['newer'], logs['new_items'],
                                      out, f'graph={graph}'))
        ids, e = read(out)
        emb[graph] = e[ids.get_loc(LATE)]
    assert summary['num_interactions'] < len(logs['newer_log'])
    fo_ids, fo = features_only(logs, [LATE, *NEVER])
    np.testing.assert_allclose(emb['train'], fo[fo_ids.get_loc(LATE)],
                               atol=1e-5)
    assert np.abs(emb['all'] - emb['train']).max() > 1e-3
    with pytest.raises(ConfigError, match="graph must be one of"):
        embed_run(embed_cfg(logs, logs['newer'], logs['new_items'],
                            tmp_path / 'x', 'graph=full'))


def test_training_statistics_standardise_the_newer_log():
    inter, items = synthetic_interactions(num_users=40, num_items=60,
                                          num_interactions=1000, seed=2)
    split = new_item_split(inter, 0.3)
    old_items = items[~items['item'].isin(split.new_items)]
    old = build_dataset(split.train, old_items, SPEC,
                        unknown_feature_items='embed')
    stats = old.feature_stats
    assert set(stats) == {'year', 'log_degree'}
    newer_items = pd.concat([items.assign(year=items['year'] + 5),
                             items.iloc[:2].assign(item=['c0', 'c1'])])
    # The training data with its own statistics: the same features.
    same = build_dataset(split.train, old_items, SPEC,
                         unknown_feature_items='embed', feature_stats=stats)
    assert torch.allclose(same.x, old.x, atol=1e-6)
    # A newer log and table (other years, two cold items): with the
    # training statistics an item's features depend on its own data only.
    newer = build_dataset(inter, newer_items, SPEC,
                          unknown_feature_items='embed', feature_stats=stats)
    j = newer.feature_names.index('year')
    raw = newer_items['year'].to_numpy()
    np.testing.assert_allclose(
        newer.x[:, j].numpy(),
        (raw - stats['year']['mean']) / stats['year']['std'], rtol=1e-5)
    # The log degree is clipped to the trained range (the most engaged
    # items of a longer log are not beyond it), and an item nobody engaged
    # with gets the trained average (0 once standardised), as in training
    # (not log(1 + 0), which set such items apart from all trained ones):
    d = newer.feature_names.index('log_degree')
    ld = stats['log_degree']
    hi = (ld['max'] - ld['mean']) / ld['std']
    assert float(newer.x[:, d].max()) == pytest.approx(hi, abs=1e-5)
    assert newer.x[:, d].max() <= hi + 1e-6
    cold = pd.Index(newer.item_ids).get_indexer(['c0', 'c1'])
    assert torch.equal(newer.x[cold, d], torch.zeros(2))
    never = old.item_degree() == 0  # the new items, in training
    assert never.any() and (old.x[never, d].abs() < 1e-6).all()
    assert (old.x[~never, d] != 0).any()
    # Without statistics the data's own are used (as in training):
    own = build_dataset(inter, newer_items, SPEC,
                        unknown_feature_items='embed')
    assert abs(float(own.x[:, j].mean())) < 1e-5
    assert own.feature_stats['year']['mean'] != stats['year']['mean']


@pytest.mark.parametrize('change,match', [
    # another genre vocabulary: a genre the training table did not have
    ('new_genre', r"1 column\(s\) the model never saw, e\.g\. "
                  r"\['genres=brand-new'\]"),
    # other feature columns: the year column left out of the features
    ('no_year', r"missing 1 trained column\(s\), e\.g\. \['year'\]"),
])
def test_data_that_does_not_fit_the_checkpoint_is_refused(logs, tmp_path,
                                                          change, match):
    items = logs['new_table'].copy()
    extra = []
    if change == 'new_genre':
        items.loc[items['item'] == NEVER[0], 'genres'] = 'brand-new'
    else:
        extra = ['data.features.numeric_columns=[]']
    path = tmp_path / 'items.csv'
    items.to_csv(path, index=False)
    out = tmp_path / 'emb'
    with pytest.raises(ConfigError, match=r"item features of data 'files' do "
                       r"not fit the checkpoint \(" + match):
        embed_run(embed_cfg(logs, logs['newer'], path, out, *extra))
    assert not out.exists()


def test_refusal_is_one_clear_error_on_the_command_line(logs, tmp_path):
    items = logs['new_table'].copy()
    items.loc[items['item'] == NEVER[0], 'genres'] = 'cluster3|brand-new'
    path = tmp_path / 'items.csv'
    items.to_csv(path, index=False)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(Path(__file__).parents[2] / 'src'),
         os.environ.get('PYTHONPATH', '')])}
    args = [*files_args(logs['newer'], path), *SAMPLER,
            f'checkpoint={logs["run"]}', f'output.dir={tmp_path / "emb"}']
    proc = subprocess.run(
        [sys.executable, '-c', 'from pinsage_pyg.cli import embed; embed()',
         *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if 'error' in
              ln.lower()]
    assert len(errors) == 1, proc.stderr
    assert "do not fit the checkpoint" in errors[0]
    assert "genres=brand-new" in errors[0]
    assert not (tmp_path / 'emb').exists()
