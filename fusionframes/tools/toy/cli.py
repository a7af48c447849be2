"""The ``toy-train`` and ``toy-eval`` commands (``python -m fusionframes``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import RECORD, TOY_MODELS


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from .train import STAGES

    parser.add_argument("--stage", choices=[*STAGES, "all"], default="all",
                        help="one stage, or all of them in order (stages finished before are skipped)")
    parser.add_argument("--models", default=TOY_MODELS, help="the models folder (read and written)")
    parser.add_argument("--work", default="out/toy_training", help="the resumable training state")
    parser.add_argument("--steps", type=int, default=None, help="steps of the stage (default: its plan)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="stop (resumably) after this long; the same command continues")
    parser.add_argument("--variant", default=None,
                        help="with --stage keyframes: train this temporal variant (Conv1dAttn1dBlocks, "
                             "Conv1dAttn3dBlocks, Conv3dAttn1dBlocks, Conv1dAttn1dLayers) or the 'none' baseline "
                             "into <models>/k11/variants/<variant>/ (the paper's Table 1 in miniature)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=25)


def run_train(args: argparse.Namespace) -> int:
    """Train the stages not yet recorded in ``<models>/training.json`` (one stage: train it, recorded or not)."""
    from .train import STAGES, train_stage

    models, work = Path(args.models), Path(args.work)
    record_path = models / RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    stages = STAGES if args.stage == "all" else (args.stage,)
    if args.variant is not None and args.stage != "keyframes":
        print("error: --variant goes with --stage keyframes", file=sys.stderr)
        return 2
    started = time.monotonic()
    for stage in stages:
        name = stage if args.variant is None else f"{stage}/{args.variant}"
        if args.stage == "all" and name in record:
            print(f"{name}: trained before ({record[name]['steps']} steps, {record[name]['seconds']:.0f} s)")
            continue
        left = None if args.time_limit is None else args.time_limit - (time.monotonic() - started)
        if left is not None and left <= 0:
            print("time limit reached; the same command continues")
            return 0

        def report(name: str, step: int, total: int, loss: float) -> None:
            if step % args.log_every == 0 or step == total:
                print(f"{name} {step}/{total} loss {loss:.5f}", flush=True)

        result = train_stage(stage, models, work, steps=args.steps, seed=args.seed, time_limit=left, on_step=report,
                             variant=args.variant)
        if not result.done:
            print(f"{name}: stopped at step {result.steps} (time limit); the same command continues")
            return 0
        tail = result.losses[-50:]
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}  # another stage may have ended
        record[name] = {"steps": result.steps, "seconds": round(result.seconds), "seed": args.seed,
                        "final_loss": sum(tail) / len(tail), "threads": torch.get_num_threads()}
        partial = record_path.with_name(f".{RECORD}.{name.replace('/', '.')}.partial")
        partial.write_text(json.dumps(record, indent=1) + "\n")
        partial.replace(record_path)
        print(f"{name}: {result.steps} steps in {result.seconds:.0f} s, final loss {record[name]['final_loss']:.5f}; "
              f"written to {models}")
    return 0


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=TOY_MODELS, help="the toy models folder (k11/ and text_encoder/ in it)")
    parser.add_argument("--out", default="out/toy_eval", help="folder for toy_eval.json and toy_eval.png")
    parser.add_argument("--prompt", action="append", help="prompts of the grammar (default: a fixed set covering "
                                                          "every colour, shape and motion)")
    parser.add_argument("--seeds", default="1,2", help="comma-separated seeds")
    parser.add_argument("--fps", choices=["low", "medium", "high"], default="medium")
    parser.add_argument("--keyframes", type=int, default=8)
    parser.add_argument("--variant", default=None,
                        help="evaluate a trained variant (<models>/k11/variants/<variant>/t2v.pt) instead of the main "
                             "keyframe model; 'none': the baseline, its temporal blocks off")
    parser.add_argument("--interpolation-fit", action="store_true",
                        help="instead: the interpolation U-Net's x0 error and v gains per timestep on the world's own "
                             "frames (written to <out>/interpolation_fit.json)")


def run_eval(args: argparse.Namespace) -> int:
    from ...models.temporal.selection import trained_variant_name
    from .evaluate import PROMPTS, run_eval
    from .train import BASELINE

    models = Path(args.models)
    if args.interpolation_fit:
        from .diagnose import run_fit

        rows = run_fit(models)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "interpolation_fit.json").write_text(json.dumps(rows, indent=1) + "\n")
        for row in rows:
            print("t {t:4d}  x0 error {x0_mse:.4f} (blend {blend_mse:.5f})  v gains: x_t {gain_x_t:.3f} of "
                  "{ideal_gain_x_t:.3f}, blend {gain_blend:.3f} of {ideal_gain_blend:.3f}; residual "
                  "{residual_variance:.4f}".format(**row))
        return 0
    seeds = tuple(int(seed) for seed in args.seeds.split(","))
    keyframe = None if args.variant is None else Path(trained_variant_name((models / "k11" / "t2v.pt").as_posix(),
                                                                          args.variant))
    if keyframe is not None and not keyframe.is_file():
        print(f"error: no trained variant {args.variant!r} at {keyframe}; train it with "
              f"'python -m fusionframes toy-train --stage keyframes --variant {args.variant}'", file=sys.stderr)
        return 2
    temporal = {"conv_strength": 0.0, "attention_strength": 0.0} if args.variant == BASELINE else None
    result = run_eval(models / "k11", models / "text_encoder", Path(args.out), tuple(args.prompt or PROMPTS), seeds,
                      args.fps, args.keyframes, temporal=temporal, keyframe=keyframe)
    print(json.dumps(result["summary"], indent=1))
    print(f"details: {Path(args.out) / 'toy_eval.json'}; contact sheet: {Path(args.out) / 'toy_eval.png'}")
    return 0
