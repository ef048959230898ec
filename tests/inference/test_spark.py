r"""The Spark job (``local[2]``) against the local layer-wise reference
:meth:`PinSage.inference`: parity on ML-100K and on a small synthetic graph
(every pooling), the command line, atomic output and bad input.

Tolerance: max abs difference < 1e-5 on every coordinate of every item's
L2-normalised float32 embedding (Spark pools in float64, torch in float32;
the observed difference is ~1e-7).

One SparkSession for the test session (the ``spark`` fixture of
``tests/conftest.py``); needs ``pip install pinsage_pyg[spark]`` and Java
17+ (skipped otherwise; a failure with ``PINSAGE_REQUIRE_SPARK=1``, as in
CI). Tests that run a whole Spark job are
marked slow (Spark's fixed cost per job is seconds on a small machine).
"""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pinsage_pyg.config import ConfigError
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.spark import (
    export_inputs, export_items, export_neighbors, load_model, main,
    read_embeddings, save_model, spark_layerwise_embed)
from pinsage_pyg.nn.model import PinSage

TOL = 1e-5


def _assert_parity(out_dir, model, x, edge_index, edge_weight):
    query, item = model.inference(x, edge_index, edge_weight)
    ids, item_emb, query_emb = read_embeddings(out_dir)
    np.testing.assert_array_equal(ids, np.arange(x.size(0)))
    assert item_emb.dtype == np.float32
    assert np.abs(item_emb - item.numpy()).max() < TOL
    assert np.abs(query_emb - query.numpy()).max() < TOL
    return item_emb, query_emb


def _graph(num_nodes=60, num_edges=400, seed=0):
    r"""A random graph sorted by target, with repeated (target, neighbor)
    pairs, self loops and items without neighbours."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges, ), generator=g)
    dst = torch.randint(0, num_nodes - 7, (num_edges, ), generator=g)
    src[:20], dst[:20] = src[20:40], dst[20:40]  # 20 repeated pairs
    perm = torch.argsort(dst, stable=True)
    weight = torch.rand(num_edges, generator=g)
    weight[:5] = 0.0  # zero-weight edges contribute nothing
    x = torch.randn(num_nodes, 6, generator=g)
    return x, torch.stack([src[perm], dst[perm]]), weight[perm]


@pytest.mark.slow
def test_parity_movielens_100k(spark, tmp_path):
    from omegaconf import OmegaConf
    from pinsage_pyg.sampler.walks import BipartiteCSR, importance_graph
    from pinsage_pyg.training.pipeline import load_dataset
    cfg = OmegaConf.load(Path(__file__).parents[2] / 'src' / 'pinsage_pyg' /
                         'configs' / 'data' / 'movielens_100k.yaml')
    try:
        ds = load_dataset(OmegaConf.to_container(cfg, resolve=True))
    except RuntimeError as exc:
        if 'network' in str(exc):
            pytest.skip(f'MovieLens-100K not cached and no network: {exc}')
        raise
    csr = BipartiteCSR.from_edges(ds.train_user, ds.train_item,
                                  ds.num_users, ds.num_items)
    graph = importance_graph(csr, ds.x, num_neighbors=50, num_walks=100,
                             walk_length=2, seed=0)
    assert ds.num_items == 1682 and graph.edge_index.size(1) > 50_000
    torch.manual_seed(0)
    model = PinSage(ds.num_features, 32, 16, num_layers=2).eval()
    paths = export_inputs(tmp_path / 'in', graph.x, graph.edge_index,
                          graph.edge_weight, model)
    summary = spark_layerwise_embed(spark, paths['items'],
                                    paths['neighbors'], paths['model'],
                                    tmp_path / 'out')
    assert summary['num_items'] == 1682
    assert summary['num_edges'] == graph.edge_index.size(1)
    item_emb, _ = _assert_parity(tmp_path / 'out', model, graph.x,
                                 graph.edge_index, graph.edge_weight)
    np.testing.assert_allclose(np.linalg.norm(item_emb, axis=1), 1.0,
                               atol=1e-5)
    # Only the output is left next to it: no temporary directories.
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in', 'out']


@pytest.mark.slow
@pytest.mark.parametrize('aggr,asymmetric,gather', [
    ('importance', True, 'broadcast'), ('importance', True, 'shuffle'),
    ('mean', False, 'shuffle')])
def test_parity_synthetic(spark, tmp_path, aggr, asymmetric, gather):
    x, edge_index, edge_weight = _graph()
    torch.manual_seed(1)
    model = PinSage(6, 8, 5, num_layers=2, aggr=aggr,
                    asymmetric=asymmetric).eval()
    if asymmetric:  # the residual query side as after training: non-zero
        torch.nn.init.normal_(model.query_delta.lin2.weight)
    paths = export_inputs(tmp_path, x, edge_index, edge_weight, model)
    summary = spark_layerwise_embed(spark, paths['items'],
                                    paths['neighbors'], paths['model'],
                                    tmp_path / 'out', gather=gather)
    assert summary['gather'] == gather
    item_emb, query_emb = _assert_parity(tmp_path / 'out', model, x,
                                         edge_index, edge_weight)
    cols = pd.read_parquet(tmp_path / 'out').columns
    assert ('query_embedding' in cols) == asymmetric
    assert asymmetric == (not np.allclose(item_emb, query_emb))


@pytest.mark.slow
def test_cli_max_pooling_raw_ids_no_weights(spark, tmp_path, capsys):
    r"""Through the command line: max pooling, three layers, sparse integer
    item ids in shuffled order, no weight column, replacing an older
    output."""
    x, edge_index, _ = _graph(num_nodes=30, num_edges=150, seed=2)
    torch.manual_seed(2)
    model = PinSage(6, 8, 4, num_layers=3, aggr='max').eval()
    ids = np.random.default_rng(0).permutation(30) * 1000 + 7
    export_items(tmp_path / 'items.parquet', x, item_ids=ids)
    export_neighbors(tmp_path / 'nb.parquet', edge_index, item_ids=ids)
    save_model(tmp_path / 'model.pt', model)
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'old.txt').write_text('a previous run')
    summary = main(['--items', str(tmp_path / 'items.parquet'),
                    '--neighbors', str(tmp_path / 'nb.parquet'),
                    '--model', str(tmp_path / 'model.pt'),
                    '--out', str(tmp_path / 'out'), '--master', 'local[2]',
                    '--partitions', '3', '--overwrite'])
    assert 'embedded 30 items (150 neighbour edges, 3 layers)' in \
        capsys.readouterr().out
    assert not (tmp_path / 'out' / 'old.txt').exists()  # replaced whole
    assert summary['num_layers'] == 3
    _, item = model.inference(x, edge_index)
    got_ids, item_emb, _ = read_embeddings(tmp_path / 'out')
    order = np.argsort(ids)
    np.testing.assert_array_equal(got_ids, ids[order])
    assert np.abs(item_emb - item.numpy()[order]).max() < TOL


# --------------------------------------------------------------------------- #
# atomic output and bad input


@pytest.fixture
def inputs(tmp_path):
    x, edge_index, edge_weight = _graph(num_nodes=20, num_edges=80)
    model = PinSage(6, 8, 4, num_layers=1).eval()
    return export_inputs(tmp_path / 'in', x, edge_index, edge_weight, model)


def _run(spark, inputs, out, **kw):
    args = dict(inputs)
    args.update(kw)
    return spark_layerwise_embed(spark, args['items'], args['neighbors'],
                                 args['model'], out,
                                 overwrite=args.get('overwrite', False))


@pytest.mark.slow
def test_existing_output_and_failed_run_leave_nothing_half(
        spark, inputs, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('a previous run')
    with pytest.raises(DataError, match='already exists.*overwrite'):
        _run(spark, inputs, out)
    assert (out / 'keep.txt').read_text() == 'a previous run'

    from pinsage_pyg.inference import spark as job
    rename = job._FS.rename

    def fail_on_final(self, src, dst):
        if src.endswith('/embeddings'):  # the finished output
            raise OSError('disk full')
        rename(self, src, dst)

    monkeypatch.setattr(job._FS, 'rename', fail_on_final)
    with pytest.raises(OSError, match='disk full'):
        _run(spark, inputs, out, overwrite=True)
    # The previous output is back and no temporary directory is left:
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in', 'out']
    assert sorted(p.name for p in out.iterdir()) == ['keep.txt']


def test_missing_and_unreadable_inputs(spark, inputs, tmp_path):
    with pytest.raises(DataError, match="items '.*nope.parquet' does not"):
        _run(spark, inputs, tmp_path / 'o', items=str(tmp_path / 'nope'
                                                      '.parquet'))
    with pytest.raises(ConfigError, match="model file .* does not exist"):
        _run(spark, inputs, tmp_path / 'o', model=str(tmp_path / 'm.pt'))
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(ConfigError, match='not a readable PyTorch file'):
        _run(spark, inputs, tmp_path / 'o', model=str(bad))
    with pytest.raises(ConfigError, match='not a readable PyTorch file'):
        load_model(bad)
    torch.save({'state_dict': {}}, bad)
    with pytest.raises(ConfigError, match='neither a save_model'):
        load_model(bad)
    assert not (tmp_path / 'o').exists()


def test_model_and_data_mismatch(spark, inputs, tmp_path):
    other = tmp_path / 'other.pt'
    save_model(other, PinSage(7, 8, 4, num_layers=1))
    with pytest.raises(DataError, match=r'length 6\.\.6.*in_channels=7'):
        _run(spark, inputs, tmp_path / 'o', model=str(other))
    # Weights that do not fit the stored arguments:
    payload = torch.load(inputs['model'], weights_only=True)
    payload['model_kwargs']['hidden_channels'] = 16
    torch.save(payload, other)
    with pytest.raises(ConfigError, match='do not fit the model arguments'):
        _run(spark, inputs, tmp_path / 'o', model=str(other))
    assert not (tmp_path / 'o').exists()


@pytest.mark.slow
def test_bad_neighbor_lists(spark, inputs, tmp_path):
    nb = pd.read_parquet(inputs['neighbors'])
    cases = {
        'unknown': (nb.assign(neighbor=nb['neighbor'].where(
            nb.index != 3, 999)), r'1 distinct target/neighbor ids are not '
                                  r'in items .*smallest 999, largest 999'),
        'negative': (nb.assign(weight=nb['weight'].where(nb.index != 0,
                                                         -1.0)),
                     '1 null, NaN or negative weights'),
        'columns': (nb.rename(columns={'neighbor': 'src'}),
                    "no column 'neighbor'"),
        'types': (nb.assign(target=nb['target'].astype(float)),
                  "column 'target' .* must be of integer type"),
    }
    for name, (df, match) in cases.items():
        path = tmp_path / f'{name}.parquet'
        df.to_parquet(path)
        with pytest.raises(DataError, match=match):
            _run(spark, inputs, tmp_path / 'o', neighbors=str(path))
    items = pd.read_parquet(inputs['items'])
    path = tmp_path / 'dup_items.parquet'
    pd.concat([items, items.iloc[:2]]).to_parquet(path)
    with pytest.raises(DataError, match=r'repeats item ids, e.g. \[0, 1\]'):
        _run(spark, inputs, tmp_path / 'o', items=str(path))
    assert not (tmp_path / 'o').exists()


def test_cli_reports_errors(spark, inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(['--items', inputs['items'], '--neighbors', inputs['neighbors'],
              '--model', str(tmp_path / 'missing.pt'),
              '--out', str(tmp_path / 'o')])
    assert exc.value.code == 2
    assert "error: model file" in capsys.readouterr().err


def test_export_rejects_bad_shapes(tmp_path):
    with pytest.raises(DataError, match='2-D'):
        export_items(tmp_path / 'i.parquet', torch.zeros(3))
    with pytest.raises(DataError, match='must be integers'):
        export_items(tmp_path / 'i.parquet', torch.zeros(2, 3),
                     item_ids=np.array(['a', 'b']))
    with pytest.raises(DataError, match=r'shape \[2, num_edges\]'):
        export_neighbors(tmp_path / 'n.parquet', torch.zeros(3, 4).long())
    assert not list(tmp_path.iterdir())


def test_load_model_from_lightning_checkpoint(tmp_path):
    from pinsage_pyg.training.module import PinSageModule
    module = PinSageModule(model=dict(in_channels=5, hidden_channels=8,
                                      out_channels=4, num_layers=2,
                                      asymmetric=True),
                           loss={'name': 'max_margin'},
                           optimizer={'lr': 1e-3})
    # What Lightning's ModelCheckpoint writes for this module:
    torch.save({'state_dict': module.state_dict(),
                'hyper_parameters': dict(module.hparams)},
               tmp_path / 'best.ckpt')
    model = load_model(tmp_path / 'best.ckpt')
    assert not model.training and model.asymmetric and model.num_layers == 2
    x = torch.randn(3, 5)
    ei = torch.tensor([[1, 2], [0, 0]])
    for a, b in zip(model.inference(x, ei), module.model.inference(x, ei)):
        assert torch.equal(a, b)


def test_pack_lists_round_trip_with_empty_lists_and_slices():
    from pinsage_pyg.inference.spark.job import pack_lists, unpack_lists
    offsets = np.array([0, 2, 2, 5, 5])  # rows 1 and 3 are empty
    nbr = np.array([7, 3, 9, 1, 4], dtype=np.int64)
    col = pack_lists(offsets, nbr, np.int64)
    lengths, values = unpack_lists(col, np.int64)
    np.testing.assert_array_equal(lengths, [2, 0, 3, 0])
    np.testing.assert_array_equal(values, nbr)
    lengths, values = unpack_lists(col.slice(2, 2), np.int64)  # rows 2..3
    np.testing.assert_array_equal(lengths, [3, 0])
    np.testing.assert_array_equal(values, [9, 1, 4])
    w = pack_lists(offsets, np.arange(5, dtype=np.float32), np.float32)
    assert unpack_lists(w, np.float32)[1].dtype == np.float32
    empty = pack_lists(np.zeros(3, np.int64), np.zeros(0), np.float32)
    np.testing.assert_array_equal(unpack_lists(empty, np.float32)[0],
                                  [0, 0])
