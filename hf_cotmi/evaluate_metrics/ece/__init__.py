"""The ECE ``evaluate`` module; load ``ece.py`` with ``evaluate.load(hf_cotmi.ece_metric_path())``.

This file only makes the folder a regular package, so that setuptools ships it without warnings.
"""
