"""Label extraction with an instruct LLM judge on affectrt's own Qwen2 runtime (MODEL_SPEC §4.1, §4.1a).

The release sends each answer through Qwen2.5-7B-Instruct in vLLM twice at most:

    answer ──(OPENSET_PROMPT)──► "[happy, excited]"           cached as <stem>-openset.npz
    label list ──(SENTIMENT_PROMPT)──► "positive"             cached as <stem>-openset-sentiment.npz (sentiment sets)

Here the judge is :class:`~affectrt.models.qwen2.Qwen2ForCausalLM` with :func:`affectrt.generate.generate`:
each prompt is one user turn in the folder's chat template (Qwen2.5's inserts its default system message),
batched with left padding, decoded with the release's settings (``sample``: temperature 0.7, top-p 0.8,
repetition penalty 1.05 over prompt and output tokens, no top-k, at most 512 new tokens; vLLM's defaults)
or greedily (``greedy``: deterministic, the same repetition penalty). Prompts are batched in length order
to cut padding; results come back in input order. A cache file that exists is reused, never recomputed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from affectrt.generate import GenerationConfig, generate

# MODEL_SPEC §4.1a, verbatim (the sentiment prompt keeps the release's 13-space indentation runs).
OPENSET_PROMPT = (
    "Please assume the role of an expert in the field of emotions. We provide clues that may be related to "
    "the emotions of the characters. Based on the provided clues, please identify the emotional states of the "
    "main character. The main character is the one with the most detailed clues. Please separate different "
    "emotional categories with commas and output only the clearly identifiable emotional categories in a list "
    "format. If none are identified, please output an empty list. Input: We cannot recognize his emotional "
    "state; Output: [] Input: His emotional state is happy, sad, and angry; Output: [happy, sad, angry] "
    "Input: {reason}; Output: "
)
_GAP = " " * 13
SENTIMENT_PROMPT = (
    f"Please act as an expert in the field of emotions.{_GAP} We provide a few words to describe the emotions "
    f"of a character.{_GAP} Please choose the most likely sentiment from the given candidates: [positive, "
    f"negative, neutral]{_GAP} Please direct output answer without analyzing process.{_GAP} Input: [joyful]; "
    f"Output: positive{_GAP} Input: []; Output: neutral{_GAP} Input: {{reason}}; Output: "
)
QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# Dropped from the start of a response, each at most once, in this order (the release's post-processing).
_PREFIXES = ("输入", "输出", "翻译", "让我们来翻译一下：", "output", "Output", "input", "Input")


def postprocess(text: str) -> str:
    """strip; drop the prefixes above; strip; drop one leading ':' or '：'; strip; remove every newline."""
    text = text.strip()
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.strip()
    if text[:1] in (":", "："):
        text = text[1:]
    return text.strip().replace("\n", "")


def chat_prompt(content: str, system: str = QWEN25_SYSTEM) -> str:
    """One user turn in Qwen2.5's chat template, with the generation prompt (``add_generation_prompt``)."""
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"


def default_system(folder: Path) -> str:
    """The default system message of the folder's chat template (``tokenizer_config.json``), else Qwen2.5's."""
    template = _template(folder)
    if template:
        # The default system turn is a literal in the template: no braces, quotes or newlines inside.
        m = re.search(r"<\|im_start\|>system(?:\\n|\n)([^{}'\"\n]+?)<\|im_end\|>", template)
        if m:
            return m.group(1)
    return QWEN25_SYSTEM


def _template(folder: Path) -> str:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return ""
    return json.loads(path.read_text(encoding="utf-8")).get("chat_template") or ""


def chat_renderer(folder: str | Path) -> Callable[[str], str]:
    """content -> the prompt text, as ``apply_chat_template([user turn], add_generation_prompt=True)`` renders it.

    The folder's Jinja template is rendered when jinja2 is installed (as transformers does: sandboxed,
    ``trim_blocks``, ``lstrip_blocks``); otherwise Qwen2.5's format with the template's default system message.
    """
    folder = Path(folder)
    template = _template(folder)
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        template = ""
    if not template:
        system = default_system(folder)
        return lambda content: chat_prompt(content, system)

    def raise_exception(message: str) -> None:
        raise ValueError(f"{folder / 'tokenizer_config.json'}: chat template error: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    compiled = env.from_string(template)
    return lambda content: compiled.render(
        messages=[{"role": "user", "content": content}], add_generation_prompt=True, tools=None
    )


@dataclass
class JudgeSettings:
    """``mode``: "sample" (the release's) or "greedy"; ``seed`` seeds the sampling per batch."""

    mode: str = "sample"
    batch_size: int = 8
    max_new_tokens: int = 512
    seed: int = 0

    def generation(self, eos_ids: tuple[int, ...], pad_id: int) -> GenerationConfig:
        if self.mode not in ("sample", "greedy"):
            raise ValueError(f"judge mode must be 'sample' or 'greedy', got {self.mode!r}")
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.mode == "sample",
            temperature=0.7,
            top_p=0.8,
            top_k=0,
            repetition_penalty=1.05,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
        )


class Judge:
    """An instruct Qwen2 model turning answers into label lists and label lists into a sentiment word."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: object,
        eos_ids: Sequence[int],
        settings: JudgeSettings | None = None,
        render: Callable[[str], str] = chat_prompt,
        progress: bool = True,
    ) -> None:
        """``tokenizer``: a ``tokenizers.Tokenizer`` that knows ``<|im_start|>`` / ``<|im_end|>`` as tokens;
        ``render``: content -> prompt text (:func:`chat_renderer` of the judge folder)."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.eos_ids = tuple(eos_ids)
        self.settings = settings or JudgeSettings()
        self.render = render
        self.progress = progress

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        settings: JudgeSettings | None = None,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        progress: bool = True,
    ) -> Judge:
        """Load a Hugging Face Qwen2/Qwen2.5 instruct folder (weights + ``tokenizer.json``).

        ``dtype`` None keeps the files' dtype (vLLM's ``dtype="auto"``). The stop ids are ``<|im_end|>`` and
        ``<|endoftext|>`` plus any ``eos_token_id`` of ``generation_config.json``.
        """
        from tokenizers import Tokenizer as HFTokenizer

        from affectrt.models.qwen2 import Qwen2ForCausalLM

        folder = Path(folder)
        tok_path = folder / "tokenizer.json"
        if not (folder / "config.json").is_file() or not tok_path.is_file():
            raise FileNotFoundError(
                f"{folder}: not a judge folder; expected a Hugging Face Qwen2.5-Instruct folder with "
                "config.json, weights and tokenizer.json"
            )
        tokenizer = HFTokenizer.from_file(str(tok_path))
        eos = [
            i
            for i in (tokenizer.token_to_id("<|im_end|>"), tokenizer.token_to_id("<|endoftext|>"))
            if i is not None
        ]
        gen_cfg = folder / "generation_config.json"
        if gen_cfg.is_file():
            extra = json.loads(gen_cfg.read_text()).get("eos_token_id")
            for i in [extra] if isinstance(extra, int) else list(extra or []):
                if i not in eos:
                    eos.append(i)
        if not eos:
            raise ValueError(
                f"{tok_path}: no <|im_end|> token; the judge must be a Qwen2/Qwen2.5 instruct model"
            )
        model = Qwen2ForCausalLM.from_pretrained(folder, dtype=dtype).to(device)
        return cls(model, tokenizer, eos, settings, chat_renderer(folder), progress)

    @torch.inference_mode()
    def complete(self, contents: Sequence[str], desc: str = "judge") -> list[str]:
        """The post-processed response to each user message, in input order."""
        s = self.settings
        pad = self.eos_ids[0]
        gen = s.generation(self.eos_ids, pad)
        ids = [
            e.ids
            for e in self.tokenizer.encode_batch([self.render(c) for c in contents], add_special_tokens=False)
        ]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[str] = [""] * len(ids)
        device = self.model.embed_tokens.weight.device
        batches = [order[i : i + s.batch_size] for i in range(0, len(order), s.batch_size)]
        bar = None
        if self.progress and batches:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ids), desc=desc, unit="answer", file=sys.stderr)
        for b, batch in enumerate(batches):
            width = max(len(ids[i]) for i in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                n = len(ids[i])
                input_ids[r, width - n :] = torch.tensor(ids[i])
                mask[r, width - n :] = 1
            if gen.do_sample:
                gen = dataclasses.replace(gen, seed=s.seed + b)
            rows = generate(
                self.model, attention_mask=mask.to(device), gen=gen, input_ids=input_ids.to(device)
            )
            for i, row in zip(batch, rows):
                cut = next((j for j, t in enumerate(row) if t in self.eos_ids), len(row))
                out[i] = postprocess(self.tokenizer.decode(row[:cut], skip_special_tokens=True))
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return out

    def openset(self, answers: Sequence[str]) -> list[str]:
        """Answer text -> the judge's label list string (``[concerned, stressed]``)."""
        return self.complete([OPENSET_PROMPT.format(reason=a) for a in answers], desc="judge: labels")

    def sentiment(self, opensets: Sequence[str]) -> list[str]:
        """Label list string -> the judge's sentiment word (scored only if exactly positive/negative/neutral)."""
        return self.complete([SENTIMENT_PROMPT.format(reason=o) for o in opensets], desc="judge: sentiment")


def judge_hook(judge: Judge) -> Callable[[Path, str, str], None]:
    """A :data:`~affectrt.eval.scoreonly.JudgeHook` writing the missing caches of one answer file."""
    from affectrt.eval.scoreonly import (
        OPENSET_SUFFIX,
        SENTIMENT_SUFFIX,
        read_answers,
        read_judge_cache,
        write_judge_cache,
    )

    def fill(run_dir: Path, stem: str, task: str) -> None:
        openset = run_dir / f"{stem}{OPENSET_SUFFIX}"
        if not openset.is_file():
            answers = read_answers(run_dir, stem)
            write_judge_cache(openset, list(answers), judge.openset(list(answers.values())))
        sentiment = run_dir / f"{stem}{SENTIMENT_SUFFIX}"
        if task == "sentiment" and not sentiment.is_file():
            labels = read_judge_cache(openset)  # the first step's raw strings, in that file's order
            write_judge_cache(sentiment, list(labels), judge.sentiment(list(labels.values())))

    return fill
