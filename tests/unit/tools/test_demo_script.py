"""``make demo``'s model set-up: the trained toy models go where the 1.1 weights belong when no official weights are
there (replacing files an earlier demo put there, never a user's), the 1.0 folder gets the random demo models, and
the workflow is queued at the toy models' size with a prompt of their grammar."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from fusionframes.tools.toy import RECORD, SET_FILES, trained_toy_models
from fusionframes.tools.toy.train import STAGES

REPO = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("comfyui_demo", REPO / "scripts" / "comfyui_demo.py")
comfyui_demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(comfyui_demo)


def _folder(base: Path, release: str) -> Path:
    return base / "models" / "fusionframes" / release


@pytest.fixture
def toy_set(tmp_path, monkeypatch) -> Path:
    """A complete, trained toy set (its files' bytes stand in for weights), as the one the demo finds."""
    root = tmp_path / "toy"
    for name in SET_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(f"toy {name}".encode())
    (root / RECORD).write_text(json.dumps({stage: {"steps": 1} for stage in STAGES[:-1]}))
    assert trained_toy_models(root) is None  # a stage still in training: not a set yet
    (root / RECORD).write_text(json.dumps({stage: {"steps": 1} for stage in STAGES}))
    assert trained_toy_models(root) == root
    monkeypatch.setattr(comfyui_demo, "trained_toy_models", lambda: root)
    return root


def test_toy_models_replace_earlier_demo_files_and_are_not_taken_for_official_weights(tmp_path, toy_set):
    tmp_path = tmp_path / "base"
    old = _folder(tmp_path, "kandinsky_video_1_1")
    old.mkdir(parents=True)
    (old / comfyui_demo.DEMO_MARKER).write_text("random\n")
    (old / "t2v.pt").write_bytes(b"random weights")
    comfyui_demo.install_demo_models(tmp_path)
    for name in comfyui_demo.REAL_FILES:
        assert (old / name).read_bytes() == (toy_set / "k11" / name).read_bytes(), name
    assert (old / comfyui_demo.TOY_MARKER).is_file() and not (old / comfyui_demo.DEMO_MARKER).exists()
    assert (_folder(tmp_path, "kandinsky_video_1_0") / comfyui_demo.DEMO_MARKER).is_file()
    assert not comfyui_demo.real_weights_present(tmp_path)


def test_a_users_own_11_folder_is_left_alone(tmp_path, toy_set):
    tmp_path = tmp_path / "base"
    mine = _folder(tmp_path, "kandinsky_video_1_1")
    mine.mkdir(parents=True)
    (mine / "t2v.pt").write_bytes(b"my weights")
    comfyui_demo.install_demo_models(tmp_path)
    assert (mine / "t2v.pt").read_bytes() == b"my weights"
    assert not (mine / comfyui_demo.TOY_MARKER).exists()


def test_the_toy_graph_runs_at_the_size_and_keyframes_the_models_were_trained_for():
    from fusionframes.tools.toy.world import parse_caption

    graph = comfyui_demo.demo_graph(None, "toy")
    sampler = next(n["inputs"] for n in graph.values() if n["class_type"] == "FusionFramesKeyframeSampler")
    text = next(n["inputs"] for n in graph.values() if n["class_type"] == "FusionFramesTextEncode")
    assert (sampler["width"], sampler["height"], sampler["keyframes"]) == (64, 64, 8)
    assert parse_caption(text["prompt"]) == ("red", "circle", "moving right")  # the workflow's own prompt
    graph = comfyui_demo.demo_graph("a blue square moving up", "toy")
    assert next(n["inputs"]["prompt"] for n in graph.values() if n["class_type"] == "FusionFramesTextEncode") == \
        "a blue square moving up"


def test_engine_demo_runs_a_trained_toy_set_and_keeps_to_its_grammar(demo, tmp_path, monkeypatch, capsys):
    """``python -m fusionframes demo`` takes the toy set when one is trained (here the demo models, recorded as
    trained, stand in for it), says what the models are, and refuses a prompt outside their grammar."""
    import shutil

    import fusionframes.tools.toy as toy
    from fusionframes.cli import main

    root = tmp_path / "toy"
    for folder in ("k11", "text_encoder"):
        shutil.copytree(demo / folder, root / folder)
    (root / RECORD).write_text(json.dumps({stage: {"steps": 1} for stage in STAGES}))
    monkeypatch.setattr(toy, "trained_toy_models", lambda: root)
    common = ["demo", "--width", "64", "--height", "64", "--keyframes", "2", "--models-dir", str(tmp_path / "random")]
    assert main([*common, "--prompt", "a red car drifting", "--out", str(tmp_path / "car.mp4")]) == 2
    assert "not a prompt of the toy grammar" in capsys.readouterr().err
    out = tmp_path / "toy.mp4"
    assert main([*common, "--prompt", "a red circle moving right", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TOY MODELS" in printed and printed.strip().splitlines()[-1] == f"video: {out}"
    assert not (tmp_path / "random").exists()  # the random demo models were not needed
