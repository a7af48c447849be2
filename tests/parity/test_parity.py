"""Parity with the official code: every golden case through the same code path as ``check-parity``."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from fusionframes.cli import main
from fusionframes.tools.parity.checks import run_case
from fusionframes.tools.parity.fixtures import list_cases

SLOW = {"k10_sampling", "k11_sampling", "k11_pipeline_t2v_medium", "k11_pipeline_i2v_high"}
#: the golden cases (listed here so that collection works without ../shared/golden; each test then fails clearly)
CASE_NAMES = (
    "k10_keyframe_unet_forward",
    "k10_interpolation_unet_forward",
    "k11_keyframe_unet_forward_video",
    "k11_keyframe_unet_forward_image",
    "k11_interpolation_unet_forward",
    "k10_movq_roundtrip",
    "k11_movq_image_roundtrip",
    "k11_video_movq_decode_clip",
    "text_encoding",
    "k10_sampling",
    "k11_sampling",
    "k10_pipeline_medium",
    "k10_pipeline_high",
    "k11_pipeline_t2v_medium",
    "k11_pipeline_i2v_high",
)
CASES = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in CASE_NAMES]


def test_all_fifteen_golden_cases_are_known(golden):
    assert sorted(list_cases(golden)) == sorted(CASE_NAMES) and len(CASE_NAMES) == 15


@pytest.mark.parametrize("name", CASES)
def test_golden_case_matches_the_official_code(golden, name):
    result = run_case(golden, name)
    assert result.error is None, result.error
    failures = [f for c in result.comparisons for f in c.failures]
    assert result.ok, failures


def _copy_fixture(golden, tmp_path, name):
    """A fixture directory holding one case (models shared through a link)."""
    root = tmp_path / "fixtures"
    (root / "cases").mkdir(parents=True)
    (root / "models").symlink_to(golden / "models")
    for suffix in (".json", ".safetensors"):
        shutil.copy(golden / "cases" / f"{name}{suffix}", root / "cases" / f"{name}{suffix}")
    (root / "cases" / "index.json").write_text(json.dumps([{"name": name}]))
    return root


def test_check_parity_fails_naming_the_case_whose_expected_tensor_is_corrupted(golden, tmp_path, capsys):
    name = "k10_movq_roundtrip"
    root = _copy_fixture(golden, tmp_path, name)
    assert main(["check-parity", str(root)]) == 0
    path = root / "cases" / f"{name}.safetensors"
    tensors = load_file(str(path))
    tensors["decoded"][0, 0, 0, 0] += 0.5
    save_file(tensors, str(path))
    assert main(["check-parity", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {name}" in out and "decoded" in out and "0 of 1 cases pass" in out


def test_check_parity_reports_an_unknown_case_as_a_failure(golden, tmp_path, capsys):
    root = _copy_fixture(golden, tmp_path, "k10_movq_roundtrip")
    shutil.copy(root / "cases" / "k10_movq_roundtrip.json", root / "cases" / "mystery_case.json")
    shutil.copy(root / "cases" / "k10_movq_roundtrip.safetensors", root / "cases" / "mystery_case.safetensors")
    assert main(["check-parity", str(root), "--case", "mystery_case"]) == 1
    assert "no check is known" in capsys.readouterr().out


@pytest.mark.slow
def test_check_parity_takes_a_relative_fixture_path(golden, monkeypatch):
    monkeypatch.chdir(golden.parent)
    assert main(["check-parity", golden.name, "--case", "k10_pipeline_medium"]) == 0
