"""ONNX and TensorRT export of the encoders and the fusion head, and their runners (installed as affectrt.export).

    affectrt export --onnx OUT_DIR | --trt OUT_DIR [--model-dir D --checkpoint C | --preset P] [--dtype ...]

- ``wrappers``: one thin module per piece (vision, audio, fusion), their input/output specs and configs;
- ``onnx_export``: ``torch.onnx.export(dynamo=True)`` with the dynamic ``clips`` axis, ONNX Runtime parity;
- ``trt_build``: TensorRT engines with latency/throughput profiles and a timing cache (``tensorrt`` lazily);
- ``sidecar``: the JSON beside every artifact (weights hash, specs, profiles, versions) and its check;
- ``runners``: ``load_encoders(kind, artifact_dir, model, device)``, the pipeline's encoder backend;
- ``cli``: ``add_export_parser`` / ``run_export`` for ``affectrt/cli.py``.

Nothing here is imported by ``import affectrt``; onnx, onnxruntime and tensorrt load when called.
"""
