"""A clip's overlapping audio windows through HuBERT's conv front end once: the same features as window by
window (and as transformers), found from the data alone."""

from __future__ import annotations

import pytest
import torch

from affectrt.config import get_preset
from affectrt.media.audio import joint_normalize
from affectrt.media.sampling import audio_window_slices
from affectrt.models import window_overlap
from affectrt.models.hubert import HubertEncoder
from affectrt.models.window_overlap import MAX_CANDIDATES, continuation_shift, conv_stack_shared, find_chains
from tests.models.test_hubert import hubert  # noqa: F401  (the fixture)


def _windows(seconds: float, seed: int = 0) -> torch.Tensor:
    """The release's eight 2 s windows of a random clip, jointly normalised: [8, 32000]."""
    wave = torch.randn(int(16000 * seconds), generator=torch.Generator().manual_seed(seed))
    return joint_normalize(
        torch.stack([wave[a:b] for a, b in audio_window_slices(wave.shape[0], 16000, 8, 2.0)])
    )


@pytest.fixture(scope="module")
def encoder() -> HubertEncoder:
    torch.manual_seed(0)
    enc = HubertEncoder(get_preset("tiny").audio).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return enc


def _per_window(enc: HubertEncoder, x: torch.Tensor) -> torch.Tensor:
    y = x[:, :, None]
    for conv in enc.convs:
        y = conv(y)
    return y


def test_continuation_shift_finds_the_offset_and_nothing_else():
    s = torch.randn(5000, generator=torch.Generator().manual_seed(1))
    assert continuation_shift(s[0:3000], s[700:3700], 400) == 700
    assert continuation_shift(s[0:3000], s[0:3000], 400) == 0
    assert continuation_shift(s[0:3000], s[2700 : 5700 - 700], 400) is None  # overlap 300 < 400
    assert continuation_shift(s[0:3000], s[2000:5000], 400) == 2000
    b = s[700:3700].clone()
    b[1000] += 1e-3  # one sample of the overlap differs: not a continuation
    assert continuation_shift(s[0:3000], b, 400) is None
    assert continuation_shift(s[0:3000], torch.randn(3000), 400) is None


def test_silence_is_never_misread():
    # Digital silence matches at every shift: too many candidates, so no sharing; a shift that does verify
    # must make the rows equal where they overlap.
    z = torch.zeros(3000)
    assert continuation_shift(z, z.clone(), 400) in (None, 0)
    a = torch.cat([torch.zeros(2000), torch.randn(1000)])
    b = torch.cat([torch.zeros(1000), torch.randn(2000)])
    d = continuation_shift(a, b, 400)
    assert d is None or torch.equal(a[d:], b[: 3000 - d])
    assert MAX_CANDIDATES >= 1


def test_chains_follow_row_order_and_break_between_clips():
    x = torch.cat([_windows(3.0, seed=1), _windows(5.3, seed=2)])
    chains = find_chains(x, 400)
    assert [c.rows for c in chains] == [list(range(8)), list(range(8, 16))]
    assert chains[0].offsets == [2000 * i for i in range(8)]  # int(16000 · i · (3 − 2) / 8)
    assert chains[1].offsets == [a for a, _ in audio_window_slices(int(16000 * 5.3), 16000, 8, 2.0)]


@pytest.mark.parametrize("seconds", [2.5, 3.0, 5.3, 6.04, 10.0])
def test_shared_conv_stack_equals_window_by_window(encoder, seconds):
    x = _windows(seconds)
    c = encoder.cfg
    with torch.no_grad():
        got = conv_stack_shared(x, list(encoder.convs), c.conv_kernel, c.conv_stride, encoder.conv_frame_macs)
        want = _per_window(encoder, x)
    assert got is not None and got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "seconds, why",
    [(17.9, "windows 1.9875 s apart: 200 samples in common, less than one frame's 400"),
     (3.0417, "offsets 2083·i: 3 phases of the first stride, then 8 tracks: saves 30% of the FLOPs"),
     (17.5, "1000 samples in common: sharing saves too little")],
)  # fmt: skip
def test_too_little_overlap_means_the_batched_path(encoder, seconds, why):
    x = _windows(seconds)
    c = encoder.cfg
    assert (
        conv_stack_shared(x, list(encoder.convs), c.conv_kernel, c.conv_stride, encoder.conv_frame_macs)
        is None
    ), why


def test_a_chain_that_fails_verification_is_not_shared(encoder):
    x = _windows(3.0)
    x[3, 20000] += 1.0  # inside row 3's overlap with row 2, past the probe samples
    c = encoder.cfg
    assert (
        conv_stack_shared(x, list(encoder.convs), c.conv_kernel, c.conv_stride, encoder.conv_frame_macs)
        is None
    )
    with torch.no_grad():
        torch.testing.assert_close(encoder.conv_features(x), _per_window(encoder, x), atol=0, rtol=0)


def test_shuffled_rows_and_mixed_clips(encoder):
    x = torch.cat([_windows(3.0, seed=4), _windows(4.0, seed=5)])
    x = x[torch.tensor([0, 1, 2, 9, 10, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15])]
    with torch.no_grad():
        got, want = encoder.conv_features(x), _per_window(encoder, x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_encoder_shares_only_outside_tracing_and_export(encoder, monkeypatch):
    calls = []
    real = window_overlap.conv_stack_shared

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr("affectrt.models.hubert.conv_stack_shared", spy)
    x = _windows(3.0)
    with torch.no_grad():
        pooled = encoder.pooled(x)
        assert calls == [1]
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        again = encoder.pooled(x)
    assert calls == [1]  # the compiled/exported graph runs the windows one by one
    torch.testing.assert_close(pooled, again, atol=1e-6, rtol=1e-6)


def test_pooled_features_of_overlapping_windows_equal_transformers(hubert):  # noqa: F811
    folder, hf = hubert[0], hubert[1]  # test_hubert's random stable-layer-norm HubertModel and its folder
    ours = HubertEncoder.from_pretrained(folder)
    x = _windows(3.0, seed=7)
    with torch.no_grad():
        ref = hf(x, output_hidden_states=True)
        got = ours(x)
    for g, w in zip(got[:-1], ref.hidden_states[:-1], strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[-1], ref.last_hidden_state, atol=1e-5, rtol=1e-5)
