"""The ComfyUI page in headless Chromium: every shipped workflow loads with all its node types known, and the page
turns it into the same API prompt that the API-format file holds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fusionframes.tools.comfy_host import HOST_DIR, REPO, ensure_browser

pytestmark = pytest.mark.slow

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
ARTIFACTS = REPO / "out" / "browser"


def _install_playwright() -> None:
    ensure_browser()
    subprocess.run(["bash", str(REPO / "scripts" / "install_browser.sh"), "--playwright"], check=True,
                   capture_output=True, text=True)


def _load_in_page(server, sources: list[str]) -> dict:
    _install_playwright()
    run = subprocess.run(["node", str(REPO / "scripts" / "check_workflows_in_browser.js"), server.url + "/",
                          str(ARTIFACTS), *sources], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _inputs(prompt: dict) -> dict:
    return {node_id: (node["class_type"], node["inputs"]) for node_id, node in prompt.items()}


def test_every_shipped_workflow_loads_in_the_page_with_no_missing_node_types(demo_server):
    assert WORKFLOWS
    results = _load_in_page(demo_server, [f"template:comfyui-fusionframes/{p.stem}" for p in WORKFLOWS])
    for path in WORKFLOWS:
        result = results[path.stem]
        assert result["nodes"] > 0, path.stem
        assert result["missing"] == [], f"{path.stem}: missing node types {result['missing']}"
        assert Path(result["screenshot"]).stat().st_size > 20_000
        assert result["promptError"] is None, result["promptError"]
        expected = json.loads((REPO / "workflows" / "api" / path.name).read_text())
        assert _inputs(result["prompt"]) == _inputs(expected), f"{path.stem}: UI and API formats disagree"


def test_the_check_sees_a_missing_node_type(demo_server, tmp_path):
    workflow = json.loads(WORKFLOWS[0].read_text())
    workflow["nodes"][0]["type"] = "NoSuchNodeAnywhere"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(workflow))
    result = _load_in_page(demo_server, [str(broken)])["broken"]
    assert result["missing"] == ["NoSuchNodeAnywhere"]
    assert HOST_DIR.exists()
