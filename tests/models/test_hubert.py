"""HubertEncoder equals transformers' HubertModel (stable-layer-norm variant) on small random models."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from affectrt.config import get_preset  # noqa: E402
from affectrt.models.hf_io import WeightsError, read_config  # noqa: E402
from affectrt.models.hubert import HubertEncoder, fold_weight_norm, hubert_config_from_hf  # noqa: E402

HF_CFG = dict(
    do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=False, hidden_size=32, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)  # fmt: skip
POS = "encoder.pos_conv_embed.conv."


@pytest.fixture(scope="module")
def hubert(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.HubertModel(transformers.HubertConfig(**HF_CFG)).eval()
    # Random init leaves LayerNorms at identity and biases at 0; perturb them so the test sees them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("hubert")
    model.save_pretrained(folder, safe_serialization=True)
    x = torch.randn(3, 32000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x, output_hidden_states=True)
    return folder, model, x, ref


@pytest.fixture(scope="module")
def ours(hubert):
    return HubertEncoder.from_pretrained(hubert[0])


def _check_against_hf(enc: HubertEncoder, x: torch.Tensor, ref) -> None:
    with torch.no_grad():
        states = enc(x)
        pooled = enc.pooled(x)
    assert len(states) == len(ref.hidden_states) == 3
    # Entries 0..L-1 are the un-normalised residual stream in every transformers version; the last entry is
    # LN(output of layer L) as in transformers 4.x (the release), which is last_hidden_state in every version.
    for got, want in zip(states[:-1], ref.hidden_states[:-1]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(states[-1], ref.last_hidden_state, atol=1e-5, rtol=1e-5)
    k = 4  # the release: torch.stack(hidden_states[-4:]).mean(0).mean(1); here 3 states exist
    release_states = list(ref.hidden_states[:-1]) + [ref.last_hidden_state]
    want = torch.stack(release_states[-k:]).mean(0).mean(1)
    assert pooled.shape == (3, 32)
    torch.testing.assert_close(pooled, want, atol=1e-5, rtol=1e-5)


def test_config_from_hf(hubert, ours):
    cfg = hubert_config_from_hf(read_config(hubert[0]))
    tiny = get_preset("tiny").audio
    assert cfg == tiny
    assert ours.cfg == tiny and not ours.training
    assert not any(p.requires_grad for p in ours.parameters())


def test_num_frames_matches_hf(hubert):
    model = hubert[1]
    cfg = get_preset("affectgpt-7b-face").audio
    for n in (32000, 16000, 400, 12345):
        want = int(model._get_feat_extract_output_lengths(torch.tensor(n)))
        assert cfg.num_frames(n) == want
    assert cfg.num_frames(32000) == 99


def test_hidden_states_and_pooled_match_hf(hubert, ours):
    _, _, x, ref = hubert
    assert ref.hidden_states[0].shape == (3, 99, 32)
    _check_against_hf(ours, x, ref)


def test_pooled_uses_last_k_states(hubert, ours):
    _, _, x, _ = hubert
    enc = HubertEncoder(dataclasses.replace(ours.cfg, pool_last_layers=2)).eval()
    enc.load_state_dict(ours.state_dict())
    with torch.no_grad():
        states = enc(x)
        torch.testing.assert_close(enc.pooled(x), torch.stack(states[-2:]).mean(0).mean(1))


def test_old_style_weight_norm_keys(hubert):
    _, model, x, ref = hubert
    sd = {f"hubert.{k}": v for k, v in model.state_dict().items()}  # also the HubertForCTC prefix
    g = sd.pop(f"hubert.{POS}parametrizations.weight.original0")
    v = sd.pop(f"hubert.{POS}parametrizations.weight.original1")
    assert g.shape == (1, 1, 16)
    sd[f"hubert.{POS}weight_g"], sd[f"hubert.{POS}weight_v"] = g, v
    sd["lm_head.weight"] = torch.zeros(10, 32)
    enc = HubertEncoder(hubert_config_from_hf(model.config.to_dict())).load_hf_state_dict(sd).eval()
    _check_against_hf(enc, x, ref)


def test_fold_weight_norm_matches_torch():
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(8, 8, 5, groups=2), dim=2)
    with torch.no_grad():
        conv.parametrizations.weight.original0.mul_(torch.rand(1, 1, 5) + 0.5)
    g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
    torch.testing.assert_close(fold_weight_norm(g, v), conv.weight)


def test_missing_and_misshaped_keys(hubert):
    _, model, _, _ = hubert
    cfg = hubert_config_from_hf(model.config.to_dict())
    sd = dict(model.state_dict())
    del sd["encoder.layers.0.feed_forward.output_dense.bias"]
    with pytest.raises(
        WeightsError, match=r"missing keys.*encoder\.layers\.0\.feed_forward\.output_dense\.bias"
    ):
        HubertEncoder(cfg).load_hf_state_dict(sd, source="test")
    sd = dict(model.state_dict())
    sd["feature_extractor.conv_layers.3.conv.weight"] = torch.zeros(16, 16, 5)
    with pytest.raises(
        WeightsError, match=r"mis-shaped.*conv_layers\.3\.conv\.weight: expected \(16, 16, 3\)"
    ):
        HubertEncoder(cfg).load_hf_state_dict(sd, source="test")


def test_rejects_non_stable_layer_norm(tmp_path, hubert):
    cfg = read_config(hubert[0])
    cfg.update(do_stable_layer_norm=False, feat_extract_norm="group")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do_stable_layer_norm.*feat_extract_norm"):
        HubertEncoder.from_pretrained(tmp_path)


def test_from_pretrained_dtype(hubert):
    enc = HubertEncoder.from_pretrained(hubert[0], dtype=torch.bfloat16)
    assert {p.dtype for p in enc.parameters()} == {torch.bfloat16}
    assert enc.pooled(torch.randn(1, 4000)).dtype == torch.bfloat16


def test_channels_last_weight_is_kept_until_the_weight_changes():
    """The reordered conv weight is reused at inference and rebuilt after any in-place change or new tensor."""
    from affectrt.models.hubert import _channels_last_weight

    conv = torch.nn.Conv1d(8, 16, 3, groups=2)
    with torch.inference_mode():
        first = _channels_last_weight(conv)
        assert _channels_last_weight(conv) is first
        assert torch.equal(first[:, :, 0], conv.weight)
    for change in (lambda: conv.weight.mul_(2), lambda: setattr(conv.weight, "data", conv.weight.data + 1)):
        with torch.no_grad():
            change()
        with torch.inference_mode():
            again = _channels_last_weight(conv)
        assert again is not first and torch.equal(again[:, :, 0], conv.weight)
        first = again
    with torch.enable_grad():  # with autograd: made afresh, so gradients reach the parameter
        w = _channels_last_weight(conv)
        assert w is not first and w.requires_grad
