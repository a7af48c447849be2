"""``python -m fusionframes bench``: time, memory and FLOPs of every pipeline stage, with random weights.

The models are built at the official size (``--size official``: on ``meta`` first, then ``to_empty`` and a random
initialisation on the target device; the cost of a forward pass does not depend on the weights) or at a small
size for the CPU (``small``: the demo-model configs at 64x64; ``mid``: a mid-size configuration at 128x128). Every
stage of the pipeline runs through the engine's own sequencer (``runtime.sequencer``), in two modes in one run:

* ``reference``: the official code's choices. fp16 U-Nets under fp16 autocast (CUDA), T5 in fp32 (1.1) / fp16
  (1.0), MoVQs in fp32 (1.1) / fp16 (1.0), attention through the math kernel (materialised score matrices, as the
  official einsum attention), full-batch guidance, every model resident;
* ``fast``: bf16 U-Nets and T5, fused SDPA kernels, channels_last U-Nets and MoVQs, optional ``torch.compile``
  (``--compile``); still every model resident and full-batch guidance.

On the CPU both modes compute in fp32: there the difference is only the attention kernel and the memory format.

``--steps N`` runs only N steps of each sampling stage (the stage is interrupted after its N-th update) and
extrapolates to the official step counts: ``setup + per-step time x official steps``. FLOPs are counted once per
stage (one model call for a sampling stage) with :func:`fusionframes.tools.flops.count_flops`; MFU = FLOPs / (seconds x
peak), the peak being the GPU's dense bf16 figure (``--peak-tflops`` overrides; none on the CPU unless given).

The package is split by role, and this module re-exports the public names:

* :mod:`.settings`: :class:`BenchSettings`, sizes and modes;
* :mod:`.models`: configurations per size, models with random weights, dtypes per mode;
* :mod:`.stages`: the stage list (:class:`StagePipeline`) and how a mode runs a stage;
* :mod:`.measure`: stopping a stage after N steps, time, peak memory and FLOPs per stage;
* :mod:`.run`: the benchmark loop; :mod:`.report`: the JSON report and the tables; :mod:`.cli`: the arguments.
"""

from __future__ import annotations

from .cli import add_arguments, run_from_args
from .measure import (
    MemoryProbe,
    StageResult,
    count_stage,
    count_stage_flops,
    device_description,
    run_limited,
)
from .models import (
    SMALL_T5,
    ModelSet,
    build_models,
    dtype_name,
    materialise,
    mode_dtypes,
    release_config,
    t5_config,
)
from .report import SCHEMA, format_flops, format_table, make_report
from .run import run_benchmark, run_mode
from .settings import DEFAULT_RESOLUTION, MODES, SIZES, BenchSettings
from .stages import CONTEXT_LENGTH, PROMPT_TOKENS, SMALL_TOKENS, BenchStage, StagePipeline, mode_context, stage_autocast

__all__ = [
    "CONTEXT_LENGTH",
    "DEFAULT_RESOLUTION",
    "MODES",
    "PROMPT_TOKENS",
    "SCHEMA",
    "SIZES",
    "SMALL_T5",
    "SMALL_TOKENS",
    "BenchSettings",
    "BenchStage",
    "MemoryProbe",
    "ModelSet",
    "StagePipeline",
    "StageResult",
    "add_arguments",
    "build_models",
    "count_stage",
    "count_stage_flops",
    "device_description",
    "dtype_name",
    "format_flops",
    "format_table",
    "make_report",
    "materialise",
    "mode_context",
    "mode_dtypes",
    "release_config",
    "run_benchmark",
    "run_from_args",
    "run_limited",
    "run_mode",
    "stage_autocast",
    "t5_config",
]
