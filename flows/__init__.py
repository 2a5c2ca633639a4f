"""Prefect flows that orchestrate the engine's stages.

Parallelism comes from the flows' workers, so numpy's OpenBLAS runs single-threaded by default:
its idle threads otherwise spin on the other core and halve the AU back ends' throughput on a
2-core machine (measured: 22.5 -> 11.7 CPU ms per face for ``mesh``). Set
``OPENBLAS_NUM_THREADS`` to override; it must be set before numpy is imported.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
