"""How far bf16 autocast moves affectrt's numbers from fp32: encoder features, LLM embeddings, greedy answers.

    python benchmarks/precision.py                  # small preset, 16 clips, CPU
    python benchmarks/precision.py --clips 64 --preset small --variant face

Runs the same clips through one model twice, encoders + fusion head in fp32 and under bf16 autocast (the
``--precision bf16`` of ``affectrt infer``), and reports per tensor the relative error
``max|bf16 − fp32| / max|fp32|`` (worst and median over clips) for Z_v, Z_a and the three LLM embeddings,
and how often greedy decoding gives the same tokens (whole answers, and the mean share of the first
``--new-tokens`` tokens that agree before the first difference). Random weights of the preset's sizes:
trained weights give smoother features, so treat the token agreement as a lower bound. Writes
precision.json to --out-dir.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HelpFormatter, make_clip, make_wav, run_metadata  # noqa: E402

from affectrt.checkpoint import load_model  # noqa: E402
from affectrt.config import get_preset  # noqa: E402
from affectrt.generate import GenerationConfig, generate  # noqa: E402
from affectrt.pipeline import AffectGPTPipeline, ClipInput  # noqa: E402


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    ap.add_argument("--preset", default="small", help="model size (random weights)")
    ap.add_argument("--variant", choices=("frame", "face"), default="frame", help="frames or OpenFace faces")
    ap.add_argument("--clips", type=int, default=16, help="number of clips")
    ap.add_argument("--new-tokens", type=int, default=16, help="greedy tokens compared per clip")
    ap.add_argument("--out-dir", type=Path, default=Path("bench_results"), help="where precision.json goes")
    args = ap.parse_args(argv)

    from latency import quiet_third_party

    quiet_third_party()
    from affectrt.testing.hf_models import randomize_trainable, release_state_dict, write_hf_model_dir

    cfg = get_preset(args.preset).replace(visual_input=args.variant)
    root = write_hf_model_dir(cfg, Path("bench_results/models") / args.preset, bpe=True)
    ckpt = root / f"affectgpt_{args.variant}.pth"
    if not ckpt.is_file():
        model, _ = load_model(root, variant=args.variant)
        randomize_trainable(model, seed=3)
        torch.save({"model": release_state_dict(model)}, ckpt)
    model, tok = load_model(root, ckpt, variant=args.variant)
    fp32 = AffectGPTPipeline(model, tok, precision="fp32")
    bf16 = AffectGPTPipeline(model, tok, precision="bf16")
    gen = GenerationConfig(max_new_tokens=args.new_tokens, do_sample=False)

    errs: dict[str, list[float]] = {}
    same, agree = 0, []
    rng = np.random.default_rng(0)
    for i in range(args.clips):
        video = make_clip(
            Path(f"bench_results/clips/precision_{i}.mp4"), seconds=2.0 + 0.25 * i, fps=20 + i % 7
        )
        faces = None
        if args.variant == "face":
            faces = Path(f"bench_results/clips/precision_{i}.npy")
            np.save(faces, rng.integers(0, 256, (40 + i, 112, 112, 3), dtype=np.uint8))
        wav = make_wav(video, video.with_name(video.stem + "_16k.wav"))
        clip = ClipInput(
            video=video, audio=wav, face_npy=faces, subtitle=f"Clip number {i}: why would you do that?"
        )
        batch = fp32.preprocess([fp32.load_media(clip)], [clip.subtitle])
        outs = {}
        for name, pipe in (("fp32", fp32), ("bf16", bf16)):
            z_v, z_a = pipe.encode(batch)
            feats = pipe.fuse(z_v, z_a)
            embeds, mask = pipe.fused_prompt_embeds(z_v, z_a, batch.subtitles, "ovlabel")
            ids = generate(model.llm, inputs_embeds=embeds, attention_mask=mask, gen=gen)[0]
            outs[name] = {"Z_v": z_v, "Z_a": z_a, **feats, "ids": ids}
        for key, ref in outs["fp32"].items():
            if key != "ids":
                errs.setdefault(key, []).append(rel_err(outs["bf16"][key], ref))
        a, b = outs["bf16"]["ids"], outs["fp32"]["ids"]
        same += a == b
        prefix = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        agree.append(prefix / max(len(b), 1))

    result = {
        **run_metadata(torch.device("cpu")),
        "preset": args.preset,
        "variant": args.variant,
        "clips": args.clips,
        "new_tokens": args.new_tokens,
        "relative_error": {k: {"max": max(v), "median": float(np.median(v))} for k, v in errs.items()},
        "greedy_identical": same / args.clips,
        "greedy_prefix_agreement": float(np.mean(agree)),
    }
    print(
        f"bf16 autocast vs fp32, preset '{args.preset}' ({args.variant}), {args.clips} clips, "
        f"{result['device_name']} (bf16 units: {result['cpu_bf16_units'] or 'none'})"
    )
    print(f"{'tensor':<14}{'max rel. error':>16}{'median':>12}")
    for k, v in result["relative_error"].items():
        print(f"{k:<14}{v['max']:>16.2e}{v['median']:>12.2e}")
    print(
        f"greedy answers identical: {same}/{args.clips}; tokens agreeing before the first difference: "
        f"{result['greedy_prefix_agreement']:.0%} of {args.new_tokens}"
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "precision.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out_dir / 'precision.json'}")
    return result


if __name__ == "__main__":
    main()
