"""The demo's configuration and options, light: :class:`DemoConfig` and the options of
``advaudio demo`` (:data:`DEMO`); the loop is :mod:`advaudio.stages.demo`.
"""

from __future__ import annotations

from dataclasses import dataclass

from advaudio.datasets.names import dataset_names
from advaudio.errors import ParameterError
from advaudio.models.names import model_names
from advaudio.options import PROGRESS, THREADS, UNSET, Command, Option
from advaudio.stages.attack_config import DEVICE
from advaudio.training.config import RECIPE_NAMES

__all__ = ["DEMO", "DemoConfig"]


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of the demo loop (defaults sized for a 2-core CPU).

    Parameters
    ----------
    dataset, root : dataset reader and its root (``synthetic`` needs none)
    clips_per_class : synthetic clips per class (ignored for real data)
    features : representations to store (the view must be a subset)
    view, model, width, input_size : the classifier
    recipe : the training recipe (:data:`advaudio.training.RECIPES`)
    epochs : training epochs (None: the recipe's)
    attacks : attacks tuned on the test fold before and after retraining
    threshold : the fooling rate budgets are tuned to
    test_limit, train_limit : clips attacked on the test fold / training folds
    rounds : retraining rounds
    retrain_epochs, mix : length of each retraining run, adversarial share of its batches
    workers : Dask worker processes for featurization
    """

    dataset: str = "synthetic"
    root: str | None = None
    clips_per_class: int = 24
    features: tuple[str, ...] = ("stft", "dwt", "chroma", "tonnetz")
    view: str = "stft"
    model: str = "resnet18"
    width: float = 0.25
    input_size: tuple[int, int] = (64, 64)
    recipe: str = "default"
    epochs: int | None = 12
    attacks: tuple[str, ...] = ("pgd", "deepfool")
    threshold: float = 0.9
    test_limit: int | None = 40
    train_limit: int | None = 120
    rounds: int = 1
    retrain_epochs: int = 8
    mix: float = 0.5
    workers: int = 2
    seed: int = 0

    @classmethod
    def for_dataset(cls, dataset: str = "synthetic", **given) -> DemoConfig:
        """The demo's defaults for ``dataset``, with the parameters in ``given`` that are not None.

        The synthetic set gets the small sizes above (minutes on a laptop CPU); a real
        dataset the published size of the README's ESC-10 figures: full width, 128×128
        inputs, the recipe's epochs, every clip attacked.
        """
        sizes = {} if dataset == "synthetic" else dict(
            width=1.0, input_size=(128, 128), epochs=None, test_limit=None, train_limit=None, retrain_epochs=10)
        return cls(dataset=dataset, **{**sizes, **{k: v for k, v in given.items() if v is not None}})

    def __post_init__(self):
        if self.dataset == "synthetic" and self.root is not None:
            raise ParameterError("the synthetic dataset takes no --root")
        if self.dataset != "synthetic" and self.root is None:
            raise ParameterError(f"dataset {self.dataset!r} needs --root")


def _real() -> DemoConfig:
    return DemoConfig.for_dataset("esc10", root=".")


DEMO = Command(
    "demo",
    """The whole loop: featurize → train → attack → retrain → attack → report.

    On the embedded synthetic set (the default) it takes a few minutes on a
    laptop CPU. Prints the path of the report last.
    """,
    (
        Option("dataset", field="dataset", default=UNSET, choices=dataset_names,
               help="synthetic (embedded, no files) or a real dataset with --root."),
        Option("root", path=True, help="Dataset root for real data."),
        Option("out", default="cache/demo", path=True,
               help="Directory of the demo's stores, runs and report (rerun to resume)."),
        Option("model", field="model", default=UNSET, choices=model_names, help="Architecture."),
        Option("width", cli_type=float,
               help=lambda: f"Width multiplier [default: {DemoConfig().width} synthetic, {_real().width} real]."),
        Option("view", field="view", default=UNSET, help="View of the store the model reads."),
        Option("recipe", field="recipe", default=UNSET, choices=RECIPE_NAMES,
               help="Training recipe (see `advaudio train --help`); paper: the earlier results'."),
        Option("epochs", cli_type=int,
               help=lambda: f"Training epochs [default: {DemoConfig().epochs} synthetic, the recipe's for real data]."),
        Option("attacks", kind="list", field="attacks", default=UNSET, help="Attacks before and after retraining."),
        Option("rounds", field="rounds", default=UNSET, cli_type=int, help="Retraining rounds."),
        Option("workers", field="workers", default=UNSET, cli_type=int, help="Dask worker processes for featurize."),
        DEVICE,
        PROGRESS,
        THREADS,
    ),
    configs={"": DemoConfig},
)
