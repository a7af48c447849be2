"""pytest fixtures around a real ComfyUI server (see fusionframes/tools/comfy_host.py). Import into a module:

    from tests.e2e.comfy_fixtures import comfy_server  # noqa: F401     (.host/base, session-wide)

or build one whose base directory is prepared first (e.g. demo models copied into base/models/...):

    from tests.e2e.comfy_fixtures import make_comfy_server_fixture
    comfy_server = make_comfy_server_fixture(prepare=copy_demo_models)   # prepare(base: Path) -> None

A fixture made by the factory is its own definition: each module that makes one gets its own server (scope "session"
still starts it once per definition). Installation failures fail the test; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fusionframes.io.video import write_video
from fusionframes.tools.comfy_host import BASE_DIR, HOST_DIR, ComfyServer, ensure_host, output_items
from fusionframes.tools.demo_models import create_demo_models


def make_comfy_server_fixture(
    prepare: Callable[[Path], Any] | None = None,
    base: str | os.PathLike | None = None,
    scope: str = "session",
    **server_kwargs: Any,
):
    """A pytest fixture yielding a started ComfyServer on `base` (default .host/base), after prepare(base).

    server_kwargs go to ComfyServer (start_timeout, extra_args, env, ...). The server is stopped at teardown, which
    prints the path of its log (server.log_path; server.log_text() reads it).
    """

    @pytest.fixture(scope=scope)
    def _comfy_server() -> Iterator[ComfyServer]:
        ensure_host()
        server = ComfyServer(base=base or BASE_DIR, prepare=prepare, **server_kwargs)
        with server:
            yield server
        print(f"\nComfyUI server on port {server.port} stopped (exit {server.returncode}); log: {server.log_path}")

    return _comfy_server


comfy_server = make_comfy_server_fixture()


def resident_mb(pid: int) -> float:
    """A process's resident memory in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def saved_frames(server: ComfyServer, entry: dict, node: str) -> np.ndarray:
    """The (N, H, W, 3) uint8 frames a SaveImage node ``node`` wrote: lossless, unlike a video file, whose encoder
    may round differently from run to run (threaded H.264)."""
    items = output_items(entry, node)
    assert items, entry.get("outputs")
    return np.stack([np.asarray(Image.open(server.output_path(item)).convert("RGB")) for item in items])


SIZE = 64


def install_demo_models(base: Path) -> None:
    """Demo models in the layout the README tells users to use, plus the inputs the workflows load."""
    demo = create_demo_models(HOST_DIR / "demo_models")
    models = base / "models"
    for source, target in (("k10", "kandinsky_video_1_0"), ("k11", "kandinsky_video_1_1")):
        if not (models / "fusionframes" / target).exists():
            shutil.copytree(demo / source, models / "fusionframes" / target)
    if not (models / "text_encoders" / "flan-ul2").exists():
        shutil.copytree(demo / "text_encoder", models / "text_encoders" / "flan-ul2")
    inputs = base / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((80, 96, 3), dtype=np.uint8)
    pixels[:, :48] = (220, 40, 40)
    Image.fromarray(pixels).save(inputs / "fusionframes_first_frame.png")
    frames = np.stack([np.roll(np.tile(np.linspace(0, 255, SIZE, dtype=np.uint8)[None, :, None], (SIZE, 1, 3)),
                               4 * i, axis=1) for i in range(4)])
    write_video(inputs / "fusionframes_clip.mp4", frames, fps=6)


#: one server with the demo models for every test module that needs it (defined here, registered in conftest.py)
#: the demo server may plan at most this much memory (FUSIONFRAMES_MEMORY_LIMIT), so what the preflight refuses does
#: not depend on the test machine's RAM; large enough for every test that runs a stage
DEMO_MEMORY_LIMIT = "12G"
demo_server = make_comfy_server_fixture(prepare=install_demo_models, base=HOST_DIR / "base_nodes",
                                        env={"FUSIONFRAMES_MEMORY_LIMIT": DEMO_MEMORY_LIMIT})
