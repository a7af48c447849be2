"""pytest fixtures around a real ComfyUI server (see tests/comfy_host.py). Import into a test module:

    from tests.comfy_fixtures import comfy_server  # noqa: F401     (.host/base, session-wide)

or build one whose base directory is prepared first (e.g. demo models copied into base/models/...):

    from tests.comfy_fixtures import make_comfy_server_fixture
    comfy_server = make_comfy_server_fixture(prepare=copy_demo_models)   # prepare(base: Path) -> None

A fixture made by the factory is its own definition: each module that makes one gets its own server (scope "session"
still starts it once per definition). Installation failures fail the test; nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.comfy_host import BASE_DIR, ComfyServer, ensure_host


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
