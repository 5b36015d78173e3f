"""Adversarial retraining: one round's model from its predecessor and its training-split shards.

:func:`retrain_checkpoint` trains on the clean training folds plus adversarial shards
(their *true* labels), a fixed fraction of every batch adversarial.
The new checkpoint records, in its training configuration's ``provenance``, the
round it starts, its parent checkpoint and each shard's attack, budget and hash;
the loop over rounds is :mod:`advaudio.stages.rounds`. :func:`retrain` is ``advaudio retrain``
as a function (the options of :mod:`advaudio.stages.retrain_config`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advaudio import store as st
from advaudio.errors import StoreError
from advaudio.options import CommandResult, Values
from advaudio.stages.retrain_config import MODES, RETRAIN, RetrainConfig
from advaudio.threads import configure_threads

__all__ = ["MODES", "RetrainConfig", "RetrainRun", "checkpoint_round", "retrain", "retrain_checkpoint"]

def checkpoint_round(checkpoint) -> int:
    """Round of a loaded checkpoint (0 for a model trained on clean data only)."""
    return int((checkpoint.config.get("provenance") or {}).get("round", 0))


def retrain_checkpoint(
    checkpoint: str | Path,
    *,
    out_dir: str | Path,
    config: RetrainConfig | None = None,
    shards: list[str | Path] | None = None,
    round: int | None = None,
    store: str | Path | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: bool = True,
    domain: str | None = None,
) -> dict[str, Any]:
    """Retrain ``checkpoint``'s model with adversarial shards; returns the new metrics.

    ``shards`` names the shards explicitly; otherwise every training-split shard
    made from this checkpoint in ``round`` (default: the checkpoint's round; ``domain``: of that
    threat model only) is used. The new checkpoint records, in its training configuration's
    ``provenance``, the round it starts and each shard's attack, budget and hash.
    """
    from advaudio.data import ModelSpaceSource
    from advaudio.training import TrainConfig, load_checkpoint, train

    config = config if config is not None else RetrainConfig()
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    base = TrainConfig.from_dict(ckpt.config)
    feature_store = st.Store(store if store is not None else base.store)
    st.check_same_store(feature_store, ckpt.store_fingerprint, what=f"checkpoint {checkpoint}")
    source_round = checkpoint_round(ckpt) if round is None else round
    if shards is None:
        shards = st.find_shards(feature_store, checkpoint_sha=st.sha256_file(checkpoint), round=source_round,
                                domain=domain)
        if not shards:
            raise StoreError(
                f"no training-split adversarial shards of round {source_round} for {checkpoint} in "
                f"{feature_store.directory}; run `advaudio attack --split train --round {source_round}` first"
            )
    held_out = {f for f in (ckpt.split.get("test_fold"), ckpt.split.get("val_fold")) if f is not None}
    records = st.inspect_shards([Path(s) for s in shards], store=feature_store,
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


@dataclass
class RetrainRun(CommandResult):
    """What :func:`retrain` did: :attr:`path` is the new checkpoint, :attr:`metrics` its run's metrics."""

    metrics: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [f"round {self.metrics.get('round')}: test accuracy {self.metrics.get('test_accuracy', float('nan')):.3f}"]


@RETRAIN.function(RetrainRun)
def retrain(v: Values) -> RetrainRun:

    config = RetrainConfig(**v.config())
    configure_threads(v.threads)
    metrics = retrain_checkpoint(v.checkpoint, out_dir=v.out, config=config, shards=v.shards, round=v.round,
                                 store=v.store, device=v.device, resume=v.resume, progress=v.progress)
    return RetrainRun(Path(metrics["checkpoint"]), metrics=metrics)
