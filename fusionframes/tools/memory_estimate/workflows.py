"""Workflows (the stages a user's run goes through) and scenarios (which models are resident meanwhile).

A workflow's peak is the largest sum, over its stages, of the stage's activation peak (from :mod:`.estimator`) and
the weights resident during that stage. Which weights those are depends on the scenario: every model (the official
code, the benchmark), the engine's default, or ``--offload``. Keeping this arithmetic apart from the measuring keeps
it cheap to test with made-up numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ...errors import InputError
from ...releases import LATENT_SCALE
from ..bench import dtype_name
from .estimator import ModeModels, StageEstimator, StageMemory, weight_bytes

SCENARIOS = ("all_resident", "default", "offload")
SCENARIO_TITLES = {
    "all_resident": "every model resident (the official code, bench)",
    "default": "engine default: U-Nets + MoVQs resident, text encoder on the GPU only to encode",
    "offload": "--offload: only the running stage's models on the GPU",
}


@dataclass(frozen=True)
class Workflow:
    name: str
    release: str
    passes: int
    image_to_video: bool = False

    def frames(self, keyframes: int) -> int:
        count = keyframes
        for _ in range(self.passes):
            count = 4 * count - 3
        return count


WORKFLOWS = (
    Workflow("1.1 T2V low", "1.1", 0), Workflow("1.1 T2V medium", "1.1", 1), Workflow("1.1 T2V high", "1.1", 2),
    Workflow("1.1 I2V medium", "1.1", 1, image_to_video=True),
    Workflow("1.0 low", "1.0", 0), Workflow("1.0 medium", "1.0", 1), Workflow("1.0 high", "1.0", 2),
)
DEFAULT_KEYFRAMES = {"1.1": 12, "1.0": 15}


def workflow_stages(estimator: StageEstimator, workflow: Workflow, width: int, height: int, keyframes: int,
                    fp8_text: bool = False) -> list[StageMemory]:
    """The stages of a workflow in order, each measured (or taken from the cache)."""
    out = [estimator.text(fp8=fp8_text)]
    sampled = estimator.pipeline_stages(width, height, keyframes, workflow.passes)
    for name, result in sampled.items():
        if workflow.image_to_video and name in ("first_frame", "key_frame"):
            continue
        if workflow.image_to_video and name == "keyframes":
            out.append(estimator.image(width, height))
        out.append(result)
    out.append(estimator.decode(width, height, workflow.frames(keyframes)))
    return out


def scenario_weights(mm: ModeModels, stage: StageMemory, scenario: str) -> int:
    """Weight bytes resident during ``stage``: every model, the engine default or offloading."""
    text = stage.models[0] if stage.stage.startswith("text") else "t5"
    others = [name for name in ("keyframe", "interpolation", "movq", "video_movq") if name in mm.weights]
    if scenario == "all_resident":
        return mm.weights[text] + sum(mm.weights[name] for name in others)
    if scenario == "default":
        extra = mm.weights[text] if stage.stage.startswith("text") else 0
        return extra + sum(mm.weights[name] for name in others)
    if scenario == "offload":
        return sum(mm.weights[name] for name in stage.models)
    raise InputError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}.")


def workflow_report(mm: ModeModels, workflow: Workflow, rows: list[StageMemory], width: int, height: int,
                    keyframes: int, fp8_text: bool = False) -> dict[str, Any]:
    stages_out = []
    peaks = dict.fromkeys(SCENARIOS, 0)
    where = dict.fromkeys(SCENARIOS, "")
    for row in rows:
        entry = {**asdict(row), "scenarios": {}}
        for scenario in SCENARIOS:
            weights = scenario_weights(mm, row, scenario)
            total = weights + row.activation_bytes
            entry["scenarios"][scenario] = {"weight_bytes": weights, "total_bytes": total}
            if total > peaks[scenario]:
                peaks[scenario], where[scenario] = total, row.stage
        stages_out.append(entry)
    no_text = {s: max(e["scenarios"][s]["total_bytes"] for e in stages_out if not e["stage"].startswith("text"))
               for s in SCENARIOS}
    return {"workflow": workflow.name, "release": workflow.release, "mode": mm.mode + (" + fp8 T5" if fp8_text else ""),
            "width": width, "height": height, "keyframes": keyframes, "frames": workflow.frames(keyframes),
            "stages": stages_out, "peak_bytes": peaks, "peak_stage": where, "peak_bytes_text_on_cpu": no_text}


def scaling_rows(estimators: dict[str, StageEstimator], *, keyframes=(8, 12, 16), resolutions=(384, 512, 640, 768),
                 passes=(0, 1, 2), base: tuple[int, int, int] = (512, 12, 1)) -> list[dict[str, Any]]:
    """1.1 text-to-video peaks as one setting varies from ``base`` = (side, keyframes, passes)."""
    side0, frames0, passes0 = base
    settings = [("keyframes", side0, k, passes0) for k in keyframes]
    settings += [("resolution", s, frames0, passes0) for s in resolutions]
    settings += [("passes", side0, frames0, p) for p in passes]
    rows = []
    for mode, estimator in estimators.items():
        for varied, side, frames, count in settings:
            workflow = Workflow(f"1.1 T2V {count} passes", "1.1", count)
            stage_rows = workflow_stages(estimator, workflow, side, side, frames)
            report = workflow_report(estimator.mm, workflow, stage_rows, side, side, frames)
            rows.append({"mode": mode, "varied": varied, "side": side, "keyframes": frames, "passes": count,
                         "frames": workflow.frames(frames),
                         "activation_bytes": {r.stage: r.activation_bytes for r in stage_rows},
                         "decode_clip": stage_rows[-1].frames,
                         "peak_bytes": report["peak_bytes"], "peak_stage": report["peak_stage"],
                         "peak_bytes_text_on_cpu": report["peak_bytes_text_on_cpu"]})
    return rows


#: (label, clip frames or None = official, tile in latent pixels or None, decoder dtype or None = the mode's)
DECODE_VARIANTS = (
    ("official clips", None, None, None),
    ("bf16 decoder", None, None, torch.bfloat16),
    ("clips of 2 frames", 2, None, None),
    ("clips of 1 frame", 1, None, None),
    ("tiles of 256 px", None, 32, None),
    ("tiles of 128 px", None, 16, None),
    ("bf16, tiles of 256 px", None, 32, torch.bfloat16),
)


def decode_rows(estimator: StageEstimator, width: int, height: int, frames: int) -> list[dict[str, Any]]:
    """The decode stage's activation peak under the decoding options (clip length, tiles, decoder dtype), with the
    decoder's own weights (the offload total)."""
    rows = []
    kind = "video_movq" if estimator.mm.release == "1.1" else "movq"
    for label, clip, tile, dtype in DECODE_VARIANTS:
        result = estimator.decode(width, height, frames, clip=clip, tile=tile, dtype=dtype)
        weights = estimator.mm.weights[kind] if dtype is None else weight_bytes(estimator.decoder(kind, dtype)[0])
        rows.append({"release": estimator.mm.release, "mode": estimator.mm.mode, "variant": label,
                     "clip": result.frames, "tile_px": tile * LATENT_SCALE if tile else None,
                     "dtype": dtype_name(dtype) if dtype else estimator.mm.dtypes.get(kind, ""),
                     "activation_bytes": result.activation_bytes, "weight_bytes": weights,
                     "offload_total_bytes": weights + result.activation_bytes, "peak_module": result.peak_module})
    return rows
