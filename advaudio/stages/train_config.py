"""The options of ``advaudio train`` and ``advaudio evaluate`` (:data:`TRAIN`, :data:`EVALUATE`),
light (no torch): ``train``'s map onto :class:`~advaudio.training.TrainConfig`'s fields. The
functions are :mod:`advaudio.stages.train`; training itself is :mod:`advaudio.training`.
"""

from __future__ import annotations

from advaudio import validation
from advaudio.augment_spec import MIXING
from advaudio.errors import ParameterError
from advaudio.models.names import model_names
from advaudio.options import PROGRESS, THREADS, UNSET, Command, Option, _nested
from advaudio.training.config import (
    DTYPES,
    OPTIMIZERS,
    RECIPE_NAMES,
    RECIPES,
    SCHEDULES,
    TrainConfig,
    defense_names,
)
from advaudio.view_spec import format_input_size, parse_input_size

__all__ = ["EVALUATE", "TRAIN", "autoattack_pairs", "defense_params"]


def defense_params(param, defense: str) -> dict:
    """The defense options of ``-p defense.KEY=VALUE`` (or ``NAME.KEY=VALUE``, NAME the defense's):
    ``{"defense": {"epsilon": "8/255"}}`` (or the command line's pairs) → ``{"epsilon": 0.0313…}``;
    a fraction ``A/B`` reads as a number."""

    nested = _nested(param or {}, "train: -p")
    out: dict = {}
    for owner, options in nested.items():
        if owner.strip().lower() not in ("defense", defense):
            pairs = ", ".join(f"{owner}.{k}={v}" for k, v in options.items())
            raise ParameterError(f"-p takes defense.KEY=VALUE (the options of --defense {defense}), got {pairs!r}")
        for key, value in options.items():
            if isinstance(value, str):
                num, slash, den = value.partition("/")
                try:
                    value = float(num) / float(den) if slash else value
                except (ValueError, ZeroDivisionError):
                    pass
            out[key] = value
    return out


def autoattack_pairs(value) -> tuple[tuple[str, float], ...]:
    """``--autoattack`` as ``((norm, ε), …)``: ``"linf:8/255,l2:0.5"`` or pairs."""
    if isinstance(value, str):
        from advaudio.attacks.autoattack import parse_autoattack  # torch: only when it is given

        return parse_autoattack(value)
    try:
        return tuple((str(norm), float(eps)) for norm, eps in value)
    except (TypeError, ValueError):
        raise ParameterError(f"takes NORM:EPS,… or (norm, ε) pairs, got {value!r}") from None


def _recipe_default(name: str) -> str:
    """The help text's default of a recipe field: its value in each recipe."""
    return " [default: from --recipe: " + ", ".join(f"{r} {v[name]}" for r, v in RECIPES.items()) + "]"


def _recipe(name: str, help: str, **kwargs) -> Option:
    """An option whose default is its recipe's (the field's default, None, takes it from the recipe)."""
    return Option(name, field=name, default=UNSET, show_default=False, help=help + _recipe_default(name), **kwargs)


TRAIN = Command(
    "train",
    """Train a CNN on a view of a feature store, holding out a test fold.

    Streams batches from the store, writes OUT/checkpoint.pt after every epoch
    (atomically; --resume continues a killed run to the same weights) and
    OUT/metrics.json. Prints a summary; the checkpoint path is the last line.
    """,
    (
        Option("store", field="store", required=True, path=True,
               help="Feature store directory (made by `advaudio featurize`)."),
        Option("view", field="view", default=UNSET,
               help="Representations joined by '+', appended along the band axis, e.g. stft, dwt+chroma."),
        Option("model", field="model", default=UNSET, choices=model_names, help="Architecture."),
        Option("defense", field="defense", default=UNSET, choices=defense_names,
               help="What each training step minimises: none (clean training) or an installed defense plugin, "
                    "whose loss sees the inputs."),
        Option("defense_option", kind="pairs", short="-d", field="defense_options", metavar="KEY=VALUE",
               help="Option of the defense, repeatable, e.g. -d epsilon=0.03."),
        Option("param", kind="nested", short="-p", metavar="defense.KEY=VALUE",
               help="Option of the defense as defense.KEY=VALUE (or NAME.KEY=VALUE), repeatable; a fraction is a "
                    "number: -p defense.epsilon=8/255 -p defense.steps=7. pgd-at: epsilon, alpha, steps, "
                    "random_start, norm; trades: epsilon, alpha, steps, beta, norm; fast-at: epsilon, alpha, "
                    "random_start."),
        Option("width", field="width", default=UNSET, cli_type=float,
               help="Channel-width multiplier of the model (e.g. 0.25 for quick CPU runs)."),
        Option("input_size", field="input_size", default=UNSET, metavar="HxW", parse=parse_input_size,
               text=format_input_size,
               help="Model input size the view is resized to (bilinear), e.g. 128x128 or 96; 'none' keeps "
                    "bands x frames."),
        Option("test_fold", field="test_fold", cli_type=int,
               help="Fold held out for testing [default: the highest fold]."),
        Option("val_fold", field="val_fold", cli_type=int, help="A fold held out for validation."),
        Option("val_fraction", field="val_fraction", default=UNSET, cli_type=float,
               help="Stratified fraction of the training clips held out for validation."),
        Option("recipe", choices=RECIPE_NAMES, show_default=False,
               help="Named defaults of the options marked 'from --recipe': 'default' (chosen by 5-fold "
                    "cross-validation on ESC-10: masks, gain, between-class mixing) or 'paper' (the recipe of "
                    "runs before recipes existed: time shifts only). Options given override it. "
                    "[default: default; with --resume, the checkpoint's]"),
        _recipe("epochs", "Passes over the training clips.", cli_type=int),
        _recipe("batch_size", "Samples per optimizer step (global: under torchrun, split across the processes).",
                cli_type=int),
        _recipe("lr", "Peak learning rate of the one-cycle schedule (AdamW).", cli_type=float),
        _recipe("weight_decay", "AdamW decoupled weight decay (SGD: L2).", cli_type=float),
        _recipe("optimizer", "Optimizer.", choices=OPTIMIZERS),
        _recipe("schedule", "Learning-rate schedule, stepped per batch.", choices=SCHEDULES),
        _recipe("label_smoothing", "Label smoothing of the training loss.", cli_type=float),
        _recipe("time_shift", "Random circular shift along time, max fraction of the width (0 turns it off).",
                cli_type=float),
        _recipe("freq_masks", "SpecAugment frequency masks per training sample.", cli_type=int),
        _recipe("freq_mask_width", "Widest frequency mask, fraction of the input height.", cli_type=float),
        _recipe("time_masks", "SpecAugment time masks per training sample.", cli_type=int),
        _recipe("time_mask_width", "Widest time mask, fraction of the input width.", cli_type=float),
        _recipe("gain_db", "Random gain of each training sample, uniform in +-DB dB (the view's dB rows).",
                cli_type=float, metavar="DB"),
        _recipe("mixing", "Mix training samples in pairs with mixed labels: mixup, or bc (between-class mixing of "
                          "sounds); adversarial samples are never mixed.", choices=MIXING),
        _recipe("mixup_alpha", "mixup's Beta(a, a).", cli_type=float),
        _recipe("ema_decay", "Evaluate and save an exponential moving average of the weights (0: off).",
                cli_type=float),
        Option("augment_extra", kind="flag", field="augment_extra", default=UNSET,
               help="Masks and gain also on --extra (adversarial) samples."),
        Option("seed", field="seed", default=UNSET, cli_type=int, help="Seed of every random choice."),
        Option("workers", field="workers", default=UNSET, cli_type=int,
               help="DataLoader worker processes reading the store (0: read in the main process; default: sized "
                    "to the CPUs)."),
        Option("device", field="device", default=UNSET, help="auto (CUDA when available), cpu, cuda or cuda:N."),
        Option("amp", kind="flag", field="amp", default=UNSET,
               help="Mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling)."),
        Option("dtype", field="dtype", default=UNSET, choices=DTYPES,
               help="Precision of weights, inputs and optimizer. float64: a reference run for reproducibility "
                    "checks (float32 runs of small CNNs drift with the order of reductions: threads, CPU, DDP "
                    "ranks); other stages load its checkpoint in float32."),
        Option("channels_last", kind="flag", field="channels_last", default=UNSET,
               help="NHWC memory format on CUDA (ignored on CPU)."),
        Option("out", required=True, path=True, help="Run directory for checkpoint.pt and metrics.json."),
        Option("resume", kind="switch",
               help="Continue the run in --out from its checkpoint (same parameters); starts fresh if none."),
        Option("init_checkpoint", field="init_checkpoint", path=True,
               help="Start from this checkpoint's weights and view (fine-tuning)."),
        Option("extra", kind="multiple", field="extra_sources", path=True, metavar="H5",
               help="Model-space inputs to mix into training batches (datasets adversarial, label, success); "
                    "repeatable."),
        Option("mix", field="mix", default=UNSET, cli_type=float,
               help="Fraction of each training batch taken from --extra sources."),
        PROGRESS,
        THREADS,
    ),
    configs={"": TrainConfig},
)

EVALUATE = Command(
    "evaluate",
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on one fold (and, with
    --autoattack, robust accuracy under AutoAttack with a binomial 95 % interval).""",
    (
        Option("checkpoint", required=True, path=True, help="checkpoint.pt of a run."),
        Option("store", path=True,
               help="Feature store [default: the one recorded in the checkpoint]; must have the same fingerprint."),
        Option("fold", cli_type=int, help="Fold to evaluate [default: the run's test fold]."),
        Option("device", default="auto", parse=lambda d: validation.device("device", d),
               help="auto, cpu, cuda or cuda:N."),
        Option("batch_size", default=64, cli_type=int, help="Samples per forward pass."),
        Option("workers", default=0, cli_type=int, help="DataLoader worker processes."),
        Option("autoattack", metavar="NORM:EPS,…", parse=autoattack_pairs,
               help="Robust accuracy under AutoAttack (standard version, every correctly classified clip) at each "
                    "NORM:EPS, e.g. linf:8/255,l2:0.5 (ε in model-input units); needs pyautoattack (pip install "
                    "'advaudio[autoattack]'). Written beside the checkpoint as autoattack.json."),
        Option("seed", default=0, cli_type=int, help="AutoAttack's seed."),
        Option("json", kind="switch", cli_only=True, help="Print the result as JSON."),
        THREADS,
    ),
)
