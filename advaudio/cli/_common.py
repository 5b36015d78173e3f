"""Helpers shared by the command modules: option parsing, defaults from the config classes, threads."""

from __future__ import annotations

import json

import click

from advaudio.errors import ParameterError


def config_default(cls, name: str):
    """The default of field ``name`` of dataclass ``cls``: the CLI never writes a default twice."""
    import dataclasses

    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def size_text(size) -> str:
    return "none" if size is None else f"{size[0]}x{size[1]}"


def split_csv(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return items or None


def int_csv(value: str | None, what: str) -> tuple[int, ...] | None:
    items = split_csv(value)
    if items is None:
        return None
    try:
        return tuple(int(v) for v in items)
    except ValueError:
        raise ParameterError(f"{what} must be comma-separated integers, got {value!r}") from None


def key_values(pairs: tuple[str, ...], what: str = "dataset option") -> dict:
    """``KEY=VALUE`` pairs; values parsed as JSON when they parse (numbers, booleans)."""
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ParameterError(f"{what} must look like KEY=VALUE, got {pair!r}")
        try:
            out[key.replace("-", "_")] = json.loads(raw)
        except ValueError:
            out[key.replace("-", "_")] = raw
    return out


def computes(fn):
    """``--threads`` for a command that computes; threads are set before its body runs."""
    import functools

    @click.option("--threads", type=click.IntRange(min=1), default=None,
                  help="CPU threads of this process [default: OMP_NUM_THREADS, else SLURM_CPUS_PER_TASK, "
                       "else the CPUs this process may use (affinity mask, cgroup quota) less those busy "
                       "with other processes, "
                       "divided among torchrun's ranks].")
    @functools.wraps(fn)
    def run(*args, threads, **kwargs):
        from advaudio.threads import configure_threads

        configure_threads(threads)
        return fn(*args, **kwargs)
    return run

def with_options(options):
    def wrap(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return wrap
