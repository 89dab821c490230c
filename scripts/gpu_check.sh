#!/usr/bin/env bash
# The CUDA path, checked in one command of at most 10 minutes on one GPU (issue 26):
#
#   bash scripts/gpu_check.sh [OUT_DIR]        (default OUT_DIR: runs/gpu-check-<date>-<time>)
#
# 1. `autoloss doctor` (the stack, and one step of every GPU code path on the CPU and on each GPU);
# 2. stops here with exit 2 and one line when torch sees no GPU;
# 3. step times: faster_rcnn_small, fcos_small and a darts2 step, on the GPU and on the CPU in the same
#    run (`autoloss doctor --steps 10 --json`), written to OUT_DIR/step_times.json;
# 4. three tiny seeded searches, each SIGKILLed (with its workers) once partway, once it has stored its
#    first verdict, then resumed with --resume, which must finish (exit 0) with every verdict stored
#    before the kill still there: `--detector fcos_small --demo` (workers: one per GPU, the default),
#    `--tracker dimp_small --demo`, and `--tracker dimp_small --demo --strategy darts2 --epochs 2`;
#    per stage: its times and the GPUs whose memory it used (nvidia-smi, sampled every second);
# 5. the "GPU check" section for docs/benchmarks.md, printed and written to OUT_DIR/gpu_check.md.
#
# Exit codes: 0 everything passed; 1 a check or a stage failed (doctor, a search, a resume); 2 torch
# sees no GPU (nothing after doctor ran); 124 the 10-minute limit (AUTOLOSS_GPU_CHECK_LIMIT seconds)
# was reached. Runs the repository's autoloss with $PYTHON (default python3). Writes only below OUT_DIR,
# which must not exist or be empty.
set -u
cd "$(dirname "$0")/.." || exit 1
PYTHON="${PYTHON:-python3}"
LIMIT="${AUTOLOSS_GPU_CHECK_LIMIT:-600}"

if [ -z "${AUTOLOSS_GPU_CHECK_INNER:-}" ]; then
  # the hard limit around everything (its process group, and the searches' own groups through the trap)
  AUTOLOSS_GPU_CHECK_INNER=1 timeout --kill-after=15 "$LIMIT" bash "$0" "$@"
  code=$?
  if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
    echo "gpu_check: FAILED: over the limit of $LIMIT seconds, stopped" >&2
    exit 124
  fi
  exit "$code"
fi

autoloss() { "$PYTHON" -m autoloss.cli "$@"; }
now() { date +%s.%N; }
since() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
say() { echo "gpu_check: $*"; }

GROUP=""      # the process group of the search running in the background
SAMPLER=""    # the nvidia-smi sampler's pid
cleanup() {
  [ -n "$GROUP" ] && kill -9 -- "-$GROUP" 2>/dev/null
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
}
trap 'cleanup; exit 124' TERM
trap cleanup EXIT

# ------------------------------------------------------------------------------------------ 1. doctor
echo "\$ autoloss doctor"
start=$(now)
autoloss doctor
code=$?
DOCTOR_SECONDS=$(since "$start")
if [ "$code" -ne 0 ]; then
  say "FAILED: autoloss doctor exited $code (its FAIL rows above say what to fix); the GPU stages were not run"
  exit 1
fi

# ------------------------------------------------------------------------------------ 2. is there a GPU
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() and torch.cuda.device_count() > 0 else 3)' 2>/dev/null; then
  if [ "${AUTOLOSS_GPU_CHECK_ON_CPU:-}" != 1 ]; then  # 1: run the stages on the CPU (to try this script)
    say "no GPU: torch sees no CUDA device, so the GPU stages cannot run (doctor's gpus row above says why)"
    exit 2
  fi
  say "no GPU, but AUTOLOSS_GPU_CHECK_ON_CPU=1: the stages run on the CPU"
fi
GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')

OUT="${1:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}"
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  say "FAILED: $OUT exists and is not empty: choose another OUT_DIR (nothing is overwritten)"
  exit 1
fi
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
say "$GPUS GPU(s) visible; writing below $OUT"
STAGES="$OUT/stages.tsv"   # stage, status, device, seconds, detail
: > "$STAGES"
FAILED=0

record() {  # stage status device seconds detail
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$STAGES"
  say "stage $1: $2 on $3 in $4 s; $5"
  [ "$2" = ok ] || FAILED=1
}

sample_gpus() {  # every second: index, memory.used (MiB) of each GPU, into $1
  while :; do
    nvidia-smi --query-gpu=index,memory.used,name --format=csv,noheader,nounits >> "$1" 2>/dev/null || return 0
    sleep 1
  done
}

gpu_use() {  # the GPUs whose memory rose above what they held before the stage ($1: idle file, $2: samples)
  "$PYTHON" - "$1" "$2" <<'EOF'
import sys
def read(path):
    rows = {}
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return rows
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[1].isdigit():
            rows.setdefault(parts[0], (parts[2], []))[1].append(int(parts[1]))
    return rows
idle, busy = read(sys.argv[1]), read(sys.argv[2])
if not busy:
    print("GPU use unknown (no nvidia-smi)")
else:
    used = [f"GPU {i} ({name}): peak {max(m)} MiB" for i, (name, m) in sorted(busy.items())
            if max(m) > max(idle.get(i, ("", [0]))[1] or [0]) + 64]
    print("; ".join(used) if used else "no GPU memory used above idle: it ran on the CPU")
EOF
}

verdicts() {  # the number of verdicts stored in run store $1 (0 before it exists)
  "$PYTHON" - "$1" <<'EOF'
import sqlite3, sys
from pathlib import Path
path = Path(sys.argv[1])
if not path.is_file():
    print(0)
else:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            print(db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])
    except sqlite3.Error:
        print(0)
EOF
}

# A search SIGKILLed (its whole process group: the workers too) once it stored its first verdict, then resumed.
killed_and_resumed() {  # stage out_dir search-args...
  local stage=$1 run=$2; shift 2
  local log="$OUT/$stage.log" idle="$OUT/$stage.idle.csv" samples="$OUT/$stage.gpu.csv"
  nvidia-smi --query-gpu=index,memory.used,name --format=csv,noheader,nounits > "$idle" 2>/dev/null
  sample_gpus "$samples" & SAMPLER=$!
  echo "\$ autoloss search $* --out $run" | tee "$log"
  local start; start=$(now)
  setsid "$PYTHON" -m autoloss.cli search "$@" --out "$run" >> "$log" 2>&1 &
  GROUP=$!
  local count=0
  while kill -0 "$GROUP" 2>/dev/null; do
    count=$(verdicts "$run/run.sqlite")
    [ "$count" -ge 1 ] && break
    sleep 0.5
  done
  local killed=no
  if kill -0 "$GROUP" 2>/dev/null; then
    kill -9 -- "-$GROUP" 2>/dev/null
    killed=yes
  fi
  wait "$GROUP" 2>/dev/null; local first=$?
  GROUP=""
  local before; before=$(verdicts "$run/run.sqlite")
  local until_kill; until_kill=$(since "$start")
  echo "--- SIGKILLed after $until_kill s with $before verdict(s) stored (killed: $killed, exit $first); resuming" >> "$log"
  local resumed; resumed=$(now)
  "$PYTHON" -m autoloss.cli search "$@" --out "$run" --resume >> "$log" 2>&1
  local code=$?
  local after; after=$(verdicts "$run/run.sqlite")
  local resume_seconds; resume_seconds=$(since "$resumed")
  kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; SAMPLER=""
  local device; device=$(gpu_use "$idle" "$samples")
  local detail="killed after $until_kill s with $before verdict(s), resumed in $resume_seconds s to $after verdict(s); log $log"
  if [ "$killed" != yes ]; then
    record "$stage" "FAILED (it finished before the kill, exit $first: nothing was resumed)" "$device" "$(since "$start")" "$detail"
  elif [ "$code" -ne 0 ]; then
    record "$stage" "FAILED (the resumed search exited $code; its last lines: $(tail -n 3 "$log" | tr '\n' ' '))" \
      "$device" "$(since "$start")" "$detail"
  elif [ "$after" -lt "$before" ]; then
    record "$stage" "FAILED (verdicts lost: $before before the kill, $after after the resume)" "$device" "$(since "$start")" "$detail"
  else
    record "$stage" ok "$device" "$(since "$start")" "$detail"
  fi
}

# ------------------------------------------------------------------------------------ 3. step times
echo "\$ autoloss doctor --device all --only faster_rcnn_small --only fcos_small --only darts2 --steps 10 --json"
start=$(now)
autoloss doctor --device all --only faster_rcnn_small --only fcos_small --only darts2 --steps 10 --json \
  > "$OUT/step_times.json.tmp" && mv "$OUT/step_times.json.tmp" "$OUT/step_times.json"
code=$?
if [ "$code" -eq 0 ]; then
  record step-times ok "cpu and every GPU" "$(since "$start")" "$OUT/step_times.json"
else
  record step-times "FAILED (exit $code)" "cpu and every GPU" "$(since "$start")" "$OUT/step_times.json.tmp"
fi

# ------------------------------------------------------------------------------------ 4. the searches
TRACKER_OPTIONS=()
for option in baseline_steps=100 steps=30 pool=8 weights_sequences=8 holdout_sequences=4 verify_sequences=4 \
              test_sequences=4 sequence_frames=20 mos_steps=10 mos_sequences=2; do
  TRACKER_OPTIONS+=(--tracker-option "$option")
done

killed_and_resumed detector "$OUT/fcos_small" --detector fcos_small --demo --seed 0 \
  --population 4 --generations 1 --top-k 2 --parents 2 --max-mos 2 --proxy-iters 30 --mos-iters 10 \
  --mos-timeout 120 --proxy-timeout 180
killed_and_resumed tracker "$OUT/dimp_small" --tracker dimp_small --demo --seed 0 \
  --population 4 --generations 1 --top-k 2 --parents 2 "${TRACKER_OPTIONS[@]}"
killed_and_resumed darts2 "$OUT/dimp_small-darts2" --tracker dimp_small --demo --seed 0 --strategy darts2 \
  --epochs 2 --seeds 1 --steps-per-epoch 5 --holdout-batches 2 "${TRACKER_OPTIONS[@]}"

# ------------------------------------------------------------------------------ 5. the benchmarks section
"$PYTHON" - "$OUT" "$DOCTOR_SECONDS" <<'EOF'
import json, os, platform, sys
from pathlib import Path

out, doctor_seconds = Path(sys.argv[1]), sys.argv[2]
try:
    rows = json.loads((out / "step_times.json").read_text())["rows"]
except (OSError, ValueError, KeyError):
    rows = []
stack = {r["name"]: r["detail"] for r in rows if r["section"] == "stack"}
checks = [r for r in rows if r["section"] == "check" and r["status"] == "ok" and r["steps"]]
devices = sorted({r["device"] for r in checks}, key=lambda d: (d != "cpu", d))
gpus = {r["device"]: r["detail"].split(",")[0] for r in rows if r["section"] == "stack" and r["device"]}
labels = list(dict.fromkeys(r["name"] for r in checks))
times = {(r["name"], r["device"]): r["step_seconds"] for r in checks}
lines = ["## GPU check", "",
         f"`bash scripts/gpu_check.sh` on {', '.join(gpus.values()) or 'no GPU'} ({platform.node()}, "
         f"{os.cpu_count()} CPU cores); torch {stack.get('torch', '?')}; mmcv {stack.get('mmcv', '?')}. "
         "Median of 10 training steps after one warm-up step (`autoloss doctor --steps 10`), on the GPU and "
         "on the CPU in the same run; the detectors on batches of 2 synthetic 128 px images, darts2 at the "
         "`dimp_small` demo's sizes.", ""]
if labels:
    head = ["step"] + [f"{d} ({gpus[d]})" if d in gpus else d for d in devices]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label in labels:
        cpu = times.get((label, "cpu"))
        cells = []
        for d in devices:
            t = times.get((label, d))
            cells.append("failed" if t is None else f"{t * 1000:.0f} ms"
                         + (f" ({cpu / t:.1f}x)" if d != "cpu" and cpu and t else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
else:
    lines.append("(no step times: the step-times stage failed)")
lines += ["", "| stage | result | device | seconds |", "| --- | --- | --- | --- |",
          f"| autoloss doctor | ok | cpu and every GPU | {doctor_seconds} |"]
for line in (out / "stages.tsv").read_text().splitlines():
    stage, status, device, seconds, detail = line.split("\t")
    note = detail.split("; log")[0]
    lines.append(f"| {stage} | {status}{': ' + note if stage != 'step-times' else ''} | {device} | {seconds} |")
text = "\n".join(lines) + "\n"
temporary = out / "gpu_check.md.tmp"
temporary.write_text(text)
temporary.replace(out / "gpu_check.md")
print()
print(text, end="")
EOF

if [ "$FAILED" -ne 0 ]; then
  say "FAILED: see the stages above (logs in $OUT)"
  exit 1
fi
say "passed: every stage finished, resumed after its SIGKILL (section above: $OUT/gpu_check.md)"
exit 0
