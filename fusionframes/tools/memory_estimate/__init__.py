"""Peak GPU memory of every pipeline stage, estimated on the CPU without allocating anything.

Every stage runs its real code (the benchmark's stage list, :mod:`fusionframes.tools.bench`) at any model size,
resolution and frame count on the ``meta`` device, where tensors have shapes, dtypes and storages but no data, so
no arithmetic happens and nothing is allocated. What runs on ``meta`` is made to behave as it does on a CUDA GPU:
the benchmark's CUDA dtypes (``reference``: fp16 U-Nets, fp32/fp16 T5 and MoVQs; ``fast``: bf16), CUDA's attention
kernel choice (``reference`` materialises the scores as the official einsum attention does, ``fast`` does not)
and the fp16 autocast of the ``reference`` mode.

The package is split by role, and this module re-exports the public names:

* :mod:`.tracker`: counting live storages (generic: any callable, any device type);
* :mod:`.cuda_emulation`: CUDA autocast and attention kernel choice on ``meta`` (generic);
* :mod:`.estimator`: the pipeline's stages measured per release, mode and shape;
* :mod:`.workflows`: workflows and scenarios (which weights are resident), the scaling and decode tables;
* :mod:`.report`: :func:`estimate` (the whole JSON report) and its tables; :mod:`.cli`: the command line.
"""

from __future__ import annotations

from .cli import add_arguments, main, run
from .cuda_emulation import AutocastEmulation, CudaAttention, cuda_attention_backend
from .estimator import (
    GIB,
    META,
    STAGE_MODELS_10,
    STAGE_MODELS_11,
    ModeModels,
    StageEstimator,
    StageMemory,
    build_mode_models,
    device_values,
    stage_models,
    weight_bytes,
)
from .report import MODE_DESCRIPTIONS, NOTES, SCHEMA, estimate, format_report
from .tracker import (
    CUDA_BLOCK,
    INTERNAL_BYTES,
    DeviceMemoryTracker,
    Measurement,
    ModuleNames,
    measure,
    round_allocation,
)
from .workflows import (
    DECODE_VARIANTS,
    DEFAULT_KEYFRAMES,
    SCENARIO_TITLES,
    SCENARIOS,
    WORKFLOWS,
    Workflow,
    decode_rows,
    scaling_rows,
    scenario_weights,
    workflow_report,
    workflow_stages,
)

__all__ = [
    "CUDA_BLOCK",
    "DECODE_VARIANTS",
    "DEFAULT_KEYFRAMES",
    "GIB",
    "INTERNAL_BYTES",
    "META",
    "MODE_DESCRIPTIONS",
    "NOTES",
    "SCENARIOS",
    "SCENARIO_TITLES",
    "SCHEMA",
    "STAGE_MODELS_10",
    "STAGE_MODELS_11",
    "WORKFLOWS",
    "AutocastEmulation",
    "CudaAttention",
    "DeviceMemoryTracker",
    "Measurement",
    "ModeModels",
    "ModuleNames",
    "StageEstimator",
    "StageMemory",
    "Workflow",
    "add_arguments",
    "build_mode_models",
    "cuda_attention_backend",
    "decode_rows",
    "device_values",
    "estimate",
    "format_report",
    "main",
    "measure",
    "round_allocation",
    "run",
    "scaling_rows",
    "scenario_weights",
    "stage_models",
    "weight_bytes",
    "workflow_report",
    "workflow_stages",
]
