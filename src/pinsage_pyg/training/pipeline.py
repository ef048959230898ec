r"""The main job, as a function of a composed Hydra config: load data, train,
evaluate PinSage next to the baselines, write embeddings. The CLI only
calls :func:`run`."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import lightning.pytorch as pl
import pandas as pd
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from pinsage_pyg.console import report_error
from pinsage_pyg.data.dataset import PinSageDataset, build_dataset
from pinsage_pyg.data.features import FeatureSpec
from pinsage_pyg.data.interactions import read_table
from pinsage_pyg.inference.export import atomic_write, write_embeddings
from pinsage_pyg.evaluation.baselines import EmbeddingScorer
from pinsage_pyg.evaluation.protocols import (baseline_scorers,
                                              evaluate_scorers,
                                              evaluation_splits)
from pinsage_pyg.config import (ConfigError, Curriculum, SamplerConfig,
                                check_config, resolve_softmax_mode)
from pinsage_pyg.training.checkpointing import (AtomicCheckpointIO,
                                                BestCheckpoint, FeatureSchema,
                                                RNGStates,
                                                check_resume,
                                                check_resume_averaging,
                                                load_checkpoint,
                                                weight_averaging)
from pinsage_pyg.training.datamodule import PinSageDataModule
from pinsage_pyg.training.distributed import (FailureInjection,
                                              ThreadsPerProcess,
                                              check_trainer,
                                              check_world_size)
from pinsage_pyg.training.module import PinSageModule
from pinsage_pyg.training.progress import (EpochProgressBar, EpochReport,
                                           show_progress_bar)

log = logging.getLogger(__name__)


def load_dataset(cfg: Mapping[str, Any],
                 holdout: str = 'leave_last_out',
                 feature_stats: Optional[Mapping[str, Any]] = None
                 ) -> PinSageDataset:
    r"""Builds the dataset described by a ``data`` config group
    (:obj:`holdout`, :obj:`feature_stats`: see
    :func:`~pinsage_pyg.data.dataset.build_dataset`)."""
    source = cfg.get('source')
    features = FeatureSpec(**dict(cfg.get('features') or {}))
    common = dict(name=cfg['name'], features=features,
                  allow_duplicates=bool(cfg.get('allow_duplicates', False)),
                  unknown_feature_items=cfg.get('unknown_feature_items',
                                                'error'),
                  degree_feature=bool(cfg.get('degree_feature', True)),
                  recency_feature=bool(cfg.get('recency_feature', False)),
                  holdout=holdout, feature_stats=feature_stats)
    if source == 'movielens':
        from pinsage_pyg.data.movielens import fetch_movielens
        # fetch_movielens accepts the config names (movielens_100k, ...):
        inter, items = fetch_movielens(cfg['name'], cfg['root'],
                                       cfg.get('raw_dir'))
        return build_dataset(inter, items, **common)
    if source == 'files':
        if not cfg.get('interactions'):
            raise ConfigError("data.interactions is required for data=files "
                              "(a CSV/TSV/Parquet interaction log).")
        user_col = cfg.get('user_col', 'user')
        item_col = cfg.get('item_col', 'item')
        inter = read_table(cfg['interactions'], 'interactions',
                           str_columns=(user_col, item_col))
        items = read_table(cfg['items'], 'item features',
                           str_columns=(item_col, )) \
            if cfg.get('items') else None
        return build_dataset(inter, items, user_col=user_col,
                             item_col=item_col,
                             time_col=cfg.get('time_col', 'timestamp'),
                             weight_col=cfg.get('weight_col'), **common)
    raise ConfigError(f"data.source must be 'movielens' or 'files' (got "
                      f"{source!r}).")


def format_table(df: pd.DataFrame) -> str:
    r"""The metrics table as printed by ``pinsage-train`` (4 decimals)."""
    return df.to_string(index=False, float_format=lambda v: f'{v:.4f}')


def build_trainer(cfg: DictConfig, callbacks: Sequence[pl.Callback],
                  out_dir: Path, progress_bar: Optional[bool] = None
                  ) -> pl.Trainer:
    r"""The Lightning trainer of ``cfg.trainer`` with the atomic checkpoint
    writer; a trainer setting Lightning refuses ends in a
    :class:`~pinsage_pyg.config.ConfigError`. With :obj:`progress_bar`
    (default: :func:`~pinsage_pyg.training.progress.show_progress_bar`)
    the bar is :class:`~pinsage_pyg.training.progress.EpochProgressBar`,
    else there is none."""
    from lightning.fabric.utilities.exceptions import \
        MisconfigurationException
    if progress_bar is None:
        progress_bar = show_progress_bar(cfg)
    callbacks = [*callbacks, *([EpochProgressBar()] if progress_bar else [])]
    try:
        return instantiate(cfg.trainer, callbacks=callbacks,
                           enable_progress_bar=bool(progress_bar),
                           logger=CSVLogger(str(out_dir), name='logs'),
                           default_root_dir=str(out_dir),
                           plugins=[AtomicCheckpointIO()])
    except (InstantiationException, MisconfigurationException,
            ValueError) as e:
        cause = e.__cause__ or e
        first = (str(cause).strip().splitlines() or [type(cause).__name__])
        raise ConfigError(f"Invalid config: trainer: {first[0]}") from None


def report_rank_failure(trainer: pl.Trainer, error: BaseException,
                        ckpt_dir: Path) -> None:
    r"""Prints one ``error:`` line to stderr for a data-parallel rank whose
    training failed: which rank, the error, and the newest checkpoint to
    resume from. The other ranks then fail too (their collectives lose the
    peer, or Lightning's process observer kills them), so the whole run
    exits non-zero."""
    first = (str(error).strip().splitlines() or [''])[0][:300]
    ckpts = sorted(ckpt_dir.glob('*.ckpt'), key=lambda p: p.stat().st_mtime)
    hint = (f"resume from the newest complete checkpoint with resume="
            f"{ckpts[-1]} (same trainer and data settings)") if ckpts else \
        "no checkpoint was written yet"
    msg = (f"rank {trainer.global_rank} of {trainer.world_size} failed "
           f"during training ({type(error).__name__}: {first}); the run "
           f"stops on every rank; {hint}.")
    report_error(msg)


def epochs_trained(trainer: pl.Trainer) -> int:
    r"""Epochs completed by :obj:`trainer`. After ``ddp_spawn`` the main
    process's loops never ran (only the metrics come back from rank 0), so
    the count comes from the ``epochs_completed`` metric the module logs."""
    logged = trainer.callback_metrics.get('epochs_completed')
    return max(int(trainer.current_epoch),
               int(logged) if logged is not None else 0)


def run(cfg: DictConfig,
        callbacks: Optional[Sequence[pl.Callback]] = None) -> Dict[str, Any]:
    r"""Trains, evaluates and exports; returns a summary dict.

    Under data parallelism every rank runs this function (``strategy=ddp``)
    or only the training inside ``trainer.fit`` (``ddp_spawn``); after
    training only global rank 0 evaluates and writes files, the other ranks
    return ``{'global_rank': r}``.

    Args:
        cfg (DictConfig): A composed ``train`` config.
        callbacks (list, optional): Extra Lightning callbacks.
    """
    t0 = time.time()
    check_config(cfg)
    check_trainer(cfg.trainer)
    # sampler.device=cuda without a GPU, a walk backend not installed:
    SamplerConfig(**dict(cfg.sampler)).resolve_backend()
    torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    try:
        out_dir = Path(cfg.output.dir)
    except Exception:  # ${hydra:runtime.output_dir} outside a Hydra app
        raise ConfigError("output.dir could not be resolved: outside the "
                          "pinsage-train app (e.g. with Hydra's compose API) "
                          "pass output.dir=<folder>.") from None
    out_dir.mkdir(parents=True, exist_ok=True)

    ds = load_dataset(cfg.data)
    curriculum = Curriculum.from_config(
        OmegaConf.to_container(cfg.curriculum, resolve=True)
        if cfg.get('curriculum') is not None else None)
    loss = resolve_softmax_mode(OmegaConf.to_container(cfg.loss),
                                ds.num_items,
                                curriculum.max_hard_negatives)
    if loss.get('name') == 'softmax':
        full_lr = (loss.get('full') or {}).get('lr')
        log.info("loss: %s softmax (%d items%s)%s", loss['mode'],
                 ds.num_items, ', loss.mode=auto' if
                 cfg.loss.get('mode') == 'auto' else '',
                 f"; full-graph steps at Adam lr {full_lr} (loss.full.lr; "
                 f"optimizer.lr is the minibatch modes')"
                 if loss['mode'] == 'full' and full_lr is not None else '')
    full = loss.get('full') or {} if loss.get('mode') == 'full' else None
    dm = PinSageDataModule(
        ds, num_layers=int(cfg.model.num_layers),
        sampler=SamplerConfig(**dict(cfg.sampler)),
        batch_size=int(cfg.data.batch_size),
        num_workers=int(cfg.data.num_workers),
        positive_window=int(cfg.data.positives.window), seed=int(cfg.seed),
        context_size=cfg.data.get('context_size'),
        positive_decay=float(cfg.data.positives.get('decay', 1.0)),
        pairs_per_epoch=cfg.data.positives.get('pairs_per_epoch'),
        positive_backward=float(cfg.data.positives.get('backward', 0.0)),
        curriculum=curriculum,
        full_softmax=full)
    if full is None:
        steps = -(-dm.num_epoch_pairs // int(cfg.data.batch_size))
        log.info("%d training pairs per epoch, %d minibatches of %d%s",
                 dm.num_epoch_pairs, steps, int(cfg.data.batch_size),
                 '' if cfg.data.positives.get('pairs_per_epoch') else
                 ' (bound it with data.positives.pairs_per_epoch)'
                 if steps > 1000 else '')
    module = PinSageModule(
        model=dict(in_channels=ds.num_features,
                   **OmegaConf.to_container(cfg.model)),
        loss=loss,
        optimizer=OmegaConf.to_container(cfg.optimizer), k=int(cfg.evaluate.k))

    k = int(cfg.evaluate.k)
    ckpt_dir = out_dir / 'checkpoints'
    # The best checkpoint comes first: it is `trainer.checkpoint_callback`,
    # whose best path Lightning hands back to the main process after
    # ddp_spawn.
    ckpt = BestCheckpoint(dirpath=ckpt_dir,
                          filename='best-{epoch}', monitor=f'val_hr@{k}',
                          mode='max', save_top_k=1)
    # last.ckpt after every epoch, of its own: Lightning's save_last only
    # refreshes it when a best checkpoint is saved in the same step, so an
    # epoch that scored worse than the best left last.ckpt an epoch behind.
    all_callbacks = [ckpt, ModelCheckpoint(
        dirpath=ckpt_dir, filename='last', save_top_k=1,
        enable_version_counter=False)]
    every = int((cfg.get('checkpoint') or {}).get('every_n_train_steps', 0))
    if every > 0:
        all_callbacks.append(ModelCheckpoint(
            dirpath=ckpt_dir, filename='step', every_n_train_steps=every,
            save_top_k=1, enable_version_counter=False))
    # One log line per epoch where no progress bar is shown:
    progress_bar = show_progress_bar(cfg)
    report = EpochReport(log_lines=not progress_bar)
    ema_decay = cfg.optimizer.get('ema_decay')
    averaging = weight_averaging(ema_decay)
    if averaging is not None:
        all_callbacks.append(averaging)
    all_callbacks += [RNGStates(), FeatureSchema(ds.feature_names, ds.feature_stats),
                      ThreadsPerProcess(int(cfg.threads)), report,
                      *(callbacks or [])]
    failure = FailureInjection.from_env()  # test hook, normally None
    if failure is not None:
        all_callbacks.append(failure)
    trainer = build_trainer(cfg, all_callbacks, out_dir, progress_bar)
    world_size = int(trainer.world_size)
    check_world_size(int(cfg.data.batch_size), world_size)

    resume = cfg.get('resume')
    start_epoch = 0
    if resume:
        saved = load_checkpoint(resume)
        check_resume(saved, resume, module.hparams.model,
                     dm.fingerprint(world_size))
        check_resume_averaging(saved, resume, ema_decay)
        start_epoch = int(saved.get('epoch', 0))
        log.info("resuming from %s (epoch %d, global step %s)",
                 Path(str(resume)).expanduser().resolve(), start_epoch,
                 saved.get('global_step'))
        del saved
    t_fit = time.time()
    try:
        trainer.fit(module, datamodule=dm,
                    ckpt_path=str(resume) if resume else None)
    except Exception as e:
        if world_size > 1:
            report_rank_failure(trainer, e, ckpt_dir)
        raise
    fit_seconds = time.time() - t_fit
    # Training is over: leave the process group, so that the evaluation
    # below stays local to rank 0 (torchmetrics would otherwise try to
    # sync its states with ranks that have already returned).
    if torch.distributed.is_available() and \
            torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if not trainer.is_global_zero:
        return {'global_rank': int(trainer.global_rank)}
    epochs = epochs_trained(trainer)
    # What this process trained itself (fractional after a mid-epoch
    # resume); after ddp_spawn only whole epochs are known here.
    epochs_run = report.epochs_run()
    if epochs_run is None:
        epochs_run = max(0, epochs - start_epoch)
    num_pairs = (dm.num_epoch_pairs if full is None else
                 dm.full_steps_per_epoch() * dm.full_rows_per_step()
                 ) * epochs_run

    if ckpt.best_model_path:
        module = PinSageModule.load_from_checkpoint(ckpt.best_model_path,
                                                    weights_only=True)
    q_emb, i_emb = module.embed_all(dm.eval_graph)
    q_emb, i_emb = q_emb.cpu(), i_emb.cpu()

    if cfg.output.embeddings:
        write_embeddings(out_dir / 'embeddings', ds.item_ids, i_emb,
                         q_emb if module.model.asymmetric else None,
                         info=ds.item_info,
                         faiss_index=bool(cfg.output.faiss_index),
                         num_interactions=ds.item_degree().numpy())

    scorers = {'PinSage': EmbeddingScorer(q_emb, i_emb)}
    if cfg.evaluate.baselines:
        scorers.update(baseline_scorers(ds, cfg.evaluate, int(cfg.seed)))
    lloo, pairs = evaluation_splits(ds)
    table = evaluate_scorers(scorers, lloo, pairs, k=k)
    atomic_write(out_dir / 'metrics.csv',
                 lambda tmp: table.to_csv(tmp, index=False))
    summary = {
        'dataset': ds.name, 'num_users': ds.num_users,
        'num_items': ds.num_items, 'epochs': epochs,
        'epochs_this_run': round(float(epochs_run), 3),
        'world_size': world_size,
        'resumed_from': str(resume) if resume else None,
        'resumed_at_epoch': round(max(0.0, epochs - epochs_run), 3)
        if resume else None,
        'best_checkpoint': ckpt.best_model_path,
        'fit_seconds': round(fit_seconds, 2),
        'train_pairs_per_second': round(num_pairs / max(fit_seconds, 1e-9),
                                        1),
        'total_seconds': round(time.time() - t0, 2),
        'mrr_scale': table.attrs.get('mrr_scale'),
        'metrics': table.to_dict(orient='records'),
        'output_dir': str(out_dir),
        'log_dir': getattr(trainer.logger, 'log_dir', None),
    }
    atomic_write(out_dir / 'summary.json', lambda tmp: Path(tmp).write_text(
        json.dumps(summary, indent=2, default=str)))

    print(f"\n{ds.name}: {ds.num_users} users, {ds.num_items} items; "
          f"leave-last-out HR@{k} (query = user's last train item, "
          f"candidates = all items minus the user's train items) and the "
          f"paper's hit-rate@{k} / scaled MRR (scale "
          f"{table.attrs.get('mrr_scale')}) on held-out consecutive pairs")
    print(format_table(table))
    done = f"{epochs} epochs" if not resume else (
        f"{epochs_run:.3g} of {epochs} epochs (resumed at epoch "
        f"{summary['resumed_at_epoch']:.3g})")
    print(f"\ntrained {done} in {fit_seconds:.1f}s "
          f"({summary['train_pairs_per_second']:.0f} positive pairs/s incl. "
          f"validation); outputs in {out_dir}")
    return summary
