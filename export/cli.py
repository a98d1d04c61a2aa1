"""``affectrt export``: ONNX files (``--onnx OUT_DIR``) or TensorRT engines (``--trt OUT_DIR``) of the encoders
and the fusion head. Hooked into ``affectrt/cli.py`` with :func:`add_export_parser` and :func:`run_export`.

    affectrt export --onnx out/ --model-dir MODEL_DIR --checkpoint ckpt.pth --dtype float16
    affectrt export --trt out/ --model-dir MODEL_DIR --batch-max 16          # ONNX first, then engines
    affectrt export --onnx out/ --preset tiny                                # random weights, for tests

Only the encoders and the fusion head are loaded (never the LLM's weights). ``--trt`` writes and checks the
ONNX files first; where TensorRT or a GPU is missing it then stops with exit code 3, keeping them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_NO_TENSORRT = 3
EXIT_EXPORT_FAILED = 4


def add_export_parser(subparsers) -> None:
    """Add the ``export`` sub-command to an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser("export", help="export the encoders and the fusion head to ONNX or TensorRT")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--onnx", metavar="OUT_DIR", help="write <piece>.onnx (+ .json sidecars) here")
    where.add_argument(
        "--trt", metavar="OUT_DIR", help="write the ONNX files, then <piece>.plan engines here"
    )
    p.add_argument(
        "--model-dir", default=None, help="folder with the vision/ and audio/ HF folders (and llm/)"
    )
    p.add_argument("--checkpoint", default=None, help="AffectGPT .pth (release) or affectrt .safetensors")
    p.add_argument(
        "--variant", choices=("face", "frame"), default="face", help="face (OpenFace) or frame model"
    )
    p.add_argument("--preset", default="tiny", help="preset for random weights without --model-dir")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights without --model-dir")
    p.add_argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="dtype of the exported pieces",
    )
    p.add_argument(
        "--pieces", default="vision,audio,fusion", help="comma-separated subset of vision,audio,fusion"
    )
    p.add_argument(
        "--batch-max", type=int, default=16, help="largest batch of clips of the throughput profile"
    )
    p.add_argument("--opset", type=int, default=20, help="ONNX opset (>= 23 may emit the Attention op)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")
    p.add_argument(
        "--timing-cache", default=None, help="TensorRT timing cache (default OUT_DIR/timing.cache)"
    )
    p.add_argument("--workspace-gib", type=float, default=8.0, help="TensorRT builder workspace")
    p.add_argument(
        "--strongly-typed",
        action="store_true",
        help="TensorRT strongly-typed network (the ONNX file's types)",
    )


class ExportModel:
    """What export needs of AffectGPT: ``cfg``, ``visual_encoder``, ``acoustic_encoder``, ``fusion`` (the
    attribute names of :class:`~affectrt.models.affectgpt.AffectGPT`, which can be passed instead)."""

    def __init__(self, cfg, visual_encoder, acoustic_encoder, fusion):
        self.cfg = cfg
        self.visual_encoder = visual_encoder.eval()
        self.acoustic_encoder = acoustic_encoder.eval()
        self.fusion = fusion.eval()

    @property
    def video_placeholder(self) -> str:
        return "<FaceHere>" if self.cfg.visual_input == "face" else "<FrameHere>"


def _fusion_state_from_checkpoint(path: Path) -> dict:
    """The fusion head's tensors (FusionHead key names) of any checkpoint ``affectrt.checkpoint`` reads."""
    from affectrt.checkpoint import trainable_tensors

    tensors = trainable_tensors(path)
    return {k.removeprefix("fusion."): v for k, v in tensors.items() if k.startswith("fusion.")}


def load_export_model(model_dir: str | Path, checkpoint: str | Path | None = None, variant: str = "face"):
    """Encoders from ``model_dir`` and the fusion head from ``checkpoint`` (or freshly initialised)."""
    import torch

    from affectrt.checkpoint import AUDIO_DIRS, LLM_DIRS, VISION_DIRS, config_from_folders, find_subdir
    from affectrt.models.clip import CLIPVisionEncoder
    from affectrt.models.fusion import FusionHead
    from affectrt.models.hf_io import check_keys
    from affectrt.models.hubert import HubertEncoder

    vision_dir = find_subdir(model_dir, VISION_DIRS, "CLIP vision")
    audio_dir = find_subdir(model_dir, AUDIO_DIRS, "HuBERT audio")
    llm_dir = find_subdir(model_dir, LLM_DIRS, "Qwen2.5 LLM")  # its config.json only: the LLM width
    cfg = config_from_folders(vision_dir, audio_dir, llm_dir, variant=variant)
    fusion = FusionHead(cfg)
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
        sd = _fusion_state_from_checkpoint(checkpoint)
        check_keys({k: v.shape for k, v in fusion.state_dict().items()}, sd, str(checkpoint))
        with torch.no_grad():
            fusion.load_state_dict({k: v.float() for k, v in sd.items()})
    return ExportModel(
        cfg, CLIPVisionEncoder.from_pretrained(vision_dir), HubertEncoder.from_pretrained(audio_dir), fusion
    )


def random_export_model(preset: str, variant: str, seed: int):
    """A preset's encoders and fusion head on random weights (no LLM)."""
    import torch

    from affectrt.config import get_preset
    from affectrt.models.clip import CLIPVisionEncoder
    from affectrt.models.fusion import FusionHead
    from affectrt.models.hubert import HubertEncoder

    torch.manual_seed(seed)
    cfg = get_preset(preset).replace(visual_input=variant)
    return ExportModel(cfg, CLIPVisionEncoder(cfg.vision), HubertEncoder(cfg.audio), FusionHead(cfg))


def _notice(message: str) -> None:
    print(message, file=sys.stderr)


def run_export(args: argparse.Namespace) -> int:
    """Run ``affectrt export``; returns the exit code (0 ok, 2 bad input, 3 no TensorRT, 4 export failed)."""
    from .onnx_export import ExportCheckError, export_onnx, require_onnx
    from .wrappers import PIECES

    pieces = [p.strip() for p in args.pieces.split(",") if p.strip()]
    bad = [p for p in pieces if p not in PIECES]
    if bad or not pieces:
        print(f"affectrt export: --pieces {args.pieces!r}: choose from {', '.join(PIECES)}", file=sys.stderr)
        return 2
    if args.batch_max < 1:
        print(f"affectrt export: --batch-max must be >= 1, got {args.batch_max}", file=sys.stderr)
        return 2
    try:
        require_onnx()
    except ImportError as e:
        print(f"affectrt export: {e}", file=sys.stderr)
        return EXIT_EXPORT_FAILED
    out_dir = Path(args.onnx or args.trt)
    if args.model_dir is None:
        print(
            f"affectrt export: no --model-dir: exporting the '{args.preset}' preset on RANDOM weights",
            file=sys.stderr,
        )
        model = random_export_model(args.preset, args.variant, args.seed)
    else:
        try:
            model = load_export_model(args.model_dir, args.checkpoint, args.variant)
        except (FileNotFoundError, ValueError) as e:
            print(f"affectrt export: {e}", file=sys.stderr)
            return 2
    try:
        onnx_files = export_onnx(
            model,
            out_dir,
            dtype=args.dtype,
            pieces=pieces,
            opset=args.opset,
            check=not args.no_check,
            log=_notice,
        )
    except ExportCheckError as e:
        print(f"affectrt export: {e}", file=sys.stderr)
        return EXIT_EXPORT_FAILED
    if args.onnx:
        for path in onnx_files.values():
            print(path)  # the result on stdout; progress went to stderr
        return 0

    from .trt_build import EngineBuildError, build_engines, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        print(
            f"affectrt export: cannot build TensorRT engines: {reason}. The ONNX files are written and checked "
            f"in {out_dir} ({', '.join(p.name for p in onnx_files.values())}); build the engines on a GPU "
            f"machine with `affectrt export --trt {out_dir} ...`",
            file=sys.stderr,
        )
        return EXIT_NO_TENSORRT
    try:
        build_engines(
            onnx_files,
            batch_max=args.batch_max,
            timing_cache=args.timing_cache,
            workspace_gib=args.workspace_gib,
            strongly_typed=args.strongly_typed,
            log=_notice,
        )
    except EngineBuildError as e:
        print(f"affectrt export: {e}", file=sys.stderr)
        return EXIT_EXPORT_FAILED
    for path in sorted(out_dir.glob("*.plan")):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m affectrt.export.cli export ...``) until affectrt/cli.py hooks it."""
    parser = argparse.ArgumentParser(prog="affectrt")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    return run_export(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
