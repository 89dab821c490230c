#!/usr/bin/env bash
# Install the whole autoloss stack into the current Python environment, in the order that works:
#   torch (pinned, CPU build unless a CUDA build is already installed) -> mmengine -> mmcv 2.1.0 with
#   compiled ops (a prebuilt wheel when one is given or found, else built from source) -> mmdet 3.3.0
#   -> autoloss itself (+ extras).
# Never installs torchvision (the PyPI build is CUDA-only and breaks mmengine's environment probe).
#
# Every pip call after torch runs under the constraint torch==<the installed torch's metadata version>
# (scripts/torch_constraint.py; not torch.__version__, whose +cu130 label pip cannot match).
#
# mmcv 2.1.0 has no wheel on PyPI. Built from source against a CUDA torch with a GPU visible (or
# FORCE_CUDA=1), it compiles its CUDA kernels: that needs nvcc of the CUDA version torch was built
# with (found through CUDA_HOME, else nvcc on PATH, else /usr/local/cuda) and takes tens of minutes.
# A prebuilt wheel for your Python/torch/CUDA triple skips the build.
#
# Usage: scripts/install.sh [--dev] [--ray] [--print-constraint]
#   --dev               also install the test dependencies (pytest, ...)
#   --ray               also install Ray (the distributed executor)
#   --print-constraint  print the torch constraint the install would use, install nothing
# Environment:
#   PYTHON               the interpreter to install into (default python3)
#   TORCH_VERSION        the torch to install when none is (default 2.13.0)
#   AUTOLOSS_MMCV_WHEEL  a prebuilt mmcv wheel file (mmcv-2.1.0-...whl) to install instead of building
#   AUTOLOSS_WHEELS      a folder holding such a wheel (../shared/wheels is looked in as well)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
torch_version="${TORCH_VERSION:-2.13.0}"
extras=()
print_constraint=0
for arg in "$@"; do
  case "$arg" in
    --dev) extras+=(dev) ;;
    --ray) extras+=(ray) ;;
    --print-constraint) print_constraint=1 ;;
    *) echo "install.sh: unknown option '$arg' (expected --dev, --ray or --print-constraint)" >&2; exit 2 ;;
  esac
done

pip() { "$py" -m pip "$@"; }
say() { printf '\n==> %s\n' "$*"; }
torch_constraint() { "$py" "$here/scripts/torch_constraint.py"; }

if [ "$print_constraint" = 1 ]; then
  torch_constraint
  exit
fi

mmcv_wheel="${AUTOLOSS_MMCV_WHEEL:-}"
if [ -n "$mmcv_wheel" ]; then
  case "$(basename "$mmcv_wheel")" in
    mmcv-2.1.0-*.whl) ;;
    *) echo "install.sh: AUTOLOSS_MMCV_WHEEL must name an mmcv 2.1.0 wheel file (mmcv-2.1.0-...whl), got '$mmcv_wheel'" >&2
       exit 2 ;;
  esac
  [ -f "$mmcv_wheel" ] || { echo "install.sh: AUTOLOSS_MMCV_WHEEL: no such file: $mmcv_wheel" >&2; exit 2; }
fi

# 1. torch: pin it first, so that nothing later resolves it by itself (an unpinned torch pulls GBs of CUDA).
installed_torch="$("$py" -c 'from importlib import metadata; print(metadata.version("torch").split("+")[0])' \
  2>/dev/null || true)"
if [ "$installed_torch" = "$torch_version" ]; then
  say "torch $installed_torch already installed"
else
  say "installing torch==$torch_version"
  pip install "torch==$torch_version"
fi
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
torch_constraint >"$constraints"
say "pinning $(cat "$constraints") for every later step"

# 2. build helpers mmcv needs (its setup.py imports pkg_resources, removed in setuptools 82).
say "installing build helpers"
pip install -c "$constraints" "setuptools>=64,<82" wheel ninja packaging

# 3. mmengine, then mmcv 2.1.0 with compiled ops.
say "installing mmengine"
pip install -c "$constraints" "mmengine>=0.10,<1"

# torch's CUDA version ("" for a CPU build), and whether a GPU is visible
torch_cuda="$("$py" -c 'import torch; print(torch.version.cuda or "")')"
torch_gpu="$("$py" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)"
mmcv_deps=(addict packaging Pillow pyyaml yapf)

if [ -z "$mmcv_wheel" ] && "$py" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
  say "mmcv 2.1.0 with ops already installed"
else
  find_links=()
  for dir in "${AUTOLOSS_WHEELS:-}" "$here/../shared/wheels"; do
    if [ -n "$dir" ] && ls "$dir"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then find_links+=(--find-links "$dir"); fi
  done
  if [ -n "$mmcv_wheel" ]; then
    say "installing mmcv 2.1.0 from the prebuilt wheel $mmcv_wheel (AUTOLOSS_MMCV_WHEEL)"
    pip install -c "$constraints" --no-deps --force-reinstall "$mmcv_wheel"
    pip install -c "$constraints" "${mmcv_deps[@]}"
  elif [ ${#find_links[@]} -gt 0 ]; then
    say "installing mmcv 2.1.0 from prebuilt wheel (${find_links[*]})"
    pip install -c "$constraints" --no-index "${find_links[@]}" mmcv==2.1.0 --no-deps
    pip install -c "$constraints" "${mmcv_deps[@]}"
  elif [ -n "$torch_cuda" ] && { [ "$torch_gpu" = 1 ] || [ "${FORCE_CUDA:-0}" = 1 ]; }; then
    cuda_home="$("$py" -c 'from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or "")' 2>/dev/null)"
    nvcc="${cuda_home:+$cuda_home/bin/nvcc}"
    if [ -z "$nvcc" ] || [ ! -x "$nvcc" ]; then
      echo "install.sh: torch is a CUDA $torch_cuda build, so mmcv's ops must be compiled with CUDA, but no nvcc" \
           "was found: install the CUDA $torch_cuda toolkit and set CUDA_HOME, or set AUTOLOSS_MMCV_WHEEL to a" \
           "prebuilt mmcv 2.1.0 wheel for your torch/CUDA pair (AUTOLOSS_WHEELS: a folder holding one)" >&2
      exit 1
    fi
    nvcc_release="$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
    say "building mmcv 2.1.0 with ops from source, CUDA kernels included: torch is a CUDA $torch_cuda build," \
        "compiling with $nvcc (CUDA $nvcc_release). This takes tens of minutes even on many cores; to skip it," \
        "set AUTOLOSS_MMCV_WHEEL to a prebuilt mmcv 2.1.0 wheel for this torch/CUDA pair"
    if [ "${nvcc_release%.*}" != "${torch_cuda%.*}" ]; then
      echo "install.sh: warning: nvcc is CUDA $nvcc_release, torch was built with CUDA $torch_cuda:" \
           "torch refuses a different major version; set CUDA_HOME to a CUDA $torch_cuda toolkit" >&2
    fi
    MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" pip install -c "$constraints" --no-build-isolation mmcv==2.1.0
  else
    if [ -n "$torch_cuda" ]; then
      say "torch is a CUDA $torch_cuda build but no GPU is visible: mmcv's ops are built for the CPU only" \
          "(FORCE_CUDA=1 compiles the CUDA kernels too, with nvcc of CUDA $torch_cuda, tens of minutes)"
    fi
    say "building mmcv 2.1.0 with ops from source (about 20 minutes on 2 cores)"
    MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" pip install -c "$constraints" --no-build-isolation mmcv==2.1.0
  fi
  "$py" -c 'import mmcv.ops' || {
    echo "install.sh: mmcv.ops failed to import (a prebuilt mmcv wheel must be built for this Python, torch" \
         "$(cat "$constraints") and CUDA ${torch_cuda:-none})" >&2
    exit 1
  }
fi
if [ -n "$torch_cuda" ] && [ "$("$py" -c 'from mmcv.ops import get_compiling_cuda_version as v; print(v())')" = "not available" ]; then
  echo "install.sh: warning: mmcv's ops were compiled without CUDA although torch is a CUDA build:" \
       "detectors on the GPU fail in mmcv's CUDA ops (RoIAlign, nms); install an mmcv wheel built with CUDA" \
       "$torch_cuda (AUTOLOSS_MMCV_WHEEL) or rebuild it where a GPU is visible (or with FORCE_CUDA=1)" >&2
fi

# 4. mmdet and autoloss (the package declares numpy, sympy, deap, rich, matplotlib, ...).
say "installing mmdet 3.3.0 and autoloss"
spec="$here"
if [ ${#extras[@]} -gt 0 ]; then spec="$here[$(IFS=,; echo "${extras[*]}")]"; fi
pip install -c "$constraints" "mmdet==3.3.0" "$spec"

say "checking the stack"
"$py" - <<'PY'
import torch, mmcv, mmcv.ops, mmengine, mmdet, deap, sympy
print(f"torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, "
      f"mmdet {mmdet.__version__}, deap {deap.__version__}, sympy {sympy.__version__}")
PY
