"""ONNX and TensorRT export (installed as affectrt.export)."""
