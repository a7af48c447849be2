"""What the step cache saves and what it costs: the same request with and without it, on the project's tiny demo
models (or a release folder you give), printing the full U-Net passes, the time and the difference in the video.

    python -m fusionframes.tools.step_cache_bench --release 1.1 --size 128 --intervals 2,3,5

The demo models have random weights, so the error is that of chaotic random networks (an upper bound, not what a
trained model shows); the saved passes and the time are what any model gets.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ..models.unet.skeleton import KandinskyUNet
from ..runtime.pipeline import VideoPipeline, VideoRequest
from .demo_models import create_demo_models


def _count_passes(pipeline: VideoPipeline) -> dict[str, int]:
    """Counts, for every U-Net, its calls and the calls that ran its deep levels (hooks on its first two levels)."""
    counts = {"calls": 0, "deep": 0}
    for kind in ("keyframe", "interpolation"):
        unet = pipeline.models[kind].model
        assert isinstance(unet, KandinskyUNet)
        unet.down_samples[0].register_forward_hook(lambda *_: counts.__setitem__("calls", counts["calls"] + 1))
        unet.down_samples[1].register_forward_hook(lambda *_: counts.__setitem__("deep", counts["deep"] + 1))
    return counts


def run(release: str, size: int, intervals: list[int], models: Path | None, fps: str, seed: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as scratch:
        if models is None:
            demo = create_demo_models(Path(scratch), seed=0)
            models, text = demo / ("k11" if release == "1.1" else "k10"), demo / "text_encoder"
        else:
            text = models / "text_encoder"
        pipeline = VideoPipeline.from_folder(models, text)
        counts = _count_passes(pipeline)
        base = VideoRequest(prompt="a red car drifting, 4k video", width=size, height=size, fps=fps, seed=seed)
        rows, reference = [], None
        for interval in [0, *intervals]:
            counts.update(calls=0, deep=0)
            started = time.perf_counter()
            result = pipeline.generate(VideoRequest(**{**base.__dict__, "step_cache": interval}))
            seconds = time.perf_counter() - started
            if reference is None:
                reference = result
            frames = (result.frames - reference.frames).abs()
            mse = float(((result.frames - reference.frames) ** 2).mean())
            rows.append({"interval": interval, "unet_calls": counts["calls"], "full_passes": counts["deep"],
                         "seconds": round(seconds, 2), "latent_max_abs": float((result.latents - reference.latents)
                                                                               .abs().max()),
                         "frame_mean_abs_8bit": round(float(frames.mean()) * 255, 3),
                         "psnr_db": None if mse == 0 else round(10 * torch.log10(torch.tensor(1 / mse)).item(), 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusionframes.tools.step_cache_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--release", choices=["1.0", "1.1"], default="1.1")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--fps", choices=["low", "medium", "high"], default="medium")
    parser.add_argument("--intervals", default="2,3,5", help="comma-separated step cache intervals to compare")
    parser.add_argument("--models", default=None, help="a release folder (default: the tiny demo models)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.release, args.size, [int(i) for i in args.intervals.split(",") if i],
               Path(args.models) if args.models else None, args.fps, args.seed)
    for row in rows:
        label = "off" if row["interval"] == 0 else f"every {row['interval']}"
        print(f"step cache {label:>8}: {row['full_passes']:4d} full passes of {row['unet_calls']:4d} U-Net calls, "
              f"{row['seconds']:6.1f} s; frames {row['frame_mean_abs_8bit']:.2f}/255 from the full run on average "
              f"(PSNR {row['psnr_db'] if row['psnr_db'] is not None else 'inf'} dB)")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
