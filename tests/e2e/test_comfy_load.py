"""Load: 50 prompts through the HTTP API, a fifth of them invalid, too big for the machine or interrupted (some on
large inputs). Every valid prompt succeeds, every invalid or too-big one fails at once with its clear message, every
cancelled one stops within seconds, the server stays up, and its resident memory after the last prompt is within
10 % of what it was after the tenth (no leaked models or tensors)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.comfy_fixtures import resident_mb
from tests.e2e.test_comfy_cancel import _encoded
from tests.e2e.test_comfy_nodes import _interrupt_after, _node, api_workflow, execution_error, shrink

pytestmark = pytest.mark.slow

PROMPTS = 50


def valid_graph(seed: int) -> dict:
    graph = shrink(api_workflow("fusionframes_1_0_text_to_video_medium_fps"))
    _node(graph, "FusionFramesKeyframeSampler")["inputs"].update(seed=seed, steps=2, keyframes=2)
    _node(graph, "FusionFramesFrameInterpolator")["inputs"].update(seed=seed, steps=2)
    return graph


def invalid_widget(seed: int) -> tuple[dict, str]:
    graph = valid_graph(seed)
    _node(graph, "FusionFramesKeyframeSampler")["inputs"]["guidance"] = -3.0
    return graph, "validation"


def wrong_file(seed: int) -> tuple[dict, str]:
    graph = valid_graph(seed)
    _node(graph, "FusionFramesLoadInterpolationModel")["inputs"]["ckpt_name"] = "kandinsky_video_1_0/movq.pt"
    return graph, "is an image MoVQ"


def bad_size(seed: int) -> tuple[dict, str]:
    graph = valid_graph(seed)
    _node(graph, "FusionFramesKeyframeSampler")["inputs"]["width"] = 96
    return graph, "multiples of 64"


def too_big(seed: int) -> tuple[dict, str]:
    """The demo server plans with at most 12 GB (FUSIONFRAMES_MEMORY_LIMIT): refused before sampling."""
    graph = valid_graph(seed)
    _node(graph, "FusionFramesKeyframeSampler")["inputs"].update(width=2048, height=2048, keyframes=64)
    return graph, "sampling keyframes would need about"


def _interrupted_large(server) -> bool:
    """Cancel the MoVQ encoding of a 2048x2048 image (one model call of about 20 s) 2 s into it."""
    entry, stopped_after = _interrupt_after(server, _encoded(2048, 1), seconds=2)
    assert stopped_after < 15, f"took {stopped_after:.1f} s to stop"  # one 2048x2048 convolution: seconds
    return "execution_interrupted" in [m[0] for m in entry["status"].get("messages", [])]


def _interrupted(server, seed: int) -> bool:
    graph = valid_graph(seed)
    _node(graph, "FusionFramesKeyframeSampler")["inputs"]["steps"] = 1000
    prompt_id = server.queue(graph)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = server.get("/queue")["queue_running"]
        if running and running[0][1] == prompt_id:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    server.interrupt()
    entry = server.wait(prompt_id, timeout=120)
    return "execution_interrupted" in [m[0] for m in entry["status"].get("messages", [])]


def test_fifty_prompts_a_fifth_invalid_or_interrupted(demo_server):
    server = demo_server
    kinds = {4: invalid_widget, 9: wrong_file, 14: too_big, 19: "interrupt", 24: bad_size, 29: "interrupt large",
             34: too_big, 39: "interrupt", 44: invalid_widget, 49: "interrupt large"}
    assert len(kinds) == PROMPTS // 5
    outcomes = {"succeeded": 0, "failed as expected": 0, "interrupted": 0}
    memory_after_tenth = None
    started = time.monotonic()
    for index in range(PROMPTS):
        seed = 1000 + index
        kind = kinds.get(index)
        if kind == "interrupt":
            assert _interrupted(server, seed), f"prompt {index} was not interrupted"
            outcomes["interrupted"] += 1
        elif kind == "interrupt large":
            assert _interrupted_large(server), f"prompt {index} was not interrupted"
            outcomes["interrupted"] += 1
        elif kind is not None:
            graph, message = kind(seed)
            if message == "validation":
                status, body = server.submit(graph)
                assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation", body
            else:
                queued = time.monotonic()
                entry = server.wait(server.queue(graph), timeout=300)
                error = execution_error(entry)
                assert error is not None and message in error["exception_message"], entry["status"]
                assert time.monotonic() - queued < 60, f"prompt {index} took {time.monotonic() - queued:.0f} s to fail"
            outcomes["failed as expected"] += 1
        else:
            entry = server.wait(server.queue(valid_graph(seed)), timeout=300)
            assert entry["status"]["status_str"] == "success", execution_error(entry)
            outcomes["succeeded"] += 1
        assert server.running(), f"server died at prompt {index}: {server.log_tail()}"
        if index == 9:
            memory_after_tenth = resident_mb(server.pid)
    memory_after_last = resident_mb(server.pid)
    growth = (memory_after_last - memory_after_tenth) / memory_after_tenth
    print(f"\nload: {PROMPTS} prompts in {time.monotonic() - started:.0f} s: {outcomes}; server RSS after the 10th "
          f"{memory_after_tenth:.0f} MB, after the last {memory_after_last:.0f} MB ({100 * growth:+.1f} %)")
    assert outcomes["succeeded"] == PROMPTS - len(kinds)
    assert abs(growth) <= 0.10
