"""The shipped workflows stay in step with their single definition in scripts/build_workflows.py."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("build_workflows", REPO / "scripts" / "build_workflows.py")
build_workflows = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_workflows)


@pytest.mark.parametrize("name", sorted(build_workflows.WORKFLOWS))
def test_api_file_is_the_definition_and_ui_file_has_the_same_nodes(name):
    expected = build_workflows.api_graph(build_workflows.WORKFLOWS[name]())
    api = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
    assert api == expected, "re-run scripts/build_workflows.py"
    ui = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    ui_nodes = sorted((str(n["id"]), n["type"]) for n in ui["nodes"])
    assert ui_nodes == sorted((k, v["class_type"]) for k, v in api.items())
    linked = sum(isinstance(v, list) for node in api.values() for v in node["inputs"].values())
    assert len(ui["links"]) == linked


def test_every_workflow_file_has_a_definition():
    shipped = {p.stem for p in (REPO / "workflows").glob("*.json")}
    assert shipped == set(build_workflows.WORKFLOWS)
