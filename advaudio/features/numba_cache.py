"""librosa's numba kernels, loaded under an inter-process lock.

librosa compiles its ``guvectorize`` kernels (``librosa.util.utils``,
``librosa.core.audio``, ...) with ``cache=True`` when their module is first
imported, and saves each kernel as two cache files. Two processes that compile
the same kernels at the same moment can leave halves from different processes
(numba issue #10128, unfixed in numba 0.68); every later process that loads
such a cache crashes with a segmentation fault, until the cache is deleted.
Featurize workers (Dask processes, SLURM jobs) start together and are often
the first to touch a fresh install's cache, so :func:`import_librosa_module`
serialises the first import across processes: one compiles and saves, the
others wait on the lock, then load what it saved.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

try:
    import fcntl
except ImportError:  # Windows: no flock; imports go unlocked
    fcntl = None

LOCK_NAME = "advaudio-numba.lock"


def cache_lock_path() -> Path:
    """Where the lock lives: the directory numba writes librosa's cache to.

    ``NUMBA_CACHE_DIR`` when set; else librosa's own ``__pycache__`` folders
    (numba's default for a writable install, so every process using this
    install shares it); else numba's per-user cache directory.
    """
    import librosa
    import numba

    if numba.config.CACHE_DIR:
        return Path(numba.config.CACHE_DIR) / LOCK_NAME
    package = Path(librosa.__file__).parent
    if os.access(package, os.W_OK):
        return package / "__pycache__" / LOCK_NAME
    try:
        from numba.misc.appdirs import user_cache_dir

        return Path(user_cache_dir(appname="numba", appauthor=False)) / LOCK_NAME
    except ImportError:
        return Path(tempfile.gettempdir()) / LOCK_NAME


@contextmanager
def cache_lock() -> Iterator[None]:
    """Hold the exclusive inter-process lock on librosa's numba cache.

    Where the lock file cannot be made (a read-only install without a
    writable cache directory, where numba cannot save either), goes unlocked.
    The kernel releases the lock of a process that dies holding it.
    """
    handle = None
    if fcntl is not None:
        path = cache_lock_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a")
        except OSError:
            handle = None
    try:
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        if handle is not None:
            handle.close()  # closing the file releases the lock


def import_librosa_module(name: str) -> ModuleType:
    """``importlib.import_module(name)``, compiling or loading its kernels under :func:`cache_lock`.

    A module already imported in this process is returned at once, without the lock.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    with cache_lock():
        return importlib.import_module(name)
