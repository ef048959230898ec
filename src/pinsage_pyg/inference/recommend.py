r"""Item-to-item recommendation from a written embeddings directory.

Mirrors :meth:`torch_geometric.nn.models.LightGCN.recommend` (top-k over
inner products, given items excluded), with raw item ids in and out and
PyG's faiss-backed :class:`~torch_geometric.nn.pool.MIPSKNNIndex` for the
search.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.export import load_embeddings


class Recommender:
    r"""Top-k similar items for query items.

    Args:
        items (pandas.DataFrame): One row per embedding row, with column
            ``item_id`` (and optionally ``title``...), as written by
            :func:`~pinsage_pyg.inference.export.write_embeddings`.
        item_emb (np.ndarray): Candidate-side embeddings ``[I, d]``.
        query_emb (np.ndarray, optional): Query-side embeddings (asymmetric
            models); defaults to :obj:`item_emb`.
        faiss_index (optional): A prebuilt faiss index over
            :obj:`item_emb` (e.g. an approximate IVF/HNSW index read from
            ``index.faiss``) searched through PyG's
            :class:`~torch_geometric.nn.pool.KNNIndex` interface. Default:
            exact search (:class:`~torch_geometric.nn.pool.MIPSKNNIndex`).
    """
    def __init__(self, items: pd.DataFrame, item_emb: np.ndarray,
                 query_emb: Optional[np.ndarray] = None, faiss_index=None):
        from torch_geometric.nn.pool import KNNIndex, MIPSKNNIndex
        if len(items) != len(item_emb):
            raise DataError(f"{len(items)} item rows but {len(item_emb)} "
                            f"embeddings: the embeddings directory is "
                            f"inconsistent; re-run the export.")
        self.items = items.reset_index(drop=True)
        self.item_emb = torch.as_tensor(np.asarray(item_emb, np.float32))
        self.query_emb = self.item_emb if query_emb is None else \
            torch.as_tensor(np.asarray(query_emb, np.float32))
        self._row = pd.Index(self.items['item_id'].astype(str))
        if faiss_index is None:
            self.index = MIPSKNNIndex(self.item_emb)
        else:
            if faiss_index.ntotal != len(items):
                raise DataError(f"The faiss index holds {faiss_index.ntotal} "
                                f"vectors but there are {len(items)} items: "
                                f"re-run the export.")
            import faiss.contrib.torch_utils  # noqa: F401 (torch in/out)
            self.index = KNNIndex()
            self.index.index = faiss_index

    @classmethod
    def from_dir(cls, path: Union[str, os.PathLike],
                 index: str = 'exact') -> 'Recommender':
        r"""Loads an embeddings directory written by ``pinsage-train`` or
        ``pinsage-embed``.

        Args:
            index (str): ``'exact'`` (default: brute-force inner product) or
                ``'stored'`` (search the directory's ``index.faiss``, e.g. an
                approximate index written with ``output.index=hnsw``).
        """
        from pathlib import Path
        need = ['items.parquet', 'item_embeddings.npy']
        missing = [f for f in need if not (Path(path) / f).exists()]
        if missing:
            raise DataError(f"'{path}' is not an embeddings directory "
                            f"(missing {missing}). Point at the "
                            f"`embeddings/` folder of a pinsage-train run.")
        if index not in ('exact', 'stored'):
            raise DataError(f"index must be 'exact' or 'stored' (got "
                            f"{index!r}).")
        stored = None
        if index == 'stored':
            import faiss
            file = Path(path) / 'index.faiss'
            if not file.exists():
                raise DataError(f"'{path}' has no index.faiss; use "
                                f"index=exact or re-export with an index.")
            try:
                stored = faiss.read_index(str(file))
            except RuntimeError as e:  # faiss' C++ exception text
                lines = [ln for ln in str(e).splitlines() if ln.strip()]
                raise DataError(f"'{file}' is not a readable faiss index "
                                f"({lines[-1].strip()[:200] if lines else ''}"
                                f"); use index=exact or re-export with an "
                                f"index.") from None
        return cls(*load_embeddings(path), faiss_index=stored)

    @property
    def num_items(self) -> int:
        return len(self.items)

    def rows(self, item_ids: Iterable) -> np.ndarray:
        r"""Embedding rows of raw item ids; unknown ids are an error."""
        ids = [str(i) for i in item_ids]
        rows = self._row.get_indexer(ids)
        if (rows < 0).any():
            unknown = [i for i, r in zip(ids, rows) if r < 0]
            raise DataError(f"Unknown item id(s) {unknown[:5]}"
                            f"{' ...' if len(unknown) > 5 else ''}: not in "
                            f"the catalogue of {self.num_items} items.")
        return rows

    def recommend(self, item_ids: Sequence, k: int = 10,
                  exclude: Sequence = (), combine: bool = False
                  ) -> pd.DataFrame:
        r"""The :obj:`k` items most similar to each query item.

        Args:
            item_ids (sequence): Raw ids of the query items.
            k (int): Number of results per query.
            exclude (sequence): Raw ids never to return (the query items
                themselves are always excluded).
            combine (bool): Treat :obj:`item_ids` as one user's recent items
                and return one list for their mean query embedding.

        Returns:
            :class:`pandas.DataFrame` with columns ``query``, ``rank``,
            ``item_id``, ``score`` (and ``title`` etc. when known).
        """
        if len(item_ids) == 0:
            raise DataError("recommend: give at least one query item id.")
        q_rows = self.rows(item_ids)
        base = np.unique(self.rows(exclude))
        if combine:
            excl = [np.unique(np.concatenate([base, q_rows]))]
        else:
            excl = [np.unique(np.append(base, r)) for r in q_rows]
        available = self.num_items - max(len(e) for e in excl)
        if int(k) != k or k < 1 or k > available:
            raise DataError(f"recommend: k={k} must be an integer in [1, "
                            f"{available}] (the catalogue has "
                            f"{self.num_items} items, minus the excluded "
                            f"ones).")
        if k + max(len(e) for e in excl) > 2048:
            raise DataError(f"recommend: k={k} plus {max(map(len, excl))} "
                            f"excluded items exceeds faiss' limit of 2048 "
                            f"results per query; ask for fewer.")
        emb = self.query_emb[torch.as_tensor(q_rows)]
        if combine:
            emb = torch.nn.functional.normalize(emb.mean(0, keepdim=True),
                                                dim=-1)
            queries = [' + '.join(map(str, item_ids))]
        else:
            queries = [str(i) for i in item_ids]
        src = np.concatenate([np.full(len(e), j) for j, e in enumerate(excl)])
        exclude_links = torch.as_tensor(
            np.stack([src, np.concatenate(excl)]).astype(np.int64))
        score, index = self.index.search(emb, k, exclude_links=exclude_links)
        out = pd.DataFrame({
            'query': np.repeat(queries, k),
            'rank': np.tile(np.arange(1, k + 1), len(queries)),
            'item_id': self.items['item_id'].to_numpy()[index.view(-1)],
            'score': score.reshape(-1).numpy(),
        })
        for col in ('title', 'genres', 'year'):
            if col in self.items.columns:
                out[col] = self.items[col].to_numpy()[index.view(-1)]
        if 'year' in out.columns:
            out['year'] = pd.array(out['year'].round(), dtype='Int64')
        return out
