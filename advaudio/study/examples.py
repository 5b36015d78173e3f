"""Commented example study files (``advaudio study init FILE [--example NAME]``).

``synthetic`` runs on the embedded synthetic set in minutes on a laptop CPU
(2 models × 2 views × 2 attacks × 1 round, 2 test folds, small widths);
``esc50`` is the paper's grid on ESC-50; ``esc10`` the same recipe on the
original ESC-10 release (``../shared/data/esc10`` in this project).
"""

from __future__ import annotations

from pathlib import Path

from advaudio.errors import ParameterError
from advaudio.training.config import RECIPES

_HEAD = """\
# advaudio study file ({what}).
#   advaudio study plan {file}     the cells, what each costs, what is done
#   advaudio study run {file}      run what is not done (resumable: rerun after a kill)
#   advaudio study status {file}   cells done / running / failed, with reasons and logs
#   advaudio study report {file}   the tables: accuracy (mean ± std over folds), budgets with 95 % CIs
# Unknown keys are errors. Paths are relative to this file's directory.
"""

SYNTHETIC = _HEAD + """
[study]
name = "synthetic-grid"

# One table per dataset; every dataset is featurized once, one store serves every view.
[data.synthetic]
dataset = "synthetic"                 # esc50, urbansound8k, esc10, folder, synthetic
options = {{ clips_per_class = 12, n_classes = 4, duration = 1.0, n_folds = 4 }}
[data.synthetic.features]             # advaudio.features.FeatureConfig; the view's representations must be here
representations = ["stft", "dwt", "chroma"]

[grid]                                # crossed: every model × view × width × input size × seed
models = ["resnet18", "googlenet"]
views = ["stft", "dwt+chroma"]        # representations joined by '+', appended along the band axis
widths = [0.25]                       # channel-width multiplier (1.0: the published widths)
input_sizes = ["64x64"]               # model input H×W (bilinear resize); "none" keeps bands × frames
seeds = [0]

[train]                               # advaudio.training.TrainConfig (model, view, fold, seed come from the grid)
recipe = "default"                    # SpecAugment masks, gain, between-class mixing; "paper": time shifts only
epochs = 6                            # given values override the recipe's
batch_size = 16
lr = 3e-3

[protocol]
cv = [3, 4]                           # test folds, one model each ("all": every fold of the dataset)
attack_folds = [3, 4]                 # folds whose models are attacked and retrained ("all", "last", "none")

[attacks]                             # advaudio.stages.attack.AttackStageConfig
names = ["pgd", "deepfool"]
threshold = 0.9                       # budgets are tuned to this fooling rate
test_clips = 12                       # clips attacked on the test fold (omit: all)
train_clips = 24                      # training clips attacked per round for retraining (omit: all)
# precision = "clip"                  # the default here: every clip's minimal ε to 5 %, as the bootstrap needs
# domains = ["feature", "waveform"]   # also attack the clips' samples through the view's front end (SNR in dB)
[attacks.params.pgd]
steps = 20                            # the evaluation checks warn when doubling the steps still helps

[rounds]                              # advaudio.stages.retrain.RetrainConfig
count = 1                             # attack → retrain → attack rounds
mix = 0.5                             # adversarial share of every retraining batch
mode = "fine-tune"                    # or "from-scratch"
epochs = 3

[run]
out = "{out}"                         # the study directory (stores, cells, report)
executor = "local"                    # local, dask (cells as Dask tasks), slurm (a job per cell)
device = "auto"                       # auto (CUDA when present), cpu, cuda
workers = 2                           # dask: worker processes (one cell each)
featurize_workers = 2
"""

_REAL = _HEAD + """
[study]
name = "{name}"

[data.{dataset}]
dataset = "{dataset}"
root = "{root}"                       # the dataset's directory (see `advaudio featurize --help`)
[data.{dataset}.features]
representations = ["stft", "dwt", "chroma", "tonnetz"]
# sr = 22050, n_fft = 1024, hop_length = 512, wavelet = "db4", dwt_level = 7 (the defaults)
{more_data}
[grid]
models = {models}
views = {views}
widths = [1.0]
input_sizes = ["128x128"]
seeds = [0]
# defenses = ["none", "shards", "pgd-at", "trades", "fast-at"]   # shards: the [rounds] below
# [defenses.pgd-at]                  # (after [grid]) options of a defense: epsilon, steps, alpha

[train]
recipe = "default"                    # chosen by 5-fold CV on ESC-10 (README): SpecAugment masks, random gain,
                                      # between-class mixing, {default_epochs} epochs; "paper": the recipe of earlier
                                      # results (time shifts only, 30 epochs). Any TrainConfig field overrides it:
# epochs = 60
# mixing = "bc"                       # "mixup", "none"

[protocol]
cv = "all"                            # every official fold is a test fold once
attack_folds = {attack_folds}

[attacks]
names = {attacks}
threshold = 0.9
# autoattack = "linf:8/255"          # AutoAttack robust accuracy on every round of the attacked cells
# domains = ["feature", "waveform"]   # both threat models: budgets on the model input and on the waveform
# test_clips = 80                     # omit: every clip of the attacked fold
# train_clips = 400
[attacks.params.pgd]
steps = 40

[rounds]
count = 1
mix = 0.5
mode = "fine-tune"
epochs = 10

[run]
out = "{out}"
executor = "local"                    # "dask" with scheduler = "tcp://host:8786", or "slurm"
device = "auto"
workers = 4
featurize_workers = 4
# [run.slurm]                         # executor = "slurm": one job per cell
# partition = "gpu"
# resources = "--gres=gpu:1 -c 8 --mem=32G --time=04:00:00"
# setup = "module load cuda; source ~/venvs/advaudio/bin/activate"
"""

def _recipe_epochs() -> int:

    return RECIPES["default"]["epochs"]


EXAMPLES = {
    "synthetic": lambda out: SYNTHETIC.format(what="the embedded synthetic set, minutes on a laptop CPU",
                                               file="{file}", out=out),
    "esc50": lambda out: _REAL.format(
        what="the paper's grid on ESC-50: plan it before you run it, it is GPU work", file="{file}",
        name="esc50-paper", dataset="esc50", root="ESC-50-master", out=out, attack_folds='[5]',
        models='["alexnet", "googlenet", "vgg16", "resnet18", "resnet34", "resnet56"]',
        views='["stft", "dwt", "stft+chroma", "dwt+chroma"]',
        attacks='["fgsm", "bim", "pgd", "deepfool", "cw", "ead"]',
        more_data='\n# [data.urbansound8k]                 # a second dataset: 10 folds\n'
                  '# dataset = "urbansound8k"\n# root = "UrbanSound8K"\n', default_epochs=_recipe_epochs()),
    "esc10": lambda out: _REAL.format(
        what="the original ESC-10 release, 400 clips", file="{file}", name="esc10", dataset="esc10",
        root="data/esc10", out=out, attack_folds='[5]', models='["resnet18"]', views='["stft", "dwt+chroma"]',
        attacks='["pgd", "deepfool"]', more_data="", default_epochs=_recipe_epochs()),
}


def example_study(name: str = "synthetic", *, file: str = "study.toml", out: str | None = None) -> str:
    """The text of example study ``name`` (a key of :data:`EXAMPLES`) for a file named ``file``."""
    if name not in EXAMPLES:
        raise ParameterError(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}")
    out = out or f"{Path(file).stem}.study"
    return EXAMPLES[name](out).replace("{file}", str(file))


def write_example(path: str | Path, name: str = "synthetic", *, force: bool = False) -> Path:
    """Write example ``name`` to ``path``; an existing file is kept unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise ParameterError(f"{path} exists; choose another name or pass --force to overwrite it")
    text = example_study(name, file=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
