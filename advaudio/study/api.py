"""``advaudio study init | plan | run | status | report`` as functions: :func:`init`, :func:`plan`,
:func:`run`, :func:`status`, :func:`report` (``advaudio.study.run("study.toml")``), with the options
of :mod:`advaudio.study.study_config`. Each returns a result whose :meth:`output` is what the
command prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advaudio.errors import AdvaudioError
from advaudio.options import CommandResult, Values
from advaudio.study import study_config as commands
from advaudio.study.examples import write_example
from advaudio.study.reporting import write_report
from advaudio.study.spec import read_study
from advaudio.threads import configure_threads

__all__ = ["InitResult", "PlanResult", "ReportResult", "RunResult", "StatusResult", "init", "plan", "report", "run",
           "status"]


@dataclass
class InitResult(CommandResult):
    """:attr:`path`: the study file written."""

    def output(self) -> list[str]:
        return [f"wrote {self.path}; next: advaudio study plan {self.path}"]


@commands.INIT.function(InitResult)
def init(v: Values) -> InitResult:

    return InitResult(Path(write_example(v.study_file, v.example, force=v.force)))


@dataclass
class PlanResult(CommandResult):
    """:attr:`plan` (:class:`~advaudio.study.planning.StudyPlan`: stores, cells, their states) and
    :attr:`costs` (cell id → its work and estimated time); :attr:`path` is the study file."""

    plan: Any = None
    costs: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        from advaudio.study.costs import format_seconds

        p, costs = self.plan, self.costs
        out = [f"dataset {name}: {sp.clips} clips, folds {','.join(map(str, sp.folds))}, store "
               f"{'complete' if sp.complete else 'to featurize'}: {sp.store_dir}" for name, sp in p.stores.items()]
        head = (f"{'cell':<62} {'status':<11} {'train samples':>13} {'attack clips':>12} {'attack/train':>12} "
                f"{'time':>9}  estimate")
        out += [head, "-" * len(head)]
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
            out.append(f"{s.cell.cell_id:<62} {s.status:<11} {c.train_samples:>13,} {c.attack_clips:>12,} "
                       f"{share:>12} {format_seconds(c.seconds):>9}  {c.source}")
        counts = p.counts()
        to_run = len(p.pending())
        if unknown == to_run and to_run:
            time = "time to go unknown (no estimate without --probe or finished cells of the same models)"
        elif unknown:
            time = (f"estimated {format_seconds(remaining)} to go on this machine for {to_run - unknown} of them, "
                    f"unknown for {unknown} (no estimate without --probe or finished cells of the same models)")
        else:
            time = f"estimated {format_seconds(remaining)} to go on this machine ({format_seconds(total)} in all)"
        out.append(f"{len(p.cells)} cells: {counts['done']} done, {to_run} to run; {time}")
        return out

    def output(self) -> list[str]:
        return self.lines()


@commands.PLAN.function(PlanResult)
def plan(v: Values) -> PlanResult:
    from advaudio.study.costs import estimate
    from advaudio.study.planning import plan_study

    p = plan_study(read_study(v.study_file))
    done = {s.cell.cell_id: float(s.summary.wall_time_s.get("total") or 0.0) for s in p.statuses if s.summary}
    return PlanResult(Path(v.study_file), plan=p, costs=estimate(p.spec, p.stores, p.cells, done, probe=v.probe))


@dataclass
class RunResult(CommandResult):
    """:attr:`plan`: the study's plan after the run (None after ``featurize_only``); :attr:`stores`: dataset →
    store (``featurize_only``); :attr:`submitted`: the cells went to SLURM as jobs. :attr:`path` is the
    study file. A cell that is not done afterwards raises an error naming it."""

    plan: Any = None
    stores: dict[str, Path] = field(default_factory=dict)
    submitted: bool = False

    def output(self) -> list[str]:
        if self.plan is None:
            return [f"{name}: {path}" for name, path in self.stores.items()]
        if self.submitted:
            return [f"submitted; follow with: advaudio study status {self.path}"]
        return [f"{self.plan.counts()['done']} of {len(self.plan.cells)} cells done; next: advaudio study report "
                f"{self.path}"]


@commands.RUN.function(RunResult)
def run(v: Values) -> RunResult:
    from advaudio.study.runner import featurize_study, run_study, write_study_record

    spec = read_study(v.study_file)
    configure_threads(v.threads)
    path = Path(v.study_file)
    if v.featurize_only:
        spec.directory.mkdir(parents=True, exist_ok=True)
        write_study_record(spec)
        return RunResult(path, stores=featurize_study(spec, progress=v.progress))
    final = run_study(spec, executor=v.executor, cells=list(v.cell or ()) or None, progress=v.progress, echo=v.echo,
                      keep_going=v.keep_going)
    if (v.executor or spec.run.executor) == "slurm":
        return RunResult(path, plan=final, submitted=True)
    wanted = set(v.cell) if v.cell else {c.cell_id for c in final.cells}
    failed = [s for s in final.statuses if s.cell.cell_id in wanted and s.status != "done"]
    if failed:
        raise AdvaudioError(f"{len(failed)} cell(s) not done (first: {failed[0].cell.cell_id}: "
                            f"{failed[0].reason or failed[0].status}); see `advaudio study status {v.study_file}`")
    return RunResult(path, plan=final)


@dataclass
class StatusResult(CommandResult):
    """:attr:`plan`: the study's cells and their states; :attr:`exit_status` 1 when a cell failed."""

    plan: Any = None

    def lines(self) -> list[str]:
        from advaudio.study.costs import format_seconds

        out = []
        for s in self.plan.statuses:
            line = f"{s.status:<11} {s.cell.cell_id}"
            if s.summary is not None:
                line += f"  {format_seconds(float(s.summary.wall_time_s.get('total') or 0.0))}"
                accuracy = s.summary.last_round.test_accuracy
                line += f", test accuracy {accuracy:.3f} (round {s.summary.last_round.round})"
            elif s.reason:
                line += f"  {s.reason}"
            if s.status in ("failed", "interrupted", "running") and s.log:
                line += f"  log: {s.log}"
            out.append(line)
        c = self.plan.counts()
        out.append(", ".join(f"{c[k]} {k}" for k in c if c[k]) + f" ({len(self.plan.cells)} cells)")
        return out

    def output(self) -> list[str]:
        return self.lines()

    @property
    def exit_status(self) -> int:
        return 1 if self.plan.counts()["failed"] else 0


@commands.STATUS.function(StatusResult)
def status(v: Values) -> StatusResult:
    from advaudio.study.planning import plan_study

    return StatusResult(Path(v.study_file), plan=plan_study(read_study(v.study_file)))


@dataclass
class ReportResult(CommandResult):
    """:attr:`path`: the report's ``study.md`` (``study.{html,csv,json}`` and the heat maps beside it)."""


@commands.REPORT.function(ReportResult)
def report(v: Values) -> ReportResult:

    return ReportResult(Path(write_report(v.study_file, out_dir=v.out, resamples=v.resamples,
                                          confidence=v.confidence, seed=v.seed)))
