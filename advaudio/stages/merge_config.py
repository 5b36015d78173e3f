"""The options of ``advaudio store merge`` (:data:`MERGE`), light; the merge is :mod:`advaudio.stages.merge`."""

from __future__ import annotations

from advaudio import layout
from advaudio.options import Command, Option

__all__ = ["MERGE"]

MERGE = Command(
    "store merge",
    """Merge the slices of a job-array attack (attack --slice I/N) into one registered set.

    Checks that slices 0..N-1 are all there and were run alike, concatenates
    them in slice order into adversarial/round<K>-<split>-<sha>-<attack>.h5
    and writes attack-round<K>-<split>.json beside the slices' results, as an
    unsliced run would (minimisation attacks: budget recomputed over all
    clips). Merging again is harmless. Prints the results path last.
    """,
    (
        Option("path", kind="argument", required=True, path=True, metavar="PATH",
               help="The feature store the slices wrote their shards into."),
        Option("round", required=True, cli_type=int, help="Round of the sliced attack run."),
        Option("split", required=True, choices=layout.SPLITS, help="Split of the sliced attack run."),
        Option("checkpoint_sha", metavar="SHA",
               help="sha256 (or a prefix) of the attacked checkpoint [default: the only one with slices]."),
        Option("attack", help="Merge only this attack [default: every attack with slices]."),
        Option("results_dir", path=True,
               help="Where the slices wrote attack-round<K>-<split>-slice*.json (their --out) and where the merged "
                    "results go [default: the checkpoint's directory]."),
        Option("allow_mixed_budgets", kind="switch",
               help="Fixed-budget attacks (fgsm, bim, pgd) whose slices tuned different ε: merge anyway, each "
                    "slice's examples at its own ε, the set's budget their maximum."),
        Option("force", kind="switch", help="Replace an unsliced run's shard and results of the same set."),
    ),
)
