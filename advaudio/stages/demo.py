"""The end-to-end demo: featurize → train → attack → retrain → attack → report.

On the embedded synthetic set it takes a few minutes on a laptop CPU; with
``dataset="esc10"`` and the real clips it runs the same loop on real data.
Every step writes its files under ``out`` and is skipped when already
complete, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from advaudio import layout
from advaudio.errors import ParameterError


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of the demo loop (defaults sized for a 2-core CPU).

    Parameters
    ----------
    dataset, root : dataset reader and its root (``synthetic`` needs none)
    clips_per_class : synthetic clips per class (ignored for real data)
    features : representations to store (the view must be a subset)
    view, model, width, input_size, epochs : the classifier and its training
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
    epochs: int = 12
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
        dataset gets the recipe of the README's ESC-10 figures: full width, 128×128
        inputs, 30 epochs, every clip attacked.
        """
        sizes = {} if dataset == "synthetic" else dict(
            width=1.0, input_size=(128, 128), epochs=30, test_limit=None, train_limit=None, retrain_epochs=10)
        return cls(dataset=dataset, **{**sizes, **{k: v for k, v in given.items() if v is not None}})

    def __post_init__(self):
        if self.dataset == "synthetic" and self.root is not None:
            raise ParameterError("the synthetic dataset takes no --root")
        if self.dataset != "synthetic" and self.root is None:
            raise ParameterError(f"dataset {self.dataset!r} needs --root")


def run_demo(config: DemoConfig, *, out: str | Path = "cache/demo", device: str = "auto",
             progress: bool = True) -> Path:
    """Run the whole loop under ``out``; returns the path of ``report.md``."""
    from advaudio.features import FeatureConfig
    from advaudio.reporting import write_report
    from advaudio.stages.attack import AttackStageConfig
    from advaudio.stages.featurize import FeaturizeConfig, featurize
    from advaudio.stages.retrain import RetrainConfig
    from advaudio.stages.rounds import is_complete_run, run_rounds
    from advaudio.training import TrainConfig, train

    t0 = time.perf_counter()
    out = Path(out)
    run_dir = out / "runs" / f"{config.dataset}-{config.model}-{config.view.replace('+', '_')}"

    def step(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)

    step(f"featurize {config.dataset} ({', '.join(config.features)})")
    options = {"clips_per_class": config.clips_per_class} if config.dataset == "synthetic" else {}
    result = featurize(
        FeaturizeConfig(dataset=config.dataset, root=config.root, dataset_options=options,
                        features=FeatureConfig(representations=config.features)),
        cache=out / "stores", workers=config.workers, progress=progress,
    )
    if result.failed:
        step(f"{result.failed} clips could not be featurized (see `advaudio store info {result.store_dir}`)")

    if is_complete_run(run_dir):
        step(f"train: {layout.checkpoint_path(run_dir)} exists, skipped")
    else:
        step(f"train {config.model} (width {config.width}) on the {config.view} view")
        train(TrainConfig(store=str(result.store_dir), view=config.view, model=config.model, width=config.width,
                          input_size=config.input_size, epochs=config.epochs, seed=config.seed, workers=0,
                          device=device),
              out_dir=run_dir, resume=layout.checkpoint_path(run_dir).is_file(), progress=progress)

    step(f"{config.rounds} round(s) of attack → retrain → attack ({', '.join(config.attacks)})")
    run_rounds(
        run_dir,
        rounds=config.rounds,
        attack_config=AttackStageConfig(attacks=config.attacks, threshold=config.threshold,
                                        limit=config.test_limit, seed=config.seed),
        retrain_config=RetrainConfig(mix=config.mix, epochs=config.retrain_epochs),
        train_limit=config.train_limit,
        device=device,
        progress=progress,
    )
    step("report")
    report = write_report([run_dir], out / "report")
    step(f"done in {time.perf_counter() - t0:.0f} s")
    return report
