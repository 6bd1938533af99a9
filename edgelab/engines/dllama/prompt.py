"""Prepare a prompt the way ``dllama inference`` will see it, and count its tokens.

The root must pass ``--steps`` (prompt positions + output tokens) before dllama
starts, so it needs the prompt's token count up front. This module re-implements
the behaviour of distributed-llama's ``Tokenizer::encode`` (read from its
``src/tokenizer.cpp``, v0.16): optional BOS, special tokens matched by prefix,
regular tokens grown byte by byte until they match a vocabulary entry, then
greedy pair merges by score. The count is checked against what dllama reports
(its prefill lines) after every run.

``dllama inference`` applies no chat template, so for ``chat`` requests edgelab
wraps the prompt itself when the tokenizer's template is one it recognises.
"""

from __future__ import annotations

from edgelab.catalog.dllama import DllamaTokenizer


class EncodeError(ValueError):
    """The prompt holds bytes no vocabulary entry covers (dllama would abort)."""


class PromptEncoder:
    """Count tokens exactly as distributed-llama's encoder would produce them."""

    def __init__(self, tokenizer: DllamaTokenizer) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.vocab
        # dllama treats every id from BOS on as special (its own comment calls it
        # an unstable assumption; we mirror it so the counts agree).
        regular_size = tokenizer.bos_id if tokenizer.bos_id >= 0 else len(vocab)
        self.regular: dict[bytes, int] = {}
        for i in range(regular_size):
            self.regular.setdefault(vocab[i], i)
        self.special = [(i, vocab[i]) for i in range(regular_size, len(vocab)) if vocab[i]]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        tok = self.tokenizer
        tokens: list[int] = []
        # A tokenizer that does not say leaves dllama's flag undefined; in practice
        # converters that omit it are for models that want a BOS.
        if (tok.add_bos is None or tok.add_bos) and tok.bos_id >= 0:
            tokens.append(tok.bos_id)
        data = text.encode("utf-8")
        pending = b""
        i = 0
        while i < len(data):
            if add_special_tokens:
                special = self._special_at(data, i)
                if special is not None:
                    tokens.append(special[0])
                    i += len(special[1])
                    continue
            pending += data[i : i + 1]
            i += 1
            found = self.regular.get(pending)
            if found is not None:
                tokens.append(found)
                pending = b""
        if pending:
            raise EncodeError(f"no vocabulary entry covers the bytes {pending!r}")
        return self._merge(tokens)

    def _special_at(self, data: bytes, i: int) -> tuple[int, bytes] | None:
        for token_id, piece in self.special:
            if data.startswith(piece, i):
                return token_id, piece
        return None

    def _merge(self, tokens: list[int]) -> list[int]:
        vocab = self.tokenizer.vocab
        scores = self.tokenizer.scores
        while True:
            best_score = -1e10
            best_index = -1
            best_id = -1
            for k in range(len(tokens) - 1):
                merged = self.regular.get(vocab[tokens[k]] + vocab[tokens[k + 1]])
                if merged is not None and scores[merged] > best_score:
                    best_score, best_index, best_id = scores[merged], k, merged
            if best_index < 0:
                return tokens
            tokens[best_index : best_index + 2] = [best_id]

    def count(self, text: str) -> int:
        return len(self.encode(text))


def chat_template_kind(template: str | None) -> str | None:
    """The chat format a tokenizer's template describes, if edgelab knows it."""
    if not template:
        return None
    if "<|start_header_id|>" in template:
        return "llama3"
    if "<|im_start|>" in template:
        return "chatml"
    return None


def apply_chat(prompt: str, kind: str | None) -> str:
    """Wrap a user prompt in a single-turn chat, ending where the assistant speaks."""
    if kind == "llama3":
        return (
            f"<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    if kind == "chatml":
        return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    return prompt


__all__ = ["EncodeError", "PromptEncoder", "apply_chat", "chat_template_kind"]
