"""The FusionFrames U-Nets as core MODELs, checked in a real ComfyUI 0.3.75 run in-process (issue 11).

Run with the ComfyUI host's Python (tests/e2e/test_comfy_native.py does)::

    .host/venv/bin/python tests/e2e/native_sampling.py [--only NAME ...]

Checks (each prints one JSON line; the script exits 1 if any fails):

* ``golden_steps``: every recorded step of the golden sampling cases (k10_sampling, k11_sampling: first frame,
  keyframes, interpolation) through ComfyUI's own guiders (CFGGuider; DualCFGGuider for the 1.1 three-way guidance)
  on our MODEL with conditionings from the pack's nodes: the guided prediction at the fixture's state matches the
  official one, and the official update (``sampling.native.official_step``) from the fixture's prediction and noise
  matches the official next state, within the case's tolerance;
* ``golden_free_run``: the loops the fixtures require to match when run freely (the interpolations), sampled by
  the Official Sampler with the official sigmas and the recorded noise, from the recorded start;
* ``graph_equals_nodes``: a queued graph (loaders -> Text Encode -> Keyframe Conditioning -> DualCFGGuider ->
  SamplerCustomAdvanced with the official pieces -> Interpolation Conditioning -> ... -> Interleave) against the
  pack's T2V Keyframe Sampler + Latent Frame Interpolator, for both releases;
* ``core_samplers``: KSampler with euler/normal and dpmpp_2m/karras on both stages gives finite video latents;
* ``lora``: LoraLoaderModelOnly with a LoRA written here in ComfyUI's key convention: strength 0 leaves the output
  unchanged, strength 1 adds exactly ``up @ down * alpha / rank`` to the patched weights;
* ``bad_input``: a core (SD-shaped) conditioning and a core model at our nodes, and an SD 1.5 LoRA on our MODEL,
  fail with errors naming both sides, and the next prompt still runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import node_properties as props  # noqa: E402  (the in-process ComfyUI of the property tests)
import torch  # noqa: E402

GOLDEN = Path(__import__("os").environ.get("FUSIONFRAMES_GOLDEN", REPO.parent / "shared" / "golden"))
RESULTS: list[dict[str, Any]] = []


def report(name: str, ok: bool, **figures: Any) -> None:
    line = {"check": name, "ok": bool(ok), **figures}
    RESULTS.append(line)
    print(json.dumps(line), flush=True)


def pack_module(suffix: str):
    for name, module in sys.modules.items():
        if name.endswith(f".nodes.{suffix}") and "fusionframes" in name:
            return module
    raise RuntimeError(f"the pack's module {suffix} is not loaded")


class Harness:
    """ComfyUI in this process (the property tests' host) plus direct access to the pack's adapter modules."""

    def __init__(self) -> None:
        self.host = props.Host()
        self.native = pack_module("comfy.native")
        self.models = pack_module("comfy.models")
        self.nodes = pack_module("native_nodes")
        import comfy_extras.nodes_custom_sampler as custom

        self.custom = custom

    @staticmethod
    def cfg_guider(patcher):
        import comfy.samplers

        return comfy.samplers.CFGGuider(patcher)

    def managed(self, path: Path, kind: str):
        from fusionframes.io.checkpoints import load_model

        loaded = load_model(path, expected_kind=kind)
        return self.models.manage(loaded.model, loaded.release, kind, path.name)


# ----------------------------------------------------------------------------------------------------------------------
# Golden cases through ComfyUI's guiders


class _RunInside:
    """A core Sampler whose ``sample`` hands the prepared guided denoiser to ``body`` (the guider has processed the
    conditionings exactly as for a real run), then returns the input unchanged."""

    def __init__(self, harness: Harness, body) -> None:
        import comfy.samplers

        self.body = body
        self.comfy_samplers = comfy.samplers

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        model_k = self.comfy_samplers.KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image = latent_image
        model_k.noise = noise
        extra_args["denoise_mask"] = denoise_mask

        def denoise_k(x, sigma: float):
            return model_k(x, x.new_full((x.shape[0],), sigma), **extra_args)

        self.body(model_wrap.inner_model, denoise_k)
        return noise


def _to_video(native, frames: torch.Tensor, stage: str) -> torch.Tensor:
    return native.frames_to_video(frames, 1, stage)


def golden_phase(h: Harness, case, phase: str, stage: str, patcher, guider, latent: dict, release: str,
                 bins: int | None) -> dict[str, Any]:
    """Per-step checks of one phase of a golden case through ``guider``."""
    from fusionframes.tools.parity.checks import _tol
    from fusionframes.tools.parity.fixtures import Comparison

    native = h.native.native
    rtol, atol = _tol(case)
    t = case.tensors
    prediction = "v" if stage == "interpolation" else "eps"
    steps = case.steps(phase)
    prediction_cmp, update_cmp = Comparison(f"{phase} predictions"), Comparison(f"{phase} updates")

    def body(model, denoise_k):
        sampling = model.model_sampling
        previous = sampling.bins
        if bins is not None:
            sampling.use_bins(bins)
        try:
            drawn = 0
            times = [int(t[f"{p}.t"].flatten()[0]) for p in steps]
            model_times = [m * (1000 // bins) if bins else m for m in times]
            sigmas = [float(sampling.sigma(torch.tensor(float(m)))) for m in model_times] + [0.0]
            for index, prefix in enumerate(steps):
                x = t[f"{prefix}.x"].float()
                sigma, sigma_next = sigmas[index], sigmas[index + 1]
                scale = math.sqrt(1.0 + sigma * sigma)
                x_k = _to_video(native, x, stage).double() * scale
                x0 = denoise_k(x_k.float(), sigma).double()
                ab = native._alpha_bar_of_sigma(sigma, release)
                if prediction == "eps":
                    output = (x_k - x0) / sigma
                else:
                    output = (math.sqrt(ab) * x_k / scale - x0) / math.sqrt(1.0 - ab)
                output = native.video_to_frames(output, stage)
                prediction_cmp.add(f"{prefix}.model_output", output.float(), t[f"{prefix}.model_output"], rtol, atol)
                expected_output = _to_video(native, t[f"{prefix}.model_output"].float(), stage)
                x0_official = native.prediction_to_x0(prediction, x_k.float(), expected_output,
                                                      torch.tensor([sigma]), release)
                noise = None
                if native.draws_noise(release, model_times[index]):
                    noise = _to_video(native, t[f"noise.{phase}.step.{drawn:03d}"].float(), stage)
                    drawn += 1
                stepped = native.official_step(release, stage, x_k.float(), x0_official, sigma, sigma_next, noise)
                stepped = native.video_to_frames(stepped.double() / math.sqrt(1.0 + sigma_next * sigma_next), stage)
                update_cmp.add(f"{prefix}.out", stepped.float(), t[f"{prefix}.out"], rtol, atol)
        finally:
            sampling.use_bins(previous)

    from fusionframes.sampling.noise import RecordedNoise

    samples = latent["samples"]
    saved = h.native.NOISE_SOURCE
    h.native.NOISE_SOURCE = lambda seed: RecordedNoise(t)  # the conditioning's noise augmentation draws the official
    try:
        guider.sample(torch.zeros_like(samples), samples, _RunInside(h, body), torch.tensor([1.0, 0.0]), seed=0)
    finally:
        h.native.NOISE_SOURCE = saved
    return {"steps": len(steps), "prediction_error": prediction_cmp.max_error, "prediction_allowed":
            prediction_cmp.allowed, "update_error": update_cmp.max_error, "update_allowed": update_cmp.allowed,
            "failures": (prediction_cmp.failures + update_cmp.failures)[:4]}


def golden_free_run(h: Harness, case, phase: str, stage: str, guider, latent: dict, release: str,
                    steps: int | None) -> dict[str, Any]:
    """A required free run: the Official Sampler with the official sigmas and the recorded noise."""
    from fusionframes.sampling.noise import RecordedNoise

    native = h.native.native
    settings = case.meta["free_run"][phase]
    t = case.tensors
    recorded = RecordedNoise({k.replace(f"noise.{phase}.", f"noise.{latent_phase(latent)}."): v
                              for k, v in t.items() if k.startswith(f"noise.{phase}.")})
    saved = h.native.NOISE_SOURCE
    h.native.NOISE_SOURCE = lambda seed: recorded
    try:
        init = h.native.StreamNoise(0).generate_noise(latent)
        sigmas = native.official_sigmas(release, stage, steps)
        result = guider.sample(init, latent["samples"], h.native.OfficialSampler(), sigmas, seed=0)
    finally:
        h.native.NOISE_SOURCE = saved
    last = case.steps(phase)[-1]
    ours = native.video_to_frames(result.float(), stage)
    expected = t[f"{last}.out"].double()
    error = float((ours.double() - expected).abs().max())
    tolerance = settings["tolerance"]
    allowed = tolerance["atol"] + tolerance["rtol"] * float(expected.abs().max())
    return {"error": error, "allowed": allowed, "ok": error <= allowed}


def latent_phase(latent: dict) -> str:
    return latent["fusionframes"]["phase"]


def check_golden(h: Harness) -> None:
    from fusionframes.models.text.condition import TextCondition
    from fusionframes.tools.parity.fixtures import load_case

    for name, release in (("k10_sampling", "1.0"), ("k11_sampling", "1.1")):
        case = load_case(GOLDEN, name)
        t, meta = case.tensors, case.meta
        key_path, interp_path = (GOLDEN / p for p in meta["models"])
        keyframe = h.managed(key_path, "keyframe")
        interpolation = h.managed(interp_path, "interpolation")
        key_model, interp_model = keyframe.patcher, interpolation.patcher
        text = TextCondition(t["context"], t["context_mask"], release=release)
        native_cond = h.native.text_conditioning(text)
        null_cond = h.native.text_conditioning(text, null=True)
        nodes = h.nodes
        bins = int(meta["steps"]) if release == "1.0" else None
        phases = []
        frames = t[f"{case.steps('keyframes')[0]}.x"].shape[0]
        height, width = (8 * s for s in t[f"{case.steps('keyframes')[0]}.x"].shape[-2:])
        if release == "1.1":
            ff_guider = h.cfg_guider(key_model)
            ff_guider.set_conds(native_cond, null_cond)
            ff_guider.set_cfg(meta["key_frame_guidance_scale"] + 1)
            ff_shape = t[f"{case.steps('first_frame')[0]}.x"].shape
            ff_latent = {"samples": torch.zeros(1, 4, 1, *ff_shape[-2:]),
                         "fusionframes": {"phase": "first_frame", "stage": "first_frame"}}
            phases.append(("first_frame", "first_frame", key_model, ff_guider, ff_latent))
            options = {"stage": "keyframes", "phase": "keyframes", "key_frame": t["key_frame_latent"].float(),
                       "noise_augmentation": int(meta["noise_augmentation"]),
                       "motion_score": int(meta["motion_score"])}
            guider = h.custom.Guider_DualCFG(key_model)
            guider.set_conds(h.native.with_options(native_cond, "test", **options),
                             h.native.with_options(native_cond, "test", null=True, **options),
                             h.native.with_options(native_cond, "test", null=True, **{**options, "key_frame": None}))
            guider.set_cfg(meta["guidance_weight_prompt"], meta["guidance_weight_image"])
        else:
            guider = h.cfg_guider(key_model)
            options = {"stage": "keyframes", "phase": "keyframes"}
            guider.set_conds(h.native.with_options(native_cond, "test", **options),
                             h.native.with_options(null_cond, "test", **options))
            guider.set_cfg(meta["guidance"] + 1)
        kf_latent = {"samples": torch.zeros(1, 4, frames, height // 8, width // 8),
                     "fusionframes": {"phase": "keyframes", "stage": "keyframes"}}
        phases.append(("keyframes", "keyframes", key_model, guider, kf_latent))
        # interpolation: the node builds the conditionings
        keyframes = t["keyframes"].float()
        key_latent = {"samples": keyframes, "fusionframes": {"release": release, "fps": 2.0}}
        positive = native_cond if release == "1.1" else None
        cond, uncond, interp_latent = nodes.InterpolationConditioning.execute(interp_model, key_latent, 1,
                                                                             positive).result
        weight = meta["interpolation_guidance_scale"] if release == "1.1" else meta["interpolation_guidance"]
        guider = h.cfg_guider(interp_model)
        guider.set_conds(cond, uncond)
        guider.set_cfg(weight + 1)
        phases.append(("interpolation", "interpolation", interp_model, guider, interp_latent))
        for phase, stage, patcher, guider, latent in phases:
            started = time.monotonic()
            figures = golden_phase(h, case, phase, stage, patcher, guider, latent, release, bins)
            ok = not figures["failures"]
            free = None
            if case.meta.get("free_run", {}).get(phase, {}).get("required"):
                free = golden_free_run(h, case, phase, stage, guider, latent, release, bins)
                ok = ok and free["ok"]
            report("golden_steps", ok, case=name, phase=phase, free_run=free,
                   seconds=round(time.monotonic() - started, 1), **figures)


# ----------------------------------------------------------------------------------------------------------------------
# Queued graphs


class Graph:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, node_id: str, class_type: str, **inputs: Any) -> list:
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return [node_id, 0]

    def probe(self, node_id: str, link: list) -> None:
        self.nodes[node_id] = {"class_type": props.PROBES["LATENT"], "inputs": {"value": link}}


SIZE = 64


def loaders(g: Graph, release: str) -> None:
    files = props.FILES[release]
    g.add("k", "FusionFramesLoadKeyframeModel", ckpt_name=files["keyframe"], weight_dtype="auto")
    g.add("i", "FusionFramesLoadInterpolationModel", ckpt_name=files["interpolation"], weight_dtype="auto")
    g.add("m", "FusionFramesLoadMoVQ", ckpt_name=files["movq"], weight_dtype="fp32")
    g.add("t", "FusionFramesLoadTextEncoder", text_encoder="flan-ul2", projections=files["projections"],
          weight_dtype="auto")
    g.add("te", "FusionFramesTextEncode", text_encoder=["t", 0], prompt="a red car drifting", negative_prompt="")


def native_graph(g: Graph, release: str, seed: int, keyframes: int) -> None:
    """Keyframes and one interpolation pass from core nodes and the official pieces."""
    g.add("n", "FusionFramesSeededNoise", noise_seed=seed)
    g.add("s", "FusionFramesOfficialSampler")
    if release == "1.1":
        g.add("eff", "FusionFramesEmptyFirstFrame", width=SIZE, height=SIZE)
        g.add("g1", "CFGGuider", model=["k", 1], positive=["te", 1], negative=["te", 2], cfg=6.0)
        g.add("sig1", "FusionFramesOfficialSigmas", model=["k", 1], stage="first_frame", steps=0)
        g.add("sca1", "SamplerCustomAdvanced", noise=["n", 0], guider=["g1", 0], sampler=["s", 0],
              sigmas=["sig1", 0], latent_image=["eff", 0])
        g.add("kc", "FusionFramesKeyframeConditioning", model=["k", 1], positive=["te", 1], width=SIZE, height=SIZE,
              keyframes=keyframes, movq=["m", 0], first_frame=["sca1", 0], motion="medium", noise_augmentation=20)
        g.add("g2", "DualCFGGuider", model=["k", 1], cond1=["kc", 0], cond2=["kc", 1], negative=["kc", 2],
              cfg_conds=5.0, cfg_cond2_negative=2.0, style="regular")
    else:
        g.add("kc", "FusionFramesKeyframeConditioning", model=["k", 1], positive=["te", 1], negative=["te", 2],
              width=SIZE, height=SIZE, keyframes=keyframes)
        g.add("g2", "CFGGuider", model=["k", 1], positive=["kc", 0], negative=["kc", 2], cfg=6.0)
    g.add("sig2", "FusionFramesOfficialSigmas", model=["k", 1], stage="keyframes", steps=0)
    g.add("sca2", "SamplerCustomAdvanced", noise=["n", 0], guider=["g2", 0], sampler=["s", 0], sigmas=["sig2", 0],
          latent_image=["kc", 3])
    g.add("ic", "FusionFramesInterpolationConditioning", model=["i", 1], keyframes=["sca2", 0], pass_number=1,
          positive=["te", 1])
    g.add("g3", "CFGGuider", model=["i", 1], positive=["ic", 0], negative=["ic", 1],
          cfg=1.5 if release == "1.1" else 1.25)
    g.add("sig3", "FusionFramesOfficialSigmas", model=["i", 1], stage="interpolation", steps=0)
    g.add("sca3", "SamplerCustomAdvanced", noise=["n", 0], guider=["g3", 0], sampler=["s", 0], sigmas=["sig3", 0],
          latent_image=["ic", 2])
    g.add("if", "FusionFramesInterleaveFrames", keyframes=["sca2", 0], in_between=["sca3", 0])


def check_graph_equals_nodes(h: Harness) -> None:
    """The same seed through the core pieces and through the pack's sampler nodes. The keyframes of the random-weight
    demo models are chaotic (the golden cases measure it), so they are compared by how far they drift; the
    interpolation is compared exactly, from the same keyframes."""
    for release in ("1.0", "1.1"):
        g = Graph()
        loaders(g, release)
        seed, count = 11, 3
        native_graph(g, release, seed, count)
        g.add("ks", "FusionFramesKeyframeSampler", keyframe_model=["k", 0], conditioning=["te", 0], width=SIZE,
              height=SIZE, keyframes=count, seed=seed, steps=0, sampler="official", guidance=5.0,
              **({"movq": ["m", 0]} if release == "1.1" else {}))
        # interpolation of the NATIVE keyframes by the pack's interpolator: the same input for both paths
        g.add("fi", "FusionFramesFrameInterpolator", interpolation_model=["i", 0], latent=["sca2", 0], passes=1,
              seed=seed, steps=0, sampler="official", guidance=-1.0, conditioning=["te", 0])
        for probe, link in (("p_native", ["if", 0]), ("p_nodes", ["fi", 0]), ("p_key_native", ["sca2", 0]),
                            ("p_key_nodes", ["ks", 0])):
            g.probe(probe, link)
        started = time.monotonic()
        result = h.host.run(g.nodes)
        if result.outcome != "accepted":
            report("graph_equals_nodes", False, release=release, error=str(result.error)[:800])
            continue
        out = result.outputs
        native_video, nodes_video = out["p_native"]["samples"], out["p_nodes"]["samples"]
        video_error = float((native_video - nodes_video).abs().max())
        key_native = out["p_key_native"]["samples"][0].transpose(0, 1)
        key_error = float((key_native - out["p_key_nodes"]["samples"]).abs().max())
        allowed = 1e-4 + 1e-3 * float(nodes_video.abs().max())
        report("graph_equals_nodes", video_error <= allowed and native_video.shape == nodes_video.shape,
               release=release, interpolation_error=video_error, allowed=allowed, keyframes_drift=key_error,
               frames=int(native_video.shape[0]), seconds=round(time.monotonic() - started, 1))


def check_core_samplers(h: Harness) -> None:
    for release in ("1.0", "1.1"):
        for sampler, scheduler in (("euler", "normal"), ("dpmpp_2m", "karras")):
            g = Graph()
            loaders(g, release)
            if release == "1.1":
                g.add("img", "EmptyImage", width=SIZE, height=SIZE, batch_size=1, color=0x884422)
                g.add("kc", "FusionFramesKeyframeConditioning", model=["k", 1], positive=["te", 1], width=SIZE,
                      height=SIZE, keyframes=3, movq=["m", 0], image=["img", 0])
            else:
                g.add("kc", "FusionFramesKeyframeConditioning", model=["k", 1], positive=["te", 1],
                      negative=["te", 2], width=SIZE, height=SIZE, keyframes=3)
            g.add("ks", "KSampler", model=["k", 1], seed=3, steps=4, cfg=5.0, sampler_name=sampler,
                  scheduler=scheduler, positive=["kc", 0], negative=["kc", 2], latent_image=["kc", 3], denoise=1.0)
            g.add("ic", "FusionFramesInterpolationConditioning", model=["i", 1], keyframes=["ks", 0], pass_number=1,
                  positive=["te", 1])
            g.add("ks2", "KSampler", model=["i", 1], seed=3, steps=3, cfg=1.5, sampler_name=sampler,
                  scheduler=scheduler, positive=["ic", 0], negative=["ic", 1], latent_image=["ic", 2], denoise=1.0)
            g.add("if", "FusionFramesInterleaveFrames", keyframes=["ks", 0], in_between=["ks2", 0])
            g.probe("p", ["if", 0])
            result = h.host.run(g.nodes)
            if result.outcome != "accepted":
                report("core_samplers", False, release=release, sampler=sampler, error=str(result.error)[:800])
                continue
            video = result.outputs["p"]["samples"]
            ok = tuple(video.shape) == (9, 4, SIZE // 8, SIZE // 8) and bool(torch.isfinite(video).all())
            report("core_samplers", ok, release=release, sampler=sampler, scheduler=scheduler,
                   shape=list(video.shape), max_abs=float(video.abs().max()))


def check_lora(h: Harness) -> None:
    """A LoRA for two attention projections and one convolution of the 1.1 keyframe U-Net, in ComfyUI's
    ``diffusion_model.<name>.lora_up/lora_down`` convention."""
    import comfy.model_management as mm
    import folder_paths
    from safetensors.torch import save_file

    files = props.FILES["1.1"]
    loader = h.host.nodes.NODE_CLASS_MAPPINGS["FusionFramesLoadKeyframeModel"]
    managed, model = loader.execute(ckpt_name=files["keyframe"], weight_dtype="auto").result
    weights = dict(model.model.diffusion_model.named_parameters())
    linear = [n for n, p in weights.items() if n.endswith(".weight") and p.dim() == 2 and "attention" in n][:2]
    conv = [n for n, p in weights.items() if n.endswith(".weight") and p.dim() == 4][:1]
    rank, alpha = 2, 1.0
    generator = torch.Generator().manual_seed(0)
    lora, expected = {}, {}
    for name in linear + conv:
        weight = weights[name]
        out_features, in_features = weight.shape[0], int(weight[0].numel())
        down = torch.randn(rank, in_features, generator=generator) * 0.1
        up = torch.randn(out_features, rank, generator=generator) * 0.1
        key = "diffusion_model." + name[: -len(".weight")]
        lora[f"{key}.lora_down.weight"] = down.reshape(rank, *weight.shape[1:]) if weight.dim() == 4 else down
        lora[f"{key}.lora_up.weight"] = up.reshape(out_features, rank, 1, 1) if weight.dim() == 4 else up
        lora[f"{key}.alpha"] = torch.tensor(alpha)
        expected[name] = (up @ down).reshape(weight.shape) * (alpha / rank)
    folder = Path(folder_paths.get_folder_paths("loras")[0])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fusionframes_test_lora.safetensors"
    save_file(lora, str(path))
    original = {n: weights[n].detach().float().clone() for n in expected}
    lora_node = h.host.nodes.NODE_CLASS_MAPPINGS["LoraLoaderModelOnly"]()
    figures = {}
    for strength in (0.0, 1.0):
        patched = lora_node.load_lora_model_only(model, path.name, strength)[0]
        mm.load_models_gpu([patched])
        current = dict(patched.model.diffusion_model.named_parameters())
        deltas = {n: current[n].detach().float() - original[n] for n in expected}
        figures[f"strength_{strength:g}_max_error"] = max(float((deltas[n] - strength * expected[n]).abs().max())
                                                         for n in expected)
        figures[f"strength_{strength:g}_max_delta"] = max(float(deltas[n].abs().max()) for n in expected)
    mm.load_models_gpu([managed.patcher])  # the unpatched model again: the weights are restored
    restored = dict(managed.module.named_parameters())
    figures["restored_max_error"] = max(float((restored[n].detach().float() - original[n]).abs().max())
                                        for n in expected)
    mm.unload_all_models()
    path.unlink()
    ok = figures["strength_0_max_delta"] == 0.0 and figures["strength_1_max_error"] < 1e-5 and \
        figures["strength_1_max_delta"] > 1e-3 and figures["restored_max_error"] == 0.0
    report("lora", ok, patched=linear + conv, **figures)


def check_bad_input(h: Harness) -> None:
    """Core conditionings and models where ours go: errors naming both sides; the next prompt still runs."""
    g = Graph()
    loaders(g, "1.1")
    g.add("ckpt_like", "ConditioningZeroOut", conditioning=["te", 1])  # still ours: accepted
    g.add("sd", "FusionFramesKeyframeConditioning", model=["k", 1], positive=["te", 1], width=SIZE, height=SIZE,
          keyframes=2, movq=["m", 0])  # 1.1 without a first frame
    g.probe("p", ["sd", 3])
    result = h.host.run(g.nodes)
    first = str((result.error or {}).get("exception_message", ""))
    ok_first = result.outcome == "failed" and "exactly one first frame" in first
    # a foreign conditioning: an SD-shaped context without our options
    kc = h.nodes.KeyframeConditioning
    managed = h.host.nodes.NODE_CLASS_MAPPINGS["FusionFramesLoadKeyframeModel"].execute(
        ckpt_name=props.FILES["1.1"]["keyframe"], weight_dtype="auto").result[1]
    foreign = [[torch.zeros(1, 77, 768), {"pooled_output": torch.zeros(1, 768)}]]
    try:
        kc.execute(managed, foreign, SIZE, SIZE, 2)
        second = ""
    except ValueError as error:
        second = str(error)
    ok_second = "does not come from 'FusionFrames Text Encode'" in second and "FusionFrames 1.1 keyframe" in second

    class Foreign:  # a core model (what a checkpoint loader gives) where ours goes
        model = torch.nn.Linear(1, 1)

    try:
        kc.execute(Foreign(), foreign, SIZE, SIZE, 2)
        third = ""
    except ValueError as error:
        third = str(error)
    ok_third = "not a FusionFrames U-Net" in third and "Linear" in third
    fourth = _foreign_lora_message(h)
    ok_fourth = "matched none of the" in fourth and "FusionFrames 1.1 keyframe model" in fourth and \
        "diffusion_model." in fourth
    g2 = Graph()
    loaders(g2, "1.1")
    g2.add("kc", "FusionFramesKeyframeConditioning", model=["k", 1], positive=["te", 1], width=SIZE, height=SIZE,
           keyframes=2, movq=["m", 0], image=["img", 0])
    g2.add("img", "EmptyImage", width=SIZE, height=SIZE, batch_size=1, color=0)
    g2.probe("p", ["kc", 3])
    after = h.host.run(g2.nodes)
    report("bad_input", ok_first and ok_second and ok_third and ok_fourth and after.outcome == "accepted",
           messages=[first[:300], second[:300], third[:300], fourth[:400]], next_prompt=after.outcome)


def _foreign_lora_message(h: Harness) -> str:
    """The error of a prompt that puts an SD 1.5 LoRA (keys of SD's U-Net) on our MODEL."""
    import folder_paths
    from safetensors.torch import save_file

    folder = Path(folder_paths.get_folder_paths("loras")[0])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fusionframes_test_sd15_lora.safetensors"
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{key}.lora_down.weight": torch.zeros(2, 320), f"{key}.lora_up.weight": torch.zeros(320, 2),
               f"{key}.alpha": torch.tensor(2.0)}, str(path))
    try:
        g = Graph()
        loaders(g, "1.1")
        patched = g.add("lora", "LoraLoaderModelOnly", model=["k", 1], lora_name=path.name, strength_model=1.0)
        g.add("kc", "FusionFramesKeyframeConditioning", model=patched, positive=["te", 1], width=SIZE, height=SIZE,
              keyframes=2, movq=["m", 0], image=["img", 0])
        g.add("img", "EmptyImage", width=SIZE, height=SIZE, batch_size=1, color=0)
        g.probe("p", ["kc", 3])
        result = h.host.run(g.nodes)
    finally:
        path.unlink()
    return str((result.error or {}).get("exception_message", "")) if result.outcome == "failed" else ""



def check_torch_compile(h: Harness) -> None:
    """TorchCompileModel (inductor) accepts our MODEL, and the compiled model samples the same video as the plain
    one (1.0 keyframes, 2 euler steps)."""
    videos = {}
    started = time.monotonic()
    for compiled in (False, True):
        g = Graph()
        loaders(g, "1.0")
        model = ["k", 1]
        if compiled:
            model = g.add("compile", "TorchCompileModel", model=["k", 1], backend="inductor")
        g.add("kc", "FusionFramesKeyframeConditioning", model=model, positive=["te", 1], negative=["te", 2],
              width=SIZE, height=SIZE, keyframes=2)
        g.add("ks", "KSampler", model=model, seed=3, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal",
              positive=["kc", 0], negative=["kc", 2], latent_image=["kc", 3], denoise=1.0)
        g.probe("p", ["ks", 0])
        result = h.host.run(g.nodes)
        if result.outcome != "accepted":
            report("torch_compile", False, compiled=compiled, error=str(result.error)[:800])
            return
        videos[compiled] = result.outputs["p"]["samples"]
    error = float((videos[True] - videos[False]).abs().max())
    scale = float(videos[False].abs().max())
    report("torch_compile", error <= 1e-3 * max(scale, 1.0), max_difference=error, scale=scale,
           seconds=round(time.monotonic() - started, 1))


CHECKS = {"golden": check_golden, "graph": check_graph_equals_nodes, "core_samplers": check_core_samplers,
          "lora": check_lora, "bad_input": check_bad_input, "torch_compile": check_torch_compile}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CHECKS))
    args = parser.parse_args(argv)
    if not GOLDEN.is_dir():
        print(f"SET-UP FAILED: the golden fixtures are missing at {GOLDEN}", flush=True)
        return 2
    harness = Harness()
    for name in args.only or list(CHECKS):
        try:
            CHECKS[name](harness)
        except Exception as error:  # a crash is a failed check, reported with its cause
            import traceback

            report(name, False, crashed=f"{type(error).__name__}: {error}", traceback=traceback.format_exc()[-1500:])
    failed = [r for r in RESULTS if not r["ok"]]
    print(f"native sampling: {len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
