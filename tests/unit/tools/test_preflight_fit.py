"""The preflight's closed forms (fusionframes/runtime/preflight.py) against the meta-device estimator they were
fitted to: never below it, at most 1.6x above it (plus the fixed base), for every stage, at the official and the
small model size, at several resolutions and frame counts."""

from __future__ import annotations

import pytest

from fusionframes.releases import LATENT_SCALE
from fusionframes.runtime import preflight, stages
from fusionframes.tools import memory_estimate as me

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = {"official": [(256, 4), (512, 12)], "small": [(64, 4), (128, 16), (192, 6)]}
CASES = [(size, release) for size in SHAPES for release in ("1.0", "1.1")]


def _closed_form(mm: me.ModeModels, stage: str, width: int, height: int, frames: int) -> preflight.Need:
    unets, movqs = mm.models.unets, mm.models.movqs
    h, w = height // LATENT_SCALE, width // LATENT_SCALE
    if stage == "keyframes":
        if mm.release == "1.1":
            return stages.keyframes_11_need(unets["keyframe"], frames, width, height)
        return preflight.unet_need("k", "keyframes_1.0", unets["keyframe"], frames, "keyframes", h, w, "")
    if stage == "first_frame":
        return stages.first_frame_need(unets["keyframe"], width, height)
    if stage.startswith("interpolation"):
        return stages.interpolation_need(unets["interpolation"], (frames, 4, h, w))
    if stage == "key_frame":  # the 2x first frame decoded by the image MoVQ (its re-encoding is smaller)
        return preflight.movq_need("d", "decode", movqs["movq"], 1, "frames", 2 * height, 2 * width, "")
    raise AssertionError(stage)


def _assert_close_above(estimated: int, measured: int, what: str) -> None:
    assert measured > 0, what
    assert measured <= estimated <= 1.6 * measured + preflight.BASE, \
        f"{what}: closed form {estimated} vs estimator {measured}"


@pytest.mark.parametrize(("size", "release"), CASES)
def test_closed_forms_bound_the_estimator(size, release):
    mm = me.build_mode_models(release, "fast", size, fp8_text=False)
    estimator = me.StageEstimator(mm, size=size)
    decoder = "video_movq" if release == "1.1" else "movq"
    for side, keyframes in SHAPES[size]:
        for stage, memory in estimator.pipeline_stages(side, side, keyframes, 1).items():
            if stage == "text":
                continue
            need = _closed_form(mm, stage, side, side, memory.frames)
            assert need.device.type == "meta"  # no CPU factor: the estimator counts a GPU's live tensors
            _assert_close_above(need.device_bytes, memory.activation_bytes, f"{size} {release} {stage} {side}")
        for clip in (1, 5):
            memory = estimator.decode(side, side, max(clip, keyframes), clip=clip)
            need = preflight.movq_need("d", "decode", mm.models.movqs[decoder], clip, "frames", side, side, "")
            _assert_close_above(need.device_bytes, memory.activation_bytes, f"{size} {release} decode {clip}")
        memory = estimator.image(side, side)
        need = stages.encode_need(mm.models.movqs["movq"], 1, side, side)
        _assert_close_above(need.device_bytes, memory.activation_bytes, f"{size} {release} encode {side}")
