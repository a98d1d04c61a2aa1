"""Test and benchmark utilities: random Hugging Face model folders and the upstream-style reference pipeline.

These modules import ``transformers`` / ``peft`` (the ``dev`` extra) at call time; the runtime never needs them.
"""
