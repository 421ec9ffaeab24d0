"""Finding the checkpoint to resume from: complete ``checkpoint-N/`` folders only.

A process killed while the Trainer saves (SIGKILL, a preempted job, a full disk) leaves a half-written
``checkpoint-N/`` behind: transformers 5.x writes the config files first, then the weights, the optimizer
and scheduler state, the RNG state, and ``trainer_state.json`` last. Resuming from such a folder either
fails deep inside the Trainer or, worse, silently starts the optimizer afresh. A checkpoint here is
**complete** when it holds, readable and not truncated:

- the model weights: ``model.safetensors`` or a sharded ``model.safetensors.index.json`` with all its
  shards (``pytorch_model.bin`` and its index, or PEFT's ``adapter_model.safetensors`` /
  ``adapter_model.bin``, count too; PEFT saves an adapter not named ``default`` in a subfolder,
  ``<adapter name>/adapter_model.safetensors``, which the Trainer resumes from as well);
- the optimizer state ``optimizer.pt`` (or ``optimizer.bin``) and the scheduler state ``scheduler.pt``
  (so checkpoints written with ``save_only_model=True`` cannot be resumed);
- ``trainer_state.json``, a JSON object with ``global_step``.

A DeepSpeed ``global_step*/`` folder stands in for the weights and the optimizer state, and for the
scheduler state when DeepSpeed's engine owns the scheduler (a ``"scheduler"`` or ``"optimizer"`` section in
the DeepSpeed config): the Trainer then writes no ``scheduler.pt``, so under DeepSpeed only a truncated one
is a problem (``trainer_state.json``, written after the engine's save, is still required). So do FSDP's sharded
state-dict folders (``SHARDED_STATE_DICT``, FSDP2's default): ``pytorch_model_fsdp_0/`` for the weights and
``optimizer_0/`` for the optimizer state, each complete once ``torch.distributed.checkpoint`` has written its
``.metadata`` (the last file of a save). FSDP1's ``LOCAL_STATE_DICT`` writes the weights as one
``pytorch_model_fsdp_rank{N}.bin`` per process instead: every rank's file must be there (as many as the
``rng_state_{N}.pth`` files the Trainer writes per process) and readable.

Examples:
    >>> import tempfile
    >>> latest_complete_checkpoint(tempfile.mkdtemp()) is None  # no checkpoint-N/ at all
    True
    >>> resolve_resume_checkpoint("false", "out") is None
    True
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zipfile
from pathlib import Path
from typing import Union

__all__ = [
    "checkpoint_problems",
    "latest_complete_checkpoint",
    "numbered_checkpoints",
    "checkpoint_step",
    "resolve_resume_checkpoint",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_TRUE = ("true", "latest")
_FALSE = ("false", "none", "")
# FSDP's sharded state dict (accelerate's save_fsdp_model / save_fsdp_optimizer): one folder each
_FSDP_MODEL = "pytorch_model_fsdp_0"
_FSDP_OPTIMIZER = "optimizer_0"
# FSDP1's LOCAL_STATE_DICT: each process saves its own flat shard of the weights
_FSDP_RANK_WEIGHTS = re.compile(r"pytorch_model_fsdp_rank(\d+)\.bin")
_RANK_RNG_STATE = re.compile(r"rng_state_(\d+)\.pth")


def _safetensors_problem(path: Path) -> str | None:
    """Why a ``.safetensors`` file is unusable (missing, truncated, bad header), or None."""
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            if header_size > size - 8:
                return f"{path.name} is truncated ({size} bytes)"
            header = json.loads(handle.read(header_size))
    except (struct.error, ValueError, UnicodeDecodeError):
        return f"{path.name} is truncated or not a safetensors file"
    try:
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return f"{path.name} has a header that is not a safetensors header"
    described = 8 + header_size + max(ends, default=0)
    if described != size:
        return f"{path.name} is truncated ({size} bytes, the header describes {described})"
    return None


def _torch_file_problem(path: Path) -> str | None:
    """Why a ``torch.save`` file is unusable: missing, or not a whole zip archive (truncated), or None."""
    if not path.is_file():
        return f"{path.name} is missing"
    if not zipfile.is_zipfile(path):
        return f"{path.name} is truncated or not a torch.save file"
    return None


def _file_problem(path: Path) -> str | None:
    return _safetensors_problem(path) if path.suffix == ".safetensors" else _torch_file_problem(path)


def _sharded_problem(index: Path) -> str | None:
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{index.name} is truncated or has no weight_map"
    for shard in shards:
        problem = _file_problem(index.parent / shard)
        if problem:
            return f"{problem} (a shard listed in {index.name})"
    return None


_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def _named_adapter_weights(folder: Path) -> list[Path]:
    """The weights of PEFT adapters not named ``default``: peft saves each in ``<adapter name>/adapter_model.*``."""
    found = []
    for subfolder in sorted(path for path in folder.iterdir() if path.is_dir()):
        present = [subfolder / name for name in _ADAPTER_WEIGHTS if (subfolder / name).is_file()]
        found.extend(present[:1])
    return found


def _weights_problem(folder: Path) -> str | None:
    candidates = [
        "model.safetensors.index.json",
        "model.safetensors",
        "pytorch_model.bin.index.json",
        "pytorch_model.bin",
        *_ADAPTER_WEIGHTS,
    ]
    present = [name for name in candidates if (folder / name).is_file()]
    adapters = _named_adapter_weights(folder)
    if not present and not adapters:
        return "no model weights (model.safetensors, its sharded index, pytorch_model.bin or adapter_model.*)"
    if present:
        name = present[0]
        problem = (
            _sharded_problem(folder / name) if name.endswith(".index.json") else _file_problem(folder / name)
        )
        if problem:
            return problem
    for path in adapters:
        problem = _file_problem(path)
        if problem:
            return f"{path.parent.name}/{problem}"
    return None


def _distributed_checkpoint_problem(path: Path) -> str | None:
    """Why a ``torch.distributed.checkpoint`` folder (FSDP's sharded state) is unusable, or None.

    Its ``.metadata`` is written once every shard is, so a folder without it is a save that did not finish.
    """
    if not path.is_dir():
        return f"{path.name}/ is missing"
    if not (path / ".metadata").is_file():
        return f"{path.name}/ has no .metadata (its save did not finish)"
    return None


def _ranks(folder: Path, pattern: re.Pattern[str]) -> set[int]:
    return {int(match.group(1)) for path in folder.iterdir() if (match := pattern.fullmatch(path.name))}


def _per_rank_weights_problem(folder: Path, ranks: set[int]) -> str | None:
    """Why FSDP1's per-rank weight files are unusable (a rank's file missing or truncated), or None.

    The processes that saved are counted from the rank numbers on the weight files and on the Trainer's
    ``rng_state_{N}.pth`` files, so a rank whose weights never reached the disk is still noticed.
    """
    expected = max(ranks | _ranks(folder, _RANK_RNG_STATE)) + 1
    for rank in range(expected):
        problem = _torch_file_problem(folder / f"pytorch_model_fsdp_rank{rank}.bin")
        if problem:
            return problem
    return None


def _trainer_state_problem(folder: Path) -> str | None:
    path = folder / "trainer_state.json"
    if not path.is_file():
        return "trainer_state.json is missing"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "trainer_state.json is truncated or not valid JSON"
    if not isinstance(state, dict) or "global_step" not in state:
        return "trainer_state.json has no global_step"
    return None


def checkpoint_problems(checkpoint: PathLike) -> list[str]:
    """What a checkpoint folder lacks to be resumed from; an empty list means it is complete.

    Args:
        checkpoint: a ``checkpoint-N/`` folder written by the Trainer.

    Returns:
        One short phrase per problem (``"optimizer.pt is missing"``, ``"model.safetensors is truncated ..."``).

    Examples:
        >>> import tempfile
        >>> checkpoint_problems(tempfile.mkdtemp())[0]
        'no model weights (model.safetensors, its sharded index, pytorch_model.bin or adapter_model.*)'
    """
    folder = Path(checkpoint)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    problems = []
    deepspeed = any(p.is_dir() and p.name.startswith("global_step") for p in folder.iterdir())
    fsdp_sharded = (folder / _FSDP_MODEL).is_dir()
    fsdp_ranks = _ranks(folder, _FSDP_RANK_WEIGHTS)
    if fsdp_sharded and not deepspeed:
        problems.append(_distributed_checkpoint_problem(folder / _FSDP_MODEL))
        problems.append(_distributed_checkpoint_problem(folder / _FSDP_OPTIMIZER))
    elif fsdp_ranks and not deepspeed:
        problems.append(_per_rank_weights_problem(folder, fsdp_ranks))
        problems.append(_distributed_checkpoint_problem(folder / _FSDP_OPTIMIZER))
    elif not deepspeed:
        problems.append(_weights_problem(folder))
        optimizer = folder / ("optimizer.pt" if (folder / "optimizer.pt").exists() else "optimizer.bin")
        problem = _torch_file_problem(optimizer)
        problems.append(
            problem.replace("optimizer.bin is missing", "optimizer.pt is missing") if problem else None
        )
    if not deepspeed or (folder / "scheduler.pt").exists():  # DeepSpeed's engine may hold the scheduler
        problems.append(_torch_file_problem(folder / "scheduler.pt"))
    problems.append(_trainer_state_problem(folder))
    return [problem for problem in problems if problem]


def numbered_checkpoints(output_dir: PathLike) -> list[Path]:
    """The ``checkpoint-N/`` folders in ``output_dir``, complete or not, by step (none if it is no folder).

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for step in (20, 100, 3):
        ...     (folder / f"checkpoint-{step}").mkdir()
        >>> [path.name for path in numbered_checkpoints(folder)]
        ['checkpoint-3', 'checkpoint-20', 'checkpoint-100']
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        step = checkpoint_step(path)
        if step is not None and path.is_dir():
            found.append((step, path))
    return [path for _, path in sorted(found)]


def checkpoint_step(path: PathLike) -> int | None:
    """The step N of a ``checkpoint-N`` folder's path (a trailing separator aside), else None.

    Examples:
        >>> checkpoint_step("out/checkpoint-150/"), checkpoint_step("out/best")
        (150, None)
    """
    match = _CHECKPOINT.fullmatch(os.path.basename(os.path.normpath(os.fspath(path))))
    return int(match.group(1)) if match else None


def latest_complete_checkpoint(output_dir: PathLike) -> str | None:
    """The newest complete ``checkpoint-N/`` in ``output_dir`` (highest N), skipping half-written ones.

    Each newer folder that is skipped is named in a warning on the ``hf_cotmi`` logger with what it lacks.

    Args:
        output_dir: the training run's output folder.

    Returns:
        The checkpoint's path (``output_dir/checkpoint-N``), or None when there is no complete one.

    Examples:
        >>> # latest_complete_checkpoint("student")  ->  'student/checkpoint-400' (checkpoint-500 half-written)
    """
    for path in reversed(numbered_checkpoints(output_dir)):
        problems = checkpoint_problems(path)
        if not problems:
            return os.path.join(os.fspath(output_dir), path.name)
        logger.warning("skipping the incomplete checkpoint %s: %s", path, "; ".join(problems))
    return None


def _save_only_model_note(problems: list[str]) -> str:
    """Why a checkpoint with its weights but no optimizer or scheduler state cannot be resumed, or ``""``.

    ``save_only_model=True`` writes such checkpoints; transformers would resume from one with a fresh optimizer
    and a learning-rate schedule started again, without a word.
    """
    if sorted(problems) != ["optimizer.pt is missing", "scheduler.pt is missing"]:
        return ""
    return (
        "; it holds the model only, as save_only_model=True saves it, and a run cannot resume from it (the "
        "optimizer and the learning-rate schedule would start again): start a new run from its weights, and "
        "leave save_only_model off for checkpoints to resume from"
    )


def resolve_resume_checkpoint(value: PathLike | bool | None, output_dir: PathLike) -> str | None:
    """Turn a ``resume_from_checkpoint`` value into the checkpoint folder to resume from, or None.

    - ``None``, ``False``, ``"false"``, ``"none"`` or ``""``: None (train from the start);
    - ``True``, ``"true"`` or ``"latest"`` (any case): the latest complete checkpoint in ``output_dir``
      (:func:`latest_complete_checkpoint`); an error when there is none;
    - anything else is a path to a checkpoint folder (tried as given, then inside ``output_dir``), which
      must be complete.

    Args:
        value: the option's value, from the command line, a config file or Python.
        output_dir: the training run's output folder.

    Returns:
        The checkpoint folder, or None.

    Raises:
        ValueError: resuming was asked for but ``output_dir`` holds no complete checkpoint, or the named
            checkpoint is incomplete (the message says what it lacks).
        FileNotFoundError: the named checkpoint folder does not exist.
        TypeError: ``value`` is neither a bool, a string, a path nor None.

    Examples:
        >>> resolve_resume_checkpoint(None, "out") is None
        True
        >>> # resolve_resume_checkpoint("latest", "student")  ->  'student/checkpoint-400'
    """
    if value is None or value is False:
        return None
    if value is not True and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"resume_from_checkpoint must be true, false, 'latest' or a path; got {value!r}")
    text = value if value is True else os.fspath(value).strip()
    if text is not True and text.lower() in _FALSE:
        return None
    if text is True or text.lower() in _TRUE:
        found = latest_complete_checkpoint(output_dir)
        if found is None:
            folders = numbered_checkpoints(output_dir)
            incomplete = [path.name for path in folders]
            detail = f" (incomplete: {', '.join(incomplete)})" if incomplete else ""
            note = next(
                (n for n in (_save_only_model_note(checkpoint_problems(p)) for p in folders) if n), ""
            )
            raise ValueError(
                f"resume_from_checkpoint={value!r}: {os.fspath(output_dir)!r} holds no complete checkpoint-N "
                f"folder{detail}{note}; train without resume_from_checkpoint to start from the beginning"
            )
        return found
    path = Path(text)
    if not path.is_dir() and (Path(output_dir) / text).is_dir():
        path = Path(output_dir) / text
    if not path.is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint={text!r}: no such checkpoint folder")
    problems = checkpoint_problems(path)
    if problems:
        raise ValueError(
            f"resume_from_checkpoint={text!r}: the checkpoint is incomplete ({'; '.join(problems)})"
            f"{_save_only_model_note(problems)}; name a complete one, or pass 'latest' for the newest complete "
            "checkpoint"
        )
    return os.fspath(path)
