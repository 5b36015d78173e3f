"""One click command per :class:`~advaudio.options.Command`: its options generated from the
declarations, its callback a call of the command's API function.

The callback passes on only the options given on the command line (a default is the
function's, never click's), prints :meth:`~advaudio.options.CommandResult.output` (the
summary, then the path) and the warnings on standard error, and exits with the result's
``exit_status``. Nothing else happens here: what a command does is its function's.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from advaudio.errors import ParameterError
from advaudio.options import Command, CommandResult, Option


def _type(o: Option) -> click.ParamType:
    allowed = o.allowed()
    if allowed is not None and o.kind == "value":
        return click.Choice([str(a) for a in allowed])
    if o.path:
        return click.Path()
    if o.kind in ("value", "multiple") and o.cli_type in (int, float):
        return click.INT if o.cli_type is int else click.FLOAT
    return click.STRING


def _param(o: Option) -> click.Parameter:
    if o.kind == "argument":
        return click.Argument([o.name], nargs=o.nargs, required=o.required, type=_type(o), metavar=o.metavar)
    names = [o.flag_name] + ([o.short] if o.short else [])
    common = dict(help=o.help_text, show_default=o.show_default, required=o.required, metavar=o.metavar)
    if o.kind == "flag":
        return click.Option([f"{o.flag_name}/{o.off or '--no-' + o.flag_name[2:]}", o.name],
                            default=bool(o.default_value()), **{**common, "metavar": None})
    if o.kind == "switch":
        return click.Option(names + [o.name], is_flag=True, default=False, help=o.help_text)
    if o.kind in ("multiple", "pairs", "nested"):
        default = o.default_value() if o.kind == "multiple" else None
        return click.Option(names + [o.name], multiple=True, type=_type(o), default=default or None, **common)
    return click.Option(names + [o.name], type=_type(o), default=o.default_text(), **common)


def _alias_dest(o: Option, i: int) -> str:
    return f"{o.name}__alias{i}"


def _aliases(o: Option) -> list[click.Option]:
    """The older spellings of ``o`` (hidden: ``--help`` shows the option itself)."""
    return [click.Option([flag, _alias_dest(o, i)], is_flag=True, default=False, hidden=True)
            for i, (flag, _) in enumerate(o.aliases)]


def show(result: CommandResult) -> None:
    """Print a command's result: its output, its warnings on standard error; exit with its status."""
    for line in result.output():
        click.echo(line)
    for line in result.warnings():
        click.echo(line, err=True)
    if result.exit_status:
        sys.exit(result.exit_status)


def function_of(target: str) -> Callable[..., Any]:
    """``"module:name"`` → the API function (imported when the command runs, never for ``--help``)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def command(spec: Command, target: str, *, name: str | None = None,
            present: Callable[..., None] | None = None) -> click.Command:
    """The click command of ``spec`` whose callback calls the API function ``target``
    (``"advaudio.stages.attack:attack"``); ``present(result, **cli_only_options)`` prints the
    result instead of :func:`show`."""
    params: list[click.Parameter] = []
    for o in spec.options:
        params.append(_param(o))
        params.extend(_aliases(o))

    def callback(**values: Any) -> None:
        ctx = click.get_current_context()
        given: dict[str, Any] = {}
        shown: dict[str, Any] = {}
        for o in spec.options:
            value = values.pop(o.name)
            if o.cli_only:
                shown[o.name] = value
            elif ctx.get_parameter_source(o.name) not in (ParameterSource.DEFAULT, None):
                given[o.name] = value
            for i, (_, alias_value) in enumerate(o.aliases):
                if values.pop(_alias_dest(o, i)):
                    given[o.name] = alias_value
        try:
            spec.bind((), given)  # a value its option cannot take is a usage error (exit status 2), as click's own
        except ParameterError as exc:
            raise click.UsageError(str(exc), ctx) from None
        result = function_of(target)(**given)
        (present or show)(result, **shown)

    cmd = click.Command(name or spec.name.split()[-1], params=params, callback=callback, help=spec.help)
    cmd.spec, cmd.target = spec, target  # what it is generated from (tests/test_cli.py compares them)
    return cmd
