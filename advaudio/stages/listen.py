"""The listen stage: one adversarial example of a shard → WAV files (clean, clean resynthesised,
adversarial) and their signal-to-perturbation ratios; the resynthesis itself is
:mod:`advaudio.reporting.listening`, which the report's listening examples use too."""

from advaudio.reporting.listening import METHODS, ListenResult, listen

__all__ = ["METHODS", "ListenResult", "listen"]
