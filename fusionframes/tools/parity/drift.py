"""How far reduced precision moves the U-Nets from the official outputs: every U-Net forward case of the golden
fixtures, run on a device in each weight dtype, against the output the official code recorded (fp32, CPU).

    python -m fusionframes.tools.parity.drift ../shared/golden --device cuda --dtypes fp32,bf16 --out drift.json

Prints one line per case and dtype (largest and mean absolute difference, and the difference relative to the output's
norm) and writes them as JSON. The parity tolerances are for fp32; this measures, it does not judge.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from ...models.dtypes import DTYPES
from .checks import FORWARD_CALLS, model_at
from .fixtures import load_case


class _Recorder:
    """Stands in for a case's model inside its check: calls the model on ``device`` in ``dtype`` and keeps the
    output (float32, CPU)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.model, self.device, self.dtype = model, device, dtype
        self.out: torch.Tensor | None = None

    def _move(self, value):
        if isinstance(value, torch.Tensor):
            value = value.to(self.device)
            return value.to(self.dtype) if value.is_floating_point() else value
        return value

    def _run(self, function, args, kwargs):
        with torch.no_grad():
            out = function(*(self._move(a) for a in args), **{k: self._move(v) for k, v in kwargs.items()})
        self.out = out.float().cpu()
        return self.out

    def __call__(self, *args, **kwargs):
        return self._run(self.model, args, kwargs)

    def forward_image(self, *args, **kwargs):
        return self._run(self.model.forward_image, args, kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def measure(root: str | Path, device: str, dtypes: list[str], cases: list[str] | None = None) -> list[dict]:
    """One record per (case, dtype): the differences between our output and the official one. ``cases``: only these
    (a partial fixture set, e.g. the 1.1 cases alone where the 1.0 models cannot be copied to the GPU machine)."""
    unknown = sorted(set(cases or ()) - set(FORWARD_CALLS))
    if unknown:
        raise ValueError(f"no U-Net forward case {', '.join(unknown)}; the cases are {', '.join(FORWARD_CALLS)}.")
    records = []
    for name, call in FORWARD_CALLS.items():
        if cases and name not in cases:
            continue
        case = load_case(root, name)
        expected = case.tensors["out"].float()
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            # a copy: a cast there and back would leave the cached model's weights rounded
            model = copy.deepcopy(model_at(case, case.meta["model"])).to(device=device, dtype=dtype)
            recorder = _Recorder(model, torch.device(device), dtype)
            call(recorder, case.tensors)
            difference = (recorder.out - expected).abs()
            records.append({"case": name, "device": device, "dtype": dtype_name,
                            "max_abs": float(difference.max()), "mean_abs": float(difference.mean()),
                            "relative": float(difference.norm() / expected.norm().clamp_min(1e-12))})
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusionframes.tools.parity.drift",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("fixtures", help="the golden fixtures (cases/ and models/)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--case", action="append", help="only this case (repeatable; default: every U-Net forward "
                                                        "case)")
    parser.add_argument("--out", default=None, help="write the records as JSON here")
    args = parser.parse_args(argv)
    try:
        records = measure(args.fixtures, args.device, [d for d in args.dtypes.split(",") if d], args.case)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for r in records:
        print(f"{r['case']:34} {r['dtype']:5} on {r['device']}: max {r['max_abs']:.3g}, mean {r['mean_abs']:.3g}, "
              f"relative {r['relative']:.3g}")
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
