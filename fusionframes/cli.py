"""``python -m fusionframes``: generate videos, convert and inspect checkpoints, check parity with the official code."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from .errors import FusionFramesError
from .models.dtypes import MODEL_DTYPE_CHOICES, TEXT_DTYPE_CHOICES
from .models.temporal.selection import CHOICES as VARIANT_CHOICES
from .releases import FPS_PASSES, LATENT_SCALE, MODEL_KINDS, MOTION_SCORES, RELEASES


def _progress_printer():
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(stage: str, step: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{stage:>14}", unit="step", leave=True)
        bar.update(step - bar.n)
        if step >= total:
            bar.close()

    return progress


def _output_is_folder(out: str) -> bool:
    """``--out`` ending in a separator: PNG frames into that folder; checked before any model loads."""
    from .io.video import check_output

    folder = out.endswith(("/", "\\"))
    check_output(out, folder=folder)
    return folder


def _load_pipeline(args: argparse.Namespace, text_encoder: Path | None, **options):
    """The release folder's models with the command line's device, dtype and placement options."""
    from .models.dtypes import model_dtype, text_dtype
    from .runtime import preflight
    from .runtime.pipeline import VideoPipeline
    from .runtime.placement import Placement

    if args.skip_preflight:
        os.environ[preflight.SKIP_VARIABLE] = "1"

    t5_dtype, t5_fp8 = text_dtype(args.text_dtype, Placement.parse(args.placement, args.device).device("text"))
    return VideoPipeline.from_folder(args.models, text_encoder, device=args.device,
                                     dtype=model_dtype(args.dtype, args.device), offload=args.offload,
                                     placement=args.placement, text_dtype=t5_dtype, text_fp8=t5_fp8, **options)


def _write_result(out: str, folder: bool, result) -> str:
    from .io.video import write_frames, write_video

    path = write_frames(out, result.frames) if folder else write_video(out, result.frames, result.fps)
    return f"{'frames' if folder else 'video'}: {path}"


class _NoFile:
    """Where ranks other than 0 send the frames of a shared video: rank 0 writes the file."""

    def append(self, frames) -> None:
        pass


def cmd_generate(args: argparse.Namespace) -> int:
    from .runtime import distributed

    if (args.prompt is None) == (args.prompts is None):
        raise FusionFramesError("give --prompt (one video; repeated: a long video) or --prompts FILE.jsonl (a video "
                                "per line), not both.")
    ranks = distributed.from_environment()
    try:
        args.device = ranks.device(args.device)
        return _generate_list(args, ranks) if args.prompts else _generate_one(args, ranks)
    finally:
        distributed.finish(ranks)


def _request(args: argparse.Namespace):
    from .io.video import load_image
    from .runtime.pipeline import VideoRequest

    return VideoRequest(
        prompt=args.prompt[0] if args.prompt else "", negative_prompt=args.negative_prompt,
        image=load_image(args.image) if args.image else None,
        last_image=load_image(args.last_image) if args.last_image else None, width=args.width, height=args.height,
        fps=args.fps,
        seed=args.seed, steps=args.steps, sampler=args.sampler, guidance=args.guidance,
        first_frame_guidance=args.first_frame_guidance, image_guidance=args.image_guidance,
        interpolation_guidance=args.interpolation_guidance, motion=args.motion,
        noise_augmentation=args.noise_augmentation, keyframes=args.keyframes, tile_size=args.tile_size,
        tile_overlap=args.tile_overlap, step_cache=args.step_cache,
    )


def _pipeline(args: argparse.Namespace, ranks=None):
    """The models; ``ranks``: the processes that share each video's work (None: this process makes its videos
    alone)."""
    text_encoder = args.text_encoder or _default_text_encoder(Path(args.models))
    temporal = {"variant": args.temporal_variant, "conv_strength": args.conv_strength,
                "attention_strength": args.attention_strength, "levels": args.temporal_levels}
    pipeline = _load_pipeline(args, text_encoder, compile=args.compile, temporal=temporal)
    if ranks is not None:
        pipeline.ranks = ranks
    return pipeline


def _generate_list(args: argparse.Namespace, ranks) -> int:
    """``--prompts FILE.jsonl``: a video per line into the folder ``--out``, the lines shared out over the ranks."""
    from .runtime.batch import RESULTS, run_batch

    if Path(args.out).suffix.lower() in (".mp4", ".gif", ".webp"):
        raise FusionFramesError(f"with --prompts, --out is the folder for the videos, got {args.out!r}.")
    request = _request(args)
    pipeline = _pipeline(args)  # each rank makes whole videos of its own
    started = time.perf_counter()
    progress = _progress_printer() if ranks.main else None
    results = run_batch(pipeline, args.prompts, args.out, request, ranks, progress)
    if ranks.main:
        counts = {status: sum(r["status"] == status for r in results) for status in ("done", "skipped", "failed")}
        print(f"{len(results)} requests on {ranks.world} process(es) in {time.perf_counter() - started:.1f} s: "
              f"{counts['done']} made, {counts['skipped']} already there, {counts['failed']} failed")
        for result in results:
            if result["status"] == "failed":
                print(f"  line {result['index'] + 1} ({result['out']}): {result['error']}")
        print(f"results: {Path(args.out) / RESULTS}")
    return 0


def _generate_one(args: argparse.Namespace, ranks) -> int:
    """One video (over several ranks: its decoded clips, and with --split-guidance its guidance branches, shared
    out; rank 0 writes it)."""
    folder = _output_is_folder(args.out)
    request = _request(args)
    pipeline = _pipeline(args, replace(ranks, guidance=args.split_guidance))
    started = time.perf_counter()
    progress = _progress_printer() if ranks.main else None

    def run(stream=None):
        if len(args.prompt) > 1 or args.loop:
            return pipeline.generate_segments(request, args.prompt, progress=progress, loop=args.loop,
                                              stream=stream)
        return pipeline.generate(request, progress=progress, stream=stream)

    if not ranks.main:
        run(None if folder else _NoFile())
        return 0
    if folder:
        result = run()
        written = _write_result(args.out, folder, result)
    else:  # frames go to the encoder clip by clip: memory does not grow with the video's length
        from .io.video import VideoStream
        from .releases import fps_for

        with VideoStream(args.out, fps_for(request.resolved(pipeline.release).passes)) as stream:
            result = run(stream)
        written = f"video: {stream.path}"
    count, height, width = result.latents.shape[0], *(s * LATENT_SCALE for s in result.latents.shape[-2:])
    print(f"{count} frames {width}x{height} at {result.fps:g} fps, release {pipeline.release}, "
          f"{time.perf_counter() - started:.1f} s")
    print(written)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    import torch

    from .io.video import read_frames, read_video
    from .runtime.pipeline import VideoRequest, detect_release

    folder = _output_is_folder(args.out)
    video = read_frames(args.video) if Path(args.video).is_dir() else read_video(args.video)
    frames = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255
    text_encoder = None
    if detect_release(Path(args.models)) == "1.1":  # its interpolation model is text-conditioned
        if args.prompt is None:
            raise FusionFramesError("the 1.1 interpolation model needs the prompt of the video: pass --prompt.")
        text_encoder = args.text_encoder or _default_text_encoder(Path(args.models))
    pipeline = _load_pipeline(args, text_encoder)
    request = VideoRequest(prompt=args.prompt or "", fps=args.fps, seed=args.seed, steps=args.steps,
                           sampler=args.sampler, interpolation_guidance=args.interpolation_guidance)
    started = time.perf_counter()
    result = pipeline.interpolate_video(frames, request, args.source_fps, progress=_progress_printer())
    written = _write_result(args.out, folder, result)
    print(f"{frames.shape[0]} -> {result.frames.shape[0]} frames at {result.fps:g} fps, release {pipeline.release}, "
          f"{time.perf_counter() - started:.1f} s")
    print(written)
    return 0


def _default_text_encoder(models: Path) -> Path:
    for candidate in (models / "text_encoder", models.parent / "text_encoder"):
        if candidate.is_dir():
            return candidate
    raise FusionFramesError(f"no text encoder given and none found at {models / 'text_encoder'} or "
                            f"{models.parent / 'text_encoder'}: pass --text-encoder (the google/flan-ul2 folder).")


def cmd_convert(args: argparse.Namespace) -> int:
    from .io.checkpoints import convert, inspect

    count = convert(args.source, args.destination)
    info = inspect(args.destination)
    print(f"wrote {args.destination}: {count} tensors, release {info.release}, {info.kind}; verified tensor by tensor")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from .io.checkpoints import official_manifest

    sys.stdout.write("\n".join(official_manifest(args.release, args.model)) + "\n")
    return 0


def cmd_check_parity(args: argparse.Namespace) -> int:
    from .tools.parity.fixtures import list_cases
    from .tools.parity.report import run_all

    root = Path(args.fixtures)
    if not (root / "cases").is_dir():
        raise FusionFramesError(f"{root} is not a fixture directory (no cases/ folder).")
    names = args.case or list_cases(root)
    return 0 if run_all(root, names, sys.stdout) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .tools.toy import toy_notice, trained_toy_models

    toy = trained_toy_models() if args.release == "1.1" and not args.random_weights else None
    if toy is not None:
        from .tools.toy.world import parse_caption

        lines = toy_notice()
        for prompt in args.prompt or []:
            try:
                parse_caption(prompt)
            except ValueError as error:
                raise FusionFramesError(f"{error} The toy models know only that grammar; --random-weights runs the "
                                        "untrained demo models on any prompt.") from None
        root = toy
    else:
        from .tools.demo_models import create_demo_models

        root = create_demo_models(Path(args.models_dir))
        lines = ["DEMO MODELS: tiny networks with RANDOM weights. The video below is noise, not a real generation.",
                 "Put the official checkpoints in place and use 'generate' for real videos (see README)."]
    print("!" * 110)
    for line in lines:
        print(f"!! {line}")
    print("!" * 110, flush=True)
    args.models = str(root / ("k11" if args.release == "1.1" else "k10"))
    args.text_encoder = str(root / "text_encoder")
    return cmd_generate(args)


def cmd_train_temporal(args: argparse.Namespace) -> int:
    from .tools.training import TrainingConfig, train_temporal

    config = TrainingConfig(
        checkpoint=Path(args.checkpoint), videos=Path(args.videos), output=Path(args.out), variant=args.variant,
        fresh=args.fresh, movq=Path(args.movq) if args.movq else None,
        text_encoder=Path(args.text_encoder) if args.text_encoder else None,
        projections=Path(args.projections) if args.projections else None, prompt=args.prompt, frames=args.frames,
        frame_stride=args.frame_stride, size=args.size, steps=args.steps, learning_rate=args.lr,
        batch_clips=args.batch, seed=args.seed, device=args.device, save_every=args.save_every,
    )

    def report(step: int, total: int, loss: float) -> None:
        if step == 1 or step % args.log_every == 0 or step == total:
            print(f"step {step}/{total}  loss {loss:.5f}", flush=True)

    started = time.perf_counter()
    result = train_temporal(config, on_step=report)
    for reason in result.skipped_videos:
        print(f"skipped: {reason}")
    print(f"trained {result.trainable_parameters:,} {result.variant} parameters in "
          f"{time.perf_counter() - started:.1f} s; checkpoint: {result.checkpoint}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .tools.bench import run_from_args

    return run_from_args(args)


def cmd_estimate_memory(args: argparse.Namespace) -> int:
    from .tools.memory_estimate import run

    return run(args)


SKIP_HELP = ("run stages even when their memory estimate exceeds what the device has free (the estimate is "
             "conservative; requests beyond 4 TiB are refused anyway)")


def _generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", action="append",
                        help="what the video shows; repeated (1.1): a long video of one segment per prompt, each "
                             "continuing from the last keyframe of the one before")
    parser.add_argument("--prompts", default=None, metavar="FILE.jsonl",
                        help="many videos: one JSON object of settings per line (prompt, seed, fps, image, out, ...; "
                             "the other options are the defaults); --out is their folder; under torchrun the lines "
                             "are shared out over the processes; videos that exist are skipped (a killed run resumes)")
    parser.add_argument("--split-guidance", action="store_true",
                        help="under torchrun, one video: its guidance branches (1.0: 2, 1.1: 3) on different "
                             "processes, faster; the frames may differ slightly from one process's (kernels for "
                             "smaller batches; without it the processes share the decoding only, and the video is "
                             "identical)")
    parser.add_argument("--loop", action="store_true",
                        help="1.1: close the video into a seamless loop (interpolated from the last keyframe back to "
                             "the first; needs --fps medium or high)")
    parser.add_argument("--negative-prompt", default=None,
                        help="1.0 only: replaces the null context; empty = none (1.1 ignores negative prompts)")
    parser.add_argument("--image", default=None, help="first frame for image-to-video (1.1)")
    parser.add_argument("--last-image", default=None,
                        help="1.1: the frame the keyframes end on (of a long video: its last segment), held at every "
                             "sampling step; not an official feature")
    parser.add_argument("--width", type=int, default=512, help="multiple of 64")
    parser.add_argument("--height", type=int, default=512, help="multiple of 64")
    parser.add_argument("--fps", choices=list(FPS_PASSES), default="low",
                        help="interpolation passes: low 0, medium 1, high 2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per sampling stage (default: the official 50, and 10 for 1.1 interpolation); "
                             "1.1's official sampler takes only its own counts")
    parser.add_argument("--sampler", choices=["official", "ddim", "dpmpp_2m"], default="official",
                        help="official (default, exactly the official DDPM) or a faster, non-official option")
    parser.add_argument("--guidance", type=float, default=None,
                        help="weight of the prompt: 1.0's classifier-free guidance, 1.1's prompt weight (official 5)")
    parser.add_argument("--first-frame-guidance", type=float, default=None,
                        help="1.1 text-to-video: guidance of the generated first frame (official 5)")
    parser.add_argument("--image-guidance", type=float, default=None,
                        help="1.1: weight of the first frame (official 2)")
    parser.add_argument("--interpolation-guidance", type=float, default=None,
                        help="interpolation guidance (official 0.25 for 1.0, 0.5 for 1.1)")
    parser.add_argument("--motion", choices=list(MOTION_SCORES), default=None,
                        help="1.1 motion score: low 1, medium 10 (official), high 50, extreme 100")
    parser.add_argument("--noise-augmentation", type=int, default=None,
                        help="1.1: noise level added to the first-frame latent, 0-999 (official 20)")
    parser.add_argument("--keyframes", type=int, default=None, help="number of keyframes (default: 15 / 12)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=MODEL_DTYPE_CHOICES, default="auto",
                        help="U-Net weights: auto = bf16 on CUDA (fp16 where bf16 is missing), fp32 on the CPU; "
                             "MoVQ stays fp32 as in the official code")
    parser.add_argument("--offload", action="store_true", help="keep models on the CPU between their stages")
    parser.add_argument("--skip-preflight", action="store_true", help=SKIP_HELP)
    parser.add_argument("--placement", default=None,
                        help="per-stage devices, e.g. keyframe=cuda:0,interpolation=cuda:1,movq=cuda:1,text=cpu "
                             "(roles: text, keyframe, interpolation, movq; the rest on --device)")
    parser.add_argument("--text-dtype", choices=TEXT_DTYPE_CHOICES, default="auto",
                        help="T5 weights: auto = bf16 on GPUs with bf16, else fp32 (never fp16: FLAN-UL2 overflows "
                             "there); fp8 = float8 weights, half of bf16's memory")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the U-Nets (minutes of compiling first; pays off for long runs)")
    parser.add_argument("--temporal-variant", choices=VARIANT_CHOICES, default="auto",
                        help="the keyframe model's temporal blocks (Temporal Block Selector): auto = the checkpoint's")
    parser.add_argument("--conv-strength", type=float, default=1.0,
                        help="temporal convolution blocks: 0 off, 1 as trained (default), up to 2")
    parser.add_argument("--attention-strength", type=float, default=1.0,
                        help="temporal attention blocks: 0 off, 1 as trained (default), up to 2")
    parser.add_argument("--temporal-levels", default="all",
                        help="U-Net levels whose temporal blocks act: all, none or numbers like 1,2,3")
    parser.add_argument("--tile-size", type=int, default=0,
                        help="decode in spatial tiles of this many pixels (0: whole frames; frames that do not fit "
                             "are tiled automatically)")
    parser.add_argument("--tile-overlap", type=int, default=32, help="pixels shared by neighbouring tiles")
    parser.add_argument("--step-cache", type=int, default=0, metavar="N",
                        help="not official: the U-Nets compute their deep features every N steps and reuse them in "
                             "between (fewer full passes, a small error: see the README); 0 = off")
    parser.add_argument("--out", required=True,
                        help="output video (.mp4, .gif or .webp), or a folder ending in '/' for lossless PNG frames "
                             "(frame_00000.png, ...)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fusionframes", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="text (or image) to video with the official models")
    generate.add_argument("--models", required=True, help="folder with the release's checkpoint files")
    generate.add_argument("--text-encoder", default=None, help="google/flan-ul2 folder (default: MODELS/text_encoder)")
    _generation_options(generate)
    generate.set_defaults(run=cmd_generate)

    interpolate = commands.add_parser("interpolate", help="make an existing video smoother: 3 new frames between "
                                                          "every two, once (--fps medium) or twice (high)")
    interpolate.add_argument("--models", required=True, help="folder with the release's checkpoint files")
    interpolate.add_argument("--text-encoder", default=None,
                             help="google/flan-ul2 folder, 1.1 only (default: MODELS/text_encoder)")
    interpolate.add_argument("--video", required=True,
                             help="the video (.mp4, .gif, .webp) or a folder of frame_*.png; sides multiples of 8")
    interpolate.add_argument("--prompt", default=None, help="what the video shows (1.1: required)")
    interpolate.add_argument("--fps", choices=["medium", "high"], default="medium", help="passes: medium 1, high 2")
    interpolate.add_argument("--source-fps", type=float, default=24.0, help="frame rate of the input video")
    interpolate.add_argument("--seed", type=int, default=0)
    interpolate.add_argument("--steps", type=int, default=None, help="steps per pass (default: official 50 / 10)")
    interpolate.add_argument("--sampler", choices=["official", "ddim", "dpmpp_2m"], default="official")
    interpolate.add_argument("--interpolation-guidance", type=float, default=None,
                             help="official 0.25 for 1.0, 0.5 for 1.1")
    interpolate.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    interpolate.add_argument("--dtype", choices=MODEL_DTYPE_CHOICES, default="auto")
    interpolate.add_argument("--text-dtype", choices=TEXT_DTYPE_CHOICES, default="auto")
    interpolate.add_argument("--offload", action="store_true")
    interpolate.add_argument("--skip-preflight", action="store_true", help=SKIP_HELP)
    interpolate.add_argument("--placement", default=None)
    interpolate.add_argument("--out", required=True,
                             help="output video (.mp4, .gif, .webp) or a folder ending in '/' for PNG frames")
    interpolate.set_defaults(run=cmd_interpolate)

    demo = commands.add_parser("demo", help="generate with the tiny toy models trained on the toy world (1.1), or "
                                            "with tiny random demo models (1.0, or --random-weights: noise!)")
    demo.add_argument("--models-dir", default="demo_models", help="where the random demo models are written")
    demo.add_argument("--random-weights", action="store_true",
                      help="the random demo models even where trained toy models exist")
    demo.add_argument("--release", choices=RELEASES, default="1.1")
    _generation_options(demo)
    demo.set_defaults(run=cmd_demo)

    convert = commands.add_parser("convert", help="write an official checkpoint as verified safetensors")
    convert.add_argument("source")
    convert.add_argument("destination")
    convert.set_defaults(run=cmd_convert)

    keys = commands.add_parser("keys", help="print the state-dict manifest of a model at the official size")
    keys.add_argument("--release", choices=RELEASES, required=True)
    keys.add_argument("--model", choices=MODEL_KINDS, required=True)
    keys.set_defaults(run=cmd_keys)

    train = commands.add_parser("train-temporal", help="train a keyframe model's temporal blocks on video clips "
                                                        "(spatial U-Net frozen)")
    train.add_argument("--checkpoint", required=True, help="keyframe checkpoint (kandinsky_video.pt / t2v.pt)")
    train.add_argument("--videos", required=True, help="folder of .mp4/.gif/.webp clips (captions: clip.txt beside)")
    train.add_argument("--out", required=True, help="checkpoint to write (same layout, loads like the original)")
    train.add_argument("--variant", default="auto", help="auto (what the checkpoint holds) or one of "
                       "Conv1dAttn1dBlocks, Conv1dAttn3dBlocks, Conv3dAttn1dBlocks, Conv1dAttn1dLayers")
    train.add_argument("--fresh", action="store_true", help="start untrained temporal blocks of the variant")
    train.add_argument("--movq", default=None, help="image MoVQ (default: movq.pt beside the checkpoint)")
    train.add_argument("--text-encoder", default=None, help="google/flan-ul2 folder; without it: null context")
    train.add_argument("--projections", default=None, help="T5 projections (default: the release's file)")
    train.add_argument("--prompt", default=None, help="caption of videos without a .txt file")
    train.add_argument("--frames", type=int, default=8, help="frames per training clip")
    train.add_argument("--frame-stride", type=int, default=1, help="take every n-th video frame")
    train.add_argument("--size", type=int, default=256, help="square frame side in pixels")
    train.add_argument("--steps", type=int, default=1000)
    train.add_argument("--lr", type=float, default=1e-4)
    train.add_argument("--batch", type=int, default=1, help="clips per step")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    train.add_argument("--log-every", type=int, default=10)
    train.add_argument("--save-every", type=int, default=0, help="also write the checkpoint every n steps")
    train.set_defaults(run=cmd_train_temporal)

    from .tools.toy import cli as toy_cli

    toy_train = commands.add_parser("toy-train", help="train the tiny models of the toy world (resumable; CPU)")
    toy_cli.add_train_arguments(toy_train)
    toy_train.set_defaults(run=toy_cli.run_train)
    toy_eval = commands.add_parser("toy-eval", help="generate toy-world videos and measure colour, shape, motion, "
                                                    "interpolation and stability (JSON + contact sheet)")
    toy_cli.add_eval_arguments(toy_eval)
    toy_eval.set_defaults(run=toy_cli.run_eval)

    parity = commands.add_parser("check-parity", help="run every case of a golden fixture directory")
    parity.add_argument("fixtures", help="directory with cases/ and models/ (e.g. ../shared/golden)")
    parity.add_argument("--case", action="append", help="only this case (repeatable)")
    parity.set_defaults(run=cmd_check_parity)

    from .tools.bench import add_arguments as add_bench_arguments

    bench = commands.add_parser("bench", help="time every stage with random weights: seconds, peak memory, FLOPs, MFU")
    add_bench_arguments(bench)
    bench.set_defaults(run=cmd_bench)

    from .tools.memory_estimate import add_arguments as add_estimate_arguments

    estimate = commands.add_parser("estimate-memory", help="peak GPU memory of every stage and workflow, estimated "
                                                           "on the CPU by running the stages on the meta device")
    add_estimate_arguments(estimate)
    estimate.set_defaults(run=cmd_estimate_memory)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FusionFramesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
