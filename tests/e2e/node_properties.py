"""Property-based tests (hypothesis) over the NODES' inputs, in a real ComfyUI 0.3.75 run in-process.

Run it with the ComfyUI host's Python (tests/e2e/test_node_properties.py does, from the project's .venv)::

    .host/venv/bin/python tests/e2e/node_properties.py [--seed N] [--only PROPERTY] [--examples-scale X] [--no-shrink]
                                                   [--verbose]

ComfyUI is set up in this process as docs say (see /work/shared/docs/comfyui-host.md, "In-process execution"):
``--cpu``, a ``--base-directory`` of its own (.host/base_properties: the pack linked into custom_nodes/, the demo
models in models/), a stand-in PromptServer, ``nodes.init_extra_nodes``. Each example builds a small whole graph
(loaders -> our nodes -> a probe output node that records what reaches it) and queues it exactly as the server does:
``execution.validate_prompt`` then ``execution.PromptExecutor.execute_async``.

Widget values are drawn from each node's own schema (``INPUT_TYPES()``: min/max/step/options), so widgets added
later are covered without touching this file. The properties text_encode, keyframe_sampler (with the Temporal Block
Selector and image-to-video), interpolate_decode and movq_codec draw values ComfyUI accepts (in range, at the bounds,
off-step, numbers as strings, every combo option, prompts of any alphabet -- lone surrogates included -- and length,
empty ones too); hostile_widgets runs the same graphs with questionable values (out of range, wrong type, NaN,
infinities, combo values not in the list). Only widgets that set the amount of work (sizes, frame and step counts)
are capped in range, to keep each example well under a second; 0 steps (the official 50) is drawn rarely.

For every example exactly one of these must hold, otherwise the run fails and prints the falsifying example:

* validation rejects it with ComfyUI's ordinary per-input errors, for exactly the inputs drawn invalid;
* it runs and the recorded outputs are well formed (IMAGE (N, H, W, 3) float32 in [0, 1] and finite with the
  expected frame count and size, LATENT with the expected frame count and size, finite positive frame rate,
  conditioning with a finite context and a mask that fits it);
* it fails in one of OUR nodes with a documented error -- a ``fusionframes.errors.FusionFramesError`` subclass, or
  the ValueError / FileNotFoundError the nodes raise on purpose -- raised by the pack's own code (the innermost
  traceback frame is in nodes/ or fusionframes/), with a message that is not a raw PyTorch/Python error.

Prints a summary (examples per property, shrinking included; accepted / rejected at validation /
failed with our error) and exits 1 on any violation, 2 when the set-up itself fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import re
import shutil
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fusionframes.tools.comfy_host import COMFY_DIR, HOST_DIR, PACK_NAME, make_base  # noqa: E402  (stdlib only)

REPO = Path(__file__).resolve().parents[2]
BASE = HOST_DIR / "base_properties"
DEMO_DIR = HOST_DIR / "demo_models"
PACK_DIRS = tuple(str((REPO / sub).resolve()) + os.sep for sub in ("nodes", "fusionframes"))

#: In-range values of these widgets are capped (they set the amount of work); out-of-range values are still drawn.
COST_CAPS = {"width": 128, "height": 128, "keyframes": 4, "steps": 3, "batch_size": 3, "passes": 2}
#: In-range values drawn only rarely: 0 steps = the official count (50 model calls per stage).
RARE_VALUES = {"steps": (0,)}
#: Documented errors: the engine's (fusionframes.errors) and what the nodes raise on purpose for user errors.
OUR_ERRORS = {"FusionFramesError", "CheckpointError", "ConfigError", "InputError", "OutOfMemory"}
NODE_ERRORS = {"ValueError", "FileNotFoundError"}
#: ComfyUI's ordinary per-input validation errors.
VALIDATION_ERRORS = {"value_smaller_than_min", "value_bigger_than_max", "invalid_input_type", "value_not_in_list"}
#: Signs of an error message coming from deep inside PyTorch or Python itself (or a traceback pasted into a message).
RAW_ERROR = re.compile(
    r"mat1 and mat2|Expected (all tensors|input|tensor|size|scalar|object|\d)|size of tensor|shape '\["
    r"|CUDA error|CUDA kernel|CUBLAS_|cuDNN error"
    r"|not implemented for '|Traceback \(most recent|torch/nn/modules|File \".*\.py\", line|RuntimeError:"
    r"|must match the size|Sizes of tensors|dimension out of range|index out of range|out of bounds"
    r"|non-singleton dimension|cannot reshape|invalid for input of size|Given groups=|Calculated padded input size"
    r"|Kernel size can't be greater|elements of (tensor|input)|Input type \(|should be the same"
    r"|\[Errno \d+\]|invalid literal for|could not convert|unsupported operand|object has no attribute"
    r"|not subscriptable|positional argument|unexpected keyword|NoneType",
)
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def _fail_setup(message: str) -> None:
    print(f"SET-UP FAILED: {message}", flush=True)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------------------------------
# ComfyUI in this process

def prepare_base() -> Path:
    """.host/base_properties with the pack linked in and the demo models in the README's layout (under a lock: two
    runs at once must not copy into each other)."""
    import fcntl

    from fusionframes.tools.demo_models import create_demo_models

    HOST_DIR.mkdir(parents=True, exist_ok=True)
    with open(HOST_DIR / ".base_properties.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        make_base(BASE)
        demo = create_demo_models(DEMO_DIR)
        models = BASE / "models"
        for source, destination in (("k10", models / "fusionframes" / "kandinsky_video_1_0"),
                                    ("k11", models / "fusionframes" / "kandinsky_video_1_1"),
                                    ("text_encoder", models / "text_encoders" / "flan-ul2")):
            if not destination.exists():
                partial = destination.with_name(destination.name + ".partial")
                shutil.copytree(demo / source, partial, dirs_exist_ok=True)
                os.replace(partial, destination)
    return BASE


class _StandInServer:
    """What the executor and the progress hooks use of server.PromptServer; every message is dropped."""

    client_id = None
    last_node_id = None
    last_prompt_id = None
    sockets_metadata: dict = {}

    def send_sync(self, *args: Any, **kwargs: Any) -> None:
        pass

    def queue_updated(self) -> None:
        pass

    def send_progress_text(self, *args: Any, **kwargs: Any) -> None:
        pass


RECORDED: dict[str, Any] = {}


class _Probe:
    """An output node that records the value reaching it (always re-run: IS_CHANGED is NaN)."""

    TYPE = "*"
    RETURN_TYPES = ()
    FUNCTION = "record"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return {"required": {"value": (cls.TYPE,)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):  # noqa: N802 - ComfyUI's name
        return float("nan")

    def record(self, value, unique_id):
        RECORDED[str(unique_id)] = value
        return {}


PROBES = {kind: f"PropertyProbe_{kind}" for kind in ("IMAGE", "LATENT", "FLOAT", "FUSIONFRAMES_CONDITIONING")}


class Host:
    """ComfyUI 0.3.75 in this process, with the pack loaded as a custom node."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        prepare_base()
        sys.path.insert(0, str(COMFY_DIR))
        os.chdir(COMFY_DIR)
        import comfy.cli_args  # parses no command line: comfy.options.args_parsing stays False

        args = comfy.cli_args.args
        args.cpu = True
        args.base_directory = str(BASE)
        args.disable_api_nodes = True
        args.disable_auto_launch = True
        init_log = _ListHandler()
        logging.getLogger().addHandler(init_log)
        logging.getLogger().setLevel(logging.INFO)
        try:
            # The order matters (comfyui-host.md): model_management after args.cpu, utils.extra_config before
            # nodes (which execution imports).
            import comfy.model_management  # noqa: F401, I001
            import utils.extra_config  # noqa: F401
            import execution
            import nodes
            import server

            server.PromptServer.instance = _StandInServer()
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        finally:
            logging.getLogger().removeHandler(init_log)
        self.nodes = nodes
        self.execution = execution
        ours = {name for name, cls in nodes.NODE_CLASS_MAPPINGS.items()
                if getattr(cls, "RELATIVE_PYTHON_MODULE", "") == f"custom_nodes.{PACK_NAME}"}
        if not ours:
            _fail_setup("the pack did not import into ComfyUI:\n" + "\n".join(init_log.lines[-60:]))
        self.pack_nodes = ours
        for kind, name in PROBES.items():
            nodes.NODE_CLASS_MAPPINGS[name] = type(name, (_Probe,), {"TYPE": kind})
        self.executor = execution.PromptExecutor(server.PromptServer.instance, execution.CacheType.CLASSIC,
                                                 {"lru": 0, "ram": 0})
        # ComfyUI logs every node exception with its traceback at ERROR: thousands of lines. Outcomes are judged from
        # the executor's messages instead.
        logging.disable(logging.CRITICAL)

    def schema(self, class_type: str) -> dict[str, dict[str, tuple]]:
        return self.nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()

    def run(self, graph: dict[str, Any]) -> RunResult:
        prompt_id = uuid.uuid4().hex
        RECORDED.clear()
        valid, error, outputs, node_errors = self.loop.run_until_complete(
            self.execution.validate_prompt(prompt_id, graph, None))
        if not valid or node_errors:
            return RunResult("rejected", error=error, node_errors=node_errors)
        self.loop.run_until_complete(self.executor.execute_async(graph, prompt_id, {}, outputs))
        messages = self.executor.status_messages
        for event, data in messages:
            if event == "execution_error":
                return RunResult("failed", error=data)
            if event == "execution_interrupted":
                return RunResult("interrupted", error=data)
        if not self.executor.success or not any(event == "execution_success" for event, _ in messages):
            return RunResult("unknown", error={"messages": [event for event, _ in messages]})
        return RunResult("accepted", outputs=dict(RECORDED))


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class RunResult:
    outcome: str  # accepted | rejected | failed | interrupted | unknown
    outputs: dict[str, Any] = field(default_factory=dict)
    error: Any = None
    node_errors: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------------
# Strategies from the schema

def _strategies():
    from hypothesis import strategies as st

    return st


def weighted(common, seldom, one_in: int):
    """``seldom`` about once in ``one_in`` draws, else ``common`` (hypothesis' one_of does not weight by repeating a
    branch); shrinks towards ``common``."""
    st = _strategies()
    return st.integers(0, one_in - 1).flatmap(lambda i: seldom if i == one_in - 1 else common)


def prompt_text():
    """Prompts of any length and alphabet: empty, blank, control characters, lone surrogates (JSON allows them),
    emoji, right-to-left scripts, very long."""
    st = _strategies()
    any_char = st.characters(exclude_categories=())  # every category, surrogates included
    special = st.sampled_from(["", " ", "\n\t ", "\x00", "\ud800", "a\udfffb", "\u202e\u0645\u0631\u062d\u0628\u0627",
                               "\U0001f525" * 200, "\u200b" * 50, "word " * 3000, "x" * 20000, "<pad></s><unk>",
                               "{prompt} %s \\n \\u0000", "a red car drifting, 4k video"])
    return st.one_of(
        st.text(any_char, max_size=40),
        st.text(any_char, max_size=400),
        st.text(st.characters(codec="ascii"), max_size=200),
        st.text(any_char, min_size=1, max_size=30).map(lambda s: s * (4000 // len(s) + 1)),
        special,
    )


def widget_strategy(name: str, spec: tuple, corrupt: bool = False):
    """(value, validity) pairs for one widget from its INPUT_TYPES entry.

    validity: True = ComfyUI must accept the value, False = its validation must reject it, None = either (what
    0.3.75 does not check: NaN against min/max, V3 combo values against the list). ``corrupt=False`` draws values
    ComfyUI accepts (in range, at the bounds, numbers as strings...); ``corrupt=True`` draws questionable ones (out of
    range, wrong type, NaN, infinities, combo values not in the list).
    """
    st = _strategies()
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if isinstance(kind, list):  # V1 combo
        options = {**options, "options": kind}
        kind = "COMBO"
    if kind == "INT":
        valid, questionable = _int_strategies(name, options)
    elif kind == "FLOAT":
        valid, questionable = _float_strategies(options)
    elif kind == "STRING":
        valid = weighted(prompt_text().map(lambda s: (s, True)),
                         st.integers(-5, 5).map(lambda v: (v, True)), 10)  # converted with str()
        questionable = valid  # every value converts to a string
    elif kind == "BOOLEAN":
        valid = st.booleans().map(lambda v: (v, True))
        questionable = st.sampled_from([0, 1, "", "false", None]).map(lambda v: (v, True))  # bool() of anything
    elif kind == "COMBO":
        choices = list(options.get("options") or [])
        valid = st.sampled_from(choices).map(lambda v: (v, True)) if choices else st.nothing()
        questionable = st.one_of(
            st.sampled_from(["", "none", "../../etc/passwd", "official ", "FP32", "auto\x00", "0", "\ud800"]),
            st.text(max_size=12),
        ).filter(lambda v: v not in choices).map(lambda v: (v, None))
        if choices:  # shapes that slip past ComfyUI's validation: a wrapped value (arrives as a list), a dict
            wrapped = st.sampled_from(choices).flatmap(
                lambda v: st.sampled_from([{"__value__": [v]}, {"value": v}])).map(lambda v: (v, None))
            questionable = st.one_of(questionable, wrapped)
    else:
        raise ValueError(f"no strategy for widget type {kind!r}")
    return questionable if corrupt else valid


def _int_strategies(name: str, options: dict):
    st = _strategies()
    lo, hi = options.get("min"), options.get("max")
    step = max(1, int(options.get("step", 1) or 1))
    cap = COST_CAPS.get(name)
    rare = RARE_VALUES.get(name, ())
    top = hi if cap is None else (cap if hi is None else min(hi, max(cap, lo if lo is not None else cap)))
    bottom = lo if lo is not None else (top - 1000 if top is not None else -1000)
    top = top if top is not None else bottom + 1000

    def keep(value: int) -> bool:
        return bottom <= value <= top and value not in rare

    in_range = st.integers(bottom, top).filter(keep)
    stepped = st.integers(0, max(0, (top - bottom) // step)).map(lambda k: bottom + k * step).filter(keep)
    edges = [v for v in (lo, hi, options.get("default"), bottom + step) if v is not None and keep(v)]
    core = st.one_of(stepped if step > 1 else in_range, *([st.sampled_from(edges)] if edges else []))
    variants = st.one_of(
        in_range.map(lambda v: (v, True)),  # off-step (a width of 100 for a step of 64): the node must say no itself
        core.map(lambda v: (str(v), True)),  # "64" converts with int()
        # 64.25 converts to 64 (floats lose integers beyond 2**53: 2**64 - 1 would become 2**64)
        core.filter(lambda v: abs(v) < 2**52).map(lambda v: (v + (0.25 if v >= 0 else -0.25), True)),
    )
    valid = weighted(core.map(lambda v: (v, True)), variants, 5)
    if rare:  # about 1 example in 20
        valid = weighted(valid, st.sampled_from(rare).map(lambda v: (v, True)), 20)
    # Lists are links in the API format: never drawn as values.
    bad = [st.sampled_from([None, "abc", "", "1e3x", float("nan"), float("inf"), float("-inf")])]
    if lo is not None:
        bad.append(st.one_of(st.just(lo - 1), st.integers(max_value=lo - 1)))
    if hi is not None:
        bad.append(st.one_of(st.just(hi + 1), st.integers(min_value=hi + 1)))
    return valid, st.one_of(*bad).map(lambda v: (v, False))


def _float_strategies(options: dict):
    st = _strategies()
    lo, hi = options.get("min"), options.get("max")
    edges = [v for v in (lo, hi, options.get("default")) if v is not None]
    plain = st.one_of(st.floats(lo, hi, allow_nan=False, allow_infinity=lo is None or hi is None),
                      *([st.sampled_from(edges)] if edges else []))
    valid = weighted(plain.map(lambda v: (v, True)),
                     st.one_of(plain.map(lambda v: (repr(float(v)), True)),  # "2.5" converts with float()
                               plain.filter(lambda v: float(v).is_integer()).map(lambda v: (int(v), True))), 6)
    bad = [st.sampled_from([None, "abc", "", "1,5"]).map(lambda v: (v, False)),
           st.just((float("nan"), None))]  # NaN passes ComfyUI's min/max checks
    if lo is not None:
        bad.append(st.floats(max_value=lo, exclude_max=True, allow_nan=False).map(lambda v: (v, False)))
    if hi is not None:
        bad.append(st.floats(min_value=hi, exclude_min=True, allow_nan=False).map(lambda v: (v, False)))
    return valid, st.one_of(*bad)


class GraphBuilder:
    """Builds one API-format graph inside a hypothesis ``draw``; remembers the validity of every drawn widget."""

    def __init__(self, host: Host, draw: Callable, hostility: int = 0) -> None:
        self.host = host
        self.draw = draw
        self.graph: dict[str, dict[str, Any]] = {}
        self.validity: dict[tuple[str, str], bool | None] = {}
        # 0: only values ComfyUI accepts (one bad widget would hide what the others do); n: each widget questionable
        # with probability n/10.
        self.hostility = hostility

    def add(self, class_type: str, links: dict[str, list] | None = None, fixed: dict[str, Any] | None = None,
            prefer: dict[str, Any] | None = None, optional_links: dict[str, list] | None = None) -> str:
        """A node: its link inputs as given, ``fixed`` widgets as given, every other widget drawn from the schema
        (optional ones also left out at times); ``prefer`` biases a widget towards one value (or the values of a
        strategy)."""
        st = _strategies()
        node_id = str(len(self.graph) + 1)
        inputs: dict[str, Any] = dict(links or {})
        for name, link in (optional_links or {}).items():
            if link is not None:
                inputs[name] = link
        fixed = fixed or {}
        prefer = prefer or {}
        for section, specs in self.host.schema(class_type).items():
            if section not in ("required", "optional"):
                continue
            for name, spec in specs.items():
                if name in inputs:
                    continue
                if name in fixed:
                    inputs[name] = fixed[name]
                    continue
                kind = spec[0]
                if not (isinstance(kind, list) or kind in WIDGET_TYPES):
                    continue  # a link input this graph leaves unconnected
                # hypothesis favours small integers (and shrinks towards them): 0 is the common case everywhere.
                if section == "optional" and self.draw(st.integers(0, 3)) == 3:
                    continue  # left out: the node's default applies
                corrupt = self.hostility > 0 and self.draw(st.integers(0, 9)) >= 10 - self.hostility
                preferred = name in prefer and not corrupt and self.draw(st.integers(0, 19)) != 19
                if preferred:
                    choice = prefer[name]
                    value = self.draw(choice, label=f"{node_id}.{name}") \
                        if isinstance(choice, st.SearchStrategy) else choice
                    valid = True
                else:
                    value, valid = self.draw(widget_strategy(name, spec, corrupt), label=f"{node_id}.{name}")
                inputs[name] = value
                self.validity[(node_id, name)] = valid
        self.graph[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    def probe(self, kind: str, link: list) -> str:
        node_id = f"probe_{kind.lower()}_{len(self.graph) + 1}"
        self.graph[node_id] = {"class_type": PROBES[kind], "inputs": {"value": link}}
        return node_id

    def widget(self, node_id: str, name: str, default: Any = None) -> Any:
        return self.graph[node_id]["inputs"].get(name, default)

    def has_invalid(self) -> bool:
        return any(v is False for v in self.validity.values())


# ---------------------------------------------------------------------------------------------------------------------
# Judging one run

class Violation(AssertionError):
    pass


def _num(value: Any) -> float | None:
    """The number ComfyUI passes to the node for an INT/FLOAT widget value (after its int()/float())."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_rejection(builder: GraphBuilder, result: RunResult) -> None:
    error, node_errors = result.error or {}, result.node_errors or {}
    if error.get("type") != "prompt_outputs_failed_validation":
        raise Violation(f"validation failed with {error.get('type')!r}, not ComfyUI's per-input errors: {error}")
    flagged = set()
    for node_id, entry in node_errors.items():
        for item in entry.get("errors", []):
            if item.get("type") not in VALIDATION_ERRORS:
                raise Violation(f"node {node_id} ({entry.get('class_type')}) failed validation with "
                                f"{item.get('type')}: {item.get('message')} {item.get('details')} "
                                f"{item.get('extra_info', {}).get('exception_type', '')}")
            flagged.add((node_id, item.get("extra_info", {}).get("input_name")))
    wrongly = {key for key in flagged if builder.validity.get(key) is True}
    if wrongly:
        raise Violation(f"validation rejected values drawn valid: {sorted(wrongly)}: {node_errors}")
    missed = {key for key, valid in builder.validity.items() if valid is False} - flagged
    if missed:
        raise Violation(f"validation did not flag the invalid values of {sorted(missed)}: {node_errors}")


def _frames_outside_pack(tb: list[str]) -> str | None:
    """The file of the innermost traceback frame, when it is not the pack's own code (nodes/, fusionframes/)."""
    files = re.findall(r'File "([^"]+)", line \d+', "".join(tb or []))
    if not files:
        return "<no traceback>"
    innermost = os.path.realpath(files[-1])
    return None if innermost.startswith(PACK_DIRS) else innermost


def check_failure(host: Host, result: RunResult) -> str:
    """The error's short type name, when it is one of ours raised by the pack; else a Violation."""
    error = result.error or {}
    if result.outcome != "failed":
        raise Violation(f"run ended as {result.outcome!r}: {error}")
    exc_type = str(error.get("exception_type", ""))
    short = exc_type.rsplit(".", 1)[-1]
    message = str(error.get("exception_message", "")).strip()
    node_type = error.get("node_type")
    where = f"{node_type} (node {error.get('node_id')})"
    tb = "".join(error.get("traceback") or [])
    if node_type not in host.pack_nodes:
        raise Violation(f"{where} failed -- not one of the pack's nodes: {exc_type}: {message}\n{tb}")
    documented = (short in OUR_ERRORS and exc_type.endswith(f"fusionframes.errors.{short}")) or exc_type in NODE_ERRORS
    if not documented:
        raise Violation(f"{where} let a raw {exc_type} escape: {message}\n{tb}")
    outside = _frames_outside_pack(error.get("traceback"))
    if outside:
        raise Violation(f"{where}: {exc_type} raised outside the pack's code ({outside}): {message}\n{tb}")
    if not message:
        raise Violation(f"{where}: {exc_type} without a message\n{tb}")
    if RAW_ERROR.search(message):
        raise Violation(f"{where}: {exc_type} whose message is a raw PyTorch/Python error: {message}\n{tb}")
    return short


def check_image(value: Any, frames: int | None, height: int | None, width: int | None, what: str) -> None:
    import torch

    if not isinstance(value, torch.Tensor):
        raise Violation(f"{what}: IMAGE is a {type(value).__name__}, not a tensor")
    if value.dim() != 4 or value.shape[-1] != 3:
        raise Violation(f"{what}: IMAGE of shape {tuple(value.shape)}, not (N, H, W, 3)")
    expected = (frames, height, width)
    actual = tuple(value.shape[:3])
    if any(e is not None and e != a for e, a in zip(expected, actual, strict=True)):
        raise Violation(f"{what}: IMAGE of shape {tuple(value.shape)}, expected (N, H, W) = {expected}")
    if not value.is_floating_point() or value.dtype != torch.float32:
        raise Violation(f"{what}: IMAGE of dtype {value.dtype}, not float32")
    if value.numel() == 0:
        raise Violation(f"{what}: empty IMAGE {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise Violation(f"{what}: IMAGE with NaN/inf values")
    if value.min() < 0 or value.max() > 1:
        raise Violation(f"{what}: IMAGE values in [{value.min():.4g}, {value.max():.4g}], not [0, 1]")


def check_latent(value: Any, frames: int | None, height: int | None, width: int | None, what: str) -> dict:
    import torch

    if not isinstance(value, dict) or not isinstance(value.get("samples"), torch.Tensor):
        raise Violation(f"{what}: LATENT is not a dict with a 'samples' tensor: {type(value).__name__}")
    samples = value["samples"]
    lat = (None if height is None else height // 8, None if width is None else width // 8)
    expected = (frames, 4, *lat)
    if samples.dim() != 4 or any(e is not None and e != a for e, a in zip(expected, samples.shape, strict=True)):
        raise Violation(f"{what}: LATENT samples of shape {tuple(samples.shape)}, expected {expected}")
    if not samples.is_floating_point() or not torch.isfinite(samples).all():
        raise Violation(f"{what}: LATENT samples not finite floats ({samples.dtype})")
    info = value.get("fusionframes")
    if not isinstance(info, dict) or not math.isfinite(float(info.get("fps", float("nan")))) or info["fps"] <= 0:
        raise Violation(f"{what}: LATENT without a finite positive frame rate: {info}")
    return info


def check_fps(value: Any, expected: float | None, what: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise Violation(f"{what}: fps {value!r} is not a finite positive number")
    if expected is not None and not math.isclose(value, expected, rel_tol=1e-6):
        raise Violation(f"{what}: fps {value!r}, expected {expected!r}")


# ---------------------------------------------------------------------------------------------------------------------
# The properties

RELEASES = ("1.0", "1.1")
FILES = {
    "1.0": {"keyframe": "kandinsky_video_1_0/kandinsky_video.pt",
            "interpolation": "kandinsky_video_1_0/kandinsky_video_interpolation.pt",
            "movq": "kandinsky_video_1_0/movq.pt", "projections": "kandinsky_video_1_0/kandinsky_video.pt"},
    "1.1": {"keyframe": "kandinsky_video_1_1/t2v.pt", "interpolation": "kandinsky_video_1_1/interpolation.pt",
            "movq": "kandinsky_video_1_1/movq.pt", "video_movq": "kandinsky_video_1_1/video_movq.pt",
            "projections": "kandinsky_video_1_1/t5_projections.pt"},
}
FAST = {"sampler": "ddim", "steps": 2}
SHRINK_SECONDS = 60


def _sampler_choice():
    """Mostly the fast samplers: the official one takes only its own step counts (1.1: 50 / 10 = 0 steps, drawn
    rarely), so with capped steps it mostly fails early (with our error, which is checked too)."""
    st = _strategies()
    return weighted(st.sampled_from(["ddim", "dpmpp_2m"]), st.just("official"), 5)


def official_keyframes(release: str) -> int:
    from fusionframes.tools.demo_models import KEYFRAMES_10

    return KEYFRAMES_10 if release == "1.0" else 12


@dataclass
class Stats:
    examples: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: Counter = field(default_factory=Counter)
    violations: int = 0
    seconds: float = 0.0

    def line(self, name: str) -> str:
        failed = sum(self.failed.values())
        kinds = ", ".join(f"{k} {n}" for k, n in self.failed.most_common())
        return (f"{name:<20} {self.examples:3d} examples: {self.accepted:3d} accepted, {self.rejected:3d} rejected at "
                f"validation, {failed:3d} failed with our error ({kinds or '-'})"
                + (f", {self.violations} VIOLATIONS (shrinking included)" if self.violations else "")
                + f"; {self.seconds:.0f} s")


class Properties:
    def __init__(self, host: Host, scale: float, shrink: bool, seed: int, verbose: bool = False) -> None:
        self.host = host
        self.verbose = verbose
        self.scale = scale
        self.shrink = shrink
        self.seed = seed
        self.stats: dict[str, Stats] = {}

    # -- shared pieces

    def dtype_choice(self, class_type: str, usual: str):
        """Mostly the usual weight dtype (a loaded model is reused while its loader's inputs stay the same), else any
        of the loader's own options (fp16 / bf16 / fp8... on the CPU)."""
        st = _strategies()
        schema = self.host.schema(class_type)
        spec = {**schema.get("required", {}), **schema.get("optional", {})}.get("weight_dtype")
        options = (spec[1].get("options") if spec and len(spec) > 1 and isinstance(spec[1], dict) else None) or [usual]
        return weighted(st.just(usual), st.sampled_from(options), 4)

    def text_encoder(self, b: GraphBuilder, release: str) -> str:
        loader = "FusionFramesLoadTextEncoder"
        return b.add(loader, prefer={"projections": FILES[release]["projections"], "text_encoder": "flan-ul2",
                                     "weight_dtype": self.dtype_choice(loader, "auto")})

    def loader(self, b: GraphBuilder, class_type: str, file: str, dtype: str = "auto") -> str:
        # decoded previews are the image MoVQ's (the temporal MoVQ's loader refuses them, by design)
        fixed = {"decoded_preview_every": 0} if class_type == "FusionFramesLoadMoVQ" and "video_movq" in file else None
        return b.add(class_type, fixed=fixed,
                     prefer={"ckpt_name": file, "weight_dtype": self.dtype_choice(class_type, dtype)})

    def judge(self, name: str, b: GraphBuilder, on_success: Callable[[RunResult], None]) -> None:
        stats = self.stats.setdefault(name, Stats())
        stats.examples += 1
        started = time.monotonic()
        result = self.host.run(b.graph)
        if self.verbose:
            error = result.error or {}
            detail = (error.get("exception_type", "") + ": " + str(error.get("exception_message", ""))[:200]
                      if result.outcome == "failed" else
                      sorted({(n, e.get("extra_info", {}).get("input_name")) for n, v in result.node_errors.items()
                              for e in v.get("errors", [])}) if result.outcome == "rejected" else "")
            seconds = time.monotonic() - started
            print(f"  {name}: {result.outcome} in {seconds:.2f} s {detail}".rstrip(), flush=True)
            if seconds > 5:
                print(_show_graph(b.graph, 60), flush=True)
        try:
            if result.outcome == "rejected":
                check_rejection(b, result)
                stats.rejected += 1
                return
            if b.has_invalid():
                raise Violation(f"values drawn invalid passed validation: "
                                f"{sorted(k for k, v in b.validity.items() if v is False)}")
            if result.outcome == "accepted":
                on_success(result)
                stats.accepted += 1
                return
            stats.failed[check_failure(self.host, result)] += 1
        except Violation as violation:
            stats.violations += 1
            if self.verbose:
                print(f"  {name}: VIOLATION {str(violation).splitlines()[0][:300]}", flush=True)
            raise Violation(f"{violation}\n\ngraph:\n{_show_graph(b.graph)}") from None

    # -- 1. Text Encode

    def text_encode(self, draw, hostility: int = 0, name: str = "text_encode") -> None:
        st = _strategies()
        b = GraphBuilder(self.host, draw, hostility)
        release = draw(st.sampled_from(RELEASES), label="release")
        encoder = self.text_encoder(b, release)
        encode = b.add("FusionFramesTextEncode", links={"text_encoder": [encoder, 0]})
        probe = b.probe("FUSIONFRAMES_CONDITIONING", [encode, 0])

        def success(result: RunResult) -> None:
            import torch

            cond = result.outputs[probe]
            context, mask = cond.context, cond.mask
            if context.dim() != 3 or context.shape[0] != 1 or context.shape[1] < 1:
                raise Violation(f"conditioning context of shape {tuple(context.shape)}")
            if not torch.isfinite(context).all():
                raise Violation("conditioning context with NaN/inf")
            if tuple(mask.shape) != tuple(context.shape[:2]) or int(mask.sum()) < 1:
                raise Violation(f"conditioning mask {tuple(mask.shape)} (sum {int(mask.sum())}) does not fit the "
                                f"context {tuple(context.shape)}")
            if cond.negative is not None and not torch.isfinite(cond.negative.context).all():
                raise Violation("negative context with NaN/inf")

        self.judge(name, b, success)

    # -- 2. T2V Keyframe Sampler (+ Temporal Block Selector, image-to-video)

    def keyframe_sampler(self, draw, hostility: int = 0, name: str = "keyframe_sampler") -> None:
        st = _strategies()
        b = GraphBuilder(self.host, draw, hostility)
        release = draw(st.sampled_from(RELEASES), label="release")
        text_release = draw(weighted(st.just(release), st.sampled_from(RELEASES), 8), label="text release")
        model = self.loader(b, "FusionFramesLoadKeyframeModel", FILES[release]["keyframe"])
        if draw(st.booleans(), label="temporal block selector"):
            model = b.add("FusionFramesTemporalBlockSelector", links={"keyframe_model": [model, 0]},
                          prefer={"variant": "auto", "levels": weighted(
                              st.sampled_from(["all", "none", "", "0", "1,2", " 0 , 2 ", "2", "0,1,2", "ALL"]),
                              st.sampled_from(["3", "0,1,2,3", "-1", "1..2", "one", "1,,2"]), 5)})
        encoder = self.text_encoder(b, text_release)
        encode = b.add("FusionFramesTextEncode", links={"text_encoder": [encoder, 0]},
                       fixed={"prompt": "a red car drifting", "negative_prompt": draw(st.sampled_from(["", "blurry"]))})
        movq = None
        if release == "1.1" or draw(st.booleans(), label="movq on 1.0"):
            movq_file = draw(st.sampled_from(["movq", "movq", "movq", "other"]), label="movq file")
            movq_file = FILES["1.1"]["movq"] if movq_file == "movq" else FILES["1.0"]["movq"]
            connected = draw(st.integers(0, 7), label="movq left out") != 7
            movq = [self.loader(b, "FusionFramesLoadMoVQ", movq_file, "fp32"), 0] if connected else None
        image = None
        if draw(st.integers(0, 2), label="image") == 2:
            image = [b.add("EmptyImage", fixed={
                "width": draw(st.integers(1, 160), label="image width"),
                "height": draw(st.integers(1, 160), label="image height"),
                "batch_size": draw(st.integers(1, 2), label="image batch"),
                "color": draw(st.integers(0, 0xFFFFFF), label="image color")}), 0]
        sampler = b.add("FusionFramesKeyframeSampler",
                        links={"keyframe_model": [model, 0], "conditioning": [encode, 0]},
                        optional_links={"movq": movq, "image": image},
                        prefer={"sampler": draw(_sampler_choice(), label="sampler")})
        probe = b.probe("LATENT", [sampler, 0])

        def success(result: RunResult) -> None:
            keyframes = int(_num(b.widget(sampler, "keyframes")))
            width, height = (int(_num(b.widget(sampler, key))) for key in ("width", "height"))
            frames = keyframes or official_keyframes(release)
            info = check_latent(result.outputs[probe], frames, height, width, "T2V Keyframe Sampler")
            if info.get("release") != release:
                raise Violation(f"keyframes LATENT says release {info.get('release')}, model is {release}")

        self.judge(name, b, success)

    # -- 3. Latent Frame Interpolator + Temporal MoVQ Decode

    def interpolate_decode(self, draw, hostility: int = 0, name: str = "interpolate_decode") -> None:
        st = _strategies()
        b = GraphBuilder(self.host, draw, hostility)
        release = draw(st.sampled_from(RELEASES), label="release")
        source = draw(weighted(st.sampled_from(["encoded video", "keyframes"]), st.just("foreign latent"), 8),
                      label="source")
        # Decoding is what costs here (the temporal MoVQ takes ~0.5 s per 128x128 frame on one CPU thread): 128
        # pixels only with few frames and one pass.
        side = draw(weighted(st.just(64), st.just(128), 6), label="side")
        frames = draw(weighted(st.integers(2, 3 if side == 64 else 2), st.just(1), 6), label="source frames")
        fps_in = None
        encoder = self.text_encoder(b, release)
        encode = b.add("FusionFramesTextEncode", links={"text_encoder": [encoder, 0]},
                       fixed={"prompt": draw(prompt_text(), label="prompt"), "negative_prompt": ""})
        if source == "encoded video":
            pixels = b.add("EmptyImage", fixed={"width": side, "height": side, "batch_size": frames,
                                                "color": draw(st.integers(0, 0xFFFFFF), label="color")})
            movq = self.loader(b, "FusionFramesLoadMoVQ", FILES[release]["movq"], "fp32")
            latent = b.add("FusionFramesMoVQEncode", links={"movq": [movq, 0], "images": [pixels, 0]})
            fps_in = _num(b.widget(latent, "fps", 24.0))
        elif source == "keyframes":
            model = self.loader(b, "FusionFramesLoadKeyframeModel", FILES[release]["keyframe"])
            movq = self.loader(b, "FusionFramesLoadMoVQ", FILES[release]["movq"], "fp32")
            latent = b.add("FusionFramesKeyframeSampler", links={"keyframe_model": [model, 0],
                                                                 "conditioning": [encode, 0], "movq": [movq, 0]},
                           fixed={"width": side, "height": side, "keyframes": frames, "seed": 1, "guidance": 5.0,
                                  "image_guidance": 2.0, "first_frame_guidance": 5.0, "motion": "medium",
                                  "noise_augmentation": 20, **FAST})
            fps_in = 2.0
        else:
            latent = b.add("EmptyLatentImage", fixed={"width": side, "height": side, "batch_size": frames})
        passes = 0
        if draw(st.integers(0, 3), label="no interpolation") != 3:
            model = self.loader(b, "FusionFramesLoadInterpolationModel", FILES[release]["interpolation"])
            cond = [encode, 0] if release == "1.0" or draw(st.integers(0, 7), label="no prompt") != 7 else None
            if release == "1.0" and draw(st.booleans(), label="conditioning on 1.0"):
                cond = None
            latent = b.add("FusionFramesFrameInterpolator",
                           links={"interpolation_model": [model, 0], "latent": [latent, 0]},
                           optional_links={"conditioning": cond}, fixed={"passes": 1} if side > 64 else None,
                           prefer={"sampler": draw(_sampler_choice(), label="sampler")})
            passes = _num(b.widget(latent, "passes", 1))
        movq_file = draw(st.sampled_from(["video_movq", "movq"] if release == "1.1" else ["movq"]), label="decoder")
        movq = self.loader(b, "FusionFramesLoadMoVQ", FILES[release][movq_file], "fp32")
        decode = b.add("FusionFramesMoVQDecode", links={"movq": [movq, 0], "latent": [latent, 0]})
        images = b.probe("IMAGE", [decode, 0])
        fps = b.probe("FLOAT", [decode, 1])

        def success(result: RunResult) -> None:
            count = frames
            for _ in range(int(passes or 0)):
                count = 4 * count - 3
            check_image(result.outputs[images], count, side, side, "Temporal MoVQ Decode")
            expected_fps = None
            if fps_in is not None and math.isfinite(fps_in):
                expected_fps = fps_in * 4 ** int(passes or 0)
            check_fps(result.outputs[fps], expected_fps, "Temporal MoVQ Decode")

        self.judge(name, b, success)

    # -- 4. MoVQ Encode -> Decode on images of any size

    def movq_codec(self, draw, hostility: int = 0, name: str = "movq_codec") -> None:
        st = _strategies()
        b = GraphBuilder(self.host, draw, hostility)
        release = draw(st.sampled_from(RELEASES), label="release")
        sides = weighted(st.integers(1, 17).map(lambda k: 8 * k), st.integers(1, 136), 5)
        width = draw(sides, label="width")
        height = draw(sides, label="height")
        count = draw(st.integers(1, 4), label="frames")
        pixels = b.add("EmptyImage", fixed={"width": width, "height": height, "batch_size": count,
                                            "color": draw(st.integers(0, 0xFFFFFF), label="color")})
        encoder_file = FILES[release]["movq"]
        decoder_file = FILES[release][draw(st.sampled_from(["video_movq", "movq"] if release == "1.1" else ["movq"]),
                                           label="decoder")]
        enc_movq = self.loader(b, "FusionFramesLoadMoVQ", encoder_file, "fp32")
        latent = b.add("FusionFramesMoVQEncode", links={"movq": [enc_movq, 0], "images": [pixels, 0]})
        dec_movq = self.loader(b, "FusionFramesLoadMoVQ", decoder_file, "fp32")
        decode = b.add("FusionFramesMoVQDecode", links={"movq": [dec_movq, 0], "latent": [latent, 0]})
        images = b.probe("IMAGE", [decode, 0])
        fps = b.probe("FLOAT", [decode, 1])

        def success(result: RunResult) -> None:
            check_image(result.outputs[images], count, height, width, "MoVQ Encode -> Temporal MoVQ Decode")
            fps_in = _num(b.widget(latent, "fps", 24.0))
            check_fps(result.outputs[fps], fps_in if fps_in is not None and math.isfinite(fps_in) else None,
                      "Temporal MoVQ Decode")

        self.judge(name, b, success)

    # -- running them

    # -- 5. Any of the graphs above with questionable widget values (out of range, wrong type, NaN, not in the list)

    def hostile_widgets(self, draw) -> None:
        st = _strategies()
        graph = draw(st.sampled_from(["keyframe_sampler", "interpolate_decode", "movq_codec", "text_encode"]),
                     label="graph")
        hostility = draw(st.sampled_from([1, 3, 6]), label="hostility")
        getattr(self, graph)(draw, hostility, name="hostile_widgets")

    #: property -> max_examples
    PROPERTIES = {"text_encode": 50, "keyframe_sampler": 50, "interpolate_decode": 40, "movq_codec": 40,
                  "hostile_widgets": 60}

    def run(self, only: list[str] | None) -> list[tuple[str, str]]:
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import seed as hypothesis_seed
        from hypothesis import strategies as st

        failures = []
        # Shrinking replays examples, some of which take seconds (0 steps = the official 50): stop it after a minute
        # (hypothesis' own limit, 5 minutes, is a private constant) and report the smallest failure found by then.
        from hypothesis.internal.conjecture import engine

        if hasattr(engine, "MAX_SHRINKING_SECONDS"):
            engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS
        for name, examples in self.PROPERTIES.items():
            if only and name not in only:
                continue
            body = getattr(self, name)
            phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if self.shrink else [])
            config = settings(max_examples=max(1, round(examples * self.scale)), deadline=None, database=None,
                              phases=phases, suppress_health_check=list(HealthCheck), print_blob=False,
                              report_multiple_bugs=False)

            test = hypothesis_seed(self.seed)(config(given(st.data())(_draw_into(body))))
            started = time.monotonic()
            try:
                test()
            except Exception as error:  # the falsifying example (hypothesis prints its draws in the notes)
                notes = "\n".join(getattr(error, "__notes__", []))
                failures.append((name, f"{type(error).__name__}: {error}\n{notes}"))
                if not isinstance(error, Violation):
                    failures[-1] = (name, failures[-1][1] + "\n" + "".join(traceback.format_exception(error)))
            finally:
                self.stats.setdefault(name, Stats()).seconds = time.monotonic() - started
            print(self.stats[name].line(name), flush=True)
            stats = self.stats[name]
            if name != "hostile_widgets" and stats.examples >= 20 and not stats.accepted and not stats.violations:
                failures.append((name, f"no example of {stats.examples} ran through: the graphs are broken, so the "
                                       "property checked no output"))
        return failures


def _draw_into(body: Callable) -> Callable:
    def test(data) -> None:
        body(data.draw)

    return test


def _show_graph(graph: dict[str, Any], limit: int = 160) -> str:
    lines = []
    for node_id, node in graph.items():
        shown = {k: (repr(v)[:limit] + ("..." if len(repr(v)) > limit else "")) for k, v in node["inputs"].items()}
        lines.append(f"  {node_id}: {node['class_type']} " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random, printed)")
    parser.add_argument("--examples-scale", type=float, default=1.0, help="multiply every property's max_examples")
    parser.add_argument("--only", action="append", choices=list(Properties.PROPERTIES), help="run only these")
    parser.add_argument("--no-shrink", action="store_true", help="report the first failing example as found")
    parser.add_argument("--verbose", action="store_true", help="print the outcome of every example")
    options = parser.parse_args(argv)
    seed = options.seed if options.seed is not None else int.from_bytes(os.urandom(4), "little")
    started = time.monotonic()
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        _fail_setup(f"hypothesis is not installed in {sys.executable}: run scripts/install_comfyui_host.sh")
    try:
        host = Host()
    except SystemExit:
        raise
    except BaseException:
        _fail_setup("ComfyUI could not be set up in-process:\n" + traceback.format_exc())
    print(f"ComfyUI in-process with the pack ({len(host.pack_nodes)} nodes) after {time.monotonic() - started:.0f} s;"
          f" hypothesis seed {seed}", flush=True)
    properties = Properties(host, options.examples_scale, not options.no_shrink, seed, options.verbose)
    failures = properties.run(options.only)
    total = sum(s.examples for s in properties.stats.values())
    print(f"{total} examples in {time.monotonic() - started:.0f} s", flush=True)
    for name, text in failures:
        print(f"\nVIOLATION in property {name!r} (reproduce: .host/venv/bin/python tests/e2e/node_properties.py "
              f"--seed {seed} --only {name}; shrinking stops after {SHRINK_SECONDS} s, whatever hypothesis' own "
              f"message says):\n{text}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
