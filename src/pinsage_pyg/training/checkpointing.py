r"""No lost work: atomic checkpoint files, RNG states in checkpoints, and
the start-up check that a checkpoint fits the run that resumes it.

What a checkpoint holds (Lightning's own keys plus ours):

* model weights, optimizer and LR-scheduler states, the loop progress
  (epoch, global step, batches done in the epoch);
* ``callbacks``: the :class:`RNGStates` of the saving process (torch CPU,
  CUDA, Python, NumPy) and the checkpoint callbacks' bookkeeping;
* ``PinSageDataModule``: the data fingerprint (dataset name, number of
  items/users/features/pairs), seed, global batch size, world size and
  the curriculum stage of the saved epoch;
* ``loops.fit_loop.state_dict.combined_loader``: the training loader's
  position (epoch and batches already trained), which lets a mid-epoch
  resume skip exactly the batches trained before the checkpoint.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from pinsage_pyg.config import ConfigError
from pinsage_pyg.nn.model import upgrade_model_kwargs
from pinsage_pyg.utils import open_temp_sibling, safe_torch_load


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    r"""Lightning :class:`~lightning.fabric.plugins.CheckpointIO` that never
    leaves a truncated file under a checkpoint's final name: the checkpoint
    is written to a temporary file in the same directory, flushed to disk
    (``fsync``) and renamed over the target (``os.replace``, atomic on
    POSIX and Windows), then the directory entry is synced. A crash (even
    ``kill -9``) leaves either the previous complete checkpoint or the new
    one. The file gets the permissions of the user's umask. Loading uses
    ``torch.load(weights_only=True)``: tensors and primitive containers
    only, no arbitrary code from a checkpoint file.
    Remote (``fsspec`` URL) paths fall back to Lightning's writer."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path,
                        storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or '://' in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = open_temp_sibling(path)  # the user's umask, not 0600
        try:
            with os.fdopen(fd, 'wb') as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        _fsync_dir(path.parent)

    def load_checkpoint(self, path, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None
                        ) -> Dict[str, Any]:
        return super().load_checkpoint(
            path, map_location=map_location or 'cpu',
            weights_only=True if weights_only is None else weights_only)


class RNGStates(pl.Callback):
    r"""Saves the random-number-generator states of the process that writes
    a checkpoint (torch CPU, every CUDA device, Python's :mod:`random`,
    NumPy's global generator) and restores them when training resumes from
    it. In PinSage's pipeline the minibatch randomness (negatives, hard
    negatives, pair order) is seeded per batch and does not depend on these
    states; they make everything else (e.g. dropout) continue the saved
    stream instead of restarting it. Under DDP the checkpoint holds rank
    0's states and every rank restores them."""

    @property
    def state_key(self) -> str:
        return 'RNGStates'

    def state_dict(self) -> Dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            'torch': torch.get_rng_state(),
            'python': random.getstate(),
            # weights_only loading allows tensors, not numpy arrays:
            'numpy': (str(kind), torch.from_numpy(keys.astype(np.int64)),
                      int(pos), int(has_gauss), float(gauss)),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state['cuda'] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        torch.set_rng_state(state['torch'])
        version, internal, gauss = state['python']
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, gauss = state['numpy']
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos,
                             has_gauss, gauss))
        if 'cuda' in state and torch.cuda.is_available():
            cuda = list(state['cuda'])[:torch.cuda.device_count()]
            torch.cuda.set_rng_state_all(cuda)


class BestCheckpoint(ModelCheckpoint):
    r"""The best-validation checkpoint, which also remembers the best score
    across a resume into another run folder (``resume=`` from a new
    Hydra output directory). Lightning's :class:`ModelCheckpoint` restores
    only the best *path* when the folder changed and forgets the score, so
    the resumed run's first epoch became "best" even when it scored worse,
    and the run evaluated that epoch instead of the best one. The earlier
    best file stays in its own folder (Lightning never deletes checkpoints
    outside :attr:`dirpath`) and is the one evaluated unless a resumed
    epoch beats it."""
    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        best, score = state_dict.get('best_model_path'), \
            state_dict.get('best_model_score')
        if self.best_model_score is None and score is not None and best \
                and Path(best).is_file():
            self.best_model_score = score
            self.best_k_models = {best: score}
            self.kth_best_model_path, self.kth_value = best, score


class FeatureSchema(pl.Callback):
    r"""Stores the item feature columns the model was trained on
    (:attr:`PinSageDataset.feature_names`: numeric columns, the multi-hot
    vocabulary ``col=value``, text hash buckets, ``log_degree``, ...) in
    every checkpoint, under ``callbacks['FeatureSchema']``, so that
    ``pinsage-embed`` can refuse data whose features do not line up
    with the weights (see
    :func:`~pinsage_pyg.inference.embed.check_feature_schema`), with the
    raw statistics of the standardised columns
    (:attr:`PinSageDataset.feature_stats`), with which ``pinsage-embed``
    standardises a newer log's features."""

    def __init__(self, feature_names, feature_stats=None):
        self.feature_names = [str(n) for n in feature_names]
        self.feature_stats = {str(n): {str(k): float(v)
                                       for k, v in s.items()}
                              for n, s in dict(feature_stats or {}).items()}

    @property
    def state_key(self) -> str:
        return 'FeatureSchema'

    def state_dict(self) -> Dict[str, Any]:
        return {'feature_names': list(self.feature_names),
                'feature_stats': dict(self.feature_stats)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass  # the schema comes from the data, not from the checkpoint


def load_checkpoint(path) -> Dict[str, Any]:
    r"""Reads a checkpoint with ``weights_only=True`` onto the CPU.

    Raises:
        ConfigError: if the file is missing or not a (safe) checkpoint.
    """
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ConfigError(f"Invalid config: resume={path}: no such "
                          f"checkpoint file.")
    try:
        ckpt = safe_torch_load(p)
    except ValueError as e:
        raise ConfigError(f"Invalid config: resume={path} is not a readable "
                          f"checkpoint ({e}).") from None
    if not isinstance(ckpt, dict) or 'state_dict' not in ckpt:
        raise ConfigError(f"Invalid config: resume={path} is not a Lightning "
                          f"checkpoint (no state_dict).")
    return ckpt


#: Model hyper-parameters a resumed run must share with its checkpoint.
MODEL_KEYS = ('in_channels', 'hidden_channels', 'out_channels', 'num_layers',
              'aggr', 'asymmetric', 'query_mode')
#: Data-fingerprint keys (``PinSageDataModule.state_dict()``) that must match.
DATA_KEYS = ('dataset', 'num_items', 'num_users', 'num_features')


def loader_position(ckpt: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    r"""The training loader's saved position ``{'epoch', 'batches', ...}``
    of a checkpoint (``None`` if it has none)."""
    try:
        states = ckpt['loops']['fit_loop']['state_dict']['combined_loader']
    except (KeyError, TypeError):
        return None
    for s in states or []:
        if isinstance(s, Mapping) and 'batches' in s:
            return dict(s)
    return None


def check_resume(ckpt: Mapping[str, Any], path, model: Mapping[str, Any],
                 data: Mapping[str, Any]) -> None:
    r"""Refuses to resume from a checkpoint of a different setup.

    Args:
        ckpt (dict): The checkpoint (see :func:`load_checkpoint`).
        path: Its path (for the message).
        model (dict): This run's model hyper-parameters
            (:class:`~pinsage_pyg.nn.PinSage` keyword arguments).
        data (dict): This run's
            :meth:`PinSageDataModule.state_dict()
            <pinsage_pyg.training.datamodule.PinSageDataModule.state_dict>`.

    Raises:
        ConfigError: listing every mismatch (dataset, catalogue size,
            feature dimension, model sizes; world size or global batch size
            when the checkpoint is mid-epoch, since the saved loader position
            only means something for the same shards).
    """
    diffs: List[str] = []
    saved_model = upgrade_model_kwargs(
        (ckpt.get('hyper_parameters') or {}).get('model') or {})
    for key in MODEL_KEYS:
        if key in saved_model and key in model and \
                saved_model[key] != model[key]:
            name = 'feature dimension (model.in_channels)' \
                if key == 'in_channels' else f'model.{key}'
            diffs.append(f"{name}: checkpoint {saved_model[key]!r}, this run "
                         f"{model[key]!r}")
    saved_data = dict(ckpt.get('PinSageDataModule') or {})
    for key in DATA_KEYS:
        if key in saved_data and key in data and saved_data[key] != data[key]:
            diffs.append(f"{key}: checkpoint {saved_data[key]!r}, this run "
                         f"{data[key]!r}")
    pos = loader_position(ckpt)
    if pos is not None and pos.get('batches', 0) > 0:
        for key, name in (('world_size', 'world size (trainer.devices x '
                                         'trainer.num_nodes)'),
                          ('batch_size', 'data.batch_size')):
            if key in saved_data and key in data and \
                    saved_data[key] != data[key]:
                diffs.append(f"{name}: checkpoint {saved_data[key]!r}, this "
                             f"run {data[key]!r} (the checkpoint is mid-epoch;"
                             f" its loader position needs the same shards)")
    if diffs:
        raise ConfigError(
            f"Invalid config: resume={path} comes from an incompatible run: "
            f"{'; '.join(diffs)}. Resume with the checkpoint's settings or "
            f"start a new run without resume.")


def weight_averaging(decay: Optional[float]) -> Optional[pl.Callback]:
    r"""The ``optimizer.ema_decay`` callback: Lightning's
    :class:`~lightning.pytorch.callbacks.EMAWeightAveraging` (an
    exponential moving average of the weights after every optimizer step;
    validation, checkpoints' ``state_dict`` and the final weights are the
    average, the raw weights travel in ``current_model_state`` for a
    resume), or :obj:`None` when :obj:`decay` is :obj:`None`."""
    if decay is None:
        return None
    try:
        from lightning.pytorch.callbacks import EMAWeightAveraging
    except ImportError:  # lightning < 2.6
        raise ConfigError(
            f"optimizer.ema_decay={decay} needs lightning >= 2.6 (installed: "
            f"{pl.__version__}); upgrade it (pip install -U 'lightning>=2.6')"
            f" or set optimizer.ema_decay=null") from None
    return EMAWeightAveraging(decay=float(decay))


def check_resume_averaging(ckpt: Mapping[str, Any], path,
                           decay: Optional[float]) -> None:
    r"""Refuses to resume a weight-averaged run without averaging or the
    other way round (the checkpoint's ``state_dict`` would silently be the
    average or the raw weights)."""
    averaged = 'current_model_state' in ckpt
    if averaged != (decay is not None):
        raise ConfigError(
            f"Cannot resume from {path}: it was trained "
            f"{'with' if averaged else 'without'} weight averaging "
            f"(optimizer.ema_decay), this run is "
            f"{'without' if averaged else 'with'} it; set optimizer.ema_decay"
            f" as in the interrupted run")
