"""Exceptions for problems a user can fix.

The CLI prints any :class:`AdvaudioError` as a single line and exits with
status 2; everything else is a bug and keeps its traceback.
"""


class AdvaudioError(Exception):
    """Base class of errors caused by input, configuration or files on disk."""


class ParameterError(AdvaudioError, ValueError):
    """A parameter has an invalid value (librosa's convention)."""


class DatasetError(AdvaudioError):
    """A dataset tree or its metadata is missing or malformed."""


class AudioError(AdvaudioError):
    """One clip cannot be used: unreadable, empty, truncated or silent.

    Featurization records the message as the clip's reason and goes on.
    """


class StoreError(AdvaudioError):
    """A feature store, shard or checkpoint is missing, incomplete or does not fit."""


class DamagedFileError(StoreError):
    """A file a stage trusts fails its checksum or its schema: damaged, truncated or edited.

    The message names the file and what is wrong with it. Callers that can do without
    the file (``report`` skips it with a warning, ``study run`` sets a damaged
    ``cell.json`` aside and recomputes it) catch this class, never a plain StoreError.
    """


def check_known_fields(cls, data, what: str) -> None:
    """Raise ParameterError naming every key of ``data`` that is not a field of dataclass ``cls``.

    The stage configurations are rebuilt from JSON with ``cls(**data)``; a key
    that is not a field is a typo or a newer file, never something to ignore.
    """
    import dataclasses

    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ParameterError(f"unknown {what}: {', '.join(unknown)}")


class PluginError(AdvaudioError):
    """A plugin (an entry point of an installed distribution) is missing, broken or not what its group expects."""
