"""The CPU provider's compiled kernels, and the threads they (and BLAS) run on.

Kernels come in families (``epilogue``, ``conv``, ``channels_last``, ``pool``, ``norm``,
``attention``), each a numba module here. :func:`load` hands out a family's C twin instead
where :mod:`ronn_cpu.native` builds it (the usual case: no LLVM in the process); the numba
module serves when it cannot, and for any call the C code declines. Each numba variant is
its own function compiled with ``cache=True``, so a process loads the machine code from
``__pycache__`` instead of compiling it. Nothing here imports numba or builds C: the kernel
modules call :func:`load` when a kernel first runs, so creating a session costs neither.

Threads. numba's OpenMP workers and OpenBLAS's workers must not spin against each other on
a small machine: ``OMP_WAIT_POLICY=PASSIVE`` is set (unless the user set it) before numba or
a C module starts libgomp's pool, the ``omp`` threading layer is chosen (safe under concurrent runs), and
kernels take their parallel variant only when more than one thread is allowed and their
work (about one unit per element and tap, more for exp-like math) reaches
:data:`PARALLEL_MIN`: waking sleeping workers costs tens of microseconds, and memory-bound
passes gain nothing from a second core here.
"""

from __future__ import annotations

import importlib
import os
import threading
from types import ModuleType
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: work below this runs the serial variant (about 100-300 us of serial work)
PARALLEL_MIN = 1 << 20

_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

#: threads the kernels may use (intra_op_num_threads; the machine's cores by default)
THREADS = max(1, _cores)

_modules: dict[str, ModuleType] = {}
_numba_threads: int | None = None  # None until numba is configured
_pool_size = 0  # numba's pool size, once configured
_local = threading.local()  # numba's thread count is per calling thread
_blas: Any = None


def cores() -> int:
    """The cores this process may run on."""
    return _cores


def load(name: str) -> ModuleType:
    """The kernels of family ``name``: the native (C) facade where it builds, else numba's."""
    module = _modules.get(name)
    if module is None:
        from .. import native

        module = native.facade(name) or load_numba(name)
        _modules[name] = module
    return module


def load_numba(name: str) -> ModuleType:
    """The numba kernel submodule ``name`` (importing numba on first use)."""
    _configure_numba()
    return importlib.import_module(f"{__name__}.{name}")


def _configure_numba() -> None:
    global _numba_threads
    if _numba_threads is not None:
        return
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        try:
            from numba.np.ufunc import omppool  # noqa: F401  (available: prefer it)

            numba.config.THREADING_LAYER = "omp"
        except ImportError:
            numba.config.THREADING_LAYER = "threadsafe" if _threadsafe_available() else "default"
    _numba_threads = 0
    _apply_numba_threads()


def _threadsafe_available() -> bool:
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
    except ImportError:
        return False
    return True


def _apply_numba_threads() -> None:
    global _numba_threads, _pool_size
    import numba

    _pool_size = numba.config.NUMBA_NUM_THREADS
    _numba_threads = max(1, min(THREADS, _pool_size))


def parallel(work: int) -> bool:
    """Whether a kernel doing ``work`` (elements times taps, or so) should run in parallel.

    When it should, and fewer threads than numba's pool are allowed, the calling thread's
    numba thread count is set first (numba keeps it per thread).
    """
    if THREADS <= 1 or work < PARALLEL_MIN:
        return False
    if _numba_threads is not None and _numba_threads != _pool_size and getattr(_local, "threads", None) != _numba_threads:
        import numba

        numba.set_num_threads(_numba_threads)
        _local.threads = _numba_threads
    return True


def set_threads(count: int | None) -> None:
    """Use ``count`` threads (None or 0: every core) for numba kernels and for BLAS.

    Process-wide, as BLAS's thread count is: the last session created decides.
    """
    global THREADS
    count = int(count or 0)
    THREADS = count if count > 0 else _cores
    _set_blas_threads(THREADS)
    if _numba_threads is not None:
        _apply_numba_threads()


def _set_blas_threads(count: int) -> None:
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            _blas = ThreadpoolController().select(user_api="blas")
        except Exception:  # noqa: BLE001  (no controllable BLAS: nothing to limit)
            _blas = False
    if _blas:
        _blas.limit(limits=count)  # applies now (the returned limiter is not needed)
