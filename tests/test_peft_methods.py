"""PEFT methods other than LoRA with DSSMITrainer: prompt, prefix and p-tuning, IA3, LoHa; the ones refused.

Each loss is checked against the adapted model's own loss (``model(**part).loss``: peft prepends its
virtual tokens and -100 labels for them, transformers shifts the labels), written independently of the
trainer's target windows and ``logits_to_keep``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import training_arguments
from datasets import Dataset
from tiny_task import make_records, tokenise

from hf_cotmi import (
    DSSMITrainer,
    build_tiny_causal_lm,
    build_tiny_seq2seq,
    label_confidences,
    prepare_dss_features,
)
from hf_cotmi.causal_confidence import score_candidates
from hf_cotmi.run_arguments import CLIUsageError
from hf_cotmi.students import load_student

peft = pytest.importorskip("peft")

SEQ2SEQ = ("t5", "bart")


def records(n=8, seed=5):
    rows = make_records(n, seed=seed)
    for i, row in enumerate(rows):  # labels, rationales and prompts of different lengths
        row["rationale"] += " so" * (2 * i)
        row["label"] += " apples" * (i % 3)
        row["input"] = "so " * (i % 4) + row["input"]
    return rows


def build(kind, tokenizer, seed=3):
    if kind in SEQ2SEQ:
        return build_tiny_seq2seq(tokenizer, kind, seed=seed)
    return build_tiny_causal_lm(tokenizer, kind, seed=seed)


def features(kind, tokenizer):
    if kind in SEQ2SEQ:
        return tokenise(records(), tokenizer)
    return prepare_dss_features(Dataset.from_list(records()), tokenizer, student_type="causal")


def task_type(kind):
    return "SEQ_2_SEQ_LM" if kind in SEQ2SEQ else "CAUSAL_LM"


def example_by_example_losses(model, data):
    """Label and rationale token means over ``data``, each example run alone (no padding) through peft's own
    loss; the token counts are those peft's shifted loss covers."""
    sums = {"loss_label": 0.0, "loss_rationale": 0.0}
    counts = {"loss_label": 0, "loss_rationale": 0}
    with torch.no_grad():
        for row in data:
            for name, ids_key, labels_key in (
                ("loss_label", "input_ids", "labels"),
                ("loss_rationale", "expl_input_ids", "rationale_labels"),
            ):
                labels = torch.tensor([row[labels_key]])
                scored = int((labels[:, 1:] != -100).sum())
                sums[name] += (
                    model(input_ids=torch.tensor([row[ids_key]]), labels=labels).loss.item() * scored
                )
                counts[name] += scored
    return {name: sums[name] / counts[name] for name in sums}


METHODS = {
    "prompt": lambda task: peft.PromptTuningConfig(task_type=task, num_virtual_tokens=3),
    "prefix": lambda task: peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=3),
    "p-tuning": lambda task: peft.PromptEncoderConfig(
        task_type=task, num_virtual_tokens=3, encoder_hidden_size=16
    ),
    "ia3": lambda task: peft.IA3Config(task_type=task),
    "loha": lambda task: peft.LoHaConfig(task_type=task, r=4, target_modules=["q_proj", "v_proj"]),
}


@pytest.mark.parametrize(
    ("kind", "method", "chunked"),
    [
        ("t5", "prompt", False),
        ("t5", "prefix", True),
        ("llama", "prompt", True),
        ("llama", "p-tuning", False),
        ("llama", "prefix", False),
        ("gpt2", "prompt", False),
        ("gpt2", "ia3", True),
        ("bart", "loha", False),
    ],
)
def test_each_task_loss_is_the_adapted_models_own_loss(tmp_path, tiny_tokenizer, kind, method, chunked):
    """Virtual tokens prepended to a decoder-only sequence shift nothing: ``logits_to_keep`` keeps the last
    positions, so the label and rationale losses are what the peft model computes from labels itself."""
    data = features(kind, tiny_tokenizer)
    args = training_arguments(
        tmp_path,
        max_steps=1,
        per_device_train_batch_size=8,
        learning_rate=0.0,
        max_grad_norm=0.0,
        chunked_output_projection=chunked,
    )
    trainer = DSSMITrainer(
        model=build(kind, tiny_tokenizer),
        args=args,
        processing_class=tiny_tokenizer,
        train_dataset=data,
        peft_config=METHODS[method](task_type(kind)),
    )
    if kind in SEQ2SEQ:
        batch = trainer.data_collator([data[i] for i in range(8)])
        with torch.no_grad():
            expected = {name: trainer.model(**batch[part]).loss.item() for part, name in
                        (("pred", "loss_label"), ("expl", "loss_rationale"))}  # fmt: skip
    else:  # each example alone: a decoder-only batch is left-padded, which peft's positions do not allow for
        expected = example_by_example_losses(trainer.model, [data[i] for i in range(8)])
    trainer.train()
    logged = trainer.state.log_history[0]
    for name, value in expected.items():
        assert math.isclose(logged[name], value, rel_tol=1e-5), (name, logged[name], value)


@pytest.mark.parametrize(
    ("kind", "config", "named"),
    [
        (
            "t5",
            lambda: peft.AdaLoraConfig(
                task_type="SEQ_2_SEQ_LM", r=4, target_modules=["q", "v"], total_step=3
            ),
            "AdaLoRA",
        ),
        (
            "llama",
            lambda: peft.CPTConfig(
                task_type="CAUSAL_LM",
                cpt_token_ids=[5, 6, 7],
                cpt_mask=[1, 1, 1],
                cpt_tokens_type_mask=[1, 2, 2],
            ),
            "CPT",
        ),
    ],
    ids=["adalora", "cpt"],
)
@pytest.mark.parametrize("wrapped", [False, True])
def test_methods_whose_training_lives_outside_forward_are_refused(
    tmp_path, tiny_tokenizer, kind, config, named, wrapped
):
    """AdaLoRA's rank allocation and orthogonality penalty and CPT's loss need labels in peft's forward
    or a hook after each step; DSSMITrainer runs neither, so it says so instead of training something else."""
    model = build(kind, tiny_tokenizer)
    options = {"peft_config": config()}
    if wrapped:
        model, options = peft.get_peft_model(model, options["peft_config"]), {}
    with pytest.raises(ValueError, match=rf"{named}.*not supported by DSSMITrainer") as caught:
        DSSMITrainer(
            model=model, args=training_arguments(tmp_path), processing_class=tiny_tokenizer, **options
        )
    assert "LoraConfig" in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "config", "expected"),
    [
        ("llama", lambda: peft.LoraConfig(task_type="SEQ_2_SEQ_LM", r=4), "task_type='SEQ_2_SEQ_LM'"),
        (
            "t5",
            lambda: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
            "task_type='CAUSAL_LM'",
        ),
        ("t5", lambda: peft.PromptTuningConfig(num_virtual_tokens=3), "task_type=None"),
    ],
    ids=["causal-lora-seq2seq-task", "t5-prompt-causal-task", "t5-prompt-no-task"],
)
def test_a_task_type_that_contradicts_the_student_is_refused(
    tmp_path, tiny_tokenizer, kind, config, expected
):
    """A LoRA config with the other task type trained, but its adapters said the wrong kind and evaluate
    could not load them; a prompt-learning one failed in the loss with shapes that did not match."""
    want = "SEQ_2_SEQ_LM" if kind in SEQ2SEQ else "CAUSAL_LM"
    with pytest.raises(ValueError, match=rf"peft_config has {expected}.*task_type={want}") as caught:
        DSSMITrainer(
            model=build(kind, tiny_tokenizer),
            args=training_arguments(tmp_path),
            processing_class=tiny_tokenizer,
            peft_config=config(),
        )
    assert ("decoder-only" if want == "CAUSAL_LM" else "encoder-decoder") in str(caught.value)


def test_lora_without_a_task_type_still_trains(tmp_path, tiny_tokenizer):
    trainer = DSSMITrainer(
        model=build("t5", tiny_tokenizer),
        args=training_arguments(tmp_path, max_steps=1),
        processing_class=tiny_tokenizer,
        train_dataset=features("t5", tiny_tokenizer),
        peft_config=peft.LoraConfig(r=4, target_modules=["q", "v"]),
    )
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss"])


@pytest.mark.parametrize(("kind", "method"), [("t5", "prompt"), ("llama", "prefix")])
def test_prompt_learning_adapters_are_refused_for_inference_by_name(tmp_path, tiny_tokenizer, kind, method):
    """They cannot be merged into the base model (``merge_and_unload`` raised AttributeError in evaluate and
    predict)."""
    base, saved = tmp_path / "base", tmp_path / "adapters"
    build(kind, tiny_tokenizer).save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    student = load_student(str(base))
    peft.get_peft_model(student.model, METHODS[method](task_type(kind))).save_pretrained(saved)
    tiny_tokenizer.save_pretrained(saved)
    peft_type = json.loads((saved / "adapter_config.json").read_text())["peft_type"]
    with pytest.raises(CLIUsageError, match=rf"holds {peft_type} adapters, which cannot be merged") as caught:
        load_student(str(saved), for_inference=True, device="cpu")
    assert "DSSMITrainer" in str(caught.value)
    # nor trained further: peft loads them frozen only (it said so inside "holds no loadable model")
    with pytest.raises(CLIUsageError, match=rf"holds {peft_type} adapters, which peft cannot load to train"):
        load_student(str(saved))


def reference_scores(model, prompts, candidates):
    """log p(candidate | prompt) from one unpadded forward pass per candidate."""
    scores = []
    with torch.no_grad():
        for prompt, options in zip(prompts, candidates):
            row = []
            for candidate in options:
                ids = torch.tensor([prompt + candidate])
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
                log_probs = torch.log_softmax(logits[-len(candidate) - 1 : -1].float(), dim=-1)
                row.append(float(log_probs.gather(-1, torch.tensor(candidate)[:, None]).sum()))
            scores.append(row)
    return scores


@pytest.mark.parametrize("method", ["prompt", "p-tuning", "prefix"])
def test_causal_candidate_scores_with_virtual_tokens_match_full_passes(tiny_tokenizer, method):
    """With prompt tuning the candidate tokens run on the prompt's cache got the virtual tokens put in front
    of them again: silently wrong scores. Prompts of one length, so positions are no question here."""
    torch.manual_seed(0)
    model = peft.get_peft_model(build("llama", tiny_tokenizer), METHODS[method]("CAUSAL_LM")).eval()
    with torch.no_grad():  # virtual tokens that matter
        for param in model.prompt_encoder.parameters():
            param.mul_(30)
    prompts = [[3, 8, 9, 10], [3, 11, 12, 5]]
    candidates = [[[13, 14, 1], [15, 1]], [[16, 1], [17, 18, 1]]]
    got = score_candidates(model, prompts, candidates, pad_id=0, batch_size=4)
    expected = reference_scores(model, prompts, candidates)
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(expected), atol=1e-4)


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_seq2seq_confidences_refuse_prompt_learning_adapters(tiny_tokenizer, method):
    """Scores run the encoder on its own, where the virtual tokens never reach it (peft's error named
    neither the method nor the reason)."""
    model = peft.get_peft_model(build("t5", tiny_tokenizer), METHODS[method]("SEQ_2_SEQ_LM"))
    peft_type = model.active_peft_config.peft_type.value
    for options in (dict(label_candidates=["2", "3"]), dict(mode="sequence", max_new_tokens=2)):
        with pytest.raises(ValueError, match=rf"encoder-decoder student with {peft_type} adapters"):
            label_confidences(model, tiny_tokenizer, records(2), **options)


def far_apart_prompts(tokenizer):
    """Causal features whose prompts differ by dozens of tokens: the short ones get long left padding."""
    rows = records(4)
    for i, row in enumerate(rows):
        row["input"] = "so " * (12 * (i % 2)) + row["input"]
    return prepare_dss_features(Dataset.from_list(rows), tokenizer, student_type="causal")


@pytest.mark.parametrize(("kind", "method"), [("gpt2", "prompt"), ("gpt2", "p-tuning"), ("llama", "prompt")])
def test_prompt_learning_losses_do_not_depend_on_left_padding(tmp_path, tiny_tokenizer, kind, method):
    """peft drops ``position_ids`` for prompt and p-tuning: a left-padded row got its positions shifted by
    its padding (GPT-2's absolute positions, and the distance to the virtual tokens for every model), so a
    short example's loss in a batch was not its loss alone. Each task's loss is the token mean of the
    examples run one by one."""
    data = far_apart_prompts(tiny_tokenizer)
    torch.manual_seed(0)
    model = peft.get_peft_model(build(kind, tiny_tokenizer), METHODS[method]("CAUSAL_LM"))
    with torch.no_grad():  # virtual tokens that matter
        for param in model.prompt_encoder.parameters():
            param.mul_(30)
    model.eval()
    expected = example_by_example_losses(model, data)
    args = training_arguments(
        tmp_path, max_steps=1, per_device_train_batch_size=4, learning_rate=0.0, max_grad_norm=0.0
    )
    trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer, train_dataset=data)
    batch = trainer.data_collator([data[i] for i in range(4)])
    assert (batch["pred"]["attention_mask"][:, :12] == 0).any()  # some rows are left-padded by 12+ tokens
    trainer.train()
    logged = trainer.state.log_history[0]
    for name, value in expected.items():
        assert math.isclose(logged[name], value, rel_tol=1e-5), (name, logged[name], value)


@pytest.mark.parametrize(("kind", "method"), [("gpt2", "prompt"), ("gpt2", "p-tuning"), ("llama", "prompt")])
def test_candidate_scores_with_virtual_tokens_do_not_depend_on_left_padding(tiny_tokenizer, kind, method):
    """Prompts of different lengths: each scores as it does alone, whatever the others in its batch."""
    torch.manual_seed(0)
    model = peft.get_peft_model(build(kind, tiny_tokenizer), METHODS[method]("CAUSAL_LM")).eval()
    with torch.no_grad():
        for param in model.prompt_encoder.parameters():
            param.mul_(30)
    prompts = [[3, 8, 9, 10], [3, 11, 12, 5] + [8, 9, 10, 11] * 4, [3, 12]]
    candidates = [[[13, 14, 1], [15, 1]], [[16, 1], [17, 18, 1]], [[19, 1]]]
    got = score_candidates(model, prompts, candidates, pad_id=0, batch_size=4)
    expected = reference_scores(model, prompts, candidates)
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(expected), atol=1e-4)


# generation with prompt-learning adapters on a decoder-only student

EXACT_GENERATION = [
    ("gpt2", "prompt"),
    ("llama", "prompt"),
    ("llama", "p-tuning"),
    ("gpt2", "prefix"),
    ("llama", "prefix"),
    ("qwen2", "prefix"),
]


def adapted_causal(kind, method, tokenizer):
    """A decoder-only student with prompt-learning adapters whose virtual tokens change its predictions."""
    torch.manual_seed(0)
    model = peft.get_peft_model(build(kind, tokenizer), METHODS[method]("CAUSAL_LM")).eval()
    with torch.no_grad():
        for param in model.prompt_encoder.parameters():
            param.mul_(30)
    return model


def greedy_alone(model, prompt, max_new_tokens, eos_id):
    """Greedy tokens and the softmax probability of each, from peft's own forward over the whole sequence
    so far: one example, no padding, no cache, a full pass per token."""
    ids, probabilities = [int(t) for t in prompt], []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            token = int(logits.argmax())
            probabilities.append(float(torch.softmax(logits, dim=-1)[token]))
            ids.append(token)
            if token == eos_id:
                break
    return ids[len(prompt) :], probabilities


def prompts_of_three_lengths():
    return [[3, 8, 9, 10], [3, 11, 12, 5] + [8, 9, 10, 11] * 3, [3, 12], [3, 9, 8, 11]]


@pytest.mark.parametrize(("kind", "method"), EXACT_GENERATION)
def test_generated_logits_with_virtual_tokens_are_the_teacher_forced_ones(tiny_tokenizer, kind, method):
    """peft 0.21.2 passes its virtual tokens' cache as ``past_key_values``, which transformers 5.2x (that
    names it ``cache``) ignores: with a cache, prompt tuning put the virtual tokens in front of every new
    token again and prefix tuning generated without its prefix; without one, Llama carried the prefix cache
    of one step into the next. Each generated step's logits are those of peft's forward over the prompt and
    the tokens generated before it, for prompts of different lengths in one call."""
    from hf_cotmi.causal_confidence import generate_from_prompts, generation_groups

    model = adapted_causal(kind, method, tiny_tokenizer)
    prompts = prompts_of_three_lengths()
    seen = []
    for rows in generation_groups(model, [len(p) for p in prompts]):
        out, width = generate_from_prompts(
            model,
            [prompts[i] for i in rows],
            pad_id=0,
            max_new_tokens=5,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        for j, i in enumerate(rows):
            seen.append(i)
            new = out.sequences[j, width:].tolist()
            if 1 in new:  # up to and including EOS; what follows is padding
                new = new[: new.index(1) + 1]
            sequence = torch.tensor([prompts[i] + new])
            with torch.no_grad():
                forced = model(input_ids=sequence).logits[0, -len(new) - 1 : -1]
            generated = torch.stack([step[j] for step in out.logits[: len(new)]])
            torch.testing.assert_close(generated, forced, atol=1e-4, rtol=1e-4)
    assert sorted(seen) == list(range(len(prompts)))


@pytest.mark.parametrize(("kind", "method"), [("gpt2", "prompt"), ("llama", "p-tuning"), ("llama", "prefix")])
def test_label_confidences_and_texts_with_virtual_tokens_are_each_examples_own(tiny_tokenizer, kind, method):
    """Sequence confidences and generated texts of inputs of different lengths in one batch: what greedy
    decoding with peft's own forward gives each example alone."""
    from hf_cotmi.causal_confidence import causal_prompts
    from hf_cotmi.generation import generate_texts

    model = adapted_causal(kind, method, tiny_tokenizer)
    rows = records(4)
    rows[1]["input"] = "so " * 12 + rows[1]["input"]
    prompts = causal_prompts(tiny_tokenizer, ["predict: " + row["input"] for row in rows])
    assert len({len(p) for p in prompts}) > 1
    expected = [greedy_alone(model, p, 4, tiny_tokenizer.eos_token_id) for p in prompts]
    result = label_confidences(model, tiny_tokenizer, rows, mode="sequence", max_new_tokens=4, batch_size=4)
    texts = [tiny_tokenizer.decode(ids, skip_special_tokens=True).strip() for ids, _ in expected]
    assert result.predictions == texts
    np.testing.assert_allclose(result.confidences, [np.prod(p) for _, p in expected], rtol=1e-4)
    generated = generate_texts(
        model, tiny_tokenizer, [row["input"] for row in rows], prefix="predict: ", max_new_tokens=4
    )
    assert generated == texts


@pytest.mark.parametrize(("kind", "method"), [("qwen2", "prompt"), ("llama", "prefix")])
def test_trainer_generation_with_virtual_tokens_is_each_examples_own(tmp_path, tiny_tokenizer, kind, method):
    """``predict`` with ``predict_with_generate`` from a left-padded batch of prompts of different lengths."""
    data = far_apart_prompts(tiny_tokenizer)
    model = adapted_causal(kind, method, tiny_tokenizer)
    args = training_arguments(tmp_path, per_device_eval_batch_size=4)
    trainer = DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer)
    label_ids = trainer.predict(data, max_new_tokens=4).predictions
    for row in range(len(data)):
        ids, labels = data[row]["input_ids"], data[row]["labels"]
        prompt = [t for t, label in zip(ids, labels) if label == -100]
        tokens, _ = greedy_alone(model, prompt, 4, tiny_tokenizer.eos_token_id)
        assert label_ids[row, : len(tokens)].tolist() == tokens, row
        assert (label_ids[row, len(tokens) :] == tiny_tokenizer.pad_token_id).all(), row


def test_sharded_generation_with_prompt_tuning_warns_once_that_padded_rows_are_off(
    tmp_path, tiny_tokenizer, caplog
):
    """Under ZeRO-3 or FSDP (``synced_gpus``) every process must call ``generate`` as often as the others,
    so a batch cannot be split into prompts of one length: the trainer generates it whole and says what is
    off, once."""
    import logging

    data = far_apart_prompts(tiny_tokenizer)
    model = adapted_causal("gpt2", "prompt", tiny_tokenizer)
    trainer = DSSMITrainer(
        model=model,
        args=training_arguments(tmp_path, per_device_eval_batch_size=2),
        processing_class=tiny_tokenizer,
    )
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
            trainer.predict(data, max_new_tokens=2, synced_gpus=True)
    finally:
        torch.distributed.destroy_process_group()
    warned = [r.getMessage() for r in caplog.records if "PROMPT_TUNING" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "synced_gpus" in warned[0] and "left-padded" in warned[0]


@pytest.mark.parametrize(
    ("kind", "targets", "unmatched"),
    [
        ("t5", ["q", "nothing"], "'nothing'"),
        ("llama", ["q_proj", "v_prj"], "'v_prj'"),
        ("t5", ["q_proj"], "'q_proj'"),
    ],
    ids=["t5-one-typo", "llama-one-typo", "t5-none-match"],
)
def test_a_target_module_name_that_matches_nothing_is_refused_naming_the_modules_there_are(
    tmp_path, tiny_tokenizer, kind, targets, unmatched
):
    """peft needs only one of ``target_modules`` to match: a typo beside a good name trained silently
    without that name's adapters (``--lora-target-modules q,vv`` adapted ``q`` alone); none matching gave
    peft's error, which does not say what the model's modules are called."""
    model = build(kind, tiny_tokenizer)
    linear = sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    )
    with pytest.raises(ValueError, match=rf"target_modules.*{unmatched}.*matches no module") as caught:
        DSSMITrainer(
            model=model,
            args=training_arguments(tmp_path),
            processing_class=tiny_tokenizer,
            peft_config=peft.LoraConfig(task_type=task_type(kind), r=4, target_modules=targets),
        )
    assert all(name in str(caught.value) for name in linear), (linear, str(caught.value))


def test_target_modules_given_by_dotted_suffix_or_regex_still_train(tmp_path, tiny_tokenizer):
    """peft matches a name as a module path's last components, and a string as a regular expression."""
    for targets in (["self_attn.q_proj", "v_proj"], r".*\.(q|v)_proj"):
        trainer = DSSMITrainer(
            model=build("llama", tiny_tokenizer),
            args=training_arguments(tmp_path, max_steps=1),
            processing_class=tiny_tokenizer,
            peft_config=peft.LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=targets),
        )
        adapted = {
            n.split(".lora_")[0].rsplit(".", 1)[-1]
            for n, p in trainer.model.named_parameters()
            if p.requires_grad
        }
        assert adapted == {"q_proj", "v_proj"}, (targets, adapted)
