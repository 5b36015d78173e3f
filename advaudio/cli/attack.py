"""``advaudio attack`` and the attack options it shares with ``advaudio rounds``."""

from __future__ import annotations

import json
import sys

import click

from advaudio.cli._common import computes, config_default, split_csv, with_options
from advaudio.errors import ParameterError
from advaudio.layout import SPLITS
from advaudio.stages.attack import AttackStageConfig


class BatchSize(click.ParamType):
    """``auto`` (None: chosen for the device) or a positive integer."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        if str(value).strip().lower() == "auto":
            return None
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither auto nor an integer", param, ctx)
        if n < 1:
            self.fail(f"must be auto or >= 1, got {n}", param, ctx)
        return n


def parse_attack_params(pairs: tuple[str, ...]) -> dict:
    """``ATTACK.KEY=VALUE`` pairs → ``{attack: {key: value}}``."""
    out: dict = {}
    for pair in pairs:
        head, sep, raw = pair.partition("=")
        attack, dot, key = head.partition(".")
        if not sep or not dot or not attack or not key:
            raise ParameterError(f"attack parameter must look like ATTACK.KEY=VALUE (e.g. pgd.steps=20), got {pair!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(attack, {})[key.replace("-", "_")] = value
    return out


def _attack_params_help() -> str:
    """Every built-in attack's parameters with their defaults, from the parameter dataclasses;
    plugins by name only (listing them must not import them: a broken one would break the command)."""
    from advaudio.attacks.params import SHARED_SETTINGS
    from advaudio.attacks.registry import ATTACKS, BUILTIN

    listing = "; ".join(
        f"{name}: " + ", ".join(f"{k}={'auto' if v is None else v}" for k, v in spec.params_type().to_dict().items())
        for name, spec in BUILTIN.items()
    )
    plugins = list(ATTACKS.plugins())
    extra = f" Plugin attacks ({', '.join(plugins)}) take the fields of their own parameter dataclass." if plugins else ""
    return ("Attack parameter, repeatable, e.g. -p pgd.steps=20 -p cw.binary_search_steps=5. "
            f"Each attack takes {', '.join(SHARED_SETTINGS)} and its own (defaults): {listing}.{extra}")


def _attack_names() -> str:
    from advaudio.attacks.params import PARAMS

    return ", ".join(PARAMS)  # built-ins and plugins, from metadata


def _max_evaluations() -> int:
    from advaudio.attacks.params import MAX_EVALUATIONS_PER_CLIP

    return MAX_EVALUATIONS_PER_CLIP


def _target_rules() -> list[str]:
    from advaudio.attacks.params import TARGET_RULES

    return list(TARGET_RULES)


ATTACK_OPTIONS = [
    click.option("--attacks", default=",".join(config_default(AttackStageConfig, "attacks")), show_default=True,
                 help=f"Comma-separated attacks: {_attack_names()}."),
    click.option("--fooling-rate", type=float, default=config_default(AttackStageConfig, "threshold"), show_default=True,
                 help="Threshold each attack's budget is tuned to (fraction of attacked clips)."),
    click.option("--limit", type=int, default=None, help="Attack at most N clips (evenly spaced)."),
    click.option("--batch-size", type=BatchSize(), default=config_default(AttackStageConfig, "batch_size"),
                 show_default="auto",
                 help="Clips per attack call: a number, or auto (64 on CPU; on CUDA the largest batch that fits "
                      "in half the device's free memory, at most 1024; the size used is in the results JSON)."),
    click.option("--target-rule", type=click.Choice(_target_rules()), default=config_default(AttackStageConfig, "target_rule"),
                 show_default=True, help="Target class of targeted attacks: seeded random other class, "
                                         "or the clean model's least likely class."),
    click.option("--seed", type=int, default=config_default(AttackStageConfig, "seed"), show_default=True, help="Seeds targets and random starts."),
    click.option("-p", "--param", "params", multiple=True, metavar="ATTACK.KEY=VALUE",
                 help=_attack_params_help()),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--allow-expensive", is_flag=True,
                 help="Run attacks whose budget search would cost more than "
                      f"{_max_evaluations():.0e} model evaluations per clip (e.g. -p pgd.steps=1000000000); "
                      "refused otherwise, with the estimate, before any work."),
]


def _searches() -> tuple[str, ...]:
    from advaudio.attacks.params import SEARCHES

    return SEARCHES


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="checkpoint.pt to attack.")
@click.option("--store", "store_path", type=click.Path(file_okay=False), default=None,
              help="Feature store [default: the one the checkpoint was trained on].")
@with_options(ATTACK_OPTIONS)
@click.option("--split", type=click.Choice(SPLITS), default=config_default(AttackStageConfig, "split"), show_default=True,
              help="test: the checkpoint's held-out fold; train: the rows it trained on (retraining data).")
@click.option("--round", "round_", type=int, default=0, show_default=True,
              help="Retraining round the shards belong to.")
@click.option("--slice", "slice_", default=None, metavar="I/N",
              help="Attack only the I-th of N parts of the clips (job arrays); merge with `store merge`.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Directory of the results JSON [default: the checkpoint's].")
@click.option("--search", type=click.Choice(_searches()), default=config_default(AttackStageConfig, "search"),
              show_default=True, help="Budget search of fixed-budget attacks: every clip's minimal ε "
              "(slices merge exactly) or bisection of the batch's fooling rate.")
@click.option("--precision", type=click.Choice(["auto", "quantile", "clip"]), default="auto", show_default=True,
              help="Per-clip search: refine only the clips near the budget (quantile: fewest steps), or every "
                   "clip's minimal ε (clip: slices merge to exactly one run); auto: clip for --slice, else quantile.")
@click.option("--checks/--no-checks", default=True, show_default=True,
              help="Run the evaluation checks (Carlini et al. 2019) after the attacks.")
@click.option("--allow-unreached", is_flag=True,
              help="Exit with status 0 even when an attack's budget never reached the fooling-rate threshold.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@computes
def attack(checkpoint, store_path, attacks, fooling_rate, limit, batch_size, target_rule, seed, params, device,
           allow_expensive, split, round_, slice_, out_dir, search, precision, checks, allow_unreached, progress):
    """Tune attacks on a checkpoint to a fooling rate; write adversarial shards into the store.

    For fixed-budget attacks (fgsm, bim, pgd) every clip's minimal ε is searched
    (or, --search bisection, ε is bisected until the batch's fooling rate reaches
    the threshold); for minimisation attacks (deepfool, cw, ead,
    boundary, hopskipjump) the budget is the quantile of the per-sample
    minimal perturbations. Prints a table and writes
    attack-round<K>-<split>.json beside the checkpoint (its path is the last
    line of standard output).

    Exit status: 0 when every attack's budget reached the threshold; 1 when one
    never did (a summary line on standard error names it; its results and shard
    are written all the same; --allow-unreached: 0), except for a --slice, whose
    budget `store merge` computes over all slices; 2 for an error.
    """
    from advaudio.attacks import Note
    from advaudio.stages.attack import AttackStageConfig, attack_stage, check_warnings, format_table, parse_slice

    config = AttackStageConfig(
        attacks=split_csv(attacks) or (), threshold=fooling_rate, split=split, limit=limit, batch_size=batch_size,
        round=round_, seed=seed, target_rule=target_rule, slice=parse_slice(slice_),
        attack_params=parse_attack_params(params), search=search, checks=checks,
        precision=None if precision == "auto" else precision, allow_expensive=allow_expensive,
    )
    doc = attack_stage(config, checkpoint=checkpoint, store=store_path, out_dir=out_dir, device=device,
                       progress=progress)
    click.echo(format_table(doc))
    for record in doc["attacks"]:
        for note in record.get("notes", []):
            click.echo(f"  {record['attack']}: {Note.from_json(note).text}")
    for line in check_warnings(doc):  # a failed evaluation check is never silent
        click.echo(line, err=True)
    if doc.get("plugins"):
        from advaudio.plugins import format_records

        click.echo(f"plugins: {format_records(doc['plugins'])}")
    click.echo(doc["results_path"])
    unreached = [r for r in doc["attacks"] if not r.get("reached")]
    if unreached and config.slice is None:  # a slice's budget is provisional: the merge decides
        listing = "; ".join(f"{r['attack']} ({r.get('reason') or 'not reached'})" for r in unreached)
        click.echo(f"advaudio: {len(unreached)} of {len(doc['attacks'])} attack(s) never reached the fooling-rate "
                   f"threshold {config.threshold:g}: {listing}", err=True)
        if not allow_unreached:
            sys.exit(1)
