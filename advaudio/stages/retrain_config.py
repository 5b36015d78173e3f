"""The retraining stage's configuration and options, light (no torch): :class:`RetrainConfig` and
the options of ``advaudio retrain`` (:data:`RETRAIN`); ``advaudio rounds`` shares :data:`MODE`.
The stage itself is :mod:`advaudio.stages.retrain`.
"""

from __future__ import annotations

from dataclasses import dataclass

from advaudio import validation
from advaudio.errors import ParameterError
from advaudio.options import PROGRESS, THREADS, UNSET, Command, Option

__all__ = ["MODE", "MODES", "RETRAIN", "RetrainConfig"]

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


def _device(value):
    return validation.device("device", value)


def mode_option(field: str) -> Option:
    """``--mode fine-tune|from-scratch`` (``--fine-tune`` and ``--from-scratch`` still work)."""
    return Option("mode", field=field, default=UNSET, choices=MODES, aliases=(("--fine-tune", "fine-tune"),
                                                                             ("--from-scratch", "from-scratch")),
                  help="fine-tune: start from the checkpoint's weights; from-scratch: re-initialise the model "
                       "(--fine-tune and --from-scratch say the same).")


#: ``--mode`` of ``advaudio retrain`` (a field of RetrainConfig).
MODE = mode_option("mode")

RETRAIN = Command(
    "retrain",
    """Retrain a model on its clean training folds plus adversarial shards.

    Shards keep their true labels; only shards made from training-fold clips
    are accepted (a shard holding test-fold clips is refused). The new
    checkpoint records the shards, attacks and budgets it saw; its path is the
    last line of standard output.
    """,
    (
        Option("checkpoint", required=True, path=True, help="checkpoint.pt to retrain."),
        Option("store", path=True, help="Feature store [default: the checkpoint's]."),
        Option("shards", kind="multiple", path=True, metavar="SHARD",
               help="Adversarial shard(s) to train on, repeatable [default: all training-split shards of --round "
                    "made from this checkpoint]."),
        Option("round", cli_type=int, help="Round whose shards to use [default: the checkpoint's round]."),
        Option("mix", field="mix", default=UNSET, cli_type=float,
               help="Fraction of every batch taken from the adversarial shards."),
        Option("epochs", field="epochs", cli_type=int, help="Epochs [default: as the original run]."),
        Option("lr", field="lr", cli_type=float,
               help="Peak learning rate [default: the original's; a tenth of it when fine-tuning]."),
        MODE,
        Option("device", parse=_device, help="auto, cpu, cuda [default: as the original run]."),
        Option("out", required=True, path=True, help="Directory of the new run."),
        Option("resume", kind="switch", help="Continue an interrupted retraining in --out."),
        PROGRESS,
        THREADS,
    ),
    configs={"": RetrainConfig},
)
