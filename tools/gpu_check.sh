#!/usr/bin/env bash
# `make gpu-check`: the GPU tests and GPU benchmarks in one call, for a machine with a CUDA GPU.
# Uses .venv when it exists, else the machine's python3 plus the wheels in .whl/ (tools/gpu_wheels.sh).
# Writes gpu_check_<device>.txt (and the benchmarks' JSON/text) to $GPU_CHECK_OUT, else $OUT, else
# benchmarks/results. Each step has its own time limit so a slow benchmark never hides the test result.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${GPU_CHECK_OUT:-${OUT:-benchmarks/results}}
mkdir -p "$OUTDIR"
PY=python3
[ -x .venv/bin/python ] && .venv/bin/python -c "import mrtherm" 2>/dev/null && PY=.venv/bin/python
if [ -d .whl ] && [ "$PY" = python3 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mrtherm_site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/mrtherm_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
LOG=$(mktemp)
say() { echo "$*" | tee -a "$LOG"; }
device=$("$PY" -c "import cupy as cp; p = cp.cuda.runtime.getDeviceProperties(0); n = p['name']; \
print(n.decode() if isinstance(n, bytes) else n)" 2>/dev/null || echo "no usable GPU")
if [ "$device" = "no usable GPU" ]; then
  echo "make gpu-check: no usable GPU here (CuPy finds no CUDA device); nothing run"
  exit 0
fi
tag=$(echo "$device" | tr ' /' '__')
rev=$(git rev-parse --short HEAD 2>/dev/null || cat .whl/REV 2>/dev/null || echo unknown)
say "mrtherm gpu-check, $(date -u +%Y-%m-%dT%H:%MZ), revision $rev"
say "device: $device; $(nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
say "python: $("$PY" -c 'import sys, numpy, cupy; print(sys.version.split()[0], "numpy", numpy.__version__, "cupy", cupy.__version__, "CUDA runtime", cupy.cuda.runtime.runtimeGetVersion())' 2>&1 | tail -1)"

step() {  # step SECONDS NAME COMMAND...: run, keep the last lines, record the exit status
  local limit=$1 name=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
  local rc=$?
  say "== $name: exit $rc after $((SECONDS - t0)) s$([ $rc = 124 ] && echo " (stopped at its ${limit} s limit)")"
  tail -n "${TAIL:-25}" "$OUTDIR/$name.log" | tee -a "$LOG"
}
step "${TESTS_S:-240}" tests "$PY" -m pytest -q -p no:cacheprovider -p no:xvfb -p no:warnings tests/gpu tests/test_backend.py -ra
TAIL=12 step "${BENCH_S:-200}" bench_gpu "$PY" benchmarks/bench_gpu.py --out "$OUTDIR" ${GPU_CHECK_SMALL:+--small} \
  $([ -n "${GPU_CHECK_FILES:-}" ] || echo --skip-files)
TAIL=8 step "${WINDOW_S:-120}" bench_window "$PY" benchmarks/bench_window.py --out "$OUTDIR" ${GPU_CHECK_SMALL:+--numpy-foci 8 --grid 8 --elements 64}
TAIL=10 step "${MODES_S:-90}" bench_modes "$PY" benchmarks/bench_modes.py --json "$OUTDIR/modes_$tag.json" \
  $([ -n "${GPU_CHECK_SMALL:-}" ] && echo --size 64x64x4 --frames 16)
TAIL=6 step "${LIVE_S:-90}" bench_live "$PY" benchmarks/bench_live.py --backend cupy --frames 15 \
  --json "$OUTDIR/live_$tag.json" $([ -n "${GPU_CHECK_SMALL:-}" ] && echo --sizes 64x64x4)
TAIL=3 step "${WATERFAT_S:-120}" bench_waterfat "$PY" benchmarks/bench_waterfat.py --speed-only --backend cupy \
  --json "$OUTDIR/waterfat_$tag.json"
command -v nvcc >/dev/null && TAIL=12 step 30 kernel_registers "$PY" benchmarks/kernel_registers.py
cp "$LOG" "$OUTDIR/gpu_check_$tag.txt"
cp "$LOG" "$OUTDIR/gpu_$tag.txt"  # the name issue 30 asks for; gpu_check_<device>.txt kept for earlier results
rm -f "$LOG"
