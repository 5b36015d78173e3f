"""The run-directory layout: every file name a stage writes beside a checkpoint, in one place.

A run directory as ``advaudio train --out`` and ``advaudio rounds`` lay it out::

    RUN_DIR/checkpoint.pt, metrics.json            round 0 (trained on clean data)
    RUN_DIR/rounds.json                            the options of `advaudio rounds` in this directory
    RUN_DIR/attack-round00-test.json               attack results: round 0, test split
    RUN_DIR/attack-round00-train-slice000of004.json  one slice of a job-array attack
    RUN_DIR/round01/checkpoint.pt, metrics.json    round 1 (retrained) …
    RUN_DIR/round01/attack-round01-test.json

and the adversarial shards those attacks write into the store
(:mod:`advaudio.store.adversarial`)::

    <store>/adversarial/round00-test-<sha10>-pgd.h5
    <store>/adversarial/round00-train-<sha10>-pgd-slice000of004.h5

A waveform-domain attack (``attack --domain waveform``) says so after the split:
``attack-round00-test-waveform.json``, ``round00-test-waveform-<sha10>-pgd.h5``
(the feature domain's names are unchanged), so the two threat models of one
checkpoint never share a file.

Names are built and parsed only here; shell scripts ask ``advaudio path …``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from advaudio.errors import ParameterError

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
#: The options ``advaudio rounds`` ran a run directory with (a rerun must use the same).
ROUNDS_OPTIONS_NAME = "rounds.json"
#: Every attack results file, sliced or not.
SPLITS = ("test", "train")  # a checkpoint's held-out fold and its training folds

ATTACK_RESULTS_GLOB = "attack-round*-*.json"

#: The threat models (:mod:`advaudio.attacks.domain`), the first the default.
DOMAINS = ("feature", "waveform")
#: The threat models whose files carry their name (the feature domain's do not: they came first).
NAMED_DOMAINS = ("waveform",)

_SLICE = r"(?:-slice(?P<i>\d{3,})of(?P<n>\d{3,}))?"
_DOMAIN = r"(?:-(?P<domain>" + "|".join(NAMED_DOMAINS) + "))?"
_RESULTS = re.compile(r"^attack-round(?P<round>\d+)-(?P<split>[^-]+?)" + _DOMAIN + _SLICE + r"\.json$")
_SHARD = re.compile(r"^round(?P<round>\d+)-(?P<split>test|train)" + _DOMAIN + r"-(?P<sha>[0-9a-f]{10})-(?P<attack>.+?)"
                    + _SLICE + "$")
# Directories named by hand ("round1", "round-2") count too, not only round_dir's "round01".
_ROUND_DIR = re.compile(r"round[-_]?(\d+)$", re.IGNORECASE)


def _slice_suffix(slice: tuple[int, int] | None) -> str:
    return "" if slice is None else f"-slice{slice[0]:03d}of{slice[1]:03d}"


def _parsed_slice(m: re.Match) -> tuple[int, int] | None:
    return (int(m["i"]), int(m["n"])) if m["i"] is not None else None


def _domain_suffix(domain: str) -> str:
    """``-waveform`` for a waveform-domain file, nothing for the feature domain's."""
    if domain in NAMED_DOMAINS:
        return f"-{domain}"
    if domain != "feature":
        raise ParameterError(f"unknown domain {domain!r}")
    return ""


def round_dir(run_dir: str | os.PathLike, round: int) -> Path:
    """Directory of round ``round``: the run directory itself for round 0, else ``roundKK/`` in it."""
    return Path(run_dir) if round == 0 else Path(run_dir) / f"round{round:02d}"


def round_of_directory(name: str) -> int | None:
    """The round a directory's name says (``round01``, ``round-2`` …), None when it says none."""
    m = _ROUND_DIR.search(name)
    return int(m.group(1)) if m else None


def checkpoint_path(run_dir: str | os.PathLike, *, round: int = 0) -> Path:
    """``checkpoint.pt`` of round ``round`` of ``run_dir``."""
    return round_dir(run_dir, round) / CHECKPOINT_NAME


def metrics_path(run_dir: str | os.PathLike, *, round: int = 0) -> Path:
    """``metrics.json`` of round ``round`` of ``run_dir``."""
    return round_dir(run_dir, round) / METRICS_NAME


def rounds_options_path(run_dir: str | os.PathLike) -> Path:
    """``rounds.json`` of ``run_dir``: the options its rounds ran with."""
    return Path(run_dir) / ROUNDS_OPTIONS_NAME


def attack_results_name(*, round: int, split: str, slice: tuple[int, int] | None = None,
                        domain: str = "feature") -> str:
    """``attack-round<KK>-<split>[-waveform][-slice<III>of<NNN>].json``: the results of one attack run (or slice)."""
    return f"attack-round{round:02d}-{split}{_domain_suffix(domain)}{_slice_suffix(slice)}.json"


def attack_results_path(run_dir: str | os.PathLike, *, round: int, split: str,
                        slice: tuple[int, int] | None = None, domain: str = "feature") -> Path:
    """Where the attack stage of ``advaudio rounds`` writes round ``round``'s results: beside its checkpoint."""
    return round_dir(run_dir, round) / attack_results_name(round=round, split=split, slice=slice, domain=domain)


def slice_results_glob(*, round: int, split: str, domain: str = "feature") -> str:
    """Glob of the results files of every slice of (round, split[, domain])."""
    return f"attack-round{round:02d}-{split}{_domain_suffix(domain)}-slice*of*.json"


@dataclass(frozen=True)
class AttackResultsName:
    """What an attack results file's name says."""

    round: int
    split: str
    slice: tuple[int, int] | None = None
    domain: str = "feature"


def parse_attack_results_name(name: str) -> AttackResultsName | None:
    """Inverse of :func:`attack_results_name`; None for any other name."""
    m = _RESULTS.match(name)
    return AttackResultsName(int(m["round"]), m["split"], _parsed_slice(m), m["domain"] or "feature") if m else None


def shard_stem(*, round: int, split: str, checkpoint_sha: str, attack: str,
               slice: tuple[int, int] | None = None, domain: str = "feature") -> str:
    """``round<KK>-<split>[-waveform]-<sha10>-<attack>[-slice<III>of<NNN>]``: an adversarial shard's stem."""
    return f"round{round:02d}-{split}{_domain_suffix(domain)}-{checkpoint_sha[:10]}-{attack}{_slice_suffix(slice)}"


@dataclass(frozen=True)
class ShardStem:
    """What an adversarial shard's stem says (``sha10``: the checkpoint sha256's first 10 digits)."""

    round: int
    split: str
    sha10: str
    attack: str
    slice: tuple[int, int] | None = None
    domain: str = "feature"


def parse_shard_stem(stem: str) -> ShardStem | None:
    """Inverse of :func:`shard_stem`; None for any other stem."""
    m = _SHARD.match(stem)
    return ShardStem(int(m["round"]), m["split"], m["sha"], m["attack"], _parsed_slice(m),
                     m["domain"] or "feature") if m else None


# --------------------------------------------------------------------------- #
# Study directories (``advaudio study``)
# --------------------------------------------------------------------------- #
#: A study directory::
#:
#:     STUDY_DIR/study.json                       the study as resolved (what `run` ran)
#:     STUDY_DIR/stores/<dataset>-<fingerprint>/  one feature store per dataset
#:     STUDY_DIR/cells/<cell id>/run/             the cell's run directory (train + rounds, as above)
#:     STUDY_DIR/cells/<cell id>/cell.json        the cell's summary, written last: the cell is done
#:     STUDY_DIR/cells/<cell id>/state.json       running / failed, with the reason
#:     STUDY_DIR/cells/<cell id>/cell.log         the cell's progress output
#:     STUDY_DIR/cells/<cell id>/cell.lock        held while a process runs the cell
#:     STUDY_DIR/report/                          `advaudio study report`
STUDY_NAME = "study.json"
CELL_SUMMARY_NAME = "cell.json"
CELL_STATE_NAME = "state.json"
CELL_LOG_NAME = "cell.log"
#: held (flock) by the process running the cell: a second run of the same cell is refused
CELL_LOCK_NAME = "cell.lock"


def study_stores_dir(study_dir: str | os.PathLike) -> Path:
    """Where a study's feature stores live (the featurize cache)."""
    return Path(study_dir) / "stores"


def study_cell_dir(study_dir: str | os.PathLike, cell_id: str) -> Path:
    """Directory of one cell of a study."""
    return Path(study_dir) / "cells" / cell_id


def study_cell_dirs(study_dir: str | os.PathLike) -> list[Path]:
    """Every cell directory of a study, sorted (whatever its state)."""
    cells = Path(study_dir) / "cells"
    return sorted(p for p in cells.iterdir() if p.is_dir()) if cells.is_dir() else []


def cell_run_dir(cell_dir: str | os.PathLike) -> Path:
    """The run directory of a cell (``advaudio rounds`` layout)."""
    return Path(cell_dir) / "run"


def study_report_dir(study_dir: str | os.PathLike) -> Path:
    """Default directory of ``advaudio study report``."""
    return Path(study_dir) / "report"
