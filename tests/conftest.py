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


@pytest.fixture(scope='module')
def dataset():
    r"""A small synthetic :class:`PinSageDataset` (40 users, 60 items,
    genres as the only feature), built once per test module (a module may
    define its own ``dataset`` instead)."""
    from pinsage_pyg.data import build_dataset
    from pinsage_pyg.data.features import FeatureSpec
    inter, items = synthetic_interactions(num_users=40, num_items=60,
                                          num_interactions=1200)
    return build_dataset(inter, items, FeatureSpec(
        multilabel_columns=['genres']), unknown_feature_items='embed')


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


#: The compiled extras of ``pip install --no-build-isolation '.[ext]'``.
EXT_INSTALL = ("pip install --no-build-isolation torch-scatter torch-sparse "
               "torch-cluster (after torch)")


@pytest.fixture
def require_ext():
    r"""``require_ext(module)``: skips the test when the optional compiled
    package :obj:`module` is not importable, with the command that installs
    it; with ``PINSAGE_REQUIRE_EXT=1`` (set by ``.ci/run``, which installs
    the ``[ext]`` extra) the test fails instead, so CI never skips the
    backend parity tests silently. pyg-lib (no PyPI wheels) always skips."""
    import importlib
    import os

    def _require(module: str):
        try:
            return importlib.import_module(module)
        except Exception as e:  # absent, or built against another torch
            reason = (f"{module} is not importable ({type(e).__name__}: "
                      f"{e}); it is an optional backend: {EXT_INSTALL}")
            if module == 'pyg_lib':
                pytest.skip("pyg_lib is not importable; it has no PyPI "
                            "wheels (see https://data.pyg.org/whl/)")
            if os.environ.get('PINSAGE_REQUIRE_EXT', '') not in ('', '0'):
                pytest.fail(reason + " -- PINSAGE_REQUIRE_EXT is set")
            pytest.skip(reason)
    return _require


def _require_spark_set() -> bool:
    import os
    return os.environ.get('PINSAGE_REQUIRE_SPARK', '') not in ('', '0')


@pytest.fixture(scope='session')
def spark():
    r"""One ``local[2]`` SparkSession for the whole test session (Spark's
    start-up costs seconds). Skips when pyspark (the ``[spark]`` extra) or
    Java 17+ is missing; with ``PINSAGE_REQUIRE_SPARK=1`` (set by
    ``make test SPARK=1`` and ``.ci/run``, which install both) the test
    fails instead, so CI never skips the Spark tests silently."""
    reason = None
    try:
        import pyspark  # noqa: F401
    except ImportError as e:
        reason = (f"pyspark is not importable ({e}): pip install "
                  f"'pinsage_pyg[spark]'")
    session = None
    if reason is None:
        from pinsage_pyg.inference.spark import spark_session
        try:
            session = spark_session('local[2]', shuffle_partitions=2)
        except Exception as e:  # no Java, or one that cannot start Spark
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            reason = (f"Spark could not start ({first}); it needs Java 17+ "
                      f"(JAVA_HOME or java on PATH; .ci/ensure-java installs"
                      f" it)")
    if reason is not None:
        if _require_spark_set():
            pytest.fail(reason + " -- PINSAGE_REQUIRE_SPARK is set",
                        pytrace=False)
        pytest.skip(reason)
    session.sparkContext.setLogLevel('ERROR')
    yield session
    session.stop()
