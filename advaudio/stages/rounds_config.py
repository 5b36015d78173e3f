"""The options of ``advaudio rounds`` (:data:`ROUNDS`), light: the attack options ``advaudio attack``
has (its search, precision and checks too) and the retraining ones; the loop is
:mod:`advaudio.stages.rounds`.
"""

from __future__ import annotations

from advaudio.options import PROGRESS, THREADS, UNSET, Command, Option
from advaudio.stages.attack_config import ATTACK_OPTIONS, DOMAIN_OPTIONS, SEARCH_OPTIONS, AttackStageConfig
from advaudio.stages.retrain_config import RetrainConfig, mode_option

__all__ = ["ROUNDS"]

ROUNDS = Command(
    "rounds",
    """Attack-on-test → attack-on-train → retrain → attack-on-test, K rounds, in RUN_DIR.

    RUN_DIR holds a finished `advaudio train` run (round 0). Each round's
    checkpoint, shards and results are kept apart (RUN_DIR/roundNN/);
    --domain waveform attacks the clips' samples and retrains on the front
    end's features of the adversarial waveforms (one domain per RUN_DIR);
    rerunning the command resumes at the step where it stopped. RUN_DIR is the
    last line of standard output.

    Exit status: 1 when an attack's budget never reached the threshold (a line
    on standard error names it; the loop goes on; --allow-unreached: 0); 2 for
    an error.
    """,
    (
        Option("run_dir", kind="argument", required=True, path=True, metavar="RUN_DIR",
               help="Directory of a finished `advaudio train` run (round 0)."),
        Option("rounds", default=1, cli_type=int, help="Retraining rounds."),
        *ATTACK_OPTIONS,
        *SEARCH_OPTIONS,
        *DOMAIN_OPTIONS,
        Option("train_limit", cli_type=int, help="Attack at most N training clips per round."),
        Option("mix", field="retrain.mix", default=UNSET, cli_type=float, help="Adversarial fraction of every batch."),
        Option("epochs", field="retrain.epochs", cli_type=int,
               help="Epochs per retraining [default: as the original run]."),
        mode_option("retrain.mode"),
        PROGRESS,
        THREADS,
    ),
    configs={"": AttackStageConfig, "retrain": RetrainConfig},
)
