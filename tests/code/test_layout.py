"""The package's architecture, checked: imports point down, never in a circle, nothing imports a stage,
and every DVC stage depends on all the project code it imports."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import yaml

from pipeline.cli import STAGES

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pipeline"
# Lower layers never import higher ones: stages -> serving/ops -> ml -> data -> core.
LAYERS = {"core": 0, "data": 1, "ml": 2, "serving": 3, "ops": 3, "stages": 4}
HEAVY = ("tensorflow", "keras", "keras_tuner")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """Every project module `path` imports, at the top or inside functions."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipeline":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (ROOT / (candidate.replace(".", "/") + ".py")).is_file()
                imported.add(candidate if is_module else node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name.split(".")[0] == "pipeline")
    return imported


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): project_imports(path) for path in PACKAGE.rglob("*.py")}


def module_file(name: str) -> Path:
    path = ROOT / (name.replace(".", "/") + ".py")
    return path if path.is_file() else ROOT / name.replace(".", "/") / "__init__.py"


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for name in graph[todo.pop()]:
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def test_every_import_names_a_module_that_exists():
    graph = import_graph()
    missing = {f"{name} -> {target}" for name, targets in graph.items() for target in targets if target not in graph}
    assert not missing


def test_there_are_no_import_cycles():
    graph = import_graph()
    cycles = []

    def visit(name: str, path: list[str], finished: set[str]) -> None:
        for target in sorted(graph[name]):
            if target in path:
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in finished:
                visit(target, [*path, target], finished)
        finished.add(name)

    finished: set[str] = set()
    for name in sorted(graph):
        if name not in finished:
            visit(name, [name], finished)
    assert not cycles


def test_imports_point_down_and_nothing_but_the_cli_imports_a_stage():
    wrong = []
    for name, targets in import_graph().items():
        for target in targets:
            source_layer, target_layer = layer(name), layer(target)
            if target_layer == "stages" and name != "pipeline.cli":
                wrong.append(f"{name} imports the stage {target}")
            elif source_layer and target_layer and LAYERS[target_layer] > LAYERS[source_layer]:
                wrong.append(f"{name} ({source_layer}) imports {target} ({target_layer})")
    assert not wrong


def test_core_does_not_import_tensorflow():
    for path in (PACKAGE / "core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not [name for name in names if name.split(".")[0] in HEAVY], path


def test_every_stage_module_has_run_and_main():
    for module, entry_point in STAGES.values():
        loaded = importlib.import_module(module)
        assert callable(getattr(loaded, entry_point))
    for path in (PACKAGE / "stages").glob("[!_]*.py"):
        assert callable(importlib.import_module(module_name(path)).run), path


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_stage_depends_on_all_the_code_it_imports(stage):
    """The cli only dispatches (`python -m pipeline run STAGE`); what the stage module reaches is its code."""
    dvc_stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    assert dvc_stage["cmd"] == f"python -m pipeline run {stage}"
    declared = [ROOT / dep for dep in dvc_stage["deps"] if str(dep).startswith("pipeline")]
    graph = import_graph()
    module, _ = STAGES[stage]
    undeclared = []
    for name in closure(graph, module):
        path = module_file(name)
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue  # the package marker (empty)
        if not any(path == dep or dep in path.parents for dep in declared):
            undeclared.append(str(path.relative_to(ROOT)))
    assert not undeclared, f"dvc.yaml: stage {stage} imports {sorted(undeclared)} but does not depend on them"


def test_dvc_parses_the_pipeline_s_yaml_with_the_c_parser():
    """A no-op `dvc repro` parses params.yaml once for each stage; in pure Python that costs 0.5 s more."""
    from ruamel.yaml import YAML  # DVC's own parser: dvc.utils.serialize.parse_yaml uses YAML(typ="safe")

    parser = YAML(typ="safe").Parser
    assert parser.__name__ == "CParser", (
        f"ruamel.yaml parses in pure Python ({parser.__module__}): install ruamel.yaml.clib (pip install -e .)"
    )


# The names of the kinds of data, tasks and column types: only their own modules may test a value against them.
SEAM_NAMES = {"image", "table", "text", "series", "classification", "regression", "forecast", "numeric", "categorical"}
SEAM_MODULES = ("core/kinds.py", "core/tasks.py", "core/column_types.py", "data/modalities/", "ml/modalities/")


def literal_comparisons(path: Path) -> list[str]:
    """`x == "image"`, `"table" != x`, `x in ("numeric", ...)`: comparisons of a value with a seam name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            constants = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            names = {item.value for item in constants if isinstance(item, ast.Constant)} & SEAM_NAMES
            if names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} compares with {sorted(names)}")
    return found


def test_only_the_modality_task_and_column_type_modules_compare_with_their_names():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if not relative.startswith(SEAM_MODULES):
            found += literal_comparisons(path)
    assert not found, "ask the modality, task or column type instead:\n" + "\n".join(found)


def test_only_the_contract_module_reads_the_data_spec_file():
    """The file's name (`"spec.json"`) appears in no other module's code, and no other module builds a DataSpec
    from raw JSON: every reader goes through pipeline.core.spec (load, read, DataSpec.from_dict)."""
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() == "core/spec.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in ("spec.json", "pipeline_spec.json"):
                readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not readers, f"read the data spec with pipeline.core.spec: {readers}"


def test_every_kind_of_data_has_its_data_and_model_modules():
    from pipeline.core.kinds import KINDS
    from pipeline.data.modalities import DataModality, data_modality
    from pipeline.ml.modalities import ModelModality, model_modality

    for name in KINDS:
        assert isinstance(data_modality(name), DataModality) and data_modality(name).kind == name
        assert isinstance(model_modality(name), ModelModality) and model_modality(name).kind == name


def test_every_task_and_column_type_has_its_keras_side():
    from pipeline.core.column_types import COLUMN_TYPES
    from pipeline.core.tasks import TASKS
    from pipeline.ml.features import PREPROCESSING
    from pipeline.ml.models import HEADS

    assert set(HEADS) == set(TASKS)
    assert set(PREPROCESSING) == set(COLUMN_TYPES)


def test_the_readme_code_map_names_every_module():
    readme = (ROOT / "README.md").read_text()
    code_map = readme[readme.index("### Code map") :].split("```")[1]
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.stem != "__init__" and path.parent.name not in ("stages", "modalities") and path.stem not in code_map
    ]
    assert not missing, f"README.md's code map lacks {missing}"


def test_the_architecture_doc_describes_every_field_of_the_contract():
    import dataclasses

    from pipeline.core.spec import DataSpec

    document = (ROOT / "docs" / "architecture.md").read_text()
    assert not [field.name for field in dataclasses.fields(DataSpec) if f"`{field.name}`" not in document]


def test_every_test_file_started_first_exists():
    """A renamed file left in `SLOWEST_FIRST` would start last, with the other test process idle at the end."""
    from tests.conftest import SLOWEST_FIRST

    assert [name for name in SLOWEST_FIRST if not (ROOT / name).is_file()] == []
    assert len(set(SLOWEST_FIRST)) == len(SLOWEST_FIRST)
