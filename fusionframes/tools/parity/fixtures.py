"""Reading golden fixtures (``cases/NAME.json`` + ``cases/NAME.safetensors``) and comparing against them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file


@dataclass
class Case:
    """One fixture: its metadata, its tensors, and the directory it lives in (paths in it are relative to that)."""

    name: str
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    root: Path

    @property
    def tolerance(self) -> dict[str, float]:
        return self.meta.get("tolerance", {"rtol": 1e-4, "atol": 1e-5})

    def path(self, relative: str) -> Path:
        return self.root / relative

    def steps(self, phase: str) -> list[str]:
        """The step prefixes ``traj.PHASE.NNN`` of a phase, in the order they ran."""
        prefix = f"traj.{phase}."
        numbers = sorted({k[len(prefix):].split(".")[0] for k in self.tensors if k.startswith(prefix)})
        return [f"{prefix}{n}" for n in numbers]


def list_cases(root: str | Path) -> list[str]:
    """Case names of a fixture directory, in its index order when it has one."""
    root = Path(root)
    cases_dir = root / "cases"
    index = cases_dir / "index.json"
    if index.exists():
        return [entry["name"] for entry in json.loads(index.read_text())]
    return sorted(p.stem for p in cases_dir.glob("*.json") if p.stem != "index")


def load_case(root: str | Path, name: str) -> Case:
    root = Path(root).resolve()  # checks join paths that already hold the root
    meta = json.loads((root / "cases" / f"{name}.json").read_text())
    tensors = load_file(str(root / "cases" / f"{name}.safetensors"))
    return Case(name=name, meta=meta, tensors=tensors, root=root)


@dataclass
class Comparison:
    """The worst error of one or more compared tensors against what the tolerance allows there."""

    label: str
    max_error: float = 0.0
    allowed: float = 0.0
    worst: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def add(self, name: str, ours: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> None:
        """Compare one tensor: floats within ``atol + rtol * max|expected|``, integers and bools exactly."""
        ours = ours.detach().cpu()
        expected = expected.detach().cpu()
        if tuple(ours.shape) != tuple(expected.shape):
            self.failures.append(f"{name}: shape {tuple(ours.shape)} != expected {tuple(expected.shape)}")
            return
        if not expected.is_floating_point():
            mismatches = int((ours.to(expected.dtype) != expected).sum())
            if mismatches:
                self.failures.append(f"{name}: {mismatches} integer values differ")
            return
        expected = expected.double()
        error = float((ours.double() - expected).abs().max()) if expected.numel() else 0.0
        allowed = atol + rtol * (float(expected.abs().max()) if expected.numel() else 0.0)
        if error != error or error > allowed:  # NaN counts as a failure
            self.failures.append(f"{name}: max error {error:.3g} > allowed {allowed:.3g}")
        if error / max(allowed, 1e-30) >= self.max_error / max(self.allowed, 1e-30) or not self.worst:
            self.max_error, self.allowed, self.worst = error, allowed, name
