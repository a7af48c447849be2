"""Training the toy models resumes exactly where it stopped, writes files the official loaders read, and toy-eval
scores what it is shown."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fusionframes.io.checkpoints import load_model
from fusionframes.sampling.schedules import K11Schedule
from fusionframes.tools.toy.diagnose import interpolation_fit
from fusionframes.tools.toy.evaluate import interpolation_alone, score_video, summary
from fusionframes.tools.toy.train import (
    FILES,
    FIRST_FRAME_COPY,
    InterpolationBatch,
    StagePlan,
    learning_rate,
    train_stage,
)
from fusionframes.tools.toy.world import (
    interpolated_times,
    keyframe_times,
    parse_caption,
    random_scene,
    render,
    scene_generator,
)


def test_a_stage_stopped_every_step_trains_exactly_as_one_run(tmp_path):
    whole = train_stage("interpolation", tmp_path / "a" / "models", tmp_path / "a" / "work", steps=3)
    pieces, calls = None, 0
    while pieces is None or not pieces.done:
        pieces = train_stage("interpolation", tmp_path / "b" / "models", tmp_path / "b" / "work", steps=3,
                             time_limit=0.0)  # stops (and saves) after every step
        calls += 1
    assert calls == 3 and whole.done
    assert pieces.losses == whole.losses
    first = load_model(tmp_path / "a" / "models" / FILES["interpolation"], expected_kind="interpolation")
    second = load_model(tmp_path / "b" / "models" / FILES["interpolation"], expected_kind="interpolation")
    assert first.release == "1.1"
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), name
    untouched = load_model(tmp_path / "a" / "models" / FILES["keyframe"], expected_kind="keyframe")
    assert untouched.release == "1.1"  # the other files: the starting point, in the official layout too


def test_toy_eval_scores_the_world_itself_as_perfect():
    scores = []
    for index, (colour, shape, motion) in enumerate([("red", "circle", "moving right"), ("blue", "triangle",
                                                                                         "moving up")]):
        scene = random_scene(scene_generator(5, index), keyframes=6, colour=colour, shape=shape, motion=motion)
        frames = render(scene, interpolated_times(6), size=64)
        scores.append(score_video(scene.caption, 0, frames, step=4))
    result = summary(scores)
    assert result["colour_accuracy"] == result["shape_accuracy"] == result["direction_accuracy"] == 1.0
    assert result["in_between_error_px"] < 0.3 and result["jitter_px"] < 0.3 and result["area_change"] < 0.02


def test_toy_eval_sees_a_wrong_direction_and_a_still_video():
    scene = random_scene(scene_generator(6, 0), keyframes=6, colour="green", shape="square", motion="moving left")
    frames = render(scene, interpolated_times(6), size=64)
    backwards = score_video("a green square moving right", 0, frames, step=4)
    still = score_video("a green square moving left", 0, frames[:1].expand(len(frames), -1, -1, -1), step=4)
    wrong_colour = score_video("a white square moving left", 0, frames, step=4)
    assert not backwards.direction_ok and backwards.colour_ok and backwards.shape_ok
    assert not still.direction_ok and still.in_between_error is not None and still.in_between_error < 1e-6
    assert not wrong_colour.colour_ok
    assert parse_caption("a red circle moving up on a black background") == ("red", "circle", "moving up")
    assert summary([still])["jitter_px"] == 0.0


def test_variants_start_from_the_first_frame_model_not_from_a_trained_keyframe_model(tmp_path):
    models, work = tmp_path / "models", tmp_path / "work"
    try:
        train_stage("keyframes", models, work, steps=1, variant="Conv1dAttn3dBlocks")
    except FileNotFoundError as error:
        assert "toy-train --stage first_frame" in str(error) and "copy of the set" in str(error)
    else:
        raise AssertionError("a variant trained without the first-frame U-Net to start from")
    assert train_stage("first_frame", models, work, steps=1).done
    start = work / FIRST_FRAME_COPY
    assert start.read_bytes() == (models / FILES["keyframe"]).read_bytes()
    assert train_stage("keyframes", models, work, steps=1).done  # k11/t2v.pt is now a video model
    assert start.read_bytes() != (models / FILES["keyframe"]).read_bytes()


def test_an_extended_plan_retrains_with_the_learning_rates_it_was_trained_with():
    extended = StagePlan(800, 2, 1e-3, warmup=10, extended_from=(400,))
    first, second = StagePlan(400, 2, 1e-3, warmup=10), StagePlan(800, 2, 1e-3, warmup=10)
    assert [learning_rate(extended, s) for s in range(400)] == [learning_rate(first, s) for s in range(400)]
    assert [learning_rate(extended, s) for s in range(400, 800)] == [learning_rate(second, s) for s in range(400, 800)]
    assert learning_rate(extended, 400) > 4 * learning_rate(extended, 399)  # the extension raised it again


class _Interpolator:
    """Stands in for the pipeline in ``interpolation_alone``: gives back the scene's true video, or each keyframe
    held until the next (the frames in between do not move)."""

    def __init__(self, scene, hold: bool) -> None:
        self.scene, self.hold, self.seen = scene, hold, None

    def interpolate_video(self, frames, request, source_fps):
        self.seen = (frames, request, source_fps)
        if self.hold:
            video = torch.cat([frames[:-1].repeat_interleave(4, 0), frames[-1:]]) * 2 - 1
        else:
            video = render(self.scene, interpolated_times(frames.shape[0]), size=frames.shape[-1])
        return SimpleNamespace(frames=(video + 1) / 2)


def test_toy_eval_measures_the_interpolation_alone_on_the_worlds_keyframes():
    prompt, index, seed = "a yellow square moving down", 3, 2
    scene = random_scene(scene_generator(seed, index), keyframes=8, colour="yellow", shape="square",
                         motion="moving down")
    exact, held = _Interpolator(scene, hold=False), _Interpolator(scene, hold=True)
    good = interpolation_alone(exact, prompt, index, seed, "medium", 8, 64)
    frozen = interpolation_alone(held, prompt, index, seed, "medium", 8, 64)
    frames, request, source_fps = exact.seen
    assert torch.allclose(frames * 2 - 1, render(scene, keyframe_times(8), size=64))  # the scene's own keyframes
    assert (request.prompt, request.fps, request.seed, request.keyframes) == (prompt, "medium", seed, 8)
    assert good.in_between_error < 0.3 and good.direction_ok
    assert frozen.in_between_error > 0.5  # held keyframes lag the midpoint path


class _VFromBlend(torch.nn.Module):
    """A stand-in interpolation U-Net whose v is ``scale`` times the v of a model that knows x0 is the blend."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.alphas = K11Schedule(10, spacing="trailing", prediction="v_prediction").alphas_cumprod.float()

    def forward(self, inputs, steps, context, mask, skips, pairs, perturbation, keep):
        left, x_t, right = inputs[:, :4], inputs[:, 4:16], inputs[:, 16:]
        blend = torch.cat([left * (1 - a) + right * a for a in (0.25, 0.5, 0.75)], 1)
        ab = self.alphas[steps.long()].reshape(-1, 1, 1, 1)
        return self.scale * (ab.sqrt() * x_t - blend) / (1 - ab).sqrt().clamp(min=1e-4)


def test_interpolation_fit_tells_a_perfect_v_from_a_shrunk_one():
    generator = torch.Generator().manual_seed(0)
    keyframes = torch.randn(2, 8, 4, 8, 8, generator=generator) * 0.4
    batch = InterpolationBatch([None, None], keyframes, torch.zeros(14, 12, 8, 8))
    batch.x0 = batch.blend() + 0.01 * torch.randn(14, 12, 8, 8, generator=generator)
    context, mask = torch.zeros(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)
    timesteps = (999, 499, 99)

    perfect = interpolation_fit(_VFromBlend(1.0), batch, context, mask, timesteps)
    for row in perfect:
        assert abs(row["gain_x_t"] - row["ideal_gain_x_t"]) < 1e-3 * max(1.0, row["ideal_gain_x_t"])
        assert abs(row["gain_blend"] - row["ideal_gain_blend"]) < 1e-3 * abs(row["ideal_gain_blend"])
        assert row["residual_variance"] < 1e-6
        assert abs(row["x0_mse"] - row["blend_mse"]) < 1e-6 and row["blend_mse"] == pytest.approx(1e-4, rel=0.1)

    shrunk = interpolation_fit(_VFromBlend(0.6), batch, context, mask, timesteps)
    for row in shrunk:
        assert row["gain_blend"] == pytest.approx(0.6 * row["ideal_gain_blend"], rel=1e-3)
    assert shrunk[1]["x0_mse"] > 100 * perfect[1]["x0_mse"]
