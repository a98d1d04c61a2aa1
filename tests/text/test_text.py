import pytest
import torch

from affectrt.config import get_preset
from affectrt.text.prompts import (
    OVLABEL_QUESTION,
    build_prompt,
    ovlabel_answer,
    postprocess_answer,
)
from affectrt.text.splice import (
    IGNORE_INDEX,
    embed_with_placeholders,
    inference_batch,
    placeholder_positions,
    training_batch,
)
from affectrt.text.tokenizer import byte_level_tokenizer


def test_face_prompt_is_the_release_text():
    cfg = get_preset("affectgpt-7b-face")
    prompt = build_prompt(cfg, "I am fine.", OVLABEL_QUESTION)
    assert prompt == (
        "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. "
        "The audio content is as follows: <Audio><AudioHere></Audio>. "
        "Meanwhile, we uniformly sample raw frames from the video and extract faces from these frames: "
        "<Video><FaceHere></Video>. "
        "The subtitle of this video is: <Subtitle>I am fine.</Subtitle>. "
        "Now, please answer my question based on all the provided information. "
        "Please recognize all possible emotional states of the character. ###Assistant: "
    )


def test_frame_prompt_and_query_token_repeat():
    cfg = get_preset("affectgpt-7b-frame")
    fusion = cfg.fusion.__class__(num_video_query_token=3, num_audio_query_token=2)
    prompt = build_prompt(cfg.replace(fusion=fusion), "x", "q")
    assert (
        "we uniformly sample raw frames from the video: <Video><FrameHere><FrameHere><FrameHere></Video>"
        in prompt
    )
    assert "<Audio><AudioHere><AudioHere></Audio>" in prompt
    assert "<FaceHere>" not in prompt


def test_answers_and_postprocess():
    assert ovlabel_answer(["happy", "excited"]) == "The character's emotional state is happy, excited."
    assert ovlabel_answer([]) == "The character's emotional state is neutral."
    assert postprocess_answer("The character's emotional state is sad.###") == (
        "The character's emotional state is sad."
    )
    assert postprocess_answer("Assistant: calm ### more") == "calm"


def test_postprocess_cuts_like_the_release():
    # the LAST ### is cut (rsplit), so an earlier one stays
    assert postprocess_answer("worried ### tense###") == "worried ### tense"
    # special tokens are decoded: keep what follows the first <|im_start|>, cut at the first <|im_end|>
    assert postprocess_answer("junk<|im_start|> happy<|im_end|>sad###") == "happy"
    assert postprocess_answer("a<|im_start|>b<|im_start|>c") == "b"
    assert postprocess_answer("calm.###<|im_end|><|im_end|>") == "calm."
    # other special tokens stay in the text, as in the release
    assert postprocess_answer("sad.<|endoftext|>") == "sad.<|endoftext|>"
    assert postprocess_answer("x Assistant: y Assistant:  z ###") == "z"


def test_control_token_strings_in_user_text_are_plain_text():
    cfg = get_preset("tiny")
    tok = byte_level_tokenizer()
    subtitle = "she said <FrameHere> and <MultiHere> then <|im_end|> <FaceHere>"
    prompt = build_prompt(cfg, subtitle, "what? <AudioHere>")
    ids = tok.encode(prompt)
    control = set(tok.placeholder_ids.values()) | {tok.eos_id, tok.bos_id}
    # exactly the template's three placeholders are control tokens; nothing from the user text is
    assert [i for i in ids if i in control] == [
        tok.placeholder_ids[t] for t in ("<MultiHere>", "<AudioHere>", "<FaceHere>")
    ]
    # the user text is its bytes (this tokenizer has one token per byte), never the control token
    assert len(tok.encode("<|im_end|>")) == len("<|im_end|>")
    # and the splice finds the one placeholder of each kind
    batch = inference_batch(tok, [prompt])
    for name in ("<MultiHere>", "<AudioHere>", "<FaceHere>"):
        assert placeholder_positions(batch.input_ids, tok.placeholder_ids[name], 1, name).tolist() == [
            ids.index(tok.placeholder_ids[name])
        ]


def test_prompt_ids_equal_whole_string_tokenization_without_control_text():
    """Splitting at the template's placeholders gives the ids of tokenizing the whole string (the release)."""
    from affectrt.testing.hf_models import bpe_tokenizer
    from affectrt.text.tokenizer import Tokenizer

    backend = bpe_tokenizer(512)
    tok = Tokenizer.from_backend(backend)
    for variant in ("face", "frame"):
        prompt = build_prompt(
            get_preset("tiny").replace(visual_input=variant), "I can't believe it!", OVLABEL_QUESTION
        )
        assert tok.encode(prompt) == backend.encode(str(prompt), add_special_tokens=False).ids


def test_training_batch_masks_like_the_release():
    tok = byte_level_tokenizer()
    batch = training_batch(tok, ["ab", "abcd"], ["x", "yz"])
    # row 0: <bos> a b x # # # <eos> <pad...>
    assert batch.input_ids[0].tolist()[:8] == [tok.bos_id, *tok.encode("ab"), *tok.encode("x###"), tok.eos_id]
    assert batch.labels[0].tolist()[:3] == [IGNORE_INDEX] * 3
    assert batch.labels[0].tolist()[3:8] == [*tok.encode("x###"), tok.eos_id]
    # pad == eos: the final eos of every row is masked too (the release's quirk)
    assert not bool(batch.attention_mask[0, 7]) and not bool(batch.attention_mask[1, -1])
    assert bool(batch.attention_mask[1, :-1].all())
    with pytest.raises(ValueError, match="sample 1"):
        training_batch(tok, ["a", "abcdef"], ["b", "c"], max_length=5)


def test_inference_batch_left_pads():
    tok = byte_level_tokenizer()
    batch = inference_batch(tok, ["abc", "a"])
    assert batch.input_ids[1].tolist() == [tok.pad_id, tok.pad_id, *tok.encode("a")]
    assert batch.attention_mask.tolist() == [[True] * 3, [False, False, True]]


def test_embed_with_placeholders_replaces_rows():
    tok = byte_level_tokenizer()
    face = tok.placeholder_ids["<FaceHere>"]
    ids = torch.tensor([[5, face, face, 7], [face, face, 9, 9]])
    emb = torch.nn.Embedding(tok.vocab_size, 4)
    feats = torch.randn(2, 2, 4)
    out = embed_with_placeholders(emb, ids, {face: feats})
    assert torch.equal(out[0, 1:3], feats[0]) and torch.equal(out[1, 0:2], feats[1])
    assert torch.equal(out[0, 0], emb.weight[5]) and torch.equal(out[1, 3], emb.weight[9])
    with pytest.raises(ValueError, match="not contiguous"):
        placeholder_positions(torch.tensor([[face, 1, face]]), face, 2)
    with pytest.raises(ValueError, match="expected 1"):
        placeholder_positions(ids, face, 1)
