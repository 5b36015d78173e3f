"""The attack stage's configuration and options, light (no torch): :class:`AttackStageConfig`,
the options of ``advaudio attack`` (:data:`ATTACK`) and those it shares with ``advaudio rounds``
(:data:`ATTACK_OPTIONS`). The stage itself is :mod:`advaudio.stages.attack`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from advaudio import layout, plugins, validation
from advaudio.errors import ParameterError
from advaudio.options import PROGRESS, THREADS, UNSET, Command, Option

__all__ = ["ATTACK", "ATTACK_OPTIONS", "AttackStageConfig", "DEVICE", "DOMAIN_OPTIONS", "parse_slice"]


@dataclass(frozen=True)
class AttackStageConfig:
    """Configuration of the attack stage.

    Parameters
    ----------
    attacks : registry names, run in this order
    threshold : the fooling rate each budget is tuned to (fraction of attacked samples); a
        *fooling rate* is always a measured one (``--fooling-rate`` on the command line)
    split : ``"test"`` (the checkpoint's held-out fold) or ``"train"`` (the rows it trained on: its
        training folds less any validation rows drawn from them)
    limit : attack at most this many clips (an evenly spaced subset, stable across runs)
    batch_size : samples per attack call; None (default): automatic — 64 on CPU, on CUDA the
        largest that fits in a safe fraction of the device's free memory
        (:func:`~advaudio.attacks.engine.auto_batch_size`); the size used is in the results
    round : retraining round the shards belong to (0: the model trained on clean data)
    seed : seeds targets, random starts and noise
    target_rule : ``"random"`` (seeded other class) or ``"least-likely"``
    slice : ``(i, n)``: attack only the i-th of n contiguous parts of the rows (job arrays)
    attack_params : per-attack parameter overrides, e.g. ``{"pgd": {"steps": 20}}``
    rtol : relative tolerance of the ε search of fixed-budget attacks
    search : budget search of fixed-budget attacks: ``"per-clip"`` (every clip's minimal ε;
        slices merge exactly) or ``"bisection"`` (the batch's fooling rate bisected)
    precision : where the per-clip search's tolerance applies: ``"quantile"`` (the budget only:
        clips far from it keep coarse brackets; fewest steps), ``"clip"`` (every clip's minimal ε;
        batch-independent, so slices merge to exactly an unsliced run); None (default):
        ``"clip"`` for a slice, ``"quantile"`` otherwise
    checks : run the evaluation checks (:mod:`advaudio.attacks.checks`) after the attacks
    domain : the threat model (:mod:`advaudio.attacks.domain`): ``"feature"`` (default, the paper's:
        the model input is perturbed, budgets in its [0, 1] units) or ``"waveform"`` (the clip's samples
        are perturbed through the view's differentiable front end; budgets in sample units and SNR dB;
        shards keep the adversarial waveforms; results and shards are named with ``-waveform``)
    allow_expensive : run attacks whose budget search costs more than
        :data:`~advaudio.attacks.params.MAX_EVALUATIONS_PER_CLIP` model evaluations per clip
        (refused otherwise, before any work). A permission, not a setting: it changes no
        result, so it is not recorded (:meth:`to_dict`) and no fingerprint depends on it
    """

    attacks: tuple[str, ...] = ("pgd", "cw")
    threshold: float = 0.9
    split: str = "test"
    limit: int | None = None
    batch_size: int | None = None
    round: int = 0
    seed: int = 0
    target_rule: str = "random"
    slice: tuple[int, int] | None = None
    attack_params: dict = field(default_factory=dict)
    rtol: float = 0.05
    search: str = "per-clip"
    checks: bool = True
    precision: str | None = None
    domain: str = "feature"
    allow_expensive: bool = False

    def __post_init__(self):
        from advaudio.attacks.params import PARAMS

        unknown = [a for a in self.attacks if a not in PARAMS]
        if not self.attacks or unknown:
            raise ParameterError(f"unknown attack(s) {unknown or '(none given)'}; known: {', '.join(PARAMS)}")
        repeated = sorted({a for a in self.attacks if self.attacks.count(a) > 1})
        if repeated:  # the second run would only redo (and overwrite) the first
            raise ParameterError(f"attack(s) {', '.join(repeated)} given more than once")

        from advaudio.attacks.params import PRECISIONS, SEARCHES

        if self.search not in SEARCHES:
            raise ParameterError(f"search must be one of {', '.join(SEARCHES)}, got {self.search!r}")
        validation.choice("split", self.split, layout.SPLITS)
        validation.choice("domain", self.domain, layout.DOMAINS)
        validation.finite_float("threshold", self.threshold)
        if not 0.0 < self.threshold <= 1.0:
            raise ParameterError(f"threshold must be in (0, 1], got {self.threshold}")
        validation.finite_float("rtol", self.rtol, minimum=0.0)
        for name in ("checks", "allow_expensive"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.limit is not None:
            validation.integer("limit", self.limit)
        if self.batch_size is not None:
            validation.integer("batch_size", self.batch_size)
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        validation.integer("round", self.round, minimum=0)
        if self.slice is not None:
            i, n = self.slice
            if not (n >= 1 and 0 <= i < n):
                raise ParameterError(f"slice must be I/N with 0 <= I < N, got {i}/{n}")
        if self.domain != "feature" and self.slice is not None:
            raise ParameterError(f"--domain {self.domain} runs are not sliced (their shards hold waveforms, "
                                 "which `store merge` does not merge yet): attack the split in one run")
        extra = set(self.attack_params) - set(self.attacks)
        if extra:
            raise ParameterError(f"parameters given for attacks not run: {sorted(extra)}")
        for name in self.attacks:  # an unknown or impossible parameter fails here, before any work
            self.attack_config(name).check_cost(
                allowed=self.allow_expensive,
                how="--allow-expensive (a study file: [attacks] allow_expensive = true)")

    def attack_config(self, name: str):
        """The :class:`~advaudio.attacks.AttackConfig` of attack ``name`` in this stage."""
        from advaudio.attacks.params import AttackConfig

        # the stage's seed and target rule, unless the attack's own parameters set them
        values = {"seed": self.seed, "target_rule": self.target_rule, **self.attack_params.get(name, {})}
        return AttackConfig.create(name, **values)

    def search_precision(self) -> str:
        """The per-clip search's precision: the configured one, else "clip" for a slice
        (its clips' brackets then do not depend on the other slices) and "quantile" otherwise."""
        if self.precision is not None:
            return self.precision
        return "clip" if self.slice is not None else "quantile"

    #: Keys of earlier releases' ``config`` dicts (results files, ``rounds.json``) → the fields' names now.
    OLDER_KEYS: ClassVar[dict[str, str]] = {"fooling_rate": "threshold"}

    @classmethod
    def upgrade_dict(cls, d: dict[str, Any]) -> dict[str, Any]:
        """A ``config`` dict as an earlier release wrote it, with today's keys (compared, never rewritten)."""
        return {cls.OLDER_KEYS.get(k, k): v for k, v in d.items()}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("allow_expensive")  # a permission: results and fingerprints never depend on it
        d["attacks"] = list(self.attacks)
        d["slice"] = list(self.slice) if self.slice else None
        if d["domain"] == "feature":  # the default: the fingerprints of runs made before the option stay
            d.pop("domain")
        return d


def parse_slice(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"I/N"`` (or ``(I, N)``) → ``(I, N)``."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in (text.split("/") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        raise ParameterError(f"slice must look like I/N (e.g. 0/4), got {text!r}") from None
    return i, n


def parse_batch_size(value: Any) -> int | None:
    """``auto`` (None: chosen for the device) or a positive integer."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        n = int(value) if isinstance(value, str) else value
    except ValueError:
        raise ParameterError(f"{value!r} is neither auto nor an integer") from None
    if isinstance(n, int) and not isinstance(n, bool) and n < 1:
        raise ParameterError(f"must be auto or >= 1, got {n}")
    return validation.integer("batch size", n)


def _attack_names() -> str:
    from advaudio.attacks.params import PARAMS

    return ", ".join(PARAMS)  # built-ins and plugins, from metadata


def _attack_params_help() -> str:
    """Every built-in attack's parameters with their defaults, from the parameter dataclasses;
    plugins by name only (listing them must not import them: a broken one would break the command)."""
    from advaudio.attacks.params import BUILTIN_PARAMS, SHARED_SETTINGS

    listing = "; ".join(
        f"{name}: " + ", ".join(f"{k}={'auto' if v is None else v}" for k, v in cls().to_dict().items())
        for name, cls in BUILTIN_PARAMS.items()
    )
    names = plugins.names("advaudio.attacks", BUILTIN_PARAMS)[len(BUILTIN_PARAMS):]
    extra = f" Plugin attacks ({', '.join(names)}) take the fields of their own parameter dataclass." if names else ""
    return ("Attack parameter, repeatable, e.g. -p pgd.steps=20 -p cw.binary_search_steps=5. "
            f"Each attack takes {', '.join(SHARED_SETTINGS)} and its own (defaults): {listing}.{extra}")


def _max_evaluations() -> int:
    from advaudio.attacks.params import MAX_EVALUATIONS_PER_CLIP

    return MAX_EVALUATIONS_PER_CLIP


def _lazy(name: str):
    """A constant of :mod:`advaudio.attacks.params`, read when the choices are asked for."""
    def read():
        from advaudio.attacks import params

        return getattr(params, name)
    return read


def _device(value: Any) -> str:
    return validation.device("device", value)


#: ``--device`` of the stages that load a checkpoint.
DEVICE = Option("device", default="auto", parse=_device, help="auto, cpu, cuda or cuda:N.")

#: The attack options ``advaudio attack`` and ``advaudio rounds`` share (fields of AttackStageConfig).
ATTACK_OPTIONS = (
    Option("attacks", kind="list", field="attacks", default=UNSET, help=lambda: f"Comma-separated attacks: {_attack_names()}."),
    Option("fooling_rate", field="threshold", default=UNSET, cli_type=float,
           help="Threshold each attack's budget is tuned to (fraction of attacked clips)."),
    Option("limit", field="limit", cli_type=int, help="Attack at most N clips (evenly spaced)."),
    Option("batch_size", field="batch_size", default=UNSET, parse=parse_batch_size, metavar="auto|N",
           text=lambda n: "auto" if n is None else str(n), show_default="auto",
           help="Clips per attack call: a number, or auto (64 on CPU; on CUDA the largest batch that fits in half "
                "the device's free memory, at most 1024; the size used is in the results JSON)."),
    Option("target_rule", field="target_rule", default=UNSET, choices=_lazy("TARGET_RULES"),
           help="Target class of targeted attacks: seeded random other class, or the clean model's least likely "
                "class."),
    Option("seed", field="seed", default=UNSET, cli_type=int, help="Seeds targets and random starts."),
    Option("param", kind="nested", short="-p", field="attack_params", metavar="ATTACK.KEY=VALUE",
           help=_attack_params_help),
    DEVICE,
    Option("allow_expensive", kind="switch", field="allow_expensive",
           help=lambda: "Run attacks whose budget search would cost more than "
                        f"{_max_evaluations():.0e} model evaluations per clip (e.g. -p pgd.steps=1000000000); "
                        "refused otherwise, with the estimate, before any work."),
)

#: The budget-search options of ``advaudio attack`` that ``advaudio rounds`` shares too.
#: The threat model (``advaudio attack`` and ``advaudio rounds``).
DOMAIN_OPTIONS = (
    Option("domain", field="domain", default=UNSET, choices=layout.DOMAINS,
           help="Threat model: feature perturbs the model input (the paper's; budgets in its [0, 1] units); "
                "waveform perturbs the clip's samples through the view's differentiable front end (budgets as "
                "waveform L-inf/L2 and SNR dB; the clips are decoded again from the dataset the store records)."),
    Option("audio_root", path=True,
           help="--domain waveform: the dataset's root when its audio moved since featurize."),
)

SEARCH_OPTIONS = (
    Option("search", field="search", default=UNSET, choices=_lazy("SEARCHES"),
           help="Budget search of fixed-budget attacks: every clip's minimal ε (slices merge exactly) or "
                "bisection of the batch's fooling rate."),
    Option("precision", field="precision", default="auto", choices=lambda: ("auto", *_lazy("PRECISIONS")()),
           parse=lambda p: None if p == "auto" else p,
           help="Per-clip search: refine only the clips near the budget (quantile: fewest steps), or every "
                "clip's minimal ε (clip: slices merge to exactly one run); auto: clip for --slice, else quantile."),
    Option("checks", kind="flag", field="checks", default=UNSET,
           help="Run the evaluation checks (Carlini et al. 2019) after the attacks."),
    Option("allow_unreached", kind="switch",
           help="Exit with status 0 even when an attack's budget never reached the fooling-rate threshold."),
)

ATTACK = Command(
    "attack",
    """Tune attacks on a checkpoint to a fooling rate; write adversarial shards into the store.

    For fixed-budget attacks (fgsm, bim, pgd) every clip's minimal ε is searched
    (or, --search bisection, ε is bisected until the batch's fooling rate reaches
    the threshold); for minimisation attacks (deepfool, cw, ead,
    boundary, hopskipjump) the budget is the quantile of the per-sample
    minimal perturbations. Prints a table and writes
    attack-round<K>-<split>.json beside the checkpoint (its path is the last
    line of standard output).

    Exit status: 0 when every attack's budget reached the threshold; 1 when one
    never did (a summary line on standard error names it; its results and shard
    are written all the same; --allow-unreached: 0), except for a --slice, whose
    budget `store merge` computes over all slices; 2 for an error.
    """,
    (
        Option("checkpoint", required=True, path=True, help="checkpoint.pt to attack."),
        Option("store", path=True, help="Feature store [default: the one the checkpoint was trained on]."),
        *ATTACK_OPTIONS,
        Option("split", field="split", default=UNSET, choices=layout.SPLITS,
               help="test: the checkpoint's held-out fold; train: the rows it trained on (retraining data)."),
        Option("round", field="round", default=UNSET, cli_type=int, help="Retraining round the shards belong to."),
        Option("slice", field="slice", parse=parse_slice, metavar="I/N", text=lambda s: f"{s[0]}/{s[1]}",
               help="Attack only the I-th of N parts of the clips (job arrays); merge with `store merge`."),
        Option("out", path=True, help="Directory of the results JSON [default: the checkpoint's]."),
        *SEARCH_OPTIONS,
        *DOMAIN_OPTIONS,
        PROGRESS,
        THREADS,
    ),
    configs={"": AttackStageConfig},
)
