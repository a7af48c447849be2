"""Printing parity results: one line per case with its largest error next to what the tolerance allows."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .checks import CaseResult, run_case


def format_result(result: CaseResult, seconds: float) -> list[str]:
    status = "PASS" if result.ok else "FAIL"
    if result.error:
        return [f"{status}  {result.name}: {result.error}"]
    worst = max(result.comparisons, key=lambda c: c.max_error / max(c.allowed, 1e-30), default=None)
    summary = ""
    if worst is not None:
        summary = f"max error {worst.max_error:.3g} (allowed {worst.allowed:.3g}) in {worst.label}: {worst.worst}"
    lines = [f"{status}  {result.name:34s} {summary}  [{seconds:.1f} s]"]
    for comparison in result.comparisons:
        lines += [f"        {comparison.label}: {failure}" for failure in comparison.failures[:5]]
    return lines


def run_all(root: Path, names: Sequence[str], out: TextIO) -> bool:
    """Run the cases, print a line each and a closing count; True when all pass."""
    passed = failed = 0
    for name in names:
        started = time.perf_counter()
        result = run_case(root, name)
        for line in format_result(result, time.perf_counter() - started):
            print(line, file=out, flush=True)
        passed, failed = passed + result.ok, failed + (not result.ok)
    print(f"parity: {passed} of {len(names)} cases pass" + (f", {failed} FAIL" if failed else ""), file=out)
    return failed == 0
