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
