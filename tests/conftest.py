import os
from pathlib import Path

import pytest

from tests.comfy_fixtures import demo_server  # noqa: F401  (one shared ComfyUI server with demo models)

REPO = Path(__file__).resolve().parents[1]


def golden_dir() -> Path:
    """The shared golden fixtures: $FUSIONFRAMES_GOLDEN or ../shared/golden beside the checkout. Never skipped."""
    path = Path(os.environ.get("FUSIONFRAMES_GOLDEN", REPO.parent / "shared" / "golden"))
    if not (path / "cases").is_dir():
        raise RuntimeError(f"golden fixtures not found at {path}: parity cannot be checked (set FUSIONFRAMES_GOLDEN)")
    return path


@pytest.fixture(scope="session")
def golden() -> Path:
    return golden_dir()
