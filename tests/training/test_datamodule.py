import pytest
import torch

from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.training.datamodule import PinSageDataModule, SamplerConfig


def small(**kw):
    return SamplerConfig(num_neighbors=5, num_walks=10, num_negatives=8, **kw)


def test_epoch_pairs_weighted_by_distance(dataset):
    dm = PinSageDataModule(dataset, 1, small(), positive_window=2,
                           positive_decay=0.25, pairs_per_epoch=20000)
    pairs, dist = dataset.positive_pairs(2, return_distance=True)
    e0, e1 = dm.epoch_pairs(0), dm.epoch_pairs(1)
    assert e0.shape == (2, 20000)
    assert not torch.equal(e0, e1)  # redrawn every epoch
    assert torch.equal(e0, dm.epoch_pairs(0))  # seeded
    # Share of distance-1 pairs: n1 / (n1 + 0.25 n2)
    n1, n2 = int((dist == 1).sum()), int((dist == 2).sum())
    key = lambda p: (p[0] * 1000 + p[1]).tolist()  # noqa: E731
    d1 = set(key(pairs[:, dist == 1]))
    share = sum(k in d1 for k in key(e0)) / 20000
    expected = n1 / (n1 + 0.25 * n2)
    # pairs of distance 2 can coincide with a distance-1 pair: upper bound
    assert expected - 0.02 < share
    # Without decay or a budget: every pair exactly once.
    dm = PinSageDataModule(dataset, 1, small())
    assert torch.equal(dm.epoch_pairs(3), dataset.positive_pairs(1))
    with pytest.raises(DataError, match='decay'):
        PinSageDataModule(dataset, 1, small(), positive_decay=0.0)
    with pytest.raises(DataError, match='pairs_per_epoch'):
        PinSageDataModule(dataset, 1, small(), pairs_per_epoch=0)


def test_train_graph_refreshes_per_epoch(dataset):
    dm = PinSageDataModule(dataset, 1, small(refresh_every_n_epochs=2))
    g0, g1, g2 = (dm.train_graph(e) for e in (0, 1, 2))
    assert torch.equal(g0.edge_index, g1.edge_index)  # same version
    assert not (g0.edge_index.shape == g2.edge_index.shape
                and torch.equal(g0.edge_index, g2.edge_index)
                and torch.equal(g0.edge_weight, g2.edge_weight))
    never = PinSageDataModule(dataset, 1, small(refresh_every_n_epochs=0))
    assert torch.equal(never.train_graph(0).edge_weight,
                       never.train_graph(5).edge_weight)


def test_train_loader_batches_in_worker_process(dataset):
    dm = PinSageDataModule(dataset, 2, small(), batch_size=64,
                           num_workers=1)
    batch = next(iter(dm.train_dataloader()))
    assert batch.src_index.numel() == 64
    assert batch.dst_neg_index.numel() == 8
    assert batch.edge_weight.numel() == batch.edge_index.size(1)
    assert len(batch.num_sampled_nodes) == 3
    user, query, target = next(iter(dm.val_dataloader()))
    assert (query >= 0).all()
    assert torch.equal(query, dataset.last_train_item()[user])


def test_train_num_neighbors_reaches_the_training_batches(dataset):
    dm = PinSageDataModule(dataset, 2, small(train_num_neighbors=2),
                           batch_size=64)
    batch = next(iter(dm.train_dataloader()))
    # At most 2 distinct neighbours per target (of T=5), with the sampled
    # weights on the batch:
    indeg = torch.bincount(batch.edge_index[1],
                           minlength=batch.num_nodes)
    assert int(indeg.max()) <= 2
    assert batch.edge_weight.numel() == batch.edge_index.size(1)
    full = next(iter(PinSageDataModule(dataset, 2, small(),
                                       batch_size=64).train_dataloader()))
    assert int(torch.bincount(full.edge_index[1]).max()) > 2
    assert batch.edge_index.size(1) < full.edge_index.size(1)
