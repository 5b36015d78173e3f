"""``advaudio store info | merge``: ``store merge`` is :func:`advaudio.merge` (options:
:mod:`advaudio.stages.merge_config`)."""

from __future__ import annotations

import json
import sys

import click

from advaudio.cli._common import command
from advaudio.plugins import format_records
from advaudio.stages.merge_config import MERGE


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


store.add_command(command(MERGE, "advaudio.stages.merge:merge"), "merge")
