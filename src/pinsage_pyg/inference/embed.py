r"""The ``pinsage-embed`` job: a trained checkpoint + a dataset -> an
embeddings directory (the format of
:func:`~pinsage_pyg.inference.export.write_embeddings`), computed
layer-wise, out of core and resumably by
:func:`~pinsage_pyg.inference.layerwise.layerwise_embed`.

The output directory receives the final files only when every stage is
done; until then the partial results live in its ``.work/`` folder, which a
re-run with the same arguments resumes. ``embed.json`` (the run's manifest
and timings) is written last and marks a finished directory.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from omegaconf import DictConfig, OmegaConf

from pinsage_pyg.config import ConfigError
from pinsage_pyg.console import PROGRESS_MODES
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.export import (INDEX_KINDS, atomic_write,
                                          build_faiss_index,
                                          load_embeddings,
                                          save_faiss_index, save_npy,
                                          write_items_table)
from pinsage_pyg.inference.layerwise import (WorkDirMismatch,
                                             layerwise_embed, run_manifest)
from pinsage_pyg.nn import PinSage, upgrade_model_kwargs

log = logging.getLogger(__name__)

#: ``pinsage-train`` embeds with walks seeded ``seed + EVAL_GRAPH_OFFSET``
#: (:attr:`PinSageDataModule.eval_graph`); using the same seed reproduces
#: the training run's exported embeddings.
EVAL_GRAPH_OFFSET = 7919
DONE = 'embed.json'
#: ``graph=`` of ``pinsage-embed`` -> the dataset's ``holdout``: ``all``
#: embeds with every interaction of the given log (a newer log: nothing is
#: held out); ``train`` with its leave-last-out train split, the graph
#: ``pinsage-train`` evaluates and exports with (reproduces its
#: embeddings; an evaluation whose targets are the log's last interactions
#: needs it, or the targets would be in the graph).
GRAPHS = {'all': 'none', 'train': 'leave_last_out'}
MODEL_KEYS = ('in_channels', 'hidden_channels', 'out_channels', 'num_layers',
              'aggr', 'asymmetric', 'query_mode')


def resolve_checkpoint(path: Union[str, os.PathLike]) -> Path:
    r"""A ``.ckpt`` file, or a ``pinsage-train`` run directory: its best
    checkpoint, else ``checkpoints/last.ckpt``, else its only checkpoint.

    The best checkpoint is the file ``summary.json`` names, looked up in
    *this* directory's ``checkpoints/`` (by file name): a moved or copied
    run folder loads its own copy, never the original's through the
    absolute path recorded at training time."""
    p = Path(path).expanduser()
    if p.is_dir():
        ckpt_dir = p / 'checkpoints'
        summary = p / 'summary.json'
        if summary.is_file():
            try:
                saved = json.loads(summary.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as e:
                raise DataError(f"checkpoint='{path}': its summary.json is "
                                f"not readable JSON ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200]}); pass the "
                                f".ckpt file instead.") from None
            best = saved.get('best_checkpoint') if isinstance(saved, dict) \
                else None
            if best and (ckpt_dir / Path(str(best)).name).is_file():
                return ckpt_dir / Path(str(best)).name
        found = sorted(ckpt_dir.glob('*.ckpt')) if ckpt_dir.is_dir() else []
        last = ckpt_dir / 'last.ckpt'
        if last.is_file():
            return last
        if len(found) == 1:
            return found[0]
        raise DataError(f"checkpoint='{path}' is a directory without a "
                        f"checkpoint (expected summary.json or "
                        f"checkpoints/last.ckpt of a pinsage-train run); "
                        f"pass the .ckpt file.")
    if not p.exists():
        raise DataError(f"checkpoint='{path}' does not exist; pass the .ckpt "
                        f"file (or the run directory) of a pinsage-train "
                        f"run.")
    return p


def load_checkpoint(path: Union[str, os.PathLike],
                    return_features: bool = False):
    r"""Reads a ``pinsage-train`` (Lightning) checkpoint safely
    (``torch.load(weights_only=True)``): ``(model_kwargs, state_dict)``
    of its :class:`~pinsage_pyg.nn.PinSage`; with :obj:`return_features`
    also its feature schema ``{'feature_names', 'feature_stats'}``: the
    item feature names it was trained on and the raw statistics of the
    standardised ones (each :obj:`None` for a checkpoint written before
    it was stored). Logs the file it reads (see
    :func:`resolve_checkpoint`)."""
    path = resolve_checkpoint(path)
    log.info("checkpoint: %s", path.resolve())
    from pinsage_pyg.utils import safe_torch_load
    try:
        ckpt = safe_torch_load(path)
    except ValueError as e:  # corrupt, truncated, unsafe, not a checkpoint
        raise DataError(f"checkpoint '{path}' is not a readable PyTorch "
                        f"checkpoint ({e}). Use a .ckpt written by "
                        f"pinsage-train.") from None
    hp = ckpt.get('hyper_parameters') if isinstance(ckpt, dict) else None
    state = ckpt.get('state_dict') if isinstance(ckpt, dict) else None
    if not isinstance(hp, Mapping) or not isinstance(hp.get('model'),
                                                     Mapping) \
            or not isinstance(state, Mapping):
        raise DataError(f"checkpoint '{path}' has no PinSage hyper-parameters"
                        f" and weights (hyper_parameters.model, state_dict):"
                        f" use a .ckpt written by pinsage-train.")
    weights = {k[len('model.'):]: v for k, v in state.items()
               if k.startswith('model.')}
    if not return_features:
        return dict(hp['model']), weights
    schema = (ckpt.get('callbacks') or {}).get('FeatureSchema') or {}
    names, stats = schema.get('feature_names'), schema.get('feature_stats')
    return dict(hp['model']), weights, {
        'feature_names': None if names is None else [str(n) for n in names],
        'feature_stats': None if stats is None else dict(stats)}


def check_feature_schema(trained: Optional[Sequence[str]],
                         names: Sequence[str], dataset: str) -> None:
    r"""Refuses a dataset whose item feature columns differ from the ones
    the checkpoint was trained on (same count is not enough: a newer item
    table with another genre vocabulary or other columns would feed each
    weight a different feature). :obj:`trained` is :obj:`None` for a
    checkpoint without a stored schema (then only the count is checked,
    by :func:`build_model`)."""
    if trained is None or list(trained) == list(names):
        return
    missing = [n for n in trained if n not in set(names)]
    extra = [n for n in names if n not in set(trained)]
    if missing or extra:
        what = '; '.join(part for part in (
            f"missing {len(missing)} trained column(s), e.g. "
            f"{missing[:5]}" if missing else '',
            f"{len(extra)} column(s) the model never saw, e.g. {extra[:5]}"
            if extra else '') if part)
    else:
        what = "the same columns in another order"
    raise ConfigError(
        f"the item features of data '{dataset}' do not fit the checkpoint "
        f"({what}). Embed with the feature settings the model was trained "
        f"with (data.features.*, data.degree_feature, "
        f"data.recency_feature) and an item table with the same "
        f"vocabulary (e.g. every genre value the training table had, and "
        f"no new one); new items may be added, new feature values may "
        f"not.")


def build_model(kwargs: Mapping[str, Any], weights: Mapping[str, Any],
                num_features: int, expected: Mapping[str, Any] = ()
                ) -> PinSage:
    r"""The checkpoint's model, after checking it against the dataset's
    feature size and any model settings the config pins."""
    kwargs = upgrade_model_kwargs(kwargs)
    for key, value in dict(expected or {}).items():
        if key in kwargs and kwargs[key] != value:
            raise ConfigError(
                f"checkpoint/config mismatch: model.{key}={value!r} in the "
                f"config but the checkpoint was trained with "
                f"{kwargs[key]!r}. Drop the override or use the matching "
                f"checkpoint.")
    if kwargs.get('in_channels') not in (-1, num_features):
        raise ConfigError(
            f"checkpoint/config mismatch: the dataset has {num_features} "
            f"item features but the checkpoint expects "
            f"{kwargs.get('in_channels')}. Use the data config the model "
            f"was trained with (data.features.*, data.degree_feature, "
            f"data.recency_feature).")
    try:
        model = PinSage(**kwargs)
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        shape = {k: kwargs.get(k) for k in MODEL_KEYS}
        raise ConfigError(
            f"checkpoint's weights do not fit its saved model config "
            f"{shape} ({str(e).splitlines()[0][:300]}). The checkpoint is "
            f"damaged or was edited; use the one pinsage-train wrote."
        ) from None
    return model.eval()


def _plain(node) -> Dict[str, Any]:
    return {} if node is None else dict(OmegaConf.to_container(node))


def _check(cfg: DictConfig) -> None:
    from pinsage_pyg.config import check_keys
    check_keys(cfg, 'embed')
    for key in ('checkpoint', 'output.dir'):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"pinsage-embed needs {key}=... (see --help).")
    for key in ('chunk_size', 'walk_chunk_size', 'threads'):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"Invalid config: {key} must be an integer "
                              f">= 1 (got {v!r}).")
    budget = cfg.get('memory_budget_gib')
    if budget is not None and (isinstance(budget, bool) or not isinstance(
            budget, (int, float)) or not budget >= 0):
        raise ConfigError(f"Invalid config: memory_budget_gib must be a "
                          f"number >= 0 or null (got {budget!r}).")
    progress = cfg.get('progress')
    if not isinstance(progress, bool) and progress not in PROGRESS_MODES:
        raise ConfigError(f"Invalid config: progress must be one of "
                          f"{list(PROGRESS_MODES)} (got {progress!r}).")
    graph = cfg.get('graph')
    if not isinstance(graph, str) or graph not in GRAPHS:
        raise ConfigError(f"Invalid config: graph must be one of "
                          f"{list(GRAPHS)} (got {graph!r}): all "
                          f"interactions of the log, or its leave-last-out "
                          f"train split.")
    keep = cfg.get('keep')
    if keep is not None:
        kdir = Path(str(keep)).expanduser()
        if not (kdir / 'item_embeddings.npy').is_file():
            raise ConfigError(f"keep='{keep}' is not an embeddings directory "
                              f"(no item_embeddings.npy there): pass the "
                              f"output.dir of an earlier pinsage-embed or "
                              f"the embeddings/ of a pinsage-train run")
        if kdir.resolve() == Path(str(cfg.output.dir)).expanduser() \
                .resolve():
            raise ConfigError(f"keep='{keep}' is output.dir itself: write "
                              f"the update to another output.dir (then "
                              f"swap the directories), so that a crash "
                              f"never leaves a half-updated one")
    kind = cfg.output.index
    if kind not in (*INDEX_KINDS, 'none', None):
        raise ConfigError(f"Invalid config: output.index must be one of "
                          f"{[*INDEX_KINDS, 'none']} (got {kind!r}).")


def keep_previous(work: Path, item_ids, keep: Path,
                  asymmetric: bool) -> int:
    r"""The incremental update of ``keep=<dir>``: every item of
    :obj:`item_ids` that the embeddings directory :obj:`keep` holds gets
    its vectors from there (item and query side), unless it had no
    interactions there (``num_interactions`` 0 in its ``items.parquet``:
    embedded from its features alone, so re-embedded now with whatever
    this log holds); the others keep the newly computed ones in
    :obj:`work`'s final arrays (rewritten atomically; running it twice
    gives the same arrays). A directory without that column (written
    before it existed) keeps every item it lists. Items are matched by
    their id's string form. Returns how many items were kept."""
    import numpy as np
    import pandas as pd
    items, prev_item, prev_query = load_embeddings(keep)
    has_query = (keep / 'query_embeddings.npy').exists()
    if has_query != asymmetric:
        raise ConfigError(
            f"keep='{keep}' holds embeddings of a "
            f"{'n asymmetric' if has_query else ' symmetric'} model "
            f"({'with' if has_query else 'without'} query_embeddings.npy), "
            f"the checkpoint is {'asymmetric' if asymmetric else 'symmetric'}"
            f"; keep the embeddings of the same model (or drop keep=)")
    prev_ids = pd.Index(items['item_id'].astype(str))
    if prev_ids.has_duplicates:
        raise ConfigError(f"keep='{keep}': items.parquet lists item ids more "
                          f"than once; re-export that directory")
    pos = prev_ids.get_indexer(pd.Index(np.asarray(item_ids).astype(str)))
    if 'num_interactions' in items.columns:
        engaged = items['num_interactions'].to_numpy() > 0
        listed = pos >= 0
        pos[listed] = np.where(engaged[pos[listed]], pos[listed], -1)
    mask = pos >= 0
    for name, prev in (('item_embeddings.npy', prev_item),
                       ('query_embeddings.npy',
                        prev_query if has_query else None)):
        if prev is None:
            continue
        arr = np.load(work / name)
        if prev.shape[1] != arr.shape[1]:
            raise ConfigError(
                f"keep='{keep}' holds {prev.shape[1]}-dimensional {name}, "
                f"the checkpoint embeds {arr.shape[1]} dimensions; keep the "
                f"embeddings of the same model (or drop keep=)")
        arr[mask] = prev[pos[mask]]
        save_npy(work / name, arr)
    return int(mask.sum())


def run(cfg: DictConfig) -> Dict[str, Any]:
    r"""Embeds every item of ``cfg.data`` with ``cfg.checkpoint``; returns
    the summary written to ``embed.json``."""
    from pinsage_pyg.config import SamplerConfig
    from pinsage_pyg.sampler import BipartiteCSR
    from pinsage_pyg.training.pipeline import load_dataset
    _check(cfg)
    t0 = time.time()
    torch.set_num_threads(int(cfg.threads))
    kwargs, weights, schema = load_checkpoint(cfg.checkpoint,
                                              return_features=True)
    sampler = SamplerConfig(**dict(cfg.sampler))
    # Standardised with the training run's statistics (numeric columns,
    # log degree, recency; interaction features clipped to the trained
    # range), so a newer log with more items does not shift the others:
    ds = load_dataset(cfg.data, holdout=GRAPHS[cfg.graph],
                      feature_stats=schema['feature_stats'])
    check_feature_schema(schema['feature_names'], ds.feature_names, ds.name)
    model = build_model(kwargs, weights, ds.num_features,
                        _plain(cfg.get('model')))
    csr = BipartiteCSR.from_hetero(ds.hetero_data(cfg.data.get(
        'context_size')))
    seed = int(cfg.sampler_seed if cfg.sampler_seed is not None
               else int(cfg.seed) + EVAL_GRAPH_OFFSET)
    args = dict(num_neighbors=sampler.num_neighbors,
                num_walks=sampler.num_walks,
                walk_length=sampler.walk_length,
                restart_prob=sampler.restart_prob, seed=seed,
                window=sampler.window,
                chunk_size=int(cfg.chunk_size),
                walk_chunk_size=int(cfg.walk_chunk_size),
                extra_fingerprint={'dataset': ds.name},
                backend=sampler.resolve_backend())
    out = Path(cfg.output.dir)
    work = Path(cfg.output.work_dir) if cfg.output.work_dir else \
        out / '.work'
    overwrite = bool(cfg.output.overwrite)
    keep = cfg.get('keep')
    keep = None if keep is None else str(Path(str(keep)).expanduser()
                                         .resolve())
    manifest = None
    if (out / DONE).exists():
        manifest = run_manifest(model, ds.x, csr, **args)
        done = json.loads((out / DONE).read_text())
        if done.get('manifest') == manifest and done.get('keep') == keep \
                and not overwrite:
            print(f"{out} already holds these embeddings "
                  f"({ds.num_items} items); nothing to do.")
            return done
        if not overwrite:
            raise ConfigError(
                f"output.dir='{out}' holds embeddings of a different run "
                f"(another checkpoint, dataset or sampler setting). Choose "
                f"another output.dir or pass output.overwrite=true.")
    elif out.exists() and not overwrite and not work.exists() and any(
            p.name in ('item_embeddings.npy', 'items.parquet')
            for p in out.iterdir()):
        raise ConfigError(
            f"output.dir='{out}' holds embeddings that pinsage-embed did not "
            f"write; choose another output.dir or pass "
            f"output.overwrite=true.")
    if overwrite and (out / DONE).exists():
        (out / DONE).unlink()

    try:
        budget = cfg.get('memory_budget_gib')
        res = layerwise_embed(model, ds.x, csr, work, device=cfg.device,
                              keep_intermediate=False, overwrite=overwrite,
                              progress=cfg.progress,
                              memory_budget=None if budget is None
                              else int(float(budget) * 2**30), **args)
    except WorkDirMismatch as e:
        raise ConfigError(f"{e} (output.dir={out})") from None
    manifest = json.loads((work / 'manifest.json').read_text())
    kept = 0
    if keep is not None:
        kept = keep_previous(work, ds.item_ids, Path(keep), model.asymmetric)
        log.info('keep=%s: %d of %d items keep their vectors, %d newly '
                 'embedded', keep, kept, ds.num_items, ds.num_items - kept)

    # Move the finished arrays into place, then the table and index; the
    # done-marker comes last.
    out.mkdir(parents=True, exist_ok=True)
    for name in ('item_embeddings.npy', 'query_embeddings.npy'):
        if (work / name).exists():
            os.replace(work / name, out / name)
    if not model.asymmetric and (out / 'query_embeddings.npy').exists():
        (out / 'query_embeddings.npy').unlink()
    write_items_table(out, ds.item_ids, ds.item_info,
                      ds.item_degree().numpy())
    t_index = time.time()
    kind = cfg.output.index
    if kind not in (None, 'none'):
        import numpy as np
        emb = np.load(out / 'item_embeddings.npy', mmap_mode='r')
        params = _plain(cfg.output.get('index_params'))
        save_faiss_index(out / 'index.faiss',
                         build_faiss_index(emb, kind, **params))
    elif (out / 'index.faiss').exists():
        (out / 'index.faiss').unlink()
    index_seconds = time.time() - t_index
    seconds = time.time() - t0
    summary = {
        'dataset': ds.name, 'num_items': ds.num_items,
        'graph': cfg.graph, 'num_interactions': int(ds.train_item.numel()),
        'checkpoint': str(resolve_checkpoint(cfg.checkpoint)),
        'embed_seconds': round(res.seconds, 3),
        'items_per_second': round(ds.num_items / max(res.seconds, 1e-9), 1),
        'index': kind, 'index_seconds': round(index_seconds, 3),
        'total_seconds': round(seconds, 3),
        'chunks_resumed': res.chunks_resumed,
        'chunks_computed': res.chunks_computed,
        'manifest': manifest,
        'keep': keep, 'items_kept': kept,
    }
    text = json.dumps(summary, indent=2)
    atomic_write(out / DONE, lambda tmp: Path(tmp).write_text(text))
    if not cfg.output.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    resumed = (f", resumed {res.chunks_resumed} finished chunks"
               if res.chunks_resumed else '')
    print(f"embedded {ds.num_items} items in {res.seconds:.1f}s "
          f"({summary['items_per_second']:.0f} items/s{resumed}); "
          f"index={kind} in {index_seconds:.1f}s; embeddings in {out}")
    return summary
