"""`pipeline retrain`: the CI retraining job, runnable on any machine.

Steps, each printed as it runs and recorded in a Markdown report:
1. `dvc pull` when a DVC remote is configured (data, feedback batches, models);
2. `pipeline monitor --data RECENT` when recent production data is given: drift and, when it is
   labelled, live accuracy; labelled data is then added as a feedback batch (`pipeline feedback add`);
3. `dvc repro` when retraining is due: the monitor says so, the pipeline's inputs changed
   (`dvc status`: new data, new feedback, new params or code), or `--force`; the blessing gate is
   part of the pipeline, so a retrained model only becomes champion if it deserves it;
4. `dvc metrics diff BASE_REV --md`: what changed against the main branch;
5. `dvc push` when a remote is configured;
6. the report goes to `<paths.reports>/retrain/summary.md` and, with `--summary`, is appended
   there too (GitHub Actions: `$GITHUB_STEP_SUMMARY`).
The workflow in `.github/workflows/retrain.yml` only sets up the machine and calls this.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.core.config import Config, load_config
from pipeline.core.processes import tool
from pipeline.core.runner import configure_logging, user_errors

log = logging.getLogger(__name__)


class StepError(RuntimeError):
    """A step of the job failed; the report says which and why."""


def step(title: str, command: list[str], log_lines: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """Runs one command of the job, streaming its output; records it in the report."""
    print(f"::group::{title}" if _in_github() else f"== {title}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(completed.stdout)
    sys.stderr.write(completed.stderr)
    if _in_github():
        print("::endgroup::", flush=True)
    seconds = time.perf_counter() - started
    log_lines.append(f"| {title} | `{' '.join(command)}` | exit {completed.returncode} | {seconds:.0f} s |")
    if check and completed.returncode != 0:
        raise StepError(f"{title} failed (exit {completed.returncode}): {completed.stderr.strip()[-2000:]}")
    return completed


def _in_github() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def has_remote() -> bool:
    completed = subprocess.run([tool("dvc"), "remote", "list"], capture_output=True, text=True)
    return completed.returncode == 0 and bool(completed.stdout.strip())


def pipeline_is_stale(steps: list[str]) -> list[str]:
    """The stages `dvc status` reports as changed (new data, params or code)."""
    completed = step("pipeline status", [tool("dvc"), "status", "--json"], steps)
    status = json.loads(completed.stdout or "{}")
    return sorted(name.split(":")[-1] for name in status)


def render(report: dict) -> str:
    """The job's Markdown report."""
    lines = ["# Retraining job", ""]
    monitor = report.get("monitor")
    if monitor:
        verdict = "**retraining due**" if monitor["retrain"] else "no drift"
        lines += [f"## Monitor: {verdict}", "", f"{monitor['examples']} examples of `{monitor['data']}`:", ""]
        lines += [f"- {reason}" for reason in monitor["reasons"]]
        if monitor.get("feedback"):
            feedback = monitor["feedback"]
            lines.append(
                f"- live {feedback['metric']} {feedback['live']:.4f} vs holdout {feedback['holdout']:.4f} (labelled)"
            )
        lines += ["", "Full report: `reports/monitor/report.html` (plots).", ""]
    if report.get("feedback"):
        lines += [f"Added as feedback: {report['feedback']}", ""]
    lines += [f"## Retrained: {'yes' if report['retrained'] else 'no'}", "", report["why"], ""]
    gate = report.get("gate")
    if gate:
        verdict = "blessed: new champion" if gate["blessed"] else "rejected: the champion stays"
        lines += [f"## Gate: {gate['model']} v{gate['candidate_version']} {verdict}", ""]
        lines += [f"- {reason}" for reason in gate["reasons"]] + [""]
    if report.get("metrics_diff"):
        lines += [f"## Metrics against `{report['base_rev']}`", "", report["metrics_diff"].strip(), ""]
    lines += ["## Steps", "", "| step | command | result | time |", "|---|---|---|---|", *report["steps"], ""]
    if report.get("error"):
        lines += ["## FAILED", "", f"```\n{report['error']}\n```", ""]
    return "\n".join(lines)


def run_job(config: Config, params_file: str, data: str | None, base_rev: str, force: bool) -> dict:
    pipeline = [sys.executable, "-m", "pipeline"]
    report: dict = {"steps": [], "retrained": False, "base_rev": base_rev}
    steps = report["steps"]
    reports = Path(config.paths.reports)
    try:
        remote = has_remote()
        if remote:
            step("pull data and models", [tool("dvc"), "pull"], steps)
        due = []
        if data:
            step(
                "monitor recent data",
                [*pipeline, "monitor", "--params", params_file, "--data", data, "--output", str(reports / "monitor")],
                steps,
            )
            report["monitor"] = json.loads((reports / "monitor" / "drift.json").read_text())
            if report["monitor"]["retrain"]:
                due.append("the monitor found drift or degraded accuracy")
            if report["monitor"].get("feedback"):
                completed = step(
                    "add labelled data as feedback",
                    [*pipeline, "feedback", "add", data, "--params", params_file],
                    steps,
                )
                report["feedback"] = completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else data
        stale = pipeline_is_stale(steps)
        if stale:
            due.append(f"the pipeline's inputs changed (stages {', '.join(stale)})")
        if force:
            due.append("--force")
        if due:
            report["why"] = "Because " + "; ".join(due) + "."
            step("retrain (dvc repro)", [tool("dvc"), "repro"], steps)
            report["retrained"] = True
            decision = reports / "gate" / "decision.json"
            if decision.is_file():
                report["gate"] = json.loads(decision.read_text())
        else:
            report["why"] = "Nothing calls for it: no drift, and data, params and code are unchanged."
        diff = step(
            "metrics against the base revision",
            [tool("dvc"), "metrics", "diff", base_rev, "--md"],
            steps,
            check=False,
        )
        report["metrics_diff"] = diff.stdout if diff.returncode == 0 else f"(unavailable: {diff.stderr.strip()})"
        if remote:
            step("push data and models", [tool("dvc"), "push"], steps)
    except StepError as error:
        report["error"] = str(error)
    return report


def command(params_file: str, data: str | None, base_rev: str, summary: str | None, force: bool) -> int:
    """Runs the job; exit 0 when every step worked (whatever the gate decided), 1 when one failed."""
    try:
        config = load_config(params_file)
    except user_errors() as error:
        print(f"pipeline retrain: error: {error}", file=sys.stderr)
        return 2
    configure_logging(config.base.log_level)
    report = run_job(config, params_file, data, base_rev, force)
    markdown = render(report)
    target = Path(config.paths.reports) / "retrain" / "summary.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(markdown)
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(markdown)
    verdict = "retrained" if report["retrained"] else "nothing to retrain"
    if report.get("gate"):
        verdict += ", " + ("new champion" if report["gate"]["blessed"] else "candidate rejected by the gate")
    print(f"[retrain] {verdict} -> {target}" + (f"; FAILED: {report['error']}" if report.get("error") else ""))
    return 1 if report.get("error") else 0
