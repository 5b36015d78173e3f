"""``advaudio store info | merge``."""

from __future__ import annotations

import json
import sys

import click

from advaudio.layout import SPLITS


@click.group()
def store():
    """Inspect feature stores."""


@store.command("info")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON.")
@click.option("--verify", is_flag=True,
              help="Check store.h5 and manifest.json against their digests, the manifest's schema, and every "
                   "shard's sha256 (feature and adversarial); exit status 1 lists what is damaged.")
def store_info(path, as_json, verify):
    """Show clips, classes, folds, representations, size and errors of a store."""
    from advaudio.store import Store

    s = Store(path, check=not verify)  # --verify lists what is damaged instead of stopping at it
    info = s.info()
    info["sealed"] = s.sealed
    config = info.pop("config") if not as_json else info["config"]
    if verify:
        info["verify"] = s.verify()
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"store        {info['path']}")
        click.echo(f"dataset      {info['dataset']} (fingerprint {info['fingerprint']})")
        click.echo(f"clips        {info['clips']} in {len(info['classes'])} classes")
        click.echo("folds        " + ", ".join(f"{k}: {v}" for k, v in info["folds"].items()))
        click.echo("classes      " + ", ".join(info["classes"]))
        for name, r in info["representations"].items():
            click.echo(f"  {name:<10} {r['shape'][0]} bands × {r['shape'][1]} frames, {r['dtype']}, "
                       f"compression {r['compression'] or 'none'}")
        click.echo(f"shards       {info['shards']}; adversarial shards: {len(info['adversarial_shards'])}")
        for adv in info["adversarial_shards"]:
            click.echo(f"  {adv}")
        click.echo(f"size         {info['size_bytes'] / 2**20:.1f} MiB")
        if config.get("plugins"):  # made with a plugin's reader or representations
            from advaudio.plugins import format_records

            click.echo(f"plugins      {format_records(config['plugins'])}")
        click.echo(f"errors       {len(info['errors'])}")
        for err in info["errors"]:
            click.echo(f"  {err['path']}: {err['reason']}")
        if not s.sealed:
            click.echo("checksums    shards only: an earlier release wrote store.h5 (`advaudio featurize` with the "
                       "same arguments records its and the manifest's)")
        if verify:
            click.echo("verify       " + ("ok" if not info["verify"] else "; ".join(info["verify"])))
    if verify and info["verify"]:
        sys.exit(1)


@store.command("merge")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--round", "round_", type=int, required=True, help="Round of the sliced attack run.")
@click.option("--split", type=click.Choice(SPLITS), required=True, help="Split of the sliced attack run.")
@click.option("--checkpoint-sha", default=None, metavar="SHA",
              help="sha256 (or a prefix) of the attacked checkpoint [default: the only one with slices].")
@click.option("--attack", default=None, help="Merge only this attack [default: every attack with slices].")
@click.option("--results-dir", type=click.Path(file_okay=False), default=None,
              help="Where the slices wrote attack-round<K>-<split>-slice*.json (their --out) and where the merged "
                   "results go [default: the checkpoint's directory].")
@click.option("--allow-mixed-budgets", is_flag=True,
              help="Fixed-budget attacks (fgsm, bim, pgd) whose slices tuned different ε: merge anyway, each "
                   "slice's examples at its own ε, the set's budget their maximum.")
@click.option("--force", is_flag=True, help="Replace an unsliced run's shard and results of the same set.")
def store_merge(path, round_, split, checkpoint_sha, attack, results_dir, allow_mixed_budgets, force):
    """Merge the slices of a job-array attack (attack --slice I/N) into one registered set.

    Checks that slices 0..N-1 are all there and were run alike, concatenates
    them in slice order into adversarial/round<K>-<split>-<sha>-<attack>.h5
    and writes attack-round<K>-<split>.json beside the slices' results, as an
    unsliced run would (minimisation attacks: budget recomputed over all
    clips). Merging again is harmless. Prints the results path last.
    """
    from advaudio.stages.attack import format_table
    from advaudio.stages.merge import merge_results

    doc = merge_results(path, round=round_, split=split, checkpoint_sha=checkpoint_sha, attack=attack,
                        results_dir=results_dir, allow_mixed_budgets=allow_mixed_budgets, force=force)
    merged = [r for r in doc["attacks"] if r["attack"] in doc["merged"]]
    click.echo(format_table({"attacks": merged}))
    for r in merged:
        n = len(r["merged_from"]["slices"])
        state = "merged" if r["written"] else "already merged, unchanged"
        click.echo(f"{r['attack']}: {n} slices, {r['n_samples']} clips, {state}: {r['shard']}")
    click.echo(doc["results_path"])
