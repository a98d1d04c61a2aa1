"""Build of affectrt's native parts; the metadata lives in pyproject.toml.

Extensions (both optional; a failed or skipped build still yields a working pure-Python package):

- ``affectrt._C``: CPU kernels from ``csrc/*_cpu.cpp`` + ``csrc/bindings_cpu.cpp`` (pybind11, OpenMP).
- ``affectrt._C_cuda``: ``csrc/*_cuda.cu`` compiled by ``nvcc`` to objects, linked with
  ``csrc/bindings_cuda.cpp`` against libcudart (the ``nvidia-cuda-runtime`` pip package when installed,
  else ``$CUDA_HOME/lib64``). ptxas' register/spill report is saved as ``affectrt/_cuda_ptxas.txt``.

Neither links libtorch. Environment switches:

- ``AFFECTRT_NATIVE=0``: build no extension at all.
- ``AFFECTRT_CUDA=auto|0|1``: auto (default) builds ``_C_cuda`` when nvcc is found; 1 fails the build when
  it cannot be built; 0 skips it.
- ``AFFECTRT_CUDA_ARCHS="80;90"``: SASS for each listed sm, plus PTX for the highest.

What was built (and why not) is written to ``affectrt/_build_info.json``; read it with
``affectrt.build_info.build_info()``.
"""

from __future__ import annotations

import datetime
import glob
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = "csrc"
BUILD_INFO = "_build_info.json"
PTXAS_REPORT = "_cuda_ptxas.txt"
CPU_EXT, CUDA_EXT = "affectrt._C", "affectrt._C_cuda"


def _run(cmd: list[str]) -> str | None:
    """stdout+stderr of a short query command, or None when it cannot run."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return (p.stdout + p.stderr).strip() if p.returncode == 0 else None


def _warn(msg: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\naffectrt setup.py WARNING: {msg}\n{bar}\n", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- CUDA lookup


def find_nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
        return os.path.join(home, "bin", "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    default = "/usr/local/cuda/bin/nvcc"
    return default if os.access(default, os.X_OK) else None


def cuda_home(nvcc: str) -> str:
    """$CUDA_HOME, else the toolkit that holds nvcc (following wrapper scripts), else /usr/local/cuda."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        return home
    candidate = Path(nvcc).resolve().parent.parent
    if (candidate / "include" / "cuda_runtime.h").exists():
        return str(candidate)
    return "/usr/local/cuda"


def nvcc_version(nvcc: str) -> str | None:
    out = _run([nvcc, "--version"])
    m = re.search(r"release (\d+\.\d+), V([\d.]+)", out or "")
    return m.group(2) if m else None


def find_cudart(major: int, home: str) -> tuple[str, str]:
    """(path of libcudart.so.<major>, where it came from): the pip package first, then the toolkit."""
    spec = importlib.util.find_spec("nvidia")
    for base in list(spec.submodule_search_locations or []) if spec else []:
        # nvidia-cuda-runtime 13.x: nvidia/cu13/lib; the older -cu12 package: nvidia/cuda_runtime/lib
        for lib in sorted(glob.glob(os.path.join(base, "*", "lib", f"libcudart.so.{major}"))):
            return lib, "pip:nvidia-cuda-runtime"
    for libdir in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
        for name in (f"libcudart.so.{major}", "libcudart.so"):
            path = os.path.join(home, libdir, name)
            if os.path.exists(path):
                return path, f"CUDA_HOME ({home})"
    raise RuntimeError(
        f"no libcudart.so.{major}: pip install 'nvidia-cuda-runtime=={major}.*' or set CUDA_HOME"
    )


def parse_ptxas(report: str) -> list[dict]:
    """Registers, spills and shared memory per (kernel, arch) from `nvcc -Xptxas -v` output."""
    rows, current = [], None
    for line in report.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'", line)
        if m:
            current = {"kernel": m.group(1), "arch": m.group(2)}
            rows.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current["spill_stores"], current["spill_loads"] = int(m.group(1)), int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current["smem_bytes"] = int(s.group(1)) if s else 0
    names = _run(["c++filt"] + [r["kernel"] for r in rows]) if rows else None
    if names and len(names.splitlines()) == len(rows):
        for r, name in zip(rows, names.splitlines()):
            r["kernel"] = _short_kernel_name(name)
    return rows


def _short_kernel_name(name: str) -> str:
    name = name.replace("(anonymous namespace)::", "").replace("affectrt::", "")
    name = re.sub(r"^void ", "", name)
    return re.sub(r"\((?!.*<).*\)$", "", name)  # drop the argument list


# ------------------------------------------------------------------------------------------------- build


class NativeBuildExt(build_ext):
    """build_ext whose every extension is optional, with an nvcc step for ``_C_cuda`` and build metadata."""

    def run(self) -> None:
        self.report: dict[str, dict] = {}
        self.cuda: dict = {}
        self.ptxas_text: str | None = None
        native = os.environ.get("AFFECTRT_NATIVE", "1") != "0"
        if not native:
            _warn("AFFECTRT_NATIVE=0: building no native extension; affectrt runs on its PyTorch paths.")
            for ext in self.extensions:
                self.report[ext.name] = {"built": False, "reason": "skipped: AFFECTRT_NATIVE=0"}
            self.extensions = []
        super().run()
        self._write_outputs()

    def build_extensions(self) -> None:
        built = []
        for ext in self.extensions:
            if self._build_optional(ext):
                built.append(ext)
        self.extensions = built  # what failed is neither copied in place nor listed as an output

    def _build_optional(self, ext: Extension) -> bool:
        cuda_mode = os.environ.get("AFFECTRT_CUDA", "auto").lower()
        try:
            if ext.name == CUDA_EXT:
                if cuda_mode == "0":
                    self.report[ext.name] = {"built": False, "reason": "skipped: AFFECTRT_CUDA=0"}
                    return False
                nvcc = find_nvcc()
                if nvcc is None:
                    reason = "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
                    if cuda_mode == "1":
                        raise RuntimeError(reason)
                    print(f"affectrt: not building {CUDA_EXT}: {reason}", file=sys.stderr)
                    self.report[ext.name] = {"built": False, "reason": f"skipped: {reason}"}
                    return False
                self._prepare_cuda(ext, nvcc)
            self.build_extension(ext)
        except Exception as e:  # noqa: BLE001 - any failure leaves a pure-Python fallback
            if ext.name == CUDA_EXT and cuda_mode == "1":
                raise RuntimeError(f"AFFECTRT_CUDA=1 but {CUDA_EXT} failed to build: {e}") from e
            detail = f"{type(e).__name__}: {e}"[:600]  # the full compiler output is in the log above
            _warn(f"building {ext.name} failed; continuing without it.\n{detail}")
            self.report[ext.name] = {"built": False, "reason": f"build failed: {detail}"}
            return False
        self.report[ext.name] = {"built": True, "file": os.path.basename(self.get_ext_filename(ext.name))}
        return True

    def _prepare_cuda(self, ext: Extension, nvcc: str) -> None:
        """Compile csrc/*_cuda.cu with nvcc into objects and point the link at libcudart."""
        version = nvcc_version(nvcc)
        if version is None:
            raise RuntimeError(f"`{nvcc} --version` failed")
        major = int(version.split(".")[0])
        home = cuda_home(nvcc)
        archs = [
            a.strip() for a in os.environ.get("AFFECTRT_CUDA_ARCHS", "80;90").replace(",", ";").split(";")
        ]
        archs = [a for a in archs if a]
        if not archs or not all(re.fullmatch(r"\d+a?", a) for a in archs):
            raise RuntimeError(f"AFFECTRT_CUDA_ARCHS={archs!r}: expected sm numbers such as '80;90'")
        gencode = []
        for a in archs:
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        top = max(archs, key=lambda a: int(a.rstrip("a")))
        gencode += ["-gencode", f"arch=compute_{top},code=compute_{top}"]

        out_dir = Path(self.build_temp) / "cuda"
        out_dir.mkdir(parents=True, exist_ok=True)
        objects, reports = [], []
        for src in sorted(glob.glob(os.path.join(CSRC, "*_cuda.cu"))):
            obj = str(out_dir / (Path(src).stem + ".o"))
            cmd = [
                nvcc,
                "-c",
                src,
                "-o",
                obj,
                "-O3",
                "-std=c++17",
                "-Xcompiler",
                "-fPIC",
                "-Xcompiler",
                "-fvisibility=hidden",
                "-Xptxas",
                "-v",
                f"-I{CSRC}",
                *gencode,
            ]
            print(" ".join(cmd), flush=True)
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if p.returncode != 0:
                raise RuntimeError(f"nvcc failed on {src}:\n{p.stdout}{p.stderr}")
            reports.append(f"== {src}\n{p.stdout}{p.stderr}")
            objects.append(obj if os.path.isabs(obj) else str(ROOT / obj))

        cudart, cudart_from = find_cudart(major, home)
        libdir = os.path.dirname(cudart)
        ext.extra_objects = [*objects, cudart]
        # Installed, site-packages/affectrt/_C_cuda*.so finds the pip runtime (torch's CUDA wheels pull it
        # in) relatively, whichever libcudart was linked; then the absolute directory used here.
        rpaths = [f"$ORIGIN/../nvidia/{sub}/lib" for sub in (f"cu{major}", "cuda_runtime")] + [libdir]
        ext.extra_link_args = [*ext.extra_link_args, *(f"-Wl,-rpath,{r}" for r in rpaths)]

        self.ptxas_text = f"# nvcc {version}  archs {';'.join(archs)}  flags -O3 -Xptxas -v\n" + "\n".join(
            reports
        )
        self.cuda = {
            "nvcc": nvcc,
            "nvcc_version": version,
            "cuda_home": home,
            "archs": archs,
            "ptx": f"compute_{top}",
            "cudart": cudart,
            "cudart_from": cudart_from,
            "rpath": rpaths,
            "kernels": parse_ptxas(self.ptxas_text),
        }

    def _compiler_version(self) -> str | None:
        cxx = getattr(self.compiler, "compiler_cxx", None) if self.compiler else None
        cmd = cxx[0] if cxx else os.environ.get("CXX", "c++")
        out = _run([cmd, "--version"])
        return f"{cmd}: {out.splitlines()[0]}" if out else None

    def _write_outputs(self) -> None:
        try:
            import pybind11

            pybind11_version = pybind11.__version__
        except ImportError:
            pybind11_version = None
        info = {
            "affectrt_version": self.distribution.get_version(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "compiler": self._compiler_version(),
            "pybind11": pybind11_version,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": _run(["git", "rev-parse", "HEAD"]),
            "env": {
                k: os.environ[k]
                for k in ("AFFECTRT_NATIVE", "AFFECTRT_CUDA", "AFFECTRT_CUDA_ARCHS", "CUDA_HOME")
                if k in os.environ
            },
            "extensions": self.report,
            "cuda": self.cuda or None,
        }
        # build_lib feeds wheels; the source tree serves in-place / editable builds.
        targets = [Path(self.build_lib) / "affectrt"]
        if self.inplace or getattr(self, "editable_mode", False):
            targets.append(ROOT / "affectrt")
        for folder in targets:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
            ptxas = folder / PTXAS_REPORT
            if self.ptxas_text is not None:
                ptxas.write_text(self.ptxas_text)
            elif ptxas.exists():
                ptxas.unlink()  # a stale report from an earlier CUDA build would lie
        built = [n for n, r in self.report.items() if r["built"]]
        print(f"affectrt: native extensions built: {built or 'none'}; metadata in {BUILD_INFO}", flush=True)


def _pybind11_include() -> list[str]:
    try:
        import pybind11
    except ImportError:  # the build step then fails per extension and the package stays pure Python
        return []
    return [pybind11.get_include()]


_cxx_flags = ["-O3", "-std=c++17", "-fvisibility=hidden"]
# Any change to a kernel, a header or this file (flags, rpaths) relinks both modules.
_depends = sorted(glob.glob(f"{CSRC}/*.h") + glob.glob(f"{CSRC}/*.cu") + ["setup.py"])
ext_modules = [
    Extension(
        CPU_EXT,
        sources=sorted(set(glob.glob(f"{CSRC}/*_cpu.cpp")) - {f"{CSRC}/bindings_cpu.cpp"})
        + [f"{CSRC}/bindings_cpu.cpp"],
        include_dirs=[CSRC, *_pybind11_include()],
        # no-trapping-math: lets GCC if-convert the clamps in vec_math.h (no value changes; FP flags only)
        extra_compile_args=[*_cxx_flags, "-fopenmp", "-fno-trapping-math"],
        extra_link_args=["-fopenmp"],
        depends=_depends,
        language="c++",
    ),
    Extension(
        CUDA_EXT,
        sources=[f"{CSRC}/bindings_cuda.cpp"],
        include_dirs=[CSRC, *_pybind11_include()],
        extra_compile_args=_cxx_flags,
        depends=_depends,
        language="c++",
    ),
]

packages = find_packages(include=["affectrt", "affectrt.*"])
package_dir = {}
for top in ("kernels", "export"):  # top-level folders that install as affectrt.<name>
    package_dir[f"affectrt.{top}"] = top
    packages += [f"affectrt.{top}"] + [f"affectrt.{top}.{p}" for p in find_packages(top)]

setup(
    packages=packages,
    package_dir=package_dir,
    ext_modules=ext_modules,
    cmdclass={"build_ext": NativeBuildExt},
)
