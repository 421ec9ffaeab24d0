"""The model card of a student distilled with hf-cotmi: the card data, the callback that fills it, rendering.

:class:`DSSModelCardData` holds what the card says. :class:`DSSModelCardCallback` fills it while a trainer
runs (hyperparameters at train begin, losses on every log, metrics on every evaluation), and
:func:`render_model_card` renders it through the Markdown (Jinja) template shipped in the package,
``hf_cotmi/templates/model_card_template.md``, with ``huggingface_hub.ModelCard.from_template``.
:class:`~hf_cotmi.DSSMITrainer` registers the callback itself and declares the card's tags and papers as
class attributes (``_tag_names``, ``_papers``).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import CardData, ModelCard
from transformers import TrainerCallback

from .data.dss import DEFAULT_NLI_SEPARATOR, DSS_DATASETS, format_cqa_input
from .prefixes import EXPLAIN_PREFIX, PREDICT_PREFIX

TAGS = ["hf-cotmi", "distilling-step-by-step", "chain-of-thought-distillation"]

TEMPLATE_NAME = "templates/model_card_template.md"

TRAINING_LOSS_KEYS = ("loss", "loss_label", "loss_rationale", "loss_mi")
"""Training-log keys that go into the card's table of training results."""

MAX_TRAINING_ROWS = 40
"""Most rows the card's training-results table shows; longer histories are thinned evenly (and say so)."""

_METRIC_SPLITS = {"eval_": "validation", "test_": "test"}
"""The prefix of a card metric's name -> the split it was measured on."""
_METRIC_PREFIXES = tuple(_METRIC_SPLITS)
_NOT_METRICS = ("_runtime", "_per_second", "_steps_per_second")


@dataclass(frozen=True)
class Paper:
    """A paper the card cites: the heading above its BibTeX, its title, arXiv id and BibTeX entry.

    Examples:
        >>> DISTILLING_STEP_BY_STEP.arxiv_id
        '2305.02301'
    """

    heading: str
    title: str
    arxiv_id: str
    bibtex: str


DISTILLING_STEP_BY_STEP = Paper(
    heading="Distilling Step-by-Step (Hsieh et al., 2023)",
    title="Distilling Step-by-Step! Outperforming Larger Language Models with Less Training Data and Smaller "
    "Model Sizes",
    arxiv_id="2305.02301",
    bibtex="""@inproceedings{hsieh2023distilling,
  title     = {Distilling Step-by-Step! Outperforming Larger Language Models with Less Training Data
               and Smaller Model Sizes},
  author    = {Hsieh, Cheng-Yu and Li, Chun-Liang and Yeh, Chih-Kuan and Nakhost, Hootan and
               Fujii, Yasuhisa and Ratner, Alexander and Krishna, Ranjay and Lee, Chen-Yu and Pfister, Tomas},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2023},
  year      = {2023},
  eprint    = {2305.02301},
  archivePrefix = {arXiv}
}""",
)

MUTUAL_INFORMATION_COT_DISTILLATION = Paper(
    heading="Mutual-information loss (Chen et al., 2024)",
    title="Learning to Maximize Mutual Information for Chain-of-Thought Distillation",
    arxiv_id="2403.03348",
    bibtex="""@inproceedings{chen2024learning,
  title     = {Learning to Maximize Mutual Information for Chain-of-Thought Distillation},
  author    = {Chen, Xin and Huang, Hanxian and Gao, Yanjun and Wang, Yi and Zhao, Jishen and Ding, Ke},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2024},
  year      = {2024},
  eprint    = {2403.03348},
  archivePrefix = {arXiv}
}""",
)

PAPERS = (DISTILLING_STEP_BY_STEP, MUTUAL_INFORMATION_COT_DISTILLATION)

ARITHMETIC_EXAMPLE = "Tom has 3 apples and buys 4 more. How many apples does he have?"
"""The usage snippet's input for arithmetic tasks (``svamp``, ``synthetic``) and tasks it does not know."""

NLI_EXAMPLE = ("A man in a red shirt is playing a guitar on stage.", "A man is performing music.")
"""The premise and hypothesis of the usage snippet's input for NLI tasks (``esnli``, ``anli1``)."""

CQA_EXAMPLE = (
    "Where would you put a plate after washing it?",
    ["cupboard", "table", "sink", "restaurant", "oven"],
)
"""The question and answer choices of the usage snippet's input for ``cqa``."""

DEFAULT_LABEL_MAX_NEW_TOKENS = 32
"""New tokens the usage snippet lets the answer take when the card does not know the run's limit."""
DEFAULT_RATIONALE_MAX_NEW_TOKENS = 256
"""New tokens the usage snippet lets the rationale take when the card does not know the run's limit."""


@dataclass(frozen=True)
class HeldOutSubset:
    """A held-out split whose figures cover only its first ``evaluated`` examples.

    Args:
        split: the data's name of the split (``test``, ``valid``).
        evaluated: the examples evaluated (the first ones of the split).
        available: the examples the split holds, when known.
        option: the option that cut the split (``--max-test-samples``), named by the card.

    Examples:
        >>> HeldOutSubset("test", evaluated=50, available=1000).evaluated
        50
    """

    split: str
    evaluated: int
    available: int | None = None
    option: str | None = None


def held_out_subset(
    split: str, evaluated: int, limit: int | None, available: int | None, option: str | None = None
) -> HeldOutSubset | None:
    """The :class:`HeldOutSubset` a first-``limit`` cut left, or None when the whole split was evaluated.

    Args:
        split: the data's name of the split.
        evaluated: the examples evaluated after the cut.
        limit: the cut asked for (``max_test_samples``), None when none was.
        available: the examples of the split before the cut; None when unknown (then a split as long as
            ``limit`` counts as cut, since examples may have been left out).
        option: the option that cut it, for the card's note.

    Examples:
        >>> held_out_subset("test", evaluated=50, limit=50, available=1000)
        HeldOutSubset(split='test', evaluated=50, available=1000, option=None)
        >>> held_out_subset("test", evaluated=80, limit=100, available=80) is None
        True
    """
    if limit is None or evaluated < limit:
        return None
    if available is not None and available <= evaluated:
        return None
    return HeldOutSubset(split, evaluated, available, option)


_SNAPSHOT_COMMIT = re.compile(r"[0-9a-f]{40}")
"""The name of a snapshot folder in the Hugging Face cache: the commit it holds."""


def cached_snapshot_repo_id(folder: str | os.PathLike[str]) -> str | None:
    """The Hub repository whose snapshot ``folder`` is, when it is one in the Hugging Face cache's layout
    (``.../models--org--name/snapshots/<commit>``, what ``from_pretrained`` and ``hf download`` fill), else
    None. The cache spells the repository id exactly (``/`` as ``--``, which repository names cannot hold),
    so the id is read from the path alone, whatever the folder's files say.

    Examples:
        >>> cached_snapshot_repo_id("/home/me/.cache/huggingface/hub/models--google-t5--t5-small/snapshots/" + "a" * 40)
        'google-t5/t5-small'
        >>> cached_snapshot_repo_id("/srv/hub/models--gpt2/snapshots/" + "0" * 40)
        'gpt2'
        >>> cached_snapshot_repo_id("/home/me/models/t5-small") is None
        True
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    parts = os.path.normpath(os.fspath(folder)).replace("\\", "/").split("/")
    if len(parts) < 3 or parts[-2] != "snapshots" or not _SNAPSHOT_COMMIT.fullmatch(parts[-1]):
        return None
    repository = parts[-3]
    if not repository.startswith("models--"):
        return None
    repo_id = repository[len("models--") :].replace("--", "/")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return repo_id


def card_base_model(name_or_path: str | None) -> tuple[str | None, str | None]:
    r"""What the card says a student was fine-tuned from, given the name or path its config records
    (``config._name_or_path``): ``(base_model, local_base_model)``.

    - a folder of the Hugging Face cache: ``(its repository id, None)`` (:func:`cached_snapshot_repo_id`),
      also through a link to it (its real path is read);
    - any other folder here: ``(None, its base name)``. A folder is no Hub id, and its path would leak the
      directory layout and break the card's link; the card names the folder's base name only, and
      ``base_model`` stays out of the metadata;
    - a path that is no folder here (moved, or relative to another working folder) and cannot be a Hub id:
      ``(None, its base name)`` too. These are the absolute paths (``/...``, ``C:\...``), those starting
      with ``./`` or ``../``, and any with a backslash, a second ``/``, or another character a repository id
      cannot hold (``huggingface_hub.utils.validate_repo_id``);
    - any other name (``t5-small``, ``org/name``, and so also a relative ``models/t5-small`` that is no
      folder here, which ``from_pretrained`` would take for a Hub id as well): ``(name, None)``, the
      metadata's ``base_model``, linked in the card;
    - nothing (a model built from a config): ``(None, None)``.

    Examples:
        >>> card_base_model("google-t5/t5-small")
        ('google-t5/t5-small', None)
        >>> card_base_model("/home/me/models/t5-small")
        (None, 't5-small')
        >>> card_base_model("C:\\Users\\me\\t5-small")
        (None, 't5-small')
        >>> card_base_model("/home/me/.cache/huggingface/hub/models--google-t5--t5-small/snapshots/" + "a" * 40)
        ('google-t5/t5-small', None)
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not name_or_path:
        return None, None
    repo_id = cached_snapshot_repo_id(name_or_path)
    if repo_id is None and os.path.isdir(name_or_path):  # a link to a cache folder is one too
        repo_id = cached_snapshot_repo_id(os.path.realpath(name_or_path))
    if repo_id is not None:
        return repo_id, None
    if not os.path.isdir(name_or_path):
        try:
            validate_repo_id(name_or_path)
            return name_or_path, None
        except HFValidationError:
            pass  # a path that is no folder here (moved, or read from another working folder)
    # a Windows path (adapters trained there name their base folder so) ends at its last backslash too
    return None, os.path.basename(os.path.normpath(name_or_path.replace("\\", "/"))) or None


# Kept for code that imported the BibTeX strings directly.
DSS_BIBTEX = DISTILLING_STEP_BY_STEP.bibtex
MI_BIBTEX = MUTUAL_INFORMATION_COT_DISTILLATION.bibtex


@dataclass
class DSSModelCardData(CardData):
    """What the card says: a ``huggingface_hub.CardData`` whose ``to_yaml`` is the card's YAML metadata and
    whose ``to_dict`` is what the template is rendered with.

    :class:`DSSModelCardCallback` fills ``hyperparameters``, ``loss_settings``, ``training_logs`` and
    ``metrics`` while a trainer runs; :meth:`hf_cotmi.DSSMITrainer.model_card_data` adds the names (model,
    repository, base model, datasets) when the card is written.

    Args:
        model_name: the card's title (and the model-index name).
        repo_id: the repository the usage snippet loads from (defaults to ``model_name``).
        base_model: the Hub model the student was fine-tuned from, if any (a repository id, never a path:
            :func:`card_base_model`).
        datasets: dataset names for the metadata.
        loss_settings: the loss weights and MI settings (``DSSMITrainingArguments.loss_settings()``).
        hyperparameters: learning rate, batch sizes, steps, seed, optimizer, schedule.
        metrics: the last value of every evaluated ``eval_*`` / ``test_*`` metric.
        predict_prefix: the label task's prefix, used in the usage snippet.
        explain_prefix: the rationale task's prefix, used in the usage snippet.
        extra_tags: the user's tags, appended to ``tags`` in the metadata.
        license: the licence in the metadata, if given.
        language: the language(s) in the metadata, if given.
        framework_versions: library versions listed at the end of the card.
        training_logs: one row per logged step: ``step``, ``epoch``, ``loss``, ``loss_label``,
            ``loss_rationale``, ``loss_mi`` and ``eval_loss`` where they were logged.
        model_class: the ``transformers`` auto class the usage snippet loads the student with
            (``AutoModelForCausalLM`` for a decoder-only student: the snippet then also drops the prompt
            from the generated ids).
        prompt_start_ids: for a decoder-only student, the token ids training put before a prompt's text
            (:func:`hf_cotmi.data.causal.leading_special_ids`: its BOS where it has one); the usage snippet
            builds the prompt as training did, text without an end-of-sequence token.
        chat_template: the decoder-only student was trained on chat-template prompts (the snippet renders
            the user turn and the assistant header with ``apply_chat_template``).
        pipeline_tag: the Hub pipeline tag; ``None`` picks it from ``model_class``
            (``text-generation`` for ``*CausalLM``, else ``text2text-generation``).
        library_name: the library the repository is loaded with: ``"transformers"`` for full weights,
            ``"peft"`` for a student saved as PEFT adapters (``adapter_model.safetensors``, no base weights),
            as PEFT's own cards and the Hub's adapter repositories say.
        tags: the trainer's tags (``DSSMITrainer._tag_names``).
        papers: the papers cited at the end of the card (``DSSMITrainer._papers``).
        best_model_step: with ``load_best_model_at_end``, the step of the best checkpoint, whose weights
            training ends with; the ``eval_*`` metrics are then that step's evaluation.
        best_model_metric: the metric that checkpoint was chosen by (``eval_loss``, ``eval_accuracy``, ...).
        local_base_model: the base name of the local folder the student was loaded from (no Hub id to link;
            the card names the folder, never its absolute path). A folder of the Hugging Face cache has its
            repository id as ``base_model`` instead.
        label_max_new_tokens: the new tokens the usage snippet lets the answer take: the run's evaluation
            limit (``generation_max_length``, less the decoder's start token for a seq2seq student).
        rationale_max_new_tokens: the new tokens the usage snippet lets the rationale take (the run's
            ``rationale_max_new_tokens``).
        example_input: the usage snippet's input: one of the run's own (the first test input, as the
            student was prompted with it); None: a built-in example that fits ``task``.
        task: the task that picks the built-in example (``svamp``, ``cqa``, ``esnli``, ``anli1``,
            ``synthetic``, ...); None: ``datasets[0]``. An unknown task gets the arithmetic example.
        nli_separator: the text between premise and hypothesis in the built-in NLI example: the student
            tokenizer's EOS token, as :func:`hf_cotmi.prepare_dss_features` joins them.
        held_out_subsets: by metric prefix (``"test"``, ``"eval"``), the held-out splits whose figures cover
            only their first examples (see :func:`held_out_subset`); the card says so.
        confidence_mode: the confidence the ECE was measured with (``"candidates"``, ``"sequence"``,
            ``"first_token"``: :attr:`hf_cotmi.ECECallback.mode`); the evaluation section says which
            (:func:`ece_description`). None: unknown, nothing is said.
        label_candidates: in candidates mode, the fixed labels scored, or the name of the column holding each
            example's own candidates (CQA's ``choices``).
        max_input_length: the token limit training cut the prefixed inputs to (``--max-input-length``); the
            usage snippet cuts its prompt the same way (for a chat-template prompt it does not). None: no cut.

    Examples:
        >>> card = DSSModelCardData(model_name="t5-small-svamp-dssmi", loss_settings={"mi_loss_weight": 0.1})
        >>> "hf-cotmi" in render_model_card(card)
        True
        >>> DSSModelCardData("student", model_class="AutoModelForCausalLM").to_dict()["pipeline_tag"]
        'text-generation'
    """

    model_name: str | None = None
    repo_id: str | None = None
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    loss_settings: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    predict_prefix: str = PREDICT_PREFIX
    explain_prefix: str = EXPLAIN_PREFIX
    extra_tags: list[str] = field(default_factory=list)
    license: str | None = None
    language: str | list[str] | None = None
    framework_versions: dict[str, str] = field(default_factory=dict)
    training_logs: list[dict[str, float]] = field(default_factory=list)
    model_class: str = "AutoModelForSeq2SeqLM"
    prompt_start_ids: list[int] = field(default_factory=list)
    chat_template: bool = False
    pipeline_tag: str | None = None
    library_name: str = "transformers"
    tags: list[str] = field(default_factory=lambda: list(TAGS))
    papers: list[Paper] = field(default_factory=lambda: list(PAPERS))
    best_model_step: int | None = None
    best_model_metric: str | None = None
    local_base_model: str | None = None
    label_max_new_tokens: int = DEFAULT_LABEL_MAX_NEW_TOKENS
    rationale_max_new_tokens: int = DEFAULT_RATIONALE_MAX_NEW_TOKENS
    example_input: str | None = None
    task: str | None = None
    nli_separator: str = DEFAULT_NLI_SEPARATOR
    held_out_subsets: dict[str, HeldOutSubset] = field(default_factory=dict)
    confidence_mode: str | None = None
    label_candidates: list[str] | str | None = None
    max_input_length: int | None = None

    @property
    def method(self) -> str:
        """A human name of the training method from the loss weights.

        Examples:
            >>> DSSModelCardData("m", loss_settings={"mi_loss_weight": 0.0, "rationale_loss_weight": 0.5}).method
            'Distilling Step-by-Step'
        """
        mi = float(self.loss_settings.get("mi_loss_weight", 0) or 0)
        rationale = float(self.loss_settings.get("rationale_loss_weight", 0) or 0)
        if mi > 0:
            return "Distilling Step-by-Step with the mutual-information loss"
        if rationale > 0:
            return "Distilling Step-by-Step"
        return "standard fine-tuning"

    @property
    def rationale_task(self) -> bool:
        """Whether training ran the rationale task (``explain:`` -> rationale): false only when the loss
        settings record ``rationale_loss_weight`` and ``mi_loss_weight`` both 0 (standard fine-tuning, where
        the rationale pass is skipped and the card must not claim a rationale task).

        Examples:
            >>> DSSModelCardData("m", loss_settings={"rationale_loss_weight": 0, "mi_loss_weight": 0}).rationale_task
            False
            >>> DSSModelCardData("m").rationale_task
            True
        """
        settings = self.loss_settings
        if "rationale_loss_weight" not in settings or "mi_loss_weight" not in settings:
            return True
        return any(float(settings[name] or 0) > 0 for name in ("rationale_loss_weight", "mi_loss_weight"))

    @property
    def usage_input(self) -> str:
        """The input the usage snippet prompts with: ``example_input``, else a built-in one for the task.

        Examples:
            >>> DSSModelCardData("m", task="esnli", nli_separator="</s>").usage_input
            'A man in a red shirt is playing a guitar on stage.</s>A man is performing music.'
            >>> DSSModelCardData("m", example_input="2 + 2 ?").usage_input
            '2 + 2 ?'
        """
        if self.example_input is not None:
            return self.example_input
        return built_in_example(
            self.task or (self.datasets[0] if self.datasets else None), self.nli_separator
        )

    @property
    def resolved_pipeline_tag(self) -> str:
        """``pipeline_tag``, or the one that goes with ``model_class`` when it is not set.

        Examples:
            >>> DSSModelCardData("m").resolved_pipeline_tag
            'text2text-generation'
        """
        if self.pipeline_tag:
            return self.pipeline_tag
        return "text-generation" if self.model_class.endswith("CausalLM") else "text2text-generation"

    # ------------------------------------------------------------- filled while training

    def record_training_log(self, logs: dict[str, Any], step: int, epoch: float | None) -> None:
        """Add the losses of one training log (``loss`` and its components) as the row of ``step``.

        Examples:
            >>> card = DSSModelCardData("m")
            >>> card.record_training_log({"loss": 2.5, "loss_mi": 0.25, "learning_rate": 1e-3}, step=10, epoch=0.5)
            >>> card.training_logs
            [{'step': 10, 'epoch': 0.5, 'loss': 2.5, 'loss_mi': 0.25}]
        """
        losses = {k: float(logs[k]) for k in TRAINING_LOSS_KEYS if _is_number(logs.get(k))}
        if "loss" in losses:
            self._row(step, epoch).update(losses)

    def record_metrics(self, metrics: dict[str, Any], step: int, epoch: float | None) -> None:
        """Keep every ``eval_*`` / ``test_*`` metric (the latest value wins); ``eval_loss`` also goes into
        the row of ``step`` when training has reached it.

        Examples:
            >>> card = DSSModelCardData("m")
            >>> card.record_metrics({"test_accuracy": 0.75, "test_runtime": 1.2, "epoch": 1.0}, step=0, epoch=None)
            >>> card.metrics
            {'test_accuracy': 0.75}
        """
        self.metrics.update(card_metrics(metrics))
        if step > 0 and _is_number(metrics.get("eval_loss")):
            self._row(step, epoch)["eval_loss"] = float(metrics["eval_loss"])

    def _row(self, step: int, epoch: float | None) -> dict[str, float]:
        if self.training_logs and self.training_logs[-1]["step"] == step:
            return self.training_logs[-1]
        row: dict[str, float] = {"step": step}
        if epoch is not None:
            row["epoch"] = round(float(epoch), 4)
        self.training_logs.append(row)
        return row

    # ------------------------------------------------------------- what huggingface_hub reads

    def to_dict(self) -> dict[str, Any]:
        """The variables the template is rendered with (the fields plus the derived, formatted parts).

        Examples:
            >>> DSSModelCardData("m", repo_id="me/m").to_dict()["repo_literal"]
            '"me/m"'
        """
        values: dict[str, Any] = {name: getattr(self, name) for name in self.__dataclass_fields__}
        repo = self.repo_id or self.model_name
        values.update(
            method=self.method,
            rationale_task=self.rationale_task,
            pipeline_tag=self.resolved_pipeline_tag,
            repo_literal=_python_literal(repo or ""),
            question_literal=_python_literal(self.usage_input),
            held_out_notes=self._held_out_notes(),
            ece_note=self._ece_note(),
            predict_prefix_literal=_python_literal(self.predict_prefix),
            explain_prefix_literal=_python_literal(self.explain_prefix),
            generation_returns_prompt=self.model_class.endswith("CausalLM"),
            loss_rows=_rows(self.loss_settings),
            hyperparameter_rows=_rows(self.hyperparameters),
            metric_rows=_rows(dict(self.metrics)),
            training_table=_training_table(self.training_logs),
            papers=[{"heading": p.heading, "bibtex": p.bibtex} for p in self.papers],
        )
        return values

    def _held_out_notes(self) -> list[dict[str, Any]]:
        """The subsets whose figures the card lists (a prefix with no metric needs no note)."""
        notes = []
        for prefix, subset in self.held_out_subsets.items():
            if any(name.startswith(f"{prefix}_") for name in self.metrics):
                notes.append({"prefix": prefix, **dataclasses.asdict(subset)})
        return notes

    def _ece_note(self) -> str | None:
        """How the listed ECE was measured (:func:`ece_description`); None without an ECE or a known mode."""
        if not any(name.endswith("_ece") for name in self.metrics):
            return None
        return ece_description(self.confidence_mode, self.label_candidates)

    def metadata(self) -> dict[str, Any]:
        """The YAML metadata the Hub indexes, as a dict (``to_yaml`` dumps it).

        Examples:
            >>> DSSModelCardData("m", datasets=["svamp"]).metadata()["datasets"]
            ['svamp']
        """
        pipeline_tag = self.resolved_pipeline_tag
        meta: dict[str, Any] = {"library_name": self.library_name, "pipeline_tag": pipeline_tag}
        if self.license:
            meta["license"] = self.license
        if self.language:
            meta["language"] = self.language
        if self.base_model:
            meta["base_model"] = self.base_model
        if self.datasets:
            meta["datasets"] = list(self.datasets)
        meta["tags"] = list(dict.fromkeys(list(self.tags) + list(self.extra_tags)))
        if self.metrics:
            meta["metrics"] = sorted({_metric_type(k) for k in self.metrics})
            meta["model-index"] = [{"name": self.model_name, "results": self._index_results(pipeline_tag)}]
        return meta

    def _index_results(self, pipeline_tag: str) -> list[dict[str, Any]]:
        """One model-index result per evaluated split (``eval_*`` the validation split, ``test_*`` the test
        split), each naming its split."""
        dataset = self.datasets[0] if self.datasets else "unknown"
        results = []
        for prefix, split in _METRIC_SPLITS.items():
            metrics = {k: v for k, v in sorted(self.metrics.items()) if k.startswith(prefix)}
            if not metrics:
                continue
            results.append(
                {
                    "task": {"type": pipeline_tag, "name": "Chain-of-thought distillation"},
                    "dataset": {"name": dataset, "type": dataset, "split": split},
                    "metrics": [
                        {"type": _metric_type(k), "name": k, "value": _plain(v)} for k, v in metrics.items()
                    ],
                }
            )
        return results

    def to_yaml(self, line_break: str | None = None, original_order: list[str] | None = None) -> str:
        """The card's YAML metadata block (without the ``---`` lines).

        Examples:
            >>> print(DSSModelCardData("m").to_yaml().splitlines()[0])
            library_name: transformers
        """
        import yaml

        return yaml.safe_dump(
            self.metadata(), sort_keys=False, allow_unicode=True, line_break=line_break
        ).strip()


_ECE_METRICS = "The ECE (`*_ece`) and `*_avg_confidence` use"
_GENERATED_CORRECTNESS = (
    "the ECE measures it against whether that generated label is correct, "
    "the correctness `*_accuracy` counts."
)
_CHOSEN_CORRECTNESS = "while `*_accuracy` counts the label the student generates."
_MAX_LABELS_NAMED = 10


def ece_description(
    confidence_mode: str | None, label_candidates: list[str] | str | None = None
) -> str | None:
    """One sentence saying which confidence a card's ECE used and the correctness it was measured against.

    Sequence and first-token confidence belong to the generated label, so the ECE is measured against the
    correctness ``*_accuracy`` counts; candidates confidence belongs to the most likely candidate (a fixed
    label, or one of each example's own choices), so the ECE is measured against that candidate's
    correctness (``*_choice_accuracy``), while ``*_accuracy`` stays the generated label's.

    Args:
        confidence_mode: ``"candidates"``, ``"sequence"`` or ``"first_token"``; anything else (None): None.
        label_candidates: candidates mode's fixed labels, or the column of each example's own candidates.

    Examples:
        >>> print(ece_description("candidates", "choices"))  # doctest: +NORMALIZE_WHITESPACE
        The ECE (`*_ece`) and `*_avg_confidence` use candidates confidence, the softmax over each example's
        own `choices` of the student's likelihood of each, taken for the most likely one; the ECE measures it
        against whether that choice is correct (`*_choice_accuracy`), while `*_accuracy` counts the label the
        student generates.
        >>> ece_description(None) is None
        True
    """
    if confidence_mode == "sequence":
        return (
            f"{_ECE_METRICS} sequence confidence, the student's probability of the whole label it generates; "
            f"{_GENERATED_CORRECTNESS}"
        )
    if confidence_mode == "first_token":
        return (
            f"{_ECE_METRICS} first-token confidence, the student's top probability at the first token of the "
            f"label it generates; {_GENERATED_CORRECTNESS}"
        )
    if confidence_mode != "candidates":
        return None
    if isinstance(label_candidates, str):
        scored, chosen = f"each example's own {_code(label_candidates)}", "choice"
    elif label_candidates:
        named = ", ".join(_code(str(label)) for label in label_candidates[:_MAX_LABELS_NAMED])
        more = len(label_candidates) - _MAX_LABELS_NAMED
        scored = f"the fixed labels {named}" + (f" and {more} more" if more > 0 else "")
        chosen = "label"
    else:
        scored, chosen = "the candidates", "candidate"
    return (
        f"{_ECE_METRICS} candidates confidence, the softmax over {scored} of the student's likelihood of each, "
        f"taken for the most likely one; the ECE measures it against whether that {chosen} is correct "
        f"(`*_choice_accuracy`), {_CHOSEN_CORRECTNESS}"
    )


def _code(text: str) -> str:
    """``text`` as inline Markdown code (a backtick inside becomes a quote, a line break a space)."""
    return "`" + " ".join(text.replace("`", "'").split()) + "`"


def card_metrics(metrics: dict[str, Any], prefixes: tuple[str, ...] = _METRIC_PREFIXES) -> dict[str, float]:
    """The metrics a card lists from one evaluation: numbers whose names start with ``prefixes``, without
    the runtimes and throughputs.

    Examples:
        >>> card_metrics({"eval_loss": 1.5, "eval_runtime": 0.2, "epoch": 1.0, "test_accuracy": 0.5}, ("eval_",))
        {'eval_loss': 1.5}
    """
    return {
        key: float(value)
        for key, value in metrics.items()
        if key.startswith(prefixes) and not key.endswith(_NOT_METRICS) and _is_number(value)
    }


def best_checkpoint_step(args: Any, state: Any) -> int | None:
    """The step whose checkpoint the trainer loaded at the end of training (``load_best_model_at_end``),
    or None when it keeps the last weights.

    Examples:
        >>> from types import SimpleNamespace
        >>> args = SimpleNamespace(load_best_model_at_end=True)
        >>> best_checkpoint_step(args, SimpleNamespace(best_model_checkpoint="out/checkpoint-150"))
        150
        >>> best_checkpoint_step(args, SimpleNamespace(best_model_checkpoint=None)) is None
        True
    """
    folder = getattr(state, "best_model_checkpoint", None)
    if not getattr(args, "load_best_model_at_end", False) or not folder:
        return None
    step = getattr(state, "best_global_step", None)
    if step:
        return int(step)
    from .checkpoints import checkpoint_step

    return checkpoint_step(folder)


def built_in_example(task: str | None, nli_separator: str = DEFAULT_NLI_SEPARATOR) -> str:
    """The usage snippet's input for ``task`` when the card has none of the run's own.

    NLI tasks get a premise and a hypothesis joined with ``nli_separator`` (what training put between
    them), CQA a question with lettered answer choices as :func:`hf_cotmi.data.dss.format_cqa_input` writes
    them, every other task an arithmetic word problem.

    Examples:
        >>> built_in_example("anli1", " | ")
        'A man in a red shirt is playing a guitar on stage. | A man is performing music.'
        >>> built_in_example(None) == ARITHMETIC_EXAMPLE
        True
    """
    spec = DSS_DATASETS.get(task) if task else None
    if spec is not None and spec.is_nli:
        premise, hypothesis = NLI_EXAMPLE
        return f"{premise}{nli_separator}{hypothesis}"
    if task == "cqa":
        return format_cqa_input(*CQA_EXAMPLE)
    return ARITHMETIC_EXAMPLE


def record_run_data(card: DSSModelCardData, data: Any, data_args: Any, tokenizer: Any) -> None:
    """Put what a ``hf-cotmi train`` run knows about its data into ``card``: the task, the first test input
    (as the student was prompted with it; for a built-in dataset only, never a row of your own files) and the
    held-out splits cut to their first examples.

    Args:
        card: the trainer's card data (``trainer.model_card_callback.card_data``).
        data: the run's :class:`hf_cotmi.pipeline.LoadedData` (``splits``, ``spec``, ``report``, ``source``).
        data_args: its :class:`hf_cotmi.run_arguments.DataArguments` (split names and ``max_*_samples``).
        tokenizer: the student's tokenizer (NLI inputs are joined with its EOS, as training joined them).

    Examples:
        >>> # record_run_data(trainer.model_card_callback.card_data, data, data_args, trainer.processing_class)
    """
    from .data.features import student_input_texts

    card.task = getattr(data.spec, "name", None) or card.task
    card.max_input_length = getattr(data_args, "max_input_length", None)  # the snippet cuts as training did
    # an input of a built-in dataset (public data) only: a row of your own files stays out of a card that
    # push_to_hub may publish
    public = bool((getattr(data, "source", None) or {}).get("dataset"))
    for prefix in ("test", "eval", "train") if public else ():
        rows = data.splits.get(prefix)
        if rows is not None and rows.num_rows:
            text = student_input_texts(rows.select(range(1)), tokenizer)[0]
            card.example_input = text if isinstance(text, str) else None
            break
    held_out = {
        "test": (data_args.test_split, data_args.max_test_samples, "--max-test-samples"),
        "eval": (data_args.eval_split, data_args.max_eval_samples, "--max-eval-samples"),
    }
    card.held_out_subsets = {}
    for prefix, (split, limit, option) in held_out.items():
        if prefix not in data.splits:
            continue
        available = _split_size(data.report, data.source, split)
        subset = held_out_subset(split, data.splits[prefix].num_rows, limit, available, option)
        if subset is not None:
            card.held_out_subsets[prefix] = subset


def _split_size(report: Any, source: dict[str, Any], split: str) -> int | None:
    """The examples a loaded split held before a first-N cut: from the loader's report (a DSS dataset's
    records kept, your file's records), or the synthetic task's size option; None when unknown."""
    counts = getattr(report, "splits", {}).get(split)
    for name in ("kept", "records"):
        if isinstance(getattr(counts, name, None), int):
            return int(getattr(counts, name))
    size = (source or {}).get(f"synthetic_{split}_size")
    return int(size) if isinstance(size, int) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _metric_type(name: str) -> str:
    for prefix in _METRIC_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def _plain(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _cell(value: Any) -> str:
    return str(_plain(value)).replace("|", "\\|")


def _python_literal(text: str) -> str:
    """A Python string literal for ``text`` (JSON's double-quoted strings are valid Python)."""
    return json.dumps(text, ensure_ascii=False)


def _rows(values: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, _cell(value)) for name, value in values.items()]


def _training_table(logs: list[dict[str, float]]) -> dict[str, Any] | None:
    """Columns and rows of the training-results table, at most ``MAX_TRAINING_ROWS`` rows, evenly spaced."""
    if not logs:
        return None
    columns = ["step", "epoch", *TRAINING_LOSS_KEYS, "eval_loss"]
    columns = [c for c in columns if any(c in row for row in logs)]
    shown = logs
    if len(logs) > MAX_TRAINING_ROWS:
        last = len(logs) - 1
        indices = sorted({round(i * last / (MAX_TRAINING_ROWS - 1)) for i in range(MAX_TRAINING_ROWS)})
        shown = [logs[i] for i in indices]
    rows = [[_cell(row[c]) if c in row else "-" for c in columns] for row in shown]
    return {"columns": columns, "rows": rows, "shown": len(shown), "logged": len(logs)}


def model_card_template_path() -> Path:
    """Where the card's Markdown (Jinja) template is: ``templates/model_card_template.md`` in the package.

    Examples:
        >>> model_card_template_path().name
        'model_card_template.md'
    """
    path = Path(str(resources.files("hf_cotmi").joinpath(TEMPLATE_NAME)))
    if not path.is_file():
        raise FileNotFoundError(
            f"the model card template {path} is missing: hf_cotmi was installed without its package data "
            "(setup.cfg [options.package_data] must list templates/*.md); reinstall hf-cotmi"
        )
    return path


def build_model_card(card: DSSModelCardData, template_path: str | Path | None = None) -> ModelCard:
    """Render ``card`` through the template into a ``huggingface_hub.ModelCard`` (its metadata is parsed and
    checked as the Hub parses it).

    Args:
        card: what the card says; ``card.model_name`` must be set.
        template_path: another Jinja template to render with (default: the one shipped in the package).

    Examples:
        >>> build_model_card(DSSModelCardData("student")).data.library_name
        'transformers'
    """
    if not card.model_name:
        raise ValueError("DSSModelCardData.model_name is not set: the card needs a title (the model's name)")
    path = Path(template_path) if template_path is not None else model_card_template_path()
    return ModelCard.from_template(card, template_path=str(path))


def render_model_card(card: DSSModelCardData, template_path: str | Path | None = None) -> str:
    """Render the card as Markdown with YAML front matter (parses with ``huggingface_hub.ModelCard``).

    Examples:
        >>> text = render_model_card(DSSModelCardData(model_name="student"))
        >>> text.startswith("---")
        True
    """
    return str(build_model_card(card, template_path)).rstrip("\n") + "\n"


class DSSModelCardCallback(TrainerCallback):
    """Fills a :class:`DSSModelCardData` as training runs; :class:`~hf_cotmi.DSSMITrainer` adds one itself
    (``trainer.model_card_callback``).

    - ``on_train_begin``: the hyperparameters and loss settings from the arguments; the logged losses and
      metrics start again from the trainer state's log history (empty for a fresh run, the earlier steps
      when resuming from a checkpoint).
    - ``on_log``: the training loss and its components (``loss_label``, ``loss_rationale``, ``loss_mi``).
    - ``on_evaluate``: every ``eval_*`` / ``test_*`` metric, including those that callbacks such as
      :class:`~hf_cotmi.ECECallback` add to the evaluation's logs.

    Examples:
        >>> callback = DSSModelCardCallback()
        >>> callback.card_data.training_logs
        []
        >>> # trainer = Trainer(..., callbacks=[callback]); trainer.train(); callback.card_data.hyperparameters
    """

    def __init__(self, card_data: DSSModelCardData | None = None) -> None:
        self.card_data = card_data if card_data is not None else DSSModelCardData()
        self._evaluations: dict[int, dict[str, float]] = {}  # step -> its eval_* metrics

    def _remember_evaluation(self, metrics: dict[str, Any], step: int) -> None:
        evaluated = card_metrics(metrics, ("eval_",))
        if evaluated:
            self._evaluations.setdefault(step, {}).update(evaluated)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        card = self.card_data
        card.hyperparameters = training_hyperparameters(args, state)
        if callable(getattr(args, "loss_settings", None)):
            card.loss_settings = args.loss_settings()
        card.training_logs = []
        card.metrics = {}
        card.best_model_step = card.best_model_metric = None
        self._evaluations = {}
        for entry in state.log_history:  # a resumed run's earlier logs
            step = int(entry.get("step", 0))
            card.record_training_log(entry, step, entry.get("epoch"))
            card.record_metrics(entry, step, entry.get("epoch"))
            self._remember_evaluation(entry, step)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if logs:
            self.card_data.record_training_log(logs, state.global_step, state.epoch)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if metrics:
            self.card_data.record_metrics(metrics, state.global_step, state.epoch)
            self._remember_evaluation(metrics, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """With ``load_best_model_at_end`` the trainer now holds the best checkpoint's weights: the card's
        ``eval_*`` metrics become that checkpoint's evaluation instead of the last one's."""
        step = best_checkpoint_step(args, state)
        if step is None or step not in self._evaluations:
            return
        card = self.card_data
        kept = {key: value for key, value in card.metrics.items() if not key.startswith("eval_")}
        card.metrics = {**self._evaluations[step], **kept}
        metric = getattr(args, "metric_for_best_model", None) or "loss"
        card.best_model_step = step
        card.best_model_metric = metric if metric.startswith("eval_") else f"eval_{metric}"


def training_hyperparameters(args: Any, state: Any = None) -> dict[str, Any]:
    """The hyperparameters the card lists, from ``TrainingArguments`` (and ``TrainerState`` for the steps).

    Examples:
        >>> from transformers import TrainingArguments
        >>> training_hyperparameters(TrainingArguments("out", learning_rate=1e-3, max_steps=5))["max_steps"]
        5
    """
    world_size = max(1, int(getattr(args, "world_size", 1) or 1))
    return {
        "learning_rate": args.learning_rate,
        "train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "total_train_batch_size": args.per_device_train_batch_size
        * args.gradient_accumulation_steps
        * world_size,
        "max_steps": (getattr(state, "max_steps", 0) or 0) or args.max_steps,
        "seed": args.seed,
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
    }
