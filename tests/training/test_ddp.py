r"""Data-parallel training: per-rank shards and seeds, start-up checks, and
a real 2-process ``ddp_spawn`` run on CPU (gloo)."""
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch

from pinsage_pyg.config import ConfigError
from pinsage_pyg.training.datamodule import PinSageDataModule, SamplerConfig
from pinsage_pyg.training.distributed import (check_trainer,
                                              check_world_size, mix_seed)


def small(**kw):
    return SamplerConfig(num_neighbors=5, num_walks=10, num_negatives=8, **kw)


def test_shards_are_disjoint_equal_and_seeded(dataset):
    dm = PinSageDataModule(dataset, 1, small(), seed=3)
    num = dm.num_epoch_pairs
    for world in (1, 2, 3):
        shards = [dm.shard(0, r, world) for r in range(world)]
        assert {s.numel() for s in shards} == {num // world}
        cat = torch.cat(shards)
        assert cat.unique().numel() == cat.numel()  # disjoint
        assert int(cat.max()) < num
    assert torch.equal(dm.shard(1, 1, 2), dm.shard(1, 1, 2))  # seeded
    assert not torch.equal(dm.shard(0, 0, 2), dm.shard(1, 0, 2))  # per epoch
    other = PinSageDataModule(dataset, 1, small(), seed=4)
    assert not torch.equal(dm.shard(0, 0, 1), other.shard(0, 0, 1))


def test_negatives_depend_on_batch_position_not_workers(dataset):
    def first_batches(num_workers):
        dm = PinSageDataModule(dataset, 1, small(), batch_size=64,
                               num_workers=num_workers, seed=5)
        out = []
        for batch in dm.train_dataloader():
            out.append((batch.n_id[batch.src_index],
                        batch.n_id[batch.dst_neg_index]))
            if len(out) == 2:
                return out
    a, b = first_batches(0), first_batches(1)
    for (qa, na), (qb, nb) in zip(a, b):
        assert torch.equal(qa, qb) and torch.equal(na, nb)
    assert not torch.equal(a[0][1], a[1][1])  # fresh negatives per batch


def test_mix_seed_separates_tuples():
    seeds = {mix_seed(0, e, r) for e in range(20) for r in range(8)}
    assert len(seeds) == 160
    assert all(0 <= s < 2**63 for s in seeds)


def test_batch_size_smaller_than_world_size_is_refused():
    assert check_world_size(1024, 4) == 256
    with pytest.raises(ConfigError, match=r'data.batch_size=2 is smaller '
                       r'than the world size 4'):
        check_world_size(2, 4)


def test_trainer_checks(monkeypatch):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match='no CUDA GPU is visible'):
            check_trainer({'accelerator': 'gpu', 'devices': 1})
    with pytest.raises(ConfigError, match=r'trainer.devices=100000 but this '
                       r'machine has \d+ CPU cores'):
        check_trainer({'accelerator': 'cpu', 'devices': 100000})
    check_trainer({'accelerator': 'cpu', 'devices': 1, 'strategy': 'ddp'})
    import torch.distributed as dist
    monkeypatch.setattr(dist, 'is_gloo_available', lambda: False)
    with pytest.raises(ConfigError, match='needs the gloo backend'):
        check_trainer({'accelerator': 'cpu', 'devices': 1,
                       'strategy': 'ddp_spawn'})


# ------------------------------------------------ a real 2-process run ---
class RecordRanks(pl.Callback):
    r"""Writes, per rank, the global pair ids it trained on and its final
    weights (the callback runs inside the spawned processes)."""
    def __init__(self, out: str):
        self.out = out
        self.ids = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        # input_id: positions in the epoch's pairs (the same on all ranks);
        # full-softmax steps: the step's query items.
        ids = batch.input_id if 'input_id' in batch else batch.rows
        self.ids.append((trainer.current_epoch, ids.cpu().clone()))

    def on_train_end(self, trainer, module):
        torch.save({'ids': self.ids, 'world_size': trainer.world_size,
                    'weights': {k: v.detach().cpu().clone() for k, v in
                                module.state_dict().items()}},
                   Path(self.out) / f'rank{trainer.global_rank}.pt')


TINY = ['model.hidden_channels=16', 'model.out_channels=8',
        'sampler.num_walks=10', 'sampler.num_neighbors=5',
        'sampler.num_negatives=20', 'data.batch_size=128',
        'data.num_workers=0', 'trainer.enable_progress_bar=false',
        'evaluate.baselines=false', 'output.faiss_index=false',
        'checkpoint.every_n_train_steps=0']


@pytest.mark.slow
@pytest.mark.parametrize('mode', [
    ['loss.mode=sampled', 'positives=consecutive'],
    ['loss.mode=full', 'loss.full.steps_per_epoch=3']])
def test_ddp_spawn_two_ranks_train_different_data_same_weights(
        tiny_csv, compose_train, tmp_path, mode):
    from pinsage_pyg.training.pipeline import run
    single = run(compose_train([*tiny_csv, *TINY, *mode,
                                'trainer.max_epochs=1',
                                f'output.dir={tmp_path / "single"}']))
    rec = tmp_path / 'ranks'
    rec.mkdir()
    cfg = compose_train([*tiny_csv, *TINY, *mode, 'trainer=ddp_cpu',
                         'trainer.strategy=ddp_spawn', 'trainer.max_epochs=2',
                         f'output.dir={tmp_path / "ddp"}'])
    summary = run(cfg, callbacks=[RecordRanks(str(rec))])

    assert summary['world_size'] == 2 and summary['epochs'] == 2
    table = pd.read_csv(tmp_path / 'ddp' / 'metrics.csv')
    ref = pd.read_csv(tmp_path / 'single' / 'metrics.csv')
    assert list(table.columns) == list(ref.columns)
    assert list(table['method']) == list(ref['method'])
    assert [m['method'] for m in summary['metrics']] == \
        [m['method'] for m in single['metrics']]
    assert table.drop(columns='method').notna().all().all()

    r0, r1 = (torch.load(rec / f'rank{r}.pt', weights_only=True)
              for r in (0, 1))
    assert r0['world_size'] == r1['world_size'] == 2
    for epoch in (0, 1):
        a = torch.cat([i for e, i in r0['ids'] if e == epoch])
        b = torch.cat([i for e, i in r1['ids'] if e == epoch])
        assert a.numel() == b.numel() > 0  # equal shards, lockstep
        assert not set(a.tolist()) & set(b.tolist())  # different data
    assert len(r0['ids']) == len(r1['ids'])
    for key, w in r0['weights'].items():  # DDP kept the replicas equal
        assert torch.equal(w, r1['weights'][key]), key
    # Only rank 0 (here: the main process) wrote the outputs.
    assert sorted(p.name for p in (tmp_path / 'ddp').iterdir()
                  if p.is_file()) == ['metrics.csv', 'summary.json']


@pytest.mark.parametrize('overrides,match', [
    (['trainer=ddp_cpu', 'data.batch_size=1'],
     'data.batch_size=1 is smaller than the world size 2'),
    (['trainer=ddp_cpu', 'trainer.devices=4096'],
     'trainer.devices=4096 but this machine has'),
])
def test_start_up_errors_before_training(tiny_csv, compose_train, tmp_path,
                                         overrides, match):
    from pinsage_pyg.training.pipeline import run
    with pytest.raises(ConfigError, match=match):
        run(compose_train([*tiny_csv, *TINY, *overrides,
                           f'output.dir={tmp_path}']))
    assert not (tmp_path / 'checkpoints').exists()
