"""MER-UniBench evaluation (``affectrt eval``): the nine test sets, the LLM judge, the metrics, the report.

- :mod:`affectrt.eval.wheel`      emotion-wheel tables (``eval/data/*.csv``) and the label mapping G_k
- :mod:`affectrt.eval.metrics`    F_s (OV-MERD+), HIT (basic emotions), WAF / ACC (sentiment)
- :mod:`affectrt.eval.datasets`   readers for the release's ``*-process`` layouts
- :mod:`affectrt.eval.judge`      label extraction with a Qwen2.5-Instruct judge on affectrt's Qwen2 runtime
- :mod:`affectrt.eval.runner`     batched, sharded, resumable answering
- :mod:`affectrt.eval.scoreonly`  scoring answer files (the release's output layout or affectrt's)
- :mod:`affectrt.eval.report`     table, JSON, CSV and chart against the paper
"""
