"""benchmarks/gpu_kit.sh fills .whl/ and .debs/ with what the lent GPU machine lacks (it downloads
from PyPI and Debian on first use; later runs keep what is there), and the kit installs for CPython
3.12 on manylinux x86-64, one version of each package, within 60 MiB."""

from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support import background

ROOT = Path(__file__).resolve().parents[2]
KIT_SCRIPT = ROOT / "benchmarks" / "gpu_kit.sh"
WHEELS, DEBS = ROOT / ".whl", ROOT / ".debs"
LIMIT = 60 * 2**20
# What phiscale's GPU session imports that the GPU machine lacks, and what DeepSpeed and Hydra need.
NAMED_WHEELS = ("mlflow-skinny", "sqlalchemy", "alembic", "hydra-core", "omegaconf", "antlr4-python3-runtime",
                "deepspeed", "hjson", "pydantic", "pydantic-core")
NAMED_DEBS = ("libturbojpeg0", "libturbojpeg0-dev", "libopencv-core406", "libopencv-core-dev",
              "libopencv-imgproc406", "libopencv-imgproc-dev")

pytestmark = [pytest.mark.slow, pytest.mark.background("gpu-kit")]


def load_deps_module():
    """benchmarks/gpu_kit_deps.py (its dataclass needs the module registered while it loads)."""
    if "gpu_kit_deps" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_kit_deps", ROOT / "benchmarks" / "gpu_kit_deps.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_kit_deps"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_kit_deps"]


def run_kit(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(KIT_SCRIPT), *args], capture_output=True, text=True, timeout=1200,
                          env=os.environ | {"PYTHON": sys.executable} | env)


def python312() -> str | None:
    """A CPython 3.12 with headers, as gpu_kit.sh --rehearse looks for one."""
    candidates = ["python3.12", *glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12"))]
    probe = "import sys, sysconfig, os; assert sys.version_info[:2] == (3, 12); " \
            "assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))"
    for candidate in candidates:
        try:
            if subprocess.run([candidate, "-c", probe], capture_output=True).returncode == 0:
                return candidate
        except OSError:
            continue
    return None


@background.job("gpu-kit")
def fill_the_kit(_dir) -> tuple[list[str], dict[str, str]]:
    """gpu_kit.sh fills .whl/ and .debs/ (downloads, on a fresh clone): started with the session, while
    the other tests run (support/background.py)."""
    return ["bash", str(KIT_SCRIPT)], {"PYTHON": sys.executable}


@pytest.fixture(scope="module")
def kit(request):
    return background.succeeded(request.config, "gpu-kit")


def test_kit_holds_the_named_packages_once_each_within_the_limit(kit):
    deps = load_deps_module()
    wheels = deps.wheels_in(WHEELS)
    names = [w.name for w in wheels]
    assert len(names) == len(set(names)), f"a package has two versions: {sorted(names)}"
    missing = sorted(set(NAMED_WHEELS) - set(names))
    assert not missing, f"the kit lacks {missing}"
    assert not set(names) & (deps.GPU_PREINSTALLED - deps.SHADOW_PREINSTALLED), "the kit carries what the GPU has"

    deb_names = [p.name.split("_")[0] for p in DEBS.glob("*.deb")]
    assert len(deb_names) == len(set(deb_names)), f"a Debian package has two versions: {sorted(deb_names)}"
    assert not sorted(set(NAMED_DEBS) - set(deb_names)), f"the kit lacks {sorted(set(NAMED_DEBS) - set(deb_names))}"
    assert (DEBS / "ffcv-1.0.2.tar.gz").is_file()

    total = sum(p.stat().st_size for folder in (WHEELS, DEBS) for p in folder.rglob("*") if p.is_file())
    assert total < LIMIT, f"the kit is {total / 2**20:.1f} MiB"
    assert f"total {-(-total // 2**20)} MiB" in kit.stdout, kit.stdout[-2000:]


def test_every_wheel_installs_on_cpython_312_manylinux(tmp_path, kit):
    deps = load_deps_module()
    assert deps.check(WHEELS) == [], "the kit's requirements are not closed over the GPU machine's packages"
    tags = deps.gpu_tags()
    for wheel in deps.wheels_in(WHEELS):
        assert wheel.tags & tags, f"{wheel.path.name} has no CPython 3.12 manylinux x86-64 tag"
    # pip itself, asked to install every wheel for that interpreter and platform, with no index.
    platforms = [a for p in deps.GPU_PLATFORMS for a in ("--platform", p)]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", *platforms, "--target", str(tmp_path / "site"),
         *map(str, sorted(WHEELS.glob("*.whl")))], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "mlflow").is_dir() and (tmp_path / "site" / "deepspeed").is_dir()


def test_deepspeed_wheel_carries_no_compiled_ops(kit):
    deps = load_deps_module()
    (wheel,) = [w for w in deps.wheels_in(WHEELS) if w.name == "deepspeed"]
    with zipfile.ZipFile(wheel.path) as zf:
        assert not [n for n in zf.namelist() if n.endswith(".so")]
        info = zf.read("deepspeed/git_version_info_installed.py").decode()
    assert "True" not in info.split("installed_ops=")[1].split("\n")[0], info


def test_kit_over_the_limit_is_refused_in_one_line(kit):
    result = run_kit(KIT_LIMIT_MIB="1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        next(line for line in result.stderr.splitlines() if "over the 1 MiB limit" in line)
    ], result.stderr


@pytest.mark.skipif(python312() is None, reason="no CPython 3.12 with headers on this machine")
def test_rehearsal_installs_the_kit_into_python_312_and_builds_ffcv(kit):
    result = run_kit("--rehearse", PYTHON312=python312())
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    for line in ("logged to and read back a sqlite store", "composed phiscale's train config",
                 "_libffcv.cpython-312-x86_64-linux-gnu.so loaded", "rehearsal passed"):
        assert line in result.stdout, result.stdout[-3000:]
    assert list(DEBS.glob("ffcv-1.0.2-cp312-cp312-*.whl")), "no fallback ffcv wheel built"
