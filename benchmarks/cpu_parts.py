"""CPU-only parts against what they replace, interleaved in one process (the README's figures for them).

    python benchmarks/cpu_parts.py                  # all
    python benchmarks/cpu_parts.py --only front_end
    python benchmarks/cpu_parts.py --only rows_linear --dtype bfloat16 --rows 1
    python benchmarks/cpu_parts.py --only encoder_rows

- ``front_end``: HuBERT's conv front end (`small` preset, random weights) over the release's eight 2 s windows
  of a 3 s clip, shared across the overlapping windows (``HubertEncoder.conv_features``) against window by
  window; also a 3.0417 s clip, whose offsets fall on many stride phases (the plan is dropped: equal times).
- ``rows_linear``: one batch-16 (``--rows``) decode step's 49 projections of the `medium` preset's shapes
  (random weights, 1.4 GB in float32, the stacked q/k/v+LoRA A, o, gate/up, down and lm_head) through
  ``rows_linear`` against what packed.py used before (float32: MKL's ``x @ W`` on the [in, out] layout;
  ``--dtype bfloat16`` / ``float16``: torch's ``F.linear`` on nn.Linear's layout), and ``torch.sum`` over a
  float32 tensor of the same bytes (the rate memory is read at).
- ``encoder_rows``: CLIP and HuBERT (`small` preset, random weights) over eight clips' frames and audio windows
  (64 each) at 2, 4, 8, 16 and 32 rows per encoder call; prints the ms per clip of each and the
  ``AFFECTRT_ENCODER_ROWS`` that was fastest on this CPU (``affectrt.models.affectgpt.cpu_encoder_rows``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_metadata, stats, time_call  # noqa: E402

from affectrt.config import get_preset  # noqa: E402
from affectrt.cpu_alloc import keep_freed_memory  # noqa: E402
from affectrt.media.audio import joint_normalize  # noqa: E402
from affectrt.media.sampling import audio_window_slices  # noqa: E402
from affectrt.models.hubert import HubertEncoder  # noqa: E402
from affectrt.ops.rows_linear import rows_linear  # noqa: E402

CPU = torch.device("cpu")


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms of each callable, A B A B ... so that drift hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k] += time_call(fn, CPU, 1, warmup=0)
    return {k: stats(v)["median_ms"] for k, v in times.items()}


def front_end(repeats: int) -> None:
    torch.manual_seed(0)
    enc = HubertEncoder(get_preset("small").audio).eval()

    def per_window(x: torch.Tensor) -> torch.Tensor:
        y = x[:, :, None]
        for conv in enc.convs:
            y = conv(y)
        return y

    for seconds in (3.0, 3.0417):
        wave = torch.randn(int(16000 * seconds))
        x = joint_normalize(
            torch.stack([wave[a:b] for a, b in audio_window_slices(wave.shape[0], 16000, 8, 2.0)])
        )
        with torch.inference_mode():
            ms = interleaved(
                {"shared": lambda x=x: enc.conv_features(x), "per-window": lambda x=x: per_window(x)}, repeats
            )
        print(
            f"front_end {seconds} s clip: shared {ms['shared']:.1f} ms, window by window {ms['per-window']:.1f} ms "
            f"({ms['per-window'] / ms['shared']:.2f}x)"
        )


def decode_weights(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """[out, in] weights of one `medium` decode step's stacked projections (LoRA A rows included)."""
    c = get_preset("medium")
    h, i, kv, r = (
        c.llm.hidden_size,
        c.llm.intermediate_size,
        2 * c.llm.num_kv_heads * c.llm.head_dim,
        c.lora.r,
    )
    shapes = []
    for _ in range(c.llm.num_layers):
        shapes += [(h + kv + 3 * r, h), (h + r, h), (2 * i + 2 * r, h), (h + r, i)]
    shapes.append((c.llm.vocab_size, h))
    return [torch.randn(s).to(dtype) for s in shapes]


def decode_gemms(repeats: int, rows: int, dtype: torch.dtype) -> None:
    ws = decode_weights(dtype)
    xs = {w.shape[1]: torch.randn(rows, w.shape[1]).to(dtype) for w in ws}
    nbytes = sum(w.numel() * w.element_size() for w in ws)
    flat = torch.randn(nbytes // 4)
    if dtype == torch.float32:
        cols = [w.t().contiguous() for w in ws]  # the [in, out] layout MKL was given before
        before = ("MKL", lambda: [xs[w.shape[0]] @ w for w in cols])
    else:
        before = ("torch", lambda: [torch.nn.functional.linear(xs[w.shape[1]], w) for w in ws])
    with torch.inference_mode():
        ms = interleaved(
            {
                "rows_linear": lambda: [rows_linear(xs[w.shape[1]], w) for w in ws],
                before[0]: before[1],
                "torch.sum": lambda: flat.sum(),
            },
            repeats,
        )
    gbs = {k: nbytes / v / 1e6 for k, v in ms.items()}
    name = str(dtype).removeprefix("torch.")
    print(
        f"rows_linear: {len(ws)} projections of the medium preset at {rows} rows, {name}, {nbytes / 1e9:.2f} GB: "
        f"rows_linear {ms['rows_linear']:.1f} ms ({gbs['rows_linear']:.1f} GB/s), {before[0]} "
        f"{ms[before[0]]:.1f} ms ({gbs[before[0]]:.1f} GB/s), torch.sum over the same bytes "
        f"{ms['torch.sum']:.1f} ms ({gbs['torch.sum']:.1f} GB/s): {ms[before[0]] / ms['rows_linear']:.2f}x"
    )


def encoder_rows(repeats: int, candidates: tuple[int, ...] = (2, 4, 8, 16, 32)) -> int:
    """ms per clip of each encoder at each rows-per-call count (see the module docstring); returns the best."""
    import os

    from affectrt.models.affectgpt import AffectGPT

    torch.manual_seed(0)
    model = AffectGPT(get_preset("small"), with_lora=False).eval()
    clips, media = 8, get_preset("small").media
    frames = torch.randn(clips, media.n_frames, 3, media.image_size, media.image_size)
    windows = torch.randn(clips, media.n_audio_clips, int(media.sample_rate * media.clip_seconds))
    before = os.environ.get("AFFECTRT_ENCODER_ROWS")

    def at(rows: int, fn):
        def run():
            os.environ["AFFECTRT_ENCODER_ROWS"] = str(rows)
            fn()

        return run

    try:
        with torch.inference_mode():
            fns = {}
            for rows in candidates:
                fns[("video", rows)] = at(rows, lambda: model.encode_video(frames))
                fns[("audio", rows)] = at(rows, lambda: model.encode_audio(windows))
            ms = interleaved(fns, repeats)
    finally:
        if before is None:
            os.environ.pop("AFFECTRT_ENCODER_ROWS", None)
        else:
            os.environ["AFFECTRT_ENCODER_ROWS"] = before
    total = {rows: (ms[("video", rows)] + ms[("audio", rows)]) / clips for rows in candidates}
    for rows in candidates:
        print(
            f"encoder_rows {rows:>2}: CLIP {ms[('video', rows)] / clips:6.1f} ms per clip, HuBERT "
            f"{ms[('audio', rows)] / clips:6.1f}, both {total[rows]:6.1f}"
        )
    best = min(total, key=total.get)
    if best != 8 and total[8] <= 1.05 * total[best]:
        print(f"encoder_rows: {best} rows per call fastest, the default 8 within 5 % of it: keep the default")
        return 8
    print(
        f"encoder_rows: fastest here at {best} rows per call: export AFFECTRT_ENCODER_ROWS={best} (default 8)"
    )
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("front_end", "rows_linear", "encoder_rows"), help="run one part")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--rows", type=int, default=16, help="rows_linear: rows per GEMM (the decode batch)")
    ap.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="rows_linear: weight dtype",
    )
    args = ap.parse_args(argv)
    keep_freed_memory()
    meta = run_metadata(CPU)
    print(f"{meta['device_name']}, {meta['threads']} threads, commit {meta['commit']}")
    if args.only in (None, "front_end"):
        front_end(args.repeats)
    if args.only in (None, "rows_linear"):
        decode_gemms(args.repeats, args.rows, getattr(torch, args.dtype))
    if args.only in (None, "encoder_rows"):
        encoder_rows(args.repeats)


if __name__ == "__main__":
    main()
