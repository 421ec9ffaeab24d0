"""Tiny tokenizers, seq2seq and decoder-only models built in code, with no download.

The Hugging Face Hub is not always reachable (CI, air-gapped clusters, the offline demo). These helpers
build a word-level tokenizer from example texts and a small randomly initialised T5, BART or
``EncoderDecoderModel`` around it, or a Llama, Qwen2 or GPT-2 decoder. They are for tests, the offline demo
and notebooks; real students come from ``AutoModelForSeq2SeqLM.from_pretrained(name)`` or
``AutoModelForCausalLM.from_pretrained(name)``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

# Split into words, numbers and single punctuation marks, so "3+4=7." -> "3 + 4 = 7 ."
_TOKEN_PATTERN = r"\d+(?:\.\d+)?|[^\W\d_]+|[^\w\s]"

_SPECIAL_TOKENS = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>", "bos": "<s>", "sep": "<sep>"}


def _words(text: str) -> list[str]:
    return re.findall(_TOKEN_PATTERN, text.lower())


def build_word_tokenizer(
    texts: Iterable[str], *, min_frequency: int = 1, max_vocab_size: int | None = None
) -> Any:
    """Build a lower-cased word-level ``PreTrainedTokenizerFast`` from example texts.

    Words, numbers and single punctuation marks are tokens; every encoded sequence ends with ``</s>``
    (as T5's tokenizer does). Special tokens: ``<pad>`` (id 0), ``</s>`` (1), ``<unk>`` (2), ``<s>`` (3)
    and ``<sep>`` (4). The task prefixes ``predict:`` and ``explain:`` are always in the vocabulary.

    Args:
        texts: texts whose words make up the vocabulary.
        min_frequency: words seen fewer times than this map to ``<unk>``.
        max_vocab_size: keep at most this many tokens (most frequent first), specials included.

    Returns:
        A ``transformers.PreTrainedTokenizerFast``; ``save_pretrained`` / ``from_pretrained`` round-trip.

    Examples:
        >>> tok = build_word_tokenizer(["tom has 3 apples .", "3 + 4 = 7"])
        >>> tok.decode(tok("tom has 7 apples")["input_ids"], skip_special_tokens=True)
        'tom has 7 apples'
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(_words(text))
    for prefix_word in ("predict", "explain", ":"):
        counts[prefix_word] += min_frequency
    specials = list(_SPECIAL_TOKENS.values())
    words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_frequency]
    if max_vocab_size is not None:
        words = words[: max(0, max_vocab_size - len(specials))]
    vocab = {tok: i for i, tok in enumerate(specials + words)}

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=_SPECIAL_TOKENS["unk"]))
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\s+"), behavior="removed"),
            pre_tokenizers.Split(Regex(_TOKEN_PATTERN), behavior="isolated"),
        ]
    )
    from tokenizers import normalizers

    backend.normalizer = normalizers.Lowercase()
    eos = _SPECIAL_TOKENS["eos"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, vocab[eos])]
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=_SPECIAL_TOKENS["pad"],
        eos_token=eos,
        unk_token=_SPECIAL_TOKENS["unk"],
        bos_token=_SPECIAL_TOKENS["bos"],
        sep_token=_SPECIAL_TOKENS["sep"],
        model_max_length=1024,
    )
    return tokenizer


def build_tiny_seq2seq(
    tokenizer: Any,
    architecture: str = "t5",
    *,
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    d_ff: int = 64,
    seed: int = 0,
) -> Any:
    """Build a small randomly initialised seq2seq model whose vocabulary matches ``tokenizer``.

    Args:
        tokenizer: a tokenizer with ``pad_token_id`` and ``eos_token_id`` (e.g. from
            :func:`build_word_tokenizer`).
        architecture: ``"t5"``, ``"bart"`` or ``"encoder-decoder"`` (a BERT-to-BERT
            ``EncoderDecoderModel``).
        d_model: hidden size.
        num_layers: encoder and decoder layers (each).
        num_heads: attention heads.
        d_ff: feed-forward size.
        seed: ``torch.manual_seed`` used for the initial weights.

    Returns:
        A ``PreTrainedModel`` that ``AutoModelForSeq2SeqLM.from_pretrained`` reloads after saving.

    Examples:
        >>> tok = build_word_tokenizer(["a b c"])
        >>> model = build_tiny_seq2seq(tok, "t5")
        >>> model.config.vocab_size == len(tok)
        True
    """
    import torch
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BertConfig,
        EncoderDecoderConfig,
        EncoderDecoderModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    vocab_size = len(tokenizer)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    torch.manual_seed(seed)
    if architecture == "t5":
        config = T5Config(
            vocab_size=vocab_size,
            d_model=d_model,
            d_kv=max(1, d_model // num_heads),
            d_ff=d_ff,
            num_layers=num_layers,
            num_decoder_layers=num_layers,
            num_heads=num_heads,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            # unused by T5 (it starts decoding from pad); recorded so the Trainer has nothing to re-align
            bos_token_id=tokenizer.bos_token_id,
            decoder_start_token_id=pad_id,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,
        )
        return T5ForConditionalGeneration(config)
    if architecture == "bart":
        bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos_id
        config = BartConfig(
            vocab_size=vocab_size,
            d_model=d_model,
            encoder_layers=num_layers,
            decoder_layers=num_layers,
            encoder_attention_heads=num_heads,
            decoder_attention_heads=num_heads,
            encoder_ffn_dim=d_ff,
            decoder_ffn_dim=d_ff,
            max_position_embeddings=1024,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            bos_token_id=bos_id,
            decoder_start_token_id=eos_id,
            forced_eos_token_id=eos_id,
            dropout=0.0,
            attention_dropout=0.0,
        )
        return BartForConditionalGeneration(config)
    if architecture == "encoder-decoder":
        common = dict(
            vocab_size=vocab_size,
            hidden_size=d_model,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=d_ff,
            max_position_embeddings=1024,
            pad_token_id=pad_id,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        config = EncoderDecoderConfig.from_encoder_decoder_configs(
            BertConfig(**common), BertConfig(**common, is_decoder=True, add_cross_attention=True)
        )
        bos_id = tokenizer.bos_token_id
        config.decoder_start_token_id = bos_id if bos_id is not None else pad_id
        config.pad_token_id = pad_id
        config.eos_token_id = eos_id
        config.vocab_size = vocab_size
        model = EncoderDecoderModel(config=config)
        model.generation_config.decoder_start_token_id = config.decoder_start_token_id
        model.generation_config.pad_token_id = pad_id
        model.generation_config.eos_token_id = eos_id
        return model
    raise ValueError(
        f"architecture={architecture!r} is not supported; expected one of 't5', 'bart', 'encoder-decoder'"
    )


CAUSAL_ARCHITECTURES: tuple[str, ...] = ("llama", "qwen2", "gpt2")
"""Decoder-only architectures :func:`build_tiny_causal_lm` builds."""


def build_tiny_causal_lm(
    tokenizer: Any,
    architecture: str = "llama",
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    max_positions: int = 1024,
    seed: int = 0,
) -> Any:
    """Build a small randomly initialised decoder-only model whose vocabulary matches ``tokenizer``.

    The config carries the tokenizer's pad, BOS and EOS ids, and the generation config stops at EOS and
    pads with the pad id (or EOS when the tokenizer has no pad token).

    Build students you will save and reload with ``"llama"`` or ``"gpt2"``. A ``"qwen2"`` student saved beside
    the word-level tokenizer of :func:`build_word_tokenizer` reloads with a broken tokenizer through
    ``AutoTokenizer.from_pretrained`` (and so through :func:`hf_cotmi.students.load_student`, ``hf-cotmi
    evaluate`` and ``hf-cotmi predict``): transformers 5 maps the ``qwen2`` model type to ``Qwen2Tokenizer``,
    which rebuilds the saved vocabulary as a byte-level BPE without merges, so most words encode to nothing
    (``"predict: tom has 3 apples"`` gives the ids of ``":"``, ``"3"`` and ``"</s>"``). In memory, or with the
    tokenizer reloaded by ``PreTrainedTokenizerFast.from_pretrained``, a ``"qwen2"`` student works.

    Args:
        tokenizer: a tokenizer with ``eos_token_id`` (e.g. from :func:`build_word_tokenizer`).
        architecture: ``"llama"``, ``"qwen2"`` or ``"gpt2"``.
        hidden_size: hidden size.
        num_layers: decoder layers.
        num_heads: attention heads (Llama and Qwen2 use 1 key-value head per 2 query heads when even).
        intermediate_size: feed-forward size.
        max_positions: longest sequence (position embeddings for GPT-2, RoPE range for the others).
        seed: ``torch.manual_seed`` used for the initial weights.

    Returns:
        A ``PreTrainedModel`` that ``AutoModelForCausalLM.from_pretrained`` reloads after saving.

    Examples:
        >>> tok = build_word_tokenizer(["a b c"])
        >>> model = build_tiny_causal_lm(tok, "qwen2")
        >>> model.config.vocab_size == len(tok), model.config.is_encoder_decoder
        (True, False)
    """
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    if architecture not in CAUSAL_ARCHITECTURES:
        raise ValueError(
            f"architecture={architecture!r} is not supported; expected one of {', '.join(CAUSAL_ARCHITECTURES)}"
        )
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no EOS token; a causal student needs one to stop generating")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos_id
    ids = dict(pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id)
    torch.manual_seed(seed)
    if architecture == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_inner=intermediate_size,
            n_positions=max_positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **ids,
        )
        model = GPT2LMHeadModel(config)
    else:
        common = dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=max(1, num_heads // 2) if num_heads % 2 == 0 else num_heads,
            intermediate_size=intermediate_size,
            max_position_embeddings=max_positions,
            tie_word_embeddings=False,
            **ids,
        )
        if architecture == "llama":
            model = LlamaForCausalLM(LlamaConfig(**common))
        else:
            model = Qwen2ForCausalLM(Qwen2Config(**common))
    model.generation_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.bos_token_id = bos_id
    return model
