"""Load: 50 prompts through the HTTP API, a fifth of them invalid or interrupted. Every valid prompt succeeds,
every invalid one fails with its clear message, the server stays up, and its resident memory after the last prompt
is within 10 % of what it was after the tenth (no leaked models or tensors)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.test_comfy_nodes import _node, api_workflow, execution_error, shrink

pytestmark = pytest.mark.slow

PROMPTS = 50


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


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
    kinds = {4: invalid_widget, 9: wrong_file, 14: bad_size, 19: "interrupt", 24: invalid_widget, 29: wrong_file,
             34: bad_size, 39: "interrupt", 44: invalid_widget, 49: "interrupt"}
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
        elif kind is not None:
            graph, message = kind(seed)
            if message == "validation":
                status, body = server.submit(graph)
                assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation", body
            else:
                entry = server.wait(server.queue(graph), timeout=300)
                error = execution_error(entry)
                assert error is not None and message in error["exception_message"], entry["status"]
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
