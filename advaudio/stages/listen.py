"""The listen stage: one adversarial example of a shard → WAV files (clean, clean resynthesised,
adversarial) and their signal-to-perturbation ratios; the resynthesis itself is
:mod:`advaudio.reporting.listening` (:func:`~advaudio.reporting.listening.listen`), which the
report's listening examples use too. :func:`listen` is ``advaudio listen`` as a function (the
options of :mod:`advaudio.stages.listen_config`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from advaudio.options import CommandResult, Values
from advaudio.reporting.listening import METHODS, ListenResult
from advaudio.stages.listen_config import LISTEN

__all__ = ["METHODS", "ListenResult", "ListenRun", "listen"]


@dataclass
class ListenRun(CommandResult):
    """What :func:`listen` wrote: :attr:`path` is the adversarial WAV, :attr:`result` every path and SNR."""

    result: ListenResult | None = None

    def lines(self) -> list[str]:
        r = self.result
        return [f"{r.attack} round {r.round}, clip {r.clip_id} (label {r.label}, target {r.target}, "
                f"predicted {r.predicted})",
                f"SNR {r.snr_db_waveform:.1f} dB waveform, {r.snr_db_spectrogram:.1f} dB model input (clean "
                f"re-synthesis {r.clean_resynth_snr_db:.1f} dB against the clean clip)",
                r.clean_wav, r.clean_resynth_wav]


@LISTEN.function(ListenRun)
def listen(v: Values) -> ListenRun:
    from advaudio.reporting.listening import listen as run

    result = run(v.shard, v.out, sample=v.sample, store=v.store, method=v.method, audio_root=v.audio_root)
    return ListenRun(Path(result.adversarial_wav), result=result)
