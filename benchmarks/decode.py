"""Batched LLM decoding: affectrt's static-KV-cache loop against Hugging Face ``generate``, same batch, same weights.

    python benchmarks/decode.py                        # small preset, batch 16, 32 new tokens, CPU
    python benchmarks/decode.py --batch 16 --merge-lora --device cuda

Both sides decode one left-padded batch of prompt embeddings (lengths spread like AffectGPT prompts) with the
same LLM: affectrt's Qwen2 with unmerged fp32 LoRA, and transformers' Qwen2ForCausalLM with the same LoRA
through peft (the release's model), greedy, no stop strings, exactly ``--new-tokens`` tokens (repetition penalty
1.0 on both: transformers would otherwise take the model folder's 1.05, Qwen2.5-Instruct's, as the release does
not). A token's cost is
(time of prefill + N tokens − time of prefill + 1 token) / (N − 1), so the prompt is not counted; tokens/s
counts every row. Interleaved repeats, medians. Prints ``target 5: batch-16 decode N.NNx``. ``--profile`` also
prints where one decode step of each side spends its time (``torch.profiler``, the same difference of two runs).

``--stop-spread`` then decodes answers of different lengths: eos ids taken from a free greedy run, so that the
rows stop at steps spread over ``--new-tokens``, the same on both sides. It times the decode part of the
batch's answers (the whole answer minus a prefill-only run) for affectrt, for affectrt keeping its stopped rows
in the batch (fed pad, as transformers does; the loop takes that path when given a step function) and for
transformers.
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
    ap.add_argument(
        "--stop-spread",
        action="store_true",
        help="also decode answers that stop at different steps (see above): what dropping stopped rows saves",
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
            num_beams=1, eos_token_id=None, pad_token_id=0, repetition_penalty=1.0,
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
    if args.stop_spread:
        result["stop_spread"] = stop_spread(
            llm, hf, ours_embeds, embeds, mask, args.new_tokens, args.repeats, device
        )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "decode.json").write_text(json.dumps(result, indent=2))
    if args.profile:
        report = "\n".join(profile_step(name, fn, args.new_tokens) for name, fn in sides.items())
        print(report)
        (args.out_dir / "decode_profile.txt").write_text(report + "\n")
    return result


def spread_eos(free: list[list[int]], n: int) -> tuple[int, ...]:
    """eos ids that end the free-running answers ``free`` at steps spread over 1..n: row r aims at n·(r+1)/B.
    For each row in turn (unless the ids chosen so far end it by then), the id from its answer that ends it
    closest to its aim without ending another row more than n/4 before that row's aim. A random model's greedy
    answer soon repeats a few tokens, so such a row ends at the first of them or runs to n."""
    B = len(free)
    target = [max(1, n * (r + 1) // B) for r in range(B)]
    chosen: set[int] = set()

    def stop(row: list[int], ids: set[int]) -> int:
        return next((i + 1 for i, t in enumerate(row) if t in ids), len(row))

    for r in range(B):
        if stop(free[r], chosen) <= target[r] + n // 8:
            continue
        best = None
        for t in sorted(set(free[r])):
            ids = chosen | {t}
            if any(
                stop(free[j], ids) < min(stop(free[j], chosen), target[j] - n // 4)
                for j in range(B)
                if j != r
            ):
                continue
            miss = abs(stop(free[r], ids) - target[r])
            if best is None or miss < best[0]:
                best = (miss, t)
        if best is not None:
            chosen.add(best[1])
    return tuple(sorted(chosen))


def stop_spread(llm, hf, ours_embeds, embeds, mask, n: int, repeats: int, device: torch.device) -> dict:
    """Answers of different lengths on both sides; see the module docstring. Prints and returns the times."""
    free = generate(
        llm, inputs_embeds=ours_embeds, attention_mask=mask, gen=GenerationConfig(max_new_tokens=n)
    )
    eos = spread_eos(free, n)
    gen = {k: GenerationConfig(max_new_tokens=k, do_sample=False, eos_token_id=eos) for k in (1, n)}

    def ours(k: int, keep_stopped: bool = False) -> list[list[int]]:
        step = llm if keep_stopped else None  # given a step function, the loop keeps its stopped rows
        return generate(llm, inputs_embeds=ours_embeds, attention_mask=mask, gen=gen[k], step=step)

    @torch.inference_mode()
    def theirs(k: int) -> list[list[int]]:
        out = hf.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=k, do_sample=False, num_beams=1,
            eos_token_id=list(eos), pad_token_id=0, repetition_penalty=1.0,
        ).tolist()  # fmt: skip
        return [row[: next((i + 1 for i, t in enumerate(row) if t in eos), len(row))] for row in out]

    answers = ours(n)
    same = {"transformers": answers == theirs(n), "stopped rows kept": answers == ours(n, keep_stopped=True)}
    lengths = [len(r) for r in answers]
    sides = {"affectrt": ours, "affectrt, stopped rows kept": lambda k: ours(k, True), "transformers": theirs}
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            t = []
            for k in (1, n):
                sync(device)
                t0 = time.perf_counter()
                fn(k)
                sync(device)
                t.append(time.perf_counter() - t0)
            times[name].append(t[1] - t[0])
    ms = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    print(
        f"answers of different lengths: rows stop after {min(lengths)}-{max(lengths)} tokens (mean "
        f"{np.mean(lengths):.1f} of {n}; eos ids {list(eos)}); affectrt's answers equal to: {same}"
    )
    for k, v in ms.items():
        print(f"{k:<28}{v:>9.2f} ms to decode the batch's answers")
    print(
        f"dropping stopped rows: {ms['affectrt, stopped rows kept'] / ms['affectrt']:.2f}x; against transformers "
        f"{ms['transformers'] / ms['affectrt']:.2f}x"
    )
    return {"eos_ids": list(eos), "lengths": lengths, "answers_equal": same, "decode_ms": ms}


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
