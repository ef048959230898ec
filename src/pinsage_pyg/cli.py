r"""Console entry points (Hydra apps). No training logic lives here."""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger('pinsage_pyg')
# faiss logs which SIMD build it loads at INFO; that is noise for users.
logging.getLogger('faiss.loader').setLevel(logging.WARNING)


def _friendly(fn, cfg: DictConfig, check: bool = True):
    from pinsage_pyg.config import ConfigError, check_config
    from pinsage_pyg.data.interactions import DataError
    try:
        if check:
            check_config(cfg)  # fast: before the heavy imports of `fn`
        return fn(cfg)
    except (DataError, ConfigError) as e:
        # A user-caused problem: one clear message, no deep traceback.
        log.error('%s', e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base='1.3', config_path='configs', config_name='train')
def _train(cfg: DictConfig) -> None:
    from pinsage_pyg.training.pipeline import run
    _friendly(run, cfg)


def train() -> None:
    r"""``pinsage-train``: train PinSage, evaluate it next to the baselines,
    write item embeddings and a faiss index."""
    _train()


def _recommend_job(cfg: DictConfig) -> None:
    import pandas as pd
    from omegaconf import OmegaConf
    from pinsage_pyg.config import ConfigError
    from pinsage_pyg.inference.recommend import Recommender
    for key in ('embeddings', 'items'):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"pinsage-recommend needs {key}=... (see "
                              f"--help).")
    items = cfg['items']
    items = [items] if isinstance(items, (str, int)) else list(items)
    rec = Recommender.from_dir(cfg.embeddings,
                               index=cfg.get('index', 'exact'))
    out = rec.recommend(items, k=cfg.k, exclude=list(cfg.exclude),
                        combine=bool(cfg.combine))
    with pd.option_context('display.max_rows', None, 'display.width', 200):
        print(out.to_string(index=False, float_format=lambda v: f'{v:.4f}'))


@hydra.main(version_base='1.3', config_path='configs',
            config_name='recommend')
def _recommend(cfg: DictConfig) -> None:
    _friendly(_recommend_job, cfg, check=False)


def recommend() -> None:
    r"""``pinsage-recommend``: top-k similar items (with titles) for query
    items, from the embeddings a ``pinsage-train`` run wrote."""
    _recommend()


def _embed_job(cfg: DictConfig) -> None:
    from pinsage_pyg.inference.embed import run
    run(cfg)


@hydra.main(version_base='1.3', config_path='configs', config_name='embed')
def _embed(cfg: DictConfig) -> None:
    _friendly(_embed_job, cfg, check=False)


def embed() -> None:
    r"""``pinsage-embed``: embed every item of a dataset with a trained
    checkpoint, layer-wise, out of core and resumable; writes an
    embeddings directory with a faiss index."""
    _embed()


if __name__ == '__main__':
    train()
