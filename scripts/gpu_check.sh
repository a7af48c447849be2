#!/usr/bin/env bash
# Everything that needs a GPU, in at most 9 minutes on one H100/H200, into one JSON file:
#   1. bench at the official size, 1.1 medium fps: reference vs fast mode, per-stage time, peak memory, MFU
#   2. the same with torch.compile (fast mode)
#   3. bf16 (and fp32) drift of every U-Net forward case of the golden fixtures, on the GPU
#   4. torchrun with 2 processes (on one GPU: through gloo) for one video, against one process
#
#   bash scripts/gpu_check.sh [OUT.json]          # on a CUDA machine (default OUT: gpu_check.json)
#   bash scripts/gpu_check.sh --cpu [OUT.json]    # the same steps at the demo size on the CPU (tested in make test)
#
# PYTHON (default: .venv/bin/python, else python3) must have torch and the project's requirements; the golden
# fixtures come from FUSIONFRAMES_GOLDEN (default ../shared/golden). A step that fails or runs out of its time is
# recorded with its exit code and the end of its log; the other steps still run.
set -u
cd "$(dirname "$0")/.."
MODE=gpu
if [ "${1:-}" = "--cpu" ]; then MODE=cpu; shift; fi
OUT=${1:-gpu_check.json}
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
GOLDEN=${FUSIONFRAMES_GOLDEN:-../shared/golden}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$MODE" = gpu ]; then
    # seconds per step; on an H200 the bench took 48 s and compiling ran past 120 s (docs/performance_notes.md)
    DEVICE=cuda; SIZE=(--size official); STEPS=3; LIMITS=(120 240 40 90)
else
    DEVICE=cpu; SIZE=(--size small --threads 1); STEPS=1; LIMITS=(300 0 120 300)
    export OMP_NUM_THREADS=1
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, record its exit code, time and log tail
    local name=$1 limit=$2; shift 2
    local started=$SECONDS
    if [ "$limit" = 0 ]; then
        echo "{\"step\": \"$name\", \"rc\": null, \"skipped\": \"not run in --$MODE mode\"}" >> "$WORK/steps.jsonl"
        return
    fi
    timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    "$PY" - "$name" "$rc" "$((SECONDS - started))" "$WORK/$name.log" >> "$WORK/steps.jsonl" <<'EOF'
import json, sys
name, rc, seconds, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tail = open(log, errors="replace").read()[-3000:]
print(json.dumps({"step": name, "rc": rc, "seconds": seconds, "timed_out": rc == 124, "log_tail": tail}))
EOF
}

"$PY" -c "import torch, einops, safetensors, kornia, imageio, transformers" > "$WORK/imports.log" 2>&1 || {
    echo "missing packages for $PY:"; cat "$WORK/imports.log"; exit 2; }
"$PY" -c "from fusionframes.tools.demo_models import create_demo_models; create_demo_models('$WORK/demo', seed=0)"

step bench "${LIMITS[0]}" "$PY" -m fusionframes bench "${SIZE[@]}" --device "$DEVICE" --release 1.1 --fps medium \
    --steps "$STEPS" --skip-text --out "$WORK/bench.json"
step bench_compile "${LIMITS[1]}" "$PY" -m fusionframes bench "${SIZE[@]}" --device "$DEVICE" --release 1.1 \
    --fps low --steps 2 --modes fast --compile --skip-text --out "$WORK/bench_compile.json"
step drift "${LIMITS[2]}" "$PY" -m fusionframes.tools.parity.drift "$GOLDEN" --device "$DEVICE" --dtypes fp32,bf16 \
    --out "$WORK/drift.json"
VIDEO=(generate --models "$WORK/demo/k11" --text-encoder "$WORK/demo/text_encoder" --prompt "a red car"
       --width 64 --height 64 --keyframes 4 --sampler ddim --steps 2 --fps medium --seed 5 --device "$DEVICE")
{   # one process, two, two with the guidance branches split (timeout runs commands, not functions)
    printf '%q ' "$PY" -m fusionframes "${VIDEO[@]}" --out "$WORK/one/"; printf '&& '
    printf '%q ' "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m fusionframes "${VIDEO[@]}" \
        --out "$WORK/two/"
    printf '&& '
    printf '%q ' "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m fusionframes "${VIDEO[@]}" --split-guidance \
        --out "$WORK/split/"
} > "$WORK/torchrun.sh"
step torchrun "${LIMITS[3]}" bash "$WORK/torchrun.sh"

"$PY" - "$WORK" "$OUT" "$MODE" <<'EOF'
import json, pathlib, platform, sys, time
import numpy as np
import torch
from fusionframes.io.video import read_frames

work, out, mode = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
def load(name):
    path = work / name
    return json.loads(path.read_text()) if path.exists() else None
report = {"mode": mode, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
          "torch": torch.__version__,
          "device": torch.cuda.get_device_name() if mode == "gpu" and torch.cuda.is_available() else "cpu",
          "steps": [json.loads(line) for line in (work / "steps.jsonl").read_text().splitlines()],
          "bench": load("bench.json"), "bench_compile": load("bench_compile.json"), "drift": load("drift.json")}
if all((work / name).is_dir() for name in ("one", "two", "split")):
    one, two, split = (read_frames(work / name).astype(int) for name in ("one", "two", "split"))
    report["torchrun"] = {"frames": int(one.shape[0]), "two_ranks_identical": bool(np.array_equal(one, two)),
                          "split_guidance_max_diff": int(np.abs(one - split).max()),
                          "split_guidance_mean_diff": float(np.abs(one - split).mean())}
out.write_text(json.dumps(report, indent=1) + "\n")
failed = [s["step"] for s in report["steps"] if s.get("rc") not in (0, None)]
print(f"gpu_check ({mode}): {len(report['steps'])} steps, failed: {', '.join(failed) or 'none'}; wrote {out}")
sys.exit(1 if failed else 0)
EOF
