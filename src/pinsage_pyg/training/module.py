r"""The LightningModule: PinSage + max-margin loss over shared negatives."""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import lightning.pytorch as pl
import torch
from torch import Tensor

from pinsage_pyg.config import check_loss, check_optimizer
from pinsage_pyg.nn import PinSage, max_margin_loss, sampled_softmax_loss
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
            ``temperature``.
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
        self.model = PinSage(**model)
        self.loss_cfg = loss
        self.k = k
        self._emb: Optional[tuple[Tensor, Tensor]] = None

    # ------------------------------------------------------------------
    def forward(self, batch) -> tuple[Tensor, Tensor]:
        return self.model(batch.x, batch.edge_index, batch.edge_weight,
                          batch.num_sampled_nodes, batch.num_sampled_edges)

    def compute_loss(self, batch) -> Tensor:
        if self.model.neighbor_dropout > 0:
            # Neighbourhood-dropout masks keyed by (seed, rank, step), not
            # drawn from the global generator (whose state a mid-epoch
            # resume does not replay: the loader draws from it too).
            key = (torch.initial_seed() % (1 << 31)) * 1_000_003 + \
                int(self.global_rank)
            self.model.dropout_generator = torch.Generator().manual_seed(
                (key * 1_000_000_007 + int(self.global_step)) % (1 << 63))
        query, item = self(batch)
        q = query[batch.src_index]
        pos = item[batch.dst_pos_index]
        neg_index = batch.dst_neg_index
        neg = item[neg_index]
        # A negative that is the pair's own query or positive is not a
        # negative for that pair (shared [N] negatives broadcast to [B, N]):
        ni = neg_index if neg_index.dim() == 2 else neg_index.view(1, -1)
        neg_mask = ((ni != batch.dst_pos_index.view(-1, 1))
                    & (ni != batch.src_index.view(-1, 1)))
        hard = hard_mask = None
        hard_index = getattr(batch, 'hard_neg_index', None)
        if hard_index is not None and hard_index.numel() > 0:
            # Curriculum hard negatives [B, H]; unfillable slots hold the
            # positive and are masked out.
            hard = item[hard_index]
            hard_mask = hard_index != batch.dst_pos_index.view(-1, 1)
        if self.loss_cfg.get('name', 'max_margin') == 'softmax':
            return sampled_softmax_loss(
                q, pos, neg, self.loss_cfg.get('temperature', 0.05), neg_mask,
                hard, hard_mask)
        return max_margin_loss(q, pos, neg, self.margin(), neg_mask, hard,
                               hard_mask)

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
        loss = self.compute_loss(batch)
        # sync_dist: under DDP the logged loss is the mean over ranks.
        self.log('train_loss', loss, prog_bar=True, on_step=True,
                 on_epoch=True, batch_size=int(batch.src_index.numel()),
                 sync_dist=True)
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
        when ``reference_batch_size`` is set), warmed up linearly over the
        first ``warmup_epochs`` epochs and then decayed by ``decay`` per
        epoch (exponential, applied per step). The current rate is logged
        as ``lr``."""
        opt = self.hparams.optimizer
        lr = opt.get('lr', 1e-3)
        ref = opt.get('reference_batch_size')
        dm = getattr(self.trainer, 'datamodule', None) if \
            self._trainer is not None else None
        if ref and dm is not None:
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
