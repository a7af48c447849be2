"""The U-Nets as core MODELs in a real ComfyUI (issue 11): golden parity through ComfyUI's guiders and the official
sampling pieces, graph = pack nodes, core samplers, LoRA, bad input. The checks run in the ComfyUI host's Python
(tests/e2e/native_sampling.py, ComfyUI in-process); each prints its figures as one JSON line."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from fusionframes.tools.comfy_host import HOST_PYTHON, REPO, ensure_host

pytestmark = pytest.mark.slow

SCRIPT = REPO / "tests" / "e2e" / "native_sampling.py"


@pytest.fixture(scope="module")
def native_results(golden) -> dict[str, list[dict]]:
    ensure_host()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "FUSIONFRAMES_GOLDEN": str(golden)})
    proc = subprocess.run([str(HOST_PYTHON), str(SCRIPT)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=1800, check=False)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    print("\n".join(json.dumps(line)[:600] for line in lines))
    assert lines, proc.stdout[-4000:]
    results: dict[str, list[dict]] = {}
    for line in lines:
        results.setdefault(line["check"], []).append(line)
    return results


def _passed(results: dict[str, list[dict]], check: str, count: int) -> list[dict]:
    lines = results.get(check, [])
    assert len(lines) == count and all(line["ok"] for line in lines), json.dumps(lines)[:3000]
    return lines


def test_every_golden_sampling_step_matches_through_core_guiders_and_the_official_sampler(native_results):
    lines = _passed(native_results, "golden_steps", 5)
    assert {(line["case"], line["phase"]) for line in lines} == {
        ("k10_sampling", "keyframes"), ("k10_sampling", "interpolation"), ("k11_sampling", "first_frame"),
        ("k11_sampling", "keyframes"), ("k11_sampling", "interpolation")}
    assert all(line["free_run"]["ok"] for line in lines if line["phase"] == "interpolation")


def test_a_graph_of_core_nodes_gives_the_pack_nodes_result(native_results):
    _passed(native_results, "graph_equals_nodes", 2)


def test_ksampler_with_core_samplers_runs_both_stages(native_results):
    _passed(native_results, "core_samplers", 4)


def test_a_lora_in_comfyui_key_convention_patches_our_model(native_results):
    _passed(native_results, "lora", 1)


def test_foreign_conditionings_and_models_get_errors_naming_both_sides(native_results):
    _passed(native_results, "bad_input", 1)


def test_torch_compile_model_accepts_our_model_and_keeps_its_result(native_results):
    _passed(native_results, "torch_compile", 1)
