"""The one run order: the stages of each release, their official settings, per-stage noise, the negative-prompt rule,
the dtype policy and the official image fitting -- what the command line, the library and the nodes share."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from PIL import Image

from fusionframes.errors import InputError
from fusionframes.models.dtypes import model_dtype, text_dtype
from fusionframes.releases import OFFICIAL, fps_for, skip_frames
from fusionframes.runtime.pipeline import VideoPipeline
from fusionframes.runtime.sequencer import Sequencer, VideoRequest, negative_prompt, plan
from fusionframes.runtime.stages import fit_image
from fusionframes.sampling.noise import SeededNoise
from tests.recording_noise import RecordingNoise


def roles(stages) -> list[str]:
    return [stage.role for stage in stages]


def test_plan_lists_each_releases_stages_in_order():
    assert roles(plan("1.0", passes=2)) == ["keyframes", "interpolation1", "interpolation2", "decode"]
    assert roles(plan("1.1", passes=1)) == ["first_frame", "key_frame", "keyframes", "interpolation1", "decode"]
    assert roles(plan("1.1", image=True)) == ["key_frame", "keyframes", "decode"]
    # a graph cut: a second interpolation node continues the pass count of the first
    assert roles(plan("1.1", keyframes=False, passes=1, done=1, decode=False)) == ["interpolation2"]
    assert plan("1.1")[-1].model == "video_movq" and plan("1.0")[-1].model == "movq"
    assert [skip_frames(n) for n in (1, 2, 3)] == [3, 1, 1] and fps_for(2) == 32.0


def test_unset_settings_take_the_official_values_of_the_release():
    r10, r11 = VideoRequest().resolved("1.0"), VideoRequest().resolved("1.1")
    assert (r10.guidance, r10.interpolation_guidance, r10.motion, r10.image_guidance) == (5.0, 0.25, None, None)
    assert (r11.guidance, r11.first_frame_guidance, r11.image_guidance, r11.interpolation_guidance, r11.motion,
            r11.noise_augmentation) == (5.0, 5.0, 2.0, 0.5, "medium", 20)
    assert VideoRequest(guidance=7.5, motion="high").resolved("1.1").guidance == 7.5
    assert OFFICIAL["1.1"].steps == {"first_frame": 50, "keyframes": 50, "interpolation": 10}


@pytest.mark.parametrize("change,message", [
    ({"guidance": float("nan")}, "guidance must be a finite number"),
    ({"image_guidance": float("inf")}, "image_guidance must be a finite number"),
    ({"guidance": 8e36}, "guidance must be between -1000 and 1000"),
    ({"motion": "normal"}, "motion must be one of low, medium, high, extreme"),
    ({"fps": "ultra"}, "fps must be one of"),
    ({"sampler": "euler"}, "sampler must be one of"),
    ({"steps": 0}, "steps must be a whole number of at least 1"),
    ({"keyframes": 1}, "keyframes must be an integer of at least 2"),
    ({"width": 100}, "multiples of 64"),
])
def test_bad_settings_are_clear_errors_before_anything_runs(change, message):
    with pytest.raises(InputError, match=message):
        VideoRequest(**change).resolved("1.1")


def test_negative_prompt_rule_is_one_for_every_surface():
    assert negative_prompt("1.0", "blurry") == "blurry"
    assert negative_prompt("1.0", "") is None and negative_prompt("1.0", None) is None  # the null context
    assert negative_prompt("1.1", "blurry") is None  # 1.1 ignores negative prompts


def test_each_stage_draws_its_own_stream_whatever_else_was_drawn():
    one = SeededNoise(42)
    keyframes = one.normal("keyframes", "init", (4, 8))
    interpolation = one.normal("interpolation1", "init", (4, 8))
    fresh = SeededNoise(42)
    assert torch.equal(fresh.normal("interpolation1", "init", (4, 8)), interpolation)  # no matter what came before
    assert torch.equal(fresh.normal("keyframes", "init", (4, 8)), keyframes)
    assert not torch.allclose(keyframes, interpolation)  # no two stages share draws
    assert not torch.allclose(SeededNoise(43).normal("keyframes", "init", (4, 8)), keyframes)


def test_running_the_stages_separately_gives_the_pipelines_video(demo):
    """What a node graph does: each node its own noise source from the same seed, models handed in one by one."""
    pipeline = VideoPipeline.from_folder(demo / "k11", demo / "text_encoder")
    request = VideoRequest(prompt="a red car", width=64, height=64, fps="high", keyframes=2, seed=9)
    recorded = RecordingNoise(SeededNoise(9))
    whole = pipeline.generate(request, noise=recorded)

    def models(kind):
        return nullcontext(pipeline.models[kind].model)

    text = pipeline.encode_text(request)
    keyframes = Sequencer("1.1", request, models).all_keyframes(text)
    once = Sequencer("1.1", request, models).interpolate(text, keyframes, passes=1)
    twice = Sequencer("1.1", request, models).interpolate(text, once, passes=1, done=1)
    assert torch.equal(twice, whole.latents)
    phases = {phase for phase, _ in recorded.draws}
    assert phases == {"first_frame", "keyframes", "interpolation1", "interpolation2"}


def test_dtype_policy_never_runs_flan_ul2_in_fp16():
    assert text_dtype("auto", "cpu") == (torch.float32, False)
    assert text_dtype("auto", "cuda", bf16=True) == (torch.bfloat16, False)
    assert text_dtype("auto", "cuda", bf16=False) == (torch.float32, False)  # not fp16 where bf16 is missing
    assert text_dtype("fp8", "cuda", bf16=False) == (torch.float32, True)
    with pytest.raises(InputError, match="overflows in fp16"):
        text_dtype("fp16", "cuda")
    assert model_dtype("auto", "cpu") == torch.float32
    assert model_dtype("auto", "cuda", bf16=False) == torch.float16
    assert model_dtype("bf16", "cpu") == torch.bfloat16


@pytest.mark.parametrize("mode", ["P", "RGBA", "L", "RGB"])
def test_images_are_fitted_in_their_own_mode_then_made_rgb_as_officially(mode):
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (150, 200, 4), dtype=np.uint8), "RGBA")  # alpha varies
    image = image if mode == "RGBA" else image.convert(mode)
    fitted = fit_image(image, 64, 64)
    factor = max(1.0, min(200 / 64, 150 / 64))
    resized = image.resize((round(200 / factor), round(150 / factor)))  # PIL's default for the mode
    left, top = (resized.width - 64) / 2, (resized.height - 64) / 2
    official = resized.crop((left, top, left + 64, top + 64)).convert("RGB")
    assert fitted.mode == "RGB" and fitted.size == (64, 64)
    assert np.array_equal(np.asarray(fitted), np.asarray(official))
    if mode in ("P", "RGBA"):  # converting first (the old order) gives another picture: nearest for palettes,
        # premultiplied alpha for RGBA
        early = image.convert("RGB").resize(resized.size, Image.BICUBIC).crop((left, top, left + 64, top + 64))
        assert not np.array_equal(np.asarray(fitted), np.asarray(early))


def test_every_setting_has_one_name_on_the_command_line_in_the_library_and_on_the_node():
    """The knobs of a video request are the command line's flags and the keyframe sampler's widgets, by name."""
    from pathlib import Path

    from fusionframes.cli import build_parser

    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    flags = {action.dest for action in generate._actions}
    node = (Path(__file__).resolve().parents[3] / "nodes" / "keyframe_sampler.py").read_text()
    shared = ("width", "height", "keyframes", "seed", "steps", "sampler", "guidance", "image_guidance",
              "first_frame_guidance", "motion", "noise_augmentation")
    fields = set(VideoRequest.__dataclass_fields__)
    for name in shared:
        assert name in fields and name in flags, name
        assert f'Input("{name}"' in node, name
