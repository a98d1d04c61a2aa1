"""``affectrt infer`` and ``affectrt batch``: options, input checks (before any model loads), and the runs.

Every check here raises :class:`~affectrt.errors.UsageError` naming the input, so a wrong path or value is
reported in one line within a second, not after minutes of loading a 7B model.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

from affectrt.errors import UsageError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".flv", ".m4v", ".mpg", ".mpeg")
CSV_COLUMNS = ("name", "video", "face_npy", "audio", "subtitle")
QUESTION_KEYS = ("ovlabel", "description")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options ``infer`` and ``batch`` share: model, question, decoding, device, encoders."""
    from affectrt.config import PRESETS

    g = p.add_argument_group("model")
    g.add_argument(
        "--model-dir", default=None, help="folder with the vision/, audio/, llm/ Hugging Face folders"
    )
    g.add_argument(
        "--checkpoint",
        default=None,
        help="AffectGPT checkpoint: release .pth, its .safetensors, or affectrt's",
    )
    g.add_argument(
        "--variant", choices=("face", "frame"), default=None, help="default: face when faces are given"
    )
    g.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tiny",
        help="RANDOM weights of this size without --model-dir",
    )
    g.add_argument("--init-seed", type=int, default=0, help="seed of the random weights (no --model-dir)")
    g.add_argument(
        "--dtype",
        choices=("auto", "float32", "float16", "bfloat16"),
        default="auto",
        help="LLM base-weight dtype; adapters stay float32. auto: the release's float16 on CUDA, float32 on CPU",
    )
    g.add_argument(
        "--merge-lora",
        action="store_true",
        help="fold LoRA into the base weights (faster; the release keeps it unmerged, numerics differ slightly)",
    )
    g.add_argument(
        "--encoders",
        choices=("torch", "onnx", "trt"),
        default="torch",
        help="serve encoders + fusion head with PyTorch, ONNX Runtime or TensorRT (see `affectrt export`)",
    )
    g.add_argument("--artifacts", default=None, help="folder written by `affectrt export` (with --encoders)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "bf16"),
        default="auto",
        help="encoders + fusion compute dtype. auto: the release's rule (fp16 autocast on CUDA, fp32 on CPU); "
        "bf16 pays on CPUs with AMX / AVX512-BF16 (`affectrt info` says) and changes numerics slightly",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the LLM decode step for one-clip batches: pays where a step is dispatch-bound (a small "
        "LLM: ~1.5x per token on a 2-core CPU after ~20 s of compilation), not for a 7B LLM that is bound by "
        "weight bandwidth; needs a C++ compiler on CPU",
    )
    g = p.add_argument_group("question and decoding")
    g.add_argument(
        "--question",
        choices=QUESTION_KEYS,
        default="ovlabel",
        help="the release's label question or its description (reasoning) question",
    )
    g.add_argument("--question-text", default=None, help="ask this free-text question instead of --question")
    g.add_argument(
        "--max-new-tokens", type=positive_int, default=64, help="tokens generated at most per clip"
    )
    g.add_argument(
        "--sample", action="store_true", help="sample as the release does (T=1, top-p 0.9, top-k 20)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the sampling (with --sample)")


def check_model_args(args: argparse.Namespace) -> None:
    """Refuse what cannot work before anything loads."""
    from affectrt.checkpoint import AUDIO_DIRS, LLM_DIRS, VISION_DIRS

    if args.checkpoint is not None and args.model_dir is None:
        raise UsageError(
            "--checkpoint",
            "given without --model-dir (a checkpoint holds only the fusion head and LoRA)",
            "pass --model-dir with the vision/, audio/ and llm/ folders",
        )
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise UsageError(args.checkpoint, "checkpoint not found", "check the path given to --checkpoint")
    if args.model_dir is not None:
        root = Path(args.model_dir)
        if not root.exists():
            raise UsageError(
                root, "--model-dir does not exist", "pass the folder holding vision/, audio/, llm/"
            )
        if not root.is_dir():
            raise UsageError(
                root, "--model-dir is not a folder", "pass the folder holding vision/, audio/, llm/"
            )
        for names, what in (
            (VISION_DIRS, "CLIP vision"),
            (AUDIO_DIRS, "HuBERT audio"),
            (LLM_DIRS, "Qwen2.5 LLM"),
        ):
            found = [root / n for n in names if (root / n / "config.json").is_file()]
            if not found:
                raise UsageError(
                    root,
                    f"no {what} folder",
                    f"add one of {', '.join(names)} holding config.json and the weights",
                )
            if names is LLM_DIRS and not (found[0] / "tokenizer.json").is_file():
                raise UsageError(
                    found[0],
                    "no tokenizer.json",
                    "save the fast tokenizer there (transformers: AutoTokenizer.from_pretrained(d).save_pretrained(d))",
                )
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {args.device}",
                f"CUDA is not available (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'})",
                "use --device cpu, or install a CUDA build of torch on a machine with a GPU",
            )
    if args.encoders != "torch":
        if args.artifacts is None:
            raise UsageError(
                f"--encoders {args.encoders}", "needs --artifacts DIR", "run `affectrt export` first"
            )
        module = "onnxruntime" if args.encoders == "onnx" else "tensorrt"
        from importlib.util import find_spec

        if find_spec(module) is None:
            raise UsageError(
                f"--encoders {args.encoders}",
                f"{module} is not installed",
                f"pip install {module} (or use torch)",
            )
    if args.precision == "bf16" and not args.device.startswith("cuda"):
        from affectrt.cpu_features import cpu_bf16_units

        if cpu_bf16_units() is None:
            print(
                "affectrt: --precision bf16: this CPU has no bf16 matrix units (AMX, AVX512-BF16); bf16 is "
                "emulated and likely slower than fp32",
                file=sys.stderr,
            )
    if args.compile:
        import torch

        from affectrt.compile import check_compiler

        check_compiler(torch.device(args.device))
    if args.question_text is not None and not args.question_text.strip():
        raise UsageError("--question-text", "is empty", "give the question, or drop the option")


def _existing(path: str | Path | None, what: str) -> Path | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise UsageError(path, f"{what} not found", "check the path")
    return Path(path)


def question_of(args: argparse.Namespace) -> str:
    return args.question_text if args.question_text is not None else args.question


def load_pipeline(args: argparse.Namespace, variant: str):
    """The pipeline of ``args`` (after :func:`check_model_args`)."""
    import torch

    from affectrt.pipeline import AffectGPTPipeline

    if args.model_dir is None:
        from affectrt.config import get_preset
        from affectrt.models.affectgpt import AffectGPT
        from affectrt.text.tokenizer import byte_level_tokenizer

        print(
            f"affectrt: no --model-dir: the '{args.preset}' preset on RANDOM weights "
            "(the answer is noise; this checks the path end to end)",
            file=sys.stderr,
        )
        torch.manual_seed(args.init_seed)
        model, tokenizer = (
            AffectGPT(get_preset(args.preset).replace(visual_input=variant)).eval(),
            byte_level_tokenizer(),
        )
    else:
        from affectrt.checkpoint import load_model

        name = (
            args.dtype
            if args.dtype != "auto"
            else ("float16" if args.device.startswith("cuda") else "float32")
        )
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
        model, tokenizer = load_model(args.model_dir, args.checkpoint, variant=variant, llm_dtype=dtype)
        if args.checkpoint is None:
            print("affectrt: no --checkpoint: fusion head and LoRA are untrained", file=sys.stderr)
    if args.merge_lora:
        from affectrt.models.lora import merge_lora

        merge_lora(model.llm)
    encoders = None
    if args.encoders != "torch":
        from affectrt.export.runners import load_encoders

        encoders = load_encoders(args.encoders, args.artifacts, model, args.device)
    return AffectGPTPipeline(
        model,
        tokenizer,
        device=args.device,
        encoders=encoders,
        precision=args.precision,
        compile_model=args.compile,
    )


def generation_of(args: argparse.Namespace, pipe):
    from affectrt.checkpoint import generation_top_k
    from affectrt.pipeline import default_generation

    top_k = generation_top_k(args.model_dir) if args.model_dir else 20
    return default_generation(
        pipe.tokenizer, args.max_new_tokens, greedy=not args.sample, seed=args.seed, top_k=top_k
    )


def run_record(args: argparse.Namespace) -> dict:
    """What each result line says about the model: its folder and checkpoint, by hash."""
    return {
        "model": _folder_hash(args.model_dir) if args.model_dir else f"random:{args.preset}:{args.init_seed}",
        "checkpoint": _file_hash(args.checkpoint) if args.checkpoint else None,
    }


def _file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def _folder_hash(folder: str | Path) -> str:
    """A cheap identity of a model folder: its config files' bytes and its weight files' names and sizes
    (hashing 15 GB of weights per job would take minutes)."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            h.update(rel.encode())
            h.update(
                path.read_bytes()
                if path.suffix == ".json" and path.stat().st_size < 1 << 20
                else str(path.stat().st_size).encode()
            )
    return "sha256:" + h.hexdigest()[:16]


def printable(text: str | None) -> str:
    """One line per clip: control characters (newlines, escapes) shown escaped, as repr does."""
    if text is None:
        return ""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


# ----- infer -----------------------------------------------------------------------------------------------


def add_infer_parser(sub) -> None:
    p = sub.add_parser(
        "infer",
        help="describe the emotional state of the person in one or more clips",
        description="Answer the question for each clip: video files, or folders of them (one batch). Prints one "
        "line per clip (name, then the answer or the error) on stdout; exits 1 when any clip failed.",
    )
    p.add_argument("inputs", nargs="+", help="video files and/or folders of videos")
    p.add_argument("--subtitle", default="", help="the clips' subtitle text")
    p.add_argument("--face-npy", default=None, help="OpenFace faces [N,112,112,3] uint8 BGR (one clip only)")
    p.add_argument(
        "--audio", default=None, help="a separate .wav (one clip only; default: the video's own track)"
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="clips per batch")
    p.add_argument("--out", default=None, help="also write one JSON line per clip here")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    add_model_args(p)


def collect_videos(inputs: list[str]) -> list[Path]:
    """The video files of ``inputs``: files as given, folders expanded to their videos (sorted, not recursive)."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
            if not found:
                raise UsageError(path, "holds no video files", f"videos end in {', '.join(VIDEO_EXTENSIONS)}")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(path, "not found", "pass video files or folders of videos")
    return out


def infer(args: argparse.Namespace) -> int:
    from affectrt.pipeline import ClipInput

    check_model_args(args)
    videos = collect_videos(args.inputs)
    if len(videos) > 1 and (args.face_npy or args.audio):
        raise UsageError(
            "--face-npy/--audio",
            "belong to one clip, but several were given",
            "use `affectrt batch` with a CSV",
        )
    face, audio = _existing(args.face_npy, "face file"), _existing(args.audio, "audio file")
    variant = args.variant or ("face" if face else "frame")
    names = _unique_names(videos)
    clips = [
        ClipInput(video=v, subtitle=args.subtitle, face_npy=face, audio=audio, name=n)
        for v, n in zip(videos, names)
    ]
    pipe = load_pipeline(args, variant)
    gen = generation_of(args, pipe)
    results = []
    sink = open(args.out, "w") if args.out else None  # noqa: SIM115 - closed below, written as batches finish
    try:
        for start in range(0, len(clips), args.batch_size):
            for r in pipe.answer(clips[start : start + args.batch_size], question=question_of(args), gen=gen):
                results.append(r)
                line = {"name": r.name, "answer": r.answer, "error": r.error}
                if sink is not None:
                    sink.write(json.dumps(line) + "\n")
                    sink.flush()
                if args.json:
                    print(json.dumps(line), flush=True)
                else:
                    text = r.answer if r.error is None else f"error: {r.error}"
                    print(f"{r.name}\t{printable(text)}", flush=True)
    except KeyboardInterrupt:
        where = f" in {args.out}" if args.out else ""
        print(f"affectrt: interrupted; {len(results)} result(s) kept{where}", file=sys.stderr)
        return 130
    finally:
        if sink is not None:
            sink.close()
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"affectrt: {failed} of {len(results)} clip(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _unique_names(paths: list[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else p.as_posix() for p in paths]


# ----- batch -----------------------------------------------------------------------------------------------


def add_batch_parser(sub) -> None:
    p = sub.add_parser(
        "batch",
        help="answer a CSV list of clips, writing JSON lines as it goes (a rerun resumes)",
        description="Answer every clip of a CSV (columns name,video,face_npy,audio,subtitle; paths relative to the "
        "CSV). One JSON line per clip is appended to --out as soon as its batch is done; a rerun skips the clips "
        "already there. Exits 1 when any clip failed.",
    )
    p.add_argument(
        "clips", help="CSV with a header: name,video,face_npy,audio,subtitle (name and one media column)"
    )
    p.add_argument("--out", required=True, help="JSON-lines results; clips already in it are skipped")
    p.add_argument("--batch-size", type=positive_int, default=8, help="clips per batch")
    p.add_argument("--retry-failed", action="store_true", help="run the clips recorded with an error again")
    add_model_args(p)


def read_clip_csv(path: str | Path, variant: str | None):
    """(clips, variant) of a batch CSV, refusing what would fail every clip or mix the two models."""
    from affectrt.pipeline import ClipInput

    path = Path(path)
    if not path.is_file():
        raise UsageError(path, "CSV not found", "check the path")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if not header or "name" not in header or unknown or not ({"video", "face_npy"} & set(header)):
        what = (
            f"unknown column(s) {', '.join(unknown)}" if unknown else f"header {','.join(header) or '(none)'}"
        )
        raise UsageError(
            path, f"{what}", f"the header is {','.join(CSV_COLUMNS)} (name and video or face_npy)"
        )
    if not rows:
        raise UsageError(path, "has a header but no clips", "add one row per clip")
    names = [r["name"] for r in rows]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup or any(not n for n in names):
        raise UsageError(path, f"clip names must be unique and non-empty; repeated: {dup[:5]}", "rename them")
    base = path.parent

    def rel(value: str | None) -> Path | None:
        return (base / value) if value else None

    with_faces = [r["name"] for r in rows if r.get("face_npy")]
    if variant is None:
        if with_faces and len(with_faces) < len(rows):
            without = [r["name"] for r in rows if not r.get("face_npy")]
            raise UsageError(
                path,
                f"{len(with_faces)} clip(s) have faces (e.g. {with_faces[0]}) and {len(without)} do not (e.g. "
                f"{without[0]}); one job runs one model",
                "split the CSV, or pass --variant frame (faces unused) or --variant face (clips without faces fail)",
            )
        variant = "face" if with_faces else "frame"
    clips = [
        ClipInput(
            video=rel(r.get("video")),
            subtitle=r.get("subtitle") or "",
            face_npy=rel(r.get("face_npy")),
            audio=rel(r.get("audio")),
            name=r["name"],
        )
        for r in rows
    ]
    return clips, variant


def batch(args: argparse.Namespace) -> int:
    from affectrt.pipeline import read_results, run_batch_job

    check_model_args(args)
    clips, variant = read_clip_csv(args.clips, args.variant)
    pipe = load_pipeline(args, variant)
    gen = generation_of(args, pipe)
    try:
        results = run_batch_job(
            pipe,
            clips,
            args.out,
            question=question_of(args),
            gen=gen,
            batch_size=args.batch_size,
            retry_failed=args.retry_failed,
            record=run_record(args),
        )
    except KeyboardInterrupt:
        kept = len(read_results(args.out))
        print(f"affectrt: interrupted; {kept} result(s) kept in {args.out}; rerun to resume", file=sys.stderr)
        return 130
    names = {c.name for c in clips}
    failed = sorted(n for n, r in results.items() if n in names and r.error is not None)
    print(
        f"affectrt: {len(names) - len(failed)} answered, {len(failed)} failed; results in {args.out}"
        + (f" (rerun with --retry-failed to try the {len(failed)} again)" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0
