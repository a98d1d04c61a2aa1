"""End-to-end latency of one clip (or a batch), stage by stage, on the device present.

    python benchmarks/latency.py                       # small preset, a clip it makes itself, CPU or CUDA
    python benchmarks/latency.py --batch 4 --repeats 5 --json-out bench_results/latency.json

Stages: decode (PyAV decode + sampling of 8 frames and 8 audio windows), preprocess (CLIP and HuBERT
normalisation, host → device), encoders (CLIP + HuBERT), fusion (token compression + pre-fusion), prefill
(prompt splice + the LLM over the prompt + the first token), decode (each further token, per token).
Weights are random (no downloads); the work per stage is the real computation of the preset's sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import make_clip, run_metadata, stats, time_call  # noqa: E402

from affectrt.config import get_preset  # noqa: E402
from affectrt.generate import GenerationConfig  # noqa: E402
from affectrt.models.affectgpt import AffectGPT  # noqa: E402
from affectrt.pipeline import AffectGPTPipeline, ClipInput  # noqa: E402
from affectrt.text.tokenizer import byte_level_tokenizer  # noqa: E402

SUBTITLE = "I really did not expect to see you here today, and honestly I am not sure how I feel about it."


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=16, help="tokens decoded after the first")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clip", type=Path, default=None, help="video to use (default: a generated 3 s clip)")
    ap.add_argument("--json-out", type=Path, default=Path("bench_results/latency.json"))
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = get_preset(args.preset).replace(visual_input="frame")
    tokenizer = byte_level_tokenizer()
    model = AffectGPT(cfg)
    pipe = AffectGPTPipeline(model, tokenizer, device=device)
    clip_path = args.clip or make_clip(Path("bench_results/clips/latency_clip.mp4"))
    clips = [ClipInput(video=clip_path, subtitle=SUBTITLE)] * args.batch

    # Fixed-length decoding: no stop sequences, so every run decodes exactly the same number of tokens.
    def gen_cfg(n: int) -> GenerationConfig:
        return GenerationConfig(max_new_tokens=n, do_sample=False, stop_sequences=(), eos_token_id=None)

    media = [pipe.load_media(c) for c in clips]
    batch = pipe.preprocess(media, [c.subtitle for c in clips])
    z_v, z_a = pipe.encode(batch)
    feats = pipe.fuse(z_v, z_a)
    embeds, mask = pipe.prompt_embeds(feats, batch.subtitles, "ovlabel")

    def answer(n_tokens: int) -> None:
        e, m = pipe.prompt_embeds(feats, batch.subtitles, "ovlabel")
        pipe.generate(e, m, gen_cfg(n_tokens))

    r = args.repeats
    times = {
        "decode": time_call(lambda: [pipe.load_media(c) for c in clips], device, r),
        "preprocess": time_call(lambda: pipe.preprocess(media, [c.subtitle for c in clips]), device, r),
        "encoders": time_call(lambda: pipe.encode(batch), device, r),
        "fusion": time_call(lambda: pipe.fuse(z_v, z_a), device, r),
        "prefill": [],
        "decode/token": [],
    }
    answer(1 + args.new_tokens)  # warm-up
    # Prefill (splice + prompt + first token) and the full answer are timed back to back; a token's cost is
    # their difference over the extra tokens.
    for _ in range(r):
        first = time_call(lambda: answer(1), device, 1, warmup=0)[0]
        full = time_call(lambda: answer(1 + args.new_tokens), device, 1, warmup=0)[0]
        times["prefill"].append(first)
        times["decode/token"].append((full - first) / args.new_tokens)

    result = {
        **run_metadata(device),
        "preset": args.preset,
        "batch": args.batch,
        "prompt_tokens": int(mask.shape[1]),
        "new_tokens": args.new_tokens,
        "stages": {k: stats(v) for k, v in times.items()},
    }
    total = sum(
        result["stages"][k]["median_ms"] for k in ("decode", "preprocess", "encoders", "fusion", "prefill")
    )
    total += args.new_tokens * result["stages"]["decode/token"]["median_ms"]
    result["end_to_end_ms"] = total

    print(
        f"affectrt latency: preset={args.preset} device={result['device_name']} ({device}) batch={args.batch} "
        f"prompt={result['prompt_tokens']} tok, new={args.new_tokens} tok, commit {result['commit']}"
    )
    print(f"{'stage':<14}{'median ms':>12}{'p20':>10}{'p80':>10}")
    for name, s in result["stages"].items():
        print(f"{name:<14}{s['median_ms']:>12.2f}{s['p20_ms']:>10.2f}{s['p80_ms']:>10.2f}")
    print(f"{'end to end':<14}{total:>12.2f}")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json_out}")
    return result


if __name__ == "__main__":
    main()
