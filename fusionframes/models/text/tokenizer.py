"""Tokenising prompts as the official code did: T5 sentencepiece ids, ``</s>`` appended and no BOS, truncated to
``max_length`` (``text_encoder.tokens_length`` in ``configs.json``; 128 in both releases), right-padded with the pad
id; the attention mask is 1 on the real tokens [OB-51]. 1.0's negative prompt reuses the positive prompt's length and
mask ([OB-3], reproduced by ``PromptTokenizer.tokenize_negative``). Prompts are checked here (strings, valid
Unicode) before anything reaches sentencepiece.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError, InputError
from ...releases import TOKENS_LENGTH

#: prompts longer than this are tokenised from a prefix (cut at a space) that already holds every id that is used
PREFIX_CHARACTERS = 4096
#: a prompt no one writes: refused rather than scanned (only the first 127 tokens are ever used)
MAX_PROMPT_CHARACTERS = 1_000_000


@dataclass
class TokenizedPrompts:
    """Token ids and attention masks of a batch of prompts, both ``(B, max_length)`` int64."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def lengths(self) -> list[int]:
        """Real token count (including ``</s>``) of each prompt."""
        return [int(n) for n in self.attention_mask.sum(-1)]


class PromptTokenizer:
    """The T5 tokeniser the official code used: transformers 4.35's slow sentencepiece ``T5Tokenizer`` (legacy=True).

    With a sentencepiece model (``spiece.model``) the slow tokeniser's rules are reproduced here, independent of the
    installed transformers (whose 5.x ``T5Tokenizer`` is a ``tokenizers`` Unigram model only): special-token strings
    written in the prompt (``</s>``, ``<pad>``, ``<unk>``, ``<extra_id_N>``) are matched first and the text between
    them goes through sentencepiece; ``</s>`` is appended unless the ids already end with it; truncation keeps
    ``max_length - 1`` ids. Without ``spiece.model``, ``tokenizer.json`` is used through ``tokenizers``: it gives the
    same ids for ordinary text and differs only when a prompt spells out special tokens.
    """

    def __init__(
        self,
        *,
        sp_model: Any | None = None,
        fast_tokenizer: Any | None = None,
        extra_ids: int = 100,
        pad_token: str = "<pad>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        source: str = "",
    ) -> None:
        if (sp_model is None) == (fast_tokenizer is None):
            raise ValueError("give exactly one of sp_model and fast_tokenizer")
        self._sp = sp_model
        self._fast = fast_tokenizer
        self.source = source
        self.pad_token, self.eos_token, self.unk_token = pad_token, eos_token, unk_token
        self.pad_token_id = self._require_id(pad_token)
        self.eos_token_id = self._require_id(eos_token)
        self.unk_token_id = self._require_id(unk_token)
        self._specials: dict[str, tuple[int, bool]] = {}  # text -> (id, strips neighbouring whitespace)
        self._pattern: re.Pattern[str] | None = None
        if sp_model is not None:
            size = sp_model.get_piece_size()
            for token in (pad_token, eos_token, unk_token):
                self._specials[token] = (self._require_id(token), False)
            for i in range(extra_ids):  # the slow tokeniser's sentinels, numbered down from the top of the vocab
                self._specials[f"<extra_id_{i}>"] = (size - 1 + extra_ids - i, True)
            alternatives = sorted(self._specials, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(token) for token in alternatives))

    def _require_id(self, token: str) -> int:
        if self._sp is not None:
            index = self._sp.piece_to_id(token)
            found = 0 <= index < self._sp.get_piece_size() and self._sp.id_to_piece(index) == token
        else:
            index = self._fast.token_to_id(token)
            found = index is not None
        if not found:
            raise CheckpointError(f"tokenizer {self.source or ''} has no {token!r} token: it is not a T5 tokenizer. "
                                  "Use the tokenizer files (spiece.model or tokenizer.json) of google/flan-ul2.")
        return int(index)

    @classmethod
    def from_path(cls, path: str | Path) -> PromptTokenizer:
        """Load from a directory (``spiece.model`` preferred, else ``tokenizer.json``) or from one of those files."""
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"tokenizer not found: {path} does not exist. Give the text encoder directory "
                                  "(google/flan-ul2 layout) or its spiece.model / tokenizer.json file.")
        settings: dict[str, Any] = {}
        if path.is_dir():
            config_file = path / "tokenizer_config.json"
            if config_file.is_file():
                try:
                    settings = json.loads(config_file.read_text())
                except (OSError, ValueError) as error:
                    raise CheckpointError(f"cannot read {config_file}: {error}") from None
            if (path / "spiece.model").is_file():
                path = path / "spiece.model"
            elif (path / "tokenizer.json").is_file():
                path = path / "tokenizer.json"
            else:
                raise CheckpointError(f"no tokenizer in {path}: expected spiece.model (sentencepiece) or "
                                      "tokenizer.json. Copy them from the google/flan-ul2 repository into this "
                                      "directory, or pass the tokenizer location separately.")
        tokens = {name: _token_text(settings.get(name), default) for name, default in
                  (("pad_token", "<pad>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}
        if path.suffix == ".json":
            try:
                from tokenizers import Tokenizer

                fast = Tokenizer.from_file(str(path))
            except Exception as error:  # the library raises plain Exceptions
                raise CheckpointError(f"cannot read {path} as a tokenizers tokenizer.json: {error}") from None
            return cls(fast_tokenizer=fast, source=str(path), **tokens)
        try:
            import sentencepiece as spm

            sp = spm.SentencePieceProcessor()
            sp.Load(str(path))
        except (OSError, RuntimeError) as error:
            raise CheckpointError(f"cannot read {path} as a sentencepiece model: {error}. Give spiece.model of "
                                  "google/flan-ul2 (or a directory holding it).") from None
        extra_ids = settings.get("extra_ids")
        if not isinstance(extra_ids, int):
            listed = [t for t in settings.get("additional_special_tokens") or [] if "<extra_id_" in _token_text(t, "")]
            extra_ids = len(listed) if listed else 100
        return cls(sp_model=sp, extra_ids=extra_ids, source=str(path), **tokens)

    def _text_ids(self, text: str) -> list[int]:
        """Ids of a prompt without ``</s>``, special-token strings in it included."""
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        pieces: list[str] = []
        position = 0
        for match in self._pattern.finditer(text):
            pieces += [text[position:match.start()], match.group()]
            position = match.end()
        pieces.append(text[position:])
        for i in range(1, len(pieces), 2):  # sentinels eat the whitespace around them (slow tokeniser rule)
            if self._specials[pieces[i]][1]:
                pieces[i - 1] = pieces[i - 1].rstrip()
                pieces[i + 1] = pieces[i + 1].lstrip()
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if i % 2:
                ids.append(self._specials[piece][0])
            elif piece:
                ids += self._sp.encode(piece)
        return ids

    def _leading_ids(self, text: str, count: int) -> list[int]:
        """The first ``count`` ids of ``text`` without tokenising all of a long text: sentencepiece segments the
        space-separated words independently, so the ids of the text up to a space are the text's first ids; the cut
        moves further until it yields more than ``count`` ids (or the whole text is tokenised)."""
        cut = PREFIX_CHARACTERS
        while cut < len(text):
            space = text.rfind(" ", 0, cut)
            if space > 0:
                ids = self._text_ids(text[:space])
                if len(ids) > count:
                    return ids[:count]
            cut *= 4
        return self._text_ids(text)[:count]

    def encode(self, text: str, max_length: int) -> list[int]:
        """Ids of one prompt as ``tokenizer(text, max_length=max_length, truncation=True)['input_ids']``: no padding."""
        if not isinstance(text, str):
            raise InputError(f"a prompt must be a string, got {type(text).__name__}.")
        if max_length < 2:
            raise InputError(f"max_length must be at least 2 (one token and </s>), got {max_length}.")
        if len(text) > MAX_PROMPT_CHARACTERS:
            raise InputError(f"the prompt has {len(text):,} characters; only its first {max_length - 1} tokens are "
                             f"used, so at most {MAX_PROMPT_CHARACTERS:,} characters are accepted: shorten it.")
        ids = self._leading_ids(text, max_length - 1)
        if not ids or ids[-1] != self.eos_token_id:
            ids.append(self.eos_token_id)
        return ids

    def _pad(self, ids: list[int], length: int, max_length: int) -> tuple[list[int], list[int]]:
        pad = max_length - len(ids)
        return ids + [self.pad_token_id] * pad, [1] * length + [0] * (max_length - length)

    def tokenize(self, prompts: str | Sequence[str], max_length: int = TOKENS_LENGTH) -> TokenizedPrompts:
        """Ids and masks ``(B, max_length)`` of one prompt or a list of them, right-padded as the official processor."""
        prompts = _as_prompt_list(prompts, "prompts")
        rows = [self._pad(ids, len(ids), max_length) for ids in (self.encode(p, max_length) for p in prompts)]
        return _stack(rows)

    def tokenize_negative(
        self, negative_prompts: str | Sequence[str], positive: TokenizedPrompts, max_length: int | None = None
    ) -> TokenizedPrompts:
        """1.0's negative prompt rule [OB-3], row by row against the positive prompts' tokens.

        The negative ids are cut to the positive prompt's token count, the last kept id is forced to ``</s>``, the rest
        is padding; the mask is the positive prompt's (so a shorter negative prompt attends to pad tokens and a longer
        one is truncated). One negative prompt is used for every positive row.
        """
        batch, width = positive.input_ids.shape
        max_length = width if max_length is None else max_length
        if max_length != width:
            raise InputError(f"max_length {max_length} differs from the positive prompts' token length {width}.")
        negatives = _as_prompt_list(negative_prompts, "negative prompts")
        if len(negatives) == 1:
            negatives = negatives * batch
        if len(negatives) != batch:
            raise InputError(f"got {len(negatives)} negative prompts for {batch} prompts; give one, or one per prompt.")
        rows = []
        for negative, length in zip(negatives, positive.lengths):
            ids = self.encode(negative, max_length)[:length]
            ids[-1] = self.eos_token_id
            rows.append(self._pad(ids, length, max_length))
        return _stack(rows)


def _token_text(value: Any, default: str) -> str:
    """A special token as written in tokenizer_config.json: a string or an AddedToken dict with ``content``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return default


def _as_prompt_list(prompts: str | Sequence[str], what: str) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise InputError(f"no {what} given: pass a string or a non-empty list of strings.")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise InputError(f"{what} must be strings, got {type(prompt).__name__}.")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate: sentencepiece would fail deep inside its C++ code
            raise InputError(f"the {what} holds {error.object[error.start:error.end]!r} at character {error.start}, "
                             "which is not valid Unicode text; remove it.") from None
    return prompts


def _stack(rows: list[tuple[list[int], list[int]]]) -> TokenizedPrompts:
    return TokenizedPrompts(
        input_ids=torch.tensor([ids for ids, _ in rows], dtype=torch.long),
        attention_mask=torch.tensor([mask for _, mask in rows], dtype=torch.long),
    )
