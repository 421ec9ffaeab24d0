"""Load a student: built in code, a Hub name or local folder, or a trained one (full weights or LoRA, in a
folder or a Hub repository).

One function, :func:`load_student`, serves training (a fresh or pretrained student) and inference (a
saved one, LoRA adapters merged onto their base model). :func:`model_file` finds one file of a model, in its
folder or its Hub repository. :func:`peft_config` is the LoRA configuration that
:class:`~hf_cotmi.DSSMITrainer` takes as ``peft_config``.

Examples:
    >>> from hf_cotmi.students import load_student
    >>> student = load_student(texts=["tom has 3 apples"], tiny_d_model=16)
    >>> student.description.startswith("T5 built from a config")
    True
"""

from __future__ import annotations

import logging
import ntpath
import os
import posixpath
from collections.abc import Sequence
from typing import Any, NamedTuple

from .run_arguments import CLIUsageError, ModelArguments, error_summary
from .student_types import resolve_student_type

logger = logging.getLogger("hf_cotmi")

__all__ = [
    "Student",
    "load_student",
    "peft_config",
    "is_causal_folder",
    "tokenizer_files_problem",
    "input_length_limit",
    "context_length",
    "generation_prompt_limit",
    "GenerationLengthError",
    "eos_token_ids",
    "stop_at_eos_kwargs",
    "ADAPTER_CONFIG",
    "DEFAULT_INPUT_LENGTH_LIMIT",
]

ADAPTER_CONFIG = "adapter_config.json"
"""The file peft writes into a folder of LoRA adapters (how a saved adapter student, in a folder or a Hub
repository, is recognised)."""

DEFAULT_INPUT_LENGTH_LIMIT = 512
"""Token limit of an input when neither the tokenizer nor the model config gives a usable one (T5's)."""

# Above this a tokenizer's model_max_length is a "no limit" placeholder (transformers uses 1e30).
_SANE_LENGTH_LIMIT = 1_000_000
# Vocabulary files that each make a tokenizer on their own, when tokenizer_config.json names no class.
_VOCABULARY_FILES = (
    "tokenizer.json",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "sentencepiece.model",
    "spm.model",
    "vocab.txt",
)


class Student(NamedTuple):
    """A loaded student: ``model, tokenizer, description = load_student(...)``.

    Examples:
        >>> Student(None, None, "a T5").description
        'a T5'
    """

    model: Any
    tokenizer: Any
    description: str


def failed_load_error(what: str, name: str, error: Exception) -> CLIUsageError:
    """The usage error to raise when ``from_pretrained(name)`` failed: it names what and where, and why.

    A ``name`` that is a folder holds no loadable model; any other name is neither a local folder nor
    something the Hugging Face Hub could provide, and where the Hub answered that it has no such repository
    (404, or 401 for a name it does not show without a token), the message says the name is neither a local
    folder nor a Hub repository, and that a private one needs a token (one that can read it, when a token
    is set: ``huggingface_hub.get_token()``). The first line of ``error`` (or its type, when it has no message) ends the
    message.

    Args:
        what: what was being loaded, as the message says it (``"model"``, ``"tokenizer"``,
            ``"teacher model"``).
        name: the name or path passed to ``from_pretrained``.
        error: the exception ``from_pretrained`` raised.

    Returns:
        A :class:`~hf_cotmi.run_arguments.CLIUsageError` for the caller to raise (``from error``).

    Examples:
        >>> print(failed_load_error("tokenizer", "no/such-model", OSError("404 Client Error\\nmore")))
        ... # doctest: +ELLIPSIS
        could not load the tokenizer 'no/such-model': it is not a local folder, ... (404 Client Error)
    """
    first = error_summary(error)
    if os.path.isdir(name):
        where = "the folder exists but holds no loadable model"
    elif _no_such_repository(error):
        from huggingface_hub import get_token

        token = (
            "a token that can read it" if get_token() is not None else "a token: hf auth login, or HF_TOKEN"
        )
        where = (
            "it is neither a local folder nor a Hugging Face Hub repository (a relative path is read from the "
            f"current folder; a private repository needs {token})"
        )
    else:
        where = "it is not a local folder, and the Hugging Face Hub could not provide it (offline, or no such repo)"
    return CLIUsageError(f"could not load the {what} {name!r}: {where} ({first})")


def _no_such_repository(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is the Hub's answer that there is no such repository
    (``RepositoryNotFoundError``: a 404, or a 401 without a token that may see it; a gated one is not)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RepositoryNotFoundError) and not isinstance(current, GatedRepoError):
            return True
        current = current.__cause__ or current.__context__
    return False


class HubFileUnreachable(LookupError):
    """A file of a Hugging Face Hub repository is not in the Hugging Face cache, and the Hub cannot be asked
    for it (offline, ``HF_HUB_OFFLINE=1``, or unreachable): whether the repository has the file is unknown.

    Raised by :func:`model_file`; ``repo_id`` and ``filename`` name the file.

    Examples:
        >>> error = HubFileUnreachable("me/run", "adapter_config.json")
        >>> error.repo_id, error.filename
        ('me/run', 'adapter_config.json')
    """

    def __init__(self, repo_id: str, filename: str) -> None:
        super().__init__(
            f"{filename} of the Hugging Face Hub repository {repo_id!r} is not in the Hugging Face cache, and "
            "the Hub cannot be reached"
        )
        self.repo_id = repo_id
        self.filename = filename


def model_file(path: str, filename: str, *, trust_cached_absence: bool = False) -> str | None:
    """Where the file ``filename`` of the model ``path`` is on this machine, or None when the model has none.

    ``path`` names a model as ``from_pretrained`` takes it. A local path is looked into. Any other name is
    taken for a Hugging Face Hub repository id, and the file is fetched with
    ``huggingface_hub.hf_hub_download`` with the defaults the model's own files load with (no model option
    names a revision, token or cache folder: the default branch, ``HF_TOKEN`` or the saved login, the Hugging
    Face cache; offline, ``HF_HUB_OFFLINE=1``, the cached copy). A repository without the file has none, as
    has one whose cache records that it has none (an earlier look found none); a name that is neither a
    local path nor a repository id has none either, and loading the model reports it.

    Args:
        path: a local folder or a Hub repository id (``"me/lora-run"``).
        filename: the file's name in the folder or repository (``"adapter_config.json"``).
        trust_cached_absence: when the cache records that the repository has no such file (at the commit it
            knows as the branch's latest), answer None without asking the Hub. Asking costs a request, and
            while the Hub fails (5xx, 429) huggingface_hub retries it with backoff for some 20 s; a file
            added to the repository since is then seen once the cache learns of the new commit (loading the
            model online does that). For probes, such as whether a model is PEFT adapters.

    Returns:
        The file's path (in the folder, or in the Hugging Face cache), or None.

    Raises:
        HubFileUnreachable: the Hub cannot be reached and the cache does not hold the file.
        CLIUsageError: the Hub refuses the repository (no such repository or revision, private or gated):
            the error loading the model gives (:func:`failed_load_error`).

    Examples:
        >>> import tempfile
        >>> model_file(tempfile.mkdtemp(), "adapter_config.json") is None
        True
        >>> model_file("/nonexistent", "adapter_config.json") is None  # no folder, no repository id
        True
    """
    if os.path.exists(path):
        file = os.path.join(path, filename)
        return file if os.path.isfile(file) else None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(path)
    except HFValidationError:
        return None  # neither a folder nor a repository id: loading the model says so
    if trust_cached_absence:
        cached = try_to_load_from_cache(path, filename)
        if cached is not None and not isinstance(cached, str):  # huggingface_hub's "recorded missing" marker
            return None
    try:
        return str(hf_hub_download(repo_id=path, filename=filename))
    except LocalEntryNotFoundError as error:  # offline or unreachable, not cached (before its parent class)
        cached = try_to_load_from_cache(path, filename)
        if isinstance(cached, str):
            return cached
        if cached is not None:
            return None  # the cache recorded that the repository has no such file
        raise HubFileUnreachable(path, filename) from error
    except EntryNotFoundError:  # the repository has no such file
        return None
    except HfHubHTTPError as error:  # no such repository or revision, private or gated
        raise failed_load_error("model", path, error) from error


def read_model_json(name: str, file: str, *, invalid: str, expected: str) -> dict[str, Any]:
    """The JSON object in ``file``, a file of the model ``name`` (a folder or a Hub repository) that
    :func:`model_file` found: a damaged one must not pass for none.

    Raises:
        CLIUsageError: ``file`` is not valid JSON (the message goes on with ``invalid``: what the file is for
            and how to restore it) or holds no JSON object (``expected``); it names the file, and for a Hub
            repository the repository it came from.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = open(os.path.join(folder, "a.json"), "w").write("[1]")
        >>> try:
        ...     read_model_json(folder, os.path.join(folder, "a.json"), invalid="?", expected="expected an object")
        ... except CLIUsageError as error:
        ...     print(str(error).split("; ")[1])
        expected an object
    """
    import json

    from .data.jsonfiles import json_value_kind

    where = file
    if not os.path.exists(name):
        where = f"{file} (the {os.path.basename(file)} of the Hub repository {name!r})"
    try:
        with open(file, encoding="utf-8") as handle:
            value = json.load(handle)
    except ValueError as error:  # not JSON, or not UTF-8
        raise CLIUsageError(f"{where} is not valid JSON ({error_summary(error)}); {invalid}") from error
    if not isinstance(value, dict):
        raise CLIUsageError(f"{where} holds {json_value_kind(value)}; {expected}")
    return value


def _tokenizer_class_files(folder: str) -> tuple[str, dict[str, str]] | None:
    """The class ``tokenizer_config.json`` names and its vocabulary files, or None when it names none."""
    import json

    import transformers

    try:
        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as handle:
            name = json.load(handle).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(name, str):
        return None
    kind = getattr(transformers, name, None) or getattr(transformers, name.removesuffix("Fast"), None)
    names = getattr(kind, "vocab_files_names", None)
    return (name, dict(names)) if isinstance(names, dict) else None


def tokenizer_files_problem(folder: str | os.PathLike[str]) -> str | None:
    """What a local student folder lacks to make a usable tokenizer, or None when it has it.

    A folder without vocabulary files is not refused by transformers: it builds a tokenizer with an empty
    vocabulary from the model type, which turns every word into the unknown token (empty predictions,
    accuracy 0). Usable means ``tokenizer.json``; or, when ``tokenizer_config.json`` names a tokenizer class,
    that class's vocabulary files (``spiece.model`` for T5, ``vocab.json`` and ``merges.txt`` for BPE) or none
    for byte-level classes such as ByT5's; otherwise one of ``spiece.model``, ``tokenizer.model``,
    ``sentencepiece.bpe.model``, ``sentencepiece.model``, ``spm.model``, ``vocab.txt``, or ``vocab.json`` with
    ``merges.txt``.

    Args:
        folder: a local folder (a Hub name is not checked: the Hub provides its files).

    Returns:
        A phrase naming the folder and the files expected, or None.

    Examples:
        >>> import tempfile
        >>> "no tokenizer files (expected tokenizer.json" in tokenizer_files_problem(tempfile.mkdtemp())
        True
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return None

    def present(name: str) -> bool:
        return os.path.isfile(os.path.join(folder, name))

    if present("tokenizer.json"):
        return None
    named = _tokenizer_class_files(folder)
    if named is not None:
        kind, files = named
        vocabulary = [f for key, f in files.items() if key not in ("tokenizer_file", "tokenizer_config_file")]
        if not files or (vocabulary and all(present(f) for f in vocabulary)):
            return None  # a byte-level tokenizer needs no vocabulary file
        wanted = " and ".join(vocabulary)
        expected = f"tokenizer.json or {wanted}" if wanted else "tokenizer.json"
        return f"{folder!r}: no tokenizer files for its {kind} (expected {expected})"
    if any(present(name) for name in _VOCABULARY_FILES) or (present("vocab.json") and present("merges.txt")):
        return None
    others = ", ".join(_VOCABULARY_FILES[1:])
    return (
        f"{folder!r}: no tokenizer files (expected tokenizer.json, or a vocabulary file such as {others}, "
        "or vocab.json with merges.txt)"
    )


def _real_length(value: Any) -> int | None:
    return value if isinstance(value, int) and 0 < value <= _SANE_LENGTH_LIMIT else None


def context_length(model: Any, tokenizer: Any) -> int | None:
    """The most tokens a student takes at once, or None when neither it nor its tokenizer gives a limit.

    The smaller of the tokenizer's ``model_max_length`` (when it is a real limit: transformers puts 1e30
    there for "none") and the model config's ``max_position_embeddings`` (or ``n_positions``,
    ``max_seq_len``): a tokenizer may claim more than the model has positions for.

    Examples:
        >>> from types import SimpleNamespace
        >>> model = SimpleNamespace(config=SimpleNamespace(n_positions=64))
        >>> context_length(model, SimpleNamespace(model_max_length=1024))
        64
        >>> context_length(SimpleNamespace(config=SimpleNamespace()), SimpleNamespace()) is None
        True
    """
    limits = [_real_length(getattr(tokenizer, "model_max_length", None))]
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_seq_len"):
        if _real_length(getattr(config, name, None)) is not None:
            limits.append(getattr(config, name))
            break
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


class GenerationLengthError(ValueError):
    """The refusal of a generation length that leaves a decoder-only student no room for a prompt: its
    generated tokens follow the prompt in one context, so ``value`` new tokens at or above the context length
    leave none (:func:`generation_prompt_limit`, and :class:`~hf_cotmi.DSSMITrainer`'s check of the lengths
    its evaluations generate with, before training). A ``ValueError``, as before it had a class.

    Attributes:
        setting: the setting the length came from, as the caller names it: ``"generation_max_length"``,
            ``"rationale_max_new_tokens"``, ``"generation_config.max_new_tokens"`` (a part of a generation
            config), ``"ECECallback.max_new_tokens"``, ``"max_new_tokens"`` (a ``generate`` argument) ...
        value: the number of new tokens asked for.
        context: the student's context length, in tokens.
        generates: what is generated with it: ``"labels"``, ``"rationales"``, or None where the caller does
            not say (a :func:`generation_prompt_limit` call of its own).
        confidence: where the length is the one an :class:`~hf_cotmi.ECECallback` generates labels with at
            each evaluation, that callback's ``confidence`` mode (``"sequence"``, ``"first_token"``); else None.

    Examples:
        >>> from types import SimpleNamespace
        >>> model = SimpleNamespace(config=SimpleNamespace(n_positions=64, is_encoder_decoder=False))
        >>> try:
        ...     generation_prompt_limit(model, None, 64, argument="generation_max_length")
        ... except GenerationLengthError as error:
        ...     print(error.setting, error.value, error.context, error.generates, error.confidence)
        generation_max_length 64 64 None None
        >>> print(GenerationLengthError("generation_max_length", 64, 64, "labels", "sequence"))
        ... # doctest: +NORMALIZE_WHITESPACE
        generation_max_length=64 leaves no room for a prompt in the student's context of 64 tokens (a
        decoder-only student generates after its prompt); ask for fewer than 64 new tokens;
        ECECallback(confidence='sequence') generates labels with it at each evaluation
    """

    def __init__(
        self,
        setting: str,
        value: int,
        context: int,
        generates: str | None = None,
        confidence: str | None = None,
    ) -> None:
        self.setting, self.value, self.context = setting, value, context
        self.generates, self.confidence = generates, confidence
        super().__init__(self.describe())

    def describe(self, setting: str | None = None, callback: str | None = None) -> str:
        """The message, with the setting and the callback named as given: ``setting`` for
        ``"{setting}={value}"`` and, where :attr:`confidence` is set, ``callback`` for
        ``"ECECallback(confidence='...')"`` (the command line names its flags there).

        Examples:
            >>> error = GenerationLengthError("generation_max_length", 900, 512)
            >>> error.describe("--generation-max-length 900").split(" (")[0]
            "--generation-max-length 900 leaves no room for a prompt in the student's context of 512 tokens"
            >>> GenerationLengthError("max_length", 9, 8, "labels", "first_token").describe(
            ...     callback="the ECE").endswith("; the ECE generates labels with it at each evaluation")
            True
        """
        setting = f"{self.setting}={self.value}" if setting is None else setting
        message = (
            f"{setting} leaves no room for a prompt in the student's context of {self.context} tokens (a "
            f"decoder-only student generates after its prompt); ask for fewer than {self.context} new tokens"
        )
        if self.confidence is None:
            return message
        callback = f"ECECallback(confidence={self.confidence!r})" if callback is None else callback
        return f"{message}; {callback} generates labels with it at each evaluation"

    def __reduce__(
        self,
    ) -> tuple[type[GenerationLengthError], tuple[str, int, int, str | None, str | None], dict[str, Any]]:
        # pickled (between processes) and copied with its arguments, not the message its __init__ does not
        # take, and its attributes (those a subclass adds, add_note()'s notes)
        return (
            type(self),
            (self.setting, self.value, self.context, self.generates, self.confidence),
            self.__dict__,
        )


def generation_prompt_limit(
    model: Any,
    tokenizer: Any,
    max_new_tokens: int | None,
    max_input_length: int | None = None,
    *,
    argument: str = "max_new_tokens",
) -> int | None:
    """The longest prompt from which a decoder-only student can still generate ``max_new_tokens`` tokens.

    A decoder-only student's generated tokens follow its prompt in one context (:func:`context_length`), so
    the prompt gets ``context - max_new_tokens`` tokens at most (and ``max_input_length`` when that is
    smaller). A seq2seq student generates in its decoder: ``max_input_length`` is returned unchanged, as it
    is when the context or ``max_new_tokens`` is unknown. ``argument`` is the name the error gives
    ``max_new_tokens`` (the setting it came from, such as ``rationale_max_new_tokens``).

    Raises:
        GenerationLengthError: (a ``ValueError``) ``max_new_tokens`` alone fills a decoder-only student's
            context; its ``setting`` is ``argument``.

    Examples:
        >>> from types import SimpleNamespace
        >>> model = SimpleNamespace(config=SimpleNamespace(n_positions=64, is_encoder_decoder=False))
        >>> generation_prompt_limit(model, SimpleNamespace(), 8), generation_prompt_limit(model, None, 8, 40)
        (56, 40)
    """
    context = context_length(model, tokenizer)
    if resolve_student_type(model) != "causal" or context is None or max_new_tokens is None:
        return max_input_length
    if max_new_tokens >= context:
        raise GenerationLengthError(argument, max_new_tokens, context)
    room = context - max_new_tokens
    return room if max_input_length is None else min(max_input_length, room)


def _as_id_set(value: Any) -> set[int]:
    if value is None:
        return set()
    return {int(e) for e in (value if isinstance(value, (list, tuple)) else [value])}


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids a student's generated text ends at: the generation config's EOS (else the model config's) and
    the tokenizer's (``tokenizer`` may be None); empty when none names one.

    The tokenizer's EOS is what every training target ends with
    (:func:`hf_cotmi.data.causal.encode_causal_task`), so it ends a generation even where the configs name
    another token (a base model whose ``tokenizer.eos_token`` was set to a chat template's end of turn).

    Examples:
        >>> from types import SimpleNamespace
        >>> model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None),
        ...                         config=SimpleNamespace(eos_token_id=[2, 7]))
        >>> sorted(eos_token_ids(model, None)), eos_token_ids(SimpleNamespace(), SimpleNamespace(eos_token_id=1))
        ([2, 7], {1})
        >>> sorted(eos_token_ids(model, SimpleNamespace(eos_token_id=9)))
        [2, 7, 9]
    """
    eos = _as_id_set(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    if not eos:
        eos = _as_id_set(getattr(getattr(model, "config", None), "eos_token_id", None))
    return eos | _as_id_set(getattr(tokenizer, "eos_token_id", None))


def stop_at_eos_kwargs(model: Any, eos_ids: set[int]) -> dict[str, Any]:
    """``generate`` arguments that make generation stop at ``eos_ids`` (none if its config already does).

    ``generate`` stops only at its generation config's EOS. Where that does not name every id of
    :func:`eos_token_ids` (it names none, or another token than the tokenizer's EOS), a row would run on past
    the EOS every training target ends with (and a sequence confidence ends at), and its prediction would
    hold the text after it.

    Examples:
        >>> from types import SimpleNamespace
        >>> model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None))
        >>> stop_at_eos_kwargs(model, {1}), stop_at_eos_kwargs(model, set())
        ({'eos_token_id': [1]}, {})
        >>> ends_at_0 = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=0))
        >>> stop_at_eos_kwargs(ends_at_0, {0}), stop_at_eos_kwargs(ends_at_0, {0, 2})
        ({}, {'eos_token_id': [0, 2]})
    """
    configured = _as_id_set(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    if not eos_ids or eos_ids <= configured:
        return {}
    return {"eos_token_id": sorted(eos_ids | configured)}


def input_length_limit(
    model: Any,
    tokenizer: Any,
    default: int = DEFAULT_INPUT_LENGTH_LIMIT,
    *,
    max_new_tokens: int | None = None,
) -> int:
    """The longest input, in tokens, a student takes: where ``predict`` truncates without a sidecar file.

    The student's :func:`context_length` (the smaller of the tokenizer's ``model_max_length`` and the model
    config's ``max_position_embeddings``/``n_positions``/``max_seq_len``), else ``default``
    (:data:`DEFAULT_INPUT_LENGTH_LIMIT`, 512: T5 has relative positions and no limit of its own). With
    ``max_new_tokens`` a decoder-only student's limit leaves that many positions for the generated tokens
    (:func:`generation_prompt_limit`).

    Raises:
        ValueError: ``max_new_tokens`` alone fills a decoder-only student's context.

    Examples:
        >>> from types import SimpleNamespace
        >>> config = SimpleNamespace(max_position_embeddings=1024)
        >>> input_length_limit(SimpleNamespace(config=config), SimpleNamespace(model_max_length=int(1e30)))
        1024
        >>> input_length_limit(SimpleNamespace(config=config), SimpleNamespace(model_max_length=256))
        256
        >>> input_length_limit(SimpleNamespace(config=config), SimpleNamespace(), max_new_tokens=24)
        1000
        >>> input_length_limit(SimpleNamespace(config=SimpleNamespace()), SimpleNamespace())
        512
    """
    limit = context_length(model, tokenizer) or default
    return generation_prompt_limit(model, tokenizer, max_new_tokens, limit) or limit


def _adapter_config(name: str, *, trust_cached_absence: bool = True) -> dict[str, Any] | None:
    """The values of the ``adapter_config.json`` of the model ``name``: a folder or a Hub repository of PEFT
    adapters (:func:`model_file`, by default taking the cache's record that a repository has none as it
    stands); None when it holds none, or when, offline, the file is not in the cache (loading the model then
    says what is missing).

    Raises:
        CLIUsageError: the file is not valid JSON or holds no JSON object (naming the file), or the Hub
            refuses the repository.
    """
    try:
        # asked of every Hub model: the cache's record that a repository has none is taken as it stands
        file = model_file(name, ADAPTER_CONFIG, trust_cached_absence=trust_cached_absence)
    except HubFileUnreachable:
        return None
    if file is None:
        return None
    return read_model_json(
        name,
        file,
        invalid="peft writes it beside the adapters (save_pretrained): restore it, or save the adapters again",
        expected="expected the JSON object of the adapters' settings peft writes (save_pretrained): restore it, "
        "or save the adapters again",
    )


def _saved_kind(name: str, adapter: dict[str, Any] | None) -> str:
    """``"seq2seq"`` or ``"causal"``: what the folder (or Hub name) holds, from its config.

    LoRA adapters (``adapter``, their :func:`_adapter_config`) say it in ``adapter_config.json`` (peft's
    ``task_type``), else their base model's config does.
    """
    from transformers import AutoConfig

    if adapter is not None:
        task = str(adapter.get("task_type") or "")
        if task in ("CAUSAL_LM", "SEQ_2_SEQ_LM"):
            return "causal" if task == "CAUSAL_LM" else "seq2seq"
        name = adapter.get("base_model_name_or_path") or name
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise failed_load_error("model", name, error) from error
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def is_causal_folder(name: str) -> bool:
    """Whether a model folder (or Hub name) holds a decoder-only (causal) LM, from its config.

    A folder or Hub repository of LoRA adapters is judged by its ``adapter_config.json`` (peft's
    ``task_type`` ``CAUSAL_LM``), else by its base model's config; any other by ``config.is_encoder_decoder``
    (False: causal).

    Examples:
        >>> import tempfile
        >>> from transformers import GPT2Config
        >>> folder = tempfile.mkdtemp()
        >>> GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10).save_pretrained(folder)
        >>> is_causal_folder(folder)
        True
    """
    return _saved_kind(name, _adapter_config(name)) == "causal"


def check_model_folder(name: str | os.PathLike[str]) -> None:
    """Refuse a local folder that holds no saved model (a Hub name, or a folder with one, passes).

    Raises:
        CLIUsageError: the folder has neither ``config.json`` nor ``adapter_config.json``.

    Examples:
        >>> import tempfile
        >>> try:
        ...     check_model_folder(tempfile.mkdtemp())
        ... except CLIUsageError as error:
        ...     print("holds no saved model" in str(error))
        True
    """
    name = os.fspath(name)
    if os.path.isdir(name) and not any(
        os.path.isfile(os.path.join(name, f)) for f in ("config.json", ADAPTER_CONFIG)
    ):
        raise CLIUsageError(
            f"--model {name!r} holds no saved model (no config.json, no {ADAPTER_CONFIG}); expected the folder a "
            "training run saved (its output dir, or a checkpoint-N folder in it)"
        )


def _pretrained(
    name: str,
    tokenizer_name: str,
    merge_adapters: bool,
    student_type: str | None = None,
    base_model: str | None = None,
) -> tuple[Any, Any]:
    if os.path.isfile(name):
        raise CLIUsageError(
            f"--model {name!r} is a file; expected a model folder (e.g. one a training run saved) or a Hub name"
        )
    check_model_folder(name)
    adapter = _adapter_config(name)  # a folder or Hub repository of adapters has one
    try:
        return _pretrained_as(name, tokenizer_name, merge_adapters, student_type, adapter, base_model)
    except CLIUsageError as error:
        if adapter is not None or os.path.exists(name):
            raise
        # the cache's record that the repository has no adapter config may be stale (it has become one of
        # adapters since): ask the Hub before giving up
        try:
            adapter = _adapter_config(name, trust_cached_absence=False)
        except CLIUsageError:
            adapter = None
        if adapter is None:
            raise error
        return _pretrained_as(name, tokenizer_name, merge_adapters, student_type, adapter, base_model)


_GIVEN_BASE = "model given as --base-model"
"""What :func:`failed_load_error` calls the base model given for adapters (``--base-model``,
``load_student(base_model=...)``) when it does not load."""


def _pretrained_as(
    name: str,
    tokenizer_name: str,
    merge_adapters: bool,
    student_type: str | None,
    adapter: dict[str, Any] | None,
    base_model: str | None = None,
) -> tuple[Any, Any]:
    """:func:`_pretrained` of a model that holds the adapters ``adapter`` (their config), or none; ``base_model``
    (``--base-model``) is the base model the adapters go on instead of the one their config names."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    if base_model is not None:
        if adapter is None:
            if _holds_full_model(name):
                raise _base_model_without_adapters(name, base_model)
        else:
            _check_given_base(name, adapter, base_model)
            # a local folder by its absolute path, as --model's (the merged model and its adapters remember it)
            adapter = {**adapter, "base_model_name_or_path": _model_source(base_model)}
    base_tokenizer = False
    if adapter is not None and tokenizer_name == name:
        tokenizer_name = _adapter_tokenizer_source(name, adapter)
        base_tokenizer = tokenizer_name != name
    problem = tokenizer_files_problem(tokenizer_name)
    if problem:
        option = "--model" if tokenizer_name == name else "--tokenizer-name-or-path"
        if base_tokenizer:
            given = "--base-model" if base_model is not None else "their base model"
            option = f"--model {name!r} holds adapters without a tokenizer, and {given}"
        raise CLIUsageError(
            f"{option} {problem}: transformers would build a tokenizer with an empty vocabulary; save the "
            "tokenizer into the folder (tokenizer.save_pretrained) or copy the base model's tokenizer files there"
        )
    try:
        options = (
            _adapter_repo_tokenizer_options(name) if adapter is not None and tokenizer_name == name else {}
        )
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name, **options)
    except (OSError, ValueError) as error:
        if base_tokenizer and base_model is not None:
            raise failed_load_error("tokenizer", base_model, error) from error
        if base_tokenizer:
            raise _adapter_base_error(
                name, adapter, error, found=("tokenizer", tokenizer_name), inference=merge_adapters
            ) from error
        raise failed_load_error("tokenizer", tokenizer_name, error) from error
    kind = _saved_kind(name, adapter)
    if student_type is not None and student_type != kind:
        raise CLIUsageError(
            f"--student-type {student_type} but {name!r} holds a {kind} model; leave --student-type out to "
            "use the model's kind"
        )
    causal = kind == "causal"
    try:
        if adapter is not None:
            try:
                from peft import AutoPeftModelForCausalLM, AutoPeftModelForSeq2SeqLM
            except ImportError as error:  # pragma: no cover - depends on the environment
                raise CLIUsageError(
                    f"{name!r} holds LoRA adapters; loading them needs peft: pip install 'hf-cotmi[peft]'"
                ) from error
            loader = AutoPeftModelForCausalLM if causal else AutoPeftModelForSeq2SeqLM
            # trainable unless merged: a training run from saved adapters trains them further
            if not merge_adapters:
                _check_trainable_adapters(name)
            # from a Hub repository too: peft fetches the adapters (the base model by its name in the
            # adapter config), from the Hugging Face cache when offline
            if base_model is None:
                model = loader.from_pretrained(name, is_trainable=not merge_adapters)
            else:
                own_tokenizer = tokenizer if tokenizer_name == name else None
                model = _adapters_on(name, base_model, causal, not merge_adapters, own_tokenizer)
            if merge_adapters:
                model = _merged(model, name, causal)
        else:
            # a local folder by its absolute path: the model remembers it (name_or_path), and adapters
            # trained on it save it as their base model, which must load from any working folder
            auto = AutoModelForCausalLM if causal else AutoModelForSeq2SeqLM
            model = auto.from_pretrained(_model_source(name))
    except CLIUsageError:
        raise
    except (OSError, ValueError) as error:
        if adapter is not None and base_model is None:
            raise _adapter_base_error(name, adapter, error, inference=merge_adapters) from error
        raise failed_load_error("model", name, error) from error
    if adapter is None and base_model is not None:  # --model loaded, though no file said it was a full model
        raise _base_model_without_adapters(name, base_model)
    return model, tokenizer


def _model_source(name: str) -> str:
    """What ``from_pretrained`` is given for the model ``name``: a local folder by its absolute path, a Hub
    name as it is."""
    return os.path.abspath(name) if os.path.isdir(name) else name


def _holds_full_model(name: str) -> bool:
    """Whether the model ``name`` (a folder, or a Hub repository without ``adapter_config.json``) has a
    ``config.json``: a full model (False where that cannot be told, offline)."""
    from transformers import CONFIG_NAME

    try:
        return model_file(name, CONFIG_NAME) is not None
    except (HubFileUnreachable, CLIUsageError):
        return False


def _base_model_without_adapters(name: str, base_model: str) -> CLIUsageError:
    """The error for ``--base-model`` given with a ``--model`` that holds no adapters."""
    return CLIUsageError(
        f"--base-model {base_model!r} is for LoRA adapters, but --model {name!r} holds a full model "
        f"(no {ADAPTER_CONFIG}), which loads without a base model; leave --base-model out"
    )


def _check_given_base(name: str, adapter: dict[str, Any], base_model: str) -> None:
    """Refuse a base model (``--base-model``) for the adapters ``name`` (``adapter``: the values of their
    ``adapter_config.json``) that does not load, or whose kind (seq2seq or causal) is not the adapters'."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(_model_source(base_model))
    except (OSError, ValueError) as error:
        raise failed_load_error(_GIVEN_BASE, base_model, error) from error
    task = str(adapter.get("task_type") or "")
    if task not in ("CAUSAL_LM", "SEQ_2_SEQ_LM"):
        return  # the base model's config says what the adapters are
    wanted = "causal" if task == "CAUSAL_LM" else "seq2seq"
    given = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    if given != wanted:
        recorded = adapter.get("base_model_name_or_path")
        trained = f" (their {ADAPTER_CONFIG} names {recorded!r})" if recorded else ""
        raise CLIUsageError(
            f"--base-model {base_model!r} holds a {given} model, but the adapters of --model {name!r} are for a "
            f"{wanted} one (task_type {task} in their {ADAPTER_CONFIG}); give the base model they were trained "
            f"on{trained}"
        )


def _adapters_on(name: str, base_model: str, causal: bool, trainable: bool, own_tokenizer: Any | None) -> Any:
    """The PEFT adapters ``name`` (a folder or Hub repository) on the model ``base_model`` (``--base-model``)
    instead of the base model their ``adapter_config.json`` names, as ``AutoPeftModel*.from_pretrained`` puts
    them on that one: the base model's embeddings grow to the adapters' own tokenizer (``own_tokenizer``) when
    it is the larger. The loaded adapters' config names ``base_model`` (saved again, they name it).

    Raises:
        CLIUsageError: ``base_model`` does not load, or the adapters' weights do not fit it (naming both).
    """
    from peft import PeftConfig, PeftModelForCausalLM, PeftModelForSeq2SeqLM
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    source = _model_source(base_model)
    try:
        base = (AutoModelForCausalLM if causal else AutoModelForSeq2SeqLM).from_pretrained(source)
    except (OSError, ValueError) as error:
        raise failed_load_error(_GIVEN_BASE, base_model, error) from error
    if own_tokenizer is not None and len(own_tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(own_tokenizer))
    config = PeftConfig.from_pretrained(name)
    config.base_model_name_or_path = source
    loader = PeftModelForCausalLM if causal else PeftModelForSeq2SeqLM
    try:
        return loader.from_pretrained(base, name, is_trainable=trainable, config=config)
    except (RuntimeError, ValueError) as error:
        lines = [line.strip() for line in str(error).splitlines()]
        # torch: a weight of the adapters has another shape than the base model's; peft: a module the
        # adapters change is not in the base model. Other errors (missing weights, ...) are --model's.
        misfit = [line for line in lines if "size mismatch" in line or "not found in the base model" in line]
        if not misfit:
            raise
        detail = misfit[0].rstrip(".")
        raise CLIUsageError(
            f"the adapters of --model {name!r} do not fit --base-model {base_model!r} ({detail}); give the base "
            "model they were trained on"
        ) from error


_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
"""Either of these beside PEFT adapters (``save_pretrained`` of a tokenizer writes both, or the first with
a vocabulary file) means the adapters come with their own tokenizer."""


def _adapter_tokenizer_source(name: str, adapter: dict[str, Any]) -> str:
    """Where the tokenizer of the PEFT adapters ``name`` (a folder or Hub repository; ``adapter`` the values of
    its ``adapter_config.json``) loads from: ``name`` itself when it holds a tokenizer (``tokenizer_config.json``
    or ``tokenizer.json``), else their base model (``base_model_name_or_path``), as PEFT users expect of
    adapters saved or pushed without one. Offline, a repository whose files are neither cached nor recorded
    missing keeps ``name``.
    """
    base = adapter.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        return name
    for filename in _TOKENIZER_FILES:
        try:
            if model_file(name, filename) is not None:
                return name
        except HubFileUnreachable:
            return name  # unknown: the repository's own tokenizer is tried, as before
    logger.info(
        "%r holds adapters without tokenizer files (%s): loading the tokenizer of their base model %r",
        name,
        " or ".join(_TOKENIZER_FILES),
        base,
    )
    return base


def _adapter_repo_tokenizer_options(name: str) -> dict[str, Any]:
    """``AutoTokenizer.from_pretrained`` options for the tokenizer beside PEFT adapters ``name``.

    transformers reads the model's ``config.json`` first; adapters have none, and for a folder (or a Hub
    repository answering that it has none) transformers goes on with an empty config. Offline, a Hub
    repository's file that is not in the cache is unknown rather than missing, and transformers refuses the
    tokenizer unless an earlier online look recorded the file missing (a repository fetched with
    ``hf download``, say, has no such record): the empty config is passed here for it, as transformers would
    use it. A folder, or a repository with a ``config.json``, gets no options.

    Offline, that includes a repository that does have a ``config.json`` which is not in the cache: the empty
    config then stands in for it, and where ``tokenizer_config.json`` names no ``tokenizer_class``,
    transformers picks the tokenizer class without the model type that ``config.json`` would give, which can
    be another class than online. Repositories pushed by hf-cotmi are unaffected: their
    ``tokenizer_config.json`` always records ``tokenizer_class``.
    """
    from transformers import CONFIG_NAME, PreTrainedConfig

    if os.path.exists(name):
        return {}
    try:
        if model_file(name, CONFIG_NAME) is not None:
            return {}
    except HubFileUnreachable:
        pass
    return {"config": PreTrainedConfig()}


def _check_trainable_adapters(folder: str) -> None:
    """Refuse prompt-learning adapters for further training: peft loads them frozen only."""
    from peft import PeftConfig

    from .peft_methods import peft_type_name

    config = PeftConfig.from_pretrained(folder)
    if getattr(config, "is_prompt_learning", False):
        raise CLIUsageError(
            f"{folder!r} holds {peft_type_name(config)} adapters, which peft cannot load to train further "
            "(it loads prompt-learning adapters frozen); train new ones from the base model "
            f"({config.base_model_name_or_path!r}) instead"
        )


def _merged(model: Any, folder: str, causal: bool) -> Any:
    """The base model with the adapters of ``model`` (a ``PeftModel`` loaded from ``folder``) merged in.

    Prompt learning (prompt tuning, p-tuning, prefix tuning) has no weights to merge: its virtual tokens
    exist only inside peft's forward, which the inference code (generation from encoder outputs, candidate
    scoring on a cache) goes around, so it is refused here by name.
    """
    from .peft_methods import prompt_learning_method

    kind = prompt_learning_method(model)
    if kind:
        loader = "AutoPeftModelForCausalLM" if causal else "AutoPeftModelForSeq2SeqLM"
        raise CLIUsageError(
            f"{folder!r} holds {kind} adapters, which cannot be merged into their base model; evaluate and "
            "predict take full weights or adapters that change weights (LoRA, IA3, LoHa, LoKr, ...). Load these "
            f"with peft's {loader}.from_pretrained and evaluate them with "
            "DSSMITrainer(model=..., args=DSSMITrainingArguments(..., predict_with_generate=True)).predict(features)"
        )
    return model.merge_and_unload()


def _is_absolute_path(path: str) -> bool:
    r"""Whether ``path`` is absolute on POSIX or on Windows: adapters name their base folder as the machine
    that trained them wrote it, which may be the other kind of machine (``C:\Users\me\t5-small``,
    ``C:/Users/me/t5-small`` and ``\\server\share\t5-small`` are absolute on Linux too).

    Examples:
        >>> [_is_absolute_path(p) for p in ("/home/me/t5", "C:\\me\\t5", "C:/me/t5", "runs/t5", "t5-small")]
        [True, True, True, False, False]
    """
    return posixpath.isabs(path) or ntpath.isabs(path)


def _base_model_missing(base: str) -> bool:
    """Whether the base model ``base`` that adapters name cannot be found: it is no folder here, and (unless
    it is an absolute path, :func:`_is_absolute_path`, which names a folder, never a Hub repository) no Hub
    repository with a ``config.json`` (offline: none in the cache; a repository the Hub refuses, or whose
    ``config.json`` neither the Hub nor the cache can provide, counts as missing)."""
    from transformers import CONFIG_NAME

    if os.path.isdir(base):
        return False
    if _is_absolute_path(base):
        return True
    try:
        return model_file(base, CONFIG_NAME) is None
    except (HubFileUnreachable, CLIUsageError):
        return True


def _adapter_base_error(
    folder: str,
    adapter: dict[str, Any],
    error: Exception,
    *,
    found: tuple[str, str] | None = None,
    inference: bool = True,
) -> CLIUsageError:
    """The error for adapters (in a folder or Hub repository) that do not load: naming the base model their
    ``adapter_config.json`` (its values ``adapter``) needs when that base model itself cannot be found
    (:func:`_base_model_missing`: a relative path read from another working folder, an absolute path of the
    machine that trained them, or an absent Hub name), else :func:`failed_load_error` of ``found`` (what
    failed and its name; default: the model ``folder``, whose adapters' weights are missing, or which the Hub
    failed to serve, ...).

    For ``inference`` (``evaluate``, ``predict``) the message says to give the base model with
    ``--base-model``; otherwise (the adapters trained further, where there is no such option) to set
    ``base_model_name_or_path`` in the adapters' config."""
    base = adapter.get("base_model_name_or_path")
    if not isinstance(base, str) or not base or not _base_model_missing(base):
        what, name = found or ("model", folder)
        return failed_load_error(what, name, error)
    named = f"could not load the model {folder!r}: it holds LoRA adapters whose base model {base!r} "
    named += f"(base_model_name_or_path in its {ADAPTER_CONFIG})"
    given = "give --base-model the base model's Hub name or its folder here"
    if _is_absolute_path(base):  # peft wrote the folder training started from, on the machine it ran on
        missing = f"{named} is no folder on this machine: it is where the base model was when the adapters were trained"
        if inference:
            return CLIUsageError(f"{missing}. {given[0].upper()}{given[1:]}, or put the base model there")
        target = "to the base model's Hub name or its folder here"
        if os.path.isdir(folder):
            rebase = f"set base_model_name_or_path in {os.path.join(folder, ADAPTER_CONFIG)} {target}"
        else:  # a Hub repository
            rebase = (
                f"download the adapters (hf download {folder} --local-dir DIR), set base_model_name_or_path in "
                f"DIR/{ADAPTER_CONFIG} {target} and give --model DIR"
            )
        return CLIUsageError(f"{missing}. Put the base model there, or {rebase}")
    missing = (
        f"{named} is neither a folder here nor on the Hugging Face Hub ({error_summary(error)}); a relative path "
        "is read from the current folder"
    )
    if inference:
        return CLIUsageError(f"{missing}: {given}, or run from the folder training ran in")
    return CLIUsageError(
        f"{missing}: run from the folder training ran in, or set base_model_name_or_path to the base model's "
        "absolute path or Hub name"
    )


def _built_in(args: ModelArguments, vocabulary: Sequence[str], seed: int) -> tuple[Any, Any, str]:
    """The small student built from a config: a T5, or a Llama for ``student_type="causal"``."""
    from .tiny import build_tiny_causal_lm, build_tiny_seq2seq, build_word_tokenizer

    tokenizer = build_word_tokenizer(list(vocabulary), max_vocab_size=16000)
    layers, heads, width, inner = args.tiny_num_layers, args.tiny_num_heads, args.tiny_d_model, args.tiny_d_ff
    if args.student_type == "causal":
        model = build_tiny_causal_lm(
            tokenizer,
            "llama",
            hidden_size=width,
            num_layers=layers,
            num_heads=heads,
            intermediate_size=inner,
            seed=seed,
        )
        kind, shape = "Llama (decoder-only)", f"hidden size {width}, {layers} layers"
    else:
        model = build_tiny_seq2seq(
            tokenizer, "t5", d_model=width, num_layers=layers, num_heads=heads, d_ff=inner, seed=seed
        )
        kind, shape = "T5", f"d_model {width}, {layers}+{layers} layers"
    count = sum(p.numel() for p in model.parameters())
    description = (
        f"{kind} built from a config ({count:,} parameters, {shape}) with a word-level tokenizer of "
        f"{len(tokenizer)} tokens"
    )
    return model, tokenizer, description


def load_student(
    source: ModelArguments | str | os.PathLike[str] | None = None,
    texts: Sequence[str] = (),
    *,
    extra_vocabulary: Sequence[str] = (),
    for_inference: bool = False,
    device: str | None = None,
    seed: int = 0,
    base_model: str | os.PathLike[str] | None = None,
    **model_options: Any,
) -> Student:
    """Load (or build) a student, seq2seq or decoder-only, and its tokenizer.

    A folder or Hub name loads with ``AutoModelForSeq2SeqLM`` when its config is encoder-decoder and with
    ``AutoModelForCausalLM`` otherwise (LoRA adapters with ``AutoPeftModelForSeq2SeqLM`` /
    ``AutoPeftModelForCausalLM``, by the adapter's task type). Adapters are recognised by their
    ``adapter_config.json`` in a folder or in a Hub repository (a LoRA run pushed with ``push_to_hub``, as
    ``AutoPeftModel*.from_pretrained`` takes it): the base model it names (``base_model_name_or_path``)
    loads with the adapters on top; offline (``HF_HUB_OFFLINE=1``) the repository's files come from the
    Hugging Face cache. Adapters without tokenizer files (neither ``tokenizer_config.json`` nor
    ``tokenizer.json``, as plain PEFT saves them) get their base model's tokenizer. ``base_model``
    (``--base-model``) puts the adapters on another base model than the one their config names: adapters
    trained from a local folder name its absolute path, which other machines lack.

    Args:
        source: :class:`~hf_cotmi.run_arguments.ModelArguments`, a Hub name or folder (a pretrained model,
            or one a training run saved: full weights, or LoRA adapters with ``adapter_config.json``, in a
            folder or a Hub repository), or ``None`` for the small model built from a config with a
            word-level tokenizer over ``texts``: a T5, or a Llama with ``student_type="causal"``.
        texts: training texts the built-in tokenizer's vocabulary is taken from.
        extra_vocabulary: more texts for that vocabulary (e.g. every number the task can produce).
        for_inference: merge LoRA adapters into their base model, move the model to ``device`` and put it
            in eval mode (what ``evaluate``/``predict`` want); otherwise adapters stay trainable.
        device: with ``for_inference``: ``cpu``, ``cuda``, ... (default: CUDA when available, else CPU).
        seed: initialisation seed of the built-in model.
        base_model: for LoRA adapters: the base model to load them onto, a Hub name or a local folder, instead
            of their ``base_model_name_or_path``; the tokenizer is then the adapters' own, else this model's.
            Loaded as the model is, without ``trust_remote_code``. Refused for a full model.
        **model_options: :class:`~hf_cotmi.run_arguments.ModelArguments` fields when ``source`` is not one.

    Returns:
        A :class:`Student` ``(model, tokenizer, description)``.

    Raises:
        CLIUsageError: the model or tokenizer cannot be loaded, a local folder holds no tokenizer files
            (:func:`tokenizer_files_problem`), ``source`` is a file, ``student_type`` contradicts the
            saved model's kind, the adapters' base model cannot be found (naming it), their
            ``adapter_config.json`` is not a JSON object, or the folder holds prompt-learning adapters
            (prompt tuning, prefix tuning, ...), which cannot be merged for inference nor loaded trainable;
            ``base_model`` with a model that holds no adapters (or none at all), a ``base_model`` that does not
            load, is of the other kind (seq2seq or causal) than the adapters, or does not fit their weights.

    Examples:
        >>> model, tokenizer, text = load_student(texts=["tom has 3 apples"], tiny_d_model=16)
        >>> type(model).__name__
        'T5ForConditionalGeneration'
        >>> # model, tokenizer, _ = load_student("demo-out", for_inference=True)  # a trained folder
        >>> # load_student("me/lora-run", for_inference=True)  # LoRA pushed to the Hub: base + adapters
        >>> # load_student("me/lora-run", base_model="google-t5/t5-small")  # its recorded base is elsewhere
    """
    if isinstance(source, ModelArguments):
        args = source
    else:
        name = os.fspath(source) if source is not None else None
        args = ModelArguments(model_name_or_path=name, **model_options)
    base = os.fspath(base_model) if base_model is not None else None
    if base is not None and not args.model_name_or_path:
        raise CLIUsageError(
            f"--base-model {base!r} needs --model: the LoRA adapters to load onto it (a folder or Hub repository)"
        )
    if args.model_name_or_path:
        name = args.model_name_or_path
        model, tokenizer = _pretrained(
            name,
            args.tokenizer_name_or_path or name,
            merge_adapters=for_inference,
            student_type=args.student_type,
            base_model=base,
        )
        count = sum(p.numel() for p in model.parameters())
        description = f"{name} ({type(model).__name__}, {count:,} parameters)"
    else:
        model, tokenizer, description = _built_in(args, list(extra_vocabulary) + list(texts), seed)
    if for_inference:
        import torch

        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.eval()
    return Student(model, tokenizer, description)


def peft_config(args: ModelArguments, student_type: str = "seq2seq") -> Any:
    """The LoRA configuration ``args`` asks for (``lora_r``, ``lora_alpha``, ``lora_dropout``, targets).

    ``student_type`` (``"seq2seq"`` or ``"causal"``, see :func:`hf_cotmi.resolve_student_type`) picks
    peft's task type.

    Raises:
        CLIUsageError: peft is not installed.

    Examples:
        >>> peft_config(ModelArguments(lora_r=4)).r
        4
    """
    try:
        from peft import LoraConfig, TaskType
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise CLIUsageError("--use-peft needs the peft package: pip install 'hf-cotmi[peft]'") from error
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM if student_type == "causal" else TaskType.SEQ_2_SEQ_LM,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=lora_target_modules(args.lora_target_modules),
    )


def lora_target_modules(names: Sequence[str] | str | None) -> list[str] | str | None:
    """``--lora-target-modules`` as peft takes it: ``all-linear`` (peft's keyword) as the plain string, and
    comma-separated names (``q,v``) split.

    Examples:
        >>> lora_target_modules(["all-linear"]), lora_target_modules(["q,v", "o"]), lora_target_modules(None)
        ('all-linear', ['q', 'v', 'o'], None)
    """
    if names is None:
        return None
    items = [names] if isinstance(names, str) else list(names)
    split = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    if split == ["all-linear"]:
        return "all-linear"
    if "all-linear" in split:
        raise CLIUsageError("--lora-target-modules all-linear stands alone; it cannot be combined with names")
    return split
