"""The options of ``advaudio listen`` (:data:`LISTEN`), light; the stage is :mod:`advaudio.stages.listen`."""

from __future__ import annotations

from pathlib import Path

from advaudio.errors import ParameterError
from advaudio.options import Command, Option

__all__ = ["LISTEN", "METHODS", "existing"]

#: Phases of the inverse STFT (:data:`advaudio.reporting.listening.METHODS`: a test checks they agree).
METHODS = ("phase", "griffinlim")


def existing(kind: str):
    """A parser that refuses a path that is not an existing ``kind`` (``"file"`` or ``"directory"``)."""
    def check(path: str) -> str:
        p = Path(path)
        if not (p.is_file() if kind == "file" else p.is_dir()):
            raise ParameterError(f"no {kind} at {path}" + (" (it is a directory)" if kind == "file" and p.is_dir()
                                                           else " (it is a file)" if p.exists() else ""))
        return path
    return check


LISTEN = Command(
    "listen",
    """Turn one adversarial example of an stft-view SHARD into WAV files and print its SNR.

    The adversarial WAV's path is the last line of standard output.
    """,
    (
        Option("shard", kind="argument", required=True, path=True, metavar="SHARD", parse=existing("file"),
               help="An adversarial shard (<store>/adversarial/<name>.h5) of an stft view."),
        Option("out", required=True, path=True, help="Directory of the WAV files."),
        Option("sample", cli_type=int, help="Row of the shard [default: the first clip fooled within the budget]."),
        Option("method", default="phase", choices=METHODS,
               help="Phase of the inverse STFT: the clean clip's, or Griffin-Lim's estimate."),
        Option("store", path=True, help="Feature store [default: the shard's, two directories up]."),
        Option("audio_root", path=True, help="Dataset root, if it moved since featurization."),
    ),
)
