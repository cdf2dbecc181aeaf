"""Registers per thread and theoretical occupancy of every CUDA kernel (ptxas, no GPU needed).

Compiles each ``.cu`` source with ``nvcc -arch=sm_90 --cubin -Xptxas -v`` and prints, per kernel, the registers,
spill bytes and the resident warps per SM that the register count allows at the launch's block size (sm_90:
65,536 registers and 64 warps per SM, registers allocated per warp in units of 256). Measured occupancy needs a
GPU; this is the ceiling the registers set. Prints a table; asserts nothing.

    python benchmarks/kernel_registers.py [--block 256]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join(HERE, "..", "gpu", "mrtherm_gpu", "kernels")
REGS_PER_SM, MAX_WARPS, MAX_BLOCKS, ALLOC_UNIT = 65536, 64, 32, 256


def ptxas_report(source):
    """{kernel: (registers, spill stores + loads in bytes)} from ptxas -v for one source."""
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run(["nvcc", "-arch=sm_90", "--cubin", "-Xptxas", "-v", "-o", os.path.join(tmp, "k.cubin"),
                              source], capture_output=True, text=True, check=True)
    out, name = {}, None
    spill = 0
    for line in run.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            spill = int(m.group(1)) + int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            out[name] = (int(m.group(1)), spill)
            name, spill = None, 0
    return out


def resident_warps(registers, block):
    """Warps per SM that ``registers`` per thread allow for blocks of ``block`` threads (sm_90)."""
    warps_per_block = -(-block // 32)
    per_warp = -(-registers * 32 // ALLOC_UNIT) * ALLOC_UNIT
    blocks = min(REGS_PER_SM // (per_warp * warps_per_block), MAX_WARPS // warps_per_block, MAX_BLOCKS)
    return blocks * warps_per_block


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--block", type=int, default=256)
    args = ap.parse_args()
    print(f"{'kernel':28s} {'registers':>9s} {'spill B':>8s} {'warps/SM':>9s} {'occupancy':>10s}  (block {args.block})")
    for source in sorted(glob.glob(os.path.join(KERNELS, "*.cu"))):
        for name, (regs, spill) in sorted(ptxas_report(source).items()):
            warps = resident_warps(regs, args.block)
            print(f"{name:28s} {regs:9d} {spill:8d} {warps:9d} {warps / MAX_WARPS:10.1%}")


if __name__ == "__main__":
    main()
