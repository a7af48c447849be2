"""The peak-memory estimator: hand-computed peaks, the emulated CUDA behaviour, and the meta-device estimate against
real CPU runs of the same stages (the same tracker on real storages, and torch.profiler's allocator events)."""

from __future__ import annotations

import argparse
import functools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from fusionframes.tools import memory_estimate as me
from fusionframes.tools.bench import BenchSettings, StagePipeline, build_models, mode_context, run_limited

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_mlp(device: str) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8))
    if device == "meta":
        model = model.to("meta")
    return model.requires_grad_(False)


# ----------------------------------------------------------------------------------------------------------------------
# Hand-computed peaks
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize(("granularity", "expected"), [(1, 256 + 1024 + 1024), (512, 512 + 1024 + 1024)])
def test_peak_of_a_known_graph(device, granularity, expected):
    """x (4x16 fp32, 256 B) -> Linear 16->64 (h, 1024 B) -> ReLU (r, 1024 B) -> Linear 64->8 (128 B): the peak is while
    ReLU writes r (x, h and r alive); h dies before the last layer (x + r + 128 B). Weights are excluded."""
    model = _tiny_mlp(device)
    x = torch.zeros(4, 16, device=device)
    m = me.measure(lambda: model(x), device_type=device, exclude=list(model.parameters()), inputs=[x],
                   granularity=granularity)
    assert m.peak == expected
    assert m.inputs == me.round_allocation(256, granularity)
    assert m.peak_op == "relu"
    assert m.largest_allocation == 1024


def test_inputs_are_counted_from_first_use_and_storages_are_released():
    with me.DeviceMemoryTracker("meta", granularity=1) as tracker:
        a = torch.empty(100, device="meta")  # 400 B
        assert tracker.current == 400
        b = a * 2  # 400 B more
        view = b.view(10, 10)  # a view: no new storage
        assert tracker.current == 800
        del a
        assert tracker.current == 400
        c = torch.cat([view, view])  # 800 B while b is alive
        assert tracker.current == 1200 and tracker.peak == 1200
        del b, view, c
        assert tracker.current == 0
    outside = torch.empty(50, device="meta")
    with me.DeviceMemoryTracker("meta", granularity=1) as tracker:
        _ = outside + 1  # the pre-existing tensor is counted once read: 200 + 200
        assert tracker.peak == 400 and tracker.inputs == 200


def test_cuda_rounding():
    assert me.round_allocation(0) == 0
    assert me.round_allocation(1) == 512
    assert me.round_allocation(512) == 512
    assert me.round_allocation(513) == 1024


# ----------------------------------------------------------------------------------------------------------------------
# CUDA behaviour on meta: attention kernels, autocast
# ----------------------------------------------------------------------------------------------------------------------


def _attention_peak(q, k, v, mask=None, math_only=False):
    def run():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    if math_only:
        with sdpa_kernel([SDPBackend.MATH]):
            return me.measure(run, inputs=[q, k, v], granularity=1)
    return me.measure(run, inputs=[q, k, v], granularity=1)


def test_math_attention_materialises_the_scores_and_fused_does_not():
    b, h, n, d = 2, 4, 256, 64
    q, k, v = (torch.zeros(b, h, n, d, dtype=torch.float16, device="meta") for _ in range(3))
    qkv = 3 * b * h * n * d * 2
    scores32 = b * h * n * n * 4
    fused = _attention_peak(q, k, v)
    assert fused.attention == {"flash": 1}
    # output (fp16) + logsumexp (fp32) + a few bytes of RNG state
    assert qkv + b * h * n * d * 2 <= fused.peak <= qkv + b * h * n * d * 2 + b * h * n * 4 + 64
    math = _attention_peak(q, k, v, math_only=True)
    assert math.attention == {"math": 1}
    # fp32 scores, ATen's _safe_softmax (softmax output, -inf mask, where) alive together
    assert math.peak >= qkv + 3 * scores32 + b * h * n * n
    masked = _attention_peak(q, k, v, mask=torch.ones(b, 1, 1, n, dtype=torch.bool, device="meta"))
    assert masked.attention == {"efficient": 1} and masked.peak < qkv + scores32
    five_d = torch.zeros(2, 3, h, 12, d, dtype=torch.float16, device="meta")
    assert _attention_peak(five_d, five_d, five_d).attention == {"math": 1}  # flash/efficient need 4-D


def test_attention_backend_choice():
    half = torch.zeros(1, 2, 8, 64, dtype=torch.bfloat16, device="meta")
    single = half.float()
    wide = torch.zeros(1, 1, 8, 512, dtype=torch.float16, device="meta")
    assert me.cuda_attention_backend(half, half, half, None) == "flash"
    assert me.cuda_attention_backend(single, single, single, None) == "efficient"  # flash needs fp16/bf16
    assert me.cuda_attention_backend(wide, wide, wide, None) == "efficient"  # flash: head dim <= 256
    with sdpa_kernel([SDPBackend.MATH]):
        assert me.cuda_attention_backend(half, half, half, None) == "math"
    transposed = torch.zeros(1, 1, 64, 4096, device="meta").transpose(-1, -2)  # (1, 1, 4096 pixels, 64 channels)
    assert me.cuda_attention_backend(transposed, transposed, transposed, None) == "math"  # last-dim stride != 1
    assert me.cuda_attention_backend(*(transposed.contiguous(),) * 3, None) == "efficient"


def test_movq_attention_gets_a_fused_kernel_on_cuda():
    """The MoVQ's spatial attention hands SDPA contiguous q/k/v: CUDA's fused kernel, not the (h*w)^2 scores of the
    math kernel (the README's decode estimates rely on it; the video MoVQ's temporal attention, over a few frames,
    takes the math kernel at a negligible cost)."""
    from fusionframes.io.checkpoints import build_model
    from fusionframes.models.configs import official_config

    with torch.device("meta"):
        movq = build_model("1.1", "movq", official_config("1.1").movq).eval()
    weights = [*movq.parameters(), *movq.buffers()]
    decoded = me.measure(lambda: movq.decode(torch.zeros(1, 4, 16, 16, device="meta")), exclude=weights)
    encoded = me.measure(lambda: movq.encode(torch.zeros(1, 3, 128, 128, device="meta")), exclude=weights)
    assert set(decoded.attention) == set(encoded.attention) == {"efficient"}, (decoded.attention, encoded.attention)


def test_autocast_emulation_follows_cuda_autocast_lists():
    conv = nn.Conv2d(8, 8, 3, padding=1).to("meta", torch.float16).requires_grad_(False)
    norm = nn.GroupNorm(4, 8).to("meta", torch.float16).requires_grad_(False)
    linear = nn.Linear(8, 8).to("meta", torch.float16).requires_grad_(False)
    x = torch.zeros(2, 8, 16, 16, device="meta")  # fp32 input
    seen = {}

    def run():
        y = conv(x)  # fp32 input cast to fp16 (a copy), fp16 output
        seen["conv"] = y.dtype
        z = norm(y)  # fp32 list: group_norm runs in fp32
        seen["norm"] = z.dtype
        seen["linear"] = linear(z.mean((2, 3))).dtype
        seen["upsample"] = F.interpolate(y, scale_factor=2.0).dtype
        return z

    m = me.measure(run, inputs=[x], autocast=True, granularity=1, exclude=[*conv.parameters(), *norm.parameters(),
                                                                           *linear.parameters()])
    assert seen == {"conv": torch.float16, "norm": torch.float32, "linear": torch.float16,
                    "upsample": torch.float32}
    numel = x.numel()
    assert m.peak >= numel * 4 + numel * 2 + numel * 2  # x, its fp16 copy, the conv output


# ----------------------------------------------------------------------------------------------------------------------
# Meta estimate vs real CPU runs of the same stages (small models)
# ----------------------------------------------------------------------------------------------------------------------

REAL_STAGES = ("first_frame", "keyframes", "interpolation1")


@functools.cache
def _stage_peaks(device: str, mode: str) -> dict[str, int]:
    """Each stage of the small 1.1 models run for one step on ``device`` (fp32 on both), tracked by the same dispatch
    mode: real storages on the CPU, shapes only on meta."""
    models = build_models("1.1", "small", device, mode, with_text=False)
    settings = BenchSettings(release="1.1", size="small", device=device, fps="medium", keyframes=4, skip_text=True,
                             modes=(mode,)).resolved()
    pipeline = StagePipeline(settings, models, torch.device(device))
    pipeline.text()
    weights = [t for model in models.all().values() for t in (*model.parameters(), *model.buffers())]
    peaks = {}
    for stage in pipeline.stage_list():
        if stage.name not in REAL_STAGES:
            continue
        with mode_context(mode, torch.device(device), False):
            m = me.measure(lambda stage=stage: run_limited(stage, 1, torch.device(device)), device_type=device,
                           exclude=weights, granularity=1, cuda_attention=device == "meta",
                           inputs=me.device_values(pipeline.values) if device == "meta" else [])
        peaks[stage.name] = m.peak
    latents = torch.zeros(5, 4, 8, 8, device=device)
    for name, kind in (("decode", "video_movq"), ("image_decode", "movq")):
        movq = models.movqs[kind]
        peaks[name] = me.measure(lambda movq=movq: movq.decode(latents), device_type=device, exclude=weights,
                                 granularity=1, inputs=[latents], cuda_attention=device == "meta").peak
    return peaks


@pytest.mark.parametrize("mode", ["reference", pytest.param("fast", marks=pytest.mark.slow)])
def test_meta_estimate_matches_a_real_cpu_run(mode):
    """Same stage code, same tracker: the meta estimate follows the real run's allocations. Math attention runs the
    same ATen composite on both devices; fused attention differs only in the kernels' small side outputs."""
    real = _stage_peaks("cpu", mode)
    meta = _stage_peaks("meta", mode)
    for name, value in real.items():
        assert value > 0
        tolerance = 0.02 if mode == "reference" else 0.10
        assert abs(meta[name] - value) <= tolerance * value, (name, meta[name], value)


def _profiled_peak(fn) -> int:
    """Peak bytes of the real CPU allocator during ``fn`` (torch.profiler allocation events, kernels' own buffers
    included), relative to the start."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()

    def walk(events):
        for event in events:
            yield event
            yield from walk(event.children)

    allocations = sorted((e for e in walk(prof.profiler.kineto_results.experimental_event_tree())
                          if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu"),
                         key=lambda e: e.start_time_ns)
    current = peak = 0
    for event in allocations:
        current += event.extra_fields.alloc_size
        peak = max(peak, current)
    return peak


def test_meta_estimate_is_close_to_the_cpu_allocators_peak():
    """An independent measurement: the real CPU allocator's peak (profiler events, kernels' own buffers included)
    during one step of each sampling stage and one image-MoVQ decode of the small 1.1 models, against the meta
    estimate of the same runs."""
    device = torch.device("cpu")
    models = build_models("1.1", "small", device, "reference", with_text=False)
    settings = BenchSettings(release="1.1", size="small", device="cpu", fps="medium", keyframes=4, skip_text=True,
                             modes=("reference",)).resolved()
    pipeline = StagePipeline(settings, models, device)
    pipeline.text()
    measured = {}
    with mode_context("reference", device, False):
        for stage in pipeline.stage_list():
            if stage.name in REAL_STAGES:
                measured[stage.name] = _profiled_peak(lambda stage=stage: run_limited(stage, 1, device))
    latents = torch.zeros(5, 4, 8, 8)
    measured["image_decode"] = _profiled_peak(lambda: models.movqs["movq"].decode(latents))
    estimated = _stage_peaks("meta", "reference")
    for name, value in measured.items():
        ratio = estimated[name] / value
        assert 0.8 <= ratio <= 1.25, (name, estimated[name], value)


def test_cpu_conv3d_workspace_is_invisible_to_dispatch_tracking():
    """What the tracker cannot see: a kernel's own buffers. torch's CPU Conv3d (slow_conv3d) allocates an im2col
    matrix of C*27*T*H*W floats inside the kernel; the profiler sees it, a dispatch mode does not (on CUDA, cuDNN's
    workspace plays this part). The temporal MoVQ's 3-D convolutions make its CPU decode peak several times the
    estimate for this reason alone."""
    conv = nn.Conv3d(32, 32, 3, padding=1).requires_grad_(False)
    x = torch.zeros(1, 32, 5, 32, 32)
    tracked = me.measure(lambda: conv(x), device_type="cpu", exclude=list(conv.parameters()), inputs=[x],
                         granularity=1, cuda_attention=False).peak
    columns = 32 * 27 * 5 * 32 * 32 * 4
    assert tracked == 2 * x.numel() * 4  # input + output
    assert _profiled_peak(lambda: conv(x)) == x.numel() * 4 + columns  # output + im2col (x existed before)


# ----------------------------------------------------------------------------------------------------------------------
# Official size (shapes only) and the report
# ----------------------------------------------------------------------------------------------------------------------


def test_official_temporal_decoder_clip_peak_by_hand():
    """The official 1.1 temporal MoVQ decoding a clip of 5 frames at 512x512 (fp32). At inference the latent
    modulation, SiLU, blends and residual sum work in place, so a full-resolution ResNet block holds three
    512-channel tensors at most -- its input (the shortcut), the normalised activations and the convolution's
    output: 3 x 5 x 512 x 512 x 512 x 4 B = 7.5 GiB (out of place it was six, 15 GiB)."""
    from fusionframes.io.checkpoints import build_model
    from fusionframes.tools.bench import release_config

    config = release_config("1.1", "official").video_movq
    with torch.device("meta"):
        movq = build_model("1.1", "video_movq", config).requires_grad_(False)
    latents = torch.zeros(45, 4, 64, 64, device="meta")
    m = me.measure(lambda: movq.decode(latents[:5]), exclude=[*movq.parameters(), *movq.buffers()], inputs=[latents],
                   modules={"video_movq": movq})
    full = 5 * 512 * 512 * 512 * 4
    assert 3 * full <= m.peak <= 3 * full + 64 * 2**20
    assert m.peak_module.startswith("video_movq.decoder.up.0.block.")


def _stage(stage: str, models: list[str], activation: int) -> me.StageMemory:
    return me.StageMemory("1.1", "fast", stage, 512, 512, 12, models, activation, 0, "", "", 0, {}, 0.0)


def test_scenario_weights_and_workflow_peaks():
    gib = me.GIB
    weights = {"t5": 16 * gib, "keyframe": 8 * gib, "interpolation": 7 * gib, "movq": 1 * gib,
               "video_movq": 2 * gib}
    mm = me.ModeModels("1.1", "fast", None, weights, {})
    rows = [_stage("text", ["t5"], 0), _stage("keyframes", ["keyframe"], 2 * gib),
            _stage("decode", ["video_movq"], 15 * gib)]
    report = me.workflow_report(mm, me.WORKFLOWS[1], rows, 512, 512, 12)
    by_stage = {s["stage"]: s["scenarios"] for s in report["stages"]}
    assert by_stage["text"]["all_resident"]["weight_bytes"] == 34 * gib
    assert by_stage["text"]["default"]["weight_bytes"] == 34 * gib  # the encoder visits the GPU to encode
    assert by_stage["keyframes"]["default"]["weight_bytes"] == 18 * gib  # U-Nets + MoVQs stay
    assert by_stage["keyframes"]["offload"]["weight_bytes"] == 8 * gib
    assert by_stage["decode"]["offload"]["total_bytes"] == 17 * gib
    assert report["peak_bytes"] == {"all_resident": 49 * gib, "default": 34 * gib, "offload": 17 * gib}
    assert report["peak_stage"] == {"all_resident": "decode", "default": "text", "offload": "decode"}
    assert report["peak_bytes_text_on_cpu"] == {"all_resident": 49 * gib, "default": 33 * gib, "offload": 17 * gib}


@pytest.mark.slow
def test_scenarios_and_report_small(tmp_path):
    out = tmp_path / "memory.json"
    parser = argparse.ArgumentParser()
    me.add_arguments(parser)
    args = parser.parse_args(["--size", "small", "--release", "1.0", "--modes", "fast", "--no-scaling",
                              "--keyframes", "3", "--out", str(out)])
    with open(tmp_path / "table.txt", "w") as table_file:
        assert me.run(args, out=table_file) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == me.SCHEMA
    names = [(w["workflow"], w["mode"]) for w in report["workflows"]]
    assert ("1.0 high", "fast") in names and ("1.0 high", "fast + fp8 T5") in names
    weights = report["models"]["1.0 fast"]["weight_bytes"]
    assert weights["t5_fp8"] < weights["t5"]
    for workflow in report["workflows"]:
        stages = [s["stage"] for s in workflow["stages"]]
        assert stages[0].startswith("text") and stages[-1] == "decode"
        assert stages[1] == "keyframes" and stages[2:-1] == [f"interpolation{i + 1}" for i in range(len(stages) - 3)]
        for stage in workflow["stages"]:
            sc = stage["scenarios"]
            assert sc["offload"]["weight_bytes"] <= sc["default"]["weight_bytes"] <= sc["all_resident"]["weight_bytes"]
            for value in sc.values():
                assert value["total_bytes"] == value["weight_bytes"] + stage["activation_bytes"]
        assert workflow["peak_bytes"]["all_resident"] == max(s["scenarios"]["all_resident"]["total_bytes"]
                                                             for s in workflow["stages"])
    table = (tmp_path / "table.txt").read_text()
    assert "1.0 high -- fast" in table and "Summary" in table
