r"""Data-parallel training helpers: start-up checks of the ``trainer``
config against the machine, per-rank seeds and per-process threads.

Lightning runs the data parallelism (``strategy=ddp`` relaunches the
command line once per device, ``ddp_spawn`` forks the current process);
what is specific to PinSage lives in
:class:`~pinsage_pyg.training.datamodule.PinSageDataModule`: every rank
trains on a disjoint, equal-size shard of each epoch's positive pairs, and
draws its shared and hard negatives from generators seeded by
``(seed, epoch, rank, batch position)``.
"""
from __future__ import annotations

import os
import signal
from typing import Any, Mapping, Optional

import lightning.pytorch as pl
import torch

from pinsage_pyg.config import ConfigError

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    r"""A 63-bit seed from a tuple of integers (SplitMix64 over the
    values), so that ``(seed, epoch, rank)`` tuples give unrelated random
    streams: ``mix_seed(0, 1, 0)`` and ``mix_seed(0, 0, 1)`` differ in
    about half their bits."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h >> 1


def available_cpus() -> int:
    r"""CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _strategy_name(strategy: Any) -> str:
    if isinstance(strategy, Mapping):
        return str(strategy.get('_target_', '')).rsplit('.', 1)[-1].lower()
    return str(strategy if strategy is not None else 'auto').lower()


def check_trainer(trainer: Mapping[str, Any]) -> None:
    r"""Refuses a ``trainer`` config this machine cannot run, before any
    data is loaded: a GPU accelerator without a visible CUDA device,
    ``devices`` larger than the GPUs (or CPU cores) available, and a DDP
    strategy whose communication backend this torch build lacks (NCCL for
    CUDA, gloo for CPU).

    Raises:
        ConfigError: naming the key and what to do instead.
    """
    accel = str(trainer.get('accelerator', 'auto')).lower()
    gpu = accel in ('gpu', 'cuda') or (accel == 'auto'
                                       and torch.cuda.is_available())
    if accel in ('gpu', 'cuda') and not torch.cuda.is_available():
        raise ConfigError(
            f"Invalid config: trainer.accelerator={accel} but no CUDA GPU is "
            f"visible (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'none'}); use trainer=cpu or "
            f"trainer=ddp_cpu, or install a CUDA build of torch.")
    devices = trainer.get('devices', 'auto')
    avail = torch.cuda.device_count() if gpu else available_cpus()
    unit = 'CUDA GPUs' if gpu else 'CPU cores'
    if isinstance(devices, bool):
        devices = str(devices)
    if isinstance(devices, int) and devices > avail:
        raise ConfigError(
            f"Invalid config: trainer.devices={devices} but this machine has "
            f"{avail} {unit}; set trainer.devices={avail} or lower (or -1 "
            f"for all).")
    if isinstance(devices, (list, tuple)) or (
            hasattr(devices, '__iter__') and not isinstance(devices, str)):
        ids = [int(d) for d in devices]
        if gpu and ids and max(ids) >= avail:
            raise ConfigError(
                f"Invalid config: trainer.devices={ids} names GPU "
                f"{max(ids)} but only {avail} {unit} are visible "
                f"(ids 0..{avail - 1}).")
    strategy = _strategy_name(trainer.get('strategy', 'auto'))
    if 'ddp' in strategy or 'fsdp' in strategy:
        import torch.distributed as dist
        if not dist.is_available():
            raise ConfigError(
                f"Invalid config: trainer.strategy={strategy} needs "
                f"torch.distributed, which this torch build lacks; use "
                f"trainer=cpu or trainer=gpu (one device).")
        if gpu and not dist.is_nccl_available():
            raise ConfigError(
                f"Invalid config: trainer.strategy={strategy} on CUDA needs "
                f"the NCCL backend, which this torch build lacks; install a "
                f"torch build with NCCL or use trainer=ddp_cpu.")
        if not gpu and not dist.is_gloo_available():
            raise ConfigError(
                f"Invalid config: trainer.strategy={strategy} on CPU needs "
                f"the gloo backend, which this torch build lacks; use "
                f"trainer=cpu.")


def check_world_size(batch_size: int, world_size: int) -> int:
    r"""The per-rank batch size of a global :obj:`batch_size` split over
    :obj:`world_size` ranks (``batch_size // world_size``).

    Raises:
        ConfigError: if :obj:`batch_size` is smaller than the world size.
    """
    if batch_size < world_size:
        raise ConfigError(
            f"Invalid config: data.batch_size={batch_size} is smaller than "
            f"the world size {world_size} (trainer.devices x "
            f"trainer.num_nodes); data.batch_size is the global batch, "
            f"split across ranks: use data.batch_size >= {world_size}.")
    return batch_size // world_size


class ThreadsPerProcess(pl.Callback):
    r"""Sets ``torch.set_num_threads(threads)`` in every training process
    once its rank is set up. Lightning's DDP launchers set
    ``cpu_count // num_processes`` threads otherwise (overriding the
    ``threads`` config); on small machines an explicit count per process
    (e.g. 1 thread x 2 ranks on 2 cores) avoids oversubscription."""
    def __init__(self, threads: int):
        self.threads = int(threads)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
              stage: Optional[str] = None) -> None:
        torch.set_num_threads(self.threads)


#: Test hook: ``PINSAGE_TEST_FAIL_RANK=<rank>:<step>[:kill]`` makes that
#: global rank fail when it is about to train the batch after ``<step>``
#: optimizer steps: it raises :class:`InjectedFailure`, or with ``:kill``
#: dies at once with ``SIGKILL`` (like the OOM killer). Used by the tests
#: to check that a dying rank fails the whole run; never set it otherwise.
FAIL_RANK_ENV = 'PINSAGE_TEST_FAIL_RANK'


class InjectedFailure(RuntimeError):
    r"""The failure raised by :class:`FailureInjection` (test hook)."""


class FailureInjection(pl.Callback):
    r"""Test hook: global rank :obj:`rank` fails at the start of the batch
    trained after :obj:`step` optimizer steps (``trainer.global_step ==
    step``), raising :class:`InjectedFailure` or, with :obj:`kill`, killing
    its own process with ``SIGKILL``. Built from the
    ``PINSAGE_TEST_FAIL_RANK=<rank>:<step>[:kill]`` environment variable by
    :meth:`from_env`, which every relaunched DDP rank inherits."""
    def __init__(self, rank: int, step: int, kill: bool = False):
        self.rank, self.step, self.kill = int(rank), int(step), bool(kill)

    @classmethod
    def from_env(cls) -> Optional['FailureInjection']:
        r"""The hook described by ``PINSAGE_TEST_FAIL_RANK``, or ``None``
        when it is unset or empty.

        Raises:
            ConfigError: if it is not of the form ``<rank>:<step>[:kill]``.
        """
        value = os.environ.get(FAIL_RANK_ENV, '').strip()
        if not value:
            return None
        parts = value.split(':')
        try:
            if len(parts) not in (2, 3) or parts[2:] not in ([], ['kill']):
                raise ValueError
            return cls(int(parts[0]), int(parts[1]), kill=len(parts) == 3)
        except ValueError:
            raise ConfigError(f"{FAIL_RANK_ENV}={value!r} must be "
                              f"<rank>:<step> or <rank>:<step>:kill, e.g. "
                              f"1:5 (a test hook; unset it to train "
                              f"normally).") from None

    def on_train_batch_start(self, trainer: pl.Trainer,
                             pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_rank != self.rank or \
                trainer.global_step != self.step:
            return
        if self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFailure(
            f"{FAIL_RANK_ENV}={self.rank}:{self.step}: injected failure on "
            f"rank {self.rank} at global step {self.step} (test hook)")
