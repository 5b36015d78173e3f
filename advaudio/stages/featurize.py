"""The featurize stage: audio clips → a feature store, computed by Dask.

The task graph is planned in one place (:func:`plan_featurize`: which shards
exist, which must be computed) and run in another (:func:`featurize_store`, on a
Dask distributed client or in-process). :func:`featurize` is ``advaudio featurize``
as a function (the options of :mod:`advaudio.stages.featurize_config`), which also
starts and stops a batch-job Dask cluster (``cluster="slurm"``). Each task featurizes one block of
clips and writes its own shard file — HDF5 has one writer per file — and a
final step links the shards into ``store.h5``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import json
import os
import sys
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advaudio import store as st
from advaudio.cluster import ClusterConfig, make_cluster
from advaudio.datasets import ClipTable, load_clip, read_dataset
from advaudio.datasets.audio import DURATION_POLICY  # recorded in the store's configuration
from advaudio.errors import AdvaudioError, AudioError, DatasetError, ParameterError, StoreError
from advaudio.features import FeatureConfig, compute_features, feature_shapes, provenance, representation_plugins
from advaudio.options import CommandResult, Values
from advaudio.progress import progress_bar
from advaudio.stages.featurize_config import FEATURIZE, FeaturizeConfig
from advaudio.threads import configure_threads
from advaudio.validation import integer

__all__ = ["FeaturizeConfig", "FeaturizeResult", "FeaturizeRun", "dask_client", "featurize", "featurize_shard",
           "featurize_store", "plan_featurize"]


@dataclass(frozen=True)
class ShardTask:
    """One unit of Dask work: featurize ``table.clips`` into ``path``."""

    shard: int
    path: str
    table: ClipTable  # only this shard's clips: tasks ship small
    start: int  # table index of the first clip
    features: FeatureConfig
    compression: str | None
    fingerprint: str


@dataclass
class FeaturizePlan:
    store_dir: Path
    table: ClipTable
    config: FeaturizeConfig
    fingerprint: str
    store_config: dict[str, Any]
    shard_files: list[str]
    tasks: list[ShardTask]  # shards still to compute
    complete: bool  # store.h5 already exists


@dataclass
class FeaturizeResult:
    store_dir: Path
    clips: int
    featurized: int
    errors: list[dict[str, Any]]
    shards_written: int
    shards_skipped: int
    seconds: float
    already_complete: bool = False

    @property
    def failed(self) -> int:
        return len(self.errors)


def _load_table(config: FeaturizeConfig) -> ClipTable:
    table = read_dataset(config.dataset, root=config.root, **config.dataset_options)
    if config.folds is not None or config.limit_per_class is not None:
        table = table.subset(folds=config.folds, limit_per_class=config.limit_per_class)
    if len(table) == 0:
        raise AdvaudioError(f"dataset {config.dataset!r} has no clips to featurize")
    where = f"dataset {config.dataset!r}" + (f" at {config.root}" if config.root else "")
    for name in table.classes:
        # A class name is a line of `store info`, a row of the report's CSV and a label of its figures.
        if not name.strip() or any(unicodedata.category(ch) == "Cc" for ch in name):
            raise DatasetError(f"{where}: class name {name!r} is empty or holds a control character (a newline, "
                               "a tab); rename it (its folder, or its entry in the metadata)")
    present = sorted({table.classes[c.label] for c in table.clips})
    if len(present) < 2:
        raise DatasetError(f"{where} has clips of {len(present)} class ({', '.join(map(repr, present))}): a classifier "
                           "needs at least 2 (the folder layout: one sub-folder per class)")
    return table


def plan_featurize(config: FeaturizeConfig, *, cache: str | os.PathLike = "cache") -> FeaturizePlan:
    """Resolve the dataset, the store directory and the shards still to compute.

    Shards already on disk under their final name are complete (they are
    renamed into place only when fully written) and are not recomputed.
    """
    table = _load_table(config)
    n_samples = int(round(table.duration * config.features.sr))
    store_config = {
        "featurize": config.to_dict(),
        "dataset_options": table.options,
        "duration": table.duration,
        "n_samples": n_samples,
        "duration_policy": DURATION_POLICY,
        "storage": {"compression": config.compression, "shard_size": config.shard_size},
        "format_version": st.FORMAT_VERSION,
        **provenance(),  # transform version, librosa version, chromagram path
    }
    plugins = featurize_plugins(config)
    if plugins:  # a plugin's version is part of what decides the numbers; absent key: built-ins only
        store_config["plugins"] = plugins
    fp = st.fingerprint({"config": store_config, "inputs": table.fingerprint_items()})
    store_dir = Path(cache) / f"{config.dataset}-{fp}"
    shard_files, tasks = [], []
    for shard, start in enumerate(range(0, len(table), config.shard_size)):
        rel = f"{st.SHARD_DIR}/{st.shard_name(shard)}"
        shard_files.append(rel)
        if (store_dir / rel).is_file():
            continue
        block = dataclasses.replace(table, clips=table.clips[start : start + config.shard_size])
        tasks.append(ShardTask(shard, str(store_dir / rel), block, start, config.features, config.compression, fp))
    return FeaturizePlan(
        store_dir=store_dir,
        table=table,
        config=config,
        fingerprint=fp,
        store_config=store_config,
        shard_files=shard_files,
        tasks=tasks,
        complete=(store_dir / st.MASTER_NAME).is_file(),
    )


def featurize_plugins(config: FeaturizeConfig) -> list[dict[str, str]]:
    """The plugins (dataset reader, representations) ``config`` uses, as the store records them."""
    from advaudio.datasets import DATASETS

    reader = DATASETS.plugin(config.dataset)
    return ([reader.record()] if reader else []) + representation_plugins(config.features.representations)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_THRESHOLD_BYTES = 16 << 20


@functools.cache
def _keep_transform_buffers_on_the_heap() -> bool:
    """Let glibc reuse a clip's ~1 MB transform buffers instead of mapping them anew.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also
    pins glibc's mmap threshold at 128 KiB: every STFT frame matrix is then
    mmapped, page-faulted in zeroed and unmapped, clip after clip (~15 000 page
    faults and 1.4-1.8x the time per clip, measured). Raising both thresholds
    to 16 MiB keeps them on the heap; memory above that is still returned.
    Set at run time because the worker is already running; a no-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MALLOC_THRESHOLD_BYTES)
                    and libc.mallopt(_M_TRIM_THRESHOLD, _MALLOC_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def _check_finite(features: dict[str, np.ndarray], y: np.ndarray) -> None:
    """AudioError unless every feature value is finite (e.g. float samples of 1e30 overflow the STFT)."""
    for name, array in features.items():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            peak = float(np.max(np.abs(y))) if y.size else 0.0
            raise AudioError(f"{bad} non-finite {name} values (peak |sample| {peak:.3g}: not audio in [-1, 1] "
                            "or too large for float32)")


def featurize_shard(task: ShardTask) -> dict[str, Any]:
    """Featurize one block of clips and write its shard (runs on a Dask worker).

    A clip that cannot be loaded or featurized is recorded with its reason;
    the others go on. Returns the shard's file, counts and checksum.
    """
    _keep_transform_buffers_on_the_heap()
    cfg = task.features
    n_samples = int(round(task.table.duration * cfg.sr))
    shapes = feature_shapes(cfg, n_samples)
    rows: list[tuple[int, Any, dict[str, np.ndarray]]] = []
    errors: list[tuple[int, str, str, str]] = []
    for offset, clip in enumerate(task.table.clips):
        index = task.start + offset
        try:
            y = load_clip(task.table, clip, sr=cfg.sr)
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked for below
                feats = compute_features(y, cfg)
            _check_finite(feats, y)
        except AdvaudioError as exc:  # a bad clip is data, not a crash
            errors.append((index, clip.clip_id, clip.path, str(exc)))
            continue
        rows.append((index, clip, feats))
    features = {
        name: (
            np.stack([r[2][name] for r in rows])
            if rows
            else np.zeros((0,) + shapes[name], np.float32)
        )
        for name in cfg.representations
    }
    digest = st.write_feature_shard(
        task.path,
        index=np.asarray([r[0] for r in rows], np.int64),
        clip_id=[r[1].clip_id for r in rows],
        label=np.asarray([r[1].label for r in rows], np.int64),
        fold=np.asarray([r[1].fold for r in rows], np.int64),
        clip_path=[r[1].path for r in rows],
        features=features,
        errors=errors,
        compression=task.compression,
        attrs={"fingerprint": task.fingerprint, "shard": task.shard, "start": task.start},
    )
    return {"shard": task.shard, "clips": len(rows), "errors": len(errors), "sha256": digest}


@contextlib.contextmanager
def dask_client(*, workers: int, scheduler: str | None = None, cluster=None,
                connect_timeout: float = 30.0) -> Iterator[Any]:
    """A distributed client: an existing scheduler, a given cluster, or local worker processes.

    A ``scheduler`` that cannot be reached within ``connect_timeout`` seconds is a ParameterError.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{connect_timeout}s")
        except (OSError, TimeoutError, ValueError, TypeError) as exc:  # refused, unreachable, malformed
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ParameterError(f"cannot reach the Dask scheduler at {scheduler!r}: {reason}") from None
        with client:
            yield client
        return
    if cluster is not None:
        with Client(cluster) as client:
            yield client
        return
    import dask

    # One thread per process: the transforms hold the GIL in places and
    # numpy/numba threads would oversubscribe the cores. No dashboard, so no
    # use for the workers' statistical profiler, which samples the computing
    # thread's stack every 10 ms (the workers take their config from here).
    with dask.config.set({"distributed.worker.profile.enabled": False}), LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=40,
    ) as local, Client(local) as client:
        yield client


def featurize_store(
    config: FeaturizeConfig,
    *,
    cache: str | os.PathLike = "cache",
    workers: int = 2,
    scheduler: str | None = None,
    cluster=None,
    progress: bool = True,
) -> FeaturizeResult:
    """Featurize a dataset into a store under ``cache`` (resumable).

    Parameters
    ----------
    config : what to compute (hashed into the store's directory name)
    cache : root directory of stores
    workers : local Dask worker processes; 0 runs every task in this process
    scheduler : address of a running Dask scheduler (overrides ``workers``)
    cluster : a Dask cluster object (e.g. dask-jobqueue's ``SLURMCluster``)
    progress : show a progress bar on standard error
    """
    t0 = time.perf_counter()
    integer("workers", workers, minimum=0)
    plan = plan_featurize(config, cache=cache)
    if plan.complete:
        store = st.Store(plan.store_dir)  # checked: a damaged store is refused, never reused
        if store.sealed:
            return FeaturizeResult(plan.store_dir, len(plan.table), len(store), store.errors, 0,
                                   len(plan.shard_files), time.perf_counter() - t0, already_complete=True)
    (plan.store_dir / st.SHARD_DIR).mkdir(parents=True, exist_ok=True)
    # One featurize run per store at a time: a second is told another is active (no work done twice).
    with st.exclusive_lock(plan.store_dir / st.LOCK_NAME, what=f"store {plan.store_dir}"):
        plan = plan_featurize(config, cache=cache)  # what is left now that no one else writes
        if plan.complete:  # another run finished it while this one waited
            store = st.Store(plan.store_dir)
            if store.sealed:
                return FeaturizeResult(plan.store_dir, len(plan.table), len(store), store.errors, 0,
                                       len(plan.shard_files), time.perf_counter() - t0, already_complete=True)
            # An earlier release's store (its shards just checked against its manifest):
            # linked again, it records the digests of store.h5 and of its manifest.
            if progress:
                print(f"{plan.store_dir}: recording the checksums of {st.MASTER_NAME} and {st.MANIFEST_NAME} "
                      "(written by an earlier release)", file=sys.stderr)
        st.remove_stale_tmp(plan.store_dir / st.SHARD_DIR)
        st.remove_stale_tmp(plan.store_dir)
        return _run_plan(plan, config, workers=workers, scheduler=scheduler, cluster=cluster, progress=progress,
                         t0=t0)


def _linked_digests(store_dir: Path) -> dict[str, str]:
    """Shard → sha256 in the store's manifest, when a readable one is left from an earlier link."""
    path = store_dir / st.MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        return {e["file"]: e["sha256"] for e in st.check_manifest(st.read_json_strict(path, what="manifest"), path)}
    except StoreError:
        return {}  # damaged too: the shards are hashed afresh


def _run_plan(plan: FeaturizePlan, config: FeaturizeConfig, *, workers: int, scheduler: str | None, cluster,
              progress: bool, t0: float) -> FeaturizeResult:
    """The pending tasks of ``plan``, then the manifest and master file (under the store's lock)."""
    pending = sum(len(t.table) for t in plan.tasks)
    digests: dict[int, str] = {}  # shard → sha256 of the file its task wrote
    with progress_bar(total=pending, desc="featurize", unit="clip", enabled=progress) as bar:
        if plan.tasks and (workers > 0 or scheduler or cluster is not None):
            from distributed import as_completed

            with dask_client(workers=workers, scheduler=scheduler, cluster=cluster) as client:
                if progress and (scheduler or cluster is not None) and getattr(client, "dashboard_link", None):
                    print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
                futures = client.map(featurize_shard, plan.tasks, pure=False)
                sizes = {f.key: len(t.table) for f, t in zip(futures, plan.tasks)}
                for future in as_completed(futures):
                    done = future.result()  # re-raises a worker's unexpected exception here
                    digests[done["shard"]] = done["sha256"]
                    bar.update(sizes[future.key])
        else:
            for task in plan.tasks:
                done = featurize_shard(task)
                digests[done["shard"]] = done["sha256"]
                bar.update(len(task.table))

    # Shards finished by an earlier, interrupted run are hashed from their files, and checked against
    # the manifest of an earlier link when there is one (store.h5 deleted to be relinked).
    previous = _linked_digests(plan.store_dir)
    manifest_shards, errors = [], []
    for shard, rel in enumerate(plan.shard_files):
        summary = st.read_shard_summary(plan.store_dir / rel)
        if summary["attrs"].get("fingerprint") != plan.fingerprint:
            raise StoreError(f"{plan.store_dir / rel} belongs to another store; delete it and rerun")
        digest = digests.get(shard) or st.sha256_file(plan.store_dir / rel)
        if shard not in digests and previous.get(rel, digest) != digest:
            raise StoreError(f"checksum mismatch: {plan.store_dir / rel} differs from its sha256 in "
                             f"{plan.store_dir / st.MANIFEST_NAME}; delete the shard and rerun to featurize "
                             "its clips again")
        manifest_shards.append({"file": rel, "clips": summary["clips"], "sha256": digest})
        errors.extend({"index": i, "clip_id": c, "path": p, "reason": r} for i, c, p, r in summary["errors"])
    attrs = {
        "classes": json.dumps(list(plan.table.classes)),
        "config": json.dumps(plan.store_config, sort_keys=True),
        "fingerprint": plan.fingerprint,
        "dataset": plan.config.dataset,
        "format_version": st.FORMAT_VERSION,
        "representations": json.dumps(list(config.features.representations)),
    }
    manifest = {
        "fingerprint": plan.fingerprint,
        "dataset": plan.config.dataset,
        "clips": len(plan.table),
        "shards": manifest_shards,
        "errors": errors,
    }
    st.link_master(plan.store_dir, plan.shard_files, attrs=attrs, manifest=manifest,
                   representations=list(config.features.representations))
    return FeaturizeResult(
        store_dir=plan.store_dir,
        clips=len(plan.table),
        featurized=len(plan.table) - len(errors),
        errors=errors,
        shards_written=len(plan.tasks),
        shards_skipped=len(plan.shard_files) - len(plan.tasks),
        seconds=time.perf_counter() - t0,
    )


@dataclass
class FeaturizeRun(CommandResult):
    """What :func:`featurize` did: :attr:`path` is the store's directory, :attr:`result` the counts
    (clips, featurized, failed with their reasons, shards written and resumed)."""

    result: FeaturizeResult | None = None
    allow_errors: bool = False

    def lines(self) -> list[str]:
        r = self.result
        if r.already_complete:
            out = [f"store already complete: {r.featurized} clips, {r.failed} failed"]
        else:
            out = [f"featurized {r.featurized}/{r.clips} clips in {r.seconds:.1f} s ({r.shards_written} shards "
                   f"written, {r.shards_skipped} resumed), {r.failed} failed"]
        out += [f"  failed: {err['path']}: {err['reason']}" for err in r.errors[:10]]
        if r.failed > 10:
            out.append(f"  … and {r.failed - 10} more (advaudio store info)")
        return out

    @property
    def exit_status(self) -> int:
        return 1 if self.result.failed and not self.allow_errors else 0


@FEATURIZE.function(FeaturizeRun)
def featurize(v: Values) -> FeaturizeRun:

    config = FeaturizeConfig(**v.config(), features=FeatureConfig(**v.config("features")))
    cluster_config = None
    if v.cluster is not None:
        if v.scheduler is not None:
            raise ParameterError("featurize: --cluster and --scheduler exclude each other")
        cluster_config = ClusterConfig(kind=v.cluster, **v.config("cluster"))
    integer("workers", v.workers, minimum=0)
    configure_threads(v.threads)
    with contextlib.ExitStack() as stack:
        # Closing the cluster (on return, error or Ctrl-C) cancels its jobs.
        cluster = stack.enter_context(make_cluster(cluster_config)) if cluster_config is not None else None
        result = featurize_store(config, cache=v.cache, workers=v.workers, scheduler=v.scheduler, cluster=cluster,
                                 progress=v.progress)
    return FeaturizeRun(Path(result.store_dir), result=result, allow_errors=v.allow_errors)
