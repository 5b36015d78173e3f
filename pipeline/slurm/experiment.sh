#!/usr/bin/env bash
# A whole multi-round experiment as a chain of SLURM jobs (run it on a login
# node, not with sbatch: it only submits jobs and returns):
#
#   featurize ─► train (round 0, torchrun)
#     ├─► attack test  r0 [job array] ─► merge ─────────────────────────┐
#     └─► attack train r0 [job array] ─► merge ─► retrain ─► round 1 ... │
#   ... attack test rK [job array] ─► merge ─────────────────────────────┴─► report
#
# every arrow an `sbatch --dependency=afterok:...` (with --kill-on-invalid-dep,
# so a failed job cancels what depends on it instead of leaving it pending).
#
#   bash pipeline/slurm/experiment.sh                 # the synthetic demo, e.g. on the local SLURM
#   PARTITION=gpu ACCOUNT=myproject DATASET=esc50 DATA_ROOT=/shared/data/ESC-50-master \
#   CACHE=/shared/$USER/cache RUN_DIR=/shared/$USER/runs/esc50-r18 VIEW=dwt+chroma \
#   SETUP='module load python/3.11; source /shared/$USER/venvs/advaudio/bin/activate' \
#   TRAIN_RESOURCES='--gres=gpu:4 -c 32 --mem=64G --time=12:00:00' \
#   ATTACK_RESOURCES='--gres=gpu:1 -c 8 --mem=32G' ARRAY_SIZE=8 ROUNDS=2 \
#       bash pipeline/slurm/experiment.sh
#
# Every variable below can be set in the environment. Results land where
# `advaudio rounds` puts them (RUN_DIR/checkpoint.pt, RUN_DIR/roundNN/, the
# attack-round*.json files), so `advaudio report` and `advaudio rounds` read
# them too. Job logs: LOG_DIR. Submitting again resumes (RESUME=1): steps
# whose results are complete (and whose inputs were not redone) are skipped.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# --- cluster --------------------------------------------------------------------
PARTITION=${PARTITION:-}                  # partition of every job (empty: the default one)
ACCOUNT=${ACCOUNT:-}                      # account charged (empty: the default one)
SBATCH_EXTRA=${SBATCH_EXTRA:-}            # options for every job, e.g. "--qos=normal --mail-type=FAIL"
# Per-stage sbatch options (after the ones above, so `-p gpu` here wins);
# empty: the #SBATCH defaults at the top of each script.
FEATURIZE_RESOURCES=${FEATURIZE_RESOURCES:-}   # e.g. "-c 32 --mem=64G --time=04:00:00"
TRAIN_RESOURCES=${TRAIN_RESOURCES:-}           # e.g. "-p gpu --gres=gpu:4 -c 32 --mem=64G --time=12:00:00"
ATTACK_RESOURCES=${ATTACK_RESOURCES:-}         # per array task, e.g. "-p gpu --gres=gpu:1 -c 8 --mem=32G"
MERGE_RESOURCES=${MERGE_RESOURCES:-}           # e.g. "--mem=16G" for big sets
RETRAIN_RESOURCES=${RETRAIN_RESOURCES:-$TRAIN_RESOURCES}
REPORT_RESOURCES=${REPORT_RESOURCES:-}
# --- software environment -------------------------------------------------------
PYTHON=${PYTHON:-python3}                 # a Python with advaudio installed, on the compute nodes (and here, after SETUP)
SETUP=${SETUP:-}                          # run first in every job, e.g. "module load cuda; source ~/venv/bin/activate"
# --- data -------------------------------------------------------------------------
DATASET=${DATASET:-synthetic}             # esc50, urbansound8k, esc10, folder, synthetic
DATA_ROOT=${DATA_ROOT:-}
DATASET_OPTIONS=${DATASET_OPTIONS:-}      # e.g. "clips_per_class=24"
FEATURES=${FEATURES:-stft,dwt,chroma,tonnetz}
CACHE=${CACHE:-$PWD/cache}                # feature stores go to $CACHE/<dataset>-<fingerprint>/
STORE=${STORE:-}                          # an existing store: no featurize job
FEATURIZE_ARGS=${FEATURIZE_ARGS:-}        # more `advaudio featurize` options
# --- model ------------------------------------------------------------------------
synthetic=$([ "$DATASET" = synthetic ] && echo 1 || echo 0)   # small defaults for the demo set
VIEW=${VIEW:-stft}                        # e.g. dwt+chroma
MODEL=${MODEL:-resnet18}
WIDTH=${WIDTH:-$([ "$synthetic" = 1 ] && echo 0.25 || echo 1.0)}
INPUT_SIZE=${INPUT_SIZE:-$([ "$synthetic" = 1 ] && echo 64x64 || echo 128x128)}
RECIPE=${RECIPE:-}                        # training recipe: default, paper (empty: default)
EPOCHS=${EPOCHS:-$([ "$synthetic" = 1 ] && echo 12 || echo)}   # empty: the recipe's
BATCH_SIZE=${BATCH_SIZE:-32}              # global training batch
TEST_FOLD=${TEST_FOLD:-}                  # empty: the highest fold
SEED=${SEED:-0}
TRAIN_ARGS=${TRAIN_ARGS:-}                # more `advaudio train` options, e.g. "--lr 1e-3 --workers 4"
# --- attacks ------------------------------------------------------------------------
ATTACKS=${ATTACKS:-deepfool,cw}
FOOLING_RATE=${FOOLING_RATE:-0.9}
TEST_LIMIT=${TEST_LIMIT:-$([ "$synthetic" = 1 ] && echo 40 || echo)}    # clips attacked on the test fold (empty: all)
TRAIN_LIMIT=${TRAIN_LIMIT:-$([ "$synthetic" = 1 ] && echo 120 || echo)} # clips attacked on the training folds
ARRAY_SIZE=${ARRAY_SIZE:-2}               # slices (array tasks) per attack run
ATTACK_BATCH_SIZE=${ATTACK_BATCH_SIZE:-64}
ATTACK_ARGS=${ATTACK_ARGS:-}              # e.g. "-p cw.steps=200 -p cw.binary_search_steps=5"
# Attacks run as one task (array of 1): none by default, since the per-clip ε search
# of fixed-budget attacks merges exactly; name fgsm,bim,pgd here when ATTACK_ARGS has
# `--search bisection` (slices would bisect different ε), unless ALLOW_MIXED_BUDGETS=1.
FIXED_BUDGET_ATTACKS=${FIXED_BUDGET_ATTACKS:-}
ALLOW_MIXED_BUDGETS=${ALLOW_MIXED_BUDGETS:-0}
# --- rounds -------------------------------------------------------------------------
ROUNDS=${ROUNDS:-1}                       # retraining rounds
RETRAIN_EPOCHS=${RETRAIN_EPOCHS:-$([ "$synthetic" = 1 ] && echo 8 || echo)}  # empty: as the original run
MIX=${MIX:-0.5}
RETRAIN_MODE=${RETRAIN_MODE:-fine-tune}   # or from-scratch
RETRAIN_ARGS=${RETRAIN_ARGS:-}
DEVICE=${DEVICE:-auto}                    # device of training and attacks
# --- output ---------------------------------------------------------------------------
RUN_DIR=${RUN_DIR:-$PWD/runs/experiment}
REPORT_DIR=${REPORT_DIR:-$RUN_DIR/report}
LOG_DIR=${LOG_DIR:-$RUN_DIR/logs}
REPORT_ARGS=${REPORT_ARGS:-}
RESUME=${RESUME:-1}                       # 0: submit every step again
DRY_RUN=${DRY_RUN:-0}                     # 1: print the sbatch commands, submit nothing

die() { echo "experiment.sh: error: $*" >&2; exit 2; }
abspath() { case $1 in /*) printf '%s\n' "$1" ;; "") ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
# Every run-file name comes from advaudio's layout module (`advaudio path --help`), never rebuilt here.
advaudio_path() { ( if [ -n "$SETUP" ]; then eval "$SETUP"; fi; "$PYTHON" -m advaudio path "$@" ); }
round_dir() { advaudio_path round-dir "$RUN_DIR" "$1"; }

[ "$ROUNDS" -ge 0 ] 2>/dev/null || die "ROUNDS must be a number >= 0, got '$ROUNDS'"
[ "$ARRAY_SIZE" -ge 1 ] 2>/dev/null || die "ARRAY_SIZE must be a number >= 1, got '$ARRAY_SIZE'"
[ "$DRY_RUN" = 1 ] || command -v sbatch >/dev/null || die "sbatch not found (not a SLURM login node?)"
RUN_DIR=$(abspath "$RUN_DIR"); REPORT_DIR=$(abspath "$REPORT_DIR"); LOG_DIR=$(abspath "$LOG_DIR")
CACHE=$(abspath "$CACHE"); STORE=$(abspath "$STORE"); DATA_ROOT=$(abspath "$DATA_ROOT")
mkdir -p "$RUN_DIR" "$LOG_DIR"
advaudio_path round-dir "$RUN_DIR" 0 >/dev/null \
    || die "PYTHON=$PYTHON (after SETUP) cannot run advaudio here; the run layout comes from \`advaudio path\`"

# Attacks sliced over ARRAY_SIZE tasks, and attacks run whole (one task).
sliced=() whole=()
IFS=, read -r -a requested <<<"$ATTACKS"
for a in "${requested[@]}"; do
    [ -n "$a" ] || continue
    if [ "$ARRAY_SIZE" -gt 1 ] && [ "$ALLOW_MIXED_BUDGETS" != 1 ] && [[ ",$FIXED_BUDGET_ATTACKS," == *",$a,"* ]]; then
        whole+=("$a")
    else
        sliced+=("$a")
    fi
done
[ $((${#sliced[@]} + ${#whole[@]})) -gt 0 ] || die "ATTACKS is empty"
join() { local IFS=,; echo "$*"; }

# attack_args ATTACK,...: ATTACK_ARGS without the `-p OTHER.KEY=VALUE` settings of attacks not in the list
# (advaudio attack refuses parameters of attacks it does not run).
attack_args() {
    local keep=() words w v i=0
    # shellcheck disable=SC2206  # ATTACK_ARGS is word-split on purpose
    words=($ATTACK_ARGS)
    while [ "$i" -lt "${#words[@]}" ]; do
        w=${words[$i]}
        i=$((i + 1))
        case $w in
            -p | --param) v=${words[$i]:-}; i=$((i + 1)) ;;
            --param=*) v=${w#--param=}; w= ;;
            *) keep+=("$w"); continue ;;
        esac
        if [[ ",$1," == *",${v%%.*},"* ]]; then
            if [ -n "$w" ]; then keep+=("$w" "$v"); else keep+=("--param=$v"); fi
        fi
    done
    echo "${keep[*]}"
}

# --- submission ----------------------------------------------------------------------
common=()
[ -z "$PARTITION" ] || common+=(--partition="$PARTITION")
[ -z "$ACCOUNT" ] || common+=(--account="$ACCOUNT")
# shellcheck disable=SC2206
common+=($SBATCH_EXTRA)
dry_id=0
declare -A JOBS=()
ORDER=()

# submit STEP DEPENDENCIES SCRIPT RESOURCES [VAR=VALUE...] [-- SBATCH OPTION...]: submits, records the
# job id under STEP and leaves it in $JOB.
# DEPENDENCIES: job ids joined by ':' (empty: none). The job's variables are
# passed in its environment (sbatch exports it), every one explicitly so that
# a variable of this shell never leaks into a job by its name.
submit() {
    local step=$1 deps=$2 script=$3 resources=$4 vars=() opts=()
    shift 4
    while [ $# -gt 0 ] && [ "$1" != -- ]; do vars+=("$1"); shift; done
    [ $# -eq 0 ] || shift
    local output="$LOG_DIR/$step-%j.out"
    case " $* " in *" --array="*) output="$LOG_DIR/$step-%A_%a.out" ;; esac
    # shellcheck disable=SC2206  # resources are word-split on purpose
    opts=(--parsable --job-name="advaudio-$step" --chdir="$RUN_DIR" --output="$output" "${common[@]}" $resources "$@")
    [ -z "$deps" ] || opts+=(--dependency="afterok:$deps" --kill-on-invalid-dep=yes)
    vars+=(PYTHON="$PYTHON" SETUP="$SETUP")
    if [ "$DRY_RUN" = 1 ]; then
        dry_id=$((dry_id + 1))
        printf 'env' >&2; printf ' %q' "${vars[@]}" sbatch "${opts[@]}" "$HERE/$script" >&2; echo >&2
        JOB=dry$dry_id
    else
        local out
        out=$(env "${vars[@]}" sbatch "${opts[@]}" "$HERE/$script") || die "sbatch of $step failed"
        JOB=${out%%;*}
    fi
    JOBS[$step]=$JOB
    ORDER+=("$step")
}

is_complete_run() {  # DIR [EPOCHS]: metrics.json says complete (after at least EPOCHS epochs)
    command -v python3 >/dev/null || return 1
    python3 - "$(advaudio_path metrics "$1")" "${2:-0}" <<'PY' 2>/dev/null
import json, sys
m = json.load(open(sys.argv[1]))
sys.exit(0 if m.get("complete") and int(m.get("epochs_done") or 0) >= int(sys.argv[2]) else 1)
PY
}

is_merged() {  # ROUND SPLIT CHECKPOINT: merged results of every requested attack for this checkpoint
    command -v python3 >/dev/null && [ -f "$3" ] || return 1
    python3 - "$(advaudio_path attack-results "$RUN_DIR" --round "$1" --split "$2")" "$3" "$ATTACKS" <<'PY' 2>/dev/null
import hashlib, json, sys
from pathlib import Path
doc = json.load(open(sys.argv[1]))
sha = hashlib.sha256(Path(sys.argv[2]).read_bytes()).hexdigest()
have = {r.get("attack") for r in doc.get("attacks", []) if not r.get("shard") or Path(r["shard"]).is_file()}
want = {a for a in sys.argv[3].split(",") if a}
sys.exit(0 if "merged_from" in doc and doc.get("checkpoint_sha256") == sha and want <= have else 1)
PY
}

# attack_and_merge ROUND SPLIT LIMIT DEPENDENCY: the attack array(s) and their merge; the merge job
# id in $MERGED (empty when skipped)
attack_and_merge() {
    local k=$1 split=$2 limit=$3 dep=$4 dir ckpt ids=() tag
    dir=$(round_dir "$k"); ckpt=$(advaudio_path checkpoint "$RUN_DIR" --round "$k")
    tag=$(printf 'r%02d-%s' "$k" "$split")
    MERGED=
    if [ "$RESUME" = 1 ] && [ -z "$dep" ] && is_merged "$k" "$split" "$ckpt"; then
        echo "skip: attack $tag (merged results in $dir)" >&2
        return
    fi
    local vars=(CHECKPOINT="$ckpt" STORE="$STORE" SPLIT="$split" ROUND="$k" FOOLING_RATE="$FOOLING_RATE"
                LIMIT="$limit" BATCH_SIZE="$ATTACK_BATCH_SIZE" SEED="$SEED" TARGET_RULE= OUT= DEVICE="$DEVICE" SLICE=)
    if [ ${#sliced[@]} -gt 0 ]; then
        submit "attack-$tag" "$dep" attack.sbatch "$ATTACK_RESOURCES" "${vars[@]}" ATTACKS="$(join "${sliced[@]}")" \
            ATTACK_ARGS="$(attack_args "$(join "${sliced[@]}")")" SLICES="$ARRAY_SIZE" -- --array="0-$((ARRAY_SIZE - 1))"
        ids+=("$JOB")
    fi
    if [ ${#whole[@]} -gt 0 ]; then
        submit "attack-$tag-whole" "$dep" attack.sbatch "$ATTACK_RESOURCES" "${vars[@]}" \
            ATTACKS="$(join "${whole[@]}")" ATTACK_ARGS="$(attack_args "$(join "${whole[@]}")")" SLICES=1 -- --array=0-0
        ids+=("$JOB")
    fi
    submit "merge-$tag" "$(join "${ids[@]}" | tr , :)" merge.sbatch "$MERGE_RESOURCES" CHECKPOINT="$ckpt" \
        STORE="$STORE" SPLIT="$split" ROUND="$k" ATTACK= RESULTS_DIR= ALLOW_MIXED_BUDGETS="$ALLOW_MIXED_BUDGETS" MERGE_ARGS=
    MERGED=$JOB
}

# featurize + train (round 0)
train_dep=
if [ "$RESUME" = 1 ] && is_complete_run "$RUN_DIR" "$EPOCHS"; then
    echo "skip: featurize and train (complete run in $RUN_DIR)" >&2
else
    store_vars=(STORE="$STORE" STORE_FILE=)
    if [ -z "$STORE" ]; then
        submit featurize "" featurize.sbatch "$FEATURIZE_RESOURCES" DATASET="$DATASET" DATA_ROOT="$DATA_ROOT" \
            DATASET_OPTIONS="$DATASET_OPTIONS" FEATURES="$FEATURES" CACHE="$CACHE" EXTRA_ARGS="$FEATURIZE_ARGS" \
            SHARD_SIZE= WORKERS= WORKER_JOBS=0 -- --output="$LOG_DIR/featurize.out" --error="$LOG_DIR/featurize.err"
        # featurize.sbatch prints the store directory as the last line of its standard output.
        store_vars=(STORE= STORE_FILE="$LOG_DIR/featurize.out")
        train_dep=$JOB
    fi
    submit train "$train_dep" train.sbatch "$TRAIN_RESOURCES" "${store_vars[@]}" OUT="$RUN_DIR" VIEW="$VIEW" \
        MODEL="$MODEL" WIDTH="$WIDTH" INPUT_SIZE="$INPUT_SIZE" RECIPE="$RECIPE" EPOCHS="$EPOCHS" BATCH_SIZE="$BATCH_SIZE" \
        TEST_FOLD="$TEST_FOLD" SEED="$SEED" WORKERS= DEVICE="$DEVICE" TRAIN_ARGS="$TRAIN_ARGS" NPROC= NNODES=
    train_dep=$JOB
fi

# rounds
report_deps=()
dep=$train_dep
for ((k = 0; k <= ROUNDS; k++)); do
    attack_and_merge "$k" test "$TEST_LIMIT" "$dep"
    [ -z "$MERGED" ] || report_deps+=("$MERGED")
    [ "$k" -lt "$ROUNDS" ] || break
    attack_and_merge "$k" train "$TRAIN_LIMIT" "$dep"
    next=$(round_dir $((k + 1)))
    if [ "$RESUME" = 1 ] && [ -z "$MERGED" ] && is_complete_run "$next"; then
        echo "skip: retrain round $((k + 1)) (complete run in $next)" >&2
        dep=
    else
        submit "$(printf 'retrain-r%02d' $((k + 1)))" "$MERGED" retrain.sbatch "$RETRAIN_RESOURCES" \
            CHECKPOINT="$(advaudio_path checkpoint "$RUN_DIR" --round "$k")" OUT="$next" ROUND="$k" STORE="$STORE" MIX="$MIX" \
            EPOCHS="$RETRAIN_EPOCHS" MODE="$RETRAIN_MODE" DEVICE= RETRAIN_ARGS="$RETRAIN_ARGS" NPROC=
        dep=$JOB
    fi
done
submit report "$(join "${report_deps[@]}" | tr , :)" report.sbatch "$REPORT_RESOURCES" RUN_DIRS="$RUN_DIR" \
    OUT="$REPORT_DIR" REPORT_ARGS="$REPORT_ARGS"

for step in "${ORDER[@]}"; do printf '%-22s %s\n' "$step" "${JOBS[$step]}"; done
echo "logs: $LOG_DIR; follow with: squeue -u ${USER:-$(id -un)}; report: $REPORT_DIR/report.md"
echo "$RUN_DIR"
