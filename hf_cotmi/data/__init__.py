"""Data for chain-of-thought distillation: loaders, PaLM-output parsers and tokenisation.

- :mod:`hf_cotmi.data.dss`: :func:`~hf_cotmi.data.dss.load_dss_dataset` for the Distilling Step-by-Step
  release (svamp, cqa, esnli, anli1).
- :mod:`hf_cotmi.data.custom`: :func:`~hf_cotmi.data.custom.load_cot_dataset` for your own data.
- :mod:`hf_cotmi.data.features`: :func:`~hf_cotmi.data.features.prepare_dss_features`, the two prefixed tasks.
- :mod:`hf_cotmi.data.parsing`: the DSS rules for PaLM's raw outputs, as pure functions.
- :mod:`hf_cotmi.data.report`: the counts returned with ``return_report=True``.

The public functions are also exported from ``hf_cotmi``; this package imports nothing heavy until used.

Examples:
    >>> from hf_cotmi.data.parsing import parse_palm_output
    >>> parse_palm_output("esnli", "A dog is an animal.\\nAnswer: entailment\\n\\nPremise: ...").label
    'entailment'
"""
