"""Adversarial examples of one round: the paper's Fig. 1 grid and, for stft views, WAV files.

The test-fold shards of a round are read through :class:`advaudio.store.AdversarialShard`,
checked against their feature store (:func:`advaudio.store.check_same_store`), and
the clean inputs read through ``Store.reader()``; the audio goes through
:func:`advaudio.reporting.listening.listen`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from advaudio.errors import StoreError
from advaudio.reporting.discovery import AttackEntry, RunData
from advaudio.reporting.render import fmt_num
from advaudio.store import AdversarialShard, Store, check_same_store, shard_path
from advaudio.store.results import AttackRecord, AttackResults
from advaudio.views import View

__all__ = ["round_examples", "safe_name"]


def safe_name(text: str) -> str:
    """``text`` as a file-name part: runs of anything but letters, digits, ``._-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def _shard_path(record: AttackRecord, document: AttackResults) -> Path | None:
    if not record.shard:
        return None
    path = Path(record.shard)
    if path.is_file():
        return path
    store = document.store
    if store and shard_path(store, path.stem).is_file():  # the store moved with its shards
        return shard_path(store, path.stem)
    return None


def _open_store(entries: list[AttackEntry], shard: Path):
    for cand in [e.document.store for e in entries] + [shard.parent.parent]:
        if cand and Path(cand).is_dir():
            try:
                return Store(cand)
            except Exception:  # noqa: BLE001 - an unusable store only loses the examples
                continue
    return None


def _read_shard(path: Path) -> dict[str, Any]:
    shard = AdversarialShard.open(path)
    d = shard.read([k for k in ("adversarial", "clean_index", "label", "target", "predicted", "attacked",
                                "success", "within_budget", "minimal_budget") if k in shard])
    d["adversarial"] = np.asarray(d["adversarial"], np.float32)
    d["file"] = path
    d["view"] = shard.attrs.view
    d["fingerprint"] = shard.attrs.store_fingerprint
    return d


def round_examples(run: RunData, rnd: int, out_dir: Path, *, max_clips: int, listen: bool,
                   warnings: list[str]) -> dict[str, Any] | None:
    """Fig. 1 grid (and WAVs for an stft view) for the test-split shards of one round."""
    from advaudio.reporting import figures  # matplotlib: only when there is a figure to draw

    entries = [a for a in run.attacks if a.round == rnd and a.split == "test" and a.slice is None]
    shards = []
    for e in entries:
        p = _shard_path(e.record, e.document)
        if p is not None:
            shards.append((e, p))
        elif e.record.shard:
            warnings.append(f"{run.label} round {rnd}: shard of {e.attack} not found ({e.record.shard})")
    if not shards or max_clips <= 0:
        return None
    try:
        loaded = [(e, p, _read_shard(p)) for e, p in shards]
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"{run.label} round {rnd}: cannot read the shards ({exc})")
        return None
    store = _open_store([e for e, _, _ in loaded], loaded[0][1])
    if store is None:
        warnings.append(f"{run.label} round {rnd}: the feature store is not available; no example figure")
        return None
    d0 = loaded[0][2]
    if d0["fingerprint"] is not None:
        try:
            check_same_store(store, str(d0["fingerprint"]), what=f"adversarial shard {d0['file']}")
        except StoreError as exc:
            warnings.append(f"{run.label} round {rnd}: {exc}")
            return None
    if d0["view"] is None:
        warnings.append(f"{run.label} round {rnd}: {d0['file']} does not record its view; no example figure")
        return None
    view = View.from_dict(dict(d0["view"]))
    # clips present in every shard; prefer those fooled within the budget by every attack
    common = set(int(i) for i in d0["clean_index"])
    for _, _, d in loaded[1:]:
        common &= set(int(i) for i in d["clean_index"])
    if not common:
        warnings.append(f"{run.label} round {rnd}: the shards share no clip")
        return None

    def score_of(d, row) -> int:
        """2: attacked and fooled within the budget; 1: attacked; 0: not attacked (wrong when clean)."""
        i = int(np.flatnonzero(d["clean_index"] == row)[0])
        attacked = bool(d["attacked"][i]) if "attacked" in d else True
        fooled = d["within_budget"] if "within_budget" in d else d.get("success")
        return (1 if attacked else 0) + (1 if attacked and fooled is not None and bool(fooled[i]) else 0)

    ordered = sorted(common)
    score = {row: sum(score_of(d, row) for _, _, d in loaded) for row in ordered}
    rows = sorted(ordered, key=lambda r: (-score[r], ordered.index(r)))[:max_clips]
    rows = sorted(rows)
    with store.reader() as reader:
        clean = view.read(reader, rows).numpy()
    adversarials, titles, index = {}, {}, {}
    for e, p, d in loaded:
        idx = [int(np.flatnonzero(d["clean_index"] == r)[0]) for r in rows]
        index[e.attack] = (p, idx, d)
        adversarials[e.attack] = d["adversarial"][idx]
        titles[e.attack] = f"{e.attack}\n{e.record.norm} ε={fmt_num(e.record.budget, 3)}" \
            + ("" if e.record.reached else " (n.r.)")
    classes = store.classes
    labels = [f"{store.clip_ids[r]}\n({classes[int(store.labels[r])]})" for r in rows]
    fig_path = out_dir / "figures" / f"examples-{safe_name(run.label)}-round{rnd:02d}.png"
    figures.adversarial_grid(clean, adversarials, fig_path, titles=titles, row_labels=labels,
                             diff_scale="column",
                             title=f"{run.model_label} · {run.view} · round {rnd}: clean vs adversarial")
    clips = []
    for k, r in enumerate(rows):
        per = {}
        for attack, (p, idx, d) in index.items():
            i = idx[k]
            per[attack] = {
                "shard": str(p), "sample": i,
                "target": int(d["target"][i]) if "target" in d else None,
                "predicted": int(d["predicted"][i]) if "predicted" in d else None,
                "success": bool(d["success"][i]) if "success" in d else None,
                "within_budget": bool(d["within_budget"][i]) if "within_budget" in d else None,
                "snr_db": None,
            }
        clips.append({"row": int(r), "clip_id": str(store.clip_ids[r]), "label": int(store.labels[r]),
                      "class": classes[int(store.labels[r])], "attacks": per})
    result = {"round": rnd, "figure": str(fig_path.relative_to(out_dir)), "clips": clips, "listening": [],
              "view": view.name}
    if listen and tuple(view.representations) == ("stft",):
        from advaudio.reporting.listening import listen as listen_one

        for clip in clips:
            for attack, info in clip["attacks"].items():
                d = index[attack][2]
                if "attacked" in d and not bool(d["attacked"][info["sample"]]):
                    continue  # misclassified when clean: not perturbed, nothing to hear
                if "minimal_budget" in d and not np.isfinite(d["minimal_budget"][info["sample"]]):
                    continue  # per-clip search, never fooled: the shard holds the clean input
                prefix = f"{safe_name(run.label)}-r{rnd:02d}-{safe_name(clip['clip_id'])}-{safe_name(attack)}"
                try:
                    res = listen_one(info["shard"], out_dir / "audio", sample=info["sample"], store=store,
                                     prefix=prefix)
                except Exception as exc:  # noqa: BLE001 - e.g. the dataset's audio moved
                    warnings.append(f"{run.label} round {rnd}: no audio for {clip['clip_id']} / {attack}: {exc}")
                    continue
                entry = res.to_dict()
                for k in ("clean_wav", "clean_resynth_wav", "adversarial_wav"):
                    entry[k] = str(Path(entry[k]).relative_to(out_dir.resolve()))
                entry["class"] = clip["class"]
                result["listening"].append(entry)
    return result
