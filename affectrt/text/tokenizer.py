"""The LLM tokenizer, read from a model folder's ``tokenizer.json`` (MODEL_SPEC §1.7).

The release loads the Qwen2.5 tokenizer, overrides ``bos`` to ``<|im_start|>``, sets
``pad = eos = <|im_end|>`` and adds the five ``<…Here>`` placeholders as special tokens; for Qwen2.5 they get
ids 151665-151669, inside the 152,064-row embedding (no resize). The release uses the slow Python
tokenizer; the fast tokenizer of ``tokenizer.json`` encodes the same ids for this BPE.

Control tokens come only from the prompt template, never from user text. A :class:`Prompt` remembers where its
template put the ``<…Here>`` placeholders; every other character (subtitle, question, answer) is encoded as
plain text, so a subtitle that contains ``<FrameHere>`` or ``<|im_end|>`` gives the bytes of that string. The
release tokenizes the whole prompt string and would turn them into control tokens (its splice then fails, or
``<|im_end|>`` ends the prompt): a deliberate difference. For any text without control-token strings the ids
are the release's, because the tokenizer splits text at special tokens before its pre-tokenizer runs anyway.

Generation stops on every eos id of the LLM folder's ``generation_config.json`` (Qwen2.5-Instruct:
``<|im_end|>`` and ``<|endoftext|>``), as the release's HF ``generate`` does: :attr:`Tokenizer.generation_eos_ids`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from affectrt.config import PLACEHOLDER_TOKENS

BOS = "<|im_start|>"
EOS = "<|im_end|>"
STOP_STRING = "###"
ENDOFTEXT = "<|endoftext|>"


class Prompt(str):
    """Prompt text that remembers which of its pieces are control tokens put there by the template.

    ``segments`` alternates text and control token: ``("###Human: ...", "<MultiHere>", "</Multi>. ...")``,
    control tokens at the odd indices (as ``re.split`` with one capturing group returns them). The string
    value is the concatenation, so a ``Prompt`` prints and compares like the text the release builds.
    """

    segments: tuple[str, ...]

    def __new__(cls, segments: Sequence[str]) -> Prompt:
        obj = super().__new__(cls, "".join(segments))
        obj.segments = tuple(segments)
        return obj


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
    # Every id generation stops on (the eos list of generation_config.json); <|im_end|> is always one.
    generation_eos_ids: tuple[int, ...] = ()
    # The same vocabulary with special-token matching off: user text never becomes a control token.
    plain: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.plain is None:
            from tokenizers import Tokenizer as HFTokenizer

            self.plain = HFTokenizer.from_str(self.backend.to_str())
            self.plain.encode_special_tokens = True
        if self.eos_id not in self.generation_eos_ids:
            self.generation_eos_ids = (self.eos_id, *self.generation_eos_ids)

    @property
    def pad_id(self) -> int:
        return self.eos_id

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_backend(
        cls, backend: object, source: str = "tokenizer", eos_ids: Sequence[int] | None = None
    ) -> Tokenizer:
        """The release's special-token setup on ``backend``. ``eos_ids``: the ids generation stops on (default:
        ``<|im_end|>`` and ``<|endoftext|>``, as Qwen2.5-Instruct's ``generation_config.json`` lists them)."""
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
        if eos_ids is None:
            eos_ids = [i for i in (backend.token_to_id(EOS), backend.token_to_id(ENDOFTEXT)) if i is not None]
        return cls(
            backend=backend,
            bos_id=backend.token_to_id(BOS),
            eos_id=backend.token_to_id(EOS),
            placeholder_ids={t: backend.token_to_id(t) for t in PLACEHOLDER_TOKENS},
            generation_eos_ids=tuple(int(i) for i in eos_ids),
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
        backend = HFTokenizer.from_file(str(path))
        # No eos id in the folder: HF generate stops on nothing beyond the release's stops (<|im_end|> among them).
        return cls.from_backend(backend, source=str(path), eos_ids=folder_eos_ids(folder) or [])

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (``add_special_tokens=False``); only a :class:`Prompt`'s template pieces
        become control tokens, everything else is plain text."""
        if not isinstance(text, Prompt):
            return self.plain.encode(text, add_special_tokens=False).ids
        ids: list[int] = []
        for i, piece in enumerate(text.segments):
            if i % 2:
                token_id = self.backend.token_to_id(piece)
                if token_id is None:
                    raise ValueError(f"prompt template: {piece!r} is not a token of this tokenizer")
                ids.append(token_id)
            elif piece:
                ids.extend(self.plain.encode(piece, add_special_tokens=False).ids)
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

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


def folder_eos_ids(folder: str | Path) -> list[int] | None:
    """The eos ids HF ``generate`` stops on for a model folder: ``generation_config.json``'s
    ``eos_token_id`` (an id or a list), else ``config.json``'s; None when neither names one."""
    for name in ("generation_config.json", "config.json"):
        path = Path(folder) / name
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            if value is not None:
                return [int(v) for v in (value if isinstance(value, list) else [value])]
    return None


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
