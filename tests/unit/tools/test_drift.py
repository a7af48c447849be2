"""The drift tool measures the U-Net forward cases it is asked for, so a partial fixture set (the 1.1 cases alone,
as fit the transfer to a GPU machine) can be measured; a case it does not know is refused by name."""

from __future__ import annotations

import json

from fusionframes.tools.parity.drift import main


def test_drift_measures_only_the_cases_asked_for(golden, tmp_path):
    out = tmp_path / "drift.json"
    assert main([str(golden), "--device", "cpu", "--dtypes", "fp32", "--case", "k11_interpolation_unet_forward",
                 "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [(r["case"], r["dtype"]) for r in records] == [("k11_interpolation_unet_forward", "fp32")]
    assert records[0]["max_abs"] < 1e-4  # fp32 on the CPU is the parity result


def test_drift_refuses_an_unknown_case(golden, capsys):
    assert main([str(golden), "--device", "cpu", "--case", "k12_unet_forward"]) == 2
    error = capsys.readouterr().err
    assert "k12_unet_forward" in error and "k11_interpolation_unet_forward" in error
