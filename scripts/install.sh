#!/usr/bin/env bash
# Install the whole autoloss stack into the current Python environment, in the order that works:
#   torch (pinned, CPU build unless a CUDA build is already installed) -> mmengine -> mmcv 2.1.0 with
#   compiled ops (a prebuilt wheel from ../shared/wheels or $AUTOLOSS_WHEELS when present, else built
#   from source) -> mmdet 3.3.0 -> autoloss itself (+ extras).
# Never installs torchvision (the PyPI build is CUDA-only and breaks mmengine's environment probe).
#
# Usage: scripts/install.sh [--dev] [--ray]
#   --dev  also install the test dependencies (pytest, ...)
#   --ray  also install Ray (the distributed executor)
# Environment: PYTHON (default python3), TORCH_VERSION (default 2.13.0), AUTOLOSS_WHEELS (extra wheel dir).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
torch_version="${TORCH_VERSION:-2.13.0}"
extras=()
for arg in "$@"; do
  case "$arg" in
    --dev) extras+=(dev) ;;
    --ray) extras+=(ray) ;;
    *) echo "install.sh: unknown option '$arg' (expected --dev or --ray)" >&2; exit 2 ;;
  esac
done

pip() { "$py" -m pip "$@"; }
say() { printf '\n==> %s\n' "$*"; }

# 1. torch: pin it first, so that nothing later resolves it by itself (an unpinned torch pulls GBs of CUDA).
installed_torch="$("$py" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
if [ "$installed_torch" = "$torch_version" ]; then
  say "torch $installed_torch already installed"
else
  say "installing torch==$torch_version"
  pip install "torch==$torch_version"
fi
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==$("$py" -c 'import torch; print(torch.__version__)')" >"$constraints"

# 2. build helpers mmcv needs (its setup.py imports pkg_resources, removed in setuptools 82).
say "installing build helpers"
pip install -c "$constraints" "setuptools>=64,<82" wheel ninja packaging

# 3. mmengine, then mmcv 2.1.0 with compiled ops.
say "installing mmengine"
pip install -c "$constraints" "mmengine>=0.10,<1"

if "$py" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
  say "mmcv 2.1.0 with ops already installed"
else
  find_links=()
  for dir in "${AUTOLOSS_WHEELS:-}" "$here/../shared/wheels"; do
    if [ -n "$dir" ] && ls "$dir"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then find_links+=(--find-links "$dir"); fi
  done
  if [ ${#find_links[@]} -gt 0 ]; then
    say "installing mmcv 2.1.0 from prebuilt wheel (${find_links[*]})"
    pip install -c "$constraints" --no-index "${find_links[@]}" mmcv==2.1.0 --no-deps
    pip install -c "$constraints" addict packaging Pillow pyyaml yapf
  else
    say "building mmcv 2.1.0 with ops from source (about 20 minutes on 2 cores)"
    MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" pip install -c "$constraints" --no-build-isolation mmcv==2.1.0
  fi
  "$py" -c 'import mmcv.ops' || { echo "install.sh: mmcv.ops failed to import" >&2; exit 1; }
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
