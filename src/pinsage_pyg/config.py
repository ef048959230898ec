r"""Configuration checks that run before any heavy import or long work.

Every nonsensical value (wrong type, out of range, unknown choice) ends in
one :class:`ConfigError` naming the config key and what is allowed, and so
does every unknown or misspelt key (:func:`check_keys`,
:func:`check_override_keys`): Hydra lets ``+data.batchsize=16`` through
and the run would silently ignore it.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Tuple)


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


SAMPLER_DEVICES = ('cpu', 'cuda', 'auto')


@dataclass
class SamplerConfig:
    r"""Random-walk and negative-sampling settings (the ``sampler`` config
    group); see :func:`~pinsage_pyg.sampler.importance_neighbors`.

    :obj:`device` is where the importance neighbourhoods are computed (the
    item-user CSR, the random walks and the top-T selection): ``cpu``
    (default), ``cuda`` (the current CUDA device; a DDP rank's own GPU) or
    ``auto`` (``cuda`` if a CUDA GPU is visible, else ``cpu``). The
    resulting graph is always handed to the loader on the CPU; see
    :meth:`resolve_device`.

    :obj:`backend` is the random-walk kernel: ``auto`` (the fastest
    measured for that device among the installed ones, see
    :data:`~pinsage_pyg.sampler.walk_backends.AUTO_ORDER`), ``torch``,
    ``torch_cluster`` or ``pyg_lib``; see :meth:`resolve_backend`.

    :obj:`train_num_neighbors` (:math:`T_{train}`, default :obj:`None`:
    off) makes every training minibatch draw :math:`T_{train}` neighbours
    per node from its top-T by importance instead of taking all T (see
    :class:`~pinsage_pyg.sampler.PinSageSampler`); evaluation and
    inference keep the full top-T.
    """
    num_neighbors: int = 50
    num_walks: int = 100
    walk_length: int = 2
    restart_prob: float = 0.0
    num_negatives: int = 500
    shared_negatives: bool = True
    exclude_pairs: bool = True
    refresh_every_n_epochs: int = 1
    device: str = 'cpu'
    backend: str = 'auto'
    window: Optional[int] = None
    train_num_neighbors: Optional[int] = None

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
        if self.window is not None:
            _number(c, 'sampler.window', int, lambda v: v >= 1,
                    '>= 1 or null (null: walk anywhere in a user\'s '
                    'history)')
        if self.train_num_neighbors is not None:
            _number(c, 'sampler.train_num_neighbors', int,
                    lambda v: v >= 1, '>= 1 or null (null: the full top-T '
                    'neighbourhood in training batches)')
        _choice(c, 'sampler.device', SAMPLER_DEVICES)
        from pinsage_pyg.sampler.walk_backends import WALK_BACKENDS
        _choice(c, 'sampler.backend', WALK_BACKENDS)
        if self.device == 'cpu':
            self.resolve_backend()  # a missing package fails at start-up

    def resolve_backend(self) -> str:
        r"""The concrete walk backend for :meth:`resolve_device`.

        Raises:
            ConfigError: for a backend that is not installed for that
                device (with the command that installs it).
        """
        from pinsage_pyg.sampler.walk_backends import resolve_walk_backend
        try:
            return resolve_walk_backend(self.backend, self.resolve_device(),
                                        window=self.window)
        except ValueError as e:
            raise ConfigError(f"Invalid config: sampler.backend="
                              f"{self.backend}: {e}") from None

    def resolve_device(self):
        r"""The :class:`torch.device` type the walks run on:
        ``torch.device('cpu')``, or ``torch.device('cuda')`` (the current
        CUDA device) for ``cuda`` and for ``auto`` when a CUDA GPU is
        visible. Does not initialise CUDA.

        Raises:
            ConfigError: for ``sampler.device=cuda`` without a visible CUDA
                GPU.
        """
        import torch
        if self.device == 'cpu' or (self.device == 'auto'
                                    and not torch.cuda.is_available()):
            return torch.device('cpu')
        if not torch.cuda.is_available():
            raise ConfigError(
                f"Invalid config: sampler.device=cuda but no CUDA GPU is "
                f"visible (torch {torch.__version__}, CUDA build: "
                f"{torch.version.cuda or 'none'}); use sampler.device=cpu "
                f"or sampler.device=auto.")
        return torch.device('cuda')


@dataclass
class HardNegativeConfig:
    r"""Hard-negative mining settings (``curriculum.hard_negatives``).

    Attributes:
        band_start, band_end (float): the PPR rank band as fractions of the
            catalogue, capped at ranks ``band_max_start``/``band_max_end``
            (see :func:`~pinsage_pyg.sampler.band_ranks`; the defaults give
            the paper's 2000-5000 on large catalogues).
        method (str): PPR approximation, ``auto``, ``walk`` or ``power``
            (see :func:`~pinsage_pyg.sampler.ppr_topk`).
        restart_prob, walk_length, num_walks, num_iters: its settings
            (``num_walks: null``: about 32 visits per ranked item).
        seed (int): seed of the PPR walks (the band table is built once).
    """
    band_start: float = 0.02
    band_end: float = 0.05
    band_max_start: int = 2000
    band_max_end: int = 5000
    method: str = 'auto'
    restart_prob: float = 0.3
    walk_length: int = 8
    num_walks: Optional[int] = None
    num_iters: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        p = 'curriculum.hard_negatives'
        c = {'curriculum': {'hard_negatives': {
            f.name: getattr(self, f.name) for f in fields(self)}}}
        _number(c, f'{p}.band_start', float, lambda v: 0 <= v < 1,
                'in [0, 1) (a fraction of the catalogue)')
        _number(c, f'{p}.band_end', float,
                lambda v: self.band_start < v <= 1,
                f'in (band_start={self.band_start}, 1]')
        _number(c, f'{p}.band_max_start', int, lambda v: v >= 0, '>= 0')
        _number(c, f'{p}.band_max_end', int,
                lambda v: v > self.band_max_start,
                f'> band_max_start={self.band_max_start}')
        _choice(c, f'{p}.method', ('auto', 'walk', 'power'))
        _number(c, f'{p}.restart_prob', float, lambda v: 0 < v < 1,
                'in (0, 1)')
        _number(c, f'{p}.walk_length', int, lambda v: v >= 1, '>= 1')
        if self.num_walks is not None:
            _number(c, f'{p}.num_walks', int, lambda v: v >= 1,
                    '>= 1, or null (automatic)')
        _number(c, f'{p}.num_iters', int, lambda v: v >= 1, '>= 1')
        _number(c, f'{p}.seed', int, lambda v: True, 'an integer')


@dataclass
class Stage:
    r"""One curriculum stage: from epoch :obj:`start_epoch` (0-based) on,
    :obj:`hard_negatives` PPR hard negatives per example and, if set, a
    different max-margin :obj:`margin`."""
    start_epoch: int
    hard_negatives: int = 0
    margin: Optional[float] = None


@dataclass
class Curriculum:
    r"""PinSage's curriculum (Sec. 3.3): training starts with easy (shared
    uniform) negatives only and adds hard negatives stage by stage (the
    paper: epoch :math:`n` uses :math:`n - 1`). Stages must start at epoch
    0 and be strictly increasing; :meth:`stage_at` gives the stage of an
    epoch."""
    stages: List[Stage] = field(default_factory=lambda: [Stage(0)])
    name: str = 'custom'
    hard_negatives: HardNegativeConfig = field(
        default_factory=HardNegativeConfig)

    def __post_init__(self) -> None:
        self.stages = [s if isinstance(s, Stage) else _stage(i, s)
                       for i, s in enumerate(self.stages or [])]
        if isinstance(self.hard_negatives, Mapping):
            self.hard_negatives = HardNegativeConfig(**dict(
                self.hard_negatives))
        if not self.stages:
            raise ConfigError("Invalid config: curriculum.stages is empty; "
                              "give at least [{start_epoch: 0}].")
        if self.stages[0].start_epoch != 0:
            raise ConfigError(f"Invalid config: curriculum.stages[0]."
                              f"start_epoch must be 0 (got "
                              f"{self.stages[0].start_epoch}); every epoch "
                              f"needs a stage.")
        for i in range(1, len(self.stages)):
            a, b = self.stages[i - 1].start_epoch, self.stages[i].start_epoch
            if b <= a:
                raise ConfigError(
                    f"Invalid config: curriculum.stages must have strictly "
                    f"increasing start_epoch (stage {i - 1} starts at {a}, "
                    f"stage {i} at {b}): reorder them or remove the "
                    f"overlapping one.")

    @classmethod
    def from_config(cls, cfg: Optional[Mapping[str, Any]]) -> 'Curriculum':
        r"""From a ``curriculum`` config mapping (``None``: no
        curriculum); every value is checked."""
        if cfg is None:
            return cls(name='none')
        cfg = dict(cfg)
        return cls(stages=list(cfg.get('stages') or []),
                   name=str(cfg.get('name', 'custom')),
                   hard_negatives=dict(cfg.get('hard_negatives') or {}))

    def stage_at(self, epoch: int) -> Tuple[int, Stage]:
        r"""``(index, stage)`` active at (0-based) :obj:`epoch`."""
        idx = 0
        for i, s in enumerate(self.stages):
            if s.start_epoch <= epoch:
                idx = i
        return idx, self.stages[idx]

    @property
    def max_hard_negatives(self) -> int:
        return max(s.hard_negatives for s in self.stages)


def _stage(i: int, raw: Any) -> Stage:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"Invalid config: curriculum.stages[{i}] must be a "
                          f"mapping like {{start_epoch: 1, hard_negatives: "
                          f"1}} (got {raw!r}).")
    raw = dict(raw)
    unknown = set(raw) - {'start_epoch', 'hard_negatives', 'margin'}
    if unknown:
        raise ConfigError(f"Invalid config: curriculum.stages[{i}] has "
                          f"unknown keys {sorted(unknown)} (allowed: "
                          f"start_epoch, hard_negatives, margin).")
    c = {'curriculum': {'stages': {str(i): raw}}}
    p = f'curriculum.stages.{i}'
    _number(c, f'{p}.start_epoch', int, lambda v: v >= 0, '>= 0')
    raw.setdefault('hard_negatives', 0)
    _number(c, f'{p}.hard_negatives', int, lambda v: v >= 0, '>= 0')
    if raw.get('margin') is not None:
        _number(c, f'{p}.margin', float, lambda v: v >= 0, '>= 0')
    return Stage(int(raw['start_epoch']), int(raw['hard_negatives']),
                 None if raw.get('margin') is None else float(raw['margin']))


LOSSES = ('max_margin', 'softmax')
OPTIMIZER_DEFAULTS = dict(lr=1e-3, weight_decay=0.0, warmup_epochs=0.0,
                          decay=1.0, reference_batch_size=None,
                          ema_decay=None)


SOFTMAX_MODES = ('auto', 'full', 'sampled')
#: ``loss.mode=auto`` trains with the exact full softmax up to this many
#: items (``loss.full.max_items``' default). A full step costs
#: O(items^2) for its scores: 28 s at 20K items on 2 CPU cores, so the
#: default 450 steps take ~3.5 h there
#: (benchmarks/results/full_softmax_scaling.md).
FULL_SOFTMAX_MAX_ITEMS = 20000


def check_loss(loss: Mapping[str, Any]) -> None:
    r"""Checks a ``loss`` config (``name`` and its margin / temperature;
    for the softmax its ``mode`` and ``full`` / ``sampled`` options)."""
    c = {'loss': {'name': 'max_margin', **dict(loss)}}
    _choice(c, 'loss.name', LOSSES)
    if c['loss']['name'] == 'max_margin':
        c['loss'].setdefault('margin', 0.1)
        _number(c, 'loss.margin', float, lambda v: v >= 0,
                '>= 0 (the hinge margin Delta)')
        return
    c['loss'].setdefault('temperature', 0.05)
    _number(c, 'loss.temperature', float, lambda v: v > 0, '> 0')
    c['loss'].setdefault('mode', 'sampled')
    _choice(c, 'loss.mode', SOFTMAX_MODES)
    full = dict(c['loss'].get('full') or {})
    c['loss']['full'] = full
    for key, rule in (('steps_per_epoch', '>= 1'),
                      ('rows_per_step', '>= 1, or null (every query item '
                       'in every step)'),
                      ('chunk_rows', '>= 1, or null (automatic)'),
                      ('max_items', '>= 0 (loss.mode=auto: full softmax up '
                       'to this many items)'),
                      ('lr', '> 0, or null (optimizer.lr)'),
                      ('refresh_every_n_steps', '>= 1')):
        if full.get(key) is None and key != 'steps_per_epoch':
            continue
        full.setdefault(key, 1)
        _number(c, f'loss.full.{key}', float if key == 'lr' else int,
                (lambda v: v >= 0) if key == 'max_items' else
                (lambda v: v > 0) if key == 'lr' else
                (lambda v: v >= 1), rule)
    sampled = dict(c['loss'].get('sampled') or {})
    for key in ('in_batch_negatives', 'log_q'):
        if key in sampled and not isinstance(sampled[key], bool):
            raise ConfigError(f"Invalid config: loss.sampled.{key} must be "
                              f"true or false (got {sampled[key]!r}).")


def resolve_softmax_mode(loss: Mapping[str, Any], num_items: int,
                         hard_negatives: int = 0) -> Dict[str, Any]:
    r"""The ``loss`` config with ``mode: auto`` resolved: ``full`` (an
    exact softmax over every item, a full-graph forward per step) for a
    catalogue of at most ``full.max_items`` items (default
    :data:`FULL_SOFTMAX_MAX_ITEMS`) and no curriculum hard negatives,
    else ``sampled``. An explicit ``full`` with a curriculum that adds
    hard negatives is refused: every item already is a negative of every
    query in the full softmax, so hard negatives add nothing to it (use
    ``loss.mode=sampled`` or ``loss=max_margin`` for the paper's
    curriculum)."""
    out = dict(loss)
    if out.get('name') != 'softmax':
        return out
    mode = out.get('mode', 'sampled')
    limit = int((out.get('full') or {}).get('max_items',
                                            FULL_SOFTMAX_MAX_ITEMS))
    if mode == 'full' and hard_negatives > 0:
        raise ConfigError(
            "Invalid config: loss.mode=full with a curriculum that adds hard "
            "negatives: the full softmax already scores every item as a "
            "negative of every query. Use curriculum=none, or "
            "loss.mode=sampled / loss=max_margin for the curriculum.")
    if mode == 'auto':
        out['mode'] = 'full' if num_items <= limit and hard_negatives == 0 \
            else 'sampled'
    return out


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
    if c['optimizer']['ema_decay'] is not None:
        _number(c, 'optimizer.ema_decay', float, lambda v: 0 < v < 1,
                'in (0, 1), or null (no weight averaging)')


def check_config(cfg: Mapping[str, Any]) -> None:
    r"""Refuses unknown keys (:func:`check_keys`) and nonsensical values
    of a composed ``train`` config."""
    check_keys(cfg, 'train')
    pos = lambda v: v >= 1  # noqa: E731
    _number(cfg, 'model.hidden_channels', int, pos, '>= 1')
    _number(cfg, 'model.out_channels', int, pos, '>= 1')
    _number(cfg, 'model.num_layers', int, lambda v: v >= 0, '>= 0')
    _choice(cfg, 'model.aggr', ('importance', 'mean', 'max'))
    from pinsage_pyg.nn.model import QUERY_MODES
    _choice(cfg, 'model.query_mode', QUERY_MODES)
    _number(cfg, 'model.dropout', float, lambda v: 0 <= v < 1, 'in [0, 1)')
    _number(cfg, 'model.neighbor_dropout', float, lambda v: 0 <= v <= 1,
            'in [0, 1]')
    _number(cfg, 'model.feature_dropout', float, lambda v: 0 <= v <= 1,
            'in [0, 1]')
    check_loss(_get(cfg, 'loss'))
    check_optimizer(_get(cfg, 'optimizer'))
    _number(cfg, 'evaluate.k', int, pos, '>= 1')
    _number(cfg, 'data.batch_size', int, pos, '>= 1')
    _number(cfg, 'data.num_workers', int, lambda v: v >= 0, '>= 0')
    _number(cfg, 'data.positives.window', int, pos, '>= 1')
    positives = _get(cfg, 'data.positives')
    if positives.get('decay') is not None:
        _number(cfg, 'data.positives.decay', float, lambda v: 0 < v <= 1,
                'in (0, 1]')
    if positives.get('backward') is not None:
        _number(cfg, 'data.positives.backward', float, lambda v: v >= 0,
                '>= 0 (0: no backward pairs)')
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
    if 'progress' in cfg:
        _choice(cfg, 'progress', ('auto', 'bar', 'log'))
    _number(cfg, 'trainer.max_epochs', int, pos, '>= 1')
    if cfg.get('checkpoint') is not None:
        _number(cfg, 'checkpoint.every_n_train_steps', int, lambda v: v >= 0,
                '>= 0 (0: no periodic checkpoint)')
    resume = cfg.get('resume')
    if resume is not None and (not isinstance(resume, str) or not resume):
        raise ConfigError(f"Invalid config: resume must be a checkpoint path "
                          f"or null (got {resume!r}).")
    SamplerConfig(**dict(_get(cfg, 'sampler')))
    Curriculum.from_config(cfg.get('curriculum'))


# ------------------------------------------------------------ key schema ---
#: Config nodes that are passed on as keyword arguments: besides the keys
#: the packaged YAML files show, they accept the keyword parameters (with
#: a default) of the callable they feed, as ``(module, name)``.
KEYWORD_NODES: Dict[str, Tuple[str, str]] = {
    'trainer': ('lightning.pytorch', 'Trainer'),
    'evaluate.transition': ('pinsage_pyg.evaluation.baselines',
                            'transition_scorer'),
    'evaluate.transition_tuned': ('pinsage_pyg.evaluation.baselines',
                                  'transition_scorer'),
    'output.index_params': ('pinsage_pyg.inference.export',
                            'build_faiss_index'),
}
_PACKAGE_RE = re.compile(r'^#\s*@package\s+(\S+)')


def _configs_dir() -> Path:
    from pinsage_pyg import configs
    return Path(configs.__file__).parent


def _load_yaml(path: Path) -> Dict[str, Any]:
    import yaml
    doc = yaml.safe_load(path.read_text(encoding='utf-8'))
    return doc if isinstance(doc, dict) else {}


def _shape(node: Any) -> Any:
    r"""The key tree of a YAML node: a dict of sub-trees for a mapping
    (``{}``: a mapping open to any key), ``None`` for a leaf."""
    if isinstance(node, dict):
        return {str(k): _shape(v) for k, v in node.items()}
    return None


def _merge(a: Any, b: Any) -> Any:
    if not isinstance(a, dict):
        return b if isinstance(b, dict) else a
    if not isinstance(b, dict):
        return a
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if k in out else v
    return out


def _nest(path: str, tree: Dict[str, Any]) -> Dict[str, Any]:
    for part in reversed([p for p in path.split('.') if p]):
        tree = {part: tree}
    return tree


@functools.lru_cache(maxsize=None)
def config_groups(app: str) -> Tuple[str, ...]:
    r"""The config groups of the ``app`` (``train``, ``embed`` or
    ``recommend``) config: those of its defaults list, and top-level keys
    named like a group folder (``embed``'s ``model``)."""
    root = _configs_dir()
    primary = _load_yaml(root / f'{app}.yaml')
    groups: List[str] = []
    for entry in primary.get('defaults') or []:
        if isinstance(entry, dict):
            for key in entry:
                key = str(key)
                if not key.startswith('override ') and '/' not in key:
                    groups.append(key)
    groups += [k for k in primary if k != 'defaults' and (root / k).is_dir()]
    return tuple(dict.fromkeys(groups))


@functools.lru_cache(maxsize=None)
def config_schema(app: str) -> Dict[str, Any]:
    r"""Every valid key of the composed ``app`` config, as a key tree (see
    :func:`_shape`): the keys of ``configs/<app>.yaml`` and of *all*
    options of each of its groups, so that any key of any option is
    accepted whichever option is chosen, and keys added to the packaged
    YAML files are known without further code. ``hydra`` is left to
    Hydra."""
    root = _configs_dir()
    primary = _load_yaml(root / f'{app}.yaml')
    schema = _shape({k: v for k, v in primary.items()
                     if k not in ('defaults', 'hydra')})
    for group in config_groups(app):
        for path in sorted((root / group).rglob('*.yaml')):
            body = {k: v for k, v in _load_yaml(path).items()
                    if k != 'defaults'}
            package = group
            with open(path, encoding='utf-8') as f:
                for line in f:
                    if not line.startswith('#'):
                        break
                    m = _PACKAGE_RE.match(line)
                    if m:
                        package = m.group(1).replace('_group_', group)
            tree = _shape(body)
            if package != '_global_':
                tree = _nest(package, tree)
            schema = _merge(schema, tree)
    return schema


@functools.lru_cache(maxsize=None)
def _keyword_params(path: str) -> Tuple[str, ...]:
    module, name = KEYWORD_NODES[path]
    fn = getattr(importlib.import_module(module), name)
    return tuple(p.name for p in inspect.signature(fn).parameters.values()
                 if p.default is not inspect.Parameter.empty
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _all_paths(tree: Any, prefix: str = '') -> Iterable[str]:
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield prefix + k
            yield from _all_paths(v, f'{prefix}{k}.')


def _unknown_key(app: str, path: str, origin: str) -> ConfigError:
    schema = config_schema(app)
    candidates = list(_all_paths(schema))
    for node in KEYWORD_NODES:
        if path.startswith(node + '.'):
            candidates += [f'{node}.{p}' for p in _keyword_params(node)]
    parent, _, leaf = path.rpartition('.')
    siblings = [c for c in candidates if c.rpartition('.')[0] == parent]
    close = difflib.get_close_matches(
        leaf, [c.rpartition('.')[2] for c in siblings], n=1, cutoff=0.6)
    close = [f'{parent}.{c}' if parent else c for c in close]
    if not close:  # the key of another group, e.g. data.hidden_channels
        depth = path.count('.')
        others = {c.rpartition('.')[2]: c for c in candidates
                  if c.count('.') == depth}
        close = [others[c] for c in difflib.get_close_matches(
            leaf, list(others), n=1, cutoff=0.8)]
    valid = sorted({c.rpartition('.')[2] for c in candidates
                    if c.rpartition('.')[0] == parent})
    hint = (f"did you mean '{close[0]}'?" if close else
            f"valid keys{f' under {parent!r}' if parent else ''}: {valid}")
    return ConfigError(
        f"Invalid config: unknown key '{path}'{origin}; {hint} "
        f"(pinsage-{app} --cfg job lists every key with its value).")


def _check_path(app: str, parts: Sequence[str], origin: str) -> None:
    node: Any = config_schema(app)
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            return  # below a leaf (a list entry, a value): nothing to check
        here = '.'.join(parts[:i])
        if part in node:
            node = node[part]
            continue
        if here in KEYWORD_NODES:
            if part in _keyword_params(here):
                return
        elif not node and i > 0:
            return  # an open mapping such as embed's `model: {}`
        raise _unknown_key(app, '.'.join(parts[:i + 1]), origin)


def check_keys(cfg: Mapping[str, Any], app: str = 'train') -> None:
    r"""Refuses keys of a composed config that no packaged config knows
    (see :func:`config_schema`), naming the closest valid key.

    Args:
        cfg: The composed config (``DictConfig`` or mapping; interpolations
            are not resolved).
        app (str): ``train``, ``embed`` or ``recommend``.

    Raises:
        ConfigError: for the first unknown key.
    """
    from omegaconf import OmegaConf
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=False)

    def walk(node: Mapping[str, Any], parts: List[str]) -> None:
        for key, value in node.items():
            if not parts and key == 'hydra':
                continue
            path = [*parts, str(key)]
            _check_path(app, path, '')
            if isinstance(value, Mapping):
                walk(value, path)
    walk(cfg, [])


#: Hydra flags that take a value as the next argument.
_FLAGS_WITH_VALUE = {'--cfg', '-c', '--package', '-p', '--config-name',
                     '-cn', '--config-path', '-cp', '--config-dir', '-cd',
                     '--info', '-i', '--experimental-rerun'}


def check_override_keys(args: Sequence[str], app: str = 'train') -> None:
    r"""Refuses command-line overrides of unknown keys, with or without
    ``+`` (Hydra itself refuses ``data.batchsize=16`` with the advice to
    append it with ``+``, and then accepts ``+data.batchsize=16``, which
    nothing reads). Group selections (``data=files``), deletions and
    ``hydra.*`` are left to Hydra, as are overrides it cannot parse.

    Raises:
        ConfigError: naming the override and the closest valid key.
    """
    overrides, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith('-'):
            skip = arg in _FLAGS_WITH_VALUE
        elif '=' in arg:
            overrides.append(arg)
    if not overrides:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # a syntax error: Hydra reports it
        return
    groups = config_groups(app)
    for raw, o in zip(overrides, parsed):
        key = o.key_or_group
        if o.is_delete() or o.package is not None or '/' in key or \
                key == 'hydra' or key.startswith('hydra.') or \
                key.startswith('hydra/'):
            continue
        if '.' not in key and key in groups:
            continue  # a group option (data=files)
        _check_path(app, key.split('.'), f" (command line: '{raw}')")
