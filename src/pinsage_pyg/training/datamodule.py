r"""The LightningDataModule: positives, importance graphs and PyG loaders."""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterator, Optional, Tuple

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset
from torch_geometric.data import Data
from torch_geometric.sampler import NegativeSampling

from pinsage_pyg.config import ConfigError, Curriculum, SamplerConfig, Stage
from pinsage_pyg.data.dataset import PinSageDataset
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.sampler import (BipartiteCSR, HardNegativeMiner,
                                 PinSageLinkLoader, PinSageSampler,
                                 importance_graph)
from pinsage_pyg.training.distributed import check_world_size, mix_seed
from pinsage_pyg.utils import gather_csr_rows

log = logging.getLogger(__name__)


def _worker_init(_: int) -> None:
    # One intra-op thread per loader worker: on small machines the default
    # (all cores in every worker) oversubscribes the CPU badly.
    torch.set_num_threads(1)


class _ResumableSequence(Sampler[int]):
    r"""The positions :obj:`order` (one rank's shard of an epoch, in
    training order), optionally starting at :attr:`start` for one pass (a
    mid-epoch resume); its length stays the full shard so that Lightning's
    batch count of the epoch is unchanged."""
    def __init__(self, order: Tensor):
        self.order = order
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0  # one pass only
        return iter(self.order[start:].tolist())

    def __len__(self) -> int:
        return self.order.numel()


class _TrainedBatches:
    r"""Reads how many batches of the current epoch the trainer has
    trained (picklable: the trainer reference is dropped when the loader is
    sent to a worker process)."""
    def __init__(self, datamodule: 'PinSageDataModule'):
        self.datamodule = datamodule

    def __call__(self) -> int:
        trainer = getattr(self.datamodule, 'trainer', None) \
            if self.datamodule is not None else None
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)

    def __getstate__(self) -> Dict[str, Any]:
        return {'datamodule': None}


class _ResumableEpoch:
    r"""Mid-epoch resume of a training loader whose batches are a
    deterministic function of their position: Lightning stores
    :meth:`state_dict` (epoch and batches trained) in the checkpoint and
    hands it back to :meth:`load_state_dict` before iterating; the next
    pass then starts right after the last batch trained. Subclasses set
    ``_order`` (a :class:`_ResumableSequence`), ``epoch``, ``_trained`` and
    ``_units`` (sequence positions per batch)."""
    _resume_note = ''

    def state_dict(self) -> Dict[str, Any]:
        return {'epoch': self.epoch, 'batches': self._trained(),
                'batch_size': int(self._units),
                'num_pairs': len(self._order)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if (int(state.get('epoch', -1)) != self.epoch
                or int(state.get('batch_size', -1)) != self._units
                or int(state.get('num_pairs', -1)) != len(self._order)):
            log.warning("checkpoint loader position %s does not match epoch "
                        "%d's loader; replaying the epoch from its start",
                        state, self.epoch)
            return
        done = int(state.get('batches', 0))
        self._order.start = min(done * int(self._units), len(self._order))
        log.info("resuming epoch %d after batch %d%s", self.epoch, done,
                 self._resume_note)


class EpochLoader(_ResumableEpoch, PinSageLinkLoader):
    r"""One epoch's training loader (one rank's shard), resumable mid-epoch
    (see :class:`_ResumableEpoch`). Batches are a deterministic function of
    their position (seeded order and negatives), so the resumed epoch sees
    exactly the batches the interrupted one would have."""
    def __init__(self, *args, epoch: int, trained: _TrainedBatches,
                 order: Tensor, **kwargs):
        self._order = _ResumableSequence(order)
        super().__init__(*args, sampler=self._order, **kwargs)
        self.epoch = int(epoch)
        self._trained = trained

    @property
    def _units(self) -> int:
        return int(self.batch_size)


def weighted_positives(dataset: PinSageDataset, window: int = 1,
                       decay: float = 1.0, backward: float = 0.0
                       ) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The training positives with their weights: ``(pairs [2, P],
    weight [P], user [P])``. Every item engaged within :obj:`window` steps
    after a query item is a positive with weight ``decay ** (d - 1)`` (``d``
    steps apart); with :obj:`backward` > 0 every such pair also appears
    reversed, with weight ``backward * decay ** (d - 1)`` (the item engaged
    *before*: co-engagement is largely symmetric, and the reversed pairs
    double the signal of every query item)."""
    pairs, dist, user = dataset.positive_pairs(window, return_distance=True,
                                               return_user=True)
    weight = decay ** (dist.double() - 1)
    if backward > 0:
        pairs = torch.cat([pairs, pairs.flip(0)], dim=1)
        weight = torch.cat([weight, backward * weight])
        user = torch.cat([user, user])
    return pairs, weight, user


def aggregate_targets(pairs: Tensor, weight: Tensor, num_items: int
                      ) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Sums the weights of equal (query, positive) pairs into a CSR matrix
    over items: ``(ptr [num_items + 1], col, weight)``, columns sorted
    within each row."""
    key = pairs[0] * num_items + pairs[1]
    uniq, inv = torch.unique(key, return_inverse=True)
    w = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(
        0, inv, weight.double())
    row, col = uniq // num_items, uniq % num_items
    ptr = torch.zeros(num_items + 1, dtype=torch.long)
    ptr[1:] = torch.bincount(row, minlength=num_items).cumsum(0)
    return ptr, col, w.float()


class _FullSoftmaxSteps(torch.utils.data.Dataset):
    r"""The steps of one full-softmax epoch (one rank's), built by
    :meth:`PinSageDataModule.full_step` (in the loader's workers)."""
    def __init__(self, datamodule: 'PinSageDataModule', epoch: int,
                 rank: int, world_size: int):
        self.dm = datamodule
        self.epoch, self.rank, self.world_size = epoch, rank, world_size

    def __len__(self) -> int:
        return self.dm.full_steps_per_epoch()

    def __getitem__(self, step: int) -> Data:
        return self.dm.full_step(self.epoch, int(step), self.rank,
                                 self.world_size)

    def __getstate__(self) -> Dict[str, Any]:
        # Workers need the graph builder, not the trainer:
        state = dict(self.__dict__)
        dm = state['dm']
        state['dm'] = dm.__class__.__new__(dm.__class__)
        state['dm'].__dict__.update({k: v for k, v in dm.__dict__.items()
                                     if k not in ('trainer', '_trainer')})
        return state


class FullSoftmaxLoader(_ResumableEpoch, DataLoader):
    r"""One full-softmax epoch: :obj:`steps` batches, each the importance
    graph of all items plus the step's query rows and their targets (see
    :meth:`PinSageDataModule.full_step`). Resumable mid-epoch like
    :class:`EpochLoader`: a step is a deterministic function of its
    position."""
    _units = 1
    _resume_note = ' (full-softmax step)'

    def __init__(self, dataset: _FullSoftmaxSteps, steps: int, epoch: int,
                 trained: '_TrainedBatches', **kwargs):
        self._order = _ResumableSequence(torch.arange(steps))
        super().__init__(dataset, batch_size=None, sampler=self._order,
                         collate_fn=_identity, **kwargs)
        self.epoch = int(epoch)
        self._trained = trained


def _identity(x):
    return x


class PinSageDataModule(pl.LightningDataModule):
    r"""Serves PinSage training batches and evaluation queries.

    * ``train_dataloader()`` is rebuilt every epoch (use the trainer's
      ``reload_dataloaders_every_n_epochs=1``): it draws a fresh importance
      graph from ``trainer.current_epoch`` (every
      ``refresh_every_n_epochs``) and the :obj:`curriculum` stage of
      ``trainer.current_epoch`` (its number of PPR hard negatives per
      pair), and wraps them in
      :class:`~pinsage_pyg.sampler.PinSageLinkLoader` (PyG's
      :class:`~torch_geometric.loader.LinkLoader`) with
      :class:`~pinsage_pyg.sampler.PinSageSampler`, so per-epoch changes
      reach the loader's worker processes.
    * Under data parallelism (``trainer.world_size > 1``) every rank gets a
      disjoint, equal-size shard of the epoch's pairs (a permutation seeded
      by ``(seed, epoch)``, sliced by ``trainer.global_rank``; the last
      ``P mod world_size`` pairs of the permutation are left out of that
      epoch), so all ranks run the same number of steps;
      :obj:`batch_size` is the *global* batch, ``batch_size // world_size``
      pairs per rank. Shared and hard negatives come from a generator
      seeded by ``(seed, epoch, rank)`` and the batch position: a run is
      reproducible for a given world size, independent of the number of
      loader workers, and resumable mid-epoch (see :class:`EpochLoader`).
    * ``val_dataloader()`` yields ``(user, query_item, target_item)`` rows
      of the leave-last-out protocol; the model scores them against all
      items.
    * :attr:`eval_graph` is a fixed-seed importance graph used for
      full-graph embedding.
    """
    def __init__(self, dataset: PinSageDataset, num_layers: int,
                 sampler: Optional[SamplerConfig] = None,
                 batch_size: int = 1024, num_workers: int = 0,
                 positive_window: int = 1, seed: int = 0,
                 eval_batch_size: int = 1024,
                 context_size: Optional[int] = None,
                 positive_decay: float = 1.0,
                 pairs_per_epoch: Optional[int] = None,
                 curriculum: Optional[Curriculum] = None,
                 positive_backward: float = 0.0,
                 full_softmax: Optional[Dict[str, Any]] = None):
        super().__init__()
        if batch_size < 1:
            raise DataError(f"data.batch_size must be >= 1 (got "
                            f"{batch_size}).")
        if num_workers < 0:
            raise DataError(f"data.num_workers must be >= 0 (got "
                            f"{num_workers}).")
        self.dataset = dataset
        self.num_layers = num_layers
        self.cfg = sampler or SamplerConfig()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.restored_state: Optional[Dict[str, Any]] = None
        self.eval_batch_size = eval_batch_size
        self.csr = BipartiteCSR.from_hetero(
            dataset.hetero_data(context_size))
        # Where the importance graphs are built (sampler.device); checked
        # here so that `cuda` without a GPU fails at start-up:
        self.cfg.resolve_device()
        self._walk_csr: Optional[BipartiteCSR] = None
        if not 0.0 < positive_decay <= 1.0:
            raise DataError(f"data.positives.decay must be in (0, 1] (got "
                            f"{positive_decay}).")
        if not 0.0 <= positive_backward:
            raise DataError(f"data.positives.backward must be >= 0 (got "
                            f"{positive_backward}; 0: no backward pairs).")
        if pairs_per_epoch is not None and pairs_per_epoch < 1:
            raise DataError(f"data.positives.pairs_per_epoch must be >= 1 or "
                            f"null (got {pairs_per_epoch}).")
        self.pairs, self.pair_weight, self.pair_user = weighted_positives(
            dataset, positive_window, positive_decay, positive_backward)
        self.pairs_per_epoch = pairs_per_epoch
        self.full_softmax = dict(full_softmax) if full_softmax is not None \
            else None
        self._targets: Optional[Tuple[Tensor, Tensor, Tensor]] = None
        self._epoch_weight: Optional[Tensor] = None
        if self.pairs.size(1) == 0:
            raise DataError(f"{dataset.name}: no training positives (no user "
                            f"has two consecutive train interactions with "
                            f"different items).")
        self._eval_graph: Optional[Data] = None
        self.curriculum = curriculum or Curriculum(name='none')
        self.miner: Optional[HardNegativeMiner] = None
        if self.curriculum.max_hard_negatives > 0:
            self.miner = self._build_miner()

    def _build_miner(self) -> HardNegativeMiner:
        r"""The PPR band of every query item, once (checked at start-up)."""
        hn, ds = self.curriculum.hard_negatives, self.dataset
        t = time.perf_counter()
        try:
            miner = HardNegativeMiner(self.csr, self.pairs[0], ds.train_ptr,
                                      ds.train_item, hn)
        except ValueError as e:
            raise ConfigError(f"Invalid config: curriculum.hard_negatives: "
                              f"{e}.") from None
        need = self.curriculum.max_hard_negatives
        if need > miner.band_size:
            raise ConfigError(
                f"Invalid config: the curriculum asks for {need} hard "
                f"negatives per example but the PPR band [{miner.lo}, "
                f"{miner.hi}) of {ds.num_items} items holds "
                f"{miner.band_size}; lower curriculum.stages[*]."
                f"hard_negatives or widen curriculum.hard_negatives."
                f"band_start/band_end.")
        log.info("hard negatives: PPR ranks [%d, %d) of %d items for %d query "
                 "items (%s, %.1fs, %.1f MB, %.0f%% of band slots filled)",
                 miner.lo, miner.hi, ds.num_items, miner.row_of.ge(0).sum(),
                 hn.method, time.perf_counter() - t, miner.nbytes() / 2**20,
                 100 * miner.coverage())
        return miner

    def stage(self, epoch: Optional[int] = None) -> Tuple[int, Stage]:
        r"""The curriculum stage ``(index, stage)`` of :obj:`epoch` (default:
        the trainer's current epoch)."""
        return self.curriculum.stage_at(self._epoch() if epoch is None
                                        else epoch)

    @property
    def sampler_device(self) -> torch.device:
        r"""The device the importance graphs are built on
        (``sampler.device``): the CPU, or under ``cuda`` this rank's GPU
        (the trainer's root device when it is a CUDA device, else the
        current CUDA device)."""
        device = self.cfg.resolve_device()
        if device.type == 'cuda':
            trainer = getattr(self, 'trainer', None)
            root = getattr(getattr(trainer, 'strategy', None), 'root_device',
                           None)
            device = root if isinstance(root, torch.device) and \
                root.type == 'cuda' else \
                torch.device('cuda', torch.cuda.current_device())
        return device

    def build_graph(self, seed: int) -> Data:
        r"""An importance graph of every item with the walks' private
        :obj:`seed`, built on :attr:`sampler_device` (the item-user CSR is
        copied there once) and returned on the CPU with the item features
        as ``x``, ready for the loader's worker processes."""
        c = self.cfg
        device = self.sampler_device
        if device.type == 'cpu':
            csr = self.csr
        else:
            if self._walk_csr is None or \
                    self._walk_csr.item_ptr.device != device:
                self._walk_csr = self.csr.to(device)
            csr = self._walk_csr
        graph = importance_graph(csr, None, c.num_neighbors, c.num_walks,
                                 c.walk_length, c.restart_prob, seed=seed,
                                 backend=c.resolve_backend(),
                                 window=c.window)
        graph = graph.cpu()
        if self.dataset.x is not None:
            graph.x = self.dataset.x
        return graph

    @property
    def eval_graph(self) -> Data:
        if self._eval_graph is None:
            self._eval_graph = self.build_graph(seed=self.seed + 7919)
        return self._eval_graph

    def _epoch(self) -> int:
        trainer = getattr(self, 'trainer', None)
        return int(trainer.current_epoch) if trainer is not None else 0

    @property
    def world_size(self) -> int:
        r"""Number of data-parallel ranks (the trainer's; 1 without one)."""
        return int(getattr(getattr(self, 'trainer', None), 'world_size', 1))

    @property
    def global_rank(self) -> int:
        r"""This process's rank (the trainer's; 0 without one)."""
        return int(getattr(getattr(self, 'trainer', None), 'global_rank', 0))

    def shard(self, epoch: int, rank: int = 0, world_size: int = 1
              ) -> Tensor:
        r"""Positions in :meth:`epoch_pairs` that rank :obj:`rank` of
        :obj:`world_size` trains on in :obj:`epoch`, in training order: a
        permutation of the epoch's pairs seeded with ``(seed, epoch)`` (the
        same on every rank), cut into ``world_size`` equal contiguous
        slices. These are the ``input_id`` values of the rank's batches."""
        num = self.num_epoch_pairs
        gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 1))
        perm = torch.randperm(num, generator=gen)
        n = num // world_size
        if n == 0:
            raise DataError(f"{self.dataset.name}: {num} training pairs per "
                            f"epoch cannot be split over {world_size} "
                            f"ranks.")
        return perm[rank * n:(rank + 1) * n]

    def state_dict(self) -> Dict[str, Any]:
        r"""The data fingerprint and run settings stored in checkpoints (see
        :func:`~pinsage_pyg.training.checkpointing.check_resume`)."""
        return self.fingerprint()

    def fingerprint(self, world_size: Optional[int] = None
                    ) -> Dict[str, Any]:
        r"""Dataset identity (name, numbers of items, users, features and
        pairs), seed, global batch size, world size (default: the
        trainer's) and the current epoch's curriculum stage."""
        epoch = self._epoch()
        index, _ = self.stage(epoch)
        ds = self.dataset
        if world_size is None:
            world_size = self.world_size
        return {'dataset': ds.name, 'num_items': int(ds.num_items),
                'num_users': int(ds.num_users),
                'num_features': int(ds.num_features),
                'num_pairs': int(self.pairs.size(1)), 'seed': int(self.seed),
                'batch_size': int(self.batch_size),
                'world_size': int(world_size), 'epoch': epoch,
                'curriculum': self.curriculum.name,
                'curriculum_stage': int(index)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.restored_state = dict(state)

    def train_graph(self, epoch: int) -> Data:
        every = self.cfg.refresh_every_n_epochs
        version = epoch // every if every > 0 else 0
        return self.build_graph(seed=self.seed * 100003 + version)

    @property
    def num_epoch_pairs(self) -> int:
        r"""Number of positive pairs in every epoch."""
        return self.pairs_per_epoch or self.pairs.size(1)

    def epoch_index(self, epoch: int) -> Optional[Tensor]:
        r"""Which pairs one epoch trains on: ``None`` for every pair once
        (their weights then enter the loss, see :meth:`epoch_weight`), or
        with ``pairs_per_epoch`` a seeded sample of that size drawn with
        replacement by pair weight (redrawn every epoch; the loss is then
        unweighted, the same objective in expectation)."""
        if self.pairs_per_epoch is None:
            return None
        n = self.num_epoch_pairs
        gen = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        return torch.multinomial(self.pair_weight, n, replacement=True,
                                 generator=gen)

    def epoch_weight(self, epoch: int) -> Optional[Tensor]:
        r"""The loss weight of each of :meth:`epoch_pairs`' pairs, or
        ``None`` where they all weigh the same (uniform weights, or pairs
        drawn by weight with ``pairs_per_epoch``)."""
        if self.epoch_index(epoch) is not None or \
                bool((self.pair_weight == 1).all()):
            return None
        return self.pair_weight.float()

    def positive_log_q(self) -> Tensor:
        r"""``log p(j)`` of every item as the positive of a training pair
        (pair weights summed per positive item, normalised; ``-inf`` for an
        item that is never a positive): the sampling distribution of the
        in-batch negatives, for the logQ correction."""
        w = torch.zeros(self.dataset.num_items, dtype=torch.float64)
        w.index_add_(0, self.pairs[1], self.pair_weight.double())
        return (w / w.sum()).log().float()

    def target_csr(self) -> Tuple[Tensor, Tensor, Tensor]:
        r"""The full-softmax targets: the training pairs aggregated per
        query item, as a CSR matrix ``(ptr [N + 1], col, weight)`` over
        items (a pair's weight summed over its occurrences)."""
        if self._targets is None:
            self._targets = aggregate_targets(self.pairs, self.pair_weight,
                                              self.dataset.num_items)
        return self._targets

    def epoch_pairs(self, epoch: int) -> Tensor:
        r"""The positives ``[2, P]`` of one epoch (see :meth:`epoch_index`)."""
        idx = self.epoch_index(epoch)
        return self.pairs if idx is None else self.pairs[:, idx]

    def train_dataloader(self):
        if self.full_softmax is not None:
            return self.full_softmax_dataloader()
        epoch, rank, world = self._epoch(), self.global_rank, self.world_size
        per_rank = check_world_size(self.batch_size, world)
        self._epoch_weight = self.epoch_weight(epoch)
        graph = self.train_graph(epoch)
        idx = self.epoch_index(epoch)
        pairs = self.pairs if idx is None else self.pairs[:, idx]
        users = self.pair_user if idx is None else self.pair_user[idx]
        _, stage = self.stage(epoch)
        sampler = PinSageSampler(graph, self.num_layers,
                                 shared_negatives=self.cfg.shared_negatives,
                                 exclude_pairs=self.cfg.exclude_pairs,
                                 hard_negatives=self.miner,
                                 num_hard_negatives=stage.hard_negatives,
                                 pair_user=users,
                                 seed=mix_seed(self.seed, epoch, rank, 2),
                                 train_num_neighbors=self.cfg
                                 .train_num_neighbors)
        return EpochLoader(
            graph, link_sampler=sampler,
            edge_label_index=pairs,
            neg_sampling=NegativeSampling('triplet', self.cfg.num_negatives),
            batch_size=per_rank, epoch=epoch, trained=_TrainedBatches(self),
            order=self.shard(epoch, rank, world),
            num_workers=self.num_workers,
            worker_init_fn=_worker_init if self.num_workers > 0 else None,
            persistent_workers=False,
        )

    # -------------------------------------------------- full softmax ---
    @property
    def full_rows(self) -> Tensor:
        r"""The query items of the full-softmax objective: every item with
        at least one target."""
        ptr = self.target_csr()[0]
        return torch.nonzero(ptr[1:] > ptr[:-1]).view(-1)

    def full_steps_per_epoch(self) -> int:
        return int((self.full_softmax or {}).get('steps_per_epoch', 1))

    def full_rows_per_step(self) -> int:
        rows = (self.full_softmax or {}).get('rows_per_step')
        n = int(self.full_rows.numel())
        return n if rows is None else min(int(rows), n)

    def full_step(self, epoch: int, step: int, rank: int = 0,
                  world_size: int = 1) -> Data:
        r"""Step :obj:`step` of :obj:`epoch` in full-softmax mode: the
        importance graph of all items (with ``refresh_every_n_epochs=1`` a
        fresh one every ``loss.full.refresh_every_n_steps`` steps, else one
        per refresh version of the epochs) with
        ``x``, and ``rows`` (this rank's query items of the step: the next
        ``rows_per_step`` of a seeded cyclic permutation of
        :attr:`full_rows`) with their targets as a CSR ``target_ptr``,
        ``target_col``, ``target_weight`` (columns are item ids). A
        deterministic function of its arguments."""
        every = self.cfg.refresh_every_n_epochs
        steps = self.full_steps_per_epoch()
        if every == 1:
            version = (epoch * steps + step) // max(1, int(
                (self.full_softmax or {}).get('refresh_every_n_steps', 1)))
        else:
            version = -1 - (epoch // every if every > 0 else 0)
        graph = self.build_graph(seed=mix_seed(self.seed, version, 3))
        rows_all = self.full_rows
        per_step = self.full_rows_per_step()
        n = rows_all.numel()
        if per_step < n:
            first = (epoch * steps + step) * per_step
            cycle, start = divmod(first, n)
            perm = torch.cat([rows_all[torch.randperm(
                n, generator=torch.Generator().manual_seed(
                    mix_seed(self.seed, c, 4)))] for c in (cycle, cycle + 1)])
            rows = perm[start:start + per_step]
        else:
            rows = rows_all
        per_rank = rows.numel() // world_size
        if per_rank == 0:
            raise DataError(f"{self.dataset.name}: {rows.numel()} query "
                            f"items per step cannot be split over "
                            f"{world_size} ranks.")
        rows = rows[rank * per_rank:(rank + 1) * per_rank]
        ptr, col, weight = self.target_csr()
        sub_ptr, pos = gather_csr_rows(ptr, rows)
        graph.rows = rows
        graph.target_ptr = sub_ptr
        graph.target_col = col[pos]
        graph.target_weight = weight[pos]
        graph.step = torch.tensor([epoch, step])
        return graph

    def full_softmax_dataloader(self) -> 'FullSoftmaxLoader':
        epoch, rank, world = self._epoch(), self.global_rank, self.world_size
        # Steps build their graph in the loader's workers; CUDA-side walks
        # (sampler.device=cuda) stay in the main process.
        workers = 0 if self.cfg.resolve_device().type == 'cuda' \
            else self.num_workers
        return FullSoftmaxLoader(
            _FullSoftmaxSteps(self, epoch, rank, world),
            steps=self.full_steps_per_epoch(), epoch=epoch,
            trained=_TrainedBatches(self), num_workers=workers,
            worker_init_fn=_worker_init if workers > 0 else None)

    def val_dataloader(self) -> DataLoader:
        user, target = self.dataset.val
        query = self.dataset.last_train_item()[user]
        keep = query >= 0
        return DataLoader(TensorDataset(user[keep], query[keep], target[keep]),
                          batch_size=self.eval_batch_size)
