"""Which PEFT methods DSS training, inference and confidence scoring can take, asked of a config or a model.

LoRA and the methods that change weights (IA3, LoHa, LoKr, ...) train through the two DSS passes like any
weights and merge into the base model for inference. Prompt learning (prompt tuning, p-tuning, prefix
tuning) trains too, but cannot be merged, and its virtual tokens exist only inside peft's own forward.
AdaLoRA and CPT need more than a forward pass (a rank update after each step, a loss computed by peft from
labels), which :class:`~hf_cotmi.DSSMITrainer` does not run: it refuses them by name.

Examples:
    >>> from peft import LoraConfig
    >>> check_peft_config(LoraConfig(task_type="CAUSAL_LM"), "causal")
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "peft_type_name",
    "check_peft_config",
    "check_peft_model",
    "check_target_modules",
    "prompt_learning_method",
]

_TASK_TYPES = {"seq2seq": "SEQ_2_SEQ_LM", "causal": "CAUSAL_LM"}
_KINDS = {"seq2seq": "encoder-decoder (seq2seq)", "causal": "decoder-only (causal)"}

# method -> why DSSMITrainer cannot train it as peft means it to be trained
_NOT_TRAINED_BY_DSS = {
    "ADALORA": (
        "AdaLoRA",
        "it reallocates its ranks in update_and_allocate() after each optimizer step and adds an "
        "orthogonality penalty to the loss peft computes from labels; DSSMITrainer computes its own loss and "
        "runs neither, so it would train a fixed-rank LoRA",
    ),
    "CPT": (
        "CPT",
        "its training loss (weighted by cpt_tokens_type_mask) is computed inside peft's forward from labels; "
        "DSSMITrainer computes the DSS loss from the logits, so CPT's loss would never apply",
    ),
}


def peft_type_name(config: Any) -> str:
    """The peft method of a config as peft spells it in ``adapter_config.json`` (``"LORA"``, ...).

    Examples:
        >>> from peft import PromptTuningConfig
        >>> peft_type_name(PromptTuningConfig(num_virtual_tokens=2))
        'PROMPT_TUNING'
    """
    kind = getattr(config, "peft_type", None)
    return str(getattr(kind, "value", kind) or type(config).__name__)


def _active_config(model: Any) -> Any:
    """The configuration of a model's active PEFT adapter (the first one when none is named), or None."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        return None
    active = getattr(model, "active_adapter", None)  # a method (deprecated) on a transformers model
    return configs.get(active) if isinstance(active, str) else next(iter(configs.values()))


def prompt_learning_method(model: Any) -> str | None:
    """The peft method when the model's active adapter is prompt learning (prompt tuning, p-tuning, prefix
    tuning, ...: virtual tokens that exist only inside peft's forward), else None.

    Examples:
        >>> from types import SimpleNamespace
        >>> prompt_learning_method(SimpleNamespace()) is None
        True
    """
    config = _active_config(model)
    return peft_type_name(config) if getattr(config, "is_prompt_learning", False) else None


def check_peft_config(config: Any, student_type: str) -> None:
    """Refuse a peft configuration DSSMITrainer would train wrongly for a ``student_type`` student.

    Refused: AdaLoRA and CPT (their training needs more than a forward pass, see the module docstring), and a
    ``task_type`` other than the student's (``SEQ_2_SEQ_LM`` for ``"seq2seq"``, ``CAUSAL_LM`` for
    ``"causal"``): its adapters would be saved as the other kind of model, or prompt learning would wrap the
    model for the other layout. A method that changes weights may leave ``task_type`` out.

    Raises:
        ValueError: naming the method or the task type, and what to use instead.

    Examples:
        >>> from peft import LoraConfig
        >>> try:
        ...     check_peft_config(LoraConfig(task_type="SEQ_2_SEQ_LM"), "causal")
        ... except ValueError as error:
        ...     print(str(error).split(";")[0])
        peft_config has task_type='SEQ_2_SEQ_LM' but the student is decoder-only (causal)
    """
    kind = peft_type_name(config)
    if kind in _NOT_TRAINED_BY_DSS:
        name, why = _NOT_TRAINED_BY_DSS[kind]
        raise ValueError(
            f"{name} ({type(config).__name__}) is not supported by DSSMITrainer: {why}. Use LoraConfig (or "
            "another method that changes weights, such as IA3Config or LoHaConfig, or PromptTuningConfig)"
        )
    task = getattr(config, "task_type", None)
    task = getattr(task, "value", task)
    wanted = _TASK_TYPES[student_type]
    if task == wanted or (task is None and not getattr(config, "is_prompt_learning", False)):
        return
    raise ValueError(
        f"peft_config has task_type={task!r} but the student is {_KINDS[student_type]}; set "
        f"task_type={wanted} (TaskType.{wanted}) in the {type(config).__name__}"
    )


def check_peft_model(model: Any, student_type: str) -> None:
    """:func:`check_peft_config` for every adapter a model already carries (none: nothing to check).

    Examples:
        >>> from types import SimpleNamespace
        >>> check_peft_model(SimpleNamespace(), "seq2seq")
    """
    configs = getattr(model, "peft_config", None)
    for config in configs.values() if isinstance(configs, dict) else ():
        check_peft_config(config, student_type)


def _adaptable_module_names(model: Any) -> list[str]:
    """The last name component of each linear, embedding or GPT-2 ``Conv1D`` module of ``model``, sorted."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d)
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if name and (isinstance(module, kinds) or type(module).__name__ == "Conv1D")
        }
    )


def check_target_modules(config: Any, model: Any) -> None:
    """Refuse a peft config whose ``target_modules`` list holds a name that matches no module of ``model``.

    peft matches a name against a module path itself or its last components (``"q"``, ``"self_attn.q_proj"``)
    and needs only one name of the list to match, so a typo beside a good name trained silently without its
    adapters. A string (a regular expression, or ``"all-linear"``) and a config without ``target_modules``
    (peft's default for the architecture) are left to peft.

    Raises:
        ValueError: naming the names that match nothing and the adaptable module names the model has.

    Examples:
        >>> import torch
        >>> from peft import LoraConfig
        >>> model = torch.nn.Sequential()
        >>> model.add_module("q", torch.nn.Linear(2, 2))
        >>> check_target_modules(LoraConfig(target_modules=["q"]), model)
        >>> try:
        ...     check_target_modules(LoraConfig(target_modules=["q", "vv"]), model)
        ... except ValueError as error:
        ...     print(str(error).split(";")[0])
        peft_config.target_modules names 'vv', which matches no module of the model
    """
    targets = getattr(config, "target_modules", None)
    if targets is None or isinstance(targets, str):
        return
    paths = [name for name, _ in model.named_modules() if name]
    unmatched = [
        target
        for target in sorted(targets)
        if not any(path == target or path.endswith("." + target) for path in paths)
    ]
    if not unmatched:
        return
    names = ", ".join(repr(name) for name in unmatched)
    raise ValueError(
        f"peft_config.target_modules names {names}, which {'matches' if len(unmatched) == 1 else 'match'} "
        f"no module of the model; its linear, embedding and Conv1D modules are named "
        f"{', '.join(_adaptable_module_names(model))} (or give 'all-linear', --lora-target-modules all-linear)"
    )
