"""Beyond one process: request lists (one process and torchrun with 2 ranks on gloo), their resumption after a kill,
and one video shared over 2 ranks, identical to the single-process video. On the tiny demo models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fusionframes.io.video import read_frames

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[3]
SMALL = ["--width", "64", "--height", "64", "--keyframes", "3", "--sampler", "ddim", "--steps", "2"]
REQUESTS = [
    {"prompt": "a red car", "seed": 1, "out": "car.gif"},
    {"prompt": ["a red car", "a blue boat"], "seed": 2, "fps": "medium", "out": "long.gif"},
    {"prompt": "a loop", "seed": 3, "fps": "medium", "loop": True, "out": "loop.gif"},
    {"prompt": "too narrow", "width": 70},
    "{broken",
    {"prompt": "a", "colour": "red"},
]


def _command(*args: str, ranks: int = 1) -> list[str]:
    launcher = [sys.executable]
    if ranks > 1:  # --standalone: a free port of its own on localhost
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    return [*launcher, "-m", "fusionframes", *args]


def _run(*args: str, ranks: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(_command(*args, ranks=ranks), cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _request_file(folder: Path, requests: list) -> Path:
    path = folder / "requests.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in requests))
    return path


def _generate_list(demo: Path, requests: Path, out: Path, ranks: int = 1) -> list[dict]:
    _run("generate", "--models", str(demo / "k11"), "--text-encoder", str(demo / "text_encoder"),
         "--prompts", str(requests), *SMALL, "--out", str(out), ranks=ranks)
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def one_process_list(demo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("list")
    out = folder / "one"
    return folder, out, _generate_list(demo, _request_file(folder, REQUESTS), out)


def test_a_request_list_makes_each_video_and_reports_each_failure(one_process_list):
    _, out, results = one_process_list
    assert [r["index"] for r in results] == list(range(len(REQUESTS)))
    assert [r["status"] for r in results] == ["done"] * 3 + ["failed"] * 3
    assert [r["frames"] for r in results[:3]] == [3, 4 * 5 - 3, 4 * 3]  # plain, 2 segments, a loop
    assert "multiples of 64, got 70x64" in results[3]["error"]
    assert "line 5 is not JSON" in results[4]["error"]
    assert "unknown settings colour" in results[5]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["car.gif", "long.gif", "loop.gif", "results.jsonl"]


def test_two_ranks_share_a_request_list_and_make_the_same_videos(demo, one_process_list):
    folder, out, results = one_process_list
    shared = _generate_list(demo, folder / "requests.jsonl", folder / "two", ranks=2)
    assert [r["rank"] for r in shared] == [i % 2 for i in range(len(REQUESTS))]
    assert [r["status"] for r in shared] == [r["status"] for r in results]
    for name in ("car.gif", "long.gif", "loop.gif"):
        assert (folder / "two" / name).read_bytes() == (out / name).read_bytes(), name


def test_a_killed_request_list_resumes_where_it_stopped(demo, tmp_path):
    requests = _request_file(tmp_path, [{"prompt": f"video {i}", "seed": i, "out": f"{i}.gif"} for i in range(4)])
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = ["generate", "--models", str(demo / "k11"), "--text-encoder", str(demo / "text_encoder"),
            "--prompts", str(requests), *SMALL, "--out", str(out)]
    process = subprocess.Popen(_command(*args), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / "0.gif").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # killed mid-way: after its first video
    process.wait()
    first = out / "0.gif"
    assert first.exists() and not (out / "results.jsonl").exists()
    made_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.gif")}
    assert len(made_before) < 4, "the run finished before it could be killed"
    results = _generate_list(demo, requests, out)
    assert [r["status"] for r in results] == ["skipped" if f"{i}.gif" in made_before else "done" for i in range(4)]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.gif") if p.name in made_before} == made_before
    assert sorted(p.name for p in out.glob("*.gif")) == [f"{i}.gif" for i in range(4)]


@pytest.mark.parametrize("release", ["k10", "k11"])
def test_one_video_over_two_ranks_is_the_single_process_video(demo, tmp_path, release):
    sampler = ["--sampler", "ddim", "--steps", "2"] if release == "k11" else ["--steps", "3"]
    args = ["generate", "--models", str(demo / release), "--text-encoder", str(demo / "text_encoder"),
            "--prompt", "a red car", "--width", "64", "--height", "64", "--keyframes", "4", *sampler,
            "--fps", "medium", "--seed", "5"]
    _run(*args, "--out", f"{tmp_path / 'one'}/")
    _run(*args, "--out", f"{tmp_path / 'two'}/", ranks=2)  # the decoded clips shared out: exactly the same
    _run(*args, "--split-guidance", "--out", f"{tmp_path / 'split'}/", ranks=2)
    one, two, split = (read_frames(tmp_path / name).astype(int) for name in ("one", "two", "split"))
    assert one.shape == (4 * 4 - 3, 64, 64, 3)
    assert np.array_equal(one, two)
    # a branch alone may take other kernels than in the batch: last bits move, and guidance amplifies them (on
    # these random-weight models: 1.0 at most 1/255; 1.1 1.6/255 on average); a wrong branch order would be far off
    assert np.abs(one - split).mean() < 3
