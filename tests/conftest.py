r"""Fixtures shared by several test modules."""
import pytest

from pinsage_pyg.data import synthetic_interactions


@pytest.fixture(scope='session')
def tiny_csv(tmp_path_factory):
    r"""A tiny synthetic interaction log + item table as CSV files, and the
    ``data=files`` overrides that read them (genres as the only feature)."""
    root = tmp_path_factory.mktemp('tiny_csv')
    inter, items = synthetic_interactions(num_users=60, num_items=80,
                                          num_interactions=1500)
    inter.to_csv(root / 'interactions.csv', index=False)
    items.to_csv(root / 'items.csv', index=False)
    return ['data=files', f'data.interactions={root / "interactions.csv"}',
            f'data.items={root / "items.csv"}',
            'data.unknown_feature_items=embed',
            'data.features.multilabel_columns=[genres]']


@pytest.fixture(scope='session')
def compose_train():
    r"""``compose_train(overrides)``: the ``train`` config composed with
    Hydra's compose API, as ``pinsage-train`` would see it."""
    from hydra import compose, initialize_config_module

    def _compose(overrides=()):
        with initialize_config_module(config_module='pinsage_pyg.configs',
                                      version_base='1.3'):
            return compose('train', overrides=list(overrides))
    return _compose
