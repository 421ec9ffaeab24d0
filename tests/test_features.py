"""prepare_dss_features: token columns, truncation counts, rationale handling, NLI separators."""

from __future__ import annotations

import copy as copy_module
import logging
import pickle
from types import SimpleNamespace

import pytest
from datasets import Dataset, DatasetDict, List, Value, load_from_disk

from hf_cotmi import prepare_dss_features
from hf_cotmi.data.features import EmptyRationaleError, default_nli_separator, student_input_texts
from hf_cotmi.tiny import build_word_tokenizer

WORDS = "tom has apples and buys more how many so he the answer is premise hypothesis a b c d e f g h i j k l"


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer([WORDS + " 0 1 2 3 4 5 6 7 8 9 10 11 12 . ?"])


def words(n: int) -> str:
    return " ".join(WORDS.split()[:n])


def example_data(input_words, label_words, rationale_words) -> Dataset:
    return Dataset.from_dict(
        {
            "input": [words(n) for n in input_words],
            "label": [words(n) for n in label_words],
            "rationale": [words(n) for n in rationale_words],
        }
    )


def test_columns_match_direct_tokenisation(tok):
    data = DatasetDict({"train": example_data([3, 5], [1, 2], [4, 6]), "test": example_data([2], [1], [3])})
    features = prepare_dss_features(data, tok)
    for split in data:
        out = features[split]
        assert out.column_names[:3] == ["input", "label", "rationale"]  # text kept
        assert out.features["input_ids"] == List(Value("int32"))
        assert out.features["attention_mask"] == List(Value("int8"))
        for row in out:
            assert row["input_ids"] == tok("predict: " + row["input"])["input_ids"]
            assert row["attention_mask"] == [1] * len(row["input_ids"])
            assert row["labels"] == tok(text_target=row["label"])["input_ids"]
            assert row["expl_input_ids"] == tok("explain: " + row["input"])["input_ids"]
            assert row["expl_attention_mask"] == [1] * len(row["expl_input_ids"])
            assert row["rationale_labels"] == tok(text_target=row["rationale"])["input_ids"]
            assert -100 not in row["labels"] + row["rationale_labels"]


def test_prefixes_are_settable(tok):
    data = example_data([2], [1], [1])
    out = prepare_dss_features(data, tok, predict_prefix="answer: ", explain_prefix="so ")
    assert tok.decode(out[0]["input_ids"]) == "answer : tom has </s>"
    assert tok.decode(out[0]["expl_input_ids"]) == "so tom has </s>"


def test_truncation_is_counted(tok, caplog):
    input_words, label_words, rationale_words = [3, 6, 8, 12], [1, 4, 7, 2], [9, 2, 12, 11]
    max_input, max_label, max_rationale = 10, 5, 10
    data = example_data(input_words, label_words, rationale_words)
    with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
        out, report = prepare_dss_features(
            DatasetDict({"train": data}),
            tok,
            max_input_length=max_input,
            max_label_length=max_label,
            max_rationale_length=max_rationale,
            return_report=True,
        )
    counts = report.splits["train"]
    # word-level tokenizer: one token per word, "predict: " is two tokens, and every sequence ends with </s>
    assert counts.truncated_inputs == sum(n + 3 > max_input for n in input_words) == 2
    assert counts.truncated_explain_inputs == counts.truncated_inputs
    assert counts.truncated_labels == sum(n + 1 > max_label for n in label_words) == 1
    assert counts.truncated_rationales == sum(n + 1 > max_rationale for n in rationale_words) == 2
    assert report.truncated == 7 and counts.examples == 4
    for row, n in zip(out["train"], input_words):
        if n + 3 > max_input:
            assert len(row["input_ids"]) == max_input and row["input_ids"][-1] == tok.eos_token_id
        else:
            assert len(row["input_ids"]) == n + 3
    assert "2 of 4 predict inputs were truncated to max_input_length=10" in caplog.text
    assert "1 of 4 labels were truncated to max_label_length=5" in caplog.text


def test_counts_survive_the_datasets_cache(tok, tmp_path):
    example_data([3, 12], [1, 1], [1, 1]).save_to_disk(str(tmp_path / "data"))
    data = load_from_disk(str(tmp_path / "data"))  # file-backed: map results are cached
    _, first = prepare_dss_features(data, tok, max_input_length=8, return_report=True)
    _, second = prepare_dss_features(data, tok, max_input_length=8, return_report=True)
    assert first.splits == second.splits
    assert list(first.splits.values())[0].truncated_inputs == 1


def test_predict_only(tok):
    data = Dataset.from_dict({"input": ["tom has apples"], "label": ["a"]})
    out, report = prepare_dss_features(data, tok, with_rationale=False, return_report=True)
    assert isinstance(out, Dataset)
    assert "expl_input_ids" not in out.column_names and "rationale_labels" not in out.column_names
    assert out[0]["labels"] == tok(text_target="a")["input_ids"]
    assert report.splits["dataset"].with_rationale is False


def test_missing_columns_are_listed(tok):
    data = Dataset.from_dict({"input": ["tom"], "label": ["a"]})
    with pytest.raises(
        ValueError, match=r"no column 'rationale'; it has \['input', 'label'\].*with_rationale=False"
    ):
        prepare_dss_features(data, tok)
    with pytest.raises(ValueError, match=r"no column 'label'"):
        prepare_dss_features(Dataset.from_dict({"input": ["tom"]}), tok, with_rationale=False)


def test_empty_rationales(tok, caplog):
    data = Dataset.from_dict(
        {"input": ["tom", "has", "apples"], "label": ["a", "b", "c"], "rationale": ["so", "", None]}
    )
    with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
        kept, report = prepare_dss_features(data, tok, return_report=True)
    assert report.splits["dataset"].missing_rationales == 2
    assert kept["rationale_labels"][1:] == [[tok.eos_token_id], [tok.eos_token_id]]
    assert "2 of 3 examples have an empty rationale" in caplog.text
    dropped, report = prepare_dss_features(data, tok, empty_rationale="drop", return_report=True)
    assert dropped["input"] == ["tom"]
    assert report.splits["dataset"].dropped_rationales == 2 and report.splits["dataset"].examples == 1
    with pytest.raises(ValueError, match=r"2 of 3 examples have no rationale \(first rows: \[1, 2\]\)"):
        prepare_dss_features(data, tok, empty_rationale="error")


def test_the_empty_rationale_error_carries_the_split_the_count_and_the_first_rows(tok):
    rationales = ["so", None, "", " ", "so", "\t", None, "", "so", ""]  # 7 of 10 blank: rows 1-3, 5-7, 9
    data = Dataset.from_dict({"input": ["tom"] * 10, "label": ["a"] * 10, "rationale": rationales})
    with pytest.raises(EmptyRationaleError) as info:
        prepare_dss_features(DatasetDict({"train": data}), tok, empty_rationale="error")
    error = info.value
    assert isinstance(error, ValueError)  # the except clauses written before it had a class still catch it
    assert (error.split, error.count, error.total, error.first_rows) == ("train", 7, 10, [1, 2, 3, 5, 6])
    assert error.finding == "split 'train': 7 of 10 examples have no rationale (first rows: [1, 2, 3, 5, 6])"
    assert str(error) == (
        "split 'train': 7 of 10 examples have no rationale (first rows: [1, 2, 3, 5, 6]); keep them with "
        "empty_rationale='keep' (command line: --empty-rationale keep), drop them with 'drop' "
        "(--empty-rationale drop), or build predict-only features with with_rationale=False"
    )
    copy = pickle.loads(pickle.dumps(error))  # between processes, the attributes and message stay
    assert (copy.split, copy.count, copy.total, copy.first_rows) == ("train", 7, 10, [1, 2, 3, 5, 6])
    assert str(copy) == str(error) and type(copy) is EmptyRationaleError
    # a note added and an attribute set on it stay too, pickled or copied
    error.add_note("while building the features")
    error.origin = "a check of its own"
    for again in (pickle.loads(pickle.dumps(error)), copy_module.copy(error)):
        assert type(again) is EmptyRationaleError and again is not error and str(again) == str(error)
        assert again.__notes__ == ["while building the features"] and again.origin == "a check of its own"
        assert (again.split, again.count, again.total, again.first_rows) == ("train", 7, 10, [1, 2, 3, 5, 6])


def test_build_features_raises_an_empty_rationale_error_worded_in_the_options(tok):
    """The pipeline's :func:`build_features` refuses blank rationales with an ``EmptyRationaleError`` too
    (its split and counts), whose message names the ``--empty-rationale`` ways on."""
    from hf_cotmi.pipeline import LoadedData, build_features
    from hf_cotmi.run_arguments import DataArguments

    rationales = ["so", None, "", "so"]
    data = Dataset.from_dict({"input": ["tom"] * 4, "label": ["a"] * 4, "rationale": rationales})
    loaded = LoadedData(splits={"train": data}, name=None, task="text", source={})
    try:
        build_features(loaded, tok, DataArguments(empty_rationale="error"))
    except EmptyRationaleError as caught:
        error = caught
    assert (error.split, error.count, error.total, error.first_rows) == ("train", 2, 4, [1, 2])
    assert str(error) == (
        "split 'train': 2 of 4 examples have no rationale (first rows: [1, 2]); keep them with "
        "--empty-rationale keep (their rationale target is only the end-of-sequence token) or drop them "
        "with --empty-rationale drop"
    )
    assert type(error.__cause__) is EmptyRationaleError and error.__cause__.first_rows == [1, 2]
    error.add_note("from build_features")
    for again in (pickle.loads(pickle.dumps(error)), copy_module.copy(error)):
        assert type(again) is type(error) and str(again) == str(error)
        assert again.__notes__ == ["from build_features"] and again.count == 2


def test_nli_separator(tok):
    data = Dataset.from_dict(
        {
            "input": ["ignored"],
            "premise": ["tom has apples"],
            "hypothesis": ["he has more"],
            "label": ["a"],
            "rationale": ["so"],
        }
    )
    out = prepare_dss_features(data, tok)
    assert (
        out[0]["input_ids"] == tok("predict: tom has apples")["input_ids"] + tok("he has more")["input_ids"]
    )
    assert out[0]["expl_input_ids"][:2] == tok("explain:", add_special_tokens=False)["input_ids"]
    out = prepare_dss_features(data, tok, nli_separator="<sep>")
    ids = out[0]["input_ids"]
    assert ids.count(tok.sep_token_id) == 1 and ids.count(tok.eos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "predict : tom has apples he has more"


def test_student_input_texts_are_the_texts_the_features_tokenise(tok):
    data = Dataset.from_dict(
        {
            "input": ["tom has apples</s>he has more", "a b"],  # what load_dss_dataset writes: "</s>"
            "premise": ["tom has apples", "a"],
            "hypothesis": ["he has more", "b"],
            "label": ["a", "b"],
            "rationale": ["so", "so"],
        }
    )
    for separator in (None, "<sep>"):
        features = prepare_dss_features(data, tok, nli_separator=separator)
        texts = student_input_texts(data, tok, nli_separator=separator)
        assert [tok("predict: " + text)["input_ids"] for text in texts] == features["input_ids"]
    assert student_input_texts(data, tok, nli_separator="<sep>")[1] == "a<sep>b"
    plain = Dataset.from_dict({"input": ["tom has apples"], "label": ["a"], "rationale": ["so"]})
    assert student_input_texts(plain, tok) == ["tom has apples"]
    assert student_input_texts({"premise": ["x"], "hypothesis": ["y"]}, tok, nli_separator=" | ") == ["x | y"]


def test_default_nli_separator():
    assert default_nli_separator(SimpleNamespace(eos_token="</s>", sep_token="[SEP]")) == "</s>"
    assert default_nli_separator(SimpleNamespace(eos_token=None, sep_token="[SEP]")) == "[SEP]"
    with pytest.raises(ValueError, match="neither an EOS nor a SEP token"):
        default_nli_separator(SimpleNamespace(eos_token=None, sep_token=None))


def test_bad_values_name_split_and_row(tok):
    data = DatasetDict(
        {"test": Dataset.from_dict({"input": ["a", "b"], "label": ["x", None], "rationale": ["r", "r"]})}
    )
    with pytest.raises(ValueError, match=r"split 'test', row 1: column 'label' is None"):
        prepare_dss_features(data, tok)


def test_argument_errors(tok):
    data = example_data([1], [1], [1])
    with pytest.raises(ValueError, match="empty_rationale='skip'"):
        prepare_dss_features(data, tok, empty_rationale="skip")
    with pytest.raises(ValueError, match="max_label_length=0 must be a positive integer"):
        prepare_dss_features(data, tok, max_label_length=0)
    with pytest.raises(TypeError, match="Dataset or DatasetDict"):
        prepare_dss_features([{"input": "a"}], tok)


def test_features_feed_the_collator(tok):
    from hf_cotmi import DSSDataCollator

    out = prepare_dss_features(example_data([2, 5], [1, 3], [4, 2]), tok)
    batch = DSSDataCollator(tok)([out[0], out[1]])
    assert batch["pred"]["input_ids"].shape == (2, 8)
    assert batch["pred"]["labels"].tolist()[0] == tok(text_target=words(1))["input_ids"] + [-100] * 2
    assert batch["expl"]["labels"].shape == (2, 5)


def test_an_empty_split_gives_an_empty_split_with_the_feature_columns():
    from datasets import Dataset, DatasetDict

    from hf_cotmi import build_word_tokenizer, prepare_dss_features

    tok = build_word_tokenizer(["a b c"])
    empty = Dataset.from_dict({"input": [], "label": [], "rationale": []})
    full = Dataset.from_dict({"input": ["a b"], "label": ["c"], "rationale": ["a c"]})
    out, report = prepare_dss_features(DatasetDict(train=full, test=empty), tok, return_report=True)
    assert out["test"].num_rows == 0
    assert set(out["test"].column_names) == set(out["train"].column_names)
    assert not any(name.startswith("__hf_cotmi") for name in out["test"].column_names)
    assert report.splits["test"].examples == 0


def test_bad_values_name_the_row_of_the_split_given_after_dropping_rationales(tok):
    data = Dataset.from_dict(
        {"input": ["a", "b", "c"], "label": ["x", "y", None], "rationale": ["", "r", "r"]}
    )
    with pytest.raises(ValueError, match=r"row 2: column 'label' is None"):
        prepare_dss_features(data, tok, empty_rationale="drop")


def bart_like_tokenizer(texts):
    """A byte-level BPE tokenizer that frames every text as ``<s> ... </s>`` (as BART's does): spaces are
    tokens of their own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer)
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", backend.token_to_id("</s>")), ("<s>", backend.token_to_id("<s>"))
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def test_a_blank_target_is_tokenised_as_an_empty_one():
    # blank rationales and labels are counted as empty; their target must then be the empty text's
    # (BART: "<s> </s>"), not a run of space tokens
    tok = bart_like_tokenizer(["tom has 3 apples so 3", "predict: explain:"])
    data = Dataset.from_dict(
        {"input": ["tom has 3 apples"] * 2, "label": ["", "  "], "rationale": ["", " \n "]}
    )
    out, report = prepare_dss_features(data, tok, return_report=True)
    empty = tok(text_target="")["input_ids"]
    assert tok.convert_ids_to_tokens(empty) == ["<s>", "</s>"]
    assert out["labels"] == out["rationale_labels"] == [empty, empty]
    assert report.splits["dataset"].missing_rationales == report.splits["dataset"].empty_labels == 2
