"""Stage `gate`: the blessing gate. A candidate becomes `champion` only if it deserves it.

The candidate is the model version the export stage registered (alias `candidate`). It must
pass the absolute thresholds of `gate.thresholds`, beat the evaluate stage's simple baselines (with
`gate.thresholds: auto`: the trivial one beaten and the linear one not better, `pipeline.ml.baselines`),
pass its slices' bars, and beat the current champion by at least `gate.min_improvement` on
`gate.metric`, the champion being re-evaluated on the *current* test split rather than trusted from
its old metrics. With no champion yet, the thresholds and the baselines decide.
`pipeline gate --force-bless --reason "..."` overrides the decision and records why.

The decision and its reasons are `reports/gate/decision.json` (a DVC metrics file) and tags on
the model version.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from pipeline.core.config import Config, GateConfig
from pipeline.core.kinds import BUILTIN_SOURCES
from pipeline.core.metrics import higher_is_better
from pipeline.core.outputs import write_json_atomic
from pipeline.core.runner import StageError, StageResult, run_stage
from pipeline.ml import baselines, behaviour, slices

log = logging.getLogger(__name__)

CHAMPION, CANDIDATE = "champion", "candidate"


def decide(
    candidate: dict,
    champion: dict | None,
    settings: GateConfig,
    slice_failures=(),
    measured: dict | None = None,
    checks: list[dict] | None = None,
) -> dict:
    """Blessed or not, with one reason per check. `champion` is None when there is none yet; `slice_failures` are
    the slices that failed their bars (`pipeline.ml.slices.judge`); `measured`: the evaluate stage's baselines
    (`baselines.json`), judged or only shown as `gate.baselines` says; `checks`: its behavioural checks
    (`behaviour.json`), as `gate.behaviour` says."""
    reasons, passes = list(slice_failures), not slice_failures
    if checks is not None:
        behaved, said = behaviour.judge(checks)
        if settings.behaviour == "judge":
            passes &= behaved
            reasons.extend(said)
        else:
            reasons.extend(f"{reason} (not judged: gate.behaviour is report)" for reason in said)
    if measured is not None:
        beaten, said = baselines.judge(measured, settings.baseline_confidence)
        if settings.baselines == "judge":
            passes &= beaten
            reasons.extend(said)
        else:
            reasons.extend(f"{reason} (not judged: gate.baselines is report)" for reason in said)
    for name, bar in settings.thresholds.items():
        value = candidate.get(name)
        if value is None:
            reasons.append(f"{name}: not measured for this task, threshold ignored")
            continue
        higher = higher_is_better(name)
        ok = value >= bar if higher else value <= bar
        passes &= ok
        reasons.append(f"{name} {value:.4f} {'>=' if higher else '<='} {bar}: {'passes' if ok else 'FAILS'}")
    metric, blessed = settings.metric, passes
    if champion is None:
        judged = measured is not None and settings.baselines == "judge"
        reasons.append(f"no champion yet: the thresholds{' and the baselines' if judged else ''} decide")
    else:
        higher = higher_is_better(metric)
        improvement = (candidate[metric] - champion[metric]) * (1 if higher else -1)
        beats = improvement >= settings.min_improvement - 1e-12
        blessed = passes and beats
        verdict = "beats" if beats else "does not beat"
        reasons.append(
            f"{metric}: candidate {candidate[metric]:.4f} vs champion {champion[metric]:.4f} on the same test split"
            f" (improvement {improvement:+.4f}, required {settings.min_improvement}): {verdict}"
        )
    return {"blessed": bool(blessed), "reasons": reasons}


def evaluate_registered(model_uri: str, config: Config, spec) -> tuple[dict | None, list[dict]]:
    """Holdout metrics of a registered model on the current test split, and per slice; (None, []) if it cannot
    read it."""
    from pipeline.ml.distribute import setup_tensorflow
    from pipeline.ml.evaluation import holdout_metrics
    from pipeline.serving.loading import load_registered_keras

    setup_tensorflow(config)  # the only part of the gate that needs TensorFlow
    model = load_registered_keras(model_uri)
    settings = config.evaluate
    try:  # one pass over the test split: the overall metrics and each slice's
        split = slices.read_test_split(model, config.paths.prepared, spec, slices.sliced(spec, settings.slices))
        metrics = holdout_metrics(spec, *split[1:])
        return metrics, slices.slice_results(spec, split, settings.slices, settings.min_slice_examples)
    except (ValueError, KeyError, TypeError) as error:
        log.warning("%s cannot read the current test split (%s)", model_uri, error)
        return None, []


def record(client, name: str, version: int, decision: dict, forced_reason: str | None = None) -> None:
    """Tags the model version with the decision; moves the `champion` alias if blessed."""
    client.set_model_version_tag(
        name,
        str(version),
        "gate.decision",
        "forced" if forced_reason else ("blessed" if decision["blessed"] else "rejected"),
    )
    client.set_model_version_tag(name, str(version), "gate.reasons", " | ".join(decision["reasons"])[:4900])
    if forced_reason:
        client.set_model_version_tag(name, str(version), "gate.forced_reason", forced_reason)
    if decision["blessed"] or forced_reason:
        client.set_registered_model_alias(name, CHAMPION, str(version))


def read_export_report(path: Path) -> dict:
    """The export's report, which names the candidate and holds what the model card shows of it."""
    if not path.is_file():
        raise StageError(f"{path} is missing: the gate judges the last export's candidate; run `dvc repro` first")
    report = json.loads(path.read_text())
    missing = [key for key in ("registered_model", "parameters", "example_request") if key not in report]
    if missing:
        raise StageError(
            f"{path} lacks {', '.join(missing)}: an earlier version of the pipeline wrote it;"
            " run `dvc repro` (its export stage writes them) before `pipeline gate`"
        )
    return report


def gate(config: Config, force_reason: str | None = None) -> dict:
    """Runs the gate for the candidate of the last export; returns the decision (also written to disk)."""
    import mlflow

    from pipeline.core.spec import load as load_spec

    export_report = read_export_report(Path(config.paths.reports) / "export" / "export.json")
    registered = export_report["registered_model"]
    name, version = registered["name"], int(registered["version"])
    candidate = json.loads((Path(config.paths.reports) / "evaluate" / "metrics.json").read_text())
    client = mlflow.tracking.MlflowClient()
    aliases = client.get_registered_model(name).aliases
    champion_version = int(aliases[CHAMPION]) if CHAMPION in aliases else None
    champion, champion_slices = None, []
    if champion_version is not None and champion_version != version:
        champion, champion_slices = evaluate_registered(
            f"models:/{name}@{CHAMPION}", config, load_spec(config.paths.prepared)
        )
    sliced_file = Path(config.paths.reports) / "evaluate" / slices.SLICES_FILE
    candidate_slices = json.loads(sliced_file.read_text()) if sliced_file.is_file() else []
    settings = config.gate
    failures = slices.judge(
        candidate_slices, champion_slices, settings.metric, settings.slice_thresholds, settings.max_slice_drop
    )
    measured_file = Path(config.paths.reports) / "evaluate" / baselines.BASELINES_FILE
    measured = json.loads(measured_file.read_text()) if measured_file.is_file() else None
    checks_file = Path(config.paths.reports) / "evaluate" / behaviour.BEHAVIOUR_FILE
    checks = json.loads(checks_file.read_text()) if checks_file.is_file() else None
    decision = decide(candidate, champion, settings, failures, measured, checks)
    judged = sum(entry["judged"] for entry in candidate_slices)
    if judged and (settings.slice_thresholds or settings.max_slice_drop is not None) and not failures:
        decision["reasons"].append(f"{judged} judged slices: each within its bars")
    if champion_version == version:
        decision["reasons"].append("the candidate already is the champion")
    if champion_version is not None and champion is None and champion_version != version:
        decision["reasons"].append(f"champion v{champion_version} cannot read the current test split: not compared")
    if force_reason:
        decision["reasons"].append(f"FORCED by hand: {force_reason}")
    record(client, name, version, decision, force_reason)
    result = {
        "model": name,
        "candidate_version": version,
        "champion_version_before": champion_version,
        "champion_version_after": version if (decision["blessed"] or force_reason) else champion_version,
        "blessed": decision["blessed"],
        "forced": bool(force_reason),
        "metric": config.gate.metric,
        "candidate": candidate.get(config.gate.metric),
        "champion": None if champion is None else champion.get(config.gate.metric),
        "reasons": decision["reasons"],
    }
    reports = Path(config.paths.reports) / "gate"
    result["slices"] = {"candidate": candidate_slices, "champion": champion_slices}
    result["baselines"] = measured
    result["behaviour"] = checks
    shown = {**candidate, **baselines.headline_scores(measured)}  # the baselines' scores beside the model's
    write_card(config, client, export_report, shown, champion, champion_version, result, reports)
    write_json_atomic(reports / "decision.json", result)
    headline = {"blessed": result["blessed"], "candidate": result["candidate"], "champion": result["champion"]}
    write_json_atomic(reports / "metrics.json", headline)  # the DVC metrics: the decision, compared across runs
    return result


def write_card(config: Config, client, export_report, candidate, champion, champion_version, result, reports) -> None:
    """The version's model card: `reports/gate/model_card.md` and `.html`, artifacts of the version's run, and the
    version's description in the registry (which the MLflow UI renders). The model's size and an example request
    come from the export's report."""
    from pipeline.core.outputs import write_text_atomic
    from pipeline.core.spec import load as load_spec
    from pipeline.ml import hyperparameters as hyperparameter_file
    from pipeline.serving import model_card

    name, version = result["model"], result["candidate_version"]
    spec = load_spec(config.paths.prepared)
    source = config.data.source if config.data.source in BUILTIN_SOURCES else config.data.path
    task = spec.task_type
    names = [task.headline_metric] + sorted(task.metric_names - {task.headline_metric, "loss"})
    names += sorted(key for key in candidate if key.endswith(f"_{task.headline_metric}"))  # baselines' scores
    card = model_card.build_card(
        name=name,
        version=version,
        spec=spec,
        source=source,
        hyperparameters=hyperparameter_file.load(config.paths.hyperparameters),
        parameters=export_report["parameters"],
        candidate=candidate,
        champion=champion,
        champion_version=champion_version,
        decision=result,
        metric_names=names,
        intended_use=model_card.default_intended_use(spec, source)
        if config.card.intended_use == "auto"
        else config.card.intended_use,
        limitations=model_card.default_limitations(spec, bool(result["slices"]["candidate"]))
        if config.card.limitations == "auto"
        else config.card.limitations,
        example_request=export_report["example_request"],
        slices=result["slices"],
        slice_metric=config.gate.metric,
    )
    paths = [
        write_text_atomic(reports / model_card.CARD_FILE, card),
        write_text_atomic(reports / model_card.HTML_FILE, model_card.to_html(card, f"{name} v{version}")),
    ]
    run_id = client.get_model_version(name, str(version)).run_id
    if run_id:
        for path in paths:
            client.log_artifact(run_id, str(path), "model_card")
    client.update_model_version(name, str(version), description=model_card.description(card))


def _summary(result: dict) -> str:
    verdict = "FORCED champion" if result["forced"] else ("blessed: new champion" if result["blessed"] else "rejected")
    return f"{result['model']} v{result['candidate_version']} {verdict}; " + "; ".join(result["reasons"])


def run(config: Config) -> StageResult:
    result = gate(config)
    return StageResult(
        summary=_summary(result),
        metrics={"gate_blessed": float(result["blessed"])},
        artifacts=[Path(config.paths.reports) / "gate" / name for name in ("decision.json", "model_card.html")],
    )


def force(params_file: str, reason: str) -> int:
    """`pipeline gate --force-bless --reason ...`: makes the candidate champion whatever the checks say."""
    if not reason or not reason.strip():
        print(
            'pipeline gate: error: --force-bless needs --reason "why" (it is recorded on the model version).',
            file=sys.stderr,
        )
        return 2

    def body(config: Config) -> StageResult:
        result = gate(config, force_reason=reason.strip())
        return StageResult(summary=_summary(result), metrics={"gate_forced": 1.0})

    run_stage("gate", params_file, body)
    return 0


def main(params_file: str = "params.yaml") -> None:
    run_stage("gate", params_file, run)
