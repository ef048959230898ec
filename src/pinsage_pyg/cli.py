r"""Console entry points (Hydra apps). No training logic lives here."""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger('pinsage_pyg')
# faiss logs which SIMD build it loads at INFO; that is noise for users.
logging.getLogger('faiss.loader').setLevel(logging.WARNING)


def _friendly(fn, cfg: DictConfig, app: str, check: bool = True):
    from pinsage_pyg.config import ConfigError, check_config, check_keys
    from pinsage_pyg.console import report_error
    from pinsage_pyg.data.interactions import DataError
    try:
        check_keys(cfg, app)  # e.g. `+data.batchsize=16`, read by nothing
        if check:
            check_config(cfg)  # fast: before the heavy imports of `fn`
        return fn(cfg)
    except (DataError, ConfigError) as e:
        # A user-caused problem: one clear message, no deep traceback.
        report_error(str(e))
        sys.exit(2)


def _check_command_line(app: str) -> None:
    r"""Refuses overrides of unknown keys before Hydra composes the config,
    so that ``data.batchsize=16`` and ``+data.batchsize=16`` end in the
    same error naming ``data.batch_size``."""
    from pinsage_pyg.config import ConfigError, check_override_keys
    try:
        check_override_keys(sys.argv[1:], app)
    except ConfigError as e:
        from pinsage_pyg.console import report_error
        report_error(str(e))
        sys.exit(2)


@hydra.main(version_base='1.3', config_path='configs', config_name='train')
def _train(cfg: DictConfig) -> None:
    from pinsage_pyg.console import single_console_logging
    from pinsage_pyg.training.pipeline import run
    single_console_logging()  # after `import lightning`
    _friendly(run, cfg, 'train')


def train() -> None:
    r"""``pinsage-train``: train PinSage, evaluate it next to the baselines,
    write item embeddings and a faiss index."""
    _check_command_line('train')
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
    _friendly(_recommend_job, cfg, 'recommend', check=False)


def recommend() -> None:
    r"""``pinsage-recommend``: top-k similar items (with titles) for query
    items, from the embeddings a ``pinsage-train`` run wrote."""
    _check_command_line('recommend')
    _recommend()


def _embed_job(cfg: DictConfig) -> None:
    from pinsage_pyg.inference.embed import run
    run(cfg)


@hydra.main(version_base='1.3', config_path='configs', config_name='embed')
def _embed(cfg: DictConfig) -> None:
    _friendly(_embed_job, cfg, 'embed', check=False)


def embed() -> None:
    r"""``pinsage-embed``: embed every item of a dataset with a trained
    checkpoint, layer-wise, out of core and resumable; writes an
    embeddings directory with a faiss index."""
    _check_command_line('embed')
    _embed()


if __name__ == '__main__':
    train()
