"""Adversarial retraining and the round loop.

:func:`retrain` trains on the clean training folds plus adversarial shards
(their *true* labels), a fixed fraction of every batch adversarial.
:func:`run_rounds` chains attack-on-test → attack-on-train → retrain →
attack-on-test for K rounds in one run directory::

    RUN_DIR/checkpoint.pt, metrics.json          round 0 (clean training)
    RUN_DIR/attack-round00-test.json             robustness of round 0
    RUN_DIR/attack-round00-train.json            retraining data for round 1
    RUN_DIR/round01/checkpoint.pt, metrics.json  round 1 (retrained)
    RUN_DIR/round01/attack-round01-test.json …

(names: :mod:`advaudio.layout`).

Each step is skipped when its output is already complete, so an interrupted
loop resumes at the step where it stopped (a half-trained round resumes
from its last epoch).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advaudio import layout, validation
from advaudio import store as st
from advaudio.errors import DamagedFileError, ParameterError, StoreError
from advaudio.store.documents import read_attack_results, read_metrics

MODES = ("fine-tune", "from-scratch")


@dataclass(frozen=True)
class RetrainConfig:
    """How a round retrains.

    Parameters
    ----------
    mix : fraction of every training batch drawn from the adversarial shards
    epochs : epochs of the retraining run (None: as many as the original run)
    mode : ``"fine-tune"`` starts from the checkpoint's weights (and view);
        ``"from-scratch"`` re-initialises the model with the original recipe
    lr : peak learning rate (None: the original run's; fine-tuning uses a tenth of it)
    """

    mix: float = 0.5
    epochs: int | None = None
    mode: str = "fine-tune"
    lr: float | None = None

    def __post_init__(self):
        if not 0.0 < self.mix < 1.0:
            raise ParameterError(f"mix must be in (0, 1), got {self.mix}")
        validation.choice("mode", self.mode, MODES)
        if self.epochs is not None:
            validation.integer("epochs", self.epochs)
        if self.lr is not None:
            validation.finite_float("lr", self.lr, positive=True)


def checkpoint_round(checkpoint) -> int:
    """Round of a loaded checkpoint (0 for a model trained on clean data only)."""
    return int((checkpoint.config.get("provenance") or {}).get("round", 0))


def find_shards(store: st.Store, *, checkpoint_sha: str, round: int, split: str = "train") -> list[Path]:
    """Registered adversarial shards made from ``checkpoint_sha`` in ``round`` on ``split``."""
    found = []
    for path in store.adversarial_shards():
        shard = st.AdversarialShard.open(path)
        sl = shard.attr("slice")
        # A job array's slices enter training through their merged shard only.
        sliced = isinstance(sl, list) and sl[1] > 1
        if (shard.attr("checkpoint_sha256") == checkpoint_sha and int(shard.attr("round", -1)) == round
                and shard.attr("split") == split and not sliced):
            found.append(path)
    return found


# What must agree between the view a shard was made in and the view it is trained in.
_VIEW_KEYS = ("name", "representations", "output_shape", "normalisation")


def inspect_shards(shards: list[Path], *, store: st.Store, held_out_folds: set[int],
                   view: Mapping[str, Any] | None = None, checkpoint_sha: str | None = None,
                   require_provenance: bool = True) -> list[dict[str, Any]]:
    """Provenance of each shard, after every check that keeps damaged or foreign inputs out of training.

    A shard is refused (StoreError naming it) when

    * its checksum does not match the one written beside it, or its inputs lie outside [0, 1];
    * it was made from another store, in another ``view`` (model space), or — when
      ``checkpoint_sha`` is given — by another checkpoint;
    * it holds a clip of a held-out fold: only clips of the training folds may enter
      training, a shard with any test (or validation) clip would leak it.

    ``require_provenance=False`` (``train --extra``) also accepts a plain HDF5 file of
    model-space inputs without advaudio's provenance (no ``fold`` dataset, no store
    fingerprint); it is still checked for its range, and for whatever provenance it has.
    """
    records = []
    for path in shards:
        shard = st.AdversarialShard.open(path)
        if "adversarial" not in shard:
            raise StoreError(f"{path} is not an advaudio adversarial shard (no 'adversarial' dataset)")
        has_provenance = "fold" in shard or shard.attr("store_fingerprint") is not None
        if require_provenance and ("fold" not in shard or shard.attr("store_fingerprint") is None):
            raise StoreError(f"{path} is not an advaudio adversarial shard (no fold or store fingerprint)")
        if has_provenance or st.AdversarialShard.recorded_sha256(path) is not None:
            digest = shard.verify()  # an attack shard without its checksum file is not a complete one
        else:
            digest = st.sha256_file(path)
        if shard.attr("store_fingerprint") is not None:
            st.check_same_store(store, shard.attr("store_fingerprint"), what=f"adversarial shard {path}")
        made_in = shard.attr("view")
        if view is not None and isinstance(made_in, Mapping):
            differ = [k for k in _VIEW_KEYS if k in made_in and made_in.get(k) != view.get(k)]
            if differ:
                raise StoreError(f"{path} was made in view {made_in.get('name')!r} "
                                 f"{made_in.get('output_shape')}, not in the model's view {view.get('name')!r} "
                                 f"{view.get('output_shape')} (differs in {', '.join(differ)})")
        if checkpoint_sha is not None and shard.attr("checkpoint_sha256") not in (None, checkpoint_sha):
            raise StoreError(f"{path} was made by checkpoint {str(shard.attr('checkpoint_sha256'))[:10]}…, not by "
                             f"the one being retrained ({checkpoint_sha[:10]}…)")
        arrays = shard.read([k for k in ("fold", "success") if k in shard])
        if "fold" in arrays:
            folds = set(int(k) for k in np.unique(arrays["fold"]))
            leaked = sorted(folds & held_out_folds)
            if leaked:
                raise StoreError(
                    f"{path} holds clips of held-out fold(s) {leaked} (split {shard.attr('split')!r}): "
                    "refusing to train on them, test data must not leak into training"
                )
        low, high = _value_range(shard)
        if not (0.0 <= low and high <= 1.0):
            raise StoreError(f"{path} holds inputs in [{low:.4g}, {high:.4g}]; model inputs lie in [0, 1] "
                             "(a damaged or foreign file)")
        records.append({
            "path": str(Path(path).resolve()),
            "sha256": digest,
            "attack": str(shard.attr("attack")),
            "norm": str(shard.attr("norm")),
            "budget": float(shard.attr("budget", np.nan)),
            "fooling_rate": float(shard.attr("fooling_rate", np.nan)),
            "round": int(shard.attr("round", -1)),
            "samples": shard.size,
            "successful": int(np.asarray(arrays["success"]).sum()) if "success" in arrays else None,
        })
    return records


def _value_range(shard: st.AdversarialShard) -> tuple[float, float]:
    """(min, max) of a shard's inputs, read a block of samples at a time; NaN counts as out of range."""
    low, high = np.inf, -np.inf
    with shard.open_file() as f:
        ds = f["adversarial"]
        for start in range(0, ds.shape[0], 256):
            block = np.asarray(ds[start:start + 256])
            if block.size:
                if not np.isfinite(block).all():
                    return float("nan"), float("nan")
                low, high = min(low, float(block.min())), max(high, float(block.max()))
    return (0.0, 0.0) if low > high else (low, high)


def retrain(
    checkpoint: str | Path,
    *,
    out_dir: str | Path,
    config: RetrainConfig = RetrainConfig(),
    shards: list[str | Path] | None = None,
    round: int | None = None,
    store: str | Path | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Retrain ``checkpoint``'s model with adversarial shards; returns the new metrics.

    ``shards`` names the shards explicitly; otherwise every training-split shard
    made from this checkpoint in ``round`` (default: the checkpoint's round) is
    used. The new checkpoint records, in its training configuration's
    ``provenance``, the round it starts and each shard's attack, budget and hash.
    """
    from advaudio.data import ModelSpaceSource
    from advaudio.training import TrainConfig, load_checkpoint, train

    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    base = TrainConfig.from_dict(ckpt.config)
    feature_store = st.Store(store if store is not None else base.store)
    st.check_same_store(feature_store, ckpt.store_fingerprint, what=f"checkpoint {checkpoint}")
    source_round = checkpoint_round(ckpt) if round is None else round
    if shards is None:
        shards = find_shards(feature_store, checkpoint_sha=st.sha256_file(checkpoint), round=source_round)
        if not shards:
            raise StoreError(
                f"no training-split adversarial shards of round {source_round} for {checkpoint} in "
                f"{feature_store.directory}; run `advaudio attack --split train --round {source_round}` first"
            )
    held_out = {f for f in (ckpt.split.get("test_fold"), ckpt.split.get("val_fold")) if f is not None}
    records = inspect_shards([Path(s) for s in shards], store=feature_store,
                             held_out_folds={int(f) for f in held_out}, view=ckpt.view.to_dict(),
                             checkpoint_sha=st.sha256_file(checkpoint))
    if records and all(r["successful"] == 0 for r in records):  # nothing adversarial to mix in
        raise StoreError(f"the round-{source_round} training-split attacks fooled none of their clips "
                         f"({', '.join(r['attack'] for r in records)}; a model that classifies few training "
                         "clips correctly leaves little to attack): nothing to retrain with")
    lr = config.lr if config.lr is not None else (base.lr / 10 if config.mode == "fine-tune" else base.lr)
    new_config = dataclasses.replace(
        base,
        store=str(feature_store.directory),
        epochs=config.epochs or base.epochs,
        lr=lr,
        device=device or base.device,
        extra_sources=tuple(ModelSpaceSource(r["path"]) for r in records),
        mix=config.mix,
        init_checkpoint=str(checkpoint.resolve()) if config.mode == "fine-tune" else None,
        provenance={
            "round": source_round + 1,
            "parent_checkpoint": str(checkpoint.resolve()),
            "parent_sha256": st.sha256_file(checkpoint),
            "mode": config.mode,
            "mix": config.mix,
            "shards": records,
        },
    )
    return train(new_config, out_dir=out_dir, resume=resume, progress=progress)


# --------------------------------------------------------------------------- #
# Rounds
# --------------------------------------------------------------------------- #
def is_complete_run(directory: Path) -> bool:
    metrics = layout.metrics_path(directory)
    if not layout.checkpoint_path(directory).is_file() or not metrics.is_file():
        return False
    try:
        return bool(read_metrics(metrics).get("complete"))
    except StoreError:  # damaged: not complete; training with resume rewrites it from the checkpoint
        return False


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``: the options' leaves by dotted name."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _check_rounds_options(run_dir: Path, *, attack_config, retrain_config: RetrainConfig,
                          train_limit: int | None) -> None:
    """Record the options of the first ``rounds`` in ``run_dir``; refuse a rerun with others.

    A rerun skips finished steps, so changed options would silently mix results of two
    settings; only the number of rounds may change (more rounds extend the run).
    """
    attack = attack_config.to_dict()
    for key in ("split", "round", "slice"):  # set per step by the loop
        attack.pop(key, None)
    options = st.jsonable({"attack": attack, "retrain": dataclasses.asdict(retrain_config),
                           "train_limit": train_limit})
    path = layout.rounds_options_path(run_dir)
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = None
        if before is not None and before != options:
            old, new = _flatten(before), _flatten(options)
            detail = "; ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}"
                               for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
            raise ParameterError(f"{run_dir} ran its rounds with other options ({detail}); rerun with the same "
                                 "options to resume, or start a new run directory")
        if before is not None:
            return
    st.write_json_atomic(path, options)


def run_rounds(
    run_dir: str | Path,
    *,
    rounds: int,
    attack_config,
    retrain_config: RetrainConfig = RetrainConfig(),
    train_limit: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Attack-on-test → attack-on-train → retrain → … for ``rounds`` rounds (resumable).

    ``run_dir`` must hold a complete round-0 run (``advaudio train --out RUN_DIR``).
    ``attack_config`` (:class:`advaudio.adversarial.AttackStageConfig`) sets the
    attacks, threshold and test-split limit; ``train_limit`` caps the clips
    attacked on the training folds. Returns the per-step log.
    """
    from advaudio.adversarial import attack_stage
    from advaudio.training.loop import _kill_point as kill_point

    run_dir = Path(run_dir)
    validation.integer("rounds", rounds, minimum=0)  # 0: only the attack on the test fold
    if not is_complete_run(run_dir):
        metrics = layout.metrics_path(run_dir)
        if metrics.is_file() and layout.checkpoint_path(run_dir).is_file():
            read_metrics(metrics)  # a damaged file says so (rewritten by `advaudio train --resume`)
        raise StoreError(f"{run_dir} holds no complete round-0 run (checkpoint.pt + metrics.json); "
                         "run `advaudio train --out RUN_DIR` first")
    _check_rounds_options(run_dir, attack_config=attack_config, retrain_config=retrain_config,
                          train_limit=train_limit)
    log = []

    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    def attack(k: int, split: str, limit: int | None) -> None:
        directory = layout.round_dir(run_dir, k)
        results = layout.attack_results_path(run_dir, round=k, split=split)
        if results.is_file():
            try:
                read_attack_results(results)
            except DamagedFileError as exc:  # never skipped as done: set aside, and attacked again
                say(f"round {k}: {exc}; set aside as {st.set_aside(results).name}, attacking again")
            else:
                say(f"round {k}: {results.name} exists, skipped")
                log.append({"round": k, "step": f"attack-{split}", "skipped": True, "path": str(results)})
                return
        cfg = dataclasses.replace(attack_config, split=split, round=k, limit=limit, slice=None)
        say(f"round {k}: attacking the {split} split …")
        doc = attack_stage(cfg, checkpoint=layout.checkpoint_path(directory), out_dir=directory, device=device,
                           progress=progress)
        log.append({"round": k, "step": f"attack-{split}", "skipped": False, "path": doc["results_path"]})
        kill_point(f"attack-{split}", k)

    for k in range(rounds):
        attack(k, "test", attack_config.limit)
        attack(k, "train", train_limit)
        target = layout.round_dir(run_dir, k + 1)
        if is_complete_run(target):
            say(f"round {k + 1}: retrained checkpoint exists, skipped")
            log.append({"round": k + 1, "step": "retrain", "skipped": True, "path": str(target)})
        else:
            say(f"round {k + 1}: retraining with round {k}'s adversarial examples …")
            retrain(layout.checkpoint_path(run_dir, round=k), out_dir=target, config=retrain_config,
                    device=device, resume=layout.checkpoint_path(target).is_file(), progress=progress)
            log.append({"round": k + 1, "step": "retrain", "skipped": False, "path": str(target)})
            kill_point("retrain", k + 1)
    attack(rounds, "test", attack_config.limit)
    return log

