import numpy as np
import pandas as pd
import pytest
import torch

from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.export import load_embeddings, write_embeddings
from pinsage_pyg.inference.recommend import Recommender


@pytest.fixture
def emb_dir(tmp_path):
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(30, 8), dim=-1)
    ids = np.array([f'm{i}' for i in range(30)])
    info = pd.DataFrame({'title': [f'Movie {i}' for i in range(30)],
                         'year': np.arange(1970, 2000, dtype=float)},
                        index=pd.Index(ids, name='item'))
    write_embeddings(tmp_path / 'emb', ids, emb, info=info)
    return tmp_path / 'emb', emb


def test_written_files_roundtrip(emb_dir):
    path, emb = emb_dir
    items, item_emb, query_emb = load_embeddings(path)
    assert items['item_id'].tolist() == [f'm{i}' for i in range(30)]
    assert np.allclose(item_emb, emb.numpy()) and query_emb is item_emb
    import faiss
    index = faiss.read_index(str(path / 'index.faiss'))
    assert index.ntotal == 30
    # No temporary files are left behind by the atomic writes:
    assert not [p for p in path.iterdir() if p.name.endswith('.tmp')]


def test_recommend_matches_brute_force(emb_dir):
    path, emb = emb_dir
    rec = Recommender.from_dir(path)
    out = rec.recommend(['m3', 'm7'], k=5, exclude=['m0'])
    assert list(out.columns[:4]) == ['query', 'rank', 'item_id', 'score']
    for q in (3, 7):
        scores = emb @ emb[q]
        scores[[0, q]] = -np.inf
        top = torch.topk(scores, 5).indices.tolist()
        got = out[out['query'] == f'm{q}']
        assert got['item_id'].tolist() == [f'm{i}' for i in top]
        assert np.allclose(got['score'], scores[top].numpy(), atol=1e-5)
        assert got['title'].tolist() == [f'Movie {i}' for i in top]
    combined = rec.recommend(['m3', 'm7'], k=3, combine=True)
    assert len(combined) == 3 and not set(combined['item_id']) & {'m3', 'm7'}


def test_recommend_bad_input(emb_dir, tmp_path):
    rec = Recommender.from_dir(emb_dir[0])
    with pytest.raises(DataError, match="Unknown item id.*'nope'"):
        rec.recommend(['nope'])
    with pytest.raises(DataError, match='k=40'):
        rec.recommend(['m1'], k=40)
    with pytest.raises(DataError, match='at least one'):
        rec.recommend([])
    with pytest.raises(DataError, match='not an embeddings directory'):
        Recommender.from_dir(tmp_path)
