r"""Approximate faiss indexes and recall against exact search."""
import faiss
import numpy as np
import pandas as pd
import pytest

from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.export import (build_faiss_index, recall_at_k,
                                          write_embeddings)
from pinsage_pyg.inference.recommend import Recommender


@pytest.fixture(scope='module')
def emb():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 16)).astype(np.float32)
    x = centers[rng.integers(0, 20, 3000)] + \
        0.6 * rng.standard_normal((3000, 16)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize('kind,params,cls', [
    ('flat', {}, faiss.IndexFlatIP),
    ('ivf', dict(nlist=20, nprobe=20), faiss.IndexIVFFlat),
    ('ivfpq', dict(nlist=20, nprobe=20, pq_m=8), faiss.IndexIVFPQ),
    ('hnsw', dict(hnsw_m=16, ef_search=64), faiss.IndexHNSWFlat),
])
def test_index_kinds_and_recall(emb, kind, params, cls):
    index = build_faiss_index(emb, kind, **params)
    assert isinstance(index, cls) and index.ntotal == 3000
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    recall = recall_at_k(index, emb, emb[:300], k=10)
    if kind in ('flat', 'ivf'):  # every cell visited: exact
        assert recall == 1.0
    elif kind == 'hnsw':
        assert recall > 0.95
    else:  # product quantisation loses precision
        assert 0.3 < recall < 1.0


def test_ivf_search_parameters_are_stored(emb, tmp_path):
    index = build_faiss_index(emb, 'ivf', nlist=30, nprobe=2)
    faiss.write_index(index, str(tmp_path / 'i.faiss'))
    back = faiss.read_index(str(tmp_path / 'i.faiss'))
    assert faiss.extract_index_ivf(back).nprobe == 2
    # Fewer cells visited than exist: recall below 1, but not useless.
    assert 0.3 < recall_at_k(back, emb, emb[:300]) < 1.0
    with pytest.raises(ValueError, match='kind'):
        build_faiss_index(emb, 'lsh')
    with pytest.raises(ValueError, match='nlist'):
        build_faiss_index(emb[:10], 'ivf', nlist=20)


def test_recommender_on_a_stored_approximate_index(emb, tmp_path):
    ids = np.array([f'i{k}' for k in range(3000)])
    write_embeddings(tmp_path, ids, emb, index_kind='hnsw',
                     index_params=dict(hnsw_m=16, ef_search=200))
    assert isinstance(faiss.read_index(str(tmp_path / 'index.faiss')),
                      faiss.IndexHNSWFlat)
    exact = Recommender.from_dir(tmp_path).recommend(['i1', 'i2'], k=5,
                                                     exclude=['i9'])
    approx = Recommender.from_dir(tmp_path, index='stored').recommend(
        ['i1', 'i2'], k=5, exclude=['i9'])
    pd.testing.assert_frame_equal(exact.drop(columns='score'),
                                  approx.drop(columns='score'))
    assert not {'i1', 'i2', 'i9'} & set(approx['item_id'])
    with pytest.raises(DataError, match="'exact' or 'stored'"):
        Recommender.from_dir(tmp_path, index='ivf')
    (tmp_path / 'index.faiss').unlink()
    with pytest.raises(DataError, match='no index.faiss'):
        Recommender.from_dir(tmp_path, index='stored')
