r"""Positives with weights, full-softmax steps and the sampled softmax's
in-batch negatives / logQ inside the training module."""
import lightning.pytorch as pl
import pytest
import torch

from pinsage_pyg.config import ConfigError, Curriculum, resolve_softmax_mode
from pinsage_pyg.training import module as module_mod
from pinsage_pyg.training.datamodule import (PinSageDataModule, SamplerConfig,
                                             aggregate_targets,
                                             weighted_positives)
from pinsage_pyg.training.module import PinSageModule


def small(**kw):
    return SamplerConfig(num_neighbors=5, num_walks=10, num_negatives=8, **kw)


def make_module(dataset, loss, **model):
    return PinSageModule(dict(in_channels=dataset.num_features,
                              hidden_channels=16, out_channels=8,
                              num_layers=1, **model), loss, {'lr': 1e-2})


def test_weighted_positives_window_decay_and_backward(dataset):
    fwd, dist = dataset.positive_pairs(3, return_distance=True)
    pairs, weight, user = weighted_positives(dataset, 3, 0.5, 0.25)
    p = fwd.size(1)
    assert pairs.size(1) == weight.numel() == user.numel() == 2 * p
    assert torch.equal(pairs[:, :p], fwd)
    assert torch.equal(pairs[:, p:], fwd.flip(0))  # reversed pairs
    assert torch.allclose(weight[:p], 0.5 ** (dist.double() - 1))
    assert torch.allclose(weight[p:], 0.25 * 0.5 ** (dist.double() - 1))
    # backward=0: forward pairs only; window 1 with decay 1: weight 1.
    pairs, weight, _ = weighted_positives(dataset, 1, 1.0, 0.0)
    assert torch.equal(pairs, dataset.positive_pairs(1))
    assert bool((weight == 1).all())


def test_aggregate_targets_sums_repeated_pairs():
    pairs = torch.tensor([[2, 0, 2, 2, 1], [1, 3, 1, 0, 2]])
    w = torch.tensor([1.0, 0.5, 0.25, 2.0, 1.0])
    ptr, col, weight = aggregate_targets(pairs, w, 4)
    assert ptr.tolist() == [0, 1, 2, 4, 4]
    assert col.tolist() == [3, 2, 0, 1]
    assert weight.tolist() == [0.5, 1.0, 2.0, 1.25]


def test_epoch_weights_enter_the_loss_unless_pairs_are_drawn(dataset):
    dm = PinSageDataModule(dataset, 1, small(), positive_window=2,
                           positive_decay=0.5, positive_backward=0.5)
    assert dm.epoch_index(0) is None
    assert torch.allclose(dm.epoch_weight(0), dm.pair_weight.float())
    drawn = PinSageDataModule(dataset, 1, small(), positive_window=2,
                              positive_decay=0.5, pairs_per_epoch=100)
    assert drawn.epoch_weight(0) is None  # drawn by weight: unweighted
    assert PinSageDataModule(dataset, 1, small()).epoch_weight(0) is None
    lq = dm.positive_log_q()
    assert torch.isclose(lq.exp().sum(), torch.tensor(1.0))
    never = torch.ones(dataset.num_items, dtype=torch.bool)
    never[dm.pairs[1]] = False
    assert bool(torch.isinf(lq[never]).all())


def test_full_steps_are_deterministic_and_cover_every_query(dataset):
    dm = PinSageDataModule(dataset, 1, small(), positive_window=2,
                           positive_backward=0.5,
                           full_softmax={'steps_per_epoch': 3,
                                         'rows_per_step': 7})
    a, b = dm.full_step(0, 1), dm.full_step(0, 1)
    assert torch.equal(a.rows, b.rows)
    assert torch.equal(a.edge_index, b.edge_index)
    c = dm.full_step(0, 2)
    assert not torch.equal(a.edge_index, c.edge_index)  # fresh walks
    assert a.x.size(0) == dataset.num_items == a.num_nodes
    # Consecutive steps walk a permutation of all query items:
    n = dm.full_rows.numel()
    seen = torch.cat([dm.full_step(s // 3, s % 3).rows
                      for s in range(-(-n // 7))])
    assert set(seen.tolist()) == set(dm.full_rows.tolist())
    # The step's targets are the CSR rows of its queries:
    ptr, col, w = dm.target_csr()
    for k, r in enumerate(a.rows.tolist()):
        lo, hi = int(a.target_ptr[k]), int(a.target_ptr[k + 1])
        assert a.target_col[lo:hi].tolist() == \
            col[ptr[r]:ptr[r + 1]].tolist()
        assert torch.equal(a.target_weight[lo:hi], w[ptr[r]:ptr[r + 1]])
    # Two ranks split a step's rows:
    r0, r1 = dm.full_step(0, 1, 0, 2).rows, dm.full_step(0, 1, 1, 2).rows
    assert not set(r0.tolist()) & set(r1.tolist())


def test_chunked_full_softmax_step_has_the_same_value_and_gradient(dataset):
    dm = PinSageDataModule(dataset, 1, small(), positive_window=3,
                           positive_backward=0.5, full_softmax={})
    batch = dm.full_step(0, 0)
    grads, values = [], []
    for chunk in (None, 5):
        torch.manual_seed(0)
        m = make_module(dataset, {'name': 'softmax', 'mode': 'full',
                                  'temperature': 0.2,
                                  'full': {'chunk_rows': chunk}})
        loss, value = m.full_softmax_step(batch)
        loss.backward()
        assert torch.isclose(loss.detach(), value)
        values.append(value)
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()
                                if p.grad is not None]))
    assert torch.isclose(values[0], values[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
    assert grads[0].abs().sum() > 0


def test_resolve_softmax_mode():
    loss = {'name': 'softmax', 'mode': 'auto', 'full': {'max_items': 100}}
    assert resolve_softmax_mode(loss, 100)['mode'] == 'full'
    assert resolve_softmax_mode(loss, 101)['mode'] == 'sampled'
    # Curriculum hard negatives need sampled candidates:
    assert resolve_softmax_mode(loss, 50, hard_negatives=2)['mode'] == \
        'sampled'
    with pytest.raises(ConfigError, match='loss.mode=full with a curriculum'):
        resolve_softmax_mode({**loss, 'mode': 'full'}, 50, hard_negatives=1)
    assert resolve_softmax_mode({'name': 'max_margin'}, 10) == \
        {'name': 'max_margin'}
    with pytest.raises(ValueError, match="'auto' must be resolved"):
        PinSageModule({'in_channels': 4, 'hidden_channels': 4,
                       'out_channels': 4}, loss, {'lr': 1e-3})


def fit_one_step(dataset, dm, module, tmp_path):
    trainer = pl.Trainer(fast_dev_run=1, accelerator='cpu', logger=False,
                         enable_progress_bar=False,
                         enable_model_summary=False,
                         reload_dataloaders_every_n_epochs=1,
                         default_root_dir=str(tmp_path))
    before = [p.detach().clone() for p in module.parameters()]
    trainer.fit(module, datamodule=dm)
    return any(not torch.equal(a, b) for a, b in
               zip(before, module.parameters()))


def test_full_softmax_trains_in_lightning(dataset, tmp_path):
    dm = PinSageDataModule(dataset, 1, small(), positive_window=2,
                           positive_backward=0.5,
                           full_softmax={'steps_per_epoch': 2})
    module = make_module(dataset, {'name': 'softmax', 'mode': 'full',
                                   'temperature': 0.1, 'full': {'lr': 0.01}})
    assert fit_one_step(dataset, dm, module, tmp_path)


def test_sampled_softmax_uses_in_batch_negatives_and_log_q(
        dataset, tmp_path, monkeypatch):
    seen = {}
    real = module_mod.sampled_softmax_loss

    def spy(q, pos, neg, temperature, neg_mask, hard, hard_mask, pos_lq,
            neg_lq, weight):
        seen.update(b=q.size(0), cand=neg.size(0), mask=neg_mask,
                    pos_lq=pos_lq, neg_lq=neg_lq, weight=weight)
        return real(q, pos, neg, temperature, neg_mask, hard, hard_mask,
                    pos_lq, neg_lq, weight)
    monkeypatch.setattr(module_mod, 'sampled_softmax_loss', spy)
    dm = PinSageDataModule(dataset, 1, small(), batch_size=32,
                           positive_window=2, positive_decay=0.5,
                           positive_backward=0.5)
    module = make_module(dataset, {'name': 'softmax', 'mode': 'sampled',
                                   'temperature': 0.1})
    assert fit_one_step(dataset, dm, module, tmp_path)
    b = seen['b']
    assert seen['cand'] == 8 + b  # 8 shared uniform + the batch's positives
    # In-batch block: a pair's own positive is an accidental hit.
    inb = seen['mask'][:, 8:]
    assert not bool(inb.diagonal().any())
    # logQ: uniform share 8/60 plus b * p(j) of the in-batch positives.
    p = dm.positive_log_q().exp()
    assert bool((seen['neg_lq'] >= torch.log(torch.tensor(8 / 60))
                 - 1e-6).all())
    assert seen['pos_lq'].shape == (b, )
    assert float(seen['pos_lq'].max()) <= \
        float(torch.log(8 / 60 + b * p.max())) + 1e-5
    # Decay and backward pairs weigh unequally in the loss:
    assert seen['weight'] is not None and seen['weight'].unique().numel() > 1
    # Without the options: only the uniform negatives, no correction.
    module = make_module(dataset, {'name': 'softmax', 'mode': 'sampled',
                                   'temperature': 0.1, 'sampled': {
                                       'in_batch_negatives': False,
                                       'log_q': False}})
    fit_one_step(dataset, dm, module, tmp_path)
    assert seen['cand'] == 8 and seen['pos_lq'] is None


def test_full_mode_refuses_curriculum_hard_negatives_in_the_pipeline():
    cur = Curriculum.from_config({'name': 'x', 'stages': [
        {'start_epoch': 0, 'hard_negatives': 2}]})
    with pytest.raises(ConfigError, match='already scores every item'):
        resolve_softmax_mode({'name': 'softmax', 'mode': 'full'}, 10,
                             cur.max_hard_negatives)
