"""scripts/install.sh beside a CUDA torch: the torch constraint is what pip sees (the metadata version,
not ``torch.__version__`` with its ``+cu130`` label), and pip's resolver accepts it; the mmcv step says
that it compiles CUDA kernels and takes a prebuilt wheel file. Everything runs against stand-in
packages in a temporary folder: nothing is installed, nothing is downloaded (pip runs --no-index)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install.sh"
CONSTRAINT = ROOT / "scripts" / "torch_constraint.py"
OLD_CONSTRAINT = "import torch; print('torch==' + torch.__version__)"  # what install.sh used to write


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def fake_torch(site: Path, cuda_home: Path | None = None) -> Path:
    """A stand-in for PyPI's CUDA torch: metadata version 2.13.0, ``__version__`` 2.13.0+cu130."""
    write(site / "torch-2.13.0.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n")
    write(site / "torch-2.13.0.dist-info" / "RECORD", "")
    write(site / "torch" / "__init__.py", """\
        import os
        __version__ = "2.13.0+cu130"
        from . import version, utils
        class cuda:
            @staticmethod
            def is_available():
                return os.environ.get("FAKE_GPU") == "1"
        """)
    write(site / "torch" / "version.py", 'cuda = "13.0"\n')
    write(site / "torch" / "utils" / "__init__.py", "from . import cpp_extension\n")
    write(site / "torch" / "utils" / "cpp_extension.py", f"CUDA_HOME = {str(cuda_home) if cuda_home else None!r}\n")
    return site


def tiny_wheel(folder: Path) -> Path:
    """needs-torch 0.1: a pure wheel whose only requirement is torch>=2.1, as autoloss's."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "needs_torch-0.1-py3-none-any.whl"
    info = "needs_torch-0.1.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("needs_torch/__init__.py", "")
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: needs-torch\nVersion: 0.1\n"
                                           "Requires-Dist: torch>=2.1\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                        "Tag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def environment(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "AUTOLOSS_", "CUDA_", "FORCE_CUDA"))}
    env.update(PYTHONPATH=str(site), PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def pip_dry_run(site: Path, constraint: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """pip's resolver on needs-torch under ``constraint``, with the stand-in torch installed."""
    constraints = write(tmp_path / "constraints.txt", constraint + "\n")
    wheels = tiny_wheel(tmp_path / "wheels").parent
    return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links",
                           str(wheels), "-c", str(constraints), "needs-torch"],
                          env=environment(site), capture_output=True, text=True, timeout=120)


def test_constraint_is_the_metadata_version_and_pip_accepts_it(tmp_path):
    site = fake_torch(tmp_path / "site")
    env = environment(site)
    seen = subprocess.run([sys.executable, "-c", OLD_CONSTRAINT], env=env, capture_output=True, text=True)
    assert seen.stdout.strip() == "torch==2.13.0+cu130"  # the stand-in is the torch Python imports
    result = subprocess.run(["bash", str(INSTALL), "--print-constraint"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    constraint = result.stdout.strip()
    assert constraint == "torch==2.13.0"
    resolved = pip_dry_run(site, constraint, tmp_path)
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert f"Requirement already satisfied: torch>=2.1 in {site}" in resolved.stdout  # the stand-in, kept
    assert resolved.stdout.strip().splitlines()[-1] == "Would install needs-torch-0.1"


def test_the_old_constraint_is_rejected_by_pip(tmp_path):
    """The check above can fail: pip refuses torch==torch.__version__ of the same stand-in."""
    site = fake_torch(tmp_path / "site")
    old = subprocess.run([sys.executable, "-c", OLD_CONSTRAINT], env=environment(site), capture_output=True,
                         text=True).stdout.strip()
    resolved = pip_dry_run(site, old, tmp_path)
    assert resolved.returncode != 0
    assert "ResolutionImpossible" in resolved.stdout + resolved.stderr


def test_constraint_without_torch_is_one_clear_line(tmp_path):
    result = subprocess.run([sys.executable, "-S", str(CONSTRAINT)], env=environment(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == "torch_constraint.py: torch is not installed in this Python environment"


# ---------------------------------------------------------------------- the mmcv step, with pip recorded


def fake_stack(site: Path, mmcv_version: str, cuda_home: Path | None) -> Path:
    """The stand-in torch plus mmcv (ops compiled with CUDA 13.0), mmengine and mmdet, for the final check."""
    fake_torch(site, cuda_home)
    write(site / "mmcv" / "__init__.py", f"__version__ = {mmcv_version!r}\n")
    write(site / "mmcv" / "ops" / "__init__.py", "def get_compiling_cuda_version():\n    return '13.0'\n")
    write(site / "mmengine" / "__init__.py", "__version__ = '0.10.7'\n")
    write(site / "mmdet" / "__init__.py", "__version__ = '3.3.0'\n")
    return site


def run_install(tmp_path: Path, site: Path, **extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """install.sh, copied into a clone of its own (no ../shared/wheels beside it), with PYTHON a wrapper
    that records its pip calls instead of running them."""
    clone = tmp_path / "clone"
    for script in (INSTALL, CONSTRAINT):
        write(clone / "scripts" / script.name, script.read_text())
    log = tmp_path / "pip.log"
    log.touch()
    python = write(tmp_path / "python", f"""\
        #!/bin/sh
        if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then shift 2; echo "$*" >> {str(log)!r}; exit 0; fi
        exec {sys.executable!r} "$@"
        """)
    python.chmod(0o755)
    result = subprocess.run(["bash", str(clone / "scripts" / INSTALL.name)],
                            env=environment(site, PYTHON=str(python), **extra),
                            capture_output=True, text=True, timeout=60)
    return result, log.read_text().splitlines()


def fake_nvcc(cuda_home: Path, release: str) -> Path:
    nvcc = write(cuda_home / "bin" / "nvcc", f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    nvcc.chmod(0o755)
    return cuda_home


def test_prebuilt_mmcv_wheel_file_is_installed(tmp_path):
    site = fake_stack(tmp_path / "site", "2.1.0", None)
    wheel = write(tmp_path / "dl" / "mmcv-2.1.0-cp311-cp311-linux_x86_64.whl", "stand-in")
    result, pip_calls = run_install(tmp_path, site, AUTOLOSS_MMCV_WHEEL=str(wheel))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pinning torch==2.13.0 for every later step" in result.stdout
    (mmcv_call,) = [call for call in pip_calls if "mmcv-2.1.0" in call or "mmcv==" in call]
    assert mmcv_call.endswith(f"--no-deps --force-reinstall {wheel}")
    assert not any("torch==" in call for call in pip_calls)  # torch 2.13.0 is there: not installed again


@pytest.mark.parametrize("name", ["mmcv-2.2.0-cp311-cp311-linux_x86_64.whl", "mmcv.tar.gz"])
def test_wrong_mmcv_wheel_is_refused_before_installing(tmp_path, name):
    site = fake_stack(tmp_path / "site", "2.1.0", None)
    result, pip_calls = run_install(tmp_path, site, AUTOLOSS_MMCV_WHEEL=str(write(tmp_path / name, "x")))
    assert result.returncode == 2
    assert "AUTOLOSS_MMCV_WHEEL must name an mmcv 2.1.0 wheel file" in result.stderr
    assert pip_calls == []


def test_cuda_build_says_it_compiles_kernels(tmp_path):
    cuda_home = fake_nvcc(tmp_path / "cuda", "13.0")
    site = fake_stack(tmp_path / "site", "2.0.0", cuda_home)  # an mmcv to replace: the build branch runs
    result, pip_calls = run_install(tmp_path, site, FAKE_GPU="1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "CUDA kernels included: torch is a CUDA 13.0 build" in out
    assert f"compiling with {cuda_home}/bin/nvcc (CUDA 13.0)" in out
    assert "tens of minutes" in out and "AUTOLOSS_MMCV_WHEEL" in out
    assert any("--no-build-isolation mmcv==2.1.0" in call for call in pip_calls)


def test_cuda_build_without_nvcc_stops_with_the_way_out(tmp_path):
    site = fake_stack(tmp_path / "site", "2.0.0", None)
    result, pip_calls = run_install(tmp_path, site, FAKE_GPU="1")
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "torch is a CUDA 13.0 build" in message and "no nvcc was found" in message
    assert "CUDA_HOME" in message and "AUTOLOSS_MMCV_WHEEL" in message
    assert not any("mmcv==" in call or ".whl" in call for call in pip_calls)
