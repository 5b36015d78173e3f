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

Each step is skipped when its output is already complete, so an interrupted
loop resumes at the step where it stopped (a half-trained round resumes
from its last epoch).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advaudio import store as st
from advaudio.errors import ParameterError, StoreError

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
        if self.mode not in MODES:
            raise ParameterError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.epochs is not None and self.epochs < 1:
            raise ParameterError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr is not None and not self.lr > 0:
            raise ParameterError(f"lr must be positive, got {self.lr}")


def checkpoint_round(checkpoint) -> int:
    """Round of a loaded checkpoint (0 for a model trained on clean data only)."""
    return int((checkpoint.config.get("provenance") or {}).get("round", 0))


def find_shards(store: st.Store, *, checkpoint_sha: str, round: int, split: str = "train") -> list[Path]:
    """Registered adversarial shards made from ``checkpoint_sha`` in ``round`` on ``split``."""
    found = []
    for path in store.adversarial_shards():
        with st.open_h5_read(path) as f:
            a = f.attrs
            sliced = json.loads(a["slice"])[1] > 1 if isinstance(a.get("slice"), str) else False
            # A job array's slices enter training through their merged shard only.
            if (a.get("checkpoint_sha256") == checkpoint_sha and int(a.get("round", -1)) == round
                    and a.get("split") == split and not sliced):
                found.append(path)
    return found


def inspect_shards(shards: list[Path], *, store_fingerprint: str, held_out_folds: set[int]) -> list[dict[str, Any]]:
    """Provenance of each shard; refuses shards of another store or with held-out clips.

    Only clips of the training folds may enter training: a shard holding any
    clip of the test (or validation) fold would leak it, and is refused.
    """
    records = []
    for path in shards:
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"no adversarial shard at {path}")
        with st.open_h5_read(path) as f:
            a = f.attrs
            if "adversarial" not in f or "fold" not in f:
                raise StoreError(f"{path} is not an advaudio adversarial shard")
            if a.get("store_fingerprint") != store_fingerprint:
                raise StoreError(f"{path} was made from store {a.get('store_fingerprint')}, "
                                 f"not from the checkpoint's store {store_fingerprint}")
            folds = set(int(k) for k in np.unique(f["fold"][:]))
            leaked = sorted(folds & held_out_folds)
            if leaked:
                raise StoreError(
                    f"{path} holds clips of held-out fold(s) {leaked} (split {a.get('split')!r}): "
                    "refusing to train on them, test data must not leak into training"
                )
            records.append({
                "path": str(path.resolve()),
                "sha256": st.sha256_file(path),
                "attack": str(a.get("attack")),
                "norm": str(a.get("norm")),
                "budget": float(a.get("budget", np.nan)),
                "fooling_rate": float(a.get("fooling_rate", np.nan)),
                "round": int(a.get("round", -1)),
                "samples": int(f["adversarial"].shape[0]),
                "successful": int(np.asarray(f["success"][:]).sum()) if "success" in f else None,
            })
    return records


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
    if feature_store.fingerprint != ckpt.store_fingerprint:
        raise StoreError(f"{checkpoint} was trained on store {ckpt.store_fingerprint}, "
                         f"not on {feature_store.directory} ({feature_store.fingerprint})")
    source_round = checkpoint_round(ckpt) if round is None else round
    if shards is None:
        shards = find_shards(feature_store, checkpoint_sha=st.sha256_file(checkpoint), round=source_round)
        if not shards:
            raise StoreError(
                f"no training-split adversarial shards of round {source_round} for {checkpoint} in "
                f"{feature_store.directory}; run `advaudio attack --split train --round {source_round}` first"
            )
    held_out = {f for f in (ckpt.split.get("test_fold"), ckpt.split.get("val_fold")) if f is not None}
    records = inspect_shards([Path(s) for s in shards], store_fingerprint=feature_store.fingerprint,
                             held_out_folds={int(f) for f in held_out})
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
def round_dir(run_dir: Path, k: int) -> Path:
    return run_dir if k == 0 else run_dir / f"round{k:02d}"


def is_complete_run(directory: Path) -> bool:
    metrics = directory / "metrics.json"
    if not (directory / "checkpoint.pt").is_file() or not metrics.is_file():
        return False
    try:
        return bool(json.loads(metrics.read_text()).get("complete"))
    except ValueError:
        return False


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

    run_dir = Path(run_dir)
    if rounds < 1:
        raise ParameterError(f"rounds must be >= 1, got {rounds}")
    if not is_complete_run(run_dir):
        raise StoreError(f"{run_dir} holds no complete round-0 run (checkpoint.pt + metrics.json); "
                         "run `advaudio train --out RUN_DIR` first")
    log = []

    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    def attack(k: int, split: str, limit: int | None) -> None:
        directory = round_dir(run_dir, k)
        results = directory / f"attack-round{k:02d}-{split}.json"
        if results.is_file():
            say(f"round {k}: {results.name} exists, skipped")
            log.append({"round": k, "step": f"attack-{split}", "skipped": True, "path": str(results)})
            return
        cfg = dataclasses.replace(attack_config, split=split, round=k, limit=limit, slice=None)
        say(f"round {k}: attacking the {split} split …")
        doc = attack_stage(cfg, checkpoint=directory / "checkpoint.pt", out_dir=directory, device=device,
                           progress=progress)
        log.append({"round": k, "step": f"attack-{split}", "skipped": False, "path": doc["results_path"]})

    for k in range(rounds):
        attack(k, "test", attack_config.limit)
        attack(k, "train", train_limit)
        target = round_dir(run_dir, k + 1)
        if is_complete_run(target):
            say(f"round {k + 1}: retrained checkpoint exists, skipped")
            log.append({"round": k + 1, "step": "retrain", "skipped": True, "path": str(target)})
        else:
            say(f"round {k + 1}: retraining with round {k}'s adversarial examples …")
            retrain(round_dir(run_dir, k) / "checkpoint.pt", out_dir=target, config=retrain_config,
                    device=device, resume=(target / "checkpoint.pt").is_file(), progress=progress)
            log.append({"round": k + 1, "step": "retrain", "skipped": False, "path": str(target)})
    attack(rounds, "test", attack_config.limit)
    return log

