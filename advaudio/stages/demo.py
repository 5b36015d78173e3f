"""The end-to-end demo: featurize → train → attack → retrain → attack → report.

On the embedded synthetic set it takes a few minutes on a laptop CPU; with
``dataset="esc10"`` and the real clips it runs the same loop on real data.
Every step writes its files under ``out`` and is skipped when already
complete, so an interrupted demo resumes where it stopped. :func:`demo` is ``advaudio demo``
as a function (the options of :mod:`advaudio.stages.demo_config`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from advaudio import layout
from advaudio.options import CommandResult, Values
from advaudio.stages.demo_config import DEMO, DemoConfig
from advaudio.threads import configure_threads

__all__ = ["DemoConfig", "DemoRun", "demo", "run_demo"]


def run_demo(config: DemoConfig, *, out: str | Path = "cache/demo", device: str = "auto",
             progress: bool = True) -> Path:
    """Run the whole loop under ``out``; returns the path of ``report.md``."""
    from advaudio.features import FeatureConfig
    from advaudio.reporting import write_report
    from advaudio.stages.attack import AttackStageConfig
    from advaudio.stages.featurize import FeaturizeConfig, featurize_store
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
    result = featurize_store(
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
                          input_size=config.input_size, recipe=config.recipe, epochs=config.epochs,
                          seed=config.seed, workers=0,
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


@dataclass
class DemoRun(CommandResult):
    """What :func:`demo` did: :attr:`path` is the report (``report.md``), :attr:`config` the demo's sizes."""

    config: DemoConfig | None = None


@DEMO.function(DemoRun)
def demo(v: Values) -> DemoRun:

    config = DemoConfig.for_dataset(v.dataset, root=v.root, model=v.model, view=v.view, attacks=v.attacks,
                                    rounds=v.rounds, workers=v.workers, width=v.width, recipe=v.recipe,
                                    epochs=v.epochs)
    configure_threads(v.threads)
    return DemoRun(Path(run_demo(config, out=v.out, device=v.device, progress=v.progress)), config=config)
