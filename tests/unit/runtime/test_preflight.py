"""Preflight: a stage that cannot fit in what its device has free is refused before it allocates anything, with a
message naming what would fit; the machine's free memory is monkeypatched."""

from __future__ import annotations

import re

import pytest
import torch

from fusionframes.errors import InputError
from fusionframes.io.checkpoints import load_model
from fusionframes.models.movq.decoding import Tiles
from fusionframes.models.text.condition import TextCondition
from fusionframes.runtime import preflight, stages
from fusionframes.runtime.sequencer import Sequencer, VideoRequest
from fusionframes.sampling.noise import SeededNoise

MIB = 1 << 20


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch):
    monkeypatch.delenv(preflight.SKIP_VARIABLE, raising=False)
    monkeypatch.delenv(preflight.LIMIT_VARIABLE, raising=False)


def _free(monkeypatch, nbytes: int | None, devices: list | None = None) -> None:
    def available(device):
        if devices is not None:
            devices.append(device)
        return nbytes

    monkeypatch.setattr(preflight, "available_memory", available)


def _no_sampling(monkeypatch) -> None:
    def sample(*args, **kwargs):
        raise AssertionError("the stage started sampling")

    monkeypatch.setattr(stages, "sample", sample)


@pytest.fixture(scope="module")
def k10(golden):
    folder = golden / "models" / "k10"
    return {name: load_model(folder / file).model.eval() for name, file in
            (("keyframe", "kandinsky_video.pt"), ("interpolation", "kandinsky_video_interpolation.pt"),
             ("movq", "movq.pt"))}


@pytest.fixture(scope="module")
def k11(golden):
    folder = golden / "models" / "k11"
    return {name: load_model(folder / file).model.eval() for name, file in
            (("keyframe", "t2v.pt"), ("movq", "movq.pt"), ("video_movq", "video_movq.pt"))}


def _text(unet) -> TextCondition:
    return TextCondition(torch.zeros(1, 4, unet.config.context_dim), torch.ones(1, 4, dtype=torch.bool))


def test_too_many_keyframes_are_refused_before_sampling_with_what_fits(monkeypatch, k10):
    unet = k10["keyframe"]
    one, two = (preflight.unet_need("k", "keyframes_1.0", unet, n, "keyframes", 8, 8, "").device_bytes for n in (1, 2))
    unit, fixed = two - one, 2 * one - two
    free = int((fixed + 9.5 * unit) / preflight.USABLE_SHARE)  # room for 9.5 keyframes
    _free(monkeypatch, free)
    _no_sampling(monkeypatch)
    with pytest.raises(InputError) as error:
        stages.sample_keyframes_10(unet, _text(unet), 64, 64, SeededNoise(0), steps=2, num_frames=64)
    message = str(error.value)
    assert "sampling keyframes would need about" in message and "64 keyframes at 64x64" in message
    assert "At most 9 keyframes fit at 64x64" in message
    assert "lower width/height (64x64), the number of keyframes (64)" in message
    assert f"{preflight.SKIP_VARIABLE}=1" in message and "--skip-preflight" in message


def test_the_count_it_suggests_fits_and_one_more_does_not(monkeypatch, k10):
    unet = k10["keyframe"]
    _free(monkeypatch, 300 * MIB)
    need = preflight.unet_need("sampling keyframes", "keyframes_1.0", unet, 4000, "keyframes", 32, 32, "")
    with pytest.raises(InputError) as error:
        preflight.check([need])
    fits = int(re.search(r"At most (\d+) keyframes fit at 256x256", str(error.value)).group(1))
    size = re.search(r"at most (\d+)x(\d+) fits 4000 keyframes", str(error.value))
    preflight.check([preflight.unet_need("k", "keyframes_1.0", unet, fits, "keyframes", 32, 32, "")])
    with pytest.raises(InputError):
        preflight.check([preflight.unet_need("k", "keyframes_1.0", unet, fits + 1, "keyframes", 32, 32, "")])
    if size is not None:  # a smaller size at the same count fits too
        width, height = int(size.group(1)), int(size.group(2))
        preflight.check([preflight.unet_need("k", "keyframes_1.0", unet, 4000, "keyframes", height // 8, width // 8,
                                             "")])


def test_a_request_that_fits_runs_and_the_stage_asks_about_its_models_device(monkeypatch, k10, one_thread):
    devices: list = []
    _free(monkeypatch, 64 << 30, devices)
    latents = stages.sample_keyframes_10(k10["keyframe"], _text(k10["keyframe"]), 64, 64, SeededNoise(0), steps=2,
                                         num_frames=2)
    assert latents.shape == (2, 4, 8, 8)
    assert devices == [torch.device("cpu")]


def test_unknown_free_memory_refuses_nothing(monkeypatch, k10):
    _free(monkeypatch, None)
    preflight.check([preflight.unet_need("k", "keyframes_1.0", k10["keyframe"], 10**4, "keyframes", 64, 64, "")])


def test_skipping_the_preflight_lets_a_big_request_through_but_not_an_impossible_one(monkeypatch, k10):
    unet = k10["keyframe"]
    _free(monkeypatch, 1 * MIB)
    big = preflight.unet_need("k", "keyframes_1.0", unet, 1000, "keyframes", 64, 64, "lower it.")
    monkeypatch.setenv(preflight.SKIP_VARIABLE, "1")
    preflight.check([big])
    impossible = preflight.unet_need("k", "keyframes_1.0", unet, 10**9, "keyframes", 512, 512, "lower it.")
    assert impossible.device_bytes > preflight.HARD_LIMIT
    with pytest.raises(InputError, match="no machine has that much memory: lower it."):
        preflight.check([impossible])
    monkeypatch.setenv(preflight.SKIP_VARIABLE, "0")
    with pytest.raises(InputError, match="but only 0.0 GiB is available"):
        preflight.check([big])


@pytest.mark.parametrize(("text", "expected"), [("20G", 20 << 30), ("512M", 512 << 20), ("1.5t", int(1.5 * (1 << 40))),
                                                ("4096", 4096), ("8GiB", 8 << 30), ("2 GB", 2 << 30)])
def test_memory_limit_values(text, expected):
    assert preflight.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "nanG", "G"])
def test_a_bad_memory_limit_is_a_clear_error(monkeypatch, k10, text):
    monkeypatch.setenv(preflight.LIMIT_VARIABLE, text)
    with pytest.raises(InputError, match=f"{preflight.LIMIT_VARIABLE}=.* is not a memory size"):
        preflight.check([preflight.unet_need("k", "keyframes_1.0", k10["keyframe"], 1, "keyframes", 8, 8, "")])


def test_the_memory_limit_caps_what_the_device_offers(monkeypatch, k10):
    _free(monkeypatch, 64 << 30)
    need = preflight.unet_need("k", "keyframes_1.0", k10["keyframe"], 100, "keyframes", 64, 64, "")
    preflight.check([need])
    monkeypatch.setenv(preflight.LIMIT_VARIABLE, str(need.device_bytes // 2))
    with pytest.raises(InputError, match=f"is available \\({preflight.LIMIT_VARIABLE}\\)"):
        preflight.check([need])


def test_interpolating_many_frames_is_refused_before_sampling(monkeypatch, k10):
    _free(monkeypatch, 8 * MIB)
    _no_sampling(monkeypatch)
    with pytest.raises(InputError) as error:
        stages.interpolate_10(k10["interpolation"], torch.zeros(100, 4, 16, 16), SeededNoise(0), steps=2)
    assert "interpolating frames would need about" in str(error.value)
    assert "99 frame pairs at 128x128" in str(error.value)
    assert "interpolate fewer frames at a time (100 in)" in str(error.value)


def test_decoding_on_the_cpu_counts_the_clip_and_the_whole_videos_frames(monkeypatch, k11):
    movq = k11["video_movq"]
    whole = stages.decode_need(movq, (45, 4, 8, 8), None, None)
    assert whole.units == 5 and whole.host_bytes == 45 * 3 * 64 * 64 * 4
    tiled = stages.decode_need(movq, (45, 4, 64, 64), None, Tiles(8, 4))
    assert (tiled.width, tiled.height) == (64, 64)  # one tile of 8 latent pixels on the device at a time
    assert tiled.host_bytes == 45 * 3 * 512 * 512 * 4
    _free(monkeypatch, whole.device_bytes // 2)
    with pytest.raises(InputError, match="decoding frames with the MoVQ would need about .* decode fewer frames per "
                                         "clip \\(5\\) or in tiles"):
        stages.decode_frames(movq, torch.zeros(45, 4, 8, 8))


def test_decoding_on_a_gpu_leaves_the_clip_to_the_out_of_memory_fallback_and_checks_host_memory(monkeypatch, k11):
    need = stages.decode_need(k11["video_movq"], (45, 4, 64, 64), None, None)
    gpu = preflight.Need(need.stage, torch.device("cuda", 0), 0, need.units, need.unit_name, need.width,
                         need.height, host_bytes=need.host_bytes, advice=need.advice)
    asked: list = []
    _free(monkeypatch, need.host_bytes * 2, asked)
    preflight.check([gpu])
    assert asked == [torch.device("cpu")]  # nothing to check on the GPU: smaller clips and tiles follow an OOM
    _free(monkeypatch, need.host_bytes // 2)
    with pytest.raises(InputError, match="would need about .* on cpu"):
        preflight.check([gpu])


def test_encoding_a_huge_image_is_refused_before_the_encoder_runs(monkeypatch, k11):
    _free(monkeypatch, 16 * MIB)

    def encode(*args, **kwargs):
        raise AssertionError("the encoder ran")

    monkeypatch.setattr(stages, "encode_frames", encode)
    with pytest.raises(InputError, match=r"encoding images with the MoVQ would need about .* \(1 images at 2048x"):
        stages.encode_video(k11["movq"], torch.zeros(1, 3, 2048, 2048))


def test_11_text_to_video_refuses_its_keyframes_before_it_samples_the_first_frame(monkeypatch, k11):
    """The first frame takes minutes at a large size; the keyframes that follow must fit before it starts."""
    unet = k11["keyframe"]
    first = stages.first_frame_need(unet, 128, 128)
    _free(monkeypatch, int(first.device_bytes * 2))
    _no_sampling(monkeypatch)
    from contextlib import nullcontext

    sequencer = Sequencer("1.1", VideoRequest(prompt="a", width=128, height=128, keyframes=64),
                          lambda kind: nullcontext(k11[kind]))
    with pytest.raises(InputError, match=r"sampling keyframes would need about .* \(64 keyframes at 128x128\)"):
        sequencer.first_frame(_text(unet))


def test_a_host_that_can_free_memory_is_asked_first(monkeypatch, k10):
    """ComfyUI unloads other models when asked (nodes/comfy/models.cancellable); only what is still short refuses."""
    need = preflight.unet_need("k", "keyframes_1.0", k10["keyframe"], 100, "keyframes", 64, 64, "")
    free = [need.device_bytes // 4]
    monkeypatch.setattr(preflight, "available_memory", lambda device: free[0])
    asked: list = []

    def unload(device, nbytes):
        asked.append((device, nbytes))
        free[0] = nbytes

    with preflight.reclaiming(unload):
        preflight.check([need])
    assert [device for device, _ in asked] == [torch.device("cpu")]
    assert asked[0][1] * preflight.USABLE_SHARE >= need.device_bytes
    with preflight.reclaiming(lambda device, nbytes: None), pytest.raises(InputError):
        free[0] = need.device_bytes // 4
        preflight.check([need])
    free[0] = need.device_bytes // 4
    with pytest.raises(InputError):  # outside the context nobody is asked
        preflight.check([need])
