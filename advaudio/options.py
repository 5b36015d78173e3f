"""A command's options, declared once: the CLI's click options and the Python API's keyword
arguments are both made from the same :class:`Option` declarations.

``advaudio attack --fooling-rate 0.9 -p pgd.steps=20 --attacks pgd,cw`` and
``advaudio.attack(fooling_rate=0.9, param={"pgd": {"steps": 20}}, attacks=["pgd", "cw"])``
are one call: a keyword is the long option with dashes as underscores; a comma-separated
or repeatable option takes a list (or the command line's text); ``KEY=VALUE`` pairs take a
dict. A value is accepted as the command line writes it (``input_size="32x32"``) or typed
(``(32, 32)``): both go through the option's own parser, and then through the stage's
config class, which validates it. A declaration holds no default a config class owns
(:func:`field_default` reads it), so nothing is written twice.

This module imports neither torch nor click at import time: a stage's light config module
declares its options here and ``advaudio COMMAND --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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

#: The value of an option the caller did not give.
UNSET = object()


@dataclass(frozen=True)
class Option:
    """One option of a command.

    Parameters
    ----------
    name : the keyword argument; the long option is ``--`` + name with ``_`` → ``-``
        (``flag`` options also get ``--no-NAME``)
    help : what it does, shown by ``--help`` and in the API function's docstring
    kind : one of :data:`KINDS`
    default : the default (None: none); a callable is called (a config class's default)
    parse : text or typed value → the value passed on (e.g. ``"32x32"`` → ``(32, 32)``);
        for ``list``/``multiple`` it is applied to each item
    choices : the allowed values, or a callable returning them (evaluated when needed:
        plugin names are found then)
    short : a one-letter alias, e.g. ``"-p"``
    metavar : the placeholder in ``--help``
    required : the caller must give it
    cli_type : the click type of a ``value`` option when it is not text (``int``, ``float``);
        the API converts with the same function
    nargs : ``argument`` only: -1 for any number (a list), 1 for one value
    show_default : the default shown by ``--help`` (True: the value itself; text: that text)
    path : a file or directory path (shown as such; given as ``str`` or ``os.PathLike``)
    """

    name: str
    help: str = ""
    kind: str = "value"
    default: Any = None
    parse: Callable[[Any], Any] | None = None
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    short: str | None = None
    metavar: str | None = None
    required: bool = False
    cli_type: type | None = None
    nargs: int = 1
    show_default: bool | str = True
    path: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default_value(self) -> Any:
        value = self.default() if callable(self.default) else self.default
        if self.kind in ("list", "multiple") and value is not None:
            return tuple(value)
        if self.kind == "argument" and self.nargs == -1 and value is None:
            return ()
        return value

    def allowed(self) -> tuple[str, ...] | None:
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)

    # ---- converting a given value ------------------------------------------ #
    def convert(self, value: Any, *, command: str) -> Any:
        """``value`` (text as on the command line, or typed) → the value the stage gets."""
        where = f"{command}: {self.flag_name if self.kind != 'argument' else self.name.upper()}"
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
        if self.kind in ("list", "multiple") or (self.kind == "argument" and self.nargs == -1):
            if isinstance(value, str):
                items = [v.strip() for v in value.split(",")] if self.kind == "list" else [value]
                items = [v for v in items if v]
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
        elif self.cli_type in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ParameterError(f"{where} must be {_type_name(self.cli_type)}, got {value!r}")
        elif self.cli_type is int and isinstance(value, float):
            if not value.is_integer():
                raise ParameterError(f"{where} must be an integer, got {value!r}")
            value = int(value)
        elif self.path and value is not None and not isinstance(value, str):
            value = str(value)  # an os.PathLike
        allowed = self.allowed()
        if allowed is not None and value not in allowed:
            raise ParameterError(f"{where} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return self.parse(value) if self.parse is not None else value


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
        if not sep or not key:
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
        if not sep or not dot or not group or not key:
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
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    return read


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
        raise ParameterError(f"{command}: takes {len(positional)} positional argument(s), got {len(args)}")
    rest = list(args)
    for o in positional:
        if not rest:
            break
        if o.nargs == -1:
            values[o.name], rest = list(rest), []
        else:
            values[o.name] = rest.pop(0)
    unknown = sorted(set(kwargs) - set(by_name))
    if unknown:
        raise ParameterError(f"{command}: unknown option(s) {', '.join(unknown)}; options: "
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
                what = o.name.upper() if o.kind == "argument" else o.flag_name
                raise ParameterError(f"{command}: {what} is required")
            out[o.name] = o.default_value()
        else:
            out[o.name] = o.convert(given, command=command)
        if o.required and out[o.name] in (None, ()):
            what = o.name.upper() if o.kind == "argument" else o.flag_name
            raise ParameterError(f"{command}: {what} is required")
    return out


def signature_doc(options: Sequence[Option]) -> str:
    """The ``Parameters`` section of an API function's docstring, from its options."""
    lines = ["Parameters", "----------"]
    for o in options:
        default = o.default_value() if not callable(o.default) else "(the config's default)"
        kind = {"list": "list", "multiple": "list", "pairs": "dict", "nested": "dict of dicts"}.get(o.kind, "")
        head = f"{o.name} : {kind + ', ' if kind else ''}" + ("required" if o.required else f"default {default!r}")
        lines.append(head)
        if o.help:
            lines.append(f"    {o.help}")
    return "\n".join(lines)
