"""Smoke tests of the real-ComfyUI test host (scripts/install_comfyui_host.sh, tools/comfy_host.py) and browser."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from fusionframes.tools.comfy_host import (
    PACK_NAME,
    REPO,
    ComfyServer,
    ensure_browser,
    ensure_host,
    pack_nodes,
)
from tests.e2e.comfy_fixtures import comfy_server  # noqa: F401

pytestmark = pytest.mark.slow

CORE_NODES = ("SaveAnimatedWEBP", "CreateVideo", "SaveVideo", "SaveImage")


def test_server_answers_and_lists_core_nodes(comfy_server):  # noqa: F811
    stats = comfy_server.get("/system_stats")
    assert stats["system"]["comfyui_version"] == "0.3.75"
    assert stats["devices"][0]["type"] == "cpu"

    failure = comfy_server.import_traceback(PACK_NAME) or comfy_server.log_tail()
    assert not comfy_server.import_failed(PACK_NAME), failure
    info = comfy_server.object_info()
    missing = [name for name in CORE_NODES if name not in info]
    assert not missing, f"core nodes missing from /object_info: {missing}"
    # The pack's own nodes (python_module custom_nodes.comfyui-fusionframes); checked by the node tests.
    print(f"pack nodes: {sorted(pack_nodes(info))}")


def test_prompt_validation_and_execution(comfy_server):  # noqa: F811
    status, body = comfy_server.submit({"1": {"class_type": "NoSuchNodeType", "inputs": {}}})
    assert status == 400 and body["error"]["type"] == "invalid_prompt", body

    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0xFF0000}},
        "2": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["1", 0], "filename_prefix": "smoke/webp", "fps": 6.0, "lossless": False, "quality": 80,
            "method": "default"}},
    }
    entry = comfy_server.run(graph, timeout=120)
    (item,) = entry["outputs"]["2"]["images"]
    assert comfy_server.output_path(item).stat().st_size > 0
    assert comfy_server.interrupt() == 200


def test_prepare_hook_and_clean_stop(tmp_path):
    ensure_host()
    seen = []

    def prepare(base: Path) -> None:
        seen.append(base)
        (base / "models" / "fusionframes").mkdir(parents=True)
        # A pack that cannot import, to check the detector (ComfyUI keeps running without it).
        broken = base / "custom_nodes" / "broken-pack"
        broken.mkdir()
        (broken / "__init__.py").write_text("raise ImportError('smoke-test breakage')\n")

    server = ComfyServer(base=tmp_path / "base", prepare=prepare)
    with server:
        assert seen == [server.base]
        assert (server.base / "custom_nodes" / PACK_NAME).resolve() == REPO.resolve()
        assert server.get("/system_stats")["system"]["comfyui_version"] == "0.3.75"
        assert not server.import_failed(PACK_NAME), server.import_traceback(PACK_NAME)
        assert server.import_failed("broken-pack")
        assert "smoke-test breakage" in server.import_traceback("broken-pack")
        assert not server.import_failed("broken")
        print(f"ComfyUI answered after {server.start_seconds:.1f} s")
    assert server.returncode == 0, server.log_tail()
    assert not server.running()
    assert "Stopped server" in server.log_text()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_page_renders_in_headless_chromium(comfy_server, tmp_path):  # noqa: F811
    ensure_browser()
    shot = comfy_server.screenshot(tmp_path / "comfyui.png")
    assert _png_size(shot) == (1400, 900)
    # A blank or error page is a few KB; the rendered app (canvas, menus, templates dialog) is hundreds of KB.
    assert shot.stat().st_size > 50_000, f"screenshot only {shot.stat().st_size} bytes"


def test_playwright_core_drives_the_page(comfy_server):  # noqa: F811
    if not shutil.which("npm"):
        pytest.fail("npm is needed for playwright-core (scripts/install_browser.sh --playwright)")
    ensure_browser()
    install = subprocess.run(["bash", str(REPO / "scripts" / "install_browser.sh"), "--playwright"], check=False,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-4000:]
    proc = subprocess.run(["node", str(REPO / "scripts" / "comfy_page_probe.js"), comfy_server.url + "/", "90000"],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["app"] == "object"
    assert info["nodeTypes"] >= len(comfy_server.object_info())
    assert info["packNodes"] == sorted(pack_nodes(comfy_server.object_info()))
