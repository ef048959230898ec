r"""``python -m pinsage_pyg.inference.spark``, and the application file
to ``spark-submit`` (``pinsage_pyg/inference/spark/__main__.py``)."""
from pinsage_pyg.inference.spark.cli import main

if __name__ == '__main__':
    main()
