"""Prompt templates and questions of the AffectGPT release (MODEL_SPEC §1.7).

The release writes a Vicuna-style ``###Human: … ###Assistant: `` prompt without a chat template. The tag
strings ``<Multi>``, ``<Audio>``, ``<Video>``, ``<Subtitle>`` are plain text; only the ``<…Here>``
placeholders are special tokens, each repeated K times (the number of query tokens of its modality).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from affectrt.config import PLACEHOLDER_TOKENS, AffectGPTConfig
from affectrt.text.tokenizer import Prompt

OVLABEL_QUESTION = "Please recognize all possible emotional states of the character."
DESCRIPTION_QUESTION = "Please infer the person's emotional state and provide your reasoning process."
SENTIMENT_QUESTION = (
    "Please select the most likely sentiment label that can best describe the person's emotional state: "
    "positive, negative, neutral."
)
ONEHOT_QUESTION = "Please recognize the character's most likely emotional state."

QUESTIONS = {
    "ovlabel": OVLABEL_QUESTION,
    "description": DESCRIPTION_QUESTION,
    "sentiment": SENTIMENT_QUESTION,
    "onehot": ONEHOT_QUESTION,
}

_MULTI = "The audio and video merged info is: <Multi><MultiHere></Multi>. "
_AUDIO = "The audio content is as follows: <Audio><AudioHere></Audio>. "
_FACE = (
    "Meanwhile, we uniformly sample raw frames from the video and extract faces from these frames: "
    "<Video><FaceHere></Video>. "
)
_FRAME = "Meanwhile, we uniformly sample raw frames from the video: <Video><FrameHere></Video>. "
_TAIL = (
    "The subtitle of this video is: <Subtitle>{subtitle}</Subtitle>. "
    "Now, please answer my question based on all the provided information. {question} ###Assistant: "
)


def template(visual_input: str, with_multi: bool = True) -> str:
    """The release's template for ``multi{face,frame}_audio_{face,frame}_text`` (or without Multi).

    Returns a format string with ``{subtitle}`` and ``{question}`` fields.
    """
    if visual_input not in ("face", "frame"):
        raise ValueError(f"visual_input must be 'face' or 'frame', got {visual_input!r}")
    visual = _FACE if visual_input == "face" else _FRAME
    return "###Human: " + (_MULTI if with_multi else "") + _AUDIO + visual + _TAIL


_PLACEHOLDER_RE = re.compile("(" + "|".join(re.escape(t) for t in PLACEHOLDER_TOKENS) + ")")


def build_prompt(cfg: AffectGPTConfig, subtitle: str, question: str) -> Prompt:
    """The prompt for one clip, placeholders already repeated K times (``replace_token_for_multimodal``).

    The template is split at its placeholders before the subtitle and question are filled in, so the
    returned :class:`~affectrt.text.tokenizer.Prompt` knows that only those are control tokens.
    """
    f = cfg.fusion
    repeats = {
        "<FrameHere>": f.num_video_query_token,
        "<FaceHere>": f.num_video_query_token,
        "<AudioHere>": f.num_audio_query_token,
        "<MultiHere>": f.num_multi_query_token,
    }
    with_multi = f.multi_fusion != "none"
    segments = [""]  # text at even indices, control tokens at odd ones
    for i, piece in enumerate(_PLACEHOLDER_RE.split(template(cfg.visual_input, with_multi))):
        if i % 2 == 0:
            segments[-1] += piece.format(subtitle=subtitle, question=question)
        else:
            for _ in range(repeats.get(piece, 1)):
                segments += [piece, ""]
    return Prompt(segments)


def ovlabel_answer(labels: Sequence[str]) -> str:
    """Training target of the OV-label question: comma-joined labels; an empty list becomes ``neutral``."""
    joined = ", ".join(labels) if labels else "neutral"
    return f"The character's emotional state is {joined}."


def postprocess_answer(text: str) -> str:
    """Cut a generation decoded WITH its special tokens the way the release does (``answer_sample``).

    The piece after the first ``<|im_start|>`` (when there is one), up to the first ``<|im_end|>``; then the
    last ``###`` and all after it are dropped (``rsplit``: an earlier ``###`` stays); then the text after the
    last ``Assistant:``, stripped. Other special tokens (``<|endoftext|>``) stay in the text, as in the release.
    """
    if "<|im_start|>" in text:
        text = text.split("<|im_start|>")[1]
    text = text.split("<|im_end|>")[0]
    text = text.rsplit("###", 1)[0]
    return text.split("Assistant:")[-1].strip()
