"""The sampling loops ask the device for no values: no ``.item()``, ``bool(tensor)``, ``nonzero`` inside ``sample``.

On a GPU each of those would stall the CPU until every queued kernel finished, once per step. The operators are seen
at torch's dispatcher, so the check runs on the CPU and holds for any device.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fusionframes.runtime import stages
from fusionframes.runtime.pipeline import VideoPipeline, VideoRequest
from fusionframes.sampling import loop as sampling
from fusionframes.sampling.noise import SeededNoise
from fusionframes.sampling.schedules import K11Schedule

SYNCING = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
           torch.ops.aten.is_nonzero.default, torch.ops.aten.masked_select.default}


class SyncSpy(TorchDispatchMode):
    """Records every operator that reads a tensor's value back to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def spied_sampling(monkeypatch):
    spies: list[SyncSpy] = []

    def sample(*args, **kwargs):
        with SyncSpy() as spy:
            result = sampling.sample(*args, **kwargs)
        spies.append(spy)
        return result

    monkeypatch.setattr(stages, "sample", sample)
    return spies


def test_the_spy_sees_a_value_read_back_inside_the_loop():
    seen = SyncSpy()
    with seen:
        sampling.sample(K11Schedule(4, "trailing", "v_prediction"), lambda x, t: x * float(x.abs().mean()),
                        (1, 4, 4, 4), SeededNoise(0), "keyframes")
    assert torch.ops.aten._local_scalar_dense.default.__str__() in seen.seen


@pytest.mark.parametrize(("release", "sampler", "steps"), [("1.0", "official", 3), ("1.1", "official", None),
                                                           ("1.0", "ddim", 3), ("1.1", "dpmpp_2m", 3)])
def test_no_sampling_loop_reads_values_back_from_the_device(demo, one_thread, spied_sampling, release, sampler, steps):
    folder = demo / ("k10" if release == "1.0" else "k11")
    pipeline = VideoPipeline.from_folder(folder, demo / "text_encoder")
    pipeline.generate(VideoRequest(prompt="a cat", width=64, height=64, fps="medium", keyframes=2,
                                   sampler=sampler, steps=steps))
    loops = {"1.0": 2, "1.1": 3}[release]  # (first frame), keyframes, interpolation
    assert len(spied_sampling) == loops
    assert [spy.seen for spy in spied_sampling] == [[]] * loops
