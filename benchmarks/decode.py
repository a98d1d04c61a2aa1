"""Batched LLM decoding: affectrt's static-KV-cache loop against Hugging Face ``generate``, same batch, same weights.

    python benchmarks/decode.py                        # small preset, batch 16, 32 new tokens, CPU
    python benchmarks/decode.py --batch 16 --merge-lora --device cuda

Both sides decode one left-padded batch of prompt embeddings (lengths spread like AffectGPT prompts) with the
same LLM: affectrt's Qwen2 with unmerged fp32 LoRA, and transformers' Qwen2ForCausalLM with the same LoRA
through peft (the release's model), greedy, no stop strings, exactly ``--new-tokens`` tokens. A token's cost is
(time of prefill + N tokens − time of prefill + 1 token) / (N − 1), so the prompt is not counted; tokens/s
counts every row. Interleaved repeats, medians. Prints ``target 5: batch-16 decode N.NNx``. ``--profile`` also
prints where one decode step of each side spends its time (``torch.profiler``, the same difference of two runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HelpFormatter, run_metadata, sync  # noqa: E402
from latency import prepare_models, quiet_third_party  # noqa: E402

from affectrt.cpu_alloc import keep_freed_memory  # noqa: E402
from affectrt.generate import GenerationConfig, generate  # noqa: E402
from affectrt.models.packed import pack_projections  # noqa: E402


def left_padded_batch(embed: torch.nn.Module, batch: int, lengths: tuple[int, int], seed: int = 0):
    """(inputs_embeds [B, L, D], mask [B, L]) from random token ids, left-padded to the longest row."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(lengths[0], lengths[1] + 1, (batch,), generator=g).tolist()
    L = max(lens)
    ids = torch.randint(0, min(embed.num_embeddings, 250), (batch, L), generator=g)
    mask = torch.zeros(batch, L, dtype=torch.long)
    for i, n in enumerate(lens):
        mask[i, L - n :] = 1
    with torch.no_grad():
        return embed(ids.to(embed.weight.device)), mask.to(embed.weight.device)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    ap.add_argument("--preset", default="small", help="model size (random weights)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    ap.add_argument("--batch", type=int, default=16, help="rows decoded together on both sides")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens decoded per row")
    ap.add_argument("--prompt", type=int, nargs=2, default=(110, 170), help="prompt length range (tokens)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    ap.add_argument("--merge-lora", action="store_true", help="affectrt with LoRA merged (the fast option)")
    ap.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="affectrt's LLM base-weight dtype (LoRA stays float32); transformers stays float32. bfloat16 pays on "
        "CPUs with AMX / AVX512-BF16, float16 on GPUs (the release's dtype there)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also print each side's operators per decode step by self time (decode_profile.txt in --out-dir)",
    )
    ap.add_argument("--out-dir", type=Path, default=Path("bench_results"), help="where decode.json goes")
    args = ap.parse_args(argv)
    quiet_third_party()
    keep_freed_memory()  # both sides: this process is a server's
    device = torch.device(args.device)
    pipe, up = prepare_models(args.preset, "frame", device, baseline=True)
    llm, hf = pipe.model.llm, up.llm
    if args.dtype != "float32":
        dtype = getattr(torch, args.dtype)
        with torch.no_grad():
            for name, p in llm.named_parameters():
                if ".lora_" not in name:
                    p.data = p.data.to(dtype)
    if args.merge_lora:
        from affectrt.models.lora import merge_lora

        merge_lora(llm)
    pack_projections(llm)  # affectrt's inference layout, as AffectGPTPipeline sets it up
    embeds, mask = left_padded_batch(hf.get_input_embeddings(), args.batch, tuple(args.prompt))
    ours_embeds = embeds.to(llm.embed_tokens.weight.dtype)

    def ours(n: int) -> None:
        gen = GenerationConfig(max_new_tokens=n, do_sample=False)
        out = generate(llm, inputs_embeds=ours_embeds, attention_mask=mask, gen=gen)
        assert all(len(r) == n for r in out)

    @torch.inference_mode()
    def theirs(n: int) -> None:
        out = hf.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
            num_beams=1, eos_token_id=None, pad_token_id=0,
        )  # fmt: skip
        assert out.shape[1] == n

    sides = {"affectrt": ours, "transformers": theirs}
    per_token: dict[str, list[float]] = {k: [] for k in sides}
    for fn in sides.values():  # warm-up
        fn(2)
    for _ in range(args.repeats):
        for name, fn in sides.items():
            times = []
            for n in (1, args.new_tokens):
                sync(device)
                t0 = time.perf_counter()
                fn(n)
                sync(device)
                times.append(time.perf_counter() - t0)
            per_token[name].append((times[1] - times[0]) / (args.new_tokens - 1))
    ms = {k: float(np.median(v)) * 1e3 for k, v in per_token.items()}
    tps = {k: args.batch / (v / 1e3) for k, v in ms.items()}
    result = {
        **run_metadata(device),
        "preset": args.preset,
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "prompt_tokens": list(args.prompt),
        "merged_lora": args.merge_lora,
        "affectrt_dtype": args.dtype,
        "ms_per_step": ms,
        "tokens_per_s": tps,
        "speedup": ms["transformers"] / ms["affectrt"],
    }
    print(
        f"batched decode, preset '{args.preset}', batch {args.batch}, prompts {args.prompt[0]}-{args.prompt[1]} "
        f"tokens, {result['device_name']} ({device}); affectrt: {args.dtype} base, LoRA "
        f"{'merged' if args.merge_lora else 'unmerged fp32'}; transformers: float32, peft LoRA"
    )
    for k in sides:
        print(f"{k:<14}{ms[k]:>9.2f} ms/step{tps[k]:>10.1f} tokens/s")
    print(f"target 5: batch-{args.batch} decode {result['speedup']:.2f}x (goal >= 2x)")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "decode.json").write_text(json.dumps(result, indent=2))
    if args.profile:
        report = "\n".join(profile_step(name, fn, args.new_tokens) for name, fn in sides.items())
        print(report)
        (args.out_dir / "decode_profile.txt").write_text(report + "\n")
    return result


def profile_step(name: str, fn, n: int, top: int = 15) -> str:
    """The operators of one decode step by self CPU time: (profile of n tokens - profile of 1) / (n - 1)."""
    from torch.profiler import profile

    runs = {}
    for k in (1, n):
        with profile() as prof:
            fn(k)
        runs[k] = {e.key: (e.self_cpu_time_total, e.count) for e in prof.key_averages()}
    rows = []
    for key, (t, c) in runs[n].items():
        t1, c1 = runs[1].get(key, (0.0, 0))
        rows.append(((t - t1) / (n - 1), (c - c1) / (n - 1), key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    lines = [f"{name}: {total / 1e3:.2f} ms of operator self time per decode step (under the profiler)"]
    lines += [f"  {t:9.1f} us {c:6.1f} calls  {key}" for t, c, key in rows[:top]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
