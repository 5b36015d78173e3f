"""Plugins: registry entries that installed distributions declare as entry points.

A distribution that declares, in its ``pyproject.toml``::

    [project.entry-points."advaudio.models"]
    tiny = "mypkg:tiny"

adds the model ``tiny`` wherever a built-in one is accepted: every command, study
files, Dask workers, torchrun ranks and SLURM jobs. The groups and what their
entry points name:

========================== =====================================================
``advaudio.models``        a factory ``f(*, in_channels, num_classes, width, **options)``
                           returning a :class:`~advaudio.models.Classifier` or any
                           ``torch.nn.Module`` (wrapped as one)
``advaudio.attacks``       an :class:`~advaudio.attacks.AttackSpec` subclass (or
                           instance) whose ``params_type`` subclasses
                           :class:`~advaudio.attacks.AttackParams`
``advaudio.datasets``      a reader ``reader(root, **options) -> ClipTable``
``advaudio.representations`` a :class:`~advaudio.features.Representation` (or an
                           object with ``compute(y, config, shared)`` and ``n_bands(config)``)
``advaudio.defenses``      a :class:`~advaudio.training.defenses.Defense` subclass or a
                           factory ``f(**options)`` returning an object with ``loss``
========================== =====================================================

Why entry points and lazy lookup: every process finds the plugins by itself, the first
time it looks a name up or lists a registry (:class:`Registry`), so nothing has to
be pickled to a Dask worker, passed to a torchrun rank or written into a SLURM script:
importing advaudio is enough.  Listing reads only the installed distributions'
metadata (cheap, no plugin imported: ``advaudio --help`` stays fast); a plugin's module
is imported when its name is first looked up.

Failures stay local.  A plugin that fails to import or is not what its group expects
is a one-line :class:`~advaudio.errors.PluginError` naming its distribution when it
is asked for, and a one-line :class:`PluginWarning` when a whole registry is listed;
it never breaks a command that does not use it.  A plugin named like a built-in, or
like another distribution's plugin of the same group, is refused with a one-line
warning: the built-in (or the first distribution, by name) keeps the name.

Provenance: :meth:`PluginInfo.record` (group, name, distribution, version) is what
checkpoints, stores, results files and study reports record; :func:`require` turns a
recorded plugin that is no longer installed into one line naming the distribution.
"""

from __future__ import annotations

import importlib
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from advaudio.errors import PluginError

__all__ = ["GROUPS", "PluginInfo", "PluginWarning", "Registry", "declared", "format_records", "merge_records",
           "one_line_warnings", "refresh", "require", "used"]

#: Entry-point group → the module that owns its registry (imported by :func:`require` and :func:`used`).
GROUPS: dict[str, str] = {
    "advaudio.models": "advaudio.models.builtins",
    "advaudio.attacks": "advaudio.attacks.registry",
    "advaudio.datasets": "advaudio.datasets.registry",
    "advaudio.representations": "advaudio.features.representations",
    "advaudio.defenses": "advaudio.training.defenses",
}

T = TypeVar("T")


class PluginWarning(UserWarning):
    """A plugin was refused or could not be loaded; the message is one line naming its distribution."""


def warn(text: str) -> None:
    """One-line warning: the CLI prints it as ``advaudio: warning: …`` (see :mod:`advaudio.cli`)."""
    warnings.warn(text, PluginWarning, stacklevel=3)


#: What a group's plugins are called in messages.
WHAT: dict[str, str] = {"advaudio.models": "model", "advaudio.attacks": "attack", "advaudio.datasets": "dataset",
                        "advaudio.representations": "representation", "advaudio.defenses": "defense"}
_warned: set[str] = set()  # each clash is said once per process, whether the names or the registry meet it first


def _usable(group: str, builtins: Iterable[str]) -> dict[str, PluginInfo]:
    """The declared plugins of ``group`` that take no built-in's name and no earlier distribution's
    (by distribution name), from metadata; every refused one warned about once."""
    builtins = set(builtins)
    chosen: dict[str, PluginInfo] = {}
    for info in sorted(declared(group), key=lambda i: (i.name, i.distribution.lower())):
        what = WHAT.get(group, "plugin")
        if info.name in builtins:
            text = f"plugin {what} {info.name!r} of {info.describe()} is refused: advaudio has a built-in {what} of that name"
        elif info.name in chosen:
            text = f"plugin {what} {info.name!r} of {info.describe()} is refused: {chosen[info.name].describe()} declares it too"
        else:
            chosen[info.name] = info
            continue
        with _lock:
            new = text not in _warned
            _warned.add(text)
        if new:
            warn(text)
    return chosen


@dataclass(frozen=True)
class PluginInfo:
    """One declared entry point: where it comes from (the distribution and its version)."""

    group: str
    name: str
    value: str  # "module:attribute"
    distribution: str
    version: str

    def record(self) -> dict[str, str]:
        """What files record about the plugin: group, name, distribution, version."""
        return {"group": self.group, "name": self.name, "distribution": self.distribution, "version": self.version}

    def describe(self) -> str:
        return f"distribution {self.distribution} (version {self.version})"


_lock = threading.RLock()
_declared: dict[str, list[PluginInfo]] | None = None
_registries: dict[str, Registry] = {}


def declared(group: str) -> list[PluginInfo]:
    """The entry points of ``group`` in every installed distribution (metadata only, cached per process)."""
    global _declared
    with _lock:
        if _declared is None:
            _declared = _scan()
        return list(_declared.get(group, ()))


def names(group: str, builtins: Iterable[str]) -> list[str]:
    """The names a registry of ``group`` with these built-ins lists, read from metadata only (no plugin
    and no registry owner is imported: option choices and ``--help`` stay light): the built-ins, then
    the declared plugins' names that no built-in takes, sorted."""
    builtins = list(builtins)
    return builtins + sorted(_usable(group, builtins))


def _scan() -> dict[str, list[PluginInfo]]:
    # importlib.metadata.entry_points() reads only entry_points.txt of each distribution (not their
    # METADATA: ~4x faster than walking distributions()), and keeps the first copy of a
    # distribution found twice on sys.path: the importable one.
    from importlib.metadata import entry_points

    try:
        points = entry_points()
    except Exception as exc:  # a damaged dist-info somewhere: no plugins, nothing else breaks
        warn(f"cannot read the installed distributions' entry points ({_one_line(exc)}): no plugins")
        return {}
    found: dict[str, list[PluginInfo]] = {}
    for group in GROUPS:
        for ep in points.select(group=group):
            dist = ep.dist
            name = (dist.name if dist is not None else None) or "?"
            version = (dist.version if dist is not None else None) or "?"
            found.setdefault(group, []).append(PluginInfo(group, ep.name, ep.value, name, version))
    return found


def refresh() -> None:
    """Forget what was discovered and loaded (after installing or removing a plugin in a running process)."""
    global _declared
    with _lock:
        _declared = None
        _warned.clear()
        for registry in _registries.values():
            registry._reset()


def _load_object(info: PluginInfo) -> Any:
    module_name, _, attribute = info.value.partition(":")
    try:
        obj = importlib.import_module(module_name.strip())
        for part in filter(None, attribute.strip().split(".")):
            obj = getattr(obj, part)
    except Exception as exc:  # any failure of foreign code is the plugin's, said in one line
        raise PluginError(f"{_what(info)} from {info.describe()} failed to load: {_one_line(exc)}") from None
    return obj


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _what(info: PluginInfo) -> str:
    kind = info.group.rpartition(".")[2].rstrip("s")
    return f"{kind} {info.name!r}"


class Registry(Mapping[str, T], Generic[T]):
    """Name → entry of one group: the built-ins, then the plugins installed in this process's environment.

    A read-only mapping: ``name in registry`` and iteration read metadata only;
    ``registry[name]`` loads a plugin on first use (``adapt(obj, info)`` turns what its
    entry point names into a registry entry, or raises :class:`PluginError`) and caches
    it.  ``builtins`` is the owner's own dict (a ``@register`` decorator may still add
    to it); a plugin never shadows it.
    """

    def __init__(self, group: str, builtins: Mapping[str, T], *, what: str,
                 adapt: Callable[[Any, PluginInfo], T] | None = None) -> None:
        if group not in GROUPS:
            raise ValueError(f"unknown plugin group {group!r}")
        self.group, self.builtins, self.what = group, builtins, what
        self._adapt = adapt
        self._reset()
        _registries[group] = self

    def _reset(self) -> None:
        self._plugins: dict[str, PluginInfo] | None = None
        self._loaded: dict[str, T] = {}

    def plugins(self) -> dict[str, PluginInfo]:
        """The usable plugin names of this group (no clash), from metadata; clashes warned about once."""
        with _lock:
            if self._plugins is None:
                self._plugins = _usable(self.group, self.builtins)
            return self._plugins

    def plugin(self, name: str) -> PluginInfo | None:
        """Where ``name`` comes from when it is a plugin; None for a built-in or an unknown name."""
        if not isinstance(name, str) or name in self.builtins:
            return None
        return self.plugins().get(name)

    def __getitem__(self, name: str) -> T:
        if isinstance(name, str) and name in self.builtins:
            return self.builtins[name]
        info = self.plugin(name) if isinstance(name, str) else None
        if info is None:
            raise KeyError(name)
        with _lock:
            if name not in self._loaded:
                obj = _load_object(info)
                try:
                    self._loaded[name] = self._adapt(obj, info) if self._adapt else obj
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(f"{_what(info)} from {info.describe()} is not a usable {self.what}: "
                                      f"{_one_line(exc)}") from None
            return self._loaded[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.builtins or name in self.plugins())

    def __iter__(self) -> Iterator[str]:
        yield from list(self.builtins)
        yield from list(self.plugins())

    def __len__(self) -> int:
        return len(self.builtins) + len(self.plugins())

    def __repr__(self) -> str:
        return f"Registry({self.group!r}, {list(self)!r})"

    def usable(self) -> dict[str, T]:
        """Every entry, plugins loaded; a plugin that fails to load is left out with a one-line warning
        (listings: one broken plugin must not hide the others)."""
        out: dict[str, T] = dict(self.builtins)
        for name in self.plugins():
            try:
                out[name] = self[name]
            except PluginError as exc:
                warn(f"{exc}; left out")
        return out


def registry(group: str) -> Registry:
    """The registry of ``group``, its owning module imported on first use (by name: plugins is the
    layer every owner registers with)."""
    if group not in _registries:
        if group not in GROUPS:
            raise PluginError(f"unknown plugin group {group!r}")
        importlib.import_module(GROUPS[group])
    return _registries[group]


def used(entries: Iterable[tuple[str, str | None]]) -> list[dict[str, str]]:
    """The records of the plugins among ``(group, name)`` pairs (built-ins and None are skipped), once each."""
    out: list[dict[str, str]] = []
    for group, name in entries:
        if name is None:
            continue
        info = registry(group).plugin(name)
        if info is not None and info.record() not in out:
            out.append(info.record())
    return out


def require(records: Iterable[Mapping[str, Any]], *, where: str, groups: Iterable[str] | None = None) -> None:
    """PluginError unless every recorded plugin (of ``groups``) is installed, from the same distribution.

    ``where`` names the file that recorded them. Another version installed is a warning only:
    the file's numbers came from the recorded one.
    """
    wanted = None if groups is None else set(groups)
    for r in records or ():
        group, name = r.get("group"), r.get("name")
        if (wanted is not None and group not in wanted) or group not in GROUPS or not name:
            continue
        dist, version = r.get("distribution", "?"), r.get("version", "?")
        kind = group.rpartition(".")[2].rstrip("s")
        info = registry(group).plugin(name)
        if info is None or info.distribution.lower() != str(dist).lower():
            also = f" (installed: {info.describe()})" if info is not None else ""
            raise PluginError(f"{where}: {kind} {name!r} comes from distribution {dist} (version {version}), which "
                              f"is not installed{also}: pip install {dist}")
        if info.version != version:
            warn(f"{where}: {kind} {name!r} was made with {dist} {version}; {info.version} is installed")


def format_records(records: Iterable[Mapping[str, Any]]) -> str:
    """``name (group: distribution version)`` per record, comma-separated; ``none`` when there are none."""
    items = [f"{r['name']} ({r['group'].rpartition('.')[2]}: {r['distribution']} {r['version']})" for r in records]
    return ", ".join(items) or "none"


def merge_records(*lists: Iterable[Mapping[str, Any]] | None) -> list[dict[str, str]]:
    """The union of record lists, first occurrence kept, in order."""
    out: list[dict[str, str]] = []
    for records in lists:
        for r in records or ():
            d = {k: str(r[k]) for k in ("group", "name", "distribution", "version") if k in r}
            if d not in out:
                out.append(d)
    return out


def one_line_warnings() -> None:
    """Print plugin warnings as one line (the CLI calls this once)."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PluginWarning):
            print(f"advaudio: warning: {message}", file=file or sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
