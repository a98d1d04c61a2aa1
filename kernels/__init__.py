"""Triton kernels (installed as affectrt.kernels)."""
