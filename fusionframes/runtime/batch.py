"""Many videos from a list of requests (``generate --prompts FILE.jsonl``), spread over the ranks of a torchrun.

One JSON object per line: ``prompt`` (text, or a list of texts: a long video of one segment each) and any setting of
:class:`~.sequencer.VideoRequest` by its name (``seed``, ``fps``, ``width``, ``guidance``, ...), ``image`` /
``last_image`` (paths, relative to the file's folder), ``loop``, and ``out`` (the video's name in the output folder;
default ``NNNNN.mp4`` by line number). Rank r makes lines r, r + world, ... A request whose video already exists is
skipped, so a run that was killed resumes where it stopped (videos appear complete or not at all). A request that
fails is reported in its result line and the others go on. Rank 0 writes ``results.jsonl`` at the end: one line per
request, in file order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..errors import FusionFramesError, InputError
from ..io.video import VIDEO_SUFFIXES, VideoStream, load_image
from ..releases import fps_for
from .distributed import ONE_PROCESS, Ranks
from .pipeline import Progress, VideoPipeline
from .sequencer import VideoRequest

#: request settings given as paths to pictures
IMAGE_SETTINGS = ("image", "last_image")
SETTINGS = {f.name for f in fields(VideoRequest)} | {"loop", "out"}
RESULTS = "results.jsonl"


@dataclass
class BatchItem:
    """One line of the request file: its settings, or why they cannot be read."""

    index: int
    settings: dict[str, Any]
    error: str | None = None

    @property
    def out_name(self) -> str:
        name = self.settings.get("out")
        return name if isinstance(name, str) and name else f"{self.index:05d}.mp4"


def read_requests(path: str | Path) -> list[BatchItem]:
    """The requests of a JSONL file; a line that is not a JSON object becomes an item that fails with the reason."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the request list {path}: {error}.") from None
    items = []
    for number, line in enumerate(line for line in lines if line.strip()):
        try:
            settings = json.loads(line)
        except json.JSONDecodeError as error:
            items.append(BatchItem(number, {}, f"line {number + 1} is not JSON: {error.msg}."))
            continue
        if not isinstance(settings, dict):
            items.append(BatchItem(number, {}, f"line {number + 1} is not a JSON object of settings."))
            continue
        items.append(BatchItem(number, settings))
    if not items:
        raise InputError(f"the request list {path} holds no requests (one JSON object per line).")
    return items


def output_path(folder: Path, item: BatchItem) -> Path:
    """Where the video of ``item`` goes: inside ``folder``, as a video file."""
    name = Path(item.out_name)
    if name.is_absolute() or ".." in name.parts:
        raise InputError(f"out must be a file name inside the output folder, got {item.out_name!r}.")
    if name.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"out must be a video ({', '.join(VIDEO_SUFFIXES)}), got {item.out_name!r}.")
    return folder / name


def request_of(item: BatchItem, base: VideoRequest, root: Path) -> tuple[VideoRequest, list[str], bool]:
    """The request, its prompts (one per segment) and whether it loops; ``base`` holds the command line's
    settings, which the line's own override."""
    if item.error:
        raise InputError(item.error)
    unknown = sorted(set(item.settings) - SETTINGS)
    if unknown:
        raise InputError(f"unknown settings {', '.join(unknown)}; known: {', '.join(sorted(SETTINGS))}.")
    values = {k: v for k, v in item.settings.items() if k not in ("loop", "out", "prompt", *IMAGE_SETTINGS)}
    for name in IMAGE_SETTINGS:
        if item.settings.get(name) is not None:
            values[name] = load_image(root / str(item.settings[name]))
    prompts = item.settings.get("prompt", base.prompt)
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError("prompt must be a text or a list of texts (one per segment).")
    loop = item.settings.get("loop", False)
    if not isinstance(loop, bool):
        raise InputError(f"loop must be true or false, got {loop!r}.")
    return replace(base, **values, prompt=prompts[0]), prompts, loop


def run_batch(pipeline: VideoPipeline, requests: str | Path, folder: str | Path, base: VideoRequest,
              ranks: Ranks = ONE_PROCESS, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Makes this rank's share of the requests into ``folder``, each video by this process alone (``pipeline``
    must not share its work over the ranks); returns every request's result on rank 0 (this rank's on the others)
    after writing ``results.jsonl`` there."""
    if pipeline.ranks.world > 1:
        raise InputError("a request list shares whole videos over the ranks: load the pipeline for one process.")
    requests, folder = Path(requests), Path(folder)
    items = read_requests(requests)
    folder.mkdir(parents=True, exist_ok=True)
    mine = [_make(pipeline, items[index], folder, base, requests.parent, ranks, progress)
            for index in ranks.share(len(items))]
    everyone = [result for results in ranks.gather_objects(mine) for result in results]
    everyone.sort(key=lambda result: result["index"])
    if ranks.main:
        partial = folder / f".{RESULTS}.partial"
        partial.write_text("".join(json.dumps(result) + "\n" for result in everyone), encoding="utf-8")
        partial.replace(folder / RESULTS)
    ranks.barrier()
    return everyone if ranks.main else mine


def _make(pipeline: VideoPipeline, item: BatchItem, folder: Path, base: VideoRequest, root: Path, ranks: Ranks,
          progress: Progress | None) -> dict[str, Any]:
    result: dict[str, Any] = {"index": item.index, "out": item.out_name, "rank": ranks.rank}
    started = time.perf_counter()
    try:
        path = output_path(folder, item)
        if path.exists():
            return {**result, "status": "skipped", "reason": "the video exists (made by an earlier run)"}
        request, prompts, loop = request_of(item, base, root)
        fps = fps_for(request.resolved(pipeline.release).passes)
        with VideoStream(path, fps) as stream:
            made = pipeline.generate_segments(request, prompts, progress=progress, loop=loop, stream=stream)
        frames = stream.frames
    except (FusionFramesError, ValueError, RuntimeError, OSError) as error:  # this request only; the rest go on
        return {**result, "status": "failed", "error": f"{type(error).__name__}: {error}"}
    return {**result, "status": "done", "frames": frames, "fps": made.fps,
            "seconds": round(time.perf_counter() - started, 2)}
