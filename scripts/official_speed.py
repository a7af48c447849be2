"""Times each 1.1 stage of the official code and of ours, side by side in one process, on the same models, inputs,
dtype (fp32), device and thread count, and prints the ratio.

The official code is not part of this project and is never committed: fetch it to a temporary folder first (e.g.
the library's ``fetch github:ai-forever/KandinskyVideo``, then ``git archive``/``git show`` its ``main`` branch, the
1.1 release, into /tmp/official11) and install what it imports (``pip install diffusers omegaconf scikit-image``).

    python scripts/official_speed.py --official /tmp/official11 --models ../shared/golden/models/k11 \\
        --text-encoder ../shared/golden/models/text_encoder --size 128 --threads 1 --repeat 2 --out speed.json

Both sides get the same prompt context (encoded once by our encoder, which parity tests hold to the official one),
the same key frame and the same keyframes; each stage runs ``--repeat`` times and the best time counts. Stages: the
first frame (image mode, 50 steps), the keyframes (50 steps, three-way guidance), one interpolation pass (10 steps),
the temporal MoVQ decode of the interpolated video.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusionframes.io.checkpoints import load_model  # noqa: E402
from fusionframes.models.text.encoder import TextEncoder  # noqa: E402
from fusionframes.runtime import stages  # noqa: E402
from fusionframes.sampling.noise import SeededNoise  # noqa: E402


def _best(function, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        with torch.no_grad():
            result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", required=True, help="folder holding the official kandinsky_video package")
    parser.add_argument("--models", required=True, help="a 1.1 release folder (official file layout + configs.json)")
    parser.add_argument("--text-encoder", required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--keyframes", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # the package's own __init__ loads the whole pipeline (torchvision, the hub): take only the modules we time
    package = types.ModuleType("kandinsky_video")
    package.__path__ = [str(Path(args.official).resolve() / "kandinsky_video")]
    sys.modules["kandinsky_video"] = package
    from kandinsky_video.model.diffusion import BaseDiffusion
    from kandinsky_video.model.unet import UNet
    from kandinsky_video.model.unet_interpolation import UNet as InterpolationUNet
    from kandinsky_video.movq import MoVQ

    folder = Path(args.models)
    configs = json.loads((folder / "configs.json").read_text())

    def official(cls, name: str, config: str):
        state = torch.load(folder / name, map_location="cpu", weights_only=True)
        model = cls(**configs[config]["configs"]) if cls is not MoVQ else cls(configs[config]["configs"])
        model.load_state_dict(state.get("unet", state))
        return model.eval(), state.get("null_embedding")

    theirs = {"keyframe": official(UNet, "t2v.pt", "t2v"),
              "interpolation": official(InterpolationUNet, "interpolation.pt", "interpolation"),
              "video_movq": official(MoVQ, "video_movq.pt", "video_movq")}
    ours = {kind: load_model(folder / name).model for kind, name in
            (("keyframe", "t2v.pt"), ("interpolation", "interpolation.pt"), ("video_movq", "video_movq.pt"))}
    text = TextEncoder.load("1.1", args.text_encoder, folder / "t5_projections.pt",
                            max_length=configs["text_encoder"]["tokens_length"],
                            context_dim=configs["t2v"]["configs"]["context_dim"]).encode("a red car drifting, 4k video")
    context, mask = text.context.float(), text.mask.bool()
    size, frames = args.size, args.keyframes
    diffusion = BaseDiffusion()

    def repeated(count: int):
        return context.expand(count, -1, -1), mask.expand(count, -1)

    rows = []

    def stage(name: str, official_run, our_run):
        official_seconds, official_out = _best(official_run, args.repeat)
        our_seconds, our_out = _best(our_run, args.repeat)
        rows.append({"stage": name, "official_s": round(official_seconds, 3), "ours_s": round(our_seconds, 3),
                     "ratio": round(our_seconds / official_seconds, 3)})
        print(f"{name:>14}: official {official_seconds:7.2f} s, ours {our_seconds:7.2f} s, "
              f"ours/official {our_seconds / official_seconds:.2f}", flush=True)
        return our_out

    unet, null = theirs["keyframe"]
    stage("first frame",
          lambda: diffusion.p_sample_loop_image(unet, (1, 4, size // 4, size // 4), "cpu", *repeated(1), null, 5.0),
          lambda: stages.sample_first_frame_11(ours["keyframe"], text, size, size, SeededNoise(0),
                                               guidance_scale=5.0))
    key_frame = torch.randn(4, size // 8, size // 8).clamp(-1, 1)
    keyframes = stage(
        "keyframes",
        lambda: diffusion.p_sample_loop(unet, (frames, 4, size // 8, size // 8), "cpu", *repeated(frames), null, 5.0,
                                        num_frames=frames, key_frame=key_frame.clone(), guidance_weight_image=2.0,
                                        motion_score=10, noise_augmentation=20),
        lambda: stages.sample_keyframes_11(ours["keyframe"], text, key_frame, SeededNoise(0), num_frames=frames,
                                           guidance_text=5.0, guidance_image=2.0, noise_augmentation=20,
                                           motion_score=10))
    interpolation, interpolation_null = theirs["interpolation"]
    groups = stage(
        "interpolation",
        lambda: diffusion.p_sample_loop_interpolation(interpolation, (frames - 1, 12, size // 8, size // 8), "cpu",
                                                      keyframes, *repeated(frames - 1), interpolation_null, 0.5,
                                                      skip_frames=3),
        lambda: stages.interpolate_11(ours["interpolation"], text, keyframes, SeededNoise(0), guidance_scale=0.5,
                                      skip_frames=3))
    video = stages.interleave(keyframes, groups)
    movq, _ = theirs["video_movq"]
    stage("decode",
          lambda: torch.cat([movq.decode(clip) for clip in video.chunk(video.shape[0] // 4)]),
          lambda: stages.decode_frames(ours["video_movq"], video))
    total = {"stage": "all four", "official_s": round(sum(r["official_s"] for r in rows), 3),
             "ours_s": round(sum(r["ours_s"] for r in rows), 3)}
    total["ratio"] = round(total["ours_s"] / total["official_s"], 3)
    rows.append(total)
    print(f"{'all four':>14}: official {total['official_s']:7.2f} s, ours {total['ours_s']:7.2f} s, "
          f"ours/official {total['ratio']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"size": size, "keyframes": frames, "threads": args.threads,
                                              "torch": torch.__version__, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
