"""The build metadata that ``setup.py`` records in ``affectrt/_build_info.json``.

It says which native extensions were built (and why not), with which compiler, nvcc, CUDA archs and
pybind11, and a summary of ptxas' register/spill report (full text: ``affectrt/_cuda_ptxas.txt``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
BUILD_INFO_PATH = _HERE / "_build_info.json"
PTXAS_REPORT_PATH = _HERE / "_cuda_ptxas.txt"


def build_info() -> dict[str, Any]:
    """The recorded build metadata; ``{"built": False, "reason": ...}`` when there is none.

    Without a record (a source checkout that was never built) the package still works on its PyTorch
    paths; the native kernels are simply absent.
    """
    try:
        info = json.loads(BUILD_INFO_PATH.read_text())
    except FileNotFoundError:
        return {
            "built": False,
            "reason": f"not built: no {BUILD_INFO_PATH.name} (source tree without a build)",
            "extensions": {},
        }
    except (OSError, ValueError) as e:
        return {"built": False, "reason": f"unreadable {BUILD_INFO_PATH.name}: {e}", "extensions": {}}
    info.setdefault("built", True)
    return info


def ptxas_report() -> str | None:
    """The full ``nvcc -Xptxas -v`` output of the CUDA build, or None when CUDA was not built."""
    try:
        return PTXAS_REPORT_PATH.read_text()
    except OSError:
        return None
