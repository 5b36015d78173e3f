"""The round loop: attack-on-test → attack-on-train → retrain → … for K rounds, resumable.

:func:`run_rounds` chains the attack stage (:mod:`advaudio.stages.attack`) and the
retraining stage (:mod:`advaudio.stages.retrain`) in one run directory::

    RUN_DIR/checkpoint.pt, metrics.json          round 0 (clean training)
    RUN_DIR/attack-round00-test.json             robustness of round 0
    RUN_DIR/attack-round00-train.json            retraining data for round 1
    RUN_DIR/round01/checkpoint.pt, metrics.json  round 1 (retrained)
    RUN_DIR/round01/attack-round01-test.json …

(names: :mod:`advaudio.layout`). :func:`rounds` is ``advaudio rounds`` as a function (the
options of :mod:`advaudio.stages.rounds_config`). Each step is skipped when its output is already
complete, so an interrupted loop resumes at the step where it stopped (a half-trained
round resumes from its last epoch); the options of the first run are recorded and a
rerun with others is refused.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advaudio import layout, validation
from advaudio import store as st
from advaudio.errors import DamagedFileError, ParameterError, StoreError
from advaudio.killpoints import kill_point
from advaudio.options import CommandResult, Values
from advaudio.stages.attack import AttackStageConfig, attack_stage, unreached_warning
from advaudio.stages.retrain import RetrainConfig, retrain_checkpoint
from advaudio.stages.rounds_config import ROUNDS
from advaudio.store.documents import read_attack_results, read_metrics
from advaudio.threads import configure_threads

__all__ = ["RoundsRun", "is_complete_run", "rounds", "run_rounds"]


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
    attack.setdefault("domain", attack_config.domain)  # named, also the default (runs before it lack it)
    options = st.jsonable({"attack": attack, "retrain": dataclasses.asdict(retrain_config),
                           "train_limit": train_limit})
    path = layout.rounds_options_path(run_dir)
    if path.is_file():
        try:
            before = json.loads(path.read_text())
            if isinstance(before, dict) and isinstance(before.get("attack"), dict):
                before["attack"] = AttackStageConfig.upgrade_dict(before["attack"])
                before["attack"].setdefault("domain", layout.DOMAINS[0])
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
    retrain_config: RetrainConfig | None = None,
    train_limit: int | None = None,
    device: str = "auto",
    progress: bool = True,
    audio_root: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Attack-on-test → attack-on-train → retrain → … for ``rounds`` rounds (resumable).

    ``run_dir`` must hold a complete round-0 run (``advaudio train --out RUN_DIR``).
    ``attack_config`` (:class:`advaudio.stages.attack.AttackStageConfig`) sets the
    attacks, threshold and test-split limit; ``train_limit`` caps the clips
    attacked on the training folds. ``attack_config.domain="waveform"`` attacks the clips'
    samples (``audio_root``: the dataset's root when it moved since featurize) and each round
    retrains on the front end's features of the adversarial waveforms. Returns the per-step log.
    """
    run_dir = Path(run_dir)
    retrain_config = retrain_config if retrain_config is not None else RetrainConfig()
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
        results = layout.attack_results_path(run_dir, round=k, split=split, domain=attack_config.domain)
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
                           progress=progress, audio_root=audio_root)
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
            retrain_checkpoint(layout.checkpoint_path(run_dir, round=k), out_dir=target, config=retrain_config,
                               device=device, resume=layout.checkpoint_path(target).is_file(), progress=progress,
                               domain=attack_config.domain)
            log.append({"round": k + 1, "step": "retrain", "skipped": False, "path": str(target)})
            kill_point("retrain", k + 1)
    attack(rounds, "test", attack_config.limit)
    return log


@dataclass
class RoundsRun(CommandResult):
    """What :func:`rounds` did: :attr:`path` is the run directory, :attr:`log` one entry per step
    (round, step, skipped, path), :attr:`unreached` a line per attack results file whose budget never
    reached the threshold (done now or before: a resumed loop says the same)."""

    log: list[dict[str, Any]] = field(default_factory=list)
    unreached: list[str] = field(default_factory=list)
    allow_unreached: bool = False

    def lines(self) -> list[str]:
        return [f"round {e['round']} {e['step']:<13} {'skipped' if e['skipped'] else 'done':<8} {e['path']}"
                for e in self.log]

    def warnings(self) -> list[str]:
        return list(self.unreached)

    @property
    def exit_status(self) -> int:
        return 1 if self.unreached and not self.allow_unreached else 0


@ROUNDS.function(RoundsRun)
def rounds(v: Values) -> RoundsRun:

    attack_config = AttackStageConfig(**v.config())
    retrain_config = RetrainConfig(**v.config("retrain"))
    configure_threads(v.threads)
    log = run_rounds(v.run_dir, rounds=v.rounds, attack_config=attack_config, retrain_config=retrain_config,
                     train_limit=v.train_limit, device=v.device, progress=v.progress, audio_root=v.audio_root)
    unreached = []
    for entry in log:
        if entry["step"].startswith("attack-"):
            line = unreached_warning(read_attack_results(Path(entry["path"])))
            if line:
                unreached.append(f"{Path(entry['path']).name}: {line.removeprefix('advaudio: ')}")
    return RoundsRun(Path(v.run_dir), log=log, unreached=unreached, allow_unreached=v.allow_unreached)
