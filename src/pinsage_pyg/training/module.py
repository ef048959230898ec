r"""The LightningModule: PinSage trained with the paper's max-margin loss,
a sampled softmax (shared + in-batch negatives, logQ correction) or an
exact softmax over the whole catalogue (a full-graph forward per step)."""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor

from pinsage_pyg.config import check_loss, check_optimizer
from pinsage_pyg.nn import (PinSage, full_softmax_loss, max_margin_loss,
                            sampled_softmax_loss, upgrade_model_kwargs)
from pinsage_pyg.evaluation.baselines import EmbeddingScorer
from pinsage_pyg.evaluation.protocols import (evaluate_leave_last_out,
                                              evaluate_pairs)
from pinsage_pyg.utils import gather_csr_rows

log = logging.getLogger(__name__)

def gather_rows(ptr: Tensor, col: Tensor, rows: Tensor
                ) -> tuple[Tensor, Tensor]:
    r"""The CSR sub-matrix of :obj:`rows`: ``(new_ptr, new_col)``."""
    sub_ptr, pos = gather_csr_rows(ptr, rows)
    return sub_ptr, col[pos]


class PinSageModule(pl.LightningModule):
    r"""Trains :class:`~pinsage_pyg.nn.PinSage` on batches of
    :class:`~pinsage_pyg.sampler.PinSageSampler` inside PyG's
    :class:`~torch_geometric.loader.LinkLoader`.

    Validation embeds all items layer-wise on the datamodule's evaluation
    importance graph and logs ``val_hr@k`` (leave-last-out: query = user's
    last train item, candidates = all items but the user's train items) and
    the paper's ``val_hit_rate@k`` / ``val_scaled_mrr`` on the held-out
    (last train item, validation item) pairs. The test split is evaluated
    once, after training, by :func:`~pinsage_pyg.training.pipeline.run`.

    Args:
        model (dict): :class:`~pinsage_pyg.nn.PinSage` keyword arguments.
        loss (dict): ``name`` (``max_margin`` or ``softmax``), ``margin``,
            ``temperature``; for the softmax ``mode`` (``full``: exact
            softmax over every item, each step a full-graph forward of the
            datamodule's :meth:`~PinSageDataModule.full_step` batches;
            ``sampled``: over the batch's shared uniform negatives plus,
            with ``sampled.in_batch_negatives``, the batch's other
            positives, with the ``sampled.log_q`` correction; ``auto`` must
            be resolved first, see
            :func:`~pinsage_pyg.config.resolve_softmax_mode`) and
            ``full.chunk_rows`` (query rows per logit chunk; ``None``: as
            many as keep a chunk under 2**24 scores).
        optimizer (dict): ``lr``, ``weight_decay``.
        k (int): Cut-off of the evaluation metrics. (default: ``10``)
    """
    def __init__(self, model: Dict[str, Any], loss: Dict[str, Any],
                 optimizer: Dict[str, Any], k: int = 10):
        super().__init__()
        self.save_hyperparameters()
        check_loss(loss)
        check_optimizer(optimizer)
        loss = dict(loss)
        if loss.get('name') == 'softmax' and \
                loss.get('mode', 'sampled') == 'auto':
            raise ValueError("loss.mode 'auto' must be resolved to 'full' or "
                             "'sampled' before building the module "
                             "(pinsage_pyg.config.resolve_softmax_mode)")
        # Checkpoints of older versions: upgrade_model_kwargs.
        self.model = PinSage(**upgrade_model_kwargs(model))
        self.loss_cfg = loss
        self.k = k
        self._emb: Optional[tuple[Tensor, Tensor]] = None
        self._pos_log_q: Optional[Tensor] = None

    @property
    def full_softmax(self) -> bool:
        r"""Whether training runs the exact full softmax."""
        return self.loss_cfg.get('name') == 'softmax' and \
            self.loss_cfg.get('mode', 'sampled') == 'full'

    # ------------------------------------------------------------------
    def forward(self, batch) -> tuple[Tensor, Tensor]:
        return self.model(batch.x, batch.edge_index, batch.edge_weight,
                          batch.num_sampled_nodes, batch.num_sampled_edges)

    def compute_loss(self, batch) -> Tensor:
        r"""The training loss of one batch (its value; in full-softmax mode
        with logit chunks, a surrogate with the same gradient, see
        :meth:`full_softmax_step`)."""
        self._seed_neighbor_dropout()
        if self.full_softmax:
            return self.full_softmax_step(batch)[0]
        query, item = self(batch)
        q = query[batch.src_index]
        pos = item[batch.dst_pos_index]
        neg_index = batch.dst_neg_index
        hard = hard_mask = None
        hard_index = getattr(batch, 'hard_neg_index', None)
        if hard_index is not None and hard_index.numel() > 0:
            # Curriculum hard negatives [B, H]; unfillable slots hold the
            # positive and are masked out.
            hard = item[hard_index]
            hard_mask = hard_index != batch.dst_pos_index.view(-1, 1)
        weight = self._pair_weight(batch)
        if self.loss_cfg.get('name', 'max_margin') == 'softmax':
            return self._sampled_softmax(batch, q, pos, item, neg_index,
                                         hard, hard_mask, weight)
        neg = item[neg_index]
        return max_margin_loss(q, pos, neg, self.margin(),
                               self._neg_mask(batch, neg_index), hard,
                               hard_mask, weight)

    def _seed_neighbor_dropout(self) -> None:
        if self.model.neighbor_dropout > 0 or \
                self.model.feature_dropout > 0:
            # Neighbourhood- and feature-dropout masks keyed by (seed, rank, step), not
            # drawn from the global generator (whose state a mid-epoch
            # resume does not replay: the loader draws from it too).
            key = (torch.initial_seed() % (1 << 31)) * 1_000_003 + \
                int(self.global_rank)
            self.model.dropout_generator = torch.Generator().manual_seed(
                (key * 1_000_000_007 + int(self.global_step)) % (1 << 63))

    @staticmethod
    def _neg_mask(batch, neg_index: Tensor) -> Tensor:
        # A negative that is the pair's own query or positive is not a
        # negative for that pair (shared [N] negatives broadcast to [B, N]):
        ni = neg_index if neg_index.dim() == 2 else neg_index.view(1, -1)
        return ((ni != batch.dst_pos_index.view(-1, 1))
                & (ni != batch.src_index.view(-1, 1)))

    def _pair_weight(self, batch) -> Optional[Tensor]:
        r"""The loss weights of the batch's pairs (window decay, backward
        weight), from the datamodule's epoch weights; ``None``: uniform."""
        dm = self._datamodule()
        weight = getattr(dm, '_epoch_weight', None) if dm is not None \
            else None
        input_id = getattr(batch, 'input_id', None)
        if weight is None or input_id is None:
            return None
        return weight[input_id.cpu()].to(self.device)

    def _datamodule(self):
        return getattr(self._trainer, 'datamodule', None) \
            if self._trainer is not None else None

    def _sampled_softmax(self, batch, q: Tensor, pos: Tensor, item: Tensor,
                         neg_index: Tensor, hard, hard_mask, weight
                         ) -> Tensor:
        r"""Sampled softmax over the shared uniform negatives and (with
        ``sampled.in_batch_negatives``) the batch's positives as negatives
        of the other pairs, every candidate corrected by ``log Q`` (its
        expected count in the candidate set: ``N / |I|`` from the uniform
        draw plus ``B p(j)`` from the in-batch positives) with
        ``sampled.log_q``; accidental hits (a candidate equal to the pair's
        own positive or query item) are masked."""
        opts = self.loss_cfg.get('sampled') or {}
        in_batch = bool(opts.get('in_batch_negatives', True))
        use_log_q = bool(opts.get('log_q', True))
        cand = neg_index
        if in_batch:
            pos_index = batch.dst_pos_index
            cand = torch.cat([neg_index, pos_index]) if neg_index.dim() == 1 \
                else torch.cat([neg_index, pos_index.view(1, -1).expand(
                    neg_index.size(0), -1)], dim=1)
        n_id = getattr(batch, 'n_id', None)
        mask = self._global_mask(batch, cand, n_id)
        pos_lq = neg_lq = None
        if use_log_q:
            log_q = self._log_q_fn(batch, neg_index, in_batch)
            if log_q is not None and n_id is not None:
                pos_lq = log_q(n_id[batch.dst_pos_index])
                neg_lq = log_q(n_id[cand])
        return sampled_softmax_loss(
            q, pos, item[cand], self.loss_cfg.get('temperature', 0.05), mask,
            hard, hard_mask, pos_lq, neg_lq, weight)

    @staticmethod
    def _global_mask(batch, cand: Tensor, n_id: Optional[Tensor]) -> Tensor:
        r"""Accidental hits by item id (a candidate that *is* the pair's
        positive or query item; local indices are unique per node, so
        without ``n_id`` the local index is the item)."""
        ids = (lambda t: n_id[t]) if n_id is not None else (lambda t: t)
        c = ids(cand)
        c = c if c.dim() == 2 else c.view(1, -1)
        return ((c != ids(batch.dst_pos_index).view(-1, 1))
                & (c != ids(batch.src_index).view(-1, 1)))

    def _log_q_fn(self, batch, neg_index: Tensor, in_batch: bool):
        r"""``item ids -> log Q``: the expected count of an item in the
        candidate set (uniform share plus in-batch share)."""
        dm = self._datamodule()
        if dm is None or not hasattr(dm, 'positive_log_q'):
            return None
        num_items = int(dm.dataset.num_items)
        if self._pos_log_q is None or self._pos_log_q.numel() != num_items:
            self._pos_log_q = dm.positive_log_q()
        p = self._pos_log_q.to(self.device).exp()
        per_row = neg_index.size(-1)
        base = per_row / num_items
        b = int(batch.dst_pos_index.numel()) if in_batch else 0

        def log_q(ids: Tensor) -> Tensor:
            return (base + b * p[ids]).clamp(min=1e-12).log()
        return log_q

    def full_softmax_step(self, batch) -> tuple[Tensor, Tensor]:
        r"""One full-softmax step: a full-graph forward with gradients over
        every item of ``batch`` (a :meth:`PinSageDataModule.full_step`
        graph), then the exact softmax of each query row over all items
        (itself masked) against its weighted targets.

        The ``[rows, items]`` scores are computed ``full.chunk_rows`` rows
        at a time; with more than one chunk each chunk's gradient is taken
        at once on detached embeddings and the returned first value is a
        surrogate ``<z, dL/dz>`` with the loss's gradient, so memory holds
        one chunk of scores. Returns ``(loss to backpropagate, loss
        value)``."""
        query, item = self.model(batch.x, batch.edge_index,
                                 batch.edge_weight)
        rows = batch.rows.to(query.device)
        ptr = batch.target_ptr
        col = batch.target_col.to(query.device)
        tw = batch.target_weight.to(query.device)
        temp = float(self.loss_cfg.get('temperature', 0.1))
        n, r = item.size(0), rows.numel()
        chunk = (self.loss_cfg.get('full') or {}).get('chunk_rows')
        chunk = max(1, 2 ** 24 // max(n, 1)) if chunk is None else int(chunk)
        total = tw.sum().clamp(min=1e-12)

        def target(lo: int, hi: int):
            a, b = int(ptr[lo]), int(ptr[hi])
            return (ptr[lo:hi + 1] - a, col[a:b], tw[a:b])

        q = query[rows]
        if chunk >= r:
            loss = full_softmax_loss(q, item, target(0, r), temp, rows,
                                     reduction='sum') / total
            return loss, loss.detach()
        qd = q.detach().requires_grad_()
        idet = item.detach().requires_grad_()
        value = q.new_zeros(())
        with torch.enable_grad():
            for lo in range(0, r, chunk):
                hi = min(lo + chunk, r)
                part = full_softmax_loss(qd[lo:hi], idet, target(lo, hi),
                                         temp, rows[lo:hi],
                                         reduction='sum') / total
                part.backward()
                value = value + part.detach()
        surrogate = (q * qd.grad).sum() + (item * idet.grad).sum()
        # Same gradient as the loss; its value is shifted to the loss's:
        return surrogate - surrogate.detach() + value, value

    def margin(self) -> float:
        r"""The hinge margin: the curriculum stage's, if it sets one."""
        stage = self._stage()
        if stage is not None and stage.margin is not None:
            return stage.margin
        return self.loss_cfg.get('margin', 0.1)

    def _stage(self):
        dm = getattr(self._trainer, 'datamodule', None) \
            if self._trainer is not None else None
        if dm is None or not hasattr(dm, 'stage'):
            return None
        return dm.stage()[1]

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, 'datamodule', None)
        if dm is None or not hasattr(dm, 'stage'):
            return
        index, stage = dm.stage()
        log.info("epoch %d: curriculum '%s' stage %d, %d hard negatives per "
                 "pair%s", self.current_epoch, dm.curriculum.name, index,
                 stage.hard_negatives, '' if stage.margin is None else
                 f', margin {stage.margin}')
        self.log('curriculum_stage', float(index), on_epoch=True,
                 on_step=False, batch_size=1, sync_dist=True)
        self.log('hard_negatives', float(stage.hard_negatives),
                 on_epoch=True, on_step=False, batch_size=1, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        # Also tells the main process of a ddp_spawn run (whose own loops
        # never ran) how many epochs the ranks completed.
        self.log('epochs_completed', float(self.current_epoch + 1),
                 on_epoch=True, on_step=False, batch_size=1, sync_dist=True)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        if self.full_softmax:
            self._seed_neighbor_dropout()
            loss, value = self.full_softmax_step(batch)
            size = int(batch.rows.numel())
        else:
            loss = value = self.compute_loss(batch)
            size = int(batch.src_index.numel())
        # sync_dist: under DDP the logged loss is the mean over ranks.
        self.log('train_loss', value, prog_bar=True, on_step=True,
                 on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    # ------------------------------------------------------------------
    @torch.no_grad()
    def embed_all(self, graph=None) -> tuple[Tensor, Tensor]:
        r"""Layer-wise embeddings ``(query, item)`` of every item."""
        if graph is None:
            graph = self.trainer.datamodule.eval_graph
        was_training = self.training
        self.eval()
        out = self.model.inference(graph.x.to(self.device),
                                   graph.edge_index.to(self.device),
                                   graph.edge_weight.to(self.device))
        self.train(was_training)
        return out

    def on_validation_epoch_start(self) -> None:
        self._emb = self.embed_all()

    def validation_step(self, batch, batch_idx: int) -> None:
        user, query, target = batch
        dataset = self.trainer.datamodule.dataset
        q_emb, i_emb = self._emb
        scorer = EmbeddingScorer(q_emb.cpu(), i_emb.cpu())
        ptr, items = gather_rows(dataset.train_ptr, dataset.train_item,
                                 user.cpu())
        n = int(user.numel())
        hr = evaluate_leave_last_out(scorer, query.cpu(), target.cpu(), ptr,
                                     items, k=self.k)
        self.log(f'val_hr@{self.k}', hr, batch_size=n, on_epoch=True,
                 prog_bar=True, sync_dist=True)
        keep = query != target
        if bool(keep.any()):
            pm = evaluate_pairs(scorer, query[keep].cpu(),
                                target[keep].cpu(), k=self.k)
            m = int(keep.sum())
            self.log(f'val_hit_rate@{self.k}', pm[f'hit_rate@{self.k}'],
                     batch_size=m, on_epoch=True, sync_dist=True)
            self.log('val_scaled_mrr', pm['scaled_mrr'], batch_size=m,
                     on_epoch=True, sync_dist=True)

    def configure_optimizers(self):
        r"""Adam with the paper's schedule: the learning rate is
        ``lr * batch_size / reference_batch_size`` (linear scaling rule,
        when ``reference_batch_size`` is set; full-softmax steps use
        ``loss.full.lr`` when set, unscaled), warmed up linearly over the
        first ``warmup_epochs`` epochs and then decayed by ``decay`` per
        epoch (exponential, applied per step). The current rate is logged
        as ``lr``."""
        opt = self.hparams.optimizer
        lr = opt.get('lr', 1e-3)
        ref = opt.get('reference_batch_size')
        dm = getattr(self.trainer, 'datamodule', None) if \
            self._trainer is not None else None
        full_lr = (self.loss_cfg.get('full') or {}).get('lr')
        if self.full_softmax and full_lr is not None:
            lr = float(full_lr)  # full-graph steps: no batch-size scaling
        elif ref and dm is not None:
            lr = lr * dm.batch_size / ref
        optimizer = torch.optim.Adam(self.parameters(), lr=lr,
                                     weight_decay=opt.get('weight_decay',
                                                          0.0))
        warmup = float(opt.get('warmup_epochs', 0.0))
        decay = float(opt.get('decay', 1.0))
        if (warmup <= 0 and decay == 1.0) or self._trainer is None:
            return optimizer
        steps = max(1, int(self.trainer.estimated_stepping_batches /
                           max(1, self.trainer.max_epochs)))

        def factor(step: int) -> float:
            epoch = step / steps
            ramp = min(1.0, (step + 1) / (warmup * steps)) if warmup > 0 \
                else 1.0
            return ramp * decay ** max(0.0, epoch - warmup)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {'optimizer': optimizer,
                'lr_scheduler': {'scheduler': scheduler, 'interval': 'step'}}

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        optimizers = self.optimizers()
        if optimizers is not None and hasattr(optimizers, 'param_groups'):
            self.log('lr', optimizers.param_groups[0]['lr'], on_step=True,
                     on_epoch=False, batch_size=1)
