r"""PinSage's whole embedding pipeline as Apache Spark jobs (see
docs/spark.md): importance neighbourhoods by random walks
(:mod:`~pinsage_pyg.inference.spark.walks`), the layer-wise embedding of
every item (:mod:`~pinsage_pyg.inference.spark.job`) and the end-to-end,
resumable pipeline from interactions to a faiss index
(:mod:`~pinsage_pyg.inference.spark.pipeline`).

Command line: ``python -m pinsage_pyg.inference.spark [embed] ...``
(layer-wise embedding of given neighbourhoods), ``... neighbors ...``
(importance neighbourhoods only) and ``... pipeline ...`` (everything).
"""
from pinsage_pyg.inference.spark.job import (  # noqa: F401
    MODEL_FORMAT, STATE_SCHEMA, _FS, default_num_groups, export_inputs,
    export_items, export_neighbors, group_keys, load_model, model_kwargs,
    pack_vectors, read_embeddings, save_model, spark_layerwise_embed,
    spark_session, unpack_vectors)
from pinsage_pyg.inference.spark.walks import (  # noqa: F401
    local_csr, spark_importance_neighbors)
from pinsage_pyg.inference.spark.pipeline import spark_pipeline  # noqa: F401
from pinsage_pyg.inference.spark.cli import main  # noqa: F401

__all__ = [
    'export_inputs', 'export_items', 'export_neighbors', 'load_model',
    'local_csr', 'main', 'model_kwargs', 'read_embeddings', 'save_model',
    'spark_importance_neighbors', 'spark_layerwise_embed', 'spark_pipeline',
    'spark_session',
]
