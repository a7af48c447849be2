"""The main job (`make demo`): a real ComfyUI with this pack generates a video from a prompt through the HTTP API.

It installs ComfyUI 0.3.75 and the pack into .host/ (first run only), puts models in the server's model folders,
queues the shipped 1.1 text-to-video workflow through POST /prompt and prints the MP4 it wrote as its last line.
Real weights are used when they are in place (.host/base/models/fusionframes/kandinsky_video_1_1/ and
.host/base/models/text_encoders/flan-ul2/); otherwise the tiny toy models trained on the project's synthetic world
(toy_models/) are installed there; the workflow's prompt ("a red circle moving right") is one of their grammar.
Without trained toy models, tiny demo models with random weights are created, and the video is noise.

    python scripts/comfyui_demo.py [--keep-running] [--port 8188] [--prompt "..."]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fusionframes.tools.comfy_host import BASE_DIR, HOST_DIR, ComfyServer, ensure_host, execution_error, output_items  # noqa: E402
from fusionframes.tools.demo_models import create_demo_models  # noqa: E402
from fusionframes.tools.toy import toy_notice, trained_toy_models  # noqa: E402
from fusionframes.tools.toy.train import KEYFRAMES as TOY_KEYFRAMES  # noqa: E402
from fusionframes.tools.toy.train import VIDEO_SIZE as TOY_SIZE  # noqa: E402

WORKFLOW = REPO / "workflows" / "api" / "fusionframes_1_1_text_to_video.json"
RELEASE_DIR = "kandinsky_video_1_1"
REAL_FILES = ("t2v.pt", "interpolation.pt", "movq.pt", "video_movq.pt", "t5_projections.pt")
DEMO_MARKER = "DEMO_MODELS_RANDOM_WEIGHTS.txt"
TOY_MARKER = "TOY_MODELS_SYNTHETIC_WORLD.txt"
DEMO_SIZE = 128


def real_weights_present(base: Path) -> bool:
    folder = base / "models" / "fusionframes" / RELEASE_DIR
    return (not (folder / DEMO_MARKER).exists() and not (folder / TOY_MARKER).exists()
            and all((folder / name).is_file() for name in REAL_FILES)
            and (base / "models" / "text_encoders" / "flan-ul2" / "config.json").is_file())


def install_demo_models(base: Path) -> None:
    """Random demo models where a release's folder is empty; for 1.1 the trained toy models instead, when they are
    in the repository (they replace demo or older toy files put there by an earlier run, never other files)."""
    demo = create_demo_models(HOST_DIR / "demo_models")
    toy = trained_toy_models()
    for source, target in (("k10", "kandinsky_video_1_0"), ("k11", RELEASE_DIR)):
        folder = base / "models" / "fusionframes" / target
        ours = (folder / DEMO_MARKER).exists() or (folder / TOY_MARKER).exists()
        if source == "k11" and toy is not None and (ours or not folder.exists()):
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(toy / "k11", folder)
            (folder / TOY_MARKER).write_text("Tiny models trained on the project's synthetic world (toy_models/), "
                                             "installed by `make demo`: prompts of the toy grammar only.\n")
        elif not folder.exists():
            shutil.copytree(demo / source, folder)
            (folder / DEMO_MARKER).write_text("Tiny models with random weights made by `make demo`: output is noise.\n")
    text = base / "models" / "text_encoders" / "flan-ul2"
    if not text.exists():  # the toy models were trained on the demo models' tiny T5 (the same files)
        shutil.copytree(demo / "text_encoder", text)


def shout(lines: list[str]) -> None:
    print("!" * 90)
    for line in lines:
        print(f"!! {line}")
    print("!" * 90, flush=True)


def demo_graph(prompt: str | None, models: str) -> dict:
    """The shipped workflow with ``prompt`` (None: its own), at the size the ``models`` ("real", "toy" or "random")
    are made for."""
    graph = json.loads(WORKFLOW.read_text())
    for node in graph.values():
        if node["class_type"] == "FusionFramesTextEncode" and prompt is not None:
            node["inputs"]["prompt"] = prompt
        if node["class_type"] == "FusionFramesKeyframeSampler" and models == "toy":
            node["inputs"].update(width=TOY_SIZE, height=TOY_SIZE, keyframes=TOY_KEYFRAMES)
        elif node["class_type"] == "FusionFramesKeyframeSampler" and models == "random":
            node["inputs"].update(width=DEMO_SIZE, height=DEMO_SIZE)
    return graph


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=None, help="default: the workflow's, a prompt of the toy grammar")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--keep-running", action="store_true",
                        help="leave the server running afterwards (open its URL in a browser; Ctrl-C stops it)")
    args = parser.parse_args()

    started = time.perf_counter()
    print("==> installing ComfyUI 0.3.75 and the pack into .host/ (first run takes a few minutes)", flush=True)
    ensure_host()
    demo = not real_weights_present(BASE_DIR)
    models = "real" if not demo else "toy" if trained_toy_models() is not None else "random"
    where = [f"For real videos put the 1.1 files in .host/base/models/fusionframes/{RELEASE_DIR}/ and",
             "google/flan-ul2 in .host/base/models/text_encoders/flan-ul2/ (see README)."]
    if models == "toy":
        shout(["No official weights found in .host/base/models: using the TOY MODELS (toy_models/).",
               *toy_notice()[:-1], *where])
    elif models == "random":
        shout(["No official weights found in .host/base/models: using TINY DEMO MODELS WITH RANDOM WEIGHTS.",
               "The video will be NOISE. It shows that the whole ComfyUI pipeline runs, not what the model can do.",
               *where])
    server = ComfyServer(base=BASE_DIR, port=args.port, prepare=install_demo_models if demo else None)
    server.start()
    try:
        print(f"==> ComfyUI is up at {server.url} ({server.start_seconds:.1f} s); queueing the 1.1 text-to-video "
              "workflow through POST /prompt", flush=True)
        graph = demo_graph(args.prompt, models)
        prompt = next(n["inputs"]["prompt"] for n in graph.values() if n["class_type"] == "FusionFramesTextEncode")
        print(f"==> prompt: {prompt!r}", flush=True)
        entry = server.wait(server.queue(graph), timeout=3600)
        if entry["status"]["status_str"] != "success":
            error = execution_error(entry) or entry["status"]
            print(f"error: the workflow failed: {json.dumps(error)[:2000]}", file=sys.stderr)
            return 1
        videos = [server.output_path(item) for item in output_items(entry) if item["filename"].endswith(".mp4")]
        if args.keep_running:
            print(f"==> the server keeps running at {server.url} (Ctrl-C stops it)", flush=True)
            try:
                while server.running():
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        server.stop()
    if models == "toy":
        shout([f"Reminder: made with the toy models ({TOY_SIZE}x{TOY_SIZE}, trained on a synthetic world), not the "
               "official weights."])
    elif models == "random":
        shout(["Reminder: made with random-weight demo models: the video is noise."])
    print(f"done in {time.perf_counter() - started:.0f} s")
    print(f"video: {videos[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
