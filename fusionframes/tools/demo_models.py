"""Tiny random-weight demo models in exactly the official file layouts.

They let a fresh machine (CI, a user without the tens of GB of real weights) run the whole pipeline end to end:
the files are read by the same loaders as the official checkpoints, so every code path from file detection to the
written video is exercised. The videos they make are noise-like patterns, not pictures.

Layout written under ``root``::

    k10/kandinsky_video.pt                {'unet', 'null_embedding', 'projections': {'t5.0.weight', 't5.1.*'}}
    k10/kandinsky_video_interpolation.pt  {'unet', 'null_embedding'}
    k10/movq.pt                           flat image-MoVQ state dict
    k10/configs.json                      1.1's configs.json schema (1.0 ships none)
    k11/t2v.pt, k11/interpolation.pt      {'unet': fp16 state dict, 'null_embedding': fp32}
    k11/movq.pt, k11/video_movq.pt        flat MoVQ state dicts (image / temporal decoder)
    k11/t5_projections.pt                 {'projection_base': {...}, 'projection_interpolation': {...}}
    k11/configs.json
    text_encoder/                         tiny T5 (Hugging Face layout) + a sentencepiece tokenizer trained here

Everything is generated from ``seed`` alone (each file from its own generator, so skipping existing files does not
change the others): the same seed gives identical tensors. Nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..io.checkpoints import build_model
from ..models.configs import load_release_config
from .random_weights import BIAS_STD, normal, randomize_parameters

#: T5 width of the demo text encoder (the projections map it to each release's context width)
TEXT_D_MODEL = 32
#: 1.0's official pipeline hard-codes a 4096-wide text context; 1.1 reads it from configs.json
CONTEXT_DIM_10 = 4096
CONTEXT_DIM_11 = 64
TOKENS_LENGTH = 32
KEYFRAMES_10 = 5
SENTENCEPIECE_VOCAB = 256

#: every file create_demo_models writes, relative to ``root``
DEMO_FILES = (
    "k10/configs.json",
    "k10/kandinsky_video.pt",
    "k10/kandinsky_video_interpolation.pt",
    "k10/movq.pt",
    "k11/configs.json",
    "k11/t2v.pt",
    "k11/interpolation.pt",
    "k11/movq.pt",
    "k11/video_movq.pt",
    "k11/t5_projections.pt",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder/spiece.model",
    "text_encoder/tokenizer.json",
    "text_encoder/tokenizer_config.json",
)

# Training text for the demo tokenizer: prompt-like English, so demo prompts split into real sub-words.
_CORPUS = """\
A red fox runs through the snowy forest at sunset.
A cat is sitting on a wooden table near the open window.
Waves crash on the rocky shore under a cloudy grey sky.
A busy city street at night with neon lights and falling rain.
An astronaut rides a white horse across the surface of the moon.
A small boat sails on a calm blue lake surrounded by tall mountains.
Cherry blossoms fall slowly in a quiet Japanese garden in spring.
A golden retriever puppy plays with a ball on the green grass.
Fireworks explode over the river and light up the old bridge.
A steaming cup of coffee on a desk beside a stack of books.
A dragon flies above the castle towers in the morning fog.
Children run along the beach and fly a colourful kite in the wind.
A train moves through a desert canyon under the bright summer sun.
Autumn leaves drift down onto a path in the park.
A robot walks down an empty road in a futuristic city.
The camera slowly zooms in on a blooming sunflower field.
A waterfall pours into a deep pool in the middle of a jungle.
A chef is cooking pasta in a warm kitchen with copper pots.
Snow is falling on a cozy wooden cabin with smoke rising from the chimney.
A jellyfish glows in the dark water of the deep ocean.
Two horses gallop across a wide meadow full of yellow flowers.
An old man plays the violin on a street corner in Paris.
Lightning strikes behind a lighthouse during a stormy night.
A hot air balloon floats over green hills and a winding river.
A bird lands on a branch and sings in the early morning light.
Time lapse of clouds moving over a mountain village.
A panda eats bamboo in a misty forest.
A sports car drives fast along a coastal highway at dusk.
A candle flickers on a table in a dark room.
Rain drops run down the glass of a window in slow motion.
A girl with a red umbrella walks through a crowded market.
Stars turn slowly in the night sky above a quiet desert.
A volcano erupts and bright lava flows down to the sea.
A cup of tea, a book and a sleeping cat by the fireplace.
High quality, cinematic, detailed, beautiful colours, smooth motion, 4k video.
Low quality, blurry, distorted, static, ugly, noisy frames.
"""

def _unet_section(num_channels: int, out_channels: int, context_dim: int, **extra: Any) -> dict[str, Any]:
    return {"configs": {
        "model_channels": 32,
        "init_channels": 16,
        "time_embed_dim": 64,
        "context_dim": context_dim,
        "groups": 4,
        "head_dim": 16,
        "expansion_ratio": 2,
        "compression_ratio": 2,
        "dim_mult": [1, 2, 2],
        "num_blocks": [2, 2, 2],
        "add_cross_attention": [False, True, True],
        "add_self_attention": [False, True, True],
        "num_channels": num_channels,
        "out_channels": out_channels,
        **extra,
    }}


def _movq_section(temporal: bool | None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "double_z": False,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "attn_resolutions": [32],
        "dropout": 0.0,
        "ch": 32,
        "ch_mult": [1, 1, 2, 2],
        "num_res_blocks": 1,
    }
    if temporal is not None:
        values.update(temporal=temporal, temporal_attention_block=temporal, temporal_kernel_size=[3, 3, 3],
                      temporal_conv_padding=[1, 1, 1])
    return {"configs": values}


def _text_section(context_dim: int) -> dict[str, Any]:
    return {"tokens_length": TOKENS_LENGTH, "context_dim": context_dim, "weights_path": "../text_encoder",
            "low_cpu_mem_usage": True, "load_in_8bit": False, "load_in_4bit": False}


def demo_configs(release: str) -> dict[str, Any]:
    """The configs.json content of a release's demo models (the official schema, tiny values)."""
    if release == "1.0":
        return {
            "text_encoder": _text_section(CONTEXT_DIM_10),
            "image_movq": _movq_section(None),
            "t2v": _unet_section(4, 4, CONTEXT_DIM_10, num_frames=KEYFRAMES_10),
            "interpolation": _unet_section(20, 12, CONTEXT_DIM_10, interpolation=True),
        }
    if release == "1.1":
        return {
            "text_encoder": _text_section(CONTEXT_DIM_11),
            "image_movq": _movq_section(False),
            "video_movq": _movq_section(True),
            "t2v": _unet_section(9, 4, CONTEXT_DIM_11, noise_augmentation=True, motion_score=True),
            "interpolation": _unet_section(20, 12, CONTEXT_DIM_11),
        }
    raise ConfigError(f"unknown release {release!r}; the demo models exist for 1.0 and 1.1.")


# ---------------------------------------------------------------------------------------------------------------------
# random weights (the rule for every parameter is random_weights.randomize_parameters)


def _generator(seed: int, name: str) -> torch.Generator:
    """One generator per output file, so each file depends only on (seed, its name)."""
    return torch.Generator(device="cpu").manual_seed((int(seed) * 0x9E3779B1 + zlib.crc32(name.encode())) % 2**63)


def _projection(out_dim: int, in_dim: int, generator: torch.Generator, prefix: str = "") -> dict[str, torch.Tensor]:
    """``Sequential(Linear(in, out, bias=False), LayerNorm(out))`` state dict."""
    return {
        f"{prefix}0.weight": normal((out_dim, in_dim), 1 / math.sqrt(in_dim), generator),
        f"{prefix}1.weight": torch.ones(out_dim),
        f"{prefix}1.bias": normal((out_dim,), BIAS_STD, generator),
    }


def _state_dict(release: str, kind: str, configs_path: Path, generator: torch.Generator) -> dict[str, torch.Tensor]:
    config = load_release_config(configs_path, release).for_kind(kind)
    model = randomize_parameters(build_model(release, kind, config), generator)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _unet_file(release: str, kind: str, configs_path: Path, generator: torch.Generator,
               half: bool, with_projections: bool = False) -> dict[str, Any]:
    unet = _state_dict(release, kind, configs_path, generator)
    if half:
        unet = {k: v.half() for k, v in unet.items()}
    context_dim = load_release_config(configs_path, release).for_kind(kind).context_dim
    content: dict[str, Any] = {"unet": unet, "null_embedding": normal((context_dim,), 1.0, generator)}
    if with_projections:
        content["projections"] = _projection(context_dim, TEXT_D_MODEL, generator, prefix="t5.")
    return content


def _projections_file(configs_path: Path, generator: torch.Generator) -> dict[str, Any]:
    context_dim = load_release_config(configs_path, "1.1").text.context_dim
    return {
        "projection_base": _projection(context_dim, TEXT_D_MODEL, generator),
        "projection_interpolation": _projection(context_dim, TEXT_D_MODEL, generator),
    }


# ---------------------------------------------------------------------------------------------------------------------
# writing


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write through a temporary file in the same folder and rename, so a crash never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(temporary, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _save_torch(content: Mapping[str, Any], path: Path) -> None:
    # Saving to a file object (not a name) keeps the archive's internal folder name fixed, so bytes are reproducible.
    _atomic_write(path, lambda file: torch.save(dict(content), file))


def _save_json(content: Mapping[str, Any], path: Path) -> None:
    _atomic_write(path, lambda file: file.write((json.dumps(content, indent=1) + "\n").encode()))


def _train_tokenizer(folder: Path) -> int:
    """Train the sentencepiece model (T5 ids: pad 0, eos 1, unk 2, no bos) into ``folder``; returns its vocab size."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS.splitlines()), model_writer=model, model_type="unigram",
        vocab_size=SENTENCEPIECE_VOCAB, hard_vocab_limit=False, character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        num_threads=1, minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()


def _write_text_encoder(target: Path, seed: int) -> None:
    """A tiny FLAN-style T5 (``T5Model``: loads as ``T5Model`` for 1.0 and ``T5EncoderModel`` for 1.1) + tokenizer.

    Built in a temporary folder, then written into ``target`` file by file (each write atomic).
    """
    from transformers import AutoTokenizer, T5Config, T5Model
    from transformers.utils import logging as hf_logging

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".text_encoder.", dir=target.parent) as scratch:
        folder = Path(scratch)
        vocab_size = _train_tokenizer(folder)
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "T5Tokenizer", "extra_ids": 0, "legacy": True,
            "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
        }))
        # Let transformers convert the sentencepiece model once and store tokenizer.json next to it (fast loading).
        AutoTokenizer.from_pretrained(folder).save_pretrained(folder)
        config = T5Config(
            vocab_size=vocab_size, d_model=TEXT_D_MODEL, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=1,
            num_heads=4, feed_forward_proj="gated-silu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
            tie_word_embeddings=True,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_generator(seed, "text_encoder").initial_seed())
            model = T5Model(config).eval()
        bars_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar for a 180 kB file
        try:
            model.save_pretrained(folder, safe_serialization=True)
        finally:
            if bars_enabled:
                hf_logging.enable_progress_bar()
        for name in ("spiece.model", "tokenizer.json", "tokenizer_config.json", "model.safetensors", "config.json"):
            data = (folder / name).read_bytes()  # rewritten (not moved) so the files get the usual permissions
            _atomic_write(target / name, lambda file, data=data: file.write(data))


def _needed(path: Path, overwrite: bool) -> bool:
    return overwrite or not path.is_file()


def create_demo_models(root: Path, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the tiny demo models under ``root`` (see the module docstring for the layout); returns ``root``.

    Files already present are kept unless ``overwrite`` (a ``configs.json`` already there is the one the models are
    built from, so they always match it). Takes a few seconds on a CPU.
    """
    root = Path(root)
    for release, folder in (("1.0", "k10"), ("1.1", "k11")):
        configs = root / folder / "configs.json"
        if _needed(configs, overwrite):
            _save_json(demo_configs(release), configs)

    k10, k11 = root / "k10" / "configs.json", root / "k11" / "configs.json"
    jobs: list[tuple[str, Callable[[torch.Generator], Mapping[str, Any]]]] = [
        ("k10/kandinsky_video.pt", lambda g: _unet_file("1.0", "keyframe", k10, g, half=False, with_projections=True)),
        ("k10/kandinsky_video_interpolation.pt", lambda g: _unet_file("1.0", "interpolation", k10, g, half=False)),
        ("k10/movq.pt", lambda g: _state_dict("1.0", "movq", k10, g)),
        ("k11/t2v.pt", lambda g: _unet_file("1.1", "keyframe", k11, g, half=True)),
        ("k11/interpolation.pt", lambda g: _unet_file("1.1", "interpolation", k11, g, half=True)),
        ("k11/movq.pt", lambda g: _state_dict("1.1", "movq", k11, g)),
        ("k11/video_movq.pt", lambda g: _state_dict("1.1", "video_movq", k11, g)),
        ("k11/t5_projections.pt", lambda g: _projections_file(k11, g)),
    ]
    for name, make in jobs:
        path = root / name
        if _needed(path, overwrite):
            _save_torch(make(_generator(seed, name)), path)

    text_folder = root / "text_encoder"
    if any(_needed(root / name, overwrite) for name in DEMO_FILES if name.startswith("text_encoder/")):
        _write_text_encoder(text_folder, seed)
    return root


def missing_demo_files(root: Path) -> list[str]:
    """The demo files not yet under ``root`` (empty when ``create_demo_models`` has nothing left to do)."""
    return [name for name in DEMO_FILES if not (Path(root) / name).is_file()]
