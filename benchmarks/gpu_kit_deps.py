"""The Python half of the GPU kit: the wheels the lent GPU machine lacks, for its CPython 3.12.

That machine has no network, so phiscale's missing dependencies travel as wheels in `.whl/`,
installed there with `pip install --no-index --no-deps --target`. Which ones: walk the
Requires-Dist of ROOTS (markers evaluated for CPython 3.12 on x86-64 Linux), stop at anything the
machine already has (GPU_PREINSTALLED), and fetch the rest, one version each, preferring the
version installed here (the one the test suite runs). Packages with no wheel on PyPI are built here.

    python benchmarks/gpu_kit_deps.py fetch .whl          # download/build; drop stale files
    python benchmarks/gpu_kit_deps.py check .whl          # one version each, cp312 tags, closure
    python benchmarks/gpu_kit_deps.py preinstalled .whl   # the GPU machine's packages the kit uses
    python3 benchmarks/gpu_kit_deps.py installed .whl     # on the GPU machine: versions there fit?
    python3 benchmarks/gpu_kit_deps.py smoke WORKDIR      # the kit installed (PYTHONPATH): use it
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

# What phiscale-train, phiscale-report and the session need beyond the GPU machine's image:
# MLflow's tracking client with its sqlite store (mlflow-skinny + SQLAlchemy + Alembic; the full
# `mlflow` wheel adds the UI), Hydra, and DeepSpeed (hjson, pydantic follow from its metadata).
# Pinned: the versions the project's test suite runs with (pyproject.toml, .venv).
ROOTS = ("mlflow-skinny==3.17.2", "sqlalchemy", "alembic", "hydra-core", "omegaconf", "deepspeed", "hjson",
         "typing-extensions")

# Carried although the GPU machine has them: the kit's wheels want a recent version (pydantic 2.14
# needs typing-extensions>=4.16) and a newer pure-Python copy on PYTHONPATH is safe for the rest.
SHADOW_PREINSTALLED = frozenset({"typing-extensions"})

# No cp312 wheel on PyPI: build a py3 wheel from the sdist here, with these environment variables.
# DeepSpeed: DS_BUILD_OPS=0 ships no compiled ops (ZeRO with a torch optimizer needs none; any op
# would be JIT-built there with its nvcc). antlr4 4.9.3 (hydra-core 1.3 pins 4.9.*) is sdist-only.
FROM_SDIST: dict[str, dict[str, str]] = {"deepspeed": {"DS_BUILD_OPS": "0"}, "antlr4-python3-runtime": {}}

# The nvidia-h200 image's Python packages ("Python packages already there", the device tool's
# KINDS.md, as read on a machine running it on 2026-11-17). Versions there are unknown here: the
# `installed` command checks them on that machine.
GPU_PREINSTALLED = frozenset(canonicalize_name(n) for n in """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx
onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())

GPU_PYTHON = (3, 12)
# glibc 2.17..2.39 manylinux tags (pip matches each N exactly), newest first, then the legacy aliases.
GPU_PLATFORMS = tuple(f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)) + ("manylinux2014_x86_64",
                                                                                 "manylinux1_x86_64")
# The marker environment of CPython 3.12 on x86-64 Linux (PEP 508), whatever runs this script.
GPU_MARKERS = default_environment() | {
    "implementation_name": "cpython", "implementation_version": "3.12.3", "os_name": "posix",
    "platform_machine": "x86_64", "platform_python_implementation": "CPython", "platform_system": "Linux",
    "python_full_version": "3.12.3", "python_version": "3.12", "sys_platform": "linux", "extra": "",
}


def gpu_tags() -> set[Tag]:
    """Every wheel tag CPython 3.12 on manylinux x86-64 accepts (cp312, abi3, py3 ... none-any)."""
    return set(cpython_tags(GPU_PYTHON, platforms=GPU_PLATFORMS)) | set(
        compatible_tags(GPU_PYTHON, "cp312", platforms=GPU_PLATFORMS)
    )


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: NormalizedName
    version: Version
    tags: frozenset[Tag]

    @classmethod
    def of(cls, path: Path) -> Wheel:
        name, version, _, tags = parse_wheel_filename(path.name)
        return cls(path, name, version, tags)

    def requirements(self) -> list[Requirement]:
        """Requires-Dist lines that apply on the GPU machine (no extras)."""
        with zipfile.ZipFile(self.path) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
            lines = zf.read(meta).decode().splitlines()
        reqs = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
        return [r for r in reqs if r.marker is None or r.marker.evaluate(GPU_MARKERS)]


def wheels_in(folder: Path) -> list[Wheel]:
    return sorted((Wheel.of(p) for p in Path(folder).glob("*.whl")), key=lambda w: w.name)


def _local_version(name: str) -> Version | None:
    try:
        return Version(importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
        return None


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | (env or {}))
    if result.returncode != 0:
        sys.exit(f"gpu_kit_deps: `{' '.join(cmd)}` failed:\n{result.stderr.strip()[-2000:]}")


def _pick(name: str, spec: SpecifierSet, have: dict[str, Wheel]) -> str:
    """A requirement string with one version where one is known: here's, then the kit's, else pip's newest."""
    for version in (_local_version(name), have[name].version if name in have else None):
        if version is not None and spec.contains(version, prereleases=True):
            return f"{name}=={version}"
    return f"{name}{spec}"


def _download(reqs: list[str], dest: Path) -> None:
    binary = [r for r in reqs if canonicalize_name(Requirement(r).name) not in FROM_SDIST]
    if binary:
        platforms = [a for p in GPU_PLATFORMS for a in ("--platform", p)]
        _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
             *platforms, "-d", str(dest), *binary)
    for req in sorted(set(reqs) - set(binary)):
        with tempfile.TemporaryDirectory() as src:
            _pip("download", "--no-deps", "--no-binary=:all:", "-d", src, req)
            sdist = next(Path(src).iterdir())
            _pip("wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-w", str(dest), str(sdist),
                 env=FROM_SDIST[canonicalize_name(Requirement(req).name)])


def fetch(kit: Path, roots: Iterable[str] = ROOTS) -> list[Wheel]:
    """Walk the requirement graph from `roots`, one breadth-first wave at a time; returns the kit."""
    kit.mkdir(parents=True, exist_ok=True)
    have = {w.name: w for w in wheels_in(kit)}
    chosen: dict[str, Wheel] = {}
    pending = [Requirement(r) for r in roots]
    while pending:
        wave: dict[str, SpecifierSet] = {}
        for req in pending:
            name = canonicalize_name(req.name)
            if name in GPU_PREINSTALLED and name not in SHADOW_PREINSTALLED:
                continue
            if name in chosen:
                if not req.specifier.contains(chosen[name].version, prereleases=True):
                    sys.exit(f"gpu_kit_deps: {name} {chosen[name].version} was chosen, but something needs "
                             f"{req}; pin a version of {name} in ROOTS that fits both")
                continue
            wave[name] = wave.get(name, SpecifierSet()) & req.specifier
        picks = {name: _pick(name, spec, have) for name, spec in wave.items()}
        missing = [r for name, r in picks.items() if name not in have or f"{name}=={have[name].version}" != r]
        if missing:
            with tempfile.TemporaryDirectory() as tmp:
                _download(missing, Path(tmp))
                for wheel in wheels_in(Path(tmp)):
                    if wheel.name in have:
                        have[wheel.name].path.unlink()
                    have[wheel.name] = Wheel.of(Path(shutil.move(str(wheel.path), kit / wheel.path.name)))
        pending = []
        for name in picks:
            chosen[name] = have[name]
            pending += have[name].requirements()
    for wheel in wheels_in(kit):
        if chosen.get(wheel.name) != wheel:
            wheel.path.unlink()  # stale: another version, or no longer needed
    return wheels_in(kit)


def check(kit: Path) -> list[str]:
    """What is wrong with the kit for the GPU machine, one line each (empty: ready)."""
    wheels = wheels_in(kit)
    problems, by_name = [], {}
    tags = gpu_tags()
    for wheel in wheels:
        if wheel.name in by_name:
            problems.append(f"two versions of {wheel.name}: {by_name[wheel.name].path.name}, {wheel.path.name}")
        by_name[wheel.name] = wheel
        if not wheel.tags & tags:
            problems.append(f"{wheel.path.name} does not install on CPython 3.12 manylinux x86-64")
    for wheel in wheels:
        for req in wheel.requirements():
            name = canonicalize_name(req.name)
            if name in GPU_PREINSTALLED and name not in by_name:
                continue
            if name not in by_name:
                problems.append(f"{wheel.name} needs {req}, which is neither in the kit nor on the GPU machine")
            elif not req.specifier.contains(by_name[name].version, prereleases=True):
                problems.append(f"{wheel.name} needs {req}, the kit has {by_name[name].version}")
    return problems


def check_installed(kit: Path) -> list[str]:
    """On the GPU machine: requirements of the kit that the preinstalled versions there do not meet."""
    problems = []
    for wheel in wheels_in(kit):
        for req in wheel.requirements():
            if canonicalize_name(req.name) not in GPU_PREINSTALLED - SHADOW_PREINSTALLED:
                continue
            version = _local_version(req.name)
            if version is None:
                problems.append(f"{wheel.name} needs {req}: not installed here")
            elif not req.specifier.contains(version, prereleases=True):
                problems.append(f"{wheel.name} needs {req}: {version} installed here")
    return problems


def preinstalled_needs(kit: Path) -> list[str]:
    """Names of the GPU machine's own packages that the kit's wheels require."""
    return sorted({canonicalize_name(r.name) for w in wheels_in(kit) for r in w.requirements()}
                  & (GPU_PREINSTALLED - SHADOW_PREINSTALLED))


def smoke(workdir: Path) -> None:
    """With the kit on PYTHONPATH: MLflow's sqlite store (SQLAlchemy + Alembic's migrations),
    phiscale's Hydra config as the session composes it, and FFCV's native library."""
    import ctypes
    import importlib.util

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/smoke.db")
    run = client.create_run(client.create_experiment("kit-smoke"), run_name="smoke")
    client.log_batch(run.info.run_id, metrics=[Metric("perf/images_per_s", 123.0, 0, 1)])
    client.set_terminated(run.info.run_id)
    assert client.get_metric_history(run.info.run_id, "perf/images_per_s")[0].value == 123.0
    print("smoke: mlflow", importlib.metadata.version("mlflow-skinny"), "logged to and read back a sqlite store")

    from phiscale.config import compose_config

    cfg = compose_config(["trainer=ddp", "trainer.devices=1", "data=imagefolder", "data.train_path=t.beton",
                          "data.val_path=v.beton", "data.num_classes=1000", "model=efficientnet_b0"])
    assert cfg.trainer.strategy == "ddp" and cfg.data.num_classes == 1000
    print("smoke: hydra", importlib.metadata.version("hydra-core"), "composed phiscale's train config")

    # `import ffcv` needs torch; the native library alone is what the Debian packages serve.
    package = importlib.util.find_spec("ffcv").submodule_search_locations[0]
    library = next(Path(package).glob("_libffcv*.so"))
    ctypes.CDLL(str(library))
    print(f"smoke: ffcv's {library.name} loaded with its libraries")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("fetch", "check", "installed", "preinstalled", "smoke"))
    parser.add_argument("path", type=Path, help="the wheel folder (.whl); for smoke, a scratch folder")
    args = parser.parse_args(argv)
    if args.command == "smoke":
        smoke(args.path)
        return 0
    if args.command == "preinstalled":
        print("\n".join(preinstalled_needs(args.path)))
        return 0
    if args.command == "fetch":
        for wheel in fetch(args.path):
            print(f"  {wheel.path.stat().st_size / 2**20:6.2f} MiB  {wheel.path.name}")
    problems = check_installed(args.path) if args.command == "installed" else check(args.path)
    for line in problems:
        print(f"gpu_kit_deps: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
