"""The model card of a student distilled with hf-cotmi: YAML metadata, usage, settings, results, citations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .prefixes import EXPLAIN_PREFIX, PREDICT_PREFIX

TAGS = ["hf-cotmi", "distilling-step-by-step", "chain-of-thought-distillation"]

DSS_BIBTEX = """@inproceedings{hsieh2023distilling,
  title     = {Distilling Step-by-Step! Outperforming Larger Language Models with Less Training Data
               and Smaller Model Sizes},
  author    = {Hsieh, Cheng-Yu and Li, Chun-Liang and Yeh, Chih-Kuan and Nakhost, Hootan and
               Fujii, Yasuhisa and Ratner, Alexander and Krishna, Ranjay and Lee, Chen-Yu and Pfister, Tomas},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2023},
  year      = {2023},
  eprint    = {2305.02301},
  archivePrefix = {arXiv}
}"""

MI_BIBTEX = """@inproceedings{chen2024learning,
  title     = {Learning to Maximize Mutual Information for Chain-of-Thought Distillation},
  author    = {Chen, Xin and Huang, Hanxian and Gao, Yanjun and Wang, Yi and Zhao, Jishen and Ding, Ke},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2024},
  year      = {2024},
  eprint    = {2403.03348},
  archivePrefix = {arXiv}
}"""


@dataclass
class DSSModelCardData:
    """What the card says. Filled by :meth:`hf_cotmi.DSSMITrainer.create_model_card`.

    Examples:
        >>> card = DSSModelCardData(model_name="t5-small-svamp-dssmi", loss_settings={"mi_loss_weight": 0.1})
        >>> "hf-cotmi" in render_model_card(card)
        True
    """

    model_name: str
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


def _yaml_metadata(card: DSSModelCardData) -> str:
    import yaml

    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text2text-generation"}
    if card.license:
        meta["license"] = card.license
    if card.language:
        meta["language"] = card.language
    if card.base_model:
        meta["base_model"] = card.base_model
    if card.datasets:
        meta["datasets"] = list(card.datasets)
    meta["tags"] = list(dict.fromkeys(TAGS + list(card.extra_tags)))
    if card.metrics:
        meta["metrics"] = sorted({_metric_type(k) for k in card.metrics})
        meta["model-index"] = [
            {
                "name": card.model_name,
                "results": [
                    {
                        "task": {"type": "text2text-generation", "name": "Chain-of-thought distillation"},
                        **(
                            {"dataset": {"name": card.datasets[0], "type": card.datasets[0]}}
                            if card.datasets
                            else {}
                        ),
                        "metrics": [
                            {"type": _metric_type(k), "name": k, "value": _plain(v)}
                            for k, v in sorted(card.metrics.items())
                        ],
                    }
                ],
            }
        ]
        if not card.datasets:
            meta["model-index"][0]["results"][0]["dataset"] = {"name": "unknown", "type": "unknown"}
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()


def _metric_type(name: str) -> str:
    for prefix in ("eval_", "test_"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def _plain(value: Any) -> Any:
    return round(float(value), 6) if isinstance(value, (int, float)) else value


def _table(rows: dict[str, Any]) -> str:
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| `{k}` | {_plain(v)} |" for k, v in rows.items()]
    return "\n".join(lines)


def render_model_card(card: DSSModelCardData) -> str:
    """Render the card as Markdown with YAML front matter (parses with ``huggingface_hub.ModelCard``).

    Examples:
        >>> text = render_model_card(DSSModelCardData(model_name="student"))
        >>> text.startswith("---")
        True
    """
    repo = card.repo_id or card.model_name
    base = f" from [`{card.base_model}`](https://huggingface.co/{card.base_model})" if card.base_model else ""
    data = f" on {', '.join(card.datasets)}" if card.datasets else ""
    results = _table(card.metrics) if card.metrics else "No evaluation metrics were logged."
    versions = "\n".join(f"- {k}: {v}" for k, v in card.framework_versions.items())
    parts = [
        f"---\n{_yaml_metadata(card)}\n---",
        f"# {card.model_name}",
        f"A student model distilled{base}{data} with [hf-cotmi](https://pypi.org/project/hf-cotmi/) using "
        f"**{card.method}**. It was trained on two tasks: `{card.predict_prefix.strip()}` followed by the "
        f"input gives the answer, and `{card.explain_prefix.strip()}` followed by the input gives a rationale "
        "(a chain of thought) in the teacher's style.",
        "## Usage",
        "```python\n"
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n"
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
        f'model = AutoModelForSeq2SeqLM.from_pretrained("{repo}")\n\n'
        'question = "Tom has 3 apples and buys 4 more. How many apples does he have?"\n'
        f'label_ids = model.generate(**tokenizer("{card.predict_prefix}" + question, return_tensors="pt"),'
        " max_new_tokens=32)\n"
        f'rationale_ids = model.generate(**tokenizer("{card.explain_prefix}" + question, return_tensors="pt"),'
        " max_new_tokens=256)\n"
        'print("answer:", tokenizer.decode(label_ids[0], skip_special_tokens=True))\n'
        'print("rationale:", tokenizer.decode(rationale_ids[0], skip_special_tokens=True))\n'
        "```",
        "## Training objective",
        "`loss = label_loss_weight * label_loss + rationale_loss_weight * rationale_loss + "
        "mi_loss_weight * mi_loss`, where `mi_loss` ties the two tasks together (Chen et al. 2024).\n\n"
        + _table(card.loss_settings),
        "## Training hyperparameters",
        _table(card.hyperparameters) if card.hyperparameters else "Not recorded.",
        "## Evaluation results",
        results,
    ]
    if versions:
        parts += ["## Framework versions", versions]
    parts += [
        "## Citation",
        "Distilling Step-by-Step (Hsieh et al., 2023):\n\n```bibtex\n" + DSS_BIBTEX + "\n```",
        "Mutual-information loss (Chen et al., 2024):\n\n```bibtex\n" + MI_BIBTEX + "\n```",
    ]
    return "\n\n".join(parts) + "\n"
