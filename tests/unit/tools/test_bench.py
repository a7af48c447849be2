"""The benchmark command (in-process, smallest size, 1 step) and the FLOP counting it relies on."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from fusionframes.cli import main
from fusionframes.tools.bench import count_stage_flops
from fusionframes.tools.flops import attention_flops, conv_flops, count_flops, linear_flops, mfu, peak_tflops

STAGES = {
    "1.1": ["text", "first_frame", "key_frame", "keyframes", "interpolation1", "decode"],
    "1.0": ["text", "keyframes", "interpolation1", "decode"],
}
SAMPLING_STEPS = {("1.1", "first_frame"): 50, ("1.1", "keyframes"): 50, ("1.1", "interpolation1"): 10,
                  ("1.0", "keyframes"): 50, ("1.0", "interpolation1"): 50}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    code = main(["bench", "--release", "all", "--size", "small", "--device", "cpu", "--steps", "1",
                 "--keyframes", "2", "--fps", "medium", "--threads", "1", "--out", str(out)])
    assert code == 0
    return json.loads(out.read_text())


def test_report_has_every_stage_in_both_modes(report):
    assert report["schema"] == "fusionframes-bench/1"
    runs = {run["settings"]["release"]: run for run in report["runs"]}
    assert set(runs) == {"1.0", "1.1"}
    for release, run in runs.items():
        assert run["device"]["type"] == "cpu" and run["torch"] == torch.__version__
        assert run["settings"]["steps"] == 1 and run["settings"]["size"] == "small"
        for mode in ("reference", "fast"):
            rows = [r for r in run["results"] if r["mode"] == mode]
            assert [r["stage"] for r in rows] == STAGES[release]
            for r in rows:
                assert r["seconds"] > 0 and r["estimated_seconds"] > 0, r
                assert r["peak_memory_bytes"] > 0 and r["memory_kind"]
                assert r["flops_per_call"] > 0
                assert sum(r["flops_by_category"].values()) == r["flops_per_call"]
                assert r["mfu"] is None  # no peak on the CPU unless given
                steps = SAMPLING_STEPS.get((release, r["stage"]))
                if steps is None:
                    assert r["official_steps"] is None and r["flops_estimated"] == r["flops_per_call"]
                else:
                    assert r["official_steps"] == steps and r["steps_run"] == 1
                    assert len(r["step_seconds"]) == 1 and r["seconds_per_step"] > 0
                    assert r["flops_estimated"] == r["flops_per_call"] * steps
                    assert r["estimated_seconds"] >= r["seconds_per_step"] * steps
            assert run["totals"][mode]["estimated_seconds"] > 0
        assert run["totals"]["speedup_estimated"] > 0
        assert run["models"]["fast"]["resident_weight_bytes"] > 0
        # both modes run the same shapes, so the FLOPs are the same
        assert run["totals"]["reference"]["flops_estimated"] == run["totals"]["fast"]["flops_estimated"]


def test_table_is_printed(report, capsys):
    # the module fixture printed its table before this test's capture began; print it again from the report
    from fusionframes.tools.bench import format_table

    table = format_table(report["runs"][0])
    for stage in STAGES["1.1"]:
        assert stage in table
    assert "estimated speed-up" in table


def test_real_run_counts_match_meta_counts(report):
    """FLOPs counted on the CPU during the run equal those counted on the meta device for the same shapes."""
    run = next(r for r in report["runs"] if r["settings"]["release"] == "1.1")
    meta = count_stage_flops("1.1", "small", fps="medium", keyframes=2, only=("keyframes", "interpolation1"))
    assert set(meta) == {"keyframes", "interpolation1"}
    for stage, count in meta.items():
        assert run["flops_per_call"][stage]["total"] == count.total, stage


def test_official_keyframe_flops_match_the_performance_figure():
    """docs/performance.md: 12 keyframes x 50 steps x 3-way guidance at 512^2 = 1,775 TFLOP -> 35.5 TFLOP/step."""
    counts = count_stage_flops("1.1", "official", fps="low", skip_text=True, only=("keyframes",))
    per_step = counts["keyframes"].total
    assert per_step == pytest.approx(35.5e12, rel=0.15)
    split = counts["keyframes"].by_category
    assert split["conv"] / per_step > 0.85  # "about 90 % of the FLOPs are convolutions"


def test_conv_count_matches_the_hand_formula():
    conv = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
    x = torch.randn(2, 16, 17, 19)
    _, counted = count_flops(conv, x)
    # output 9 x 10; 2 FLOPs per multiply-add: 2 * N * C_out * H_out * W_out * C_in * k_h * k_w
    hand = 2 * 2 * 32 * 9 * 10 * 16 * 3 * 3
    assert counted.total == hand == conv_flops(x.shape, conv.weight.shape, stride=2, padding=1) == 1_658_880
    assert counted.by_category == {"conv": hand}

    grouped = torch.nn.Conv2d(16, 32, 3, padding=1, groups=4)
    _, counted = count_flops(grouped, x)
    assert counted.total == 2 * 2 * 32 * 17 * 19 * (16 // 4) * 9 == conv_flops(x.shape, grouped.weight.shape, 1, 1)

    up = torch.nn.ConvTranspose2d(16, 8, 2, stride=2)
    _, counted = count_flops(up, x)
    assert counted.total == 2 * 2 * 17 * 19 * 16 * 8 * 4 == conv_flops(x.shape, up.weight.shape, 2, transposed=True)

    temporal = torch.nn.Conv3d(8, 8, (3, 1, 1), padding=(1, 0, 0))
    clip = torch.randn(1, 8, 5, 6, 7)
    _, counted = count_flops(temporal, clip)
    assert counted.total == 2 * 8 * 5 * 6 * 7 * 8 * 3 == conv_flops(clip.shape, temporal.weight.shape, 1, (1, 0, 0))


def test_linear_and_attention_counts():
    linear = torch.nn.Linear(64, 96, bias=False)
    _, counted = count_flops(linear, torch.randn(3, 10, 64))
    assert counted.total == linear_flops(30, 64, 96)
    q, k = torch.randn(2, 4, 10, 16), torch.randn(2, 4, 7, 16)
    _, counted = count_flops(F.scaled_dot_product_attention, q, k, k)  # the CPU fused kernel is counted too
    assert counted.total == attention_flops(8, 10, 7, 16) == 4 * 8 * 10 * 7 * 16
    assert counted.by_category == {"attention": counted.total}


def test_mfu_and_peaks():
    assert mfu(494.5e12, 1.0, 989.0) == pytest.approx(0.5)
    assert mfu(1e12, 0.0, 989.0) is None and mfu(1e12, 1.0, None) is None
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("Some CPU") is None
