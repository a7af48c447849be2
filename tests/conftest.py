import os
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's tiny demo models (random weights, official file layouts), made once per test session."""
    from fusionframes.tools.demo_models import create_demo_models

    return create_demo_models(tmp_path_factory.mktemp("demo"), seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: extra OpenMP threads only add overhead (and spin badly on a busy machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
