"""Loading AffectGPT from Hugging Face folders + a release checkpoint, saving, and the whole path."""

from __future__ import annotations

import pytest
import torch

from affectrt.checkpoint import load_model, read_checkpoint, save_checkpoint
from affectrt.config import get_preset
from affectrt.models.hf_io import WeightsError
from affectrt.pipeline import AffectGPTPipeline, ClipInput, default_generation


def _release_checkpoint(
    model, path, drop: str | None = None, extra: dict | None = None, reshape: str | None = None
):
    """Give every trainable tensor random values and save them as the release does (``{"model": ...}``)."""
    from affectrt.testing.hf_models import randomize_trainable, release_state_dict

    randomize_trainable(model)
    trainable = model.trainable_state_dict()
    sd = release_state_dict(model)
    if drop is not None:
        sd.pop(next(k for k in sd if drop in k))
    if reshape is not None:
        key = next(k for k in sd if reshape in k)
        sd[key] = sd[key][..., :-1]
    sd.update(extra or {})
    torch.save({"model": sd, "optimizer": {"state": {}}, "epoch": 30, "config": {"run": {}}}, path)
    return trainable


def test_load_model_dir_and_release_checkpoint(tiny_model_dir, tmp_path):
    model, tok = load_model(tiny_model_dir, variant="face")
    tiny = get_preset("tiny")
    assert model.cfg.vision == tiny.vision and model.cfg.audio == tiny.audio and model.cfg.llm == tiny.llm
    assert tok.vocab_size <= model.cfg.llm.vocab_size

    trainable = _release_checkpoint(model, tmp_path / "ckpt.pth")
    fresh, _ = load_model(tiny_model_dir, tmp_path / "ckpt.pth", variant="face")
    got = fresh.trainable_state_dict()
    assert set(got) == set(trainable)
    for k, v in trainable.items():
        assert torch.equal(got[k], v), k


def test_release_checkpoint_key_errors(tiny_model_dir, tmp_path):
    model, _ = load_model(tiny_model_dir, variant="face")
    _release_checkpoint(model, tmp_path / "missing.pth", drop="fc_att")
    with pytest.raises(WeightsError, match=r"missing keys \(1\): fusion\.fc_att"):
        load_model(tiny_model_dir, tmp_path / "missing.pth", variant="face")
    _release_checkpoint(model, tmp_path / "extra.pth", extra={"bogus_proj.weight": torch.zeros(2)})
    with pytest.raises(WeightsError, match="unexpected keys.*bogus_proj"):
        load_model(tiny_model_dir, tmp_path / "extra.pth", variant="face")
    _release_checkpoint(model, tmp_path / "shape.pth", reshape="multi_llama_proj.weight")
    with pytest.raises(WeightsError, match="mis-shaped keys.*multi_llama_proj"):
        load_model(tiny_model_dir, tmp_path / "shape.pth", variant="face")


def test_affectrt_checkpoint_roundtrip(tiny_model_dir, tmp_path):
    model, _ = load_model(tiny_model_dir, variant="face")
    trainable = _release_checkpoint(model, tmp_path / "ckpt.pth")
    save_checkpoint(model, tmp_path / "ckpt.safetensors")
    tensors, cfg = read_checkpoint(tmp_path / "ckpt.safetensors")
    assert cfg == model.cfg
    fresh, _ = load_model(tiny_model_dir, tmp_path / "ckpt.safetensors", variant="face")
    for k, v in trainable.items():
        assert torch.equal(fresh.trainable_state_dict()[k], v), k


def test_missing_subfolder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CLIP vision folder"):
        load_model(tmp_path)


def test_whole_path_face_and_frame(tiny_model_dir, tmp_path, clip_path, face_npy):
    for variant in ("face", "frame"):
        model, tok = load_model(tiny_model_dir, variant=variant)
        _release_checkpoint(model, tmp_path / f"{variant}.pth")
        model, tok = load_model(tiny_model_dir, tmp_path / f"{variant}.pth", variant=variant)
        pipe = AffectGPTPipeline(model, tok)
        gen = default_generation(tok, max_new_tokens=8)
        clip = ClipInput(video=clip_path, subtitle="hello there", face_npy=face_npy)
        other = ClipInput(
            video=clip_path, subtitle="a much longer subtitle than the first", face_npy=face_npy
        )
        alone = [r.answer for r in pipe.answer([clip], gen=gen) + pipe.answer([other], gen=gen)]
        together = [r.answer for r in pipe.answer([clip, other], gen=gen)]
        assert all(isinstance(a, str) for a in alone)
        assert together == alone  # a left-padded batch answers like each clip alone


def test_loss_is_finite_and_masks_prompt(tiny_model_dir, clip_path, face_npy):
    from affectrt.text.prompts import OVLABEL_QUESTION, build_prompt, ovlabel_answer
    from affectrt.text.splice import training_batch

    model, tok = load_model(tiny_model_dir, variant="face")
    pipe = AffectGPTPipeline(model, tok)
    media = pipe.load_media(ClipInput(video=clip_path, face_npy=face_npy))
    batch = pipe.preprocess([media, media], ["a", "b"])
    z_v, z_a = model.encode_video(batch.pixels), model.encode_audio(batch.audio)
    prompts = [build_prompt(model.cfg, s, OVLABEL_QUESTION) for s in ("a", "bb")]
    tokens = training_batch(tok, prompts, [ovlabel_answer(["happy"]), ovlabel_answer([])])
    model.train()
    loss = model.loss(tokens, z_v, z_a, tok.placeholder_ids)
    loss.backward()
    assert torch.isfinite(loss)
    # every trainable tensor gets a gradient but image_llama_proj (trainable in the release, unused for video)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == ["fusion.image_llama_proj.weight", "fusion.image_llama_proj.bias"]
    assert all(p.grad is None for p in model.visual_encoder.parameters())


def test_long_prompts_keep_their_last_tokens_like_the_release(tiny_model_dir, monkeypatch, clip_path):
    import affectrt.pipeline as pipeline
    from affectrt.generate import generate

    model, tok = load_model(tiny_model_dir, variant="frame")
    pipe = AffectGPTPipeline(model, tok)
    gen = default_generation(tok, max_new_tokens=4)
    batch = pipe.preprocess([pipe.load_media(ClipInput(video=clip_path))] * 2, ["short", "a longer subtitle"])
    embeds, mask = pipe.fused_prompt_embeds(*pipe.encode(batch), batch.subtitles, "ovlabel")
    keep = embeds.shape[1] - 7
    monkeypatch.setattr(pipeline, "RELEASE_MAX_LENGTH", keep + gen.max_new_tokens)
    got = pipe.generate(embeds, mask, gen)
    rows = generate(model.llm, inputs_embeds=embeds[:, -keep:], attention_mask=mask[:, -keep:], gen=gen)
    assert got == [pipe.decode(r) for r in rows]


def test_top_k_comes_from_the_llm_folder(tiny_model_dir, tmp_path):
    import json
    import shutil

    from affectrt.checkpoint import generation_top_k

    assert generation_top_k(tmp_path) == 20  # no folder: the Qwen2.5-Instruct value
    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "llm" / "generation_config.json").write_text(json.dumps({"top_k": 7, "top_p": 0.8}))
    assert generation_top_k(copy) == 7


def test_a_converted_release_checkpoint_loads_like_the_pth(tiny_model_dir, tmp_path):
    """A .pth's ``model`` dict saved as safetensors (release key names, a converter's metadata) loads the same."""
    from safetensors.torch import save_file

    model, _ = load_model(tiny_model_dir, variant="face")
    trainable = _release_checkpoint(model, tmp_path / "ckpt.pth")
    sd = torch.load(tmp_path / "ckpt.pth", weights_only=True)["model"]
    save_file(
        {k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "ckpt.safetensors"), {"format": "pt"}
    )
    fresh, _ = load_model(tiny_model_dir, tmp_path / "ckpt.safetensors", variant="face")
    got = fresh.trainable_state_dict()
    for k, v in trainable.items():
        assert torch.equal(got[k], v), k


def test_generation_stops_on_every_eos_id_of_the_llm_folder(tiny_model_dir, tmp_path):
    import json
    import shutil

    from affectrt.text.tokenizer import Tokenizer

    copy = tmp_path / "llm"
    shutil.copytree(tiny_model_dir / "llm", copy)
    tok = Tokenizer.from_folder(copy)
    endoftext = tok.backend.token_to_id("<|endoftext|>")
    # the tiny folder mirrors Qwen2.5-Instruct's generation_config.json: <|im_end|> and <|endoftext|>
    assert tok.generation_eos_ids == (tok.eos_id, endoftext)
    assert default_generation(tok).eos_ids == (tok.eos_id, endoftext)
    (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": 77}))
    assert Tokenizer.from_folder(copy).generation_eos_ids == (tok.eos_id, 77)  # <|im_end|> always stops
    (copy / "generation_config.json").unlink()
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "eos_token_id": [5, 6]}))
    assert Tokenizer.from_folder(copy).generation_eos_ids == (
        tok.eos_id,
        5,
        6,
    )  # HF falls back to config.json
