"""Command-line interface: parses arguments and calls the library, nothing more.

One module per command (or group of commands) in data-flow order; each is
imported only when its command runs or its help is shown, so that a quick
query (``advaudio path``) does not pay for torch, librosa and Dask. A command's
options are generated (:func:`advaudio.cli._common.command`) from the declarations
its Python function is made from (the stages' light ``<stage>_config`` modules), and
its callback calls that function (``advaudio.attack`` …) and prints the result;
``--help`` imports only the declarations.
Errors a user can fix (:class:`advaudio.errors.AdvaudioError`) print as one
line on standard error and exit with status 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from advaudio.errors import AdvaudioError
from advaudio.plugins import one_line_warnings

#: command name → "module:attribute" under advaudio.cli
COMMANDS = {
    "featurize": "featurize:featurize",
    "store": "store:store",
    "train": "train:train",
    "evaluate": "train:evaluate",
    "attack": "attack:attack",
    "retrain": "retrain:retrain",
    "rounds": "retrain:rounds",
    "demo": "demo:demo",
    "report": "report:report",
    "study": "study:study",
    "listen": "report:listen",
    "path": "path:path_",
}


class LazyGroup(click.Group):
    """A group whose commands are imported from :data:`COMMANDS` when first needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[name].partition(":")
        return getattr(importlib.import_module(f"advaudio.cli.{module}"), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="advaudio")
def cli():
    """Adversarial robustness of audio classifiers.

    The stages follow the data flow: featurize audio into a feature store,
    train CNNs on a view of it, attack them, retrain with the adversarial
    examples, report. Every stage reads and writes files, so each can run on
    a different machine.
    """


def main(argv=None) -> None:
    """Entry point of the ``advaudio`` console script."""

    one_line_warnings()  # a refused or broken plugin: one line, like an error
    try:
        cli.main(args=argv, prog_name="advaudio", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AdvaudioError as exc:
        click.echo(f"advaudio: error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # an I/O error no stage turned into a StoreError (a full disk, permissions)
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        click.echo(f"advaudio: error: {where}{exc.strerror or exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
