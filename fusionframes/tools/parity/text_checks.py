"""Text parity: tokenisation and context encoding of both releases (``text_encoding`` and the pipeline cases)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ...models.configs import release_config_for
from ...models.text.encoder import TextEncoder
from ...models.text.projections import PROJECTION_INTERPOLATION
from ...releases import release as official_release
from .fixtures import Case, Comparison


@lru_cache(maxsize=8)
def _encoder(release: str, release_dir: str, text_dir: str) -> TextEncoder:
    config = release_config_for(release_dir, release).text
    return TextEncoder.load(release, text_dir, Path(release_dir) / official_release(release).files["projections"],
                            max_length=config.tokens_length, context_dim=config.context_dim)


def _release_dir(case: Case, key: str) -> Path:
    """'models/k10/kandinsky_video.pt (projections)' -> the folder of that file."""
    return case.path(case.meta[key].split()[0]).parent


def text_encoding_comparisons(case: Case) -> list[Comparison]:
    t = case.tensors
    rtol, atol = case.tolerance["rtol"], case.tolerance["atol"]
    text_dir = str(case.path(case.meta["tokenizer"]))
    k10 = _encoder("1.0", str(_release_dir(case, "k10_model")), text_dir)
    k11 = _encoder("1.1", str(_release_dir(case, "k11_model")), text_dir)
    negative = case.meta.get("negative")
    tokens, contexts = Comparison("tokens"), Comparison("contexts")
    for i, prompt in enumerate(case.meta["prompts"]):
        p = f"p{i}"
        ids = k10.tokenize(prompt)
        tokens.add(f"{p}.input_ids", ids.input_ids[0], t[f"{p}.input_ids"], 0, 0)
        tokens.add(f"{p}.attention_mask", ids.attention_mask[0], t[f"{p}.attention_mask"], 0, 0)
        if negative is not None and f"{p}.negative_input_ids" in t:
            negative_ids = k10.tokenize_negative(negative, ids)
            tokens.add(f"{p}.negative_input_ids", negative_ids.input_ids[0], t[f"{p}.negative_input_ids"], 0, 0)
            tokens.add(f"{p}.negative_attention_mask", negative_ids.attention_mask[0],
                       t[f"{p}.negative_attention_mask"], 0, 0)
        encoded = k10.encode(prompt, negative if f"{p}.k10.negative_context" in t else None)
        contexts.add(f"{p}.k10.context", encoded.context, t[f"{p}.k10.context"], rtol, atol)
        contexts.add(f"{p}.k10.context_mask", encoded.mask, t[f"{p}.k10.context_mask"], 0, 0)
        if encoded.negative is not None:
            contexts.add(f"{p}.k10.negative_context", encoded.negative.context, t[f"{p}.k10.negative_context"],
                         rtol, atol)
            contexts.add(f"{p}.k10.negative_context_mask", encoded.negative.mask,
                         t[f"{p}.k10.negative_context_mask"], 0, 0)
        encoded = k11.encode(prompt)
        contexts.add(f"{p}.k11.context", encoded.context, t[f"{p}.k11.context"], rtol, atol)
        contexts.add(f"{p}.k11.context_mask", encoded.mask, t[f"{p}.k11.context_mask"], 0, 0)
        if f"{p}.k11.interpolation_context" in t:
            encoded = k11.encode(prompt, projection=PROJECTION_INTERPOLATION)
            contexts.add(f"{p}.k11.interpolation_context", encoded.context, t[f"{p}.k11.interpolation_context"],
                         rtol, atol)
            contexts.add(f"{p}.k11.interpolation_context_mask", encoded.mask,
                         t[f"{p}.k11.interpolation_context_mask"], 0, 0)
    return [tokens, contexts]


def pipeline_text_comparisons(case: Case, release: str, release_dir: Path, text_dir: Path) -> list[Comparison]:
    t = case.tensors
    rtol, atol = case.tolerance["rtol"], case.tolerance["atol"]
    encoder = _encoder(release, str(release_dir), str(text_dir))
    negative = case.meta.get("negative_prompt") if release == "1.0" else None
    encoded = encoder.encode(case.meta["prompt"], negative)
    comparison = Comparison("text")
    comparison.add("text.context", encoded.context, t["text.context"], rtol, atol)
    comparison.add("text.context_mask", encoded.mask, t["text.context_mask"], 0, 0)
    if "text.negative_context" in t:
        if encoded.negative is None:
            comparison.failures.append("the case has a negative prompt context but no negative prompt was encoded")
        else:
            comparison.add("text.negative_context", encoded.negative.context, t["text.negative_context"], rtol, atol)
            comparison.add("text.negative_context_mask", encoded.negative.mask, t["text.negative_context_mask"], 0, 0)
    return [comparison]
