"""The toy world: a procedural video world (shapes moving on black, captioned from a small grammar), the tiny
FusionFrames models trained on it here, and the measurements of what they generate (``toy-eval``).

Tooling: the runtime and the nodes never import it.
"""

from __future__ import annotations

import json
from pathlib import Path

#: the trained toy models committed with the project (the repository's ``toy_models/``)
TOY_MODELS = Path(__file__).resolve().parents[3] / "toy_models"
#: per trained stage: steps, seconds (over all resumed runs), seed, final loss (mean of the last 50 steps)
RECORD = "training.json"
#: the files of the 1.1 set, in the official layout
SET_FILES = ("k11/configs.json", "k11/t2v.pt", "k11/interpolation.pt", "k11/movq.pt", "k11/video_movq.pt",
             "k11/t5_projections.pt", "text_encoder/config.json")


def trained_toy_models(root: Path = TOY_MODELS) -> Path | None:
    """``root`` when it holds the whole 1.1 toy set with every stage trained (recorded in its training.json);
    None otherwise (not there, or still in training)."""
    from .train import STAGES

    record = root / RECORD
    if not record.is_file() or not all((root / name).is_file() for name in SET_FILES):
        return None
    trained = json.loads(record.read_text())
    return root if all(stage in trained for stage in STAGES) else None


def toy_notice() -> list[str]:
    """What a demo on the toy models says about them."""
    from .world import COLOURS, MOTIONS, SHAPES

    return [
        "TOY MODELS: tiny FusionFrames 1.1 models trained on this project's synthetic world (one coloured shape",
        "moving on black, 64x64), not the official weights. They understand only prompts of their grammar:",
        f"  a <colour> <shape> moving <direction>: colours {', '.join(COLOURS)}; shapes {', '.join(SHAPES)};",
        f"  directions {', '.join(m.removeprefix('moving ') for m in MOTIONS)}.",
        "For real videos put the official checkpoints in place (see README).",
    ]
