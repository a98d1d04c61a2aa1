"""The whole affectrt path equals the upstream-style reference built from transformers + peft.

Same Hugging Face folders, same release-format trainable tensors, same clip (video or OpenFace faces plus the
16 kHz ``.wav`` the release reads): every stage's tensors agree to float32 rounding and greedy generation gives
the same tokens and text. The reference writes its own frame indices, audio windows, prompt, stops and answer
post-processing, so the mutation tests below (a frame index, an audio window, a prompt character or an eos id
changed in affectrt only) must make the check fail.
"""

from __future__ import annotations

import json
import shutil
import wave

import numpy as np
import pytest
import torch

from affectrt.checkpoint import load_model
from affectrt.pipeline import AffectGPTPipeline, ClipInput, default_generation

pytest.importorskip("peft")
pytest.importorskip("decord", reason="the reference reads frames with decord, as the release does")
pytest.importorskip("cv2", reason="the reference resizes faces with OpenCV, as the release does")

SUBTITLE = "Why would you say that to me?"
NEW_TOKENS = 12


def _write_wav(path, seconds: float = 3.3, rate: int = 16000):
    """16 kHz mono 16-bit PCM, longer than 2 s so that the eight windows start at different samples."""
    rng = np.random.default_rng(5)
    data = (rng.standard_normal(int(seconds * rate)) * 6000).clip(-32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path


@pytest.fixture(scope="module")
def wav_path(tmp_path_factory):
    return _write_wav(tmp_path_factory.mktemp("wav") / "clip.wav")


def _load_both(model_dir, variant, ckpt, sd):
    from affectrt.testing import upstream

    model, tok = load_model(model_dir, ckpt, variant=variant)
    return AffectGPTPipeline(model, tok), upstream.load_upstream(model_dir, sd, model.cfg)


@pytest.fixture(scope="module", params=["face", "frame"])
def both(request, tiny_model_dir, tmp_path_factory, clip_path, face_npy, wav_path):
    """(pipeline, reference, clip, extra eos id) for a model folder whose generation_config.json lists an
    extra eos id that greedy decoding reaches after a few tokens, so stopping on the folder's eos ids is
    exercised (random weights never emit <|endoftext|> on cue)."""
    from affectrt.testing import upstream
    from affectrt.testing.hf_models import randomize_trainable, release_state_dict

    variant = request.param
    root = tmp_path_factory.mktemp(f"parity_{variant}")
    for sub in ("vision", "audio", "llm"):
        shutil.copytree(tiny_model_dir / sub, root / sub)
    model, _ = load_model(root, variant=variant)
    randomize_trainable(model, seed=2, scale=0.5)  # large enough that greedy decoding does not loop
    sd = release_state_dict(model)
    ckpt = root / f"{variant}.pth"
    torch.save({"model": sd, "epoch": 30}, ckpt)
    clip = ClipInput(video=clip_path, subtitle=SUBTITLE, face_npy=face_npy, audio=wav_path)

    _, up = _load_both(root, variant, ckpt, sd)
    ids = upstream.answer(
        up, clip.video, clip.subtitle, clip.face_npy, clip.audio, max_new_tokens=NEW_TOKENS
    )[1]
    extra = next((t for i, t in enumerate(ids) if i >= 4 and t not in ids[:i]), None)
    assert extra is not None, f"no fresh token after step 4 in {ids}"
    gen_path = root / "llm" / "generation_config.json"
    gen_cfg = json.loads(gen_path.read_text())
    gen_cfg["eos_token_id"] = [*gen_cfg["eos_token_id"], extra]
    gen_path.write_text(json.dumps(gen_cfg))
    pipe, up = _load_both(root, variant, ckpt, sd)
    return pipe, up, clip, extra


def assert_parity(pipe, up, clip) -> list[int]:
    """Every stage of affectrt equals the reference's; returns the reference's generated ids."""
    from affectrt.generate import generate
    from affectrt.testing import upstream

    media = pipe.load_media(clip)
    raw_visual = upstream.read_visual(up, clip.video, clip.face_npy)
    assert torch.equal(torch.from_numpy(media.visual).permute(3, 0, 1, 2).float(), raw_visual), "frames"
    raw_audio = upstream.read_audio(up, clip.audio)
    assert torch.equal(media.audio, raw_audio[:, 0]), "audio windows"

    batch = pipe.preprocess([media], [clip.subtitle])
    z_v, z_a = pipe.encode(batch)
    ref_v = upstream.encode_visual(up, raw_visual)
    ref_a = upstream.encode_audio(up, raw_audio)
    torch.testing.assert_close(z_v, ref_v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z_a, ref_a, rtol=1e-4, atol=1e-5)

    feats = pipe.fuse(z_v, z_a)
    ref_feats = upstream.fuse(up, ref_v, ref_a)
    assert feats.keys() == ref_feats.keys()
    for name in feats:
        torch.testing.assert_close(feats[name], ref_feats[name], rtol=1e-4, atol=1e-5)

    embeds, _ = pipe.prompt_embeds(feats, [clip.subtitle], "ovlabel")
    ref_embeds = upstream.prompt_embeds(up, ref_feats, clip.subtitle, "ovlabel")
    assert embeds.shape == ref_embeds.shape, "prompt length"
    torch.testing.assert_close(embeds, ref_embeds, rtol=1e-4, atol=1e-5)
    # the fused head writing straight into the placeholder rows (the production path) gives the same
    fused, _ = pipe.fused_prompt_embeds(z_v, z_a, [clip.subtitle], "ovlabel")
    torch.testing.assert_close(fused, ref_embeds, rtol=1e-4, atol=1e-5)

    gen = default_generation(pipe.tokenizer, max_new_tokens=NEW_TOKENS)
    ours = pipe.answer([clip], gen=gen)[0].answer
    ref_text, ref_ids = upstream.answer(
        up, clip.video, clip.subtitle, clip.face_npy, clip.audio, max_new_tokens=NEW_TOKENS
    )
    mask = torch.ones(embeds.shape[:2], dtype=torch.bool)
    our_ids = generate(pipe.model.llm, inputs_embeds=embeds, attention_mask=mask, gen=gen)[0]
    assert our_ids == ref_ids, "generated ids"
    assert ours == ref_text, "answer text"
    return ref_ids


def test_every_stage_and_greedy_answer_match(both):
    pipe, up, clip, extra = both
    ids = assert_parity(pipe, up, clip)
    assert len(ids) >= 5 and ids[-1] == extra  # a real answer, ended by the folder's extra eos id
    llm = pipe.model.llm  # the answers above came from the packed inference layout
    packs = [p for layer in llm.layers for o in (layer.self_attn, layer.mlp) for p in o.packs.values()]
    with torch.inference_mode():
        assert len(packs) == 4 * len(llm.layers) and all(p.usable() for p in packs)


def test_production_path_writes_into_the_placeholder_rows(both):
    pipe, _, clip, _ = both
    media = pipe.load_media(clip)
    z_v, z_a = pipe.encode(pipe.preprocess([media], [clip.subtitle]))
    calls = []
    head = pipe.model.fusion
    real = head.forward_fused
    head.forward_fused = lambda *a, **k: calls.append(k.get("out") is not None) or real(*a, **k)
    try:
        pipe.fused_prompt_embeds(z_v, z_a, [clip.subtitle], "ovlabel")
    finally:
        del head.forward_fused
    assert calls == [True]


def _shift_frames(monkeypatch, pipe):
    import affectrt.media.faces as faces
    import affectrt.media.video as video

    module = faces if pipe.cfg.visual_input == "face" else video
    real = module.sample_indices
    monkeypatch.setattr(module, "sample_indices", lambda n, k=8: [min(i + 1, n - 1) for i in real(n, k)])


def _shift_audio(monkeypatch, pipe):
    import affectrt.media.audio as audio

    real = audio.audio_window_slices
    monkeypatch.setattr(
        audio, "audio_window_slices", lambda *a, **k: [(s + 800, e + 800) for s, e in real(*a, **k)]
    )


def _change_prompt(monkeypatch, pipe):
    import affectrt.text.prompts as prompts

    monkeypatch.setattr(prompts, "_TAIL", prompts._TAIL.replace("Now, please", "Now; please"))


def _drop_folder_eos(monkeypatch, pipe):
    monkeypatch.setattr(pipe.tokenizer, "generation_eos_ids", (pipe.tokenizer.eos_id,))


@pytest.mark.parametrize(
    "mutate, caught",
    [
        (_shift_frames, "frames"),
        (_shift_audio, "audio windows"),
        (_change_prompt, "Tensor-likes are not close"),
        (_drop_folder_eos, "generated ids"),
    ],
)
def test_the_yardstick_catches_a_mutation(both, monkeypatch, mutate, caught):
    pipe, up, clip, _ = both
    mutate(monkeypatch, pipe)
    with pytest.raises(AssertionError, match=caught):
        assert_parity(pipe, up, clip)
