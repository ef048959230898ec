r"""The hard-negative curriculum: stage schedule, start-up checks, and that
each epoch's loader (in worker processes) really uses its stage."""
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_module

from pinsage_pyg.config import (ConfigError, Curriculum, HardNegativeConfig,
                                Stage, check_config)
from pinsage_pyg.data import build_dataset, synthetic_interactions
from pinsage_pyg.data.features import FeatureSpec
from pinsage_pyg.nn import max_margin_loss, sampled_softmax_loss
from pinsage_pyg.training import PinSageModule
from pinsage_pyg.training.datamodule import PinSageDataModule, SamplerConfig


@pytest.fixture(scope='module')
def dataset():
    inter, items = synthetic_interactions(num_users=60, num_items=150,
                                          num_interactions=3000, seed=3)
    return build_dataset(inter, items, FeatureSpec(
        multilabel_columns=['genres']), unknown_feature_items='embed')


def small(**kw):
    return SamplerConfig(num_neighbors=5, num_walks=10, num_negatives=8, **kw)


def curriculum(*hard, **band):
    hn = HardNegativeConfig(**{'band_start': 0.1, 'band_end': 0.5, **band})
    return Curriculum([Stage(e, h) for e, h in enumerate(hard)], 'test', hn)


def at_epoch(dm, epoch):
    dm.trainer = SimpleNamespace(current_epoch=epoch)
    return dm


# ---------------------------------------------------------- schedule ---
def test_paper_stages_from_hydra_config():
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base='1.3'):
        cfg = compose('train', overrides=['curriculum=paper'])
        cur = Curriculum.from_config(cfg.curriculum)
        assert [cur.stage_at(e)[1].hard_negatives for e in range(10)] == \
            [0, 1, 2, 3, 4, 5, 6, 6, 6, 6]
        assert cur.hard_negatives.band_end == 0.05
        # a stage field can be overridden on the command line
        cfg = compose('train', overrides=[
            'curriculum=paper', 'curriculum.stages.2.hard_negatives=4',
            'curriculum.stages.2.margin=0.2'])
        cur = Curriculum.from_config(cfg.curriculum)
        assert cur.stage_at(2)[1] == Stage(2, 4, 0.2)
        none = Curriculum.from_config(compose('train').curriculum)
        assert none.max_hard_negatives == 0
        # out-of-order stages are refused by check_config, before any work
        bad = compose('train', overrides=[
            'curriculum=paper', 'curriculum.stages.3.start_epoch=1'])
        with pytest.raises(ConfigError, match='strictly increasing'):
            check_config(bad)


@pytest.mark.parametrize('stages,match', [
    ([], 'is empty'),
    ([{'start_epoch': 1}], 'must be 0'),
    ([{'start_epoch': 0}, {'start_epoch': 2}, {'start_epoch': 2}],
     'strictly increasing'),
    ([{'start_epoch': 0}, {'start_epoch': 3}, {'start_epoch': 1}],
     'strictly increasing'),
    ([{'start_epoch': 0, 'hard_negatives': -1}], 'hard_negatives must be'),
    ([{'start_epoch': 0, 'margin': -0.1}], 'margin must be'),
    ([{'start_epoch': 0, 'hard': 1}], 'unknown keys'),
])
def test_bad_stages_are_config_errors(stages, match):
    with pytest.raises(ConfigError, match=match):
        Curriculum.from_config({'stages': stages})


def test_bad_band_settings_are_config_errors():
    with pytest.raises(ConfigError, match='band_end'):
        HardNegativeConfig(band_start=0.5, band_end=0.2)
    with pytest.raises(ConfigError, match='band_start'):
        HardNegativeConfig(band_start=1.5, band_end=2.0)
    with pytest.raises(ConfigError, match='method'):
        HardNegativeConfig(method='exact')


def test_band_too_small_for_the_stages_fails_at_start_up(dataset):
    # 150 items, band [15, 23): 8 candidates; asking for 9 must fail when
    # the datamodule is built, not in epoch 8.
    cur = curriculum(0, 1, 9, band_start=0.1, band_end=0.15)
    with pytest.raises(ConfigError, match='holds 8'):
        PinSageDataModule(dataset, 1, small(), curriculum=cur)
    # a band past the catalogue is clamped to it; an empty one is refused
    cur = curriculum(0, 1, band_start=0.999, band_end=1.0)
    with pytest.raises(ConfigError, match='empty'):
        PinSageDataModule(dataset, 1, small(), curriculum=cur)


# ------------------------------------------------------------ loader ---
def test_each_epoch_loader_uses_its_stage_in_workers(dataset):
    cur = curriculum(0, 1, 3)
    dm = PinSageDataModule(dataset, 2, small(), batch_size=32, num_workers=1,
                           curriculum=cur, seed=5)
    users = dataset.positive_pairs(1, return_user=True)[1]
    seen = {}
    for epoch, want in [(0, 0), (1, 1), (2, 3), (7, 3)]:
        loader = at_epoch(dm, epoch).train_dataloader()
        batch = next(iter(loader))  # built in a worker process
        assert loader.num_workers == 1
        assert batch.hard_neg_index.shape == (32, want)
        if want == 0:
            continue
        hard = batch.n_id[batch.hard_neg_index]
        q = batch.n_id[batch.src_index]
        pos = batch.n_id[batch.dst_pos_index]
        user = users[batch.input_id]
        for b in range(32):
            band = set(dm.miner.band[dm.miner.row_of[q[b]]].tolist())
            engaged = set(dataset.train_item[dataset.train_ptr[user[b]]:
                                             dataset.train_ptr[user[b] + 1]]
                          .tolist())
            for h in hard[b].tolist():
                if h == int(pos[b]):  # an unfillable (masked) slot
                    continue
                assert h in band and h not in engaged and h != int(q[b])
        seen[epoch] = batch.n_id[batch.dst_neg_index]
    # shared uniform negatives are redrawn every epoch
    assert not torch.equal(seen[1], seen[2])


class _Record(pl.Callback):
    def __init__(self):
        self.widths = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.widths.setdefault(trainer.current_epoch, set()).add(
            int(batch.hard_neg_index.size(1)))


def test_lightning_fit_follows_the_curriculum(dataset, tmp_path):
    dm = PinSageDataModule(dataset, 1, small(), batch_size=128,
                           num_workers=1, curriculum=curriculum(0, 2, 4))
    module = PinSageModule(
        model=dict(in_channels=dataset.num_features, hidden_channels=16,
                   out_channels=8, num_layers=1),
        loss={'name': 'max_margin', 'margin': 0.1},
        optimizer={'lr': 1e-2})
    rec = _Record()
    trainer = pl.Trainer(max_epochs=3, reload_dataloaders_every_n_epochs=1,
                         callbacks=[rec], logger=False,
                         enable_checkpointing=False,
                         enable_progress_bar=False, limit_train_batches=3,
                         num_sanity_val_steps=0, limit_val_batches=0,
                         default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    assert rec.widths == {0: {0}, 1: {2}, 2: {4}}
    assert float(trainer.logged_metrics['hard_negatives']) == 4.0
    assert float(trainer.logged_metrics['curriculum_stage']) == 2.0


# -------------------------------------------------------------- loss ---
@pytest.mark.parametrize('loss', ['max_margin', 'softmax'])
def test_hard_negatives_enter_the_loss(loss):
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    pos = q.clone()
    neg = -q  # easy shared negatives: far from every query
    fn = (lambda *a, **k: max_margin_loss(*a, margin=0.5, **k)) \
        if loss == 'max_margin' else sampled_softmax_loss
    easy = fn(q, pos, neg)
    hard = q.unsqueeze(1).expand(4, 2, 8)  # as close as the positive
    assert fn(q, pos, neg, hard_neg=hard) > easy + 1e-3
    # masked hard negatives do not count
    mask = torch.zeros(4, 2, dtype=torch.bool)
    torch.testing.assert_close(fn(q, pos, neg, hard_neg=hard,
                                  hard_mask=mask), easy)
    with pytest.raises(ValueError, match=r'\[B, H, d\]'):
        fn(q, pos, neg, hard_neg=hard[:2])


@pytest.mark.parametrize('batch_size', [512, 4096])
def test_large_batches_train_with_hard_negatives(batch_size):
    inter, items = synthetic_interactions(num_users=200, num_items=300,
                                          num_interactions=12000, seed=4)
    ds = build_dataset(inter, items, FeatureSpec(
        multilabel_columns=['genres']), unknown_feature_items='embed')
    dm = at_epoch(PinSageDataModule(ds, 2, small(), batch_size=batch_size,
                                    curriculum=curriculum(0, 0, 6)), 2)
    assert dm.pairs.size(1) >= 4096
    batch = next(iter(dm.train_dataloader()))
    assert batch.src_index.numel() == batch_size
    assert batch.hard_neg_index.shape == (batch_size, 6)
    module = PinSageModule(
        model=dict(in_channels=ds.num_features, hidden_channels=16,
                   out_channels=8, num_layers=2),
        loss={'name': 'softmax', 'temperature': 0.1}, optimizer={'lr': 1e-2})
    loss = module.compute_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
