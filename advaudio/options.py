"""A command's options, declared once: the CLI's click options and the Python API's keyword
arguments are both made from the same :class:`Option` declarations of a :class:`Command`.

``advaudio attack --fooling-rate 0.9 -p pgd.steps=20 --attacks pgd,cw`` and
``advaudio.attack(fooling_rate=0.9, param={"pgd": {"steps": 20}}, attacks=["pgd", "cw"])``
are one call: a keyword is the long option with dashes as underscores; a comma-separated
or repeatable option takes a list (or the command line's text); ``KEY=VALUE`` pairs take a
dict. A value is accepted as the command line writes it (``input_size="32x32"``) or typed
(``(32, 32)``): both go through the option's own parser, and then through the stage's
config class, which validates it. A declaration holds no default a config class owns
(:func:`field_default` reads it), so nothing is written twice.

The API function of a command is its stage's body decorated with :meth:`Command.function`:
its signature and docstring are generated from the options, and it returns a
:class:`CommandResult` (``.path``: what the command prints last, ``.lines()``: the summary
before it, ``.exit_status``). The CLI (:mod:`advaudio.cli`) builds its click commands from
the same declarations and only prints what the function returns.

This module imports neither torch nor click: a stage's light config module declares its
options here and ``advaudio COMMAND --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advaudio.errors import ParameterError

#: How an option takes its value(s).
KINDS = (
    "value",     # --name VALUE
    "flag",      # --name/--no-name (a bool)
    "switch",    # --name (True when given)
    "list",      # --name a,b,c (comma-separated) → tuple
    "multiple",  # --name A --name B (repeatable) → tuple
    "pairs",     # -o KEY=VALUE, repeatable → dict (values parsed as JSON when they parse)
    "nested",    # -p GROUP.KEY=VALUE, repeatable → {group: {key: value}}
    "argument",  # a positional argument (``nargs=-1``: a list)
)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: The value of an option the caller did not give; as a declaration's default: the config
#: field's (:attr:`Option.field`, the :class:`Command`'s config class).
UNSET: Any = _Unset()


@dataclass(frozen=True)
class Option:
    """One option of a command.

    Parameters
    ----------
    name : the keyword argument; the long option is ``--`` + name with ``_`` → ``-``
        (``flag`` options also get ``--no-NAME``, or :attr:`off`)
    help : what it does, shown by ``--help`` and in the API function's docstring; a callable
        returns it when it is shown (a listing of plugins)
    kind : one of :data:`KINDS`
    default : the default (None: none); a callable is called when needed (a config class's
        default, :func:`field_default`); :data:`UNSET`: the default of :attr:`field` in the
        command's config class
    parse : text or typed value → the value passed on (e.g. ``"32x32"`` → ``(32, 32)``);
        for ``list``/``multiple`` it is applied to each item
    choices : the allowed values, or a callable returning them (evaluated when needed:
        plugin names are found then)
    short : a one-letter alias, e.g. ``"-p"``
    metavar : the placeholder in ``--help``
    required : the caller must give it
    cli_type : the type of a ``value`` (or of each ``list``/``multiple`` item) when it is
        not text (``int``, ``float``); the API converts with the same function
    nargs : ``argument`` only: -1 for any number (a list), 1 for one value
    show_default : whether ``--help`` shows the default (True), or the text it shows instead
    path : a file or directory path (given as ``str`` or ``os.PathLike``; passed on as ``str``)
    field : the config field the value fills (``"threshold"``; ``"features.sr"`` for a
        nested config, see :meth:`Values.config`); None: none (the stage uses it itself)
    off : ``flag`` only: the negative option when it is not ``--no-NAME`` (``--quiet``)
    aliases : older spellings that still work on the command line, as
        ``(("--fine-tune", "fine-tune"), …)``: the option given, the value it sets
    text : value → how the command line writes it (the default shown by ``--help``)
    cli_only : presentation only (``--json``): an option of the command, not of the function
    """

    name: str
    help: str | Callable[[], str] = ""
    kind: str = "value"
    default: Any = None
    parse: Callable[[Any], Any] | None = None
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    short: str | None = None
    metavar: str | None = None
    required: bool = False
    cli_type: type | None = None
    nargs: int = 1
    show_default: bool | str = True
    path: bool = False
    field: str | None = None
    off: str | None = None
    aliases: tuple[tuple[str, Any], ...] = ()
    text: Callable[[Any], Any] | None = None
    cli_only: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.name.isidentifier():
            raise ValueError(f"option {self.name!r}: the name must be a Python identifier")
        if self.default is UNSET and self.field is None:
            raise ValueError(f"option {self.name}: a default taken from the config needs a field")

    @property
    def help_text(self) -> str:
        return self.help() if callable(self.help) else self.help

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def display(self) -> str:
        """How messages name it: ``--fooling-rate``, or ``RUN_DIR`` for an argument."""
        return (self.metavar or self.name.upper()) if self.kind == "argument" else self.flag_name

    @property
    def many(self) -> bool:
        """Whether it takes a list of values."""
        return self.kind in ("list", "multiple") or (self.kind == "argument" and self.nargs == -1)

    def default_value(self) -> Any:
        """The default, as the API function's signature shows it."""
        value = self.default() if callable(self.default) else self.default
        if self.many:
            if value is None:  # none given: the stage's own default (e.g. every fold)
                return () if self.kind == "argument" else None
            return tuple(value)
        if self.kind in ("pairs", "nested"):
            return dict(value) if value is not None else {}
        if self.kind == "switch":
            return bool(value)
        return value

    def default_text(self) -> Any:
        """The default as the command line writes it (click's default)."""
        value = self.default_value()
        if value is None:
            return None
        if self.text is not None:
            return self.text(value)
        if self.kind == "list":
            return ",".join(map(str, value)) or None
        return value

    def allowed(self) -> tuple[Any, ...] | None:
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)

    # ---- converting a given value ------------------------------------------ #
    def convert(self, value: Any, *, command: str) -> Any:
        """``value`` (text as on the command line, or typed) → the value the stage gets."""
        where = f"{command}: {self.display}"
        if value is None:
            return None
        if self.kind in ("flag", "switch"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ParameterError(f"{where} must be true or false, got {value!r}")
        if self.many:
            if isinstance(value, (str, os.PathLike)):
                items = [v.strip() for v in value.split(",")] if self.kind == "list" else [value]
                items = [v for v in items if v != ""]
            elif isinstance(value, (list, tuple)):
                items = []
                for item in value:  # a list of comma-separated texts (the command line, repeated)
                    if self.kind == "list" and isinstance(item, str):
                        items.extend(v.strip() for v in item.split(",") if v.strip())
                    else:
                        items.append(item)
            else:
                raise ParameterError(f"{where} takes a list, got {value!r}")
            return tuple(self._one(v, where) for v in items)
        if self.kind == "pairs":
            return _pairs(value, where)
        if self.kind == "nested":
            return _nested(value, where)
        return self._one(value, where)

    def _one(self, value: Any, where: str) -> Any:
        if self.cli_type is not None and isinstance(value, str):
            try:
                value = self.cli_type(value)
            except ValueError:
                raise ParameterError(f"{where} must be {_type_name(self.cli_type)}, got {value!r}") from None
        elif self.cli_type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParameterError(f"{where} must be {_type_name(self.cli_type)}, got {value!r}")
            if self.cli_type is int and isinstance(value, float):
                if not value.is_integer():
                    raise ParameterError(f"{where} must be an integer, got {value!r}")
                value = int(value)
            value = self.cli_type(value)
        elif self.path and isinstance(value, os.PathLike):
            value = os.fspath(value)
        allowed = self.allowed()
        if allowed is not None and value not in allowed:
            raise ParameterError(f"{where} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        if self.parse is None:
            return value
        try:
            return self.parse(value)
        except ParameterError as exc:  # the parser's message, said of this option
            raise ParameterError(f"{where}: {exc}") from None


def _type_name(t: type) -> str:
    return {int: "an integer", float: "a number"}.get(t, t.__name__)


def _parse_scalar(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _pairs(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {str(k).replace("-", "_"): v for k, v in value.items()}
    items = [value] if isinstance(value, str) else value
    out: dict[str, Any] = {}
    for pair in items:
        key, sep, raw = str(pair).partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"{where} must look like KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = _parse_scalar(raw)
    return out


def _nested(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if isinstance(value, Mapping):
        out: dict[str, dict[str, Any]] = {}
        for group, inner in value.items():
            if not isinstance(inner, Mapping):
                raise ParameterError(f"{where} takes {{name: {{key: value}}}}, got {group!r}: {inner!r}")
            out[str(group)] = {str(k).replace("-", "_"): v for k, v in inner.items()}
        return out
    items = [value] if isinstance(value, str) else value
    out = {}
    for pair in items:
        head, sep, raw = str(pair).partition("=")
        group, dot, key = head.partition(".")
        if not sep or not dot or not group.strip() or not key.strip():
            raise ParameterError(f"{where} must look like NAME.KEY=VALUE (e.g. pgd.steps=20), got {pair!r}")
        out.setdefault(group.strip(), {})[key.strip().replace("-", "_")] = _parse_scalar(raw)
    return out


def field_default(cls: type, name: str) -> Callable[[], Any]:
    """The default of dataclass field ``name`` of ``cls``, read when needed: a declaration never
    writes a default the config class owns."""

    def read() -> Any:
        f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
        if f is None:
            raise ValueError(f"{cls.__name__} has no field {name!r}")
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{cls.__name__}.{name} has no default")
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    return read


#: Options every computing command has.
THREADS = Option(
    "threads", cli_type=int, show_default=False,
    parse=lambda n: _at_least_one(n, "threads"),
    help="CPU threads of this process [default: OMP_NUM_THREADS, else SLURM_CPUS_PER_TASK, else the CPUs this "
         "process may use (affinity mask, cgroup quota) less those busy with other processes, divided among "
         "torchrun's ranks].")
PROGRESS = Option("progress", kind="flag", default=True,
                  help="Progress on stderr: a bar, or status lines every 30 s in a batch log.")


def _at_least_one(n: int, what: str) -> int:
    if n < 1:
        raise ParameterError(f"must be at least 1, got {n}")
    return n


class Values:
    """The converted values of one call, by option name (``v.attacks``, ``v["round"]``)."""

    def __init__(self, command: Command, values: dict[str, Any]):
        self._command = command
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"{self._command.name} has no option {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def config(self, group: str = "") -> dict[str, Any]:
        """The values of the options that fill config fields, by field name: ``group`` ``""``
        for the command's config, ``"features"`` for the fields written ``features.NAME``."""
        out = {}
        for o in self._command.options:
            if o.field is None:
                continue
            head, dot, tail = o.field.rpartition(".")
            value = self._values[o.name]
            if head == group and not (value is None and o.kind != "value"):  # a list not given: the config's
                out[tail] = value
        return out

    def __repr__(self) -> str:
        return f"Values({self._command.name}, {self._values!r})"


@dataclass(frozen=True)
class Command:
    """A command: its name, its help, its options (the CLI's and the API function's).

    Parameters
    ----------
    name : as typed after ``advaudio`` (``"attack"``, ``"store merge"``)
    help : the command's help (its first line the summary), also the API function's docstring
    options : the options and arguments in ``--help`` order (arguments in call order)
    configs : config group → the config class whose field defaults :data:`UNSET` defaults read
        (``{"": AttackStageConfig}``; ``"features"`` for options whose field is ``features.NAME``)
    """

    name: str
    help: str
    options: tuple[Option, ...]
    configs: Mapping[str, type] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        names = [o.name for o in self.options]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"command {self.name}: option(s) declared twice: {twice}")
        resolved = []
        for o in self.options:
            if o.default is UNSET:
                group, _, field = o.field.rpartition(".")
                if group not in self.configs:
                    raise ValueError(f"command {self.name}: option {o.name} reads its default from config "
                                     f"{group!r}, which it does not name")
                o = dataclasses.replace(o, default=field_default(self.configs[group], field))
            resolved.append(o)
        object.__setattr__(self, "options", tuple(resolved))

    @property
    def parameters(self) -> tuple[Option, ...]:
        """The options the API function takes (not the CLI's presentation-only ones)."""
        return tuple(o for o in self.options if not o.cli_only)

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Values:
        """The values of a call: ``args`` for the arguments in order, ``kwargs`` for the options;
        defaults filled in, every value converted.

        Raises ParameterError naming the command for an unknown keyword, a missing required
        option or argument, and a value its option cannot take.
        """
        return Values(self, bind(self.parameters, self.name, args, kwargs))

    def signature(self, returns: Any = inspect.Signature.empty) -> inspect.Signature:
        """The API function's signature: the arguments positional, the options keyword-only."""
        params = []
        for o in self.parameters:
            if o.kind == "argument" and o.nargs == -1:
                params.append(inspect.Parameter(o.name, inspect.Parameter.VAR_POSITIONAL))
            elif o.kind == "argument":
                default = inspect.Parameter.empty if o.required else o.default_value()
                params.append(inspect.Parameter(o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
            else:
                default = inspect.Parameter.empty if o.required else o.default_value()
                params.append(inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=default))
        return inspect.Signature(params, return_annotation=returns)

    def docstring(self, returns: str = "") -> str:
        """The API function's docstring: the command's help, its parameters, what it returns."""
        doc = inspect.cleandoc(self.help)
        head = f"``advaudio {self.name}`` as a function: " + doc
        parts = [head, signature_doc(self.parameters)]
        if returns:
            parts.append("Returns\n-------\n" + inspect.cleandoc(returns))
        return "\n\n".join(parts)

    def function(self, returns: type | None = None, *, doc: str = "") -> Callable[[Callable[[Values], Any]], Callable]:
        """Decorator: the body ``f(values)`` of a command → its API function, which takes the
        command's options as keyword arguments (its arguments positionally), converts and
        checks them (:meth:`bind`) and calls the body."""

        def wrap(body: Callable[[Values], Any]) -> Callable:
            def function(*args: Any, **kwargs: Any) -> Any:
                return body(self.bind(args, kwargs))

            for attribute in ("__module__", "__name__", "__qualname__"):
                setattr(function, attribute, getattr(body, attribute))
            function.__signature__ = self.signature(returns if returns is not None else inspect.Signature.empty)
            function.__doc__ = self.docstring(doc or (f":class:`{returns.__name__}`" if returns else ""))
            function.command = self
            return function

        return wrap


def bind(options: Sequence[Option], command: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The values of a call of command ``command``: ``args`` for its arguments in order,
    ``kwargs`` for its options; defaults filled in, every value converted.

    Raises ParameterError naming the command for an unknown keyword, a missing required
    option or argument, and a value its option cannot take.
    """
    by_name = {o.name: o for o in options}
    positional = [o for o in options if o.kind == "argument"]
    values: dict[str, Any] = {}
    if len(args) > len(positional) and not (positional and positional[-1].nargs == -1):
        raise ParameterError(f"{command}: takes {len(positional)} positional argument(s) "
                             f"({', '.join(o.display for o in positional) or 'none'}), got {len(args)}")
    rest = list(args)
    for o in positional:
        if not rest:
            break
        if o.nargs == -1:
            # report(["a", "b"]) as well as report("a", "b")
            one_list = len(rest) == 1 and isinstance(rest[0], (list, tuple))
            values[o.name], rest = (list(rest[0]) if one_list else list(rest)), []
        else:
            values[o.name] = rest.pop(0)
    unknown = sorted(set(kwargs) - set(by_name))
    if unknown:
        raise ParameterError(f"{command}: unknown option(s) {', '.join(unknown)}; its options: "
                             f"{', '.join(o.name for o in options)}")
    twice = sorted(set(kwargs) & set(values))
    if twice:
        raise ParameterError(f"{command}: {', '.join(twice)} given as argument and as keyword")
    values.update(kwargs)
    out = {}
    for o in options:
        given = values.get(o.name, UNSET)
        if given is UNSET or (given is None and o.kind != "value"):
            if o.required:
                raise ParameterError(f"{command}: {o.display} is required")
            out[o.name] = o.default_value()
            if o.parse is not None and out[o.name] is not None and not o.many and o.kind == "value":
                out[o.name] = o.convert(out[o.name], command=command)  # e.g. "auto" → None
        else:
            out[o.name] = o.convert(given, command=command)
        if o.required and (out[o.name] is None or (o.many and not out[o.name])):
            raise ParameterError(f"{command}: {o.display} is required")
    return out


def signature_doc(options: Sequence[Option]) -> str:
    """The ``Parameters`` section of an API function's docstring, from its options."""
    lines = ["Parameters", "----------"]
    for o in options:
        kind = {"list": "list", "multiple": "list", "pairs": "dict", "nested": "dict of dicts",
                "flag": "bool", "switch": "bool"}.get(o.kind, "")
        if o.kind == "argument":
            kind = "paths" if o.nargs == -1 and o.path else ("path" if o.path else kind)
        elif o.path and not kind:
            kind = "path"
        elif o.cli_type is not None and not kind:
            kind = o.cli_type.__name__
        if o.required:
            tail = "required"
        elif o.kind == "argument" and o.nargs == -1:
            tail = ""
        else:
            default = o.default_value()
            tail = f"default {default!r}" if o.show_default is True or default is None else f"default: {o.show_default}"
        head = ", ".join(part for part in (kind, tail) if part)
        lines.append(f"{o.name} : {head}" if head else o.name)
        if o.help_text:
            lines.append(f"    {o.help_text}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# What a command returns
# --------------------------------------------------------------------------- #
@dataclass
class CommandResult:
    """What an API function returns: :attr:`path` (what the command prints last; ``evaluate`` and the
    study commands, whose output ends with a table or a sentence, name it there), :meth:`lines`
    (the summary it prints before), :meth:`warnings` (what it prints on standard error) and
    :attr:`exit_status` (0, or 1 for a partial failure the command's help describes).

    Subclasses add the data behind them (a metrics dict, a results document …).
    """

    path: Path | None

    def lines(self) -> list[str]:
        """The summary the command prints before :attr:`path`."""
        return []

    def warnings(self) -> list[str]:
        """Lines the command prints on standard error (a skipped file, a failed check)."""
        return []

    @property
    def exit_status(self) -> int:
        return 0

    def output(self) -> list[str]:
        """Everything the command prints on standard output: :meth:`lines`, then :attr:`path`."""
        return [*self.lines(), *([str(self.path)] if self.path is not None else [])]
