"""End-to-end latency of AffectGPT, stage by stage: affectrt against the upstream-style reference.

    python benchmarks/latency.py                            # small preset, 1 clip, CPU or CUDA, both paths
    python benchmarks/latency.py --throughput 32 --batch 8  # + clips/s over 32 clips through the batch job
    python benchmarks/latency.py --no-baseline --device cuda
    python benchmarks/latency.py --encoders onnx            # encoders + fusion from ONNX Runtime (+ eager rows)

Both paths load the same Hugging Face folders (random weights of the preset's sizes, written once under
bench_results/models/) and the same release-format checkpoint, and run the same clip (made once with PyAV).
The reference runs as the release does: batch 1, transformers models, unmerged peft LoRA, frames through PIL
and the CLIP processor, audio through the Wav2Vec2 feature extractor with host round trips, HF generate.

Stages:
  media decode      frames from the video + 8 audio windows from the clip's 16 kHz .wav
  preprocess        CLIP / HuBERT input normalisation
  encoders          CLIP + HuBERT
  fusion+splice     token compression + pre-fusion + prompt splice into inputs_embeds
  LLM prefill       the LLM over the prompt + the first token
  LLM decode/token  each further token
Every run decodes exactly --new-tokens tokens (no stop strings), so both paths do the same work. Times are
medians with p20-p80 over --repeats runs, both paths interleaved repeat by repeat in one process; the
speed-up column is reference / affectrt. Writes latency.json and latency.png (with matplotlib) to --out-dir.
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
from _common import HelpFormatter, make_clip, make_wav, run_metadata, stats, sync, time_call  # noqa: E402

from affectrt.checkpoint import load_model  # noqa: E402
from affectrt.config import get_preset  # noqa: E402
from affectrt.cpu_alloc import keep_freed_memory  # noqa: E402
from affectrt.generate import GenerationConfig  # noqa: E402
from affectrt.pipeline import AffectGPTPipeline, ClipInput  # noqa: E402

SUBTITLE = "I really did not expect to see you here today, and honestly I am not sure how I feel about it."
STAGES = ("decode", "preprocess", "encoders", "fusion", "prefill", "decode/token")
# What the table calls them: "decode" alone reads as the LLM's token loop to a newcomer.
LABELS = {
    "decode": "media decode",
    "preprocess": "preprocess",
    "encoders": "encoders",
    "fusion": "fusion+splice",
    "prefill": "LLM prefill",
    "decode/token": "LLM decode/token",
}
# Extra affectrt columns: the pipeline options each runs with, and what its column says.
EXTRAS = {
    "bf16": {
        "pipeline": {"precision": "bf16"},
        "label": "bf16",
        "note": "affectrt with bf16 autocast encoders + fusion, against the same fp32 reference",
    },
    "compile": {
        "pipeline": {"compile_model": True},
        "label": "compiled",
        "note": "affectrt (fp32) built with compile_model=True: its decode step compiled by torch.compile at batch "
        "1, unless the fused eager step applies (float32 CPU: then that one runs, as in the fp32 column)",
    },
}
SPREAD_WARNING = 0.25  # (p80 - p20) / median above this: the machine was busy; the ratio is unreliable


def prepare_models(preset: str, variant: str, device: torch.device, baseline: bool):
    """affectrt's pipeline (and the reference) from one model folder and one release checkpoint."""
    from affectrt.testing.hf_models import randomize_trainable, release_state_dict, write_hf_model_dir

    cfg = get_preset(preset).replace(visual_input=variant)
    root = write_hf_model_dir(cfg, Path("bench_results/models") / preset, bpe=True)
    ckpt = root / f"affectgpt_{variant}.pth"
    if not ckpt.is_file():
        model, _ = load_model(root, variant=variant)
        randomize_trainable(model, seed=3)
        torch.save({"model": release_state_dict(model)}, ckpt)
    model, tokenizer = load_model(root, ckpt, variant=variant)
    pipe = AffectGPTPipeline(model, tokenizer, device=device)
    up = None
    if baseline:
        from affectrt.testing import upstream

        sd = torch.load(ckpt, weights_only=True)["model"]
        up = upstream.load_upstream(root, sd, model.cfg, device=str(device))
    return pipe, up


def serve_encoders(pipe: AffectGPTPipeline, kind: str, batch: int):
    """Export the pipeline's encoders and fusion head (once per preset) and return their runner backend."""
    from affectrt.export.onnx_export import export_onnx
    from affectrt.export.runners import load_encoders

    out = Path("bench_results/artifacts") / f"{pipe.cfg.name}-{pipe.cfg.visual_input}"
    export_onnx(pipe.model, out, check=False, log=lambda *_: None)
    if kind == "trt":
        from affectrt.export.trt_build import build_engines

        build_engines({p: out / f"{p}.onnx" for p in ("vision", "audio", "fusion")}, batch_max=max(batch, 1))
    return load_encoders(kind, out, pipe.model, pipe.device)


def affectrt_stages(pipe: AffectGPTPipeline, clips: list[ClipInput], n_new: int):
    """Callables per stage for a batch of clips, each running on the previous stage's cached output."""

    def gen(n: int) -> GenerationConfig:
        return GenerationConfig(max_new_tokens=n, do_sample=False, stop_sequences=(), eos_token_id=None)

    subs = [c.subtitle for c in clips]
    media = [pipe.load_media(c) for c in clips]
    batch = pipe.preprocess(media, subs)
    z_v, z_a = pipe.encode(batch)

    # The production path (``answer`` and the batch job): the fused head writes into inputs_embeds.
    embeds, mask = pipe.fused_prompt_embeds(z_v, z_a, subs, "ovlabel")

    def answer(n: int) -> None:
        pipe.generate(embeds, mask, gen(n))

    return {
        "decode": lambda: [pipe.load_media(c) for c in clips],
        "preprocess": lambda: pipe.preprocess(media, subs),
        "encoders": lambda: pipe.encode(batch),
        "fusion": lambda: pipe.fused_prompt_embeds(z_v, z_a, subs, "ovlabel"),
        "prefill": lambda: answer(1),
        "full": lambda: answer(1 + n_new),
    }


def baseline_stages(up, clip: ClipInput, n_new: int):
    from affectrt.testing import upstream

    raw_v = upstream.read_visual(up, clip.video, clip.face_npy)
    raw_a = upstream.read_audio(up, clip.audio)
    pixels, values = upstream.preprocess_visual(up, raw_v), upstream.preprocess_audio(up, raw_a)
    z_v, z_a = upstream.clip_forward(up, pixels), upstream.hubert_forward(up, values)

    def fusion():
        return upstream.prompt_embeds(up, upstream.fuse(up, z_v, z_a), clip.subtitle, "ovlabel")

    embeds = fusion()

    def answer(n: int) -> None:
        upstream.generate_ids(up, embeds, n, stop_words=[])

    return {
        "decode": lambda: (
            upstream.read_visual(up, clip.video, clip.face_npy),
            upstream.read_audio(up, clip.audio),
        ),
        "preprocess": lambda: (upstream.preprocess_visual(up, raw_v), upstream.preprocess_audio(up, raw_a)),
        "encoders": lambda: (upstream.clip_forward(up, pixels), upstream.hubert_forward(up, values)),
        "fusion": fusion,
        "prefill": lambda: answer(1),
        "full": lambda: answer(1 + n_new),
    }


def measure(
    paths: list[dict], device: torch.device, repeats: int, n_new: int
) -> tuple[list[dict[str, list[float]]], list[float]]:
    """Per-stage times of each path, A and B interleaved repeat by repeat so that drift hits both alike; and
    each path's warm-up seconds (the first run of every stage)."""
    times = [{s: [] for s in STAGES} for _ in paths]
    warmup_s = []
    for fns in paths:  # warm-up: JIT, allocator, caches (and torch.compile's compilation)
        t0 = time.perf_counter()
        for s in ("decode", "preprocess", "encoders", "fusion", "full"):
            fns[s]()
        warmup_s.append(time.perf_counter() - t0)
    for _ in range(repeats):
        for fns, t in zip(paths, times):
            for s in ("decode", "preprocess", "encoders", "fusion"):
                t[s] += time_call(fns[s], device, 1, warmup=0)
            # a token's cost: the full answer minus the prefill-only run, timed back to back
            first = time_call(fns["prefill"], device, 1, warmup=0)[0]
            full = time_call(fns["full"], device, 1, warmup=0)[0]
            t["prefill"].append(first)
            t["decode/token"].append(max(full - first, 0.0) / n_new)
    return times, warmup_s


def end_to_end(stages: dict[str, dict], n_new: int) -> float:
    return sum(stages[s]["median_ms"] for s in STAGES[:-1]) + n_new * stages["decode/token"]["median_ms"]


def throughput(
    pipe, up, clips: list[ClipInput], batch: int, n_new: int, device: torch.device, rounds: int = 2
) -> dict:
    """clips/s over the whole list: affectrt in batches of ``batch``, the baseline one clip at a time.

    Both run once on one batch's worth of clips to warm up, then alternate over the whole list ``rounds``
    times (A B A B ...); each side's clips/s is the median over its rounds.
    """
    from affectrt.testing import upstream

    gen = GenerationConfig(max_new_tokens=n_new, do_sample=False, stop_sequences=(), eos_token_id=None)

    def ours(clips: list[ClipInput]) -> None:
        # the real batch job: media loader prefetching the next batch, results written as they go
        import tempfile

        from affectrt.pipeline import run_batch_job

        named = [
            ClipInput(c.video, c.subtitle, c.face_npy, c.audio, name=f"clip{i}") for i, c in enumerate(clips)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            run_batch_job(pipe, named, Path(tmp) / "results.jsonl", gen=gen, batch_size=batch, progress=False)

    def theirs(clips: list[ClipInput]) -> None:
        for c in clips:
            z_v = upstream.encode_visual(up, upstream.read_visual(up, c.video, c.face_npy))
            z_a = upstream.encode_audio(up, upstream.read_audio(up, c.audio))
            embeds = upstream.prompt_embeds(up, upstream.fuse(up, z_v, z_a), c.subtitle, "ovlabel")
            upstream.generate_ids(up, embeds, n_new, stop_words=[])

    sides = {"affectrt": ours} if up is None else {"affectrt": ours, "baseline": theirs}
    for fn in sides.values():
        fn(clips[:batch])
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            sync(device)
            t0 = time.perf_counter()
            fn(clips)
            sync(device)
            rates[name].append(len(clips) / (time.perf_counter() - t0))
    return {name: float(np.median(r)) for name, r in rates.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    ap.add_argument("--preset", default="small", help="model size (random weights)")
    ap.add_argument("--variant", choices=("frame", "face"), default="frame", help="frames or OpenFace faces")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    ap.add_argument("--batch", type=int, default=1, help="clips per affectrt batch")
    ap.add_argument("--new-tokens", type=int, default=16, help="tokens decoded after the first")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per stage and path")
    ap.add_argument("--clip", type=Path, default=None, help="video to use (default: a generated 3 s clip)")
    ap.add_argument("--no-baseline", action="store_true", help="time affectrt only")
    ap.add_argument(
        "--encoders",
        choices=("torch", "onnx", "trt"),
        default="torch",
        help="serve affectrt's encoders + fusion head from PyTorch, ONNX Runtime or TensorRT",
    )
    ap.add_argument(
        "--throughput", type=int, default=0, metavar="N", help="also measure clips/s over N clips"
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also run each stage once under torch.profiler per path: profile_<path>.txt (top operators by self "
        "time, per stage) and profile_<path>.json (a chrome://tracing trace) in --out-dir",
    )
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="add a column: affectrt with bf16 autocast encoders + fusion (for CPUs with AMX / AVX512-BF16) "
        "against the same fp32 reference; the main columns stay fp32 vs fp32",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="add a column: affectrt served with torch.compile where it pays (the LLM decode step, batch 1 only), "
        "fp32; its warm-up time (the compilation) is reported; --throughput then runs this pipeline",
    )
    ap.add_argument(
        "--out-dir", type=Path, default=Path("bench_results"), help="latency.json and latency.png"
    )
    args = ap.parse_args(argv)
    quiet_third_party()

    device = torch.device(args.device)
    # as `affectrt batch` runs (affectrt.cpu_alloc); the process-wide setting serves both paths alike
    keep_freed_memory()
    torch.manual_seed(0)
    pipe, up = prepare_models(args.preset, args.variant, device, baseline=not args.no_baseline)
    clip_path = args.clip or make_clip(Path("bench_results/clips/latency_clip.mp4"))
    # the release reads a separately extracted 16 kHz .wav; both paths read this one
    wav = make_wav(clip_path, Path("bench_results/clips") / f"{clip_path.stem}_16k.wav")
    face_npy = None
    if args.variant == "face":
        face_npy = Path("bench_results/clips/latency_faces.npy")
        np.save(face_npy, np.random.default_rng(0).integers(0, 256, (75, 112, 112, 3), dtype=np.uint8))
    clip = ClipInput(video=clip_path, subtitle=SUBTITLE, face_npy=face_npy, audio=wav)

    torch_rows = {}
    if args.encoders != "torch":
        eager = affectrt_stages(pipe, [clip] * args.batch, args.new_tokens)
        torch_rows = {
            f"{s} (torch)": time_call(eager[s], device, args.repeats) for s in ("encoders", "fusion")
        }
        pipe.encoders = serve_encoders(pipe, args.encoders, args.batch)
    paths = [affectrt_stages(pipe, [clip] * args.batch, args.new_tokens)]
    extras = [key for key in EXTRAS if getattr(args, key)]
    pipes = {"": pipe}
    for key in extras:
        pipes[key] = AffectGPTPipeline(pipe.model, pipe.tokenizer, device=device, **EXTRAS[key]["pipeline"])
        paths.append(affectrt_stages(pipes[key], [clip] * args.batch, args.new_tokens))
    if up is not None:
        paths.append(baseline_stages(up, clip, args.new_tokens))
    measured, warmup_s = measure(paths, device, args.repeats, args.new_tokens)
    if args.profile:
        names = ["affectrt"] + [f"affectrt_{k}" for k in extras] + (["reference"] if up is not None else [])
        for name, fns in zip(names, paths):
            profile_stages(fns, device, args.out_dir, name)
    ours = measured[0]
    result = {
        **run_metadata(device),
        "preset": args.preset,
        "variant": args.variant,
        "batch": args.batch,
        "prompt_tokens": len(pipe.tokenizer.encode(pipe.prompts([SUBTITLE], "ovlabel")[0])),
        "new_tokens": args.new_tokens,
        "command": "python benchmarks/latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "encoders": args.encoders,
        "precision": pipe.precision,
        "affectrt": {k: stats(v) for k, v in ours.items()},
        "affectrt_torch_encoders": {k: stats(v) for k, v in torch_rows.items()},
    }
    result["affectrt_end_to_end_ms"] = end_to_end(result["affectrt"], args.new_tokens)
    for i, key in enumerate(extras, start=1):
        result[f"affectrt_{key}"] = {k: stats(v) for k, v in measured[i].items()}
        result[f"affectrt_{key}_end_to_end_ms"] = end_to_end(result[f"affectrt_{key}"], args.new_tokens)
        result[f"affectrt_{key}_warmup_s"] = warmup_s[i]
    if up is not None:
        theirs = measured[-1]
        result["baseline"] = {k: stats(v) for k, v in theirs.items()}
        result["baseline_end_to_end_ms"] = end_to_end(result["baseline"], args.new_tokens)
    if args.throughput:
        result["clips_per_s"] = throughput(
            pipes.get("compile", pipe), up, [clip] * args.throughput, args.batch, args.new_tokens, device
        )
    if device.type == "cpu" and result["precision"] == "fp32":
        result["bound"] = encoder_bound(pipe, [clip] * args.batch, result)

    print_table(result, args, up is not None)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "latency.json").write_text(json.dumps(result, indent=2))
    chart = write_chart(result, args.out_dir / "latency.png", args.batch)
    print(f"wrote {args.out_dir / 'latency.json'}" + (f" and {chart}" if chart else ""))
    return result


def profile_stages(fns: dict, device: torch.device, out_dir: Path, name: str) -> None:
    """Each stage once under torch.profiler: the top operators by self time per stage, then one trace of all."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    stages = ("decode", "preprocess", "encoders", "fusion", "full")
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    out_dir.mkdir(parents=True, exist_ok=True)
    report = []
    for stage in stages:
        with profile(activities=activities) as prof:
            fns[stage]()
            sync(device)
        label = LABELS.get(stage, "LLM prefill + decode")
        report.append(f"== {label}\n{prof.key_averages().table(sort_by=key, row_limit=15)}")
    (out_dir / f"profile_{name}.txt").write_text("\n".join(report))
    with profile(activities=activities) as prof:
        for stage in stages:
            with record_function(f"stage: {LABELS.get(stage, 'LLM prefill + decode')}"):
                fns[stage]()
                sync(device)
    prof.export_chrome_trace(str(out_dir / f"profile_{name}.json"))


def quiet_third_party() -> None:
    """No transformers progress bars or deprecation notices above the table (the reference loads its models)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def print_table(result: dict, args: argparse.Namespace, baseline: bool) -> None:
    per = args.batch  # affectrt runs a batch; its per-clip cost is the batch's time over the batch size
    print(
        f"AffectGPT latency, preset '{args.preset}' ({args.variant}), {result['device_name']} ({result['device']}), "
        f"batch {args.batch}, prompt {result['prompt_tokens']} tokens + {args.new_tokens} new, {result['precision']} "
        f"on both paths, commit {result['commit']}"
    )
    extras = [(EXTRAS[k], k) for k in EXTRAS if f"affectrt_{k}" in result]
    head = f"{'stage':<18}{'affectrt ms':>12}{'p20-p80':>15}"
    head += f"{'reference ms':>14}{'p20-p80':>15}{'speed-up':>10}" if baseline else ""
    for extra, _ in extras:
        head += f"{extra['label'] + ' ms':>14}" + (f"{extra['label'] + ' speed-up':>18}" if baseline else "")
    print(head)
    noisy = []
    for name in STAGES:
        a = result["affectrt"][name]
        line = f"{LABELS[name]:<18}{a['median_ms'] / per:>12.2f}{_spread(a, per):>15}"
        rows = [a]
        if baseline:
            b = result["baseline"][name]
            rows.append(b)
            line += f"{b['median_ms']:>14.2f}{_spread(b, 1):>15}{b['median_ms'] * per / max(a['median_ms'], 1e-9):>9.2f}x"
        for _, key in extras:
            h = result[f"affectrt_{key}"][name]
            line += f"{h['median_ms'] / per:>14.2f}"
            if baseline:
                line += f"{result['baseline'][name]['median_ms'] * per / max(h['median_ms'], 1e-9):>17.2f}x"
        print(line)
        if any((r["p80_ms"] - r["p20_ms"]) > SPREAD_WARNING * r["median_ms"] for r in rows):
            noisy.append(LABELS[name])
    for name, a in result["affectrt_torch_encoders"].items():
        line = f"{name:<18}{a['median_ms']:>12.2f}{_spread(a, 1):>15}"
        print(line + f"   (affectrt's own {name.split()[0]} in PyTorch; the rows above use {args.encoders})")
    line = f"{'end to end':<18}{result['affectrt_end_to_end_ms'] / per:>12.2f}{'':>15}"
    if baseline:
        e2e = result["baseline_end_to_end_ms"]
        line += f"{e2e:>14.2f}{'':>15}{e2e * per / result['affectrt_end_to_end_ms']:>9.2f}x"
    for _, key in extras:
        ex = result[f"affectrt_{key}_end_to_end_ms"]
        line += f"{ex / per:>14.2f}"
        if baseline:
            line += f"{result['baseline_end_to_end_ms'] * per / ex:>17.2f}x"
    print(line)
    if args.batch > 1:
        print(
            f"(ms per clip: affectrt's batch of {args.batch} divided by {args.batch}; the reference runs one clip)"
        )
    for extra, key in extras:
        warm = result[f"affectrt_{key}_warmup_s"]
        print(f"({extra['label']} columns: {extra['note']}; its warm-up run took {warm:.1f} s)")
    if noisy:
        print(
            f"warning: p20-p80 spread above {SPREAD_WARNING:.0%} of the median in: {', '.join(noisy)}; the machine "
            "was busy, so those ratios are unreliable (rerun on an idle machine or with more --repeats)"
        )
    if "clips_per_s" in result:
        tp = result["clips_per_s"]
        who = "affectrt (compiled)" if "affectrt_compile" in result else "affectrt"
        msg = f"throughput over {args.throughput} clips: {who} {tp['affectrt']:.2f} clips/s (batch {args.batch})"
        if "baseline" in tp:
            msg += (
                f", reference {tp['baseline']:.2f} clips/s (batch 1): {tp['affectrt'] / tp['baseline']:.2f}x"
            )
        print(msg)
    if "bound" in result:
        print_bound(result["bound"], baseline)


def encoder_bound(pipe: AffectGPTPipeline, clips: list[ClipInput], result: dict) -> dict:
    """How far fp32 can go on this CPU: the encoders' FLOPs at the CPU's own measured GEMM rate.

    Counts the FLOPs of one affectrt encode of the batch (``torch.utils.flop_counter``: matmuls, convolutions,
    attention) and times a large float32 GEMM (``torch.mm``, 2048³, the best case for the BLAS). Every
    encoder FLOP is a GEMM/convolution FLOP, so no fp32 implementation of the same model encodes a clip in less
    than FLOPs / rate. With the other stages as measured, the end-to-end ratio is then at most
    reference / (affectrt − affectrt's encoders + that floor), and at most reference / floor even if every
    other stage took no time.
    """
    from torch.utils.flop_counter import FlopCounterMode

    batch = pipe.preprocess([pipe.load_media(c) for c in clips], [c.subtitle for c in clips])
    with FlopCounterMode(display=False) as counter:
        pipe.encode(batch)
    gflop = counter.get_total_flops() / len(clips) / 1e9
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * 2048**3 / (time.perf_counter() - t0) / 1e9)
    rate = max(rates)
    floor_ms = gflop / rate * 1e3
    per = len(clips)
    out = {"encoder_gflop_per_clip": gflop, "gemm_gflops": rate, "encoder_floor_ms": floor_ms}
    if "baseline" in result:
        ref = result["baseline_end_to_end_ms"]
        ours = result["affectrt_end_to_end_ms"] / per
        rest = ours - result["affectrt"]["encoders"]["median_ms"] / per
        out["max_speedup_other_stages_as_measured"] = ref / (rest + floor_ms)
        out["max_speedup_other_stages_free"] = ref / floor_ms
    return out


def print_bound(bound: dict, baseline: bool) -> None:
    msg = (
        f"fp32 bound: the encoders do {bound['encoder_gflop_per_clip']:.1f} GFLOP per clip; at this CPU's "
        f"float32 GEMM rate ({bound['gemm_gflops']:.0f} GFLOP/s, torch.mm 2048³) that is >= "
        f"{bound['encoder_floor_ms']:.1f} ms per clip"
    )
    if baseline:
        msg += (
            f", so end to end affectrt can be at most {bound['max_speedup_other_stages_as_measured']:.2f}x the "
            f"reference with its other stages as measured ({bound['max_speedup_other_stages_free']:.2f}x if "
            "they took no time)"
        )
    print(msg)


def _spread(row: dict, per: int) -> str:
    return f"{row['p20_ms'] / per:.1f}-{row['p80_ms'] / per:.1f}"


def write_chart(result: dict, path: Path, per: int) -> Path | None:
    """Stacked per-stage bars (ms per clip) of both paths; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no latency.png: pip install matplotlib)", file=sys.stderr)
        return None
    n_new = result["new_tokens"]
    paths = [("affectrt", result["affectrt"], per)]
    if "baseline" in result:
        paths.append(("reference", result["baseline"], 1))
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.8 * len(paths)))
    for row, (_, stages, div) in enumerate(paths):
        left = 0.0
        for i, stage in enumerate(STAGES):
            ms = stages[stage]["median_ms"] / div * (n_new if stage == "decode/token" else 1)
            label = LABELS[stage] + (f" ×{n_new}" if stage == "decode/token" else "")
            ax.barh(row, ms, left=left, color=f"C{i}", label=label if row == 0 else None)
            left += ms
    ax.set_yticks(range(len(paths)), [p[0] for p in paths])
    ax.set_xlabel("ms per clip")
    ax.set_title(f"{result['preset']} ({result['variant']}), {result['device_name']}", fontsize=9)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
