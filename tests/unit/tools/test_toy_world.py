"""The toy world renders what its captions say, the same way every time, and the detector reads it back."""

from __future__ import annotations

import math

import pytest
import torch

from fusionframes.tools.toy.detect import detect
from fusionframes.tools.toy.world import (
    COLOURS,
    MOTIONS,
    SHAPES,
    interpolated_times,
    keyframe_times,
    random_scene,
    render,
    scene_generator,
)


def test_a_seed_and_index_give_the_same_scene_and_frames():
    first = random_scene(scene_generator(3, 17), keyframes=9)
    again = random_scene(scene_generator(3, 17), keyframes=9)
    other = random_scene(scene_generator(3, 18), keyframes=9)
    assert first == again and first != other
    assert torch.equal(render(first, keyframe_times(9)), render(again, keyframe_times(9)))


def test_captions_follow_the_grammar():
    captions = {random_scene(scene_generator(0, i), keyframes=8).caption for i in range(200)}
    for caption in captions:
        words = caption.removesuffix(" on a black background").split(" ", 3)
        assert words[0] == "a" and words[1] in COLOURS and words[2] in SHAPES and words[3] in MOTIONS
    assert any(c.endswith("on a black background") for c in captions)
    assert len({c.split()[1] for c in captions}) == len(COLOURS)


@pytest.mark.parametrize("motion", list(MOTIONS))
def test_the_shape_stays_inside_the_frame_and_moves_the_captioned_way(motion):
    for index in range(20):
        scene = random_scene(scene_generator(1, index), keyframes=10, motion=motion)
        frames = render(scene, keyframe_times(10), size=64)
        first, last = detect(frames[0]), detect(frames[-1])
        for frame in (frames[0], frames[-1]):
            assert frame[:, 0].max() == -1 and frame[:, -1].max() == -1  # nothing touches the top or bottom rows
            assert frame[:, :, 0].max() == -1 and frame[:, :, -1].max() == -1
        dx, dy = MOTIONS[motion]
        moved = (last.centroid[0] - first.centroid[0], last.centroid[1] - first.centroid[1])
        assert moved[0] * dx + moved[1] * dy > 0.18 * 64 * 0.9
        assert abs(moved[0] * dy) + abs(moved[1] * dx) < 0.5  # nothing across the motion


def test_the_first_frame_does_not_give_the_direction_away():
    # Were right-movers to start on the left, a keyframe model would learn "move towards the centre" from the first
    # frame and ignore the motion words; the start is drawn the same way whatever the caption says.
    def mean_start(motion):
        starts = [random_scene(scene_generator(7, index), keyframes=8, motion=motion).start for index in range(300)]
        return sum(x for x, _ in starts) / len(starts), sum(y for _, y in starts) / len(starts)

    means = {motion: mean_start(motion) for motion in MOTIONS}
    for x, y in means.values():
        assert abs(x - 0.5) < 0.02 and abs(y - 0.5) < 0.02, means


def test_the_detector_reads_colour_shape_and_position_of_rendered_frames():
    for index in range(60):
        scene = random_scene(scene_generator(2, index), keyframes=5)
        for t, frame in zip(keyframe_times(5), render(scene, keyframe_times(5), size=64)):
            found = detect(frame)
            assert (found.colour, found.shape) == (scene.colour, scene.shape), scene
            cx, cy = scene.centre(t)
            assert math.hypot(found.centroid[0] - cx * 64, found.centroid[1] - cy * 64) < 0.3


def test_an_empty_frame_shows_nothing():
    found = detect(torch.full((3, 64, 64), -1.0))
    assert not found.present and found.colour is None


def test_interpolated_frames_lie_at_quarter_steps_between_the_keyframes():
    times = interpolated_times(3)
    assert times == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert len(interpolated_times(8)) == 4 * 8 - 3


def test_the_detector_reads_shapes_through_a_decoder_like_blur():
    blur = torch.nn.functional.avg_pool2d
    for index in range(45):
        scene = random_scene(scene_generator(4, index), keyframes=5, shape=SHAPES[index % 3])
        frame = render(scene, [2.0], size=64)
        soft = blur(frame, 3, stride=1, padding=1, count_include_pad=False)[0]
        assert detect(soft).shape == scene.shape, scene
