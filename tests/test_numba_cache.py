"""librosa's numba kernels load under an inter-process lock (numba#10128's cache race)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advaudio.features import numba_cache

REPO = Path(__file__).resolve().parents[1]

# Imports librosa (lazy: no kernels yet), says so, then imports advaudio.features.representations
# (the transforms' registry), which loads librosa.util.utils' kernels under the lock, and prints when it has.
CHILD = """
import sys, time
import librosa
assert "librosa.util.utils" not in sys.modules
print("ready", flush=True)
import advaudio.features.representations
assert "librosa.util.utils" in sys.modules
print("loaded", time.time(), flush=True)
"""


def test_kernels_wait_for_the_lock_another_process_holds():
    lock_path = numba_cache.cache_lock_path()
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
        try:
            assert child.stdout.readline().strip() == "ready"
            # Unlocked, the rest of the import takes about a second; locked, it waits.
            time.sleep(3.0)
            assert child.poll() is None, "the child finished while the lock was held"
            released = time.time()
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
        out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    word, when = out.split()
    assert word == "loaded" and float(when) >= released


def test_lock_sits_where_numba_writes_the_cache(monkeypatch, tmp_path):
    import numba

    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "numba"))
    assert numba_cache.cache_lock_path() == tmp_path / "numba" / numba_cache.LOCK_NAME
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    import librosa

    assert numba_cache.cache_lock_path().parent.parent == Path(librosa.__file__).parent


def test_lock_is_released_when_the_import_fails():
    with pytest.raises(ModuleNotFoundError):
        numba_cache.import_librosa_module("librosa.no_such_module")
    # Not left locked: a non-blocking exclusive lock succeeds at once.
    with open(numba_cache.cache_lock_path(), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
