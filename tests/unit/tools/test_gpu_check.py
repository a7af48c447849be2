"""scripts/gpu_check.sh: its CPU dry run runs every step (torch.compile excepted) and writes the one JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_gpu_check_dry_run_on_the_cpu_writes_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu", str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    steps = {step["step"]: step for step in report["steps"]}
    assert [steps[name]["rc"] for name in ("bench", "drift", "torchrun")] == [0, 0, 0]
    assert steps["bench_compile"]["rc"] is None and "skipped" in steps["bench_compile"]
    assert report["bench"] and report["device"] == "cpu"
    drift = {(r["case"], r["dtype"]): r for r in report["drift"]}
    assert len(drift) == 10
    assert all(drift[(case, "fp32")]["max_abs"] < 1e-4 for case, _ in drift)  # fp32 is the parity result
    assert all(drift[(case, "bf16")]["max_abs"] > drift[(case, "fp32")]["max_abs"] for case, _ in drift)
    assert report["torchrun"]["two_ranks_identical"] and report["torchrun"]["frames"] == 13
