"""The whole pipeline and the command line, on the tiny demo models the project creates itself."""

import numpy as np
import pytest
import torch
from PIL import Image

from fusionframes.cli import main
from fusionframes.errors import InputError
from fusionframes.io.video import read_video
from fusionframes.runtime.pipeline import VideoPipeline, VideoRequest


@pytest.fixture(scope="session")
def pipeline_10(demo):
    return VideoPipeline.from_folder(demo / "k10", demo / "text_encoder")


@pytest.fixture(scope="session")
def pipeline_11(demo):
    return VideoPipeline.from_folder(demo / "k11", demo / "text_encoder")


def test_release_is_detected_from_the_folder(pipeline_10, pipeline_11):
    assert pipeline_10.release == "1.0" and pipeline_11.release == "1.1"


def test_10_medium_fps_gives_4n_minus_3_frames_and_is_reproducible_by_seed(pipeline_10):
    request = VideoRequest(prompt="a cat", width=64, height=64, fps="medium", steps=4, keyframes=3, seed=5)
    first = pipeline_10.generate(request)
    assert first.frames.shape == (9, 3, 64, 64)
    assert float(first.frames.min()) >= 0 and float(first.frames.max()) <= 1
    again = pipeline_10.generate(request)
    assert torch.equal(first.latents, again.latents)
    other = pipeline_10.generate(VideoRequest(**{**request.__dict__, "seed": 6}))
    assert not torch.equal(first.latents, other.latents)


def test_10_negative_prompt_changes_the_result(pipeline_10):
    base = VideoRequest(prompt="a cat", width=64, height=64, fps="low", steps=3, keyframes=2, seed=1)
    plain = pipeline_10.generate(base)
    negative = pipeline_10.generate(VideoRequest(**{**base.__dict__, "negative_prompt": "blurry"}))
    assert not torch.equal(plain.latents, negative.latents)


@pytest.mark.slow
def test_11_image_to_video_keeps_the_image_as_first_key_frame(pipeline_11):
    pixels = np.zeros((80, 96, 3), dtype=np.uint8)
    pixels[:, :48] = (220, 40, 40)
    request = VideoRequest(prompt="a red car", image=Image.fromarray(pixels), width=64, height=64, fps="medium",
                           keyframes=3, seed=3)
    result = pipeline_11.generate(request)
    assert result.frames.shape == (9, 3, 64, 64)
    assert torch.isfinite(result.frames).all()


@pytest.mark.parametrize("change,message", [
    ({"width": 100}, "multiples of 64"),
    ({"fps": "ultra"}, "fps must be one of"),
    ({"keyframes": 0}, "keyframes must be an integer of at least 1"),
])
def test_bad_requests_are_clear_errors(pipeline_10, change, message):
    request = VideoRequest(**{**VideoRequest(prompt="x", width=64, height=64).__dict__, **change})
    with pytest.raises(InputError, match=message):
        pipeline_10.generate(request)


def test_image_to_video_with_10_models_is_refused(pipeline_10):
    with pytest.raises(InputError, match="needs the 1.1 models"):
        pipeline_10.generate(VideoRequest(prompt="x", image=Image.new("RGB", (64, 64)), width=64, height=64))


def test_cli_generate_writes_an_mp4_and_names_it_last(demo, tmp_path, capsys):
    out = tmp_path / "video.mp4"
    code = main(["generate", "--models", str(demo / "k10"), "--text-encoder", str(demo / "text_encoder"),
                 "--prompt", "a red car", "--width", "64", "--height", "128", "--fps", "medium", "--steps", "3",
                 "--keyframes", "2", "--placement", "text=cpu", "--text-dtype", "fp8", "--tile-size", "64",
                 "--out", str(out)])
    assert code == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"video: {out}"
    frames = read_video(out)
    assert frames.shape == (5, 128, 64, 3)


def test_cli_reports_user_errors_without_a_traceback(demo, tmp_path, capsys):
    code = main(["generate", "--models", str(tmp_path / "nowhere"), "--text-encoder", str(demo / "text_encoder"),
                 "--prompt", "x", "--out", str(tmp_path / "v.mp4")])
    assert code == 2
    assert "models folder not found" in capsys.readouterr().err
    code = main(["generate", "--models", str(demo / "k10"), "--placement", "keyframe=cuda:7", "--prompt", "x",
                 "--out", str(tmp_path / "v.mp4")])
    assert code == 2 and "cuda:7 is not available" in capsys.readouterr().err


def test_cli_keys_prints_the_official_manifest(golden, capsys):
    assert main(["keys", "--release", "1.0", "--model", "movq"]) == 0
    assert capsys.readouterr().out == (golden / "official_keys" / "k10_movq.txt").read_text()


def test_interpolation_needs_two_frames(pipeline_10):
    from fusionframes.runtime import stages
    from fusionframes.sampling.noise import SeededNoise

    unet = pipeline_10.models["interpolation"].model
    with pytest.raises(InputError, match="at least 2 latent frames"):
        stages.interpolate_10(unet, torch.zeros(1, 4, 8, 8), SeededNoise(0), steps=2)


def test_unknown_release_is_a_clear_error():
    from fusionframes.errors import ConfigError
    from fusionframes.models.configs import official_config

    with pytest.raises(ConfigError, match="unknown release '2.0'"):
        official_config("2.0")


def test_bf16_unets_run_the_whole_pipeline(demo, tmp_path):
    pipeline = VideoPipeline.from_folder(demo / "k10", demo / "text_encoder", dtype=torch.bfloat16)
    assert pipeline.models["keyframe"].model.dtype == torch.bfloat16
    assert next(pipeline.models["movq"].model.parameters()).dtype == torch.float32
    result = pipeline.generate(VideoRequest(prompt="a cat", width=64, height=64, fps="medium", steps=2,
                                            keyframes=2, seed=1))
    assert result.frames.shape == (5, 3, 64, 64) and torch.isfinite(result.frames).all()


def test_faster_sampler_is_an_option_never_the_default(demo):
    assert VideoRequest(prompt="x").sampler == "official"
    pipeline = VideoPipeline.from_folder(demo / "k11", demo / "text_encoder")
    result = pipeline.generate(VideoRequest(prompt="a cat", width=64, height=64, fps="low", keyframes=2,
                                            seed=1, sampler="ddim", steps=4))
    assert result.frames.shape == (2, 3, 64, 64) and torch.isfinite(result.frames).all()


def test_placement_names_each_stage_device_and_refuses_what_is_not_there(monkeypatch):
    from fusionframes.runtime.placement import Placement

    placement = Placement.parse("text=cpu, movq=cpu", "cpu")
    assert placement.device("video_movq") == placement.device("keyframe") == torch.device("cpu")
    with pytest.raises(InputError, match="ROLE one of text, keyframe, interpolation, movq"):
        Placement.parse("unet=cpu", "cpu")
    with pytest.raises(InputError, match="names text twice"):
        Placement.parse("text=cpu,text=cpu", "cpu")
    with pytest.raises(InputError, match="not a device"):
        Placement.parse("keyframe=gpu0", "cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert Placement.parse("interpolation=cuda:1", "cuda:0").device("interpolation") == torch.device("cuda:1")
    with pytest.raises(InputError, match=r"cuda:2 is not available: this machine has 2 CUDA device\(s\)"):
        Placement.parse("movq=cuda:2", "cuda:0")


def test_text_encoder_leaves_its_device_after_encoding_and_fp8_tiles_run_end_to_end(demo):
    pipeline = VideoPipeline.from_folder(demo / "k11", demo / "text_encoder", placement="text=cpu,movq=cpu",
                                         text_fp8=True)
    moves = []
    original = pipeline.text.to
    pipeline.text.to = lambda device: (moves.append(str(device)), original(device))[1]
    request = VideoRequest(prompt="a cat", width=64, height=64, fps="low", keyframes=2, seed=1, steps=2,
                           sampler="ddim")
    whole = pipeline.generate(request)
    assert moves == ["cpu", "cpu"]  # to the text role's device for encoding, then back to the CPU
    request.tile_size, request.tile_overlap = 64, 32  # one tile covers the frame: identical frames
    torch.testing.assert_close(pipeline.generate(request).frames, whole.frames)
    request.tile_size = 32
    with pytest.raises(InputError, match="tile size must be 0 \\(no tiling\\) or at least 64 pixels"):
        pipeline.generate(request)


def test_channels_last_weights_change_the_layout_not_the_video(demo):
    # 1.0: no 8-bit key-frame round trip, which would turn summation-order rounding into whole 1/255 steps
    request = VideoRequest(prompt="a cat", width=64, height=64, fps="medium", keyframes=2, seed=3, steps=2,
                           sampler="ddim")
    plain = VideoPipeline.from_folder(demo / "k10", demo / "text_encoder").generate(request)
    pipeline = VideoPipeline.from_folder(demo / "k10", demo / "text_encoder", channels_last=True)
    convs = [p for p in pipeline.models["keyframe"].model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs
                         if p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1)
    torch.testing.assert_close(pipeline.generate(request).frames, plain.frames, rtol=1e-4, atol=1e-4)


def test_interpolating_a_video_checks_its_frame_size_and_adds_three_frames_between_two(pipeline_10):
    frames = torch.rand(3, 3, 64, 64)
    result = pipeline_10.interpolate_video(frames, VideoRequest(fps="medium", steps=2, seed=1), source_fps=6)
    assert result.frames.shape == (9, 3, 64, 64) and result.fps == 24
    multiple = 8 * pipeline_10.models["interpolation"].model.config.latent_multiple
    with pytest.raises(InputError, match=f"cannot take 72x72 frames: its sides must be multiples of {multiple} px"):
        pipeline_10.interpolate_video(torch.rand(3, 3, 72, 72), VideoRequest(fps="medium", steps=2), source_fps=6)
    with pytest.raises(InputError, match="fps 'low' adds no frames"):
        pipeline_10.interpolate_video(frames, VideoRequest(fps="low"), source_fps=6)


def test_cli_interpolate_takes_frames_and_writes_frames(demo, tmp_path, capsys):
    from fusionframes.io.video import read_frames, write_frames

    write_frames(tmp_path / "in", torch.rand(3, 3, 64, 64))
    code = main(["interpolate", "--models", str(demo / "k10"), "--video", f"{tmp_path / 'in'}/", "--fps", "medium",
                 "--steps", "2", "--out", f"{tmp_path / 'out'}/"])
    assert code == 0 and "3 -> 9 frames" in capsys.readouterr().out
    assert read_frames(tmp_path / "out").shape == (9, 64, 64, 3)
    code = main(["interpolate", "--models", str(demo / "k11"), "--video", f"{tmp_path / 'in'}/", "--out", "x.mp4"])
    assert code != 0 and "needs the prompt" in capsys.readouterr().err


def test_decoded_frames_are_mapped_to_0_1_in_the_decoders_own_buffer(monkeypatch):
    """The frames of a long video are the run's largest tensor: the mapping to [0, 1] adds no copy of them."""
    from fusionframes.runtime import stages

    decoded = torch.linspace(-1.5, 1.5, 3 * 3 * 4 * 4).reshape(3, 3, 4, 4)
    expected = ((decoded + 1) / 2).clamp(0, 1)
    monkeypatch.setattr(stages, "decode_video", lambda *args, **kwargs: decoded)
    monkeypatch.setattr(stages, "decode_need", lambda *args: None)
    monkeypatch.setattr(stages.preflight, "check", lambda needs: None)
    frames = stages.decode_frames(None, torch.zeros(3, 4, 1, 1))
    assert frames.data_ptr() == decoded.data_ptr()
    assert torch.equal(frames, expected)  # bit for bit what the out-of-place formula gives


def test_cli_refuses_a_request_too_big_for_the_memory_and_skip_preflight_lets_it_run(demo, tmp_path, capsys,
                                                                                      monkeypatch):
    from fusionframes.runtime import preflight

    monkeypatch.setenv(preflight.SKIP_VARIABLE, "0")  # restored at teardown: --skip-preflight sets it to 1
    monkeypatch.setenv(preflight.LIMIT_VARIABLE, "1M")
    args = ["generate", "--models", str(demo / "k10"), "--text-encoder", str(demo / "text_encoder"), "--prompt", "x",
            "--width", "64", "--height", "64", "--steps", "2", "--keyframes", "2", "--out", str(tmp_path / "v.mp4")]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "sampling keyframes would need about" in error and "(FUSIONFRAMES_MEMORY_LIMIT)" in error
    assert "--skip-preflight" in error and "Traceback" not in error
    assert not (tmp_path / "v.mp4").exists()
    assert main([*args, "--skip-preflight"]) == 0
