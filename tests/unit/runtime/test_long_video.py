"""Long videos (1.1): one segment per prompt, each continuing from the previous segment's last keyframe, then the
interpolation passes over the whole video. On the tiny demo models with a fast sampler."""

from __future__ import annotations

import pytest
import torch

from fusionframes.cli import main
from fusionframes.errors import InputError
from fusionframes.io.video import read_video
from fusionframes.runtime import stages
from fusionframes.runtime.pipeline import VideoPipeline, VideoRequest
from fusionframes.runtime.sequencer import Sequencer

pytestmark = pytest.mark.usefixtures("one_thread")

REQUEST = VideoRequest(prompt="unused", width=64, height=64, fps="low", keyframes=3, seed=3, sampler="ddim", steps=2)


@pytest.fixture(scope="module")
def pipeline_11(demo):
    return VideoPipeline.from_folder(demo / "k11", demo / "text_encoder")


def test_one_prompt_is_exactly_the_ordinary_video(pipeline_11):
    request = VideoRequest(**{**REQUEST.__dict__, "fps": "medium"})
    ordinary = pipeline_11.generate(VideoRequest(**{**request.__dict__, "prompt": "a red car"}))
    long = pipeline_11.generate_segments(request, ["a red car"])
    assert torch.equal(long.latents, ordinary.latents) and torch.equal(long.frames, ordinary.frames)


def test_segments_continue_from_the_last_keyframe_and_share_it_once(pipeline_11, monkeypatch):
    calls = []
    original = stages.sample_keyframes_11

    def recording(unet, text, key_frame, noise, **kwargs):
        out = original(unet, text, key_frame, noise, **kwargs)
        calls.append((key_frame.clone(), out.clone(), kwargs.get("phase", "keyframes")))
        return out

    monkeypatch.setattr(stages, "sample_keyframes_11", recording)
    prompts = ["a red car", "a blue boat", "a green tree"]
    result = pipeline_11.generate_segments(REQUEST, prompts)
    assert result.latents.shape[0] == 3 + 2 + 2  # the shared frame of each later segment appears once
    assert [phase for *_, phase in calls] == ["keyframes", "keyframes2", "keyframes3"]
    (_, first, _), (key2, second, _), (key3, third, _) = calls
    assert torch.equal(key2, first[-1]) and torch.equal(key3, second[-1])  # continued from the last keyframe
    assert torch.equal(result.latents, torch.cat([first, second[1:], third[1:]]))
    alone = pipeline_11.generate(VideoRequest(**{**REQUEST.__dict__, "prompt": "a red car"}))
    assert torch.equal(result.latents[:3], alone.latents)  # segment 1 is the ordinary video


def test_each_pair_is_interpolated_with_its_segments_prompt(pipeline_11, monkeypatch):
    seen = []
    original = Sequencer.interpolation

    def recording(self, text, video, pass_number):
        seen.append((text.context.clone(), video.shape[0]))
        return original(self, text, video, pass_number)

    monkeypatch.setattr(Sequencer, "interpolation", recording)
    request = VideoRequest(**{**REQUEST.__dict__, "fps": "high"})
    prompts = ["a red car", "a blue boat"]
    result = pipeline_11.generate_segments(request, prompts)
    assert result.frames.shape[0] == 4 * (4 * 5 - 3) - 3  # 5 keyframes -> 17 -> 65
    texts = [pipeline_11.encode_text(VideoRequest(prompt=p)).context for p in prompts]
    (first_pass, frames1), (second_pass, frames2) = seen
    assert (frames1, frames2) == (5, 17)
    owners1 = [0, 0, 1, 1]  # pairs (0,1) (1,2) in segment 1; (2,3) (3,4) end in segment 2
    owners2 = [o for o in owners1 for _ in range(4)]
    for context, owners in ((first_pass, owners1), (second_pass, owners2)):
        assert context.shape[0] == len(owners)
        for row, owner in zip(context, owners):
            length = texts[owner].shape[1]
            assert torch.equal(row[:length], texts[owner][0]) and not row[length:].any()


def test_long_videos_need_11_and_at_least_one_prompt(demo, pipeline_11):
    pipeline_10 = VideoPipeline.from_folder(demo / "k10", demo / "text_encoder")
    with pytest.raises(InputError, match="need release 1.1"):
        pipeline_10.generate_segments(VideoRequest(**{**REQUEST.__dict__, "sampler": "official", "steps": 2}),
                                      ["a", "b"])
    with pytest.raises(InputError, match="one prompt per segment"):
        pipeline_11.generate_segments(REQUEST, [])
    with pytest.raises(InputError, match="one prompt per segment"):
        pipeline_11.generate_segments(REQUEST, "a red car")


def test_cli_repeated_prompts_make_segments(demo, tmp_path, capsys):
    out = tmp_path / "long.mp4"
    code = main(["generate", "--models", str(demo / "k11"), "--text-encoder", str(demo / "text_encoder"),
                 "--prompt", "a red car", "--prompt", "a blue boat", "--width", "64", "--height", "64",
                 "--keyframes", "3", "--fps", "medium", "--sampler", "ddim", "--steps", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert read_video(out).shape[0] == 4 * 5 - 3
    code = main(["generate", "--models", str(demo / "k10"), "--text-encoder", str(demo / "text_encoder"),
                 "--prompt", "a", "--prompt", "b", "--width", "64", "--height", "64", "--steps", "2",
                 "--out", str(tmp_path / "no.mp4")])
    assert code == 2 and "need release 1.1" in capsys.readouterr().err
    assert not (tmp_path / "no.mp4").exists()


@pytest.mark.parametrize("release", ["1.0", "1.1"])
def test_a_loop_interpolates_the_way_back_and_flows_into_its_first_frame(demo, pipeline_11, release):
    pipeline = pipeline_11 if release == "1.1" else VideoPipeline.from_folder(demo / "k10", demo / "text_encoder")
    sampler = {"sampler": "ddim"} if release == "1.1" else {"sampler": "official", "steps": 3}
    request = VideoRequest(**{**REQUEST.__dict__, "fps": "medium", "keyframes": 4, **sampler})
    looped = pipeline.generate_segments(request, ["a red car"], loop=True)
    ordinary = pipeline.generate(VideoRequest(**{**request.__dict__, "prompt": "a red car"}))
    assert looped.frames.shape[0] == 4 * 4  # 4 keyframes, 3 new frames after each, the first one not repeated
    keyframes = ordinary.latents[::4]
    assert torch.equal(looped.latents[::4], keyframes)  # the same keyframes; the way back is interpolated
    steps = (looped.latents.roll(-1, 0) - looped.latents).flatten(1).norm(dim=1)  # steps[-1]: last -> first
    assert steps[-1] <= steps[:-1].max()  # the wrap-around is no larger than the steps inside the video
    with pytest.raises(InputError, match="fps 'medium' or 'high'"):
        pipeline.generate_segments(VideoRequest(**{**request.__dict__, "fps": "low"}), ["a"], loop=True)


class _Frames:
    """A stand-in for a VideoStream that keeps what it is given."""

    def __init__(self) -> None:
        self.parts: list[torch.Tensor] = []

    def append(self, frames: torch.Tensor) -> None:
        self.parts.append(frames.clone())


def test_streamed_decoding_gives_the_decoded_frames_clip_by_clip(pipeline_11):
    latents = torch.randn(13, 4, 8, 8)
    movq = pipeline_11.models["video_movq"].model
    whole = stages.decode_frames(movq, latents)
    sink = _Frames()
    assert stages.decode_to_stream(movq, latents, sink) == 13
    assert [part.shape[0] for part in sink.parts] == [5, 5, 3]  # the official clips, one at a time
    assert torch.equal(torch.cat(sink.parts), whole)


def test_a_cancel_in_segment_3_leaves_no_file(demo, tmp_path, monkeypatch):
    original = stages.sample_keyframes_11

    def cancelled_in_segment_3(*args, **kwargs):
        if kwargs.get("phase") == "keyframes3":
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(stages, "sample_keyframes_11", cancelled_in_segment_3)
    out = tmp_path / "videos" / "long.mp4"
    with pytest.raises(KeyboardInterrupt):
        main(["generate", "--models", str(demo / "k11"), "--text-encoder", str(demo / "text_encoder"),
              "--prompt", "a", "--prompt", "b", "--prompt", "c", "--width", "64", "--height", "64", "--keyframes", "3",
              "--fps", "medium", "--sampler", "ddim", "--steps", "2", "--out", str(out)])
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def _picture(seed: int, size: int = 64):
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size, size, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def test_a_last_image_ends_the_keyframes_exactly_and_shapes_the_ones_before(pipeline_11):
    request = VideoRequest(**{**REQUEST.__dict__, "prompt": "a red car", "keyframes": 4})
    free = pipeline_11.generate(request)
    with_end = VideoRequest(**{**request.__dict__, "last_image": _picture(1)})
    ending = pipeline_11.generate(with_end)
    target = pipeline_11.sequencer(with_end).last_frame()
    assert torch.equal(ending.latents[-1], target)  # the last keyframe is the given frame's latent
    assert not torch.equal(ending.latents[-1], free.latents[-1])
    assert not torch.equal(ending.latents[1:-1], free.latents[1:-1])  # the frames between lead towards it


def test_a_long_videos_last_image_ends_its_last_segment_only(pipeline_11, monkeypatch):
    ends = []
    original = stages.sample_keyframes_11

    def recording(*args, **kwargs):
        ends.append(kwargs.get("last_frame") is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(stages, "sample_keyframes_11", recording)
    request = VideoRequest(**{**REQUEST.__dict__, "last_image": _picture(2)})
    result = pipeline_11.generate_segments(request, ["a", "b", "c"])
    assert ends == [False, False, True]
    assert result.latents.shape[0] == 3 + 2 + 2


def test_a_last_image_needs_11(demo):
    pipeline_10 = VideoPipeline.from_folder(demo / "k10", demo / "text_encoder")
    request = VideoRequest(**{**REQUEST.__dict__, "sampler": "official", "last_image": _picture(3)})
    with pytest.raises(InputError, match="last frame needs the 1.1 models"):
        pipeline_10.generate(request)


def test_prompt_lines_are_one_per_segment_or_one_for_all():
    from fusionframes.runtime.sequencer import segment_prompts

    a, b, c = object(), object(), object()
    assert segment_prompts([a], 3) == [a, a, a]
    assert segment_prompts([a, b, c], 3) == [a, b, c]
    for lines in ([a, b], [a, b, c, a]):
        with pytest.raises(InputError, match="one prompt per segment"):
            segment_prompts(lines, 3)
    with pytest.raises(InputError, match="at least one prompt"):
        segment_prompts([], 2)


def test_continuing_keyframes_checks_its_inputs(pipeline_11):
    run = pipeline_11.sequencer(REQUEST)
    text = pipeline_11.encode_text(VideoRequest(prompt="a"))
    video = torch.randn(3, 4, 8, 8)
    with pytest.raises(InputError, match="3 frames but segments for 2"):
        run.continue_segments(video, [0, 0], [text], 1)
    with pytest.raises(InputError, match="2 prompts for a video of 3 segments"):
        run.continue_segments(video, [0, 0, 0], [text, text], 2)
    with pytest.raises(InputError, match="segments to add must be at least 1, got 0"):
        run.continue_segments(video, [0, 0, 0], [text], 0)
    more, segments = run.continue_segments(video, [-1, -1, -1], [text], 2)  # frames from elsewhere: lines from 0
    assert more.shape[0] == 3 + 2 + 2 and segments == [-1] * 3 + [0, 0, 1, 1]
