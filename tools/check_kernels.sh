#!/usr/bin/env bash
# Every CUDA kernel source must compile for Hopper (sm_90) even on machines without a GPU.
set -euo pipefail
shopt -s nullglob
files=(gpu/mrtherm_gpu/kernels/*.cu)
if [ ${#files[@]} -eq 0 ]; then
    echo "kernels: no .cu files"
    exit 0
fi
if ! command -v nvcc >/dev/null; then
    echo "kernels: nvcc not found; skipping the compile check of ${#files[@]} .cu files"
    exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for f in "${files[@]}"; do
    nvcc -arch=sm_90 --cubin -o "$out/$(basename "$f" .cu).cubin" "$f"
done
echo "kernels: ${#files[@]} .cu files compile with nvcc -arch=sm_90 --cubin"
