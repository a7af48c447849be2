"""Text stack: tokenisation, T5 loading, projections, masking/trimming, and the ``text_encoding`` golden case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fusionframes.errors import CheckpointError, InputError
from fusionframes.models.configs import load_release_config
from fusionframes.models.fp8_weights import Float8Linear
from fusionframes.models.text.encoder import TextEncoder, encode_prompt
from fusionframes.models.text.projections import TextProjection, load_projections
from fusionframes.models.text.t5_files import FLAN_UL2_CONFIG, load_t5_encoder
from fusionframes.models.text.tokenizer import PromptTokenizer
from fusionframes.tools.parity.fixtures import Comparison, load_case

PROJECTION_FILES = {"1.0": "models/k10/kandinsky_video.pt", "1.1": "models/k11/t5_projections.pt"}
CONFIG_FILES = {"1.0": "models/k10/configs.json", "1.1": "models/k11/configs.json"}


@pytest.fixture(scope="module")
def case(golden: Path):
    return load_case(golden, "text_encoding")


@pytest.fixture(scope="module")
def t5_dir(golden: Path) -> Path:
    return golden / "models" / "text_encoder"


def _load(golden: Path, release: str, **kwargs) -> TextEncoder:
    text = load_release_config(golden / CONFIG_FILES[release], release).text
    kwargs.setdefault("max_length", text.tokens_length)
    kwargs.setdefault("context_dim", text.context_dim)
    return TextEncoder.load(release, golden / "models" / "text_encoder", golden / PROJECTION_FILES[release], **kwargs)


@pytest.fixture(scope="module")
def k10(golden: Path) -> TextEncoder:
    return _load(golden, "1.0")


@pytest.fixture(scope="module")
def k11(golden: Path) -> TextEncoder:
    return _load(golden, "1.1")


def _check(comparison: Comparison) -> None:
    assert comparison.ok, "; ".join(comparison.failures)


# --------------------------------------------------------------------------------------------------------------------
# Golden case
# --------------------------------------------------------------------------------------------------------------------


def test_tokens_match_fixture(case, k10: TextEncoder):
    t = case.tensors
    comparison = Comparison("tokens")
    for i, prompt in enumerate(case.meta["prompts"]):
        tokens = k10.tokenize(prompt)
        negative = k10.tokenize_negative(case.meta["negative"], tokens)
        comparison.add(f"p{i}.input_ids", tokens.input_ids[0], t[f"p{i}.input_ids"], 0, 0)
        comparison.add(f"p{i}.attention_mask", tokens.attention_mask[0], t[f"p{i}.attention_mask"], 0, 0)
        comparison.add(f"p{i}.negative_input_ids", negative.input_ids[0], t[f"p{i}.negative_input_ids"], 0, 0)
        comparison.add(f"p{i}.negative_attention_mask", negative.attention_mask[0],
                       t[f"p{i}.negative_attention_mask"], 0, 0)
        assert tokens.input_ids.dtype == tokens.attention_mask.dtype == torch.long
    _check(comparison)


def test_k10_contexts_match_fixture(case, k10: TextEncoder):
    t, tol = case.tensors, case.tolerance
    comparison = Comparison("k10")
    for i, prompt in enumerate(case.meta["prompts"]):
        out = k10.encode(prompt, case.meta["negative"])
        comparison.add(f"p{i}.context", out.context, t[f"p{i}.k10.context"], tol["rtol"], tol["atol"])
        comparison.add(f"p{i}.context_mask", out.mask, t[f"p{i}.k10.context_mask"], 0, 0)
        comparison.add(f"p{i}.negative_context", out.negative.context, t[f"p{i}.k10.negative_context"],
                       tol["rtol"], tol["atol"])
        comparison.add(f"p{i}.negative_context_mask", out.negative.mask, t[f"p{i}.k10.negative_context_mask"], 0, 0)
        assert out.context.dtype == torch.float32 and out.mask.dtype == torch.long
    _check(comparison)


def test_k11_contexts_match_fixture(case, k11: TextEncoder):
    t, tol = case.tensors, case.tolerance
    comparison = Comparison("k11")
    for i, prompt in enumerate(case.meta["prompts"]):
        for projection, name in (("base", "context"), ("interpolation", "interpolation_context")):
            out = k11.encode(prompt, projection=projection)
            comparison.add(f"p{i}.{name}", out.context, t[f"p{i}.k11.{name}"], tol["rtol"], tol["atol"])
            comparison.add(f"p{i}.{name}_mask", out.mask, t[f"p{i}.k11.{name}_mask"], 0, 0)
            assert out.negative is None
    _check(comparison)


def test_batch_rows_equal_single_prompts(case, k11: TextEncoder):
    prompts = case.meta["prompts"][:2]
    batch = k11.encode(prompts)
    assert batch.context.shape[1] == int(batch.mask.sum(-1).max()) + 1
    for row, prompt in enumerate(prompts):
        single = k11.encode(prompt)
        length = single.context.shape[1]
        torch.testing.assert_close(batch.context[row, :length], single.context[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(batch.mask[row, :length], single.mask[0])
        assert not batch.context[row, length:].any() and not batch.mask[row, length:].any()


# --------------------------------------------------------------------------------------------------------------------
# Tokeniser rules
# --------------------------------------------------------------------------------------------------------------------


def test_tokenizer_json_backend_agrees_on_ordinary_text(case, t5_dir: Path):
    slow = PromptTokenizer.from_path(t5_dir)
    fast = PromptTokenizer.from_path(t5_dir / "tokenizer.json")
    for text in [*case.meta["prompts"], case.meta["negative"], "  spaced   out\ttext\n", "", "naïve café ①"]:
        assert slow.encode(text, 24) == fast.encode(text, 24), text


def test_slow_tokenizer_rules(t5_dir: Path):
    tok = PromptTokenizer.from_path(t5_dir)
    eos = tok.eos_token_id
    assert tok.encode("", 8) == [eos]
    cat = tok.encode("a cat", 64)
    assert cat[-1] == eos and eos not in cat[:-1]
    # a spelled-out </s> is a token; a trailing one is not doubled (transformers 4.35 slow T5Tokenizer)
    assert tok.encode("a cat</s>", 64) == cat
    assert tok.encode("a cat</s> dog", 64) == cat + tok.encode("dog", 64)
    # truncation keeps max_length - 1 ids, then </s>
    long = tok.encode("a cat " * 40, 10)
    assert len(long) == 10 and long[-1] == eos and long[:9] == tok.encode("a cat " * 40, 1000)[:9]
    tokens = tok.tokenize(["a cat", "a cat wearing sunglasses"], 12)
    assert tokens.input_ids.shape == (2, 12) and tokens.lengths[0] == len(cat)
    assert (tokens.input_ids[0, len(cat):] == tok.pad_token_id).all()


def test_negative_prompt_rule(t5_dir: Path):
    tok = PromptTokenizer.from_path(t5_dir)
    positive = tok.tokenize(["a cat", "a cat wearing sunglasses at a pool"], 24)
    negative = tok.tokenize_negative("blurry, low quality", positive)
    assert torch.equal(negative.attention_mask, positive.attention_mask)
    full = tok.encode("blurry, low quality", 24)
    assert positive.lengths[0] < len(full) < positive.lengths[1]  # one cut, one padded under the positive mask
    for row, length in enumerate(positive.lengths):
        kept = full[:length]
        kept[-1] = tok.eos_token_id
        expected = kept + [tok.pad_token_id] * (24 - len(kept))
        assert negative.input_ids[row].tolist() == expected
    with pytest.raises(InputError):
        tok.tokenize_negative(["a", "b", "c"], positive)


# --------------------------------------------------------------------------------------------------------------------
# Loading the T5 from other layouts
# --------------------------------------------------------------------------------------------------------------------


def _hidden(t5, tokens) -> torch.Tensor:
    with torch.no_grad():
        return t5(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state


@pytest.fixture(scope="module")
def reference(t5_dir: Path, case):
    t5 = load_t5_encoder(t5_dir)
    tokens = PromptTokenizer.from_path(t5_dir).tokenize(case.meta["prompts"], 24)
    return tokens, _hidden(t5, tokens)


def _full_state(t5_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(t5_dir / "model.safetensors"))


@pytest.mark.parametrize("layout", ["encoder_model", "t5stack", "full_model"])
def test_single_safetensors_file_matches_directory(tmp_path: Path, t5_dir: Path, reference, layout: str):
    state = _full_state(t5_dir)
    assert any(k.startswith("decoder.") for k in state)  # the fixture is a full T5Model checkpoint
    if layout == "encoder_model":
        state = {k: v for k, v in state.items() if k.startswith("encoder.") or k == "shared.weight"}
    elif layout == "t5stack":
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        state["embed_tokens.weight"] = _full_state(t5_dir)["shared.weight"]
    weights = tmp_path / "weights" / "t5_encoder.safetensors"
    weights.parent.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    config = tmp_path / "elsewhere" / "config.json"
    config.parent.mkdir()
    shutil.copy(t5_dir / "config.json", config)
    tokens, expected = reference
    t5 = load_t5_encoder(weights, config=config)
    assert torch.equal(_hidden(t5, tokens), expected)
    shutil.copy(t5_dir / "config.json", weights.parent / "config.json")  # beside the file: found without asking
    assert torch.equal(_hidden(load_t5_encoder(weights), tokens), expected)


def test_sharded_directory_and_bin_file(tmp_path: Path, t5_dir: Path, reference):
    state = _full_state(t5_dir)
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in shards.items():
        save_file({k: state[k].contiguous() for k in part}, str(tmp_path / name))
    weight_map = {k: name for name, part in shards.items() for k in part}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(t5_dir / "config.json", tmp_path / "config.json")
    tokens, expected = reference
    assert torch.equal(_hidden(load_t5_encoder(tmp_path), tokens), expected)
    torch.save(state, tmp_path / "t5.bin")
    assert torch.equal(_hidden(load_t5_encoder(tmp_path / "t5.bin"), tokens), expected)


def test_dtype_device_and_fp16_weights(t5_dir: Path):
    t5 = load_t5_encoder(t5_dir, dtype=torch.float32, device="cpu", fp16_weights=True)
    for p in t5.parameters():
        assert p.dtype == torch.float32 and p.device.type == "cpu" and not p.requires_grad
        assert torch.equal(p, p.half().float())
    assert t5.get_input_embeddings() is t5.encoder.embed_tokens
    assert not t5.training
    assert all(p.dtype == torch.bfloat16 for p in load_t5_encoder(t5_dir, dtype=torch.bfloat16).parameters())
    assert load_t5_encoder(t5_dir).get_input_embeddings().weight.dtype == torch.float32


def test_flan_ul2_config_is_a_valid_t5_config():
    from transformers import T5Config

    values = {k: v for k, v in FLAN_UL2_CONFIG.items() if k != "model_type"}
    config = T5Config(**values)
    assert config.is_gated_act and config.dense_act_fn == "silu" and config.d_model == 4096


# --------------------------------------------------------------------------------------------------------------------
# Non-finite samples (1.0, fp16)
# --------------------------------------------------------------------------------------------------------------------


def _poison_sample(encoder: TextEncoder, row: int, value: float):
    def hook(module, args, output):
        output = output.clone()
        output[row, 1] = value
        return output

    return encoder.t5.encoder.final_layer_norm.register_forward_hook(hook)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_nonfinite_sample_is_zeroed_with_its_mask(k10: TextEncoder, case, value: float):
    prompts = [case.meta["prompts"][0], case.meta["prompts"][2]]
    clean = k10.encode(prompts[0])
    handle = _poison_sample(k10, 1, value)
    try:
        out = k10.encode(prompts)
    finally:
        handle.remove()
    assert not out.context[1].any() and not out.mask[1].any()
    assert out.context.shape[1] == clean.context.shape[1]  # trimmed by the remaining sample
    torch.testing.assert_close(out.context[0], clean.context[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(out.mask[0], clean.mask[0])


def test_a_non_finite_11_context_is_a_clear_error_not_a_nan_video(k11: TextEncoder, case):
    handle = _poison_sample(k11, 0, float("inf"))
    try:
        with pytest.raises(InputError, match="non-finite values computing in float32: load it in bf16 or fp32"):
            k11.encode(case.meta["prompts"][1])
        tokens = k11.tokenize(case.meta["prompts"][1])
        context, mask = k11.encode_tokens(tokens)  # the low-level call hands the values on unchanged
    finally:
        handle.remove()
    assert not torch.isfinite(context).all() and mask.any()


def test_fp16_overflow_zeroes_every_sample(golden: Path, case):
    encoder = _load(golden, "1.0", dtype=torch.float16)
    encoder.t5.encoder.final_layer_norm.weight.data.fill_(3e4)  # outputs beyond fp16's range -> inf
    out = encoder.encode(case.meta["prompts"][:2], case.meta["negative"])
    assert out.context.shape[1] == 1 and not out.context.any() and not out.mask.any()
    assert not out.negative.context.any() and not out.negative.mask.any()


def test_encode_prompt_function(k11: TextEncoder, case):
    tokens = k11.tokenize(case.meta["prompts"][0])
    context, mask = encode_prompt(k11.t5, k11.projections["base"], tokens.input_ids, tokens.attention_mask)
    out = k11.encode(case.meta["prompts"][0])
    assert torch.equal(context, out.context) and torch.equal(mask, out.mask)
    with pytest.raises(InputError):
        encode_prompt(k11.t5, k11.projections["base"], tokens.input_ids[0], tokens.attention_mask[0])


# --------------------------------------------------------------------------------------------------------------------
# Projections and errors
# --------------------------------------------------------------------------------------------------------------------


def test_projection_module_and_loaders(golden: Path):
    assert set(TextProjection(8, 16).state_dict()) == {"0.weight", "1.weight", "1.bias"}
    k10 = load_projections(golden / PROJECTION_FILES["1.0"], "1.0")
    k11 = load_projections(golden / PROJECTION_FILES["1.1"], "1.1")
    assert set(k10) == {"base"} and set(k11) == {"base", "interpolation"}
    assert (k10["base"].d_model, k10["base"].context_dim) == (32, 4096)
    raw = torch.load(golden / PROJECTION_FILES["1.1"], map_location="cpu", weights_only=True)
    assert torch.equal(k11["interpolation"][0].weight, raw["projection_interpolation"]["0.weight"].float())


def test_projection_errors(tmp_path: Path, golden: Path):
    with pytest.raises(CheckpointError, match="release 1.0"):
        load_projections(golden / PROJECTION_FILES["1.0"], "1.1")
    with pytest.raises(CheckpointError, match="release 1.1"):
        load_projections(golden / PROJECTION_FILES["1.1"], "1.0")
    with pytest.raises(CheckpointError, match="no 1.0 text projections"):
        load_projections(golden / "models" / "k10" / "movq.pt", "1.0")
    with pytest.raises(CheckpointError, match="not found"):
        load_projections(tmp_path / "missing.pt", "1.0")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint: it starts with .not a checkpoint"):
        load_projections(garbage, "1.0")
    with pytest.raises(InputError):
        load_projections(golden / PROJECTION_FILES["1.0"], "2.0")


def test_projection_width_must_match_the_encoder(tmp_path: Path, golden: Path):
    narrow = {"projection_base": TextProjection(16, 32).state_dict(),
              "projection_interpolation": TextProjection(16, 32).state_dict()}
    torch.save(narrow, tmp_path / "t5_projections.pt")
    with pytest.raises(CheckpointError, match="do not belong together"):
        TextEncoder.load("1.1", golden / "models" / "text_encoder", tmp_path / "t5_projections.pt")
    with pytest.raises(CheckpointError, match="expects 64"):
        _load(golden, "1.1", context_dim=64)


def test_loading_errors(tmp_path: Path, golden: Path, t5_dir: Path):
    projections = golden / PROJECTION_FILES["1.1"]
    with pytest.raises(CheckpointError, match="does not exist"):
        TextEncoder.load("1.1", tmp_path / "nowhere", projections)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_t5_encoder(tmp_path / "nowhere")
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(t5_dir / name, no_tokenizer / name)
    with pytest.raises(CheckpointError, match="tokenizer"):
        TextEncoder.load("1.1", no_tokenizer, projections)
    with pytest.raises(CheckpointError, match="no tokenizer"):
        PromptTokenizer.from_path(no_tokenizer)
    with pytest.raises(CheckpointError, match="does not exist"):
        PromptTokenizer.from_path(tmp_path / "nowhere")
    encoder = TextEncoder.load("1.1", no_tokenizer, projections, tokenizer_path=t5_dir)  # tokenizer given apart
    assert encoder.t5.config.d_model == 32
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(t5_dir / "config.json", no_weights / "config.json")
    with pytest.raises(CheckpointError, match="no T5 weights"):
        load_t5_encoder(no_weights)
    lonely = tmp_path / "lonely" / "t5.safetensors"
    lonely.parent.mkdir()
    shutil.copy(t5_dir / "model.safetensors", lonely)
    with pytest.raises(CheckpointError, match="no config"):
        load_t5_encoder(lonely)
    wrong_config = json.loads((t5_dir / "config.json").read_text()) | {"d_model": 16}
    with pytest.raises(CheckpointError, match="do not match the config"):
        load_t5_encoder(lonely, config=wrong_config)
    with pytest.raises(CheckpointError, match="not a T5 config"):
        load_t5_encoder(lonely, config=golden / "models" / "k11" / "configs.json")
    with pytest.raises(CheckpointError, match="not a T5"):
        load_t5_encoder(golden / "models" / "k11" / "movq.pt", config=t5_dir)
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not safetensors")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_t5_encoder(bad, config=t5_dir)


def test_input_errors(k11: TextEncoder):
    with pytest.raises(InputError):
        k11.encode([])
    with pytest.raises(InputError):
        k11.encode([1, 2])
    with pytest.raises(InputError):
        k11.encode("a cat", projection="keyframe")
    with pytest.raises(InputError):
        TextEncoder.load("0.9", "x", "y")
    assert k11.to("cpu") is k11 and next(k11.t5.parameters()).device.type == "cpu"


def _nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


@pytest.mark.parametrize("release", ["1.0", "1.1"])
def test_fp8_weight_storage_halves_bf16_and_stays_close(golden: Path, release: str):
    prompt = "a red car drifting on a wet road, 4k"
    reference = _load(golden, release, dtype=torch.float32).encode(prompt)
    bf16 = _load(golden, release, dtype=torch.bfloat16)
    fp8 = _load(golden, release, dtype=torch.bfloat16, fp8_weights=True)
    linears = [m for m in fp8.t5.modules() if isinstance(m, Float8Linear)]
    assert linears and not any(isinstance(m, torch.nn.Linear) for m in fp8.t5.modules())
    assert all(m.weight_fp8.dtype == torch.float8_e4m3fn for m in linears)
    # 2 bytes -> 1 byte per linear weight, plus a float32 scale per row (1/1024 of a FLAN-UL2 row, 1/8 here)
    saved = sum(m.weight_fp8.numel() - 4 * m.weight_scale.numel() for m in linears)
    assert _nbytes(bf16.t5) - _nbytes(fp8.t5) == saved > 0
    context = fp8.encode(prompt).context
    assert context.dtype == torch.float32 and torch.isfinite(context).all()
    drift = (context - reference.context).norm() / reference.context.norm()
    bf16_drift = (bf16.encode(prompt).context - reference.context).norm() / reference.context.norm()
    assert drift < 0.1, f"fp8 storage moved the context by {drift:.3f} (bf16 alone: {bf16_drift:.3f})"


def test_fp8_linear_reproduces_a_linear_layer_to_e4m3_precision():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(5, 64)
    fp8 = Float8Linear(linear)
    error = (fp8(x) - linear(x)).abs().max() / linear(x).abs().max()
    assert fp8.weight is None and 0 < error < 0.05  # e4m3: 3 mantissa bits, relative rounding <= 1/16 per weight


def test_a_lone_surrogate_in_a_prompt_is_a_clear_error(golden: Path):
    with pytest.raises(InputError, match="'\\\\ud800' at character 2, which is not valid Unicode text"):
        _load(golden, "1.1").encode("a \ud800 cat")


@pytest.mark.parametrize("kind", ["spiece.model", "tokenizer.json"])
def test_a_long_prompt_is_tokenised_from_a_prefix_with_the_same_ids(t5_dir: Path, kind: str):
    import random

    from fusionframes.models.text.tokenizer import MAX_PROMPT_CHARACTERS

    tok = PromptTokenizer.from_path(t5_dir / kind)
    rng = random.Random(kind)
    words = ["a", "red", "car", "drifting,", "4k", "vidéo", "ﬁne", "<extra_id_3>", "</s>", "  ", "\t", "超", "x" * 40]
    for _ in range(20):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(800, 3000)))
        assert tok._leading_ids(text, 127) == tok._text_ids(text)[:127]
    huge = "a red car " * (MAX_PROMPT_CHARACTERS // 10)  # a megabyte: read up to its first few thousand characters
    assert len(tok.encode(huge, 128)) == 128
    with pytest.raises(InputError, match="only its first 127 tokens are used"):
        tok.encode(huge + "!", 128)
