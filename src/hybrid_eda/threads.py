"""Thread counts that suit small machines.

On a 2-core machine two OpenMP threads made anemoi training steps 50x slower than one (oversubscription with
data-loader workers and other processes), so the ``hybrid-eda`` command pins the math libraries to one thread on
machines with few cores, unless the user already chose (any of the variables set, or ``--threads N``).
"""

from __future__ import annotations

import os

__all__ = ["THREAD_VARIABLES", "configure_threads"]

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

#: Machines with at most this many cores get one thread per process by default.
SMALL_MACHINE_CORES = 4


def configure_threads(threads: int | None = None, environ: dict[str, str] | None = None) -> int | None:
    """Set the math-library thread variables before numpy/torch/numba are imported.

    Parameters
    ----------
    threads : int, optional
        Explicit thread count (``--threads``); overrides the environment.
    environ : dict, optional
        Environment to modify (defaults to ``os.environ``).

    Returns
    -------
    int or None
        The thread count that was set, or ``None`` when the environment was left alone.
    """
    env = os.environ if environ is None else environ
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {threads}.")
    elif any(var in env for var in THREAD_VARIABLES):
        return None
    elif (os.cpu_count() or 1) <= SMALL_MACHINE_CORES:
        threads = 1
    else:
        return None
    for var in THREAD_VARIABLES:
        env[var] = str(threads)
    return threads
