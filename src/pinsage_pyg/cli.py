r"""Console entry points (Hydra apps). No training logic lives here."""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger('pinsage_pyg')


def _friendly(fn, cfg: DictConfig):
    from pinsage_pyg.config import ConfigError, check_config
    from pinsage_pyg.data.interactions import DataError
    try:
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


if __name__ == '__main__':
    train()
