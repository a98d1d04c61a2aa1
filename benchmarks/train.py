"""One training step on cached encoder features vs recomputing the encoders (PERFORMANCE.md targets 7, 12).

Target 7 (CPU or GPU): the `small` preset, the release's batch of 3 clips, one full step (forward, backward,
AdamW) of the fusion head + LoRA. "cached" reads Z_v/Z_a from a feature cache on disk; "recompute" runs
preprocessing + affectrt's own CLIP + HuBERT (eval mode, no grad) on the same batch's media every step (the
release recomputes them every step, with slower HF encoders). Interleaved, median over repeats; peak memory
of each (GPU: max allocated; CPU: peak RSS growth of a child process that builds the model for that mode —
without encoder weights for "cached" — and runs two steps). Prints ``target 7: cached-feature step N.NNx``.

Target 12 (``--device cuda``): training samples/s of the released sizes (Qwen2.5-7B dimensions, random
weights, fp16 base + fp32 LoRA, fp16 autocast + GradScaler) on cached features, at the release's batch 3 and
larger batches; the target is >= 46 samples/s on one H100 (900k samples in < 6 h).

    python benchmarks/train.py                    # CPU, target 7
    python benchmarks/train.py --device cuda      # target 7 on the GPU + target 12
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_metadata, stats, sync  # noqa: E402

from affectrt.text.prompts import DESCRIPTION_QUESTION, build_prompt  # noqa: E402
from affectrt.text.splice import training_batch  # noqa: E402

ANSWER = (
    "In the video, the person frowns slightly and her voice trembles; in the subtitle she says she did not expect "
    "this. Together these cues suggest she is surprised and somewhat anxious."
)


def _setup(
    preset: str, device: torch.device, batch: int, amp: bool, seed: int = 0, with_encoders: bool = True
):
    from affectrt.train.model import ModelSpec, build_model
    from affectrt.train.optim import build_optimizer

    model, tok = build_model(
        ModelSpec(preset=preset, tokenizer="bpe", seed=seed), with_encoders=with_encoders
    )
    model.to(device).train()
    if with_encoders:
        for enc in (model.visual_encoder, model.acoustic_encoder):
            enc.eval()  # frozen, eval mode: the same work as the cache's features
    opt = build_optimizer(model, 1e-5)
    g = np.random.default_rng(seed)
    cfg = model.cfg
    m = cfg.media
    visual = torch.from_numpy(
        g.integers(0, 256, size=(batch, m.n_frames, m.image_size, m.image_size, 3), dtype=np.uint8)
    )
    audio = torch.from_numpy(g.standard_normal((batch, m.n_audio_clips, m.clip_samples)).astype(np.float32))
    prompts = [
        build_prompt(cfg, f"I did not expect to see you here, number {i}.", DESCRIPTION_QUESTION)
        for i in range(batch)
    ]
    tb = training_batch(tok, prompts, [ANSWER] * batch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    return model, tok, opt, scaler, visual, audio, tb


def _encode(model, visual, audio, device, amp):
    from affectrt.media.audio import joint_normalize
    from affectrt.media.preprocess import clip_pixels

    pixels = clip_pixels(visual.to(device), model.cfg.media)
    a = torch.stack([joint_normalize(w) for w in audio]).to(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        return model.encode_video(pixels).float(), model.encode_audio(a).float()


def _step(model, tok, opt, scaler, tb, zv, za, device, amp):
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        loss = model.loss(tb, zv, za, tok.placeholder_ids)
    (scaler.scale(loss) if scaler.is_enabled() else loss).backward()
    if scaler.is_enabled():
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def _write_cache(model, visual, audio, device, amp, root: Path) -> list[str]:
    """Write this batch's features to a real on-disk cache; returns the keys."""
    from affectrt.features import FeatureCache

    zv, za = _encode(model, visual, audio, device, amp)
    keys = [f"clip{i}" for i in range(zv.shape[0])]
    FeatureCache(root).put({k: (zv[i], za[i]) for i, k in enumerate(keys)})
    return keys


def _cache_reader(root: Path, keys: list[str], device: torch.device):
    from affectrt.features import FeatureCache

    cache = FeatureCache(root)

    def read():
        pairs = [cache.get(k) for k in keys]
        return torch.stack([p[0] for p in pairs]).to(device), torch.stack([p[1] for p in pairs]).to(device)

    return read


def _child(preset, batch, mode, root, keys, q):  # pragma: no cover - runs in a spawned process
    """Peak RSS growth of building the model for ``mode`` and running two of its steps (CPU)."""
    dev = torch.device("cpu")
    base = _reset_peak_rss()
    cached = mode == "cached"
    model, tok, opt, scaler, visual, audio, tb = _setup(preset, dev, batch, False, with_encoders=not cached)
    read = _cache_reader(Path(root), keys, dev) if cached else None
    for _ in range(2):
        zv, za = read() if cached else _encode(model, visual, audio, dev, False)
        _step(model, tok, opt, scaler, tb, zv, za, dev, False)
    q.put((mode, (_status_kib("VmHWM") - base) / 1024.0))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_rss() -> int:
    """Reset the peak RSS (Linux: ``clear_refs`` 5) after the imports; returns the current RSS in KiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_kib("VmRSS")


def target7(args) -> dict:
    device = torch.device(args.device)
    amp = device.type == "cuda"
    model, tok, opt, scaler, visual, audio, tb = _setup(args.preset, device, args.batch, amp)
    times: dict[str, list[float]] = {"cached": [], "recompute": []}
    mem: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        keys = _write_cache(model, visual, audio, device, amp, Path(d))
        read = _cache_reader(Path(d), keys, device)
        runs = {
            "cached": lambda: _step(model, tok, opt, scaler, tb, *read(), device, amp),
            "recompute": lambda: _step(
                model, tok, opt, scaler, tb, *_encode(model, visual, audio, device, amp), device, amp
            ),
        }
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():  # interleaved: drift hits both alike
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                times[name].append((time.perf_counter() - t0) * 1e3)
                if device.type == "cuda":
                    mem[name] = max(mem.get(name, 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
        if device.type == "cpu" and not args.no_memory:
            ctx = mp.get_context("spawn")
            for mode in ("cached", "recompute"):
                q = ctx.Queue()
                p = ctx.Process(target=_child, args=(args.preset, args.batch, mode, d, keys, q))
                p.start()
                name, mib = q.get()
                p.join()
                mem[name] = mib
    out = {}
    for name, t in times.items():
        s = stats(t)
        s["samples_per_s"] = args.batch / (s["median_ms"] / 1e3)
        s["peak_mem_mib"] = mem.get(name)
        out[name] = s
    ratio = out["recompute"]["median_ms"] / out["cached"]["median_ms"]
    per_pair = sorted(r / c for r, c in zip(times["recompute"], times["cached"]))
    out["ratio"] = ratio
    out["ratio_p20_p80"] = [float(np.percentile(per_pair, 20)), float(np.percentile(per_pair, 80))]
    mem_label = "peak allocated" if device.type == "cuda" else "peak RSS (child: model build + 2 steps)"
    for name in ("cached", "recompute"):
        s = out[name]
        m = f"{s['peak_mem_mib']:.0f} MiB" if s["peak_mem_mib"] is not None else "n/a"
        print(f"{name:>9}: {s['median_ms']:8.1f} ms/step (p20 {s['p20_ms']:.1f}, p80 {s['p80_ms']:.1f}), "
              f"{s['samples_per_s']:.2f} samples/s, {mem_label} {m}")  # fmt: skip
    print(f"target 7: cached-feature step {ratio:.2f}x (goal >= 5x; `{args.preset}` preset, batch {args.batch}, "
          f"{device.type}; per-pair p20-p80 {out['ratio_p20_p80'][0]:.2f}-{out['ratio_p20_p80'][1]:.2f})")  # fmt: skip
    return out


def _release_length_batch(tok, cfg, b: int, prompt_tokens: int, answer_tokens: list[int]):
    """A right-padded training batch with the release's lengths (MODEL_SPEC §5.2): the real prompt template
    (placeholders included) filled with random subtitle tokens to ``prompt_tokens``, and answers of the given
    lengths in turn (hybird: short OV-label answers and long descriptions), labels over the answers."""
    from affectrt.text.splice import IGNORE_INDEX, TokenBatch

    g = torch.Generator().manual_seed(0)
    hi = min(cfg.llm.vocab_size, tok.vocab_size) - 8  # ordinary (non-special) token ids
    lo = hi // 8
    base = tok.encode(build_prompt(cfg, "", DESCRIPTION_QUESTION))
    fill = max(prompt_tokens - len(base), 0)
    rows, labels = [], []
    for i in range(b):
        sub = torch.randint(lo, hi, (fill,), generator=g).tolist()
        ans = torch.randint(lo, hi, (answer_tokens[i % len(answer_tokens)],), generator=g).tolist()
        ids = [tok.bos_id, *sub, *base, *ans, tok.eos_id]
        rows.append(ids)
        labels.append([IGNORE_INDEX] * (1 + fill + len(base)) + ans + [tok.eos_id])
    L = max(len(r) for r in rows)
    ids = torch.full((b, L), tok.pad_id)
    lab = torch.full((b, L), IGNORE_INDEX)
    for i, (r, y) in enumerate(zip(rows, labels)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(y)] = torch.tensor(y)
    return TokenBatch(ids, ids.ne(tok.pad_id), lab)


def target12(args) -> dict:
    """Released sizes on cached features: samples/s per batch size (GPU only)."""
    from affectrt.config import get_preset
    from affectrt.models.affectgpt import AffectGPT
    from affectrt.testing.hf_models import bpe_tokenizer
    from affectrt.text.tokenizer import Tokenizer
    from affectrt.train.optim import build_optimizer

    device = torch.device(args.device)
    cfg = get_preset(args.t12_preset)
    with torch.device(device):
        model = AffectGPT(cfg, with_lora=False, with_encoders=False)
    model.to(device)  # buffers made on the CPU on purpose (RoPE inv_freq) follow
    model.llm.to(torch.float16)  # the release's fp16 base; LoRA (added next) and the fusion head stay fp32
    model.add_lora()
    model.llm.gradient_checkpointing = args.grad_ckpt
    model.train()
    tok = Tokenizer.from_backend(bpe_tokenizer(min(4096, cfg.llm.vocab_size)), source="bpe")
    opt = build_optimizer(model, 1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    res = {}
    for b in args.batches:
        tb = _release_length_batch(tok, cfg, b, args.prompt_tokens, args.answer_tokens)
        zv = torch.randn(b, 8, cfg.video_dim, device=device)
        za = torch.randn(b, 8, cfg.audio_dim, device=device)
        try:
            for _ in range(2):
                _step(model, tok, opt, scaler, tb, zv, za, device, device.type == "cuda")
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = []
            for _ in range(args.repeats):
                sync(device)
                t0 = time.perf_counter()
                _step(model, tok, opt, scaler, tb, zv, za, device, device.type == "cuda")
                sync(device)
                t.append(time.perf_counter() - t0)
        except torch.OutOfMemoryError:
            print(f"batch {b}: out of memory")
            torch.cuda.empty_cache()
            continue
        sps = b / float(np.median(t))
        res[b] = {
            "samples_per_s": sps,
            "seq_len": tb.input_ids.shape[1],
            "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0,
        }
        print(f"{args.t12_preset} training, batch {b:3d} (L={tb.input_ids.shape[1]}): {sps:7.2f} samples/s, "
              f"peak {res[b]['peak_mem_gib']:.1f} GiB")  # fmt: skip
    if res:
        best = max(res, key=lambda k: res[k]["samples_per_s"])
        sps = res[best]["samples_per_s"]
        print(f"target 12: {sps:.1f} samples/s at batch {best} (goal >= 46 on one H100; 900k samples in "
              f"{900_000 / sps / 3600:.1f} h)")  # fmt: skip
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=3, help="clips per step (the release: 3)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-memory", action="store_true", help="skip the CPU peak-memory child processes")
    p.add_argument("--batches", type=int, nargs="+", default=[3, 16, 32, 64], help="target 12 batch sizes")
    p.add_argument("--grad-ckpt", action="store_true", help="target 12: recompute LLM layers in backward")
    p.add_argument(
        "--prompt-tokens", type=int, default=150, help="target 12: prompt length (release ~130-170)"
    )
    p.add_argument(
        "--answer-tokens", type=int, nargs="+", default=[20, 120], help="target 12: answer lengths, in turn"
    )
    p.add_argument("--t12-preset", default="affectgpt-7b-face", help="target 12 model (the released sizes)")
    p.add_argument("--target12", action="store_true", help="run target 12 also off the GPU (a dry run)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    result = {"meta": run_metadata(torch.device(args.device)), "target7": target7(args)}
    if args.device.startswith("cuda") or args.target12:
        result["target12"] = target12(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
