"""``advaudio study init | plan | run | status | report``."""

from __future__ import annotations

import math
import sys

import click

from advaudio.cli._common import computes
from advaudio.study.examples import EXAMPLES
from advaudio.study.spec import EXECUTORS

STUDY_FILE = click.argument("study_file", metavar="FILE", type=click.Path(dir_okay=False))


@click.group()
def study():
    """The paper's grid as one study: datasets × models × views × seeds × CV folds.

    A study file (TOML) declares the grid, the cross-validation protocol, the
    attacks and the rounds; `init` writes a commented one. Cells are run by
    the same stage functions as `train` and `rounds`, resume after a kill, and
    a changed parameter makes new cells without touching the others.
    """


@study.command()
@STUDY_FILE
@click.option("--example", type=click.Choice(list(EXAMPLES)), default="synthetic", show_default=True,
              help="Which example: the embedded synthetic set (minutes on a laptop CPU), the paper's ESC-50 "
                   "grid, or the original ESC-10 release.")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def init(study_file, example, force):
    """Write a commented example study to FILE."""
    from advaudio.study.examples import write_example

    path = write_example(study_file, example, force=force)
    click.echo(f"wrote {path}; next: advaudio study plan {path}")


@study.command()
@STUDY_FILE
@click.option("--probe/--no-probe", default=True, show_default=True,
              help="Time a forward/backward pass of each model here to estimate the cells not yet run "
                   "(finished cells of the same model are used instead when there are any).")
def plan(study_file, probe):
    """The cells of FILE, what each costs, and what is already done."""
    from advaudio.study.costs import estimate, format_seconds
    from advaudio.study.plan import plan_study
    from advaudio.study.spec import read_study

    p = plan_study(read_study(study_file))
    done = {s.cell.cell_id: float(s.summary.wall_time_s.get("total") or 0.0) for s in p.statuses if s.summary}
    costs = estimate(p.spec, p.stores, p.cells, done, probe=probe)
    for name, sp in p.stores.items():
        click.echo(f"dataset {name}: {sp.clips} clips, folds {','.join(map(str, sp.folds))}, store "
                   f"{'complete' if sp.complete else 'to featurize'}: {sp.store_dir}")
    head = (f"{'cell':<62} {'status':<11} {'train samples':>13} {'attack clips':>12} {'attack/train':>12} "
            f"{'time':>9}  estimate")
    click.echo(head)
    click.echo("-" * len(head))
    total = remaining = 0.0
    unknown = 0  # cells to run without an estimate (no probe, no finished cell of their model)
    for s in p.statuses:
        c = costs[s.cell.cell_id]
        known = math.isfinite(c.seconds)
        total += c.seconds if known else 0.0
        if s.status != "done":
            remaining += c.seconds if known else 0.0
            unknown += not known
        share = f"{c.attack_share:.2f}×" if math.isfinite(c.attack_share) else "-"  # attack work / training work
        click.echo(f"{s.cell.cell_id:<62} {s.status:<11} {c.train_samples:>13,} {c.attack_clips:>12,} {share:>12} "
                   f"{format_seconds(c.seconds):>9}  {c.source}")
    counts = p.counts()
    to_run = len(p.pending())
    if unknown == to_run and to_run:
        time = "time to go unknown (no estimate without --probe or finished cells of the same models)"
    elif unknown:
        time = (f"estimated {format_seconds(remaining)} to go on this machine for {to_run - unknown} of them, "
                f"unknown for {unknown} (no estimate without --probe or finished cells of the same models)")
    else:
        time = f"estimated {format_seconds(remaining)} to go on this machine ({format_seconds(total)} in all)"
    click.echo(f"{len(p.cells)} cells: {counts['done']} done, {to_run} to run; {time}")


@study.command()
@STUDY_FILE
@click.option("--executor", type=click.Choice(EXECUTORS), default=None,
              help="Where cells run [default: the file's [run] executor].")
@click.option("--cell", "cells", multiple=True, metavar="ID",
              help="Run only this cell (repeatable); `study plan` lists the ids.")
@click.option("--featurize-only", is_flag=True, help="Featurize the datasets and stop.")
@click.option("--echo/--quiet", default=False, show_default=True,
              help="Show each cell's own progress here too (it always goes to the cell's log).")
@click.option("--keep-going/--fail-fast", default=True, show_default=True,
              help="After a failed cell, run the others (and exit with an error at the end), or stop.")
@computes
def run(study_file, executor, cells, featurize_only, echo, keep_going):
    """Run every cell of FILE that is not done (resumable: run it again after a kill)."""
    from advaudio.errors import AdvaudioError
    from advaudio.study.runner import featurize_study, run_study, write_study_record
    from advaudio.study.spec import read_study

    spec = read_study(study_file)
    if featurize_only:
        spec.directory.mkdir(parents=True, exist_ok=True)
        write_study_record(spec)
        for name, path in featurize_study(spec).items():
            click.echo(f"{name}: {path}")
        return
    final = run_study(spec, executor=executor, cells=list(cells) or None, echo=echo, keep_going=keep_going)
    if (executor or spec.run.executor) == "slurm":
        click.echo(f"submitted; follow with: advaudio study status {study_file}")
        return
    counts = final.counts()
    wanted = set(cells) if cells else {c.cell_id for c in final.cells}
    failed = [s for s in final.statuses if s.cell.cell_id in wanted and s.status != "done"]
    if failed:
        raise AdvaudioError(f"{len(failed)} cell(s) not done (first: {failed[0].cell.cell_id}: "
                            f"{failed[0].reason or failed[0].status}); see `advaudio study status {study_file}`")
    click.echo(f"{counts['done']} of {len(final.cells)} cells done; next: advaudio study report {study_file}")


@study.command()
@STUDY_FILE
def status(study_file):
    """Cells done / running / failed / pending, with each failure's reason and log."""
    from advaudio.study.costs import format_seconds
    from advaudio.study.plan import plan_study
    from advaudio.study.spec import read_study

    p = plan_study(read_study(study_file))
    for s in p.statuses:
        line = f"{s.status:<11} {s.cell.cell_id}"
        if s.summary is not None:
            line += f"  {format_seconds(float(s.summary.wall_time_s.get('total') or 0.0))}"
            accuracy = s.summary.last_round.test_accuracy
            line += f", test accuracy {accuracy:.3f} (round {s.summary.last_round.round})"
        elif s.reason:
            line += f"  {s.reason}"
        if s.status in ("failed", "interrupted", "running") and s.log:
            line += f"  log: {s.log}"
        click.echo(line)
    c = p.counts()
    click.echo(", ".join(f"{c[k]} {k}" for k in c if c[k]) + f" ({len(p.cells)} cells)")
    if c["failed"]:
        sys.exit(1)


@study.command()
@STUDY_FILE
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Report directory [default: STUDY_DIR/report].")
@click.option("--resamples", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples of the budgets' confidence intervals.")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
              help="Confidence level of the intervals.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
def report(study_file, out_dir, resamples, confidence, seed):
    """The paper's tables for FILE: accuracy (mean ± std over folds), budgets with CIs, heat maps."""
    from advaudio.study.report import write_report

    path = write_report(study_file, out_dir=out_dir, resamples=resamples, confidence=confidence, seed=seed)
    click.echo(str(path))
