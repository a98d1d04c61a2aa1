"""The LLM tokenizer, read from a model folder's ``tokenizer.json`` (MODEL_SPEC §1.7).

The release loads the Qwen2.5 tokenizer, overrides ``bos`` to ``<|im_start|>``, sets
``pad = eos = <|im_end|>`` and adds the five ``<…Here>`` placeholders as special tokens; for Qwen2.5 they get
ids 151665-151669, inside the 152,064-row embedding (no resize). The release uses the slow Python
tokenizer; the fast tokenizer of ``tokenizer.json`` encodes the same ids for this BPE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from affectrt.config import PLACEHOLDER_TOKENS

BOS = "<|im_start|>"
EOS = "<|im_end|>"
STOP_STRING = "###"


@dataclass
class Tokenizer:
    """A ``tokenizers.Tokenizer`` with the release's special-token choices.

    Attributes: ``bos_id`` (<|im_start|>), ``eos_id`` = ``pad_id`` (<|im_end|>), ``placeholder_ids``
    (token string -> id), ``vocab_size`` (including added tokens).
    """

    backend: object  # tokenizers.Tokenizer
    bos_id: int
    eos_id: int
    placeholder_ids: dict[str, int]

    @property
    def pad_id(self) -> int:
        return self.eos_id

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_backend(cls, backend: object, source: str = "tokenizer") -> Tokenizer:
        from tokenizers import AddedToken

        missing = [t for t in (BOS, EOS) if backend.token_to_id(t) is None]
        if missing:
            raise ValueError(
                f"{source}: the tokenizer has no {', '.join(missing)} token; AffectGPT needs the Qwen2.5 "
                "tokenizer (or one with the same special tokens)"
            )
        new = [t for t in PLACEHOLDER_TOKENS if backend.token_to_id(t) is None]
        if new:
            backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
        return cls(
            backend=backend,
            bos_id=backend.token_to_id(BOS),
            eos_id=backend.token_to_id(EOS),
            placeholder_ids={t: backend.token_to_id(t) for t in PLACEHOLDER_TOKENS},
        )

    @classmethod
    def from_folder(cls, folder: str | Path) -> Tokenizer:
        """Load ``tokenizer.json`` from a Hugging Face model folder."""
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no tokenizer.json; the LLM folder must hold the fast tokenizer file "
                "(save it with transformers' tokenizer.save_pretrained if only the slow files exist)"
            )
        return cls.from_backend(HFTokenizer.from_file(str(path)), source=str(path))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added (``add_special_tokens=False``)."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def stop_sequences(self) -> tuple[tuple[int, ...], ...]:
        """The release's stops: eos, the token(s) of ``###`` and the two-token splits ``##``+``#``, ``#``+``##``."""
        seqs: list[tuple[int, ...]] = [(self.eos_id,)]
        for pieces in (("###",), ("##", "#"), ("#", "##")):
            ids = [self.backend.token_to_id(p) for p in pieces]
            if all(i is not None for i in ids):
                seqs.append(tuple(ids))
        whole = tuple(self.encode(STOP_STRING))
        if whole and whole not in seqs:
            seqs.append(whole)
        return tuple(seqs)


def byte_level_tokenizer() -> Tokenizer:
    """A self-contained byte-level BPE tokenizer (256 byte tokens, no merges) with the Qwen specials.

    Used when no model folder is given (random-weight presets), so the whole path runs without downloads.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_chars))}
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    from tokenizers import AddedToken

    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<|endoftext|>", BOS, EOS)]
    )
    return Tokenizer.from_backend(backend, source="byte-level tokenizer")
