"""Behavioural checks of a trained model, as Made-With-ML's `tests/model` does: what it must do beyond a score.

- **Invariance** (generated from every test example, by the kind of data: `ModelModality.perturbations`): a
  change that should not matter leaves the prediction as it was in at least `evaluate.invariance_rate` of the
  test examples: an image shifted by one pixel, numbers nudged by 1 % of their spread, a word the model never saw
  added to a text; a series moved up by its spread moves the forecast up by as much. A class must stay the same;
  a value within a tenth of the model's own mean error on the test split.
- **Minimum functionality** and **direction** (written by people, `evaluate.behaviour_cases`: a YAML file of
  requests in the HTTP API's form): an example that must get its class (or a value in a range), and a change of
  an example that must move a class's probability (or the value, or a forecast step) up or down. Every case must
  pass.

The results are `behaviour.json` (the evaluate stage), the model card's behaviour section and, with
`gate.behaviour: judge`, the gate's decision (a failed check names itself).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from pipeline.core.errors import ConfigError
from pipeline.core.metrics import class_probabilities, predicted_classes

BEHAVIOUR_FILE = "behaviour.json"
CASES_SUFFIX = ".behaviour.yaml"
VALUE_TOLERANCE = 0.1
"""A value (regression, forecast) is unchanged within this share of the model's mean absolute error on the test
split."""
SHOWN_FAILURES = 5


def predict(model, features: dict, modality, batch_size: int = 256) -> np.ndarray:
    """The model's outputs for `read_examples`-form features, in batches."""
    count = len(next(iter(features.values())))
    outputs = [
        np.asarray(model(modality.model_batch(features, start, min(start + batch_size, count)), training=False))
        for start in range(0, count, batch_size)
    ]
    return np.concatenate(outputs)


def unchanged(spec, before: np.ndarray, after: np.ndarray, shift: float, tolerance: float) -> np.ndarray:
    """Which examples kept their prediction: the class, or the value(s) moved by `shift` within `tolerance`."""
    if spec.task_type.has_classes:
        return predicted_classes(before) == predicted_classes(after)
    moved = np.asarray(after, dtype=np.float64) - shift - np.asarray(before, dtype=np.float64)
    return np.abs(moved.reshape(len(moved), -1)).mean(axis=1) <= tolerance


def invariance_checks(model, spec, features: dict, labels: np.ndarray, outputs: np.ndarray, rate: float, seed: int):
    """One result per perturbation of the kind of data, on every test example."""
    from pipeline.ml.modalities import model_modality

    modality = model_modality(spec.kind)
    tolerance = 0.0
    if not spec.task_type.has_classes:
        errors = np.abs(
            np.asarray(outputs, dtype=np.float64).reshape(len(labels), -1) - labels.reshape(len(labels), -1)
        )
        tolerance = VALUE_TOLERANCE * float(errors.mean())
    results = []
    for name, perturbed, shift in modality.perturbations(features, spec, np.random.default_rng(seed)):
        kept = unchanged(spec, outputs, predict(model, perturbed, modality), shift, tolerance)
        share = float(kept.mean()) if len(kept) else 1.0
        results.append(
            {
                "check": name,
                "type": "invariance",
                "passed": int(kept.sum()),
                "total": int(len(kept)),
                "needed": rate,
                "passes": share >= rate,
                "failures": [f"test example {index + 1}" for index in np.flatnonzero(~kept)[:SHOWN_FAILURES]],
            }
        )
    return results


def cases_path(setting, expectations: Path, name: str) -> Path | None:
    """`evaluate.behaviour_cases`: auto -> `<expectations>/<name>.behaviour.yaml` if it exists, else a path or None."""
    if setting is None:
        return None
    if setting == "auto":
        found = Path(expectations) / f"{name}{CASES_SUFFIX}"
        return found if found.is_file() else None
    path = Path(setting)
    if not path.is_file():
        raise ConfigError(f"evaluate.behaviour_cases: {path} does not exist; give a YAML file of cases, auto or null.")
    return path


def _outputs_of(model, spec, instance) -> np.ndarray:
    from pipeline.ml.modalities import model_modality

    modality = model_modality(spec.kind)
    return np.asarray(model(modality.request_batch([instance], spec), training=False), dtype=np.float64)[0]


def _score(spec, outputs: np.ndarray, expect) -> float:
    """The number a direction case watches: a class's probability, or the value (a forecast: the step's)."""
    if spec.task_type.has_classes:
        return float(class_probabilities(outputs[None])[0][spec.classes.index(str(expect["class"]))])
    values = np.asarray(outputs).reshape(-1)
    return float(values[int(expect.get("step", 1)) - 1])


def case_checks(model, spec, path: Path) -> list[dict]:
    """The minimum-functionality and direction cases of a YAML file (`docs` in the module's docstring)."""
    import yaml

    from pipeline.ml.modalities import RequestError

    written = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(written) - {"minimum_functionality", "direction"})
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r}; expected minimum_functionality and direction.")
    results = []
    for check_type, cases in (("minimum functionality", written.get("minimum_functionality") or []),
                              ("direction", written.get("direction") or [])):  # fmt: skip
        for number, case in enumerate(cases, start=1):
            name = case.get("name", f"{check_type} case {number}")
            try:
                passes, said = _judge_case(model, spec, check_type, case)
            except (RequestError, KeyError, ValueError, TypeError) as problem:
                raise ConfigError(f"{path}: {check_type} case {name!r} cannot be run: {problem}") from None
            results.append(
                {"check": name, "type": check_type, "passed": int(passes), "total": 1, "needed": 1.0, "passes": passes,
                 "failures": [] if passes else [said], "said": said}
            )  # fmt: skip
    return results


def _judge_case(model, spec, check_type: str, case: dict) -> tuple[bool, str]:
    outputs = _outputs_of(model, spec, case["instance"])
    expect = case["expect"]
    if check_type == "minimum functionality":
        if spec.task_type.has_classes:
            got = spec.classes[int(predicted_classes(outputs[None])[0])]
            return got == str(expect), f"expected {expect}, got {got}"
        value = _score(spec, outputs, expect if isinstance(expect, dict) else {})
        low, high = expect.get("min", -np.inf), expect.get("max", np.inf)
        return bool(low <= value <= high), f"expected a value in [{low}, {high}], got {value:.4g}"
    changed = copy.deepcopy(case["instance"])
    if isinstance(changed, dict):
        changed.update(case["changed"])
    else:
        changed = case["changed"]
    before, after = _score(spec, outputs, expect), _score(spec, _outputs_of(model, spec, changed), expect)
    rises = expect["change"] == "up"
    passes = after > before if rises else after < before
    watched = f"P({expect['class']})" if spec.task_type.has_classes else "the value"
    return passes, f"{watched} {before:.4g} -> {after:.4g}, expected {'up' if rises else 'down'}"


def judge(results: list[dict] | None) -> tuple[bool, list[str]]:
    """(passes, reasons) of `behaviour.json`'s checks."""
    if not results:
        return True, ["behaviour: no checks ran (evaluate.behaviour: false, and no cases)"]
    reasons, passes = [], True
    for result in results:
        passes &= result["passes"]
        if result["type"] == "invariance":
            share = result["passed"] / max(result["total"], 1)
            said = f"{share:.1%} of {result['total']} test examples unchanged (needs {result['needed']:.0%})"
        else:
            said = result["said"]
        reasons.append(
            f"behaviour, {result['type']}: {result['check']}: {said}: {'passes' if result['passes'] else 'FAILS'}"
        )
    return passes, reasons
