r"""Training progress that suits where the output goes, and an honest
count of what this process trained.

* :class:`EpochReport` counts the training batches this process ran (so a
  resumed run can say how much of its total it trained itself) and, when
  stdout is not a terminal, logs one line per epoch instead of a progress
  bar (a bar redirected to a file is hundreds of kilobytes of carriage
  returns).
* :class:`EpochProgressBar` is Lightning's bar showing ``Epoch e/N`` and
  the epoch's batch total, also after a mid-epoch resume (Lightning skips
  ``on_train_epoch_start`` there, so its own bar kept ``Training 0/?``).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Mapping, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

from pinsage_pyg.console import interactive

log = logging.getLogger(__name__)

#: Logged metrics left out of the epoch line (the module logs the
#: curriculum stage at every epoch start already).
QUIET_METRICS = ('epochs_completed', 'curriculum_stage', 'hard_negatives')


def show_progress_bar(cfg: Mapping[str, Any]) -> bool:
    r"""Whether a ``train`` config shows a progress bar: ``progress=bar``
    always, ``log`` never, ``auto`` (default) when stdout is a terminal;
    never with ``trainer.enable_progress_bar=false``."""
    trainer = cfg.get('trainer') or {}
    if not bool(trainer.get('enable_progress_bar', True)):
        return False
    mode = cfg.get('progress', 'auto')
    return mode == 'bar' or (mode == 'auto' and interactive())


def epoch_label(trainer: pl.Trainer) -> str:
    r"""``epoch e/N`` (1-based ``e`` of ``max_epochs``)."""
    total = trainer.max_epochs
    total = '?' if total is None or total < 0 else str(total)
    return f"{trainer.current_epoch + 1}/{total}"


class EpochReport(pl.Callback):
    r"""Counts the training batches run by this process and, with
    :obj:`log_lines`, logs one line at the end of each epoch (global rank 0
    only): ``epoch 2/3: 40 batches in 3.1s, train_loss 2.91,
    val_hr@10 0.118``.

    Attributes:
        batches (int): Training batches run by this process.
        batches_per_epoch (int): Lightning's batch count of an epoch.
        start_batches (int): Batches of the first epoch trained before this
            process started (a mid-epoch resume), else 0.
        start_epoch (int): The epoch this process started in.
    """
    def __init__(self, log_lines: bool = True):
        self.log_lines = bool(log_lines)
        self.batches = 0
        self.batches_per_epoch = 0
        self.start_epoch = 0
        self.start_batches = 0
        self._epoch_batches = 0
        self._t0 = time.time()

    def on_train_start(self, trainer: pl.Trainer, *_: Any) -> None:
        self.start_epoch = int(trainer.current_epoch)
        self.start_batches = int(
            trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        self._epoch_batches, self._t0 = 0, time.time()
        if self.log_lines and trainer.is_global_zero and (
                self.start_epoch or self.start_batches):
            log.info("resuming at epoch %s after %d of its batches",
                     epoch_label(trainer), self.start_batches)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        self._epoch_batches, self._t0 = 0, time.time()

    def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        self.batches += 1
        self._epoch_batches += 1
        self.batches_per_epoch = int(trainer.num_training_batches)

    def on_train_epoch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        if not (self.log_lines and trainer.is_global_zero):
            return
        values = dict(trainer.callback_metrics)
        if 'train_loss_epoch' in values:
            values['train_loss'] = values.pop('train_loss_epoch')
        metrics = ', '.join(
            f"{k} {float(v):.4g}" for k, v in sorted(values.items())
            if not k.endswith('_step') and k not in QUIET_METRICS)
        log.info("epoch %s: %d batches in %.1fs%s", epoch_label(trainer),
                 self._epoch_batches, time.time() - self._t0,
                 f", {metrics}" if metrics else '')

    def epochs_run(self) -> Optional[float]:
        r"""Epochs' worth of training this process ran (fractional after a
        mid-epoch resume); ``None`` if no batch ran here (e.g. the main
        process of ``ddp_spawn``)."""
        if not self.batches or not self.batches_per_epoch:
            return None
        return self.batches / self.batches_per_epoch

    def state(self) -> Dict[str, Any]:
        return {'batches': self.batches,
                'batches_per_epoch': self.batches_per_epoch}


class EpochProgressBar(TQDMProgressBar):
    r""":class:`~lightning.pytorch.callbacks.TQDMProgressBar` whose
    description is ``Epoch e/N`` with the epoch's batch total, set at every
    epoch start and at the start of training (which covers a mid-epoch
    resume, where Lightning does not call ``on_train_epoch_start``)."""

    def _describe(self, trainer: pl.Trainer) -> None:
        bar = self.train_progress_bar
        total = self.total_train_batches
        if total is not None and total != float('inf'):
            bar.total = int(total)
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current
                   .ready)
        if done:
            bar.n = done
        bar.set_description(f"Epoch {epoch_label(trainer)}")
        bar.refresh()

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        self._describe(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._describe(trainer)
