#!/usr/bin/env python3
"""Rewrites a CUDA C++ source of src/backend/cuda for the emulated backend
(tests/cuda/emu/cuda_emu.h): every launch kernel<<<grid, block[, smem[,
stream]]>>>(args) becomes emu_launch(dim3(grid), dim3(block), [&] {
kernel(args); }), `extern __shared__` becomes `extern` (the test defines the
array) and `__shared__` becomes `static` (one copy for the running block).
Everything else is left as it is, so the emulated kernels are the real ones.

    emulate.py IN OUT
"""
import re
import sys


def split_top_level(text):
    """The comma-separated parts of text outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def rewrite_launches(src):
    out, pos = [], 0
    while True:
        at = src.find("<<<", pos)
        if at < 0:
            out.append(src[pos:])
            return "".join(out)
        # the kernel expression: an identifier, optionally with template arguments
        m = re.search(r"([A-Za-z_][A-Za-z0-9_:]*(?:<[^<>;]*>)?)\s*$", src[pos:at])
        if not m:
            sys.exit("emulate.py: cannot find the kernel before <<< at offset %d" % at)
        kernel_start = pos + m.start(1)
        end_config = src.find(">>>", at)
        config = split_top_level(src[at + 3:end_config])
        open_paren = src.index("(", end_config)
        depth, i = 0, open_paren
        while True:
            if src[i] == "(":
                depth += 1
            elif src[i] == ")":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        args = src[open_paren + 1:i]
        out.append(src[pos:kernel_start])
        out.append("emu_launch(dim3(%s), dim3(%s), [&] { %s(%s); })" % (config[0], config[1], m.group(1), args))
        pos = i + 1


def main(argv):
    src = open(argv[1]).read()
    src = rewrite_launches(src)
    src = src.replace("extern __shared__", "extern").replace("__shared__", "static")
    open(argv[2], "w").write('#include "cuda_emu.h"\n' + src)


if __name__ == "__main__":
    main(sys.argv)
