"""Prompt templates and questions of the AffectGPT release (MODEL_SPEC §1.7).

The release writes a Vicuna-style ``###Human: … ###Assistant: `` prompt without a chat template. The tag
strings ``<Multi>``, ``<Audio>``, ``<Video>``, ``<Subtitle>`` are plain text; only the ``<…Here>``
placeholders are special tokens, each repeated K times (the number of query tokens of its modality).
"""

from __future__ import annotations

from collections.abc import Sequence

from affectrt.config import AffectGPTConfig

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


def build_prompt(cfg: AffectGPTConfig, subtitle: str, question: str) -> str:
    """The prompt text for one clip, placeholders already repeated K times (``replace_token_for_multimodal``)."""
    with_multi = cfg.fusion.multi_fusion != "none"
    prompt = template(cfg.visual_input, with_multi).format(subtitle=subtitle, question=question)
    f = cfg.fusion
    for token, k in (
        ("<FrameHere>", f.num_video_query_token),
        ("<FaceHere>", f.num_video_query_token),
        ("<AudioHere>", f.num_audio_query_token),
        ("<MultiHere>", f.num_multi_query_token),
    ):
        prompt = prompt.replace(token, token * k)
    return prompt


def ovlabel_answer(labels: Sequence[str]) -> str:
    """Training target of the OV-label question: comma-joined labels; an empty list becomes ``neutral``."""
    joined = ", ".join(labels) if labels else "neutral"
    return f"The character's emotional state is {joined}."


def postprocess_answer(text: str) -> str:
    """Cut a decoded generation the way the release does (``answer_sample``).

    Everything from the first ``###`` on is dropped, then text after ``Assistant:`` is kept when present.
    """
    text = text.split("###")[0]
    if "Assistant:" in text:
        text = text.split("Assistant:")[-1]
    return text.strip()
