from __future__ import annotations

import os
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tiny_task import make_tokenizer

    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_features(tiny_tokenizer):
    from tiny_task import make_records, tokenise

    return tokenise(make_records(16), tiny_tokenizer)
