"""The checks behind ``check-parity``: one function per kind of golden case.

Every check recomputes a stage from the fixture's own inputs to that stage (so errors do not accumulate through
chaotic sampling loops) and compares with the recorded official output, as ``golden/README.md`` requires. Nothing
here depends on the fixtures' sizes: shapes, frame counts and step counts are read from the fixture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image

from ...io.checkpoints import LoadedModel, load_model
from ...models.movq.decoding import decode_video
from ...models.text.condition import TextCondition
from ...releases import MOTION_SCORES, SKIP_FRAMES, official_steps
from ...runtime import stages
from ...sampling import guidance
from ...sampling.loop import sample
from ...sampling.noise import RecordedNoise
from ...sampling.schedules import K10Schedule, K11Schedule
from .fixtures import Case, Comparison, load_case


@dataclass
class CaseResult:
    name: str
    comparisons: list[Comparison] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.comparisons) and all(c.ok for c in self.comparisons)


@lru_cache(maxsize=16)
def _model(path: str) -> LoadedModel:
    return load_model(path)


def model_at(case: Case, relative: str) -> torch.nn.Module:
    return _model(str(case.path(relative).resolve())).model


def _tol(case: Case) -> tuple[float, float]:
    return case.tolerance["rtol"], case.tolerance["atol"]


def _compare(label: str, pairs: list[tuple[str, torch.Tensor, torch.Tensor]], rtol: float, atol: float) -> Comparison:
    comparison = Comparison(label)
    for name, ours, expected in pairs:
        comparison.add(name, ours, expected, rtol, atol)
    return comparison


# -- single modules ---------------------------------------------------------------------------------------------------

def _forward(case: Case, call: Callable[[torch.nn.Module, dict], torch.Tensor]) -> list[Comparison]:
    model = model_at(case, case.meta["model"])
    with torch.no_grad():
        out = call(model, case.tensors)
    return [_compare("forward", [("out", out, case.tensors["out"])], *_tol(case))]


def _frames_of(model: torch.nn.Module, t: dict) -> int:
    if "num_frames" in t:
        return int(t["num_frames"])
    return int(model.config.num_frames)


#: how each U-Net forward case calls its model on the recorded inputs
FORWARD_CALLS: dict[str, Callable[[torch.nn.Module, dict], torch.Tensor]] = {
    "k10_keyframe_unet_forward": lambda m, t: m(t["x"], t["time"], t["context"], t["context_mask"], t["positions"],
                                                num_frames=_frames_of(m, t)),
    "k10_interpolation_unet_forward": lambda m, t: m(t["x"], t["time"], t["context"], t["context_mask"],
                                                     t["skip_frames"], int(t["num_groups"])),
    "k11_keyframe_unet_forward_video": lambda m, t: m(t["x"], t["time"], t["context"], t["context_mask"],
                                                      t["positions"], int(t["num_frames"]), t["noise_aug_time"],
                                                      t["motion_score"]),
    "k11_keyframe_unet_forward_image": lambda m, t: m.forward_image(t["x"], t["time"], t["context"],
                                                                    t["context_mask"]),
    "k11_interpolation_unet_forward": lambda m, t: m(t["x"], t["time"], t["context"], t["context_mask"],
                                                     t["skip_frames"], int(t["num_groups"]), t["perturbation_time"],
                                                     t["temporal_mask"]),
}


def check_k10_keyframe_forward(case: Case) -> list[Comparison]:
    return _forward(case, FORWARD_CALLS["k10_keyframe_unet_forward"])


def check_k10_interpolation_forward(case: Case) -> list[Comparison]:
    return _forward(case, FORWARD_CALLS["k10_interpolation_unet_forward"])


def check_k11_keyframe_forward_video(case: Case) -> list[Comparison]:
    return _forward(case, FORWARD_CALLS["k11_keyframe_unet_forward_video"])


def check_k11_keyframe_forward_image(case: Case) -> list[Comparison]:
    return _forward(case, FORWARD_CALLS["k11_keyframe_unet_forward_image"])


def check_k11_interpolation_forward(case: Case) -> list[Comparison]:
    return _forward(case, FORWARD_CALLS["k11_interpolation_unet_forward"])


def check_movq_roundtrip(case: Case) -> list[Comparison]:
    movq = model_at(case, case.meta["model"])
    t = case.tensors
    rtol, atol = _tol(case)
    latent = movq.encode(t["image"])
    decoded = movq.decode(t["latent"])
    return [_compare("encode", [("latent", latent, t["latent"])], rtol, atol),
            _compare("decode", [("decoded", decoded, t["decoded"])], rtol, atol)]


def check_video_movq_clip(case: Case) -> list[Comparison]:
    movq = model_at(case, case.meta["model"])
    t = case.tensors
    decoded = decode_video(movq, t["latent"], clip_frames=t["latent"].shape[0])
    return [_compare("decode clip", [("decoded", decoded, t["decoded"])], *_tol(case))]


# -- sampling ---------------------------------------------------------------------------------------------------------

def _step_time(value: torch.Tensor) -> int:
    return int(value.flatten()[0])


def check_steps(case: Case, phase: str, schedule, denoise: guidance.Denoiser) -> Comparison:
    """Every recorded step: our guided prediction at (x, t) and our update from the recorded prediction."""
    rtol, atol = _tol(case)
    t = case.tensors
    comparison = Comparison(f"{phase} steps")
    drawn = 0
    prefixes = case.steps(phase)
    if not prefixes:
        comparison.failures.append(f"no recorded steps for phase {phase!r}")
    for prefix in prefixes:
        x, timestep, expected_pred = t[f"{prefix}.x"], _step_time(t[f"{prefix}.t"]), t[f"{prefix}.model_output"]
        with torch.no_grad():
            pred = denoise(x, schedule.model_time(timestep))
        comparison.add(f"{prefix}.model_output", pred, expected_pred, rtol, atol)
        z = None
        if schedule.needs_noise(timestep):
            z = t[f"noise.{phase}.step.{drawn:03d}"]
            drawn += 1
        comparison.add(f"{prefix}.out", schedule.step(x, expected_pred, timestep, z), t[f"{prefix}.out"], rtol, atol)
    return comparison


def check_free_run(case: Case, phase: str, schedule, denoise: guidance.Denoiser, x_init=None) -> Comparison | None:
    """A whole loop from the recorded initial noise, only where the fixture marks it required."""
    settings = case.meta.get("free_run", {}).get(phase, {})
    if not settings.get("required"):
        return None
    t = case.tensors
    last = case.steps(phase)[-1]
    init = t[f"noise.{phase}.init"]
    result = sample(schedule, denoise, init.shape, RecordedNoise(t), phase, x_init=x_init)
    tolerance = settings.get("tolerance", case.tolerance)
    return _compare(f"{phase} free run", [(f"{last}.out", result, t[f"{last}.out"])],
                    tolerance["rtol"], tolerance["atol"])


def _text(t: dict, context: str = "context") -> TextCondition:
    return TextCondition(t[context], t[f"{context}_mask"])


def _k10_stages(case: Case, text: TextCondition, negative: TextCondition | None,
                keyframe_unet, interp_unet, phases: list[tuple[str, torch.Tensor, int]]) -> list[Comparison]:
    """1.0: keyframe steps + the given interpolation phases (name, input keyframes, skip)."""
    meta, t = case.meta, case.tensors
    steps = int(meta["steps"])
    frames = t[f"{case.steps('keyframes')[0]}.x"].shape[0]
    results = []
    schedule = K10Schedule(steps, prediction="eps", percentile=meta.get("percentile", 0.98))
    if negative is not None:
        text = TextCondition(text.context, text.mask, negative=negative)
    denoise = guidance.keyframes_10(keyframe_unet, text, frames, stages.positions_10(frames), meta["guidance"])
    results.append(check_steps(case, "keyframes", schedule, denoise))
    results.append(check_free_run(case, "keyframes", schedule, denoise))
    for phase, keyframes, skip in phases:
        schedule = K10Schedule(steps, prediction="v", percentile=meta.get("percentile", 0.98))
        denoise = guidance.interpolation_10(interp_unet, keyframes, skip, meta["interpolation_guidance"])
        results.append(check_steps(case, phase, schedule, denoise))
        results.append(check_free_run(case, phase, schedule, denoise))
    return [r for r in results if r is not None]


def _paths(case: Case) -> list[str]:
    models = case.meta["models"]
    return models if isinstance(models, list) else []


def check_k10_sampling(case: Case) -> list[Comparison]:
    keyframe_path, interp_path = _paths(case)
    t = case.tensors
    return _k10_stages(case, _text(t), None, model_at(case, keyframe_path), model_at(case, interp_path),
                       [("interpolation", t["keyframes"], 3)])


def _k11_keyframe_denoiser(case: Case, unet, text, key_frame, motion_score: int) -> tuple:
    meta, t = case.meta, case.tensors
    schedule = K11Schedule(official_steps("1.1", "keyframes"), spacing="leading", prediction="epsilon")
    augmentation = int(meta["noise_augmentation"])
    augmented = schedule.add_noise(key_frame, t["noise.keyframes.noise_aug"], augmentation)
    frames = t[f"{case.steps('keyframes')[0]}.x"].shape[0]
    denoise = guidance.keyframes_11(unet, text, augmented, frames, meta["guidance_weight_prompt"],
                                    meta["guidance_weight_image"], augmentation, motion_score)
    return schedule, denoise


def _k11_stages(case: Case, text, keyframe_unet, interp_unet, key_frame, motion_score: int,
                phases: list[tuple[str, torch.Tensor, int]]) -> list[Comparison]:
    meta, t = case.meta, case.tensors
    results = []
    if case.steps("first_frame"):
        schedule = K11Schedule(official_steps("1.1", "first_frame"), spacing="leading", prediction="epsilon")
        denoise = guidance.first_frame_11(keyframe_unet, text, meta["key_frame_guidance_scale"])
        results += [check_steps(case, "first_frame", schedule, denoise),
                    check_free_run(case, "first_frame", schedule, denoise)]
    schedule, denoise = _k11_keyframe_denoiser(case, keyframe_unet, text, key_frame, motion_score)
    results += [check_steps(case, "keyframes", schedule, denoise),
                check_free_run(case, "keyframes", schedule, denoise, x_init=t.get("noise.keyframes.init"))]
    for phase, keyframes, skip in phases:
        schedule = K11Schedule(official_steps("1.1", "interpolation"), spacing="trailing", prediction="v_prediction")
        denoise = guidance.interpolation_11(interp_unet, text, keyframes, skip, meta["interpolation_guidance_scale"])
        results += [check_steps(case, phase, schedule, denoise), check_free_run(case, phase, schedule, denoise)]
    return [r for r in results if r is not None]


def check_k11_sampling(case: Case) -> list[Comparison]:
    keyframe_path, interp_path = _paths(case)
    t = case.tensors
    motion = int(case.meta.get("motion_score", MOTION_SCORES[case.meta.get("motion", "medium")]))
    return _k11_stages(case, _text(t), model_at(case, keyframe_path), model_at(case, interp_path),
                       t["key_frame_latent"], motion, [("interpolation", t["keyframes"], 3)])


# -- pipelines --------------------------------------------------------------------------------------------------------

def _model_dirs(case: Case) -> tuple[Path, Path]:
    """'models/k10 + models/text_encoder' -> (release folder, text encoder folder)."""
    parts = [p.strip() for p in str(case.meta["models"]).split("+")]
    return case.path(parts[0]), case.path(parts[1])


def _interpolation_phases(case: Case) -> list[tuple[str, torch.Tensor, int]]:
    """Each pass's input keyframes come from the fixture's own latents (pass 2 interleaves pass 1's output)."""
    t = case.tensors
    phases = []
    keyframes = t["latents.keyframes"]
    for number in (1, 2):
        phase = f"interpolation{number}"
        if not case.steps(phase):
            break
        phases.append((phase, keyframes, SKIP_FRAMES[number]))
        keyframes = stages.interleave(keyframes, t[f"latents.{phase}"])
    return phases


def _decode_input(case: Case) -> torch.Tensor:
    t = case.tensors
    video = t["latents.keyframes"]
    for number in (1, 2):
        if f"latents.interpolation{number}" in t:
            video = stages.interleave(video, t[f"latents.interpolation{number}"])
    return video


def _decode_comparisons(case: Case, movq) -> list[Comparison]:
    rtol, atol = _tol(case)
    t = case.tensors
    video = _decode_input(case)
    frames = stages.decode_frames(movq, t["decode_input"])
    return [_compare("interleave", [("decode_input", video, t["decode_input"])], rtol, atol),
            _compare("decode", [("frames", frames, t["frames"])], rtol, atol)]


def check_k10_pipeline(case: Case) -> list[Comparison]:
    release_dir, text_dir = _model_dirs(case)
    t = case.tensors
    results = text_pipeline_comparisons(case, "1.0", release_dir, text_dir)
    negative = _text(t, "text.negative_context") if "text.negative_context" in t else None
    keyframe_unet = model_at(case, str(release_dir / "kandinsky_video.pt"))
    interp_unet = model_at(case, str(release_dir / "kandinsky_video_interpolation.pt"))
    results += _k10_stages(case, _text(t, "text.context"), negative, keyframe_unet, interp_unet,
                           _interpolation_phases(case))
    return results + _decode_comparisons(case, model_at(case, str(release_dir / "movq.pt")))


def check_k11_pipeline(case: Case) -> list[Comparison]:
    release_dir, text_dir = _model_dirs(case)
    meta, t = case.meta, case.tensors
    rtol, atol = _tol(case)
    results = text_pipeline_comparisons(case, "1.1", release_dir, text_dir)
    image_movq = model_at(case, str(release_dir / "movq.pt"))
    width, height = int(meta["width"]), int(meta["height"])
    if meta.get("image"):
        key_frame = stages.encode_image(image_movq, Image.open(case.path(meta["image"])), width, height)
        results.append(_compare("image -> key frame", [("latents.key_frame", key_frame, t["latents.key_frame"])],
                                rtol, atol))
    if "latents.first_frame" in t:
        key_frame = stages.first_frame_to_key_frame(image_movq, t["latents.first_frame"], width, height)
        tolerance = meta["first_frame_round_trip"]["tolerance"]
        results.append(_compare("first frame round trip", [("latents.key_frame", key_frame,
                                                             t["latents.key_frame"])],
                                tolerance["rtol"], tolerance["atol"]))
    motion = MOTION_SCORES[meta.get("motion", "medium")]
    results += _k11_stages(case, _text(t, "text.context"), model_at(case, str(release_dir / "t2v.pt")),
                           model_at(case, str(release_dir / "interpolation.pt")), t["latents.key_frame"], motion,
                           _interpolation_phases(case))
    return results + _decode_comparisons(case, model_at(case, str(release_dir / "video_movq.pt")))


def text_pipeline_comparisons(case: Case, release: str, release_dir: Path, text_dir: Path) -> list[Comparison]:
    """The pipeline's prompt (and 1.0 negative prompt) -> context and mask."""
    from .text_checks import pipeline_text_comparisons

    return pipeline_text_comparisons(case, release, release_dir, text_dir)


def check_text_encoding(case: Case) -> list[Comparison]:
    from .text_checks import text_encoding_comparisons

    return text_encoding_comparisons(case)


CHECKS: dict[str, Callable[[Case], list[Comparison]]] = {
    "k10_keyframe_unet_forward": check_k10_keyframe_forward,
    "k10_interpolation_unet_forward": check_k10_interpolation_forward,
    "k11_keyframe_unet_forward_video": check_k11_keyframe_forward_video,
    "k11_keyframe_unet_forward_image": check_k11_keyframe_forward_image,
    "k11_interpolation_unet_forward": check_k11_interpolation_forward,
    "k10_movq_roundtrip": check_movq_roundtrip,
    "k11_movq_image_roundtrip": check_movq_roundtrip,
    "k11_video_movq_decode_clip": check_video_movq_clip,
    "text_encoding": check_text_encoding,
    "k10_sampling": check_k10_sampling,
    "k11_sampling": check_k11_sampling,
    "k10_pipeline": check_k10_pipeline,
    "k11_pipeline": check_k11_pipeline,
}


def check_for(name: str) -> Callable[[Case], list[Comparison]] | None:
    """The check of a case: by exact name, else by its family (``k10_pipeline_medium`` -> ``k10_pipeline``)."""
    if name in CHECKS:
        return CHECKS[name]
    family = [key for key in CHECKS if name.startswith(key)]
    return CHECKS[max(family, key=len)] if family else None


def run_case(root: str | Path, name: str) -> CaseResult:
    result = CaseResult(name)
    check = check_for(name)
    if check is None:
        result.error = "no check is known for this case"
        return result
    try:
        result.comparisons = check(load_case(root, name))
    except Exception as error:  # a broken case is reported, the other cases still run
        result.error = f"{type(error).__name__}: {error}"
    return result
