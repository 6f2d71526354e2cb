"""Features and predictions for many images, written to a resumable Parquet dataset.

The data flows one way, one module per step:

    inputs.py   DIR / GLOB / LIST  ->  (id, path) items, the id a hash of the path relative to its root
    job.py      paths  ->  decoded batch  ->  model outputs  ->  an Arrow table (one schema for every engine)
    dataset.py  the --out folder: a manifest, atomically written part files, the ids already done
    local.py    the single-machine stream: decoding in a thread pool overlapping inference, bounded memory
    command.py  the ``mobilenetv2 features|predict`` arguments and their run (local or ``--ray``)

pyarrow is the ``mobilenetv2[batch]`` extra; only job.py's tables and dataset.py import it, when called.
``mobilenetv2.ray`` runs job.py on Ray Data, ``mobilenetv2.dask`` on Dask.
"""


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the pip extra that brings it."""


def require(module, extra):
    """Import ``module`` or raise MissingExtra naming ``pip install 'mobilenetv2[extra]'``."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"this needs {module.split('.')[0]}, which is not installed "
                           f"(pip install 'mobilenetv2[{extra}]'): {exc}") from None
