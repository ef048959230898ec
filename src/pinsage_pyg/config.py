r"""Configuration checks that run before any heavy import or long work.

Every nonsensical value (wrong type, out of range, unknown choice) ends in
one :class:`ConfigError` naming the config key and what is allowed.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping


class ConfigError(ValueError):
    r"""A configuration value makes no sense; the message names the key."""


def _get(cfg: Mapping[str, Any], path: str) -> Any:
    node: Any = cfg
    for part in path.split('.'):
        if node is None or part not in node:
            raise ConfigError(f"Invalid config: missing key '{path}'.")
        node = node[part]
    return node


def _number(cfg, path: str, kind: type, ok: Callable[[Any], bool],
            rule: str) -> None:
    value = _get(cfg, path)
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        is_num = is_num and float(value).is_integer()
    if not is_num or not ok(value):
        raise ConfigError(f"Invalid config: {path} must be {rule} "
                          f"({'an integer' if kind is int else 'a number'}; "
                          f"got {value!r}).")


def _choice(cfg, path: str, choices) -> None:
    value = _get(cfg, path)
    if value not in choices:
        raise ConfigError(f"Invalid config: {path} must be one of "
                          f"{list(choices)} (got {value!r}).")


@dataclass
class SamplerConfig:
    r"""Random-walk and negative-sampling settings (the ``sampler`` config
    group); see :func:`~pinsage_pyg.sampler.importance_neighbors`."""
    num_neighbors: int = 50
    num_walks: int = 100
    walk_length: int = 2
    restart_prob: float = 0.0
    num_negatives: int = 500
    shared_negatives: bool = True
    exclude_pairs: bool = True
    refresh_every_n_epochs: int = 1

    def __post_init__(self) -> None:
        c = {'sampler': {f.name: getattr(self, f.name)
                         for f in fields(self)}}
        _number(c, 'sampler.num_neighbors', int, lambda v: v >= 1,
                '>= 1 (the neighbourhood size T)')
        _number(c, 'sampler.num_walks', int, lambda v: v >= 1, '>= 1')
        _number(c, 'sampler.walk_length', int, lambda v: v >= 1, '>= 1')
        _number(c, 'sampler.restart_prob', float, lambda v: 0 <= v < 1,
                'in [0, 1)')
        _number(c, 'sampler.num_negatives', int, lambda v: v >= 1, '>= 1')
        _number(c, 'sampler.refresh_every_n_epochs', int, lambda v: v >= 0,
                '>= 0 (0: never)')


LOSSES = ('max_margin', 'softmax')
OPTIMIZER_DEFAULTS = dict(lr=1e-3, weight_decay=0.0, warmup_epochs=0.0,
                          decay=1.0, reference_batch_size=None)


def check_loss(loss: Mapping[str, Any]) -> None:
    r"""Checks a ``loss`` config (``name`` and its margin/temperature)."""
    c = {'loss': {'name': 'max_margin', **dict(loss)}}
    _choice(c, 'loss.name', LOSSES)
    if c['loss']['name'] == 'max_margin':
        c['loss'].setdefault('margin', 0.1)
        _number(c, 'loss.margin', float, lambda v: v >= 0,
                '>= 0 (the hinge margin Delta)')
    else:
        c['loss'].setdefault('temperature', 0.05)
        _number(c, 'loss.temperature', float, lambda v: v > 0, '> 0')


def check_optimizer(optimizer: Mapping[str, Any]) -> None:
    r"""Checks an ``optimizer`` config (missing keys take their defaults)."""
    c = {'optimizer': {**OPTIMIZER_DEFAULTS, **dict(optimizer)}}
    _number(c, 'optimizer.lr', float, lambda v: v > 0, '> 0')
    _number(c, 'optimizer.weight_decay', float, lambda v: v >= 0, '>= 0')
    _number(c, 'optimizer.warmup_epochs', float, lambda v: v >= 0, '>= 0')
    _number(c, 'optimizer.decay', float, lambda v: 0 < v <= 1, 'in (0, 1]')
    if c['optimizer']['reference_batch_size'] is not None:
        _number(c, 'optimizer.reference_batch_size', int, lambda v: v >= 1,
                '>= 1, or null (no linear scaling)')


def check_config(cfg: Mapping[str, Any]) -> None:
    r"""Refuses nonsensical values of a composed ``train`` config."""
    pos = lambda v: v >= 1  # noqa: E731
    _number(cfg, 'model.hidden_channels', int, pos, '>= 1')
    _number(cfg, 'model.out_channels', int, pos, '>= 1')
    _number(cfg, 'model.num_layers', int, lambda v: v >= 0, '>= 0')
    _choice(cfg, 'model.aggr', ('importance', 'mean', 'max'))
    _number(cfg, 'model.dropout', float, lambda v: 0 <= v < 1, 'in [0, 1)')
    check_loss(_get(cfg, 'loss'))
    check_optimizer(_get(cfg, 'optimizer'))
    _number(cfg, 'evaluate.k', int, pos, '>= 1')
    _number(cfg, 'data.batch_size', int, pos, '>= 1')
    _number(cfg, 'data.num_workers', int, lambda v: v >= 0, '>= 0')
    _number(cfg, 'data.positives.window', int, pos, '>= 1')
    _choice(cfg, 'data.source', ('movielens', 'files'))
    if cfg['data'].get('context_size') is not None:
        _number(cfg, 'data.context_size', int, pos,
                '>= 1, or null for one context per user')
    if _get(cfg, 'data.source') == 'files':
        try:
            log = cfg['data']['interactions']
        except Exception:  # OmegaConf's MissingMandatoryValue ('???')
            log = None
        if not log:
            raise ConfigError("Invalid config: data=files needs "
                              "data.interactions=<CSV/TSV/Parquet log>.")
    _number(cfg, 'threads', int, pos, '>= 1')
    _number(cfg, 'trainer.max_epochs', int, pos, '>= 1')
    SamplerConfig(**dict(_get(cfg, 'sampler')))
