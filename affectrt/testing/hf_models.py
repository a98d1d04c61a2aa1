"""Random CLIP / HuBERT / Qwen2.5 folders saved by ``transformers`` in the real Hugging Face format.

No weights can be downloaded here, so tests and benchmarks make model folders of a preset's dimensions with
``transformers`` itself (``save_pretrained``, safetensors) and load them through affectrt's real loaders.
"""

from __future__ import annotations

from pathlib import Path

import torch

from affectrt.config import AffectGPTConfig


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Move LayerNorm/bias parameters off their 1/0 init so parity checks exercise them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name.lower():
                p.add_(0.1 * torch.randn(p.shape, generator=g))


_CORPUS = [
    "###Human: The audio and video merged info is: <Multi></Multi>. The audio content is as follows: "
    "<Audio></Audio>. Meanwhile, we uniformly sample raw frames from the video and extract faces from these "
    "frames: <Video></Video>. Meanwhile, we uniformly sample raw frames from the video: <Video></Video>. "
    "The subtitle of this video is: <Subtitle></Subtitle>. Now, please answer my question based on all the "
    "provided information. Please recognize all possible emotional states of the character. Please infer the "
    "person's emotional state and provide your reasoning process. ###Assistant: ",
    "The character's emotional state is happy, excited, surprised, sad, angry, worried, anxious, calm, neutral.",
    "In the text, the speaker says that she really did not expect to see him here today, and honestly she is "
    "not sure how she feels about it. Her voice is trembling and her face shows a frown, so she may be upset.",
]


def bpe_tokenizer(vocab_size: int):
    """A byte-level BPE trained on AffectGPT's prompt text, so prompts have realistic token counts.

    Returns a ``tokenizers.Tokenizer`` with the Qwen special tokens; its vocabulary (plus the five placeholders)
    fits in ``vocab_size`` rows.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 5,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok


def write_hf_model_dir(cfg: AffectGPTConfig, root: str | Path, seed: int = 0, bpe: bool = False) -> Path:
    """Write ``root/vision``, ``root/audio``, ``root/llm`` (+ ``tokenizer.json``) for ``cfg``.

    The tokenizer is byte-level (one token per byte), or with ``bpe=True`` a small BPE trained on the prompt
    text. Returns ``root``. Folders that already hold a ``config.json`` are kept (a benchmark reuses them).
    """
    import transformers

    from affectrt.text.tokenizer import byte_level_tokenizer

    root = Path(root)
    v, a, q = cfg.vision, cfg.audio, cfg.llm
    torch.manual_seed(seed)
    if not (root / "vision" / "config.json").is_file():
        clip = transformers.CLIPModel(
            transformers.CLIPConfig(
                vision_config=dict(
                    hidden_size=v.hidden_size,
                    intermediate_size=v.intermediate_size,
                    num_hidden_layers=v.num_layers,
                    num_attention_heads=v.num_heads,
                    image_size=v.image_size,
                    patch_size=v.patch_size,
                    layer_norm_eps=v.layer_norm_eps,
                ),
                text_config=dict(
                    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
                ),
                projection_dim=v.projection_dim,
            )
        )
        _perturb(clip, seed + 1)
        clip.save_pretrained(root / "vision")
    if not (root / "audio" / "config.json").is_file():
        hubert = transformers.HubertModel(
            transformers.HubertConfig(
                hidden_size=a.hidden_size,
                intermediate_size=a.intermediate_size,
                num_hidden_layers=a.num_layers,
                num_attention_heads=a.num_heads,
                conv_dim=list(a.conv_dim),
                conv_kernel=list(a.conv_kernel),
                conv_stride=list(a.conv_stride),
                conv_bias=a.conv_bias,
                num_conv_pos_embeddings=a.num_conv_pos_embeddings,
                num_conv_pos_embedding_groups=a.num_conv_pos_embedding_groups,
                layer_norm_eps=a.layer_norm_eps,
                do_stable_layer_norm=True,
                feat_extract_norm="layer",
            )
        )
        _perturb(hubert, seed + 2)
        hubert.save_pretrained(root / "audio")
    if not (root / "llm" / "config.json").is_file():
        llm = transformers.Qwen2ForCausalLM(
            transformers.Qwen2Config(
                vocab_size=q.vocab_size,
                hidden_size=q.hidden_size,
                intermediate_size=q.intermediate_size,
                num_hidden_layers=q.num_layers,
                num_attention_heads=q.num_heads,
                num_key_value_heads=q.num_kv_heads,
                rope_theta=q.rope_theta,
                rms_norm_eps=q.rms_norm_eps,
                max_position_embeddings=q.max_position_embeddings,
                tie_word_embeddings=q.tie_word_embeddings,
            )
        )
        _perturb(llm, seed + 3)
        llm.save_pretrained(root / "llm")
        backend = bpe_tokenizer(q.vocab_size) if bpe else byte_level_tokenizer().backend
        backend.save(str(root / "llm" / "tokenizer.json"))
        from affectrt.init_random import write_generation_config

        write_generation_config(root / "llm", backend)
    return root


def randomize_trainable(model: torch.nn.Module, seed: int = 7, scale: float = 0.05) -> None:
    """Give every trainable tensor (fusion head, LoRA A and B) random values, as a trained checkpoint has."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def release_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable tensors under the release's checkpoint key names."""
    from affectrt.checkpoint import release_state_dict as to_release

    return to_release(model)


def tiny_qwen2(vocab_size: int = 256, tie: bool = False, seed: int = 0):
    """A tiny random ``transformers.Qwen2ForCausalLM`` in eval mode (2 layers, GQA 4/2 heads, hidden 64).

    ``initializer_range=0.1`` spreads the logits so that greedy choices have no near-ties to flip.
    """
    import transformers

    torch.manual_seed(seed)
    config = transformers.Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=1e6,
        initializer_range=0.1,
        tie_word_embeddings=tie,
    )
    return transformers.Qwen2ForCausalLM(config).eval()
