r"""The end-to-end Spark pipeline (``local[2]``): interactions Parquet ->
neighbourhoods -> layers -> embeddings -> faiss index, against the local
path (``importance_graph`` + ``PinSage.inference``) on ML-100K; resuming
after a failure in a layer; refusing a resume with other settings; bad
input before anything is written. Uses the session-wide ``spark``
fixture (tests/conftest.py).

Tolerance: max abs difference < 1e-5 per coordinate (the neighbourhoods
are equal exactly; the layers differ by float32 rounding, ~1e-7).
"""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pinsage_pyg.config import ConfigError
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.export import load_embeddings
from pinsage_pyg.inference.spark import (export_items, local_csr, main,
                                         read_embeddings, save_model,
                                         spark_pipeline)
from pinsage_pyg.nn.model import PinSage
from pinsage_pyg.sampler.walks import BipartiteCSR, importance_graph

TOL = 1e-5
WALKS = dict(num_neighbors=8, num_walks=16, walk_length=2,
             restart_prob=0.2)


def _inputs(root: Path, user, item, x, model, timestamp=None):
    cols = {'user_id': np.asarray(user), 'item_id': np.asarray(item)}
    if timestamp is not None:
        cols['timestamp'] = np.asarray(timestamp)
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(cols).to_parquet(root / 'interactions.parquet')
    export_items(root / 'items.parquet', x)
    save_model(root / 'model.pt', model)
    return (str(root / 'interactions.parquet'), str(root / 'items.parquet'),
            str(root / 'model.pt'))


@pytest.mark.slow
def test_pipeline_equals_local_path_movielens_100k(spark, tmp_path, capsys):
    from omegaconf import OmegaConf
    from pinsage_pyg.training.pipeline import load_dataset
    cfg = OmegaConf.load(Path(__file__).parents[2] / 'src' / 'pinsage_pyg' /
                         'configs' / 'data' / 'movielens_100k.yaml')
    try:
        ds = load_dataset(OmegaConf.to_container(cfg, resolve=True))
    except RuntimeError as exc:
        if 'network' in str(exc):
            pytest.skip(f'MovieLens-100K not cached and no network: {exc}')
        raise
    torch.manual_seed(0)
    model = PinSage(ds.num_features, 32, 16, num_layers=2,
                    asymmetric=True).eval()
    # The residual query side as after training (it starts equal to the
    # item side): the query embeddings must come out of the job distinct.
    torch.nn.init.normal_(model.query_delta.lin2.weight)
    # The position of each training edge as its timestamp: the Spark job
    # then orders every user's items as the dataset's own graph does.
    inter, items, model_path = _inputs(
        tmp_path / 'in', ds.train_user.numpy(), ds.train_item.numpy(), ds.x,
        model, timestamp=np.arange(ds.train_user.numel()))
    summary = main(['pipeline', '--interactions', inter, '--items', items,
                    '--model', model_path, '--out', str(tmp_path / 'out'),
                    '--master', 'local[2]', '--num-neighbors', '8',
                    '--num-walks', '16', '--restart-prob', '0.2',
                    '--seed', '3'])
    assert 'pipeline: 1682 items' in capsys.readouterr().out
    assert summary['reused'] == []
    # The local path: the dataset's graph, its importance neighbourhoods,
    # the layer-wise forward.
    csr = BipartiteCSR.from_edges(ds.train_user, ds.train_item, ds.num_users,
                                  ds.num_items)
    g = importance_graph(csr, ds.x, seed=3, backend='torch', **WALKS)
    assert summary['num_edges'] == g.edge_index.size(1)
    query, item = model.inference(g.x, g.edge_index, g.edge_weight)
    table, item_emb, query_emb = load_embeddings(summary['index_dir'])
    np.testing.assert_array_equal(table['item_id'].astype(int),
                                  np.arange(ds.num_items))
    assert np.abs(item_emb - item.numpy()).max() < TOL
    assert np.abs(query_emb - query.numpy()).max() < TOL
    import faiss
    index = faiss.read_index(str(Path(summary['index_dir']) /
                                  'index.faiss'))
    assert index.ntotal == ds.num_items
    _, top = index.search(query_emb[:5], 3)
    exact = np.argsort(-(query_emb[:5] @ item_emb.T), axis=1)[:, :3]
    np.testing.assert_array_equal(top, exact)
    out = tmp_path / 'out'
    assert sorted(p.name for p in out.iterdir()) == [
        'embeddings', 'index', 'layers', 'manifest.json', 'neighbors']


def _small(tmp_path):
    rng = np.random.default_rng(1)
    user = rng.integers(0, 25, 300)
    item = rng.integers(0, 36, 300)  # items 36..39: no interactions
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    model = PinSage(5, 8, 4, num_layers=3).eval()
    return model, x, user, item, _inputs(tmp_path / 'in', user, item, x,
                                         model)


@pytest.mark.slow
def test_resume_after_a_failed_layer(spark, tmp_path, monkeypatch):
    model, x, user, item, (inter, items, model_path) = _small(tmp_path)
    out = tmp_path / 'out'
    run = dict(seed=4, **WALKS)
    from pinsage_pyg.inference.spark import job
    write = job.write_atomic

    def fail_in_layer_2(fs, df, path, key):
        if path.endswith('layer_2'):
            raise OSError('executor lost')
        write(fs, df, path, key)

    monkeypatch.setattr(job, 'write_atomic', fail_in_layer_2)
    with pytest.raises(OSError, match='executor lost'):
        spark_pipeline(spark, inter, items, model_path, out, **run)
    monkeypatch.undo()
    assert sorted(p.name for p in (out / 'layers').iterdir()) == \
        ['layer_0', 'layer_1']  # whole layers only, nothing half-written
    summary = spark_pipeline(spark, inter, items, model_path, out, **run)
    assert summary['reused'] == ['neighbors', 'layer_0', 'layer_1']
    g = importance_graph(local_csr(user, item, num_items=40), x, seed=4,
                         backend='torch', **WALKS)
    _, local = model.inference(x, g.edge_index, g.edge_weight)
    ids, emb, _ = read_embeddings(out / 'embeddings')
    np.testing.assert_array_equal(ids, np.arange(40))
    assert np.abs(emb - local.numpy()).max() < TOL
    # Items without interactions: embedded from their features alone.
    _, alone = model.inference(x[36:], torch.zeros(2, 0, dtype=torch.long))
    assert np.abs(emb[36:] - alone.numpy()).max() < TOL
    # Everything there: nothing recomputed.
    again = spark_pipeline(spark, inter, items, model_path, out, **run)
    assert again['reused'] == ['neighbors', 'embeddings', 'index']
    # Other settings: refused, then recomputed on request.
    with pytest.raises(ConfigError, match=r"seed: 4 -> 5.*resume=False"):
        spark_pipeline(spark, inter, items, model_path, out,
                       **dict(run, seed=5))
    fresh = spark_pipeline(spark, inter, items, model_path, out, resume=False,
                           **dict(run, seed=5))
    assert fresh['reused'] == []
    ids5, emb5, _ = read_embeddings(out / 'embeddings')
    assert not np.allclose(emb5, emb)
    _, idx_emb, _ = load_embeddings(fresh['index_dir'])
    np.testing.assert_array_equal(idx_emb, emb5)


def test_bad_input_writes_nothing(spark, tmp_path):
    model, x, user, item, (inter, items, model_path) = _small(tmp_path)
    out = tmp_path / 'out'
    pd.DataFrame({'user_id': [0, 1], 'item_id': [3, 99]}).to_parquet(
        tmp_path / 'unknown.parquet')
    with pytest.raises(DataError, match=r"1 item ids are not in items .*"
                                        r"smallest 99"):
        spark_pipeline(spark, tmp_path / 'unknown.parquet', items,
                       model_path, out)
    other = tmp_path / 'other.pt'
    save_model(other, PinSage(6, 8, 4, num_layers=1))
    with pytest.raises(DataError, match=r'length 5\.\.5.*in_channels=6'):
        spark_pipeline(spark, inter, items, other, out)
    with pytest.raises(ConfigError, match='num_walks must be'):
        spark_pipeline(spark, inter, items, model_path, out, num_walks=0)
    with pytest.raises(ConfigError, match='index_kind must be one of'):
        spark_pipeline(spark, inter, items, model_path, out,
                       index_kind='annoy')
    with pytest.raises(ConfigError, match='index_shards must be an integer'):
        spark_pipeline(spark, inter, items, model_path, out, index_shards=0)
    with pytest.raises(ConfigError, match='drop index_dir'):
        spark_pipeline(spark, inter, items, model_path, out, index_shards=2,
                       index_dir=tmp_path / 'idx')
    assert not out.exists()
    out.mkdir()
    (out / 'mine.txt').write_text('not a pipeline output')
    with pytest.raises(DataError, match='not a Spark pipeline output'):
        spark_pipeline(spark, inter, items, model_path, out)
    assert [p.name for p in out.iterdir()] == ['mine.txt']


@pytest.mark.slow
def test_resume_with_the_other_gather_recomputes_the_layers(
        spark, tmp_path, monkeypatch):
    model, x, user, item, (inter, items, model_path) = _small(tmp_path)
    out = tmp_path / 'out'
    run = dict(seed=4, **WALKS)
    from pinsage_pyg.inference.spark import job
    write = job.write_atomic

    def fail_in_layer_2(fs, df, path, key):
        if path.endswith('layer_2'):
            raise OSError('executor lost')
        write(fs, df, path, key)

    monkeypatch.setattr(job, 'write_atomic', fail_in_layer_2)
    with pytest.raises(OSError, match='executor lost'):
        spark_pipeline(spark, inter, items, model_path, out,
                       gather='broadcast', **run)
    monkeypatch.undo()
    # The broadcast layers lack the shuffle's message destinations.
    summary = spark_pipeline(spark, inter, items, model_path, out,
                             gather='shuffle', **run)
    assert summary['reused'] == ['neighbors']
    g = importance_graph(local_csr(user, item, num_items=40), x, seed=4,
                         backend='torch', **WALKS)
    _, local = model.inference(x, g.edge_index, g.edge_weight)
    _, emb, _ = read_embeddings(out / 'embeddings')
    assert np.abs(emb - local.numpy()).max() < TOL
    with pytest.raises(ConfigError, match="gather must be one of"):
        spark_pipeline(spark, inter, items, model_path, tmp_path / 'o2',
                       gather='gossip', **run)
    assert not (tmp_path / 'o2').exists()


@pytest.mark.slow
def test_sharded_index_built_by_the_workers(spark, tmp_path, capsys):
    from pinsage_pyg.inference.export import load_index_shards
    model, x, user, item, (inter, items, model_path) = _small(tmp_path)
    out = tmp_path / 'out'
    summary = main(['pipeline', '--interactions', inter, '--items', items,
                    '--model', model_path, '--out', str(out),
                    '--master', 'local[2]', '--num-neighbors', '8',
                    '--num-walks', '16', '--restart-prob', '0.2',
                    '--seed', '4', '--index-shards', '3'])
    assert 'in 3 shards in' in capsys.readouterr().out
    assert summary['index_dir'] is None and summary['num_shards'] == 3
    assert sorted(p.name for p in out.iterdir()) == [
        'embeddings', 'index_shards', 'layers', 'manifest.json', 'neighbors']
    ids, emb, _ = read_embeddings(out / 'embeddings')
    shard_ids, index = load_index_shards(out / 'index_shards')
    # Every item in exactly one shard, and the merged search is exact.
    np.testing.assert_array_equal(np.sort(shard_ids), ids)
    assert index.ntotal == 40
    rows = {int(i): r for r, i in enumerate(ids)}
    q = emb[:6]
    score, found = index.search(q, 5)
    exact = -np.sort(-(q @ emb.T), axis=1)[:, :5]
    np.testing.assert_allclose(score, exact, atol=1e-6)
    got = emb[[rows[int(i)] for i in shard_ids[found].reshape(-1)]]
    np.testing.assert_allclose((got.reshape(6, 5, -1) * q[:, None]).sum(-1),
                               exact, atol=1e-6)
    # One serving machine's shards only.
    part_ids, part = load_index_shards(out / 'index_shards', shards=[1])
    assert 0 < part.ntotal == len(part_ids) < 40
    with pytest.raises(DataError, match=r'has no shard\(s\) \[7\]'):
        load_index_shards(out / 'index_shards', shards=[7])
    # A rerun reuses the shards; other shard counts are another run.
    again = spark_pipeline(spark, inter, items, model_path, out, seed=4,
                           index_shards=3, **WALKS)
    assert 'index' in again['reused'] and again['num_shards'] == 3
    # Parts: a shard split over several Parquet values loads the same.
    from pinsage_pyg.inference.spark.job import _FS
    from pinsage_pyg.inference.spark.pipeline import build_index_shards
    small = str(tmp_path / 'parts')
    assert build_index_shards(spark, str(out / 'embeddings'), small,
                              _FS(spark, small), 'k', 3,
                              part_bytes=100) == 3
    assert spark.read.parquet(small).count() > 3
    ids2, index2 = load_index_shards(small)
    np.testing.assert_array_equal(ids2, shard_ids)
    np.testing.assert_array_equal(index2.search(q, 5)[1], found)
    bad = tmp_path / 'bad'
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq
    table = pads.dataset(small).to_table()
    pq.write_table(table.filter(pads.field('part') != 1),
                   bad.with_suffix('.parquet'))
    with pytest.raises(DataError, match='incomplete or corrupt'):
        load_index_shards(bad.with_suffix('.parquet'))
    with pytest.raises(ConfigError, match='index_shards'):
        spark_pipeline(spark, inter, items, model_path, out, seed=4,
                       index_shards=2, **WALKS)
