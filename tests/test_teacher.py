"""Teacher generation: answer parsing and voting, prompts, retry policy, the resumable files, the local teacher."""

from __future__ import annotations

import json
import math
import random

import pytest

from hf_cotmi.data.dss import format_cqa_input
from hf_cotmi.data.parsing import parse_anli_output, parse_cqa_output, parse_svamp_output
from hf_cotmi.metrics import normalize_text
from hf_cotmi.teacher import (
    TASKS,
    load_prompt_template,
    parse_teacher_output,
    render_prompt,
    vote_answers,
)
from hf_cotmi.teacher.answers import answers_agree
from hf_cotmi.teacher.retrying import RetryableError, RetryPolicy, call_with_retries, parse_retry_after
from hf_cotmi.teacher.store import (
    JsonlAppender,
    SettingsMismatchError,
    check_settings,
    read_done,
    sort_by_index,
)


@pytest.mark.parametrize(
    ("task", "text", "rationale", "label"),
    [
        (
            "nli",
            "Dogs are animals. So the answer is entailment.\n\nPremise: more",
            "Dogs are animals.",
            "entailment",
        ),
        ("nli", "No link. So the answer is Neutral", "No link.", "neutral"),  # missing period, capitalised
        (
            "multiple_choice",
            "Fish live in water. So the answer is (a) Sea.\n\nQ: next",
            "Fish live in water.",
            "sea",
        ),
        ("arithmetic", "24 - 9 is 15. The answer is (24 -  9).\n\nQ: x", "24 - 9 is 15.", "(24 - 9)"),
        ("generic", "It is hot. So the answer is Mercury.\nQ: Which planet? A: x", "It is hot.", "mercury"),
        # as chat models write it: "Q:" inside a word, markdown bold, another case of the answer sentence
        (
            "generic",
            "The FAQ: page lists Paris. So the answer is Paris.",
            "The FAQ: page lists Paris.",
            "paris",
        ),
        (
            "multiple_choice",
            "Cold keeps food. So the answer is **(b) refrigerator**.",
            "Cold keeps food.",
            "refrigerator",
        ),
        ("nli", "A man is a person. So the answer is **entailment**.", "A man is a person.", "entailment"),
        ("arithmetic", "7 boxes of 6. **The answer is (7 * 6).**", "7 boxes of 6.", "(7 * 6)"),
        ("arithmetic", "7 boxes of 6. So the answer is (7 * 6).", "7 boxes of 6.", "(7 * 6)"),
        ("nli", "No link. so, the answer is neutral.", "No link.", "neutral"),
        # an answer that is more than its first parenthesised part: the whole expression, not (50 - 12)
        ("arithmetic", "38 / 2 is 19. The answer is (50 - 12) / 2.", "38 / 2 is 19.", "((50 - 12) / 2)"),
        ("arithmetic", "Twice 7. The answer is 2 * (3 + 4) = 14.", "Twice 7.", "(2 * (3 + 4))"),
        ("arithmetic", "Split. The answer is (50 - 12) / 2. Each gets 19.", "Split.", "((50 - 12) / 2)"),
        ("arithmetic", "Add. The answer is (3 + 4) = 7.", "Add.", "(3 + 4)"),
        ("arithmetic", "Add. The answer is (3 + 4) apples.", "Add.", "(3 + 4)"),
        ("arithmetic", "Both. The answer is (19 - 6) + (18 - 15).", "Both.", "(19 - 6) + (18 - 15)"),
    ],
)
def test_parse_teacher_output_follows_the_dss_rules(task, text, rationale, label):
    answer = parse_teacher_output(task, text)
    assert (answer.rationale, answer.label, answer.reason) == (rationale, label, "")


@pytest.mark.parametrize(
    ("task", "text", "rationale", "label"),
    [
        # "Q:" inside the reasoning is no next example: only a "Q:" at a line start is, as for generic
        (
            "multiple_choice",
            "The FAQ: page says fish swim. So the answer is (a) sea.",
            "The FAQ: page says fish swim.",
            "sea",
        ),
        (
            "multiple_choice",
            "Fish swim (see Q: 4). So the answer is (a) sea.\n  Q: next",
            "Fish swim (see Q: 4).",
            "sea",
        ),
        (
            "arithmetic",
            "His IQ: 100, plus 20. The answer is (100 + 20).\n\nQ: next",
            "His IQ: 100, plus 20.",
            "(100 + 20)",
        ),
        ("arithmetic", "FAQ: halve 38. The answer is (50 - 12) / 2.", "FAQ: halve 38.", "((50 - 12) / 2)"),
        # after the answer sentence a "Q:" still cuts, as the SVAMP rule cut it
        ("arithmetic", "IQ: add. The answer is (3 + 4). Q: and (5)?", "IQ: add.", "(3 + 4)"),
        (
            "generic",
            "The FAQ: page lists Paris. So the answer is Paris.\nQ: x",
            "The FAQ: page lists Paris.",
            "paris",
        ),
    ],
)
def test_a_q_colon_inside_the_reasoning_does_not_cut_the_answer(task, text, rationale, label):
    """For multiple_choice and arithmetic "IQ:" or "FAQ:" in the reasoning made the answer unparsable."""
    answer = parse_teacher_output(task, text)
    assert (answer.rationale, answer.label, answer.reason) == (rationale, label, "")


@pytest.mark.parametrize("task", ["multiple_choice", "arithmetic", "generic"])
def test_a_q_colon_at_a_line_start_before_the_answer_still_ends_the_teachers_text(task):
    sentence = {"multiple_choice": "So the answer is (a) sea.", "arithmetic": "The answer is (1 + 1)."}
    text = (
        f"Let me think.\n Q: Where do fish live?\nA: Fish swim. {sentence.get(task, 'So the answer is sea.')}"
    )
    answer = parse_teacher_output(task, text)
    assert not answer.parsed and "no answer sentence" not in answer.reason


def test_parsing_agrees_with_the_dss_parsers_on_well_formed_text():
    # the independent reference: the DSS parsers themselves on text they were written for
    cases = [
        ("nli", "A cat is not a dog. So the answer is contradiction.", parse_anli_output),
        ("multiple_choice", "Beavers need wood. So the answer is (c) wooded area.", parse_cqa_output),
        ("arithmetic", "10 * 45 is 450. The answer is (10 * 45).", parse_svamp_output),
    ]
    for task, text, dss in cases:
        answer, reference = parse_teacher_output(task, text), dss(text)
        assert (answer.rationale, answer.label) == (reference.rationale, reference.label)


@pytest.mark.parametrize(
    ("task", "text", "reason"),
    [
        ("nli", "I cannot tell.", "no answer sentence"),
        ("nli", "Hmm. So the answer is maybe.", "not a valid nli answer"),
        ("arithmetic", "The answer is (x + 1).", "not a valid arithmetic answer"),
        ("arithmetic", "He has 5. The answer is 5.", "does not parse"),  # the SVAMP rule needs parentheses
        ("multiple_choice", "So the answer is (b) pen.", "empty rationale"),
        ("generic", "So the answer is yes. So the answer is no.", "holds 2 answer sentences"),  # DSS refuses
    ],
)
def test_unparsable_outputs_say_why(task, text, reason):
    answer = parse_teacher_output(task, text)
    assert not answer.parsed and reason in answer.reason


def test_vote_majority_ties_and_agreement():
    vote = vote_answers("arithmetic", ["(2 + 2)", "(8 / 2)", "(1 + 2)", None, "(3 * 1)"])
    assert vote.winner == "(2 + 2)" and vote.winners == (0, 1) and vote.agreement == pytest.approx(2 / 5)
    tie = vote_answers("nli", ["neutral", "entailment", "entailment", "neutral"])
    assert tie.winner == "neutral" and tie.winners == (0, 3)  # the group that came first wins a tie
    assert vote_answers("generic", [None, ""]).winner == ""
    assert answers_agree("arithmetic", "(84 / 2)", "( 84.0 / 2.0 )")
    assert not answers_agree("arithmetic", "(84 / 3)", "( 84.0 / 2.0 )")
    assert answers_agree("multiple_choice", "wooded area", "Wooded Area.")


@pytest.mark.parametrize("task", TASKS)
def test_shipped_prompts_teach_the_answer_sentence_they_are_parsed_by(task):
    template = load_prompt_template(task)
    prompt = render_prompt(template, "What is {x} plus 2?", task)
    assert "What is {x} plus 2?" in prompt and "{input}" not in prompt
    # every worked example in the shipped prompt parses with the task's own rules
    examples = [block for block in template.split("\n\n")[1:-1]]
    assert len(examples) >= 3
    for block in examples:
        answer_text = block.split("\nA: ", 1)[-1].split("\nAnswer: ", 1)[-1]
        assert parse_teacher_output(task, answer_text).parsed, (task, answer_text)


def test_nli_input_is_rendered_as_premise_and_hypothesis():
    prompt = render_prompt(load_prompt_template("nli"), "A dog runs.</s>An animal moves.", "nli")
    assert prompt.endswith("Premise: A dog runs.\nHypothesis: An animal moves.\nAnswer:")


def test_user_template_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Question: {input}\nReasoning:")
    assert render_prompt(load_prompt_template("generic", path), "Why?") == "Question: Why?\nReasoning:"
    path.write_text("no placeholder")
    with pytest.raises(ValueError, match=r"t\.txt: .*\{input\} exactly once; found 0"):
        load_prompt_template("generic", path)
    with pytest.raises(ValueError, match="not a built-in task"):
        load_prompt_template("poetry")


GATEWAY_CHOICES = ["Chicago", "Boston", "St. Louis", "Washington D.C.", "Denver"]


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        # the exemplars' answer sentence, imitated exactly: the period inside the choice is not its end
        ("The arch stands in Missouri. So the answer is (c) St. Louis.", "St. Louis"),
        ("The arch stands in Missouri. So the answer is (c) St. Louis", "St. Louis"),
        ("The arch stands in Missouri. So the answer is (c) St. Louis. Hope this helps!", "St. Louis"),
        ("The Mall is there. So the answer is (d) Washington D.C. Let me know.", "Washington D.C."),
        ("The Mall is there. So the answer is **(D) washington d.c.**", "Washington D.C."),
    ],
)
def test_a_choice_with_a_period_inside_is_the_whole_label(text, choice):
    answer = parse_teacher_output("multiple_choice", text, choices=GATEWAY_CHOICES)
    assert answer.reason == ""
    assert answer.label == normalize_text(choice)
    assert answers_agree("multiple_choice", answer.label, choice)


def test_an_answer_that_is_no_choice_still_ends_at_its_sentence():
    text = "Fish live in water. So the answer is (b) sea. Let me know if you need more help."
    assert parse_teacher_output("multiple_choice", text).label == "sea"
    # with the record's choices, a text that is none of them is refused (test_an_answer_that_is_none_...)
    parsed = parse_teacher_output("multiple_choice", text, choices=["tree", "lake"])
    assert (parsed.label, parsed.reason) == ("", "the answer 'sea' is none of the record's choices")
    with pytest.raises(ValueError, match="choices are read by the multiple_choice task only"):
        parse_teacher_output("nli", "So the answer is neutral.", choices=["a"])


def test_choices_in_input_reads_back_what_format_cqa_input_wrote():
    from hf_cotmi.teacher.prompts import choices_in_input

    choices = ["St. Louis", "(a) trick", "Answer: no", "spaces  inside"]
    assert choices_in_input(format_cqa_input("Where? Q: yes", choices)) == choices
    assert choices_in_input("What is 2 + 2?") == []
    template = load_prompt_template("multiple_choice")
    assert choices_in_input(template.split("\n\n")[1]) == [
        "oven",
        "refrigerator",
        "bookshelf",
        "mailbox",
        "bathtub",
    ]


def test_generated_multiple_choice_labels_keep_a_choice_with_a_period(tmp_path):
    from hf_cotmi import generate_rationales

    source = tmp_path / "in.jsonl"
    question = format_cqa_input("Where is the Gateway Arch?", GATEWAY_CHOICES)
    source.write_text(json.dumps({"input": question, "choices": GATEWAY_CHOICES}) + "\n")

    class Teacher:
        batch_size, concurrency, retries = 1, 1, 0

        def generate(self, requests):
            return ["The arch stands in Missouri. So the answer is (c) St. Louis." for _ in requests]

        def settings(self):
            return {"model": "canned"}

    out = tmp_path / "out.jsonl"
    generate_rationales(source, out, backend=Teacher(), task="multiple_choice", progress=False)
    (line,) = [json.loads(text) for text in out.read_text().splitlines()]
    assert (line["label"], line["teacher_label"]) == ("st. louis", "st. louis")
    assert line["rationale"] == "The arch stands in Missouri."


PIE_CHOICES = ["oven", "refrigerator", "bookshelf", "mailbox", "bathtub"]
_COOL = "A refrigerator keeps food cool."


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("(b) refrigerator.", "refrigerator"),
        ("(B): refrigerator.", "refrigerator"),  # the colon after the letter is no part of the answer
        ("(b).", "refrigerator"),  # a letter alone names its choice
        ("refrigerator (b).", "refrigerator"),
        ("B: refrigerator.", "refrigerator"),  # a reply that labels the options by letter
        (":\nB: refrigerator", "refrigerator"),
        ("A: oven.", "oven"),
        ("(x) refrigerator.", "refrigerator"),  # a letter that names no choice: the text decides, as before
    ],
)
def test_a_multiple_choice_answer_agrees_with_its_letter(answer, label):
    parsed = parse_teacher_output(
        "multiple_choice", f"{_COOL} So the answer is {answer}", choices=PIE_CHOICES
    )
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, label, "")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        # the CQA rule reads the text after the first letter and ignores the letter: without the check
        # the first two gave "refrigerator", the "not (a)" one "refrigerator, not", the listing one "oven"
        (
            "(a) refrigerator.",
            "the answer's letter (a) names choice 'oven' but its text 'refrigerator' is choice (b)",
        ),
        ("(e) refrigerator.", "letter (e) names choice 'bathtub' but its text 'refrigerator' is choice (b)"),
        ("oven (b).", "letter (b) names choice 'refrigerator' but its text 'oven' is choice (a)"),
        ("B: oven.", "letter (b) names choice 'refrigerator' but its text 'oven' is choice (a)"),
        ("(b) refrigerator, not (a) oven.", "names more than one choice letter ((b) and (a))"),
        ("A: (b) refrigerator.", "names more than one choice letter ((a) and (b))"),
        (":\n(a) oven\n(b) refrigerator", "followed by lines that list the choices"),
        (":\nA: oven\nB: refrigerator", "followed by lines that list the choices"),
    ],
)
def test_a_multiple_choice_answer_whose_letter_disagrees_is_refused(answer, reason):
    parsed = parse_teacher_output(
        "multiple_choice", f"{_COOL} So the answer is {answer}", choices=PIE_CHOICES
    )
    assert not parsed.parsed and reason in parsed.reason


def test_a_reply_that_labels_the_options_keeps_option_a_in_its_rationale():
    text = "A: an oven heats food.\nB: a refrigerator keeps it cool.\nSo the answer is (b) refrigerator."
    parsed = parse_teacher_output("multiple_choice", text, choices=PIE_CHOICES)
    assert parsed.rationale == "A: an oven heats food.\nB: a refrigerator keeps it cool."
    assert parsed.label == "refrigerator"
    # the few-shot marker opening a reply is still no part of its rationale
    parsed = parse_teacher_output("multiple_choice", f"A: {_COOL} So the answer is (b) refrigerator.")
    assert parsed.rationale == _COOL


@pytest.mark.parametrize(
    ("answer", "choices", "label"),
    [
        # a minus sign opening the answer is part of it; the letter's check stripped it, so that the first
        # gave "10 degrees", the second was refused as choice (b), and the third gave "5"
        ("(a) -10 degrees.", ["-10 degrees", "20 degrees"], "-10 degrees"),
        ("(a) -10 degrees.", ["-10 degrees", "10 degrees", "0 degrees"], "-10 degrees"),
        ("(a) -5.", None, "-5"),
        ("(b) -3.", ["3", "-3"], "-3"),
        # a colon not directly after the letter is part of the answer too (it gave ")")
        ("(a) :-)", [":-)", ":-("], ":-)"),
        # one directly after it is not, even where the choice holds a colon of its own
        ("(B): time: 5pm.", ["time: 3pm", "time: 5pm"], "time: 5pm"),
    ],
)
def test_a_multiple_choice_answer_keeps_its_leading_minus_and_colon(answer, choices, label):
    parsed = parse_teacher_output("multiple_choice", f"{_COOL} So the answer is {answer}", choices=choices)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, label, "")


@pytest.mark.parametrize(
    # "ovens" only starts like choice (a): no whole word of it, so no other choice opens the words
    "answer",
    ["option (b).", "choice (b).", "letter (b).", "the refrigerator (b).", "ovens heat food, so (b)."],
)
def test_a_letter_after_words_that_are_no_choice_gives_the_letters_choice(answer):
    # the words before the letter were the label ("option"); they are no choice, so the letter decides
    text = f"{_COOL} So the answer is {answer}"
    parsed = parse_teacher_output("multiple_choice", text, choices=PIE_CHOICES)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, "refrigerator", "")
    # without the record's choices the letter names nothing: refused, as before the letter's check
    parsed = parse_teacher_output("multiple_choice", text)
    assert not parsed.parsed and "does not parse" in parsed.reason


def test_a_letter_after_words_that_names_no_choice_is_refused():
    parsed = parse_teacher_output(
        "multiple_choice", f"{_COOL} So the answer is option (x).", choices=PIE_CHOICES
    )
    assert not parsed.parsed and "does not parse" in parsed.reason


@pytest.mark.parametrize(
    "after",
    [
        # a chat model's "why not the others" after an answer that has its text: no list of the choices
        "\n(b) keeps it cold, unlike the others.",
        "\n\n(a) oven heats food, so it is wrong.",
        "\n\nA: because it's cold",
        "\n(a) oven heats food.\n(c) bookshelf holds books.",
        "\n\nWhy not the others?\n(a) oven: heats food.\n(c) bookshelf: holds books.",
    ],
)
def test_lines_labelling_choices_after_an_answer_with_its_text_are_no_list(after):
    text = f"{_COOL} So the answer is (b) refrigerator.{after}"
    parsed = parse_teacher_output("multiple_choice", text, choices=PIE_CHOICES)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, "refrigerator", "")


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        # the answer split from a list of the choices: "So the answer is:" ends its line, the lines list them
        (":\n\n(a) oven\n\n(b) refrigerator\n(c) bookshelf", ""),
        (":\n(a): oven\n(b): refrigerator", ""),
        # the phrase alone ends its line: the answer line names no choice, and a label line follows
        ("\n(b) refrigerator.", ""),
        # an answer that is only a label, directly followed by lines labelling other letters
        ("(b):\n(a) oven\n(c) bookshelf", ""),
        # the answer on the line after the colon, with no list: one letter is named
        (":\n(b) refrigerator.\n(b) keeps it cold.", "refrigerator"),
        ("(b):\n(a) oven heats food.\n\n(c) bookshelf holds books.", "refrigerator"),
    ],
)
def test_an_answer_split_from_a_list_of_the_choices_is_refused(answer, label):
    parsed = parse_teacher_output(
        "multiple_choice", f"{_COOL} So the answer is {answer}", choices=PIE_CHOICES
    )
    assert parsed.label == label
    assert ("followed by lines that list the choices" in parsed.reason) == (not label)


@pytest.mark.parametrize(
    "text",
    [
        # "B:" inside a line is no option's label, nor is one in an invented next example
        f"A: Vitamin B: found in meat. {_COOL} So the answer is (b) refrigerator.",
        f"A: The oven heats. B: {_COOL} So the answer is (b) refrigerator.",
        f"A: {_COOL} So the answer is (b) refrigerator.\n\nQ: Which plan?\nAnswer Choices:\nA: go\nB: stay",
    ],
)
def test_a_leading_answer_marker_is_removed_unless_a_line_opens_with_option_b(text):
    parsed = parse_teacher_output("multiple_choice", text, choices=PIE_CHOICES)
    assert parsed.label == "refrigerator"
    assert not parsed.rationale.startswith("A:")
    assert parsed.rationale.endswith(_COOL)


@pytest.mark.parametrize(
    ("answer", "choices", "label"),
    [
        # a letter inside the choice the answer names cut the CQA rule's label there ("vitamin", "plan")
        ("(c) vitamin (a).", ["iron", "zinc", "vitamin (a)"], "vitamin (a)"),
        ("(b) Plan (B).", ["Plan (A)", "Plan (B)"], "plan (b)"),
        ("(e) both (a) and (b).", ["sun", "rain", "snow", "wind", "both (a) and (b)"], "both (a) and (b)"),
    ],
)
def test_a_choice_holding_a_letter_is_the_whole_label(answer, choices, label):
    parsed = parse_teacher_output("multiple_choice", f"{_COOL} So the answer is {answer}", choices=choices)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, label, "")


VITAMINS = ["vitamin (a)", "vitamin (c)", "iron"]
_ORANGES = "Oranges have it."


@pytest.mark.parametrize(
    "answer",
    [
        # the "(c)" inside the choice the answer names was read as the answer's letter: the first two gave
        # "iron", the third was refused as naming (c) and (b), the "B:" one as naming (b) and (c)
        "vitamin (c).",
        "Vitamin (C).",
        "vitamin (c) (b).",  # the letter after the choice is its own: (b) names vitamin (c)
        "B: vitamin (c).",
        "(b) vitamin (c).",
    ],
)
def test_a_choice_holding_a_letter_is_not_read_as_that_letter(answer):
    parsed = parse_teacher_output(
        "multiple_choice", f"{_ORANGES} So the answer is {answer}", choices=VITAMINS
    )
    assert (parsed.rationale, parsed.label, parsed.reason) == (_ORANGES, "vitamin (c)", "")


@pytest.mark.parametrize(
    ("answer", "choices", "reason"),
    [
        # the letter after the choice names another choice
        ("vitamin (c) (a).", VITAMINS, "letter (a) names choice 'vitamin (a)' but its text 'vitamin (c)' is"),
        # words that start with another choice before the letter: it gave the letter's choice
        # ("refrigerator")
        (
            "oven, not (b).",
            PIE_CHOICES,
            "letter (b) names choice 'refrigerator' but its text 'oven, not' starts",
        ),
        # a choice holding a letter, then more words and no letter of the answer's own: no answer
        ("vitamin (c) because of oranges.", VITAMINS, "does not parse"),
    ],
)
def test_a_letter_after_words_starting_with_another_choice_is_refused(answer, choices, reason):
    parsed = parse_teacher_output("multiple_choice", f"{_ORANGES} So the answer is {answer}", choices=choices)
    assert not parsed.parsed and reason in parsed.reason


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        # the letter ends a second choice's text: the reason said the letter named a choice ("iron", or
        # "vitamin (a)") that the text, starting with the first choice, was not
        ("vitamin (a) or vitamin (c).", "((a) 'vitamin (a)' and (b) 'vitamin (c)')"),
        ("vitamin (c), not vitamin (a).", "((b) 'vitamin (c)' and (a) 'vitamin (a)')"),
        ("vitamin (c) or vitamin (a).", "((b) 'vitamin (c)' and (a) 'vitamin (a)')"),
        ("vitamin (a) or Vitamin (C).", "((a) 'vitamin (a)' and (b) 'vitamin (c)')"),  # in any case
    ],
)
def test_a_letter_ending_a_second_choice_is_refused_as_two_choices(answer, shown):
    parsed = parse_teacher_output(
        "multiple_choice", f"{_ORANGES} So the answer is {answer}", choices=VITAMINS
    )
    assert not parsed.parsed
    assert parsed.reason == f"the answer sentence names more than one choice {shown}"


@pytest.mark.parametrize(
    ("answer", "choices", "label"),
    [
        # a separator between the letter and the choice: these gave "- refrigerator", "-- refrigerator", ...
        ("(b) - refrigerator.", PIE_CHOICES, "refrigerator"),
        ("(b) -- refrigerator.", PIE_CHOICES, "refrigerator"),
        ("(b) : refrigerator.", PIE_CHOICES, "refrigerator"),
        ("(b) \u2013 refrigerator.", PIE_CHOICES, "refrigerator"),  # en dash
        ("(b) \u2014 refrigerator", PIE_CHOICES, "refrigerator"),  # em dash, no final period
        ("(b) - St. Louis. Hope this helps.", ["Boston", "St. Louis"], "st. louis"),  # it gave "- st"
        # a minus written with a space after it, where the letter's choice is the negative number
        ("(a) - 5.", ["-5", "5"], "-5"),
        ("(b) - 5.", ["-5", "5"], "5"),
        # a minus sign with no space after it is no separator (a text that is no choice keeps its dash, and
        # is refused: test_an_answer_that_is_none_of_the_records_choices_is_refused)
        ("(a) -5.", ["-5", "5"], "-5"),
        ("(a) -10 degrees.", ["-10 degrees", "10 degrees"], "-10 degrees"),
    ],
)
def test_a_separator_between_the_letter_and_its_choice_is_dropped(answer, choices, label):
    parsed = parse_teacher_output("multiple_choice", f"{_COOL} So the answer is {answer}", choices=choices)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, label, "")


def test_a_separator_before_another_letters_choice_is_refused():
    parsed = parse_teacher_output(
        "multiple_choice", f"{_COOL} So the answer is (a) - refrigerator.", choices=PIE_CHOICES
    )
    assert (
        parsed.reason
        == "the answer's letter (a) names choice 'oven' but its text 'refrigerator' is choice (b)"
    )


@pytest.mark.parametrize(
    "after",
    [
        # the answer on the line after the colon, then why the others are wrong: refused as a list before
        ":\n\n**(b) refrigerator**\n\n(a) oven: heats food, wrong.\n(c) bookshelf: not for food.",
        ":\n(b) refrigerator.\n(a) and (c) are wrong.",
        ":\n(b) refrigerator\n(a) oven\n(c) bookshelf: holds books, not food.",
        # an answer that is only a label, then lines about the other choices
        "(b):\n(a) oven heats food.\n(c) bookshelf holds books.",
        "(b).\n(a) oven heats food.\n(c) bookshelf holds books.",
    ],
)
def test_an_answer_then_why_not_the_others_is_no_list(after):
    parsed = parse_teacher_output(
        "multiple_choice", f"{_COOL}\n\nSo the answer is{after}", choices=PIE_CHOICES
    )
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, "refrigerator", "")


@pytest.mark.parametrize(
    ("after", "choices"),
    [
        # every labelled line is a bare choice: a list of the choices, whichever letter comes first
        (":\n(a) oven\n(b) refrigerator\n(c) bookshelf", PIE_CHOICES),
        (":\n(b) refrigerator.\n(a) oven.", PIE_CHOICES),
        (":\n(a) - oven\n(b) - refrigerator", PIE_CHOICES),
        ("(b):\nA: oven\nC: bookshelf", PIE_CHOICES),
        # the first labelled line is no bare choice: the options gone through one by one, no single answer
        (":\n(a) oven: no.\n(b) refrigerator: yes.\n(c) bookshelf: no.", PIE_CHOICES),
        # without the record's choices no line is known to be a bare choice
        (":\n(b) refrigerator\n(a) oven heats food.", None),
    ],
)
def test_an_answer_split_from_bare_choices_or_an_evaluation_of_each_is_refused(after, choices):
    parsed = parse_teacher_output("multiple_choice", f"{_COOL}\n\nSo the answer is{after}", choices=choices)
    assert not parsed.parsed and "followed by lines that list the choices" in parsed.reason


NUTRIENTS = ["calcium", "protein", "vitamin", "iron", "zinc"]
_BLOOD = "Red blood cells carry oxygen with it."


@pytest.mark.parametrize(
    ("answer", "choices", "shown"),
    [
        # the letter names the first of the two choices that the text names: it gave "iron"
        (
            "iron or vitamin (c).",
            ["calcium", "protein", "iron", "vitamin", "zinc"],
            "(c) 'iron' and (d) 'vitamin'",
        ),
        (
            "Iron, or maybe vitamin (C).",
            ["calcium", "protein", "iron", "vitamin", "zinc"],
            "(c) 'iron' and (d) 'vitamin'",
        ),
        # the text after the letter names a second choice: it gave that text ("iron or vitamin"), no choice
        ("(d) iron or vitamin.", NUTRIENTS, "(d) 'iron' and (c) 'vitamin'"),
        ("(c) vitamin or iron.", NUTRIENTS, "(c) 'vitamin' and (d) 'iron'"),
        ("(d) iron, not vitamin.", NUTRIENTS, "(d) 'iron' and (c) 'vitamin'"),
        ("(d) iron and zinc.", NUTRIENTS, "(d) 'iron' and (e) 'zinc'"),
        ("(d) iron, since vitamin alone carries no oxygen.", NUTRIENTS, "(d) 'iron' and (c) 'vitamin'"),
        ("(d) iron (or maybe vitamin).", NUTRIENTS, "(d) 'iron' and (c) 'vitamin'"),
    ],
)
def test_an_answer_naming_a_second_choice_by_its_text_is_refused(answer, choices, shown):
    parsed = parse_teacher_output("multiple_choice", f"{_BLOOD} So the answer is {answer}", choices=choices)
    assert (parsed.label, parsed.reason) == ("", f"the answer sentence names more than one choice ({shown})")


# answers naming choice (d) "iron" of NUTRIENTS, and answers naming it and choice (c) "vitamin", by text or by
# letter, each starting with a label (so that every answer sentence below can introduce them)
_IRON = [
    "(d) iron.",
    "(D) Iron",
    "(d): iron.",
    "(d).",
    "(d) - iron.",
    "D: iron.",
    "D. Iron",
    "D) iron.",
    "**(d) iron**.",
]
_IRON_OR_VITAMIN = [
    "(d) iron or vitamin.",
    "(d) iron or (c) vitamin.",
    "(d) or (c).",
    "(d) iron or (c).",
    "(d) iron, (c) vitamin and (e) zinc.",
    "D: iron or vitamin.",
    "D. Iron or (c).",
    "D. Iron or vitamin.",
    "D) iron, not vitamin.",
    "**(d) iron** or **vitamin**.",
]


@pytest.mark.parametrize(
    "sentence",
    [
        "So the answer is ",
        "So the answer is:\n",
        "so, the answer is ",
        "The correct answer is ",
        "The answer is ",
        "\nAnswer: ",
    ],
)
def test_an_answer_naming_one_choice_parses_and_one_naming_two_is_refused(sentence):
    for answer in _IRON:
        parsed = parse_teacher_output("multiple_choice", f"{_BLOOD} {sentence}{answer}", choices=NUTRIENTS)
        assert (answer, parsed.rationale, parsed.label, parsed.reason) == (answer, _BLOOD, "iron", "")
    for answer in _IRON_OR_VITAMIN:
        parsed = parse_teacher_output("multiple_choice", f"{_BLOOD} {sentence}{answer}", choices=NUTRIENTS)
        assert (answer, parsed.label) == (answer, "") and parsed.reason


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        # a letter after the text, as the prompt's answer sentence alone may put it
        ("iron (d).", "iron"),
        ("Iron (D)", "iron"),
        ("iron or vitamin (d).", ""),
        ("iron or vitamin (c).", ""),
        ("iron (d) or vitamin (c).", ""),
        ("iron or (c).", ""),
        ("vitamin, not iron (d).", ""),
    ],
)
def test_a_letter_after_the_text_names_one_choice_or_the_answer_is_refused(answer, label):
    parsed = parse_teacher_output("multiple_choice", f"{_BLOOD} So the answer is {answer}", choices=NUTRIENTS)
    assert parsed.label == label and bool(parsed.reason) == (not label)


@pytest.mark.parametrize(
    ("sentence", "word"),
    [
        # a negated answer names no answer: all but the "B:" one (refused as not parsing) gave a label: the
        # choice after "not", the letter's choice after words that are no choice, or the text ("not
        # refrigerator", "oven is not it", "refrigerator, which doesn't heat food")
        ("So the answer is not (a) oven.", "not"),
        ("So the answer is not (b).", "not"),
        ("So the answer isn't (a) oven.", "n't"),
        ("So the answer is definitely not (b).", "not"),
        ("So the answer is (b) not refrigerator.", "not"),
        ("So the answer is (a) oven is not it.", "not"),
        ("So the answer is none of them, so (b).", "none"),
        ("So the answer is B: never the refrigerator.", "never"),
        ("So, the answer is not (a) oven.", "not"),  # a chat model's phrase, written as the prompt's
        ("So the answer is (b) refrigerator, which doesn\u2019t heat food.", "doesn\u2019t"),
    ],
)
def test_a_negated_answer_is_refused(sentence, word):
    parsed = parse_teacher_output("multiple_choice", f"{_COOL} {sentence}", choices=PIE_CHOICES)
    assert (parsed.label, parsed.reason) == (
        "",
        f"the answer sentence negates ({word!r}, outside the text of a choice): it names no answer",
    )


@pytest.mark.parametrize(
    ("answer", "choices", "label"),
    [
        # a negating word inside a choice's text is part of the choice (answers of the DSS PaLM release)
        ("(c) not lie.", ["laugh", "truthful", "not lie", "think", "sense of duty"], "not lie"),
        ("(e) should not.", ["unnecessary", "optional", "will not", "need not", "should not"], "should not"),
        (
            "(e) can't help it.",
            ["help people", "all know", "was given to", "no choice", "can't help it"],
            "can't help it",
        ),
        # without the record's choices the text after the letter may be a choice: only words before it count
        ("(c) not lie.", None, "not lie"),
    ],
)
def test_a_negating_word_inside_a_choice_is_no_negation(answer, choices, label):
    parsed = parse_teacher_output("multiple_choice", f"{_COOL} So the answer is {answer}", choices=choices)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, label, "")
    if choices is None:
        parsed = parse_teacher_output("multiple_choice", f"{_COOL} So the answer is not {answer}")
        assert not parsed.parsed and "negates ('not'" in parsed.reason


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        # a remark after the answer sentence, on its line, that names another choice: the teacher hedges.
        # The remark was dropped, so that these gave "iron"
        ("(d) iron. Or vitamin (c).", "(d) 'iron' and (c) 'vitamin'"),
        ("(d) iron. Or maybe vitamin.", "(d) 'iron' and (c) 'vitamin'"),
        ("D. Iron. Zinc (e) would do too.", "(d) 'iron' and (e) 'zinc'"),
        ("(d) iron. Not (c).", "(d) 'iron' and (c) 'vitamin'"),
    ],
)
def test_a_remark_on_the_answer_line_naming_another_choice_is_refused(answer, shown):
    parsed = parse_teacher_output("multiple_choice", f"{_BLOOD} So the answer is {answer}", choices=NUTRIENTS)
    assert (parsed.label, parsed.reason) == (
        "",
        f"the answer sentence with the remark after it on its line names more than one choice ({shown})",
    )


@pytest.mark.parametrize(
    "answer",
    [
        # a remark naming no choice, or only the answer's own, is dropped
        "(d) iron. Hope this helps!",
        "(d) iron. I'm not sure, though.",
        "(d) iron. Iron carries oxygen.",
        "(d) iron.\nOr vitamin (c).",  # a remark on a line of its own is after the answer line: not read
    ],
)
def test_a_remark_on_the_answer_line_naming_no_other_choice_is_dropped(answer):
    parsed = parse_teacher_output("multiple_choice", f"{_BLOOD} So the answer is {answer}", choices=NUTRIENTS)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_BLOOD, "iron", "")


@pytest.mark.parametrize(
    ("answer", "choices", "label"),
    [
        # the letter's choice, then prose naming no other choice: these gave the whole text, no choice
        # ("refrigerator because it is cold", ...)
        ("(b) refrigerator because it is cold.", PIE_CHOICES, "refrigerator"),
        ("(B) Refrigerator, as it keeps food cool.", PIE_CHOICES, "refrigerator"),
        ("(b) refrigerator (the cold one).", PIE_CHOICES, "refrigerator"),
        ("(b) vitamin (c) from oranges.", VITAMINS, "vitamin (c)"),
        ("(b) - St. Louis, in Missouri.", ["Boston", "St. Louis"], "st. louis"),
        # it was refused ("does not parse"), as the text after "B:" was no choice
        ("B: refrigerator, as it keeps food cool.", PIE_CHOICES, "refrigerator"),
    ],
)
def test_the_letters_choice_followed_by_prose_is_the_label(answer, choices, label):
    parsed = parse_teacher_output("multiple_choice", f"{_COOL} So the answer is {answer}", choices=choices)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, label, "")


FIELD_CHOICES = ["tropical forest", "tree", "pet shops", "book store", "feild"]  # DSS CQA train record 8521


@pytest.mark.parametrize(
    ("answer", "choices", "said"),
    [
        # a text that is no choice of the record: these gave "fridge", "field" (PaLM's answer to the record of
        # FIELD_CHOICES, whose letter names "feild"), "refrigerators", "- fridge", "fridge" and "oven heats"
        ("(b) fridge.", PIE_CHOICES, "fridge"),
        ("(e) field.", FIELD_CHOICES, "field"),
        ("(b) refrigerators.", PIE_CHOICES, "refrigerators"),  # the choice, but not as a whole word
        ("(b) - fridge.", PIE_CHOICES, "- fridge"),
        ("(x) fridge.", PIE_CHOICES, "fridge"),  # a letter that names no choice
        ("(a) oven heats.", ["oven heats food", "refrigerator"], "oven heats"),  # a choice's start only
    ],
)
def test_an_answer_that_is_none_of_the_records_choices_is_refused(answer, choices, said):
    parsed = parse_teacher_output("multiple_choice", f"{_COOL} So the answer is {answer}", choices=choices)
    assert (parsed.label, parsed.reason) == ("", f"the answer {said!r} is none of the record's choices")
    # without the record's choices the text is the label, as the DSS rule reads it
    parsed = parse_teacher_output("multiple_choice", f"{_COOL} So the answer is {answer}")
    assert (parsed.label, parsed.reason) == (normalize_text(said), "")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        # the letter's choice followed by prose naming another choice, or negating: no label
        (
            "(a) oven because a refrigerator is too cold.",
            "the answer sentence names more than one choice ((a) 'oven' and (b) 'refrigerator')",
        ),
        (
            "(b) refrigerator, not the oven.",
            "the answer sentence names more than one choice ((b) 'refrigerator' and (a) 'oven')",
        ),
        (
            "(a) oven would not do.",
            "the answer sentence negates ('not', outside the text of a choice): it names no answer",
        ),
    ],
)
def test_the_letters_choice_followed_by_prose_naming_more_is_refused(answer, reason):
    parsed = parse_teacher_output(
        "multiple_choice", f"{_COOL} So the answer is {answer}", choices=PIE_CHOICES
    )
    assert (parsed.label, parsed.reason) == ("", reason)


def test_a_choice_opening_with_an_initial_is_no_label():
    choices = ["Roald Dahl", "J. K. Rowling", "C. S. Lewis"]
    for answer in ("J. K. Rowling (b).", "(b) J. K. Rowling.", "B. J. K. Rowling."):
        parsed = parse_teacher_output(
            "multiple_choice", f"She wrote it. So the answer is {answer}", choices=choices
        )
        assert (answer, parsed.label, parsed.reason) == (answer, "j. k. rowling", "")
    parsed = parse_teacher_output(
        "multiple_choice", "She wrote it. So the answer is C. S. Lewis (b).", choices=choices
    )
    assert (
        parsed.reason
        == "the answer's letter (b) names choice 'J. K. Rowling' but its text 'C. S. Lewis' is choice (c)"
    )


@pytest.mark.parametrize(
    "text",
    [
        # answer sentences other than the prompt's that name one choice by its letter: they were not parsed
        f"{_COOL}\nAnswer: (b)",
        f"{_COOL}\nAnswer: (b) refrigerator.",
        f"{_COOL} The correct answer is (b).",
        f"{_COOL} So the correct answer is (B) Refrigerator.",
        f"{_COOL} The correct answer is: B) refrigerator.",
        f"{_COOL} The answer is B. Refrigerator",
        f"{_COOL} So the answer is B. Refrigerator. Hope this helps!",
        # the reply's last line is a choice's label and that choice, and no other line opens with a label
        f"{_COOL}\n\nB. Refrigerator",
        f"{_COOL}\n(b) refrigerator.\n",
        f"{_COOL}\n**B: Refrigerator**",
    ],
)
def test_an_answer_naming_one_choice_by_its_letter_in_other_words_parses(text):
    parsed = parse_teacher_output("multiple_choice", text, choices=PIE_CHOICES)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, "refrigerator", "")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # the letter names no choice, or its text another letter's choice or none
        (f"{_COOL}\nAnswer: (f)", "does not parse"),
        (
            f"{_COOL} The answer is B. Oven.",
            "letter (b) names choice 'refrigerator' but its text 'Oven' is choice (a)",
        ),
        (f"{_COOL} The answer is B. Fridge.", "does not parse"),
        (f"{_COOL}\nB. Oven", "no answer sentence"),
        (f"{_COOL}\nB. Fridge", "no answer sentence"),
        # a letter alone on the last line, or a last line that ends a list of the options: no answer
        (f"{_COOL}\nB.", "no answer sentence"),
        ("An oven heats.\nA. Oven heats food.\nB. Refrigerator", "no answer sentence"),
        (
            "Answer Choices:\n(a) oven\n(b) refrigerator\n(c) bookshelf\n(d) mailbox\n(e) bathtub",
            "no answer sentence",
        ),
        # "the answer is" not followed by a label stays prose; two answer sentences are ambiguous
        (f"{_COOL} The answer is not (a) oven.", "no answer sentence"),
        (f"The answer is (a) oven? No: {_COOL} The answer is (b) refrigerator.", "holds 2 answer sentences"),
        (
            f"The correct answer is (a) oven? No. {_COOL} The answer is (b) refrigerator.",
            "holds 2 answer sentences",
        ),
    ],
)
def test_an_answer_in_other_words_is_refused_unless_its_letter_names_its_choice(text, reason):
    parsed = parse_teacher_output("multiple_choice", text, choices=PIE_CHOICES)
    assert not parsed.parsed and reason in parsed.reason


def test_a_letter_in_other_words_names_nothing_without_the_records_choices():
    for text in (
        f"{_COOL} The answer is B. Refrigerator",
        f"{_COOL}\nAnswer: (b)",
        f"{_COOL}\nB. Refrigerator",
    ):
        parsed = parse_teacher_output("multiple_choice", text)
        assert not parsed.parsed and parsed.reason


@pytest.mark.parametrize(
    "text",
    [
        # the model lists the choices after the answer sentence: no single answer, whatever its words
        f"{_COOL}\nSo the answer is:\n(b) refrigerator.\n(a) oven.\n(c) bookshelf.",
        f"{_COOL}\nSo the answer is:\nB. refrigerator\nA. oven\nC. bookshelf",
        f"{_COOL}\nThe correct answer is:\n(b) refrigerator.\n(a) oven.\n(c) bookshelf.",
        f"{_COOL}\nAnswer:\n(b) refrigerator.\n(a) oven.\n(c) bookshelf.",
        f"{_COOL}\nSo the answer is B.\nA. oven\nC. bookshelf",
    ],
)
def test_an_answer_sentence_followed_by_a_list_of_the_choices_is_refused(text):
    parsed = parse_teacher_output("multiple_choice", text, choices=PIE_CHOICES)
    assert not parsed.parsed and "followed by lines that list the choices" in parsed.reason


_TRIP = ["home", "car", "bus"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # a teacher that corrects itself. The text after the first answer sentence's line was cut off: those with
        # a second sentence on a later line gave the first one's choice, the one-line one was refused as not
        # parsing
        (
            "Cars are fast.\nThe correct answer is (a) home.\nThe answer is (b) car.",
            "'The correct answer is (a) home.' gives 'home', 'The answer is (b) car.' gives 'car'",
        ),
        (
            "Cars are fast.\nThe correct answer is (a) home.\nAnswer: (b) car",
            "'The correct answer is (a) home.' gives 'home', 'Answer: (b) car' gives 'car'",
        ),
        (
            "Cars are fast, so the answer is (a) home.\nWait, that is wrong: the correct answer is (b) car.",
            "'so the answer is (a) home.' gives 'home', 'the correct answer is (b) car.' gives 'car'",
        ),
        (
            "Cars are fast.\nThe correct answer is (a) home. The answer is (b) car.",
            "'The correct answer is (a) home.' gives 'home', 'The answer is (b) car.' gives 'car'",
        ),
        # the prompt's phrase, then a variant followed by a label: that is an answer sentence too; a second
        # sentence that gives no answer (two letters, a negation) is no agreement either
        (
            "Cars are fast. So the answer is (a) home.\nWait, the correct answer is (b) car.",
            "'So the answer is (a) home.' gives 'home', 'the correct answer is (b) car.' gives 'car'",
        ),
        (
            "Cars are fast. So the answer is (a) home.\n\nSo the answer is (b) car.",
            "'So the answer is (a) home.' gives 'home', 'So the answer is (b) car.' gives 'car'",
        ),
        (
            "Cars are fast. So the answer is (b) car.\nAnswer: (b) car, not (c) bus.",
            "'So the answer is (b) car.' gives 'car', 'Answer: (b) car, not (c) bus.' gives no answer",
        ),
        (
            "Cars are fast. So the answer is (b) car.\nSo the answer is not (b) car.",
            "'So the answer is (b) car.' gives 'car', 'So the answer is not (b) car.' gives no answer",
        ),
    ],
)
def test_a_second_answer_sentence_naming_another_choice_is_refused(text, said):
    parsed = parse_teacher_output("multiple_choice", text, choices=_TRIP)
    assert (parsed.label, parsed.reason) == (
        "",
        f"the text holds 2 answer sentences that do not all give the same answer ({said})",
    )


def test_three_answer_sentences_are_counted_and_each_one_shown():
    text = "Buses are slow.\nThe answer is (c) bus.\n**Answer:** (c) bus\nSo the answer is (a) home."
    parsed = parse_teacher_output("multiple_choice", text, choices=_TRIP)
    assert parsed.reason == (
        "the text holds 3 answer sentences that do not all give the same answer ('The answer is (c) bus.' "
        "gives 'bus', 'Answer: (c) bus' gives 'bus', 'So the answer is (a) home.' gives 'home')"
    )


@pytest.mark.parametrize(
    "text",
    [
        # answer sentences that all name one choice, on one line or on several: those on several lines gave the
        # choice already (the second, with the variant before the prompt's phrase in its rationale), the
        # one-line ones were refused as not parsing
        f"{_COOL} So the answer is (b) refrigerator.\nAnswer: (b)",
        f"{_COOL}\nThe correct answer is (b) refrigerator.\n\nSo the answer is B. Refrigerator.",
        f"{_COOL} So the answer is (b) refrigerator. So the answer is (b).",
        f"{_COOL} The correct answer is (b) refrigerator. So, the answer is refrigerator (b).",
        f"{_COOL}\nthe answer is (b) refrigerator.\nThe correct answer is: (B) Refrigerator\nAnswer: B.",
    ],
)
def test_answer_sentences_that_all_name_the_same_choice_give_it(text):
    parsed = parse_teacher_output("multiple_choice", text, choices=PIE_CHOICES)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, "refrigerator", "")


def test_answer_sentences_naming_one_choice_only_by_its_letter_need_the_records_choices():
    parsed = parse_teacher_output(
        "multiple_choice", f"{_COOL} So the answer is (b) refrigerator.\nAnswer: (b)"
    )
    assert parsed.reason == (
        "the text holds 2 answer sentences that do not all give the same answer ('So the answer is (b) "
        "refrigerator.' gives 'refrigerator', 'Answer: (b)' gives no answer)"
    )


@pytest.mark.parametrize(
    "after",
    [
        # "the answer is" not followed by a label is prose, and a next example's answer is not the reply's
        "\nThe answer is not (a) oven, which heats food.",
        "\nSo, the answer is clear.",
        "\n\nQ: Where do you keep ice?\nSo the answer is (c) bookshelf.",
        " Q: and ice? So the answer is (c) bookshelf.",  # the CQA rule cuts the answer at any "Q:"
    ],
)
def test_prose_or_a_next_example_after_the_answer_is_no_second_answer_sentence(after):
    parsed = parse_teacher_output(
        "multiple_choice", f"{_COOL} So the answer is (b) refrigerator.{after}", choices=PIE_CHOICES
    )
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, "refrigerator", "")


@pytest.mark.parametrize(
    ("task", "text", "said"),
    [
        # the line after the first answer was cut off, so that these gave the first answer. The DSS rules
        # refuse a text holding their phrase twice (the reference below), and so does the teacher now
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4).\nNo: 5 + 4 is 9. The answer is (5 + 4).",
            "'The answer is (3 + 4).' gives '(3 + 4)', 'The answer is (5 + 4).' gives '(5 + 4)'",
        ),
        (
            "nli",
            "No link. So the answer is neutral.\n\nSo the answer is entailment.",
            "'So the answer is neutral.' gives 'neutral', 'So the answer is entailment.' gives 'entailment'",
        ),
        (
            "generic",
            "It is in France. So the answer is Paris.\nSo the answer is Rome.",
            "'So the answer is Paris.' gives 'paris', 'So the answer is Rome.' gives 'rome'",
        ),
        # chat variants, each written as the prompt's phrase: two answer sentences too, shown as written
        (
            "arithmetic",
            "3 + 4 is 7, so the answer is (3 + 4).\nWait, so the answer is (5 + 4).",
            "'so the answer is (3 + 4).' gives '(3 + 4)', 'so the answer is (5 + 4).' gives '(5 + 4)'",
        ),
        (
            "arithmetic",
            "3 + 4 is 7, the answer is (3 + 4).\nNo, the answer is (5 + 4).",
            "'the answer is (3 + 4).' gives '(3 + 4)', 'the answer is (5 + 4).' gives '(5 + 4)'",
        ),
        (
            "nli",
            "No link, so the answer is neutral.\nOr so, the answer is entailment.",
            "'so the answer is neutral.' gives 'neutral', 'so, the answer is entailment.' gives 'entailment'",
        ),
    ],
)
def test_a_second_answer_sentence_on_a_later_line_is_refused_for_every_task(task, text, said):
    parsed = parse_teacher_output(task, text)
    assert (parsed.label, parsed.reason) == (
        "",
        f"the text holds 2 answer sentences that do not all give the same answer ({said})",
    )
    if "The answer is" in text or "So the answer is" in text:  # the prompt's phrase: what DSS did
        dss = {"arithmetic": parse_svamp_output, "nli": parse_anli_output, "generic": parse_anli_output}
        assert not dss[task](text).parsed


@pytest.mark.parametrize(
    ("task", "text", "label"),
    [
        # prose after the answer line that is no answer sentence of the task: the first answer, as before
        ("arithmetic", "3 + 4 is 7. The answer is (3 + 4).\nThat is, the answer is 7.", "(3 + 4)"),
        ("arithmetic", "3 + 4 is 7, so the answer is (3 + 4).\nThat is, the answer is 7.", "(3 + 4)"),
        ("nli", "No link. So the answer is neutral.\nAlso, so the answer is not entailment.", "neutral"),
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4).\n\nQ: And 5 + 4?\nThe answer is (5 + 4).",
            "(3 + 4)",
        ),
        ("nli", "No link. So the answer is neutral.\n\nPremise: x\nSo the answer is entailment.", "neutral"),
    ],
)
def test_prose_after_the_answer_line_is_no_second_answer_sentence_for_every_task(task, text, label):
    parsed = parse_teacher_output(task, text)
    assert (parsed.label, parsed.reason) == (label, "")


def _refused_as(said: str, count: int = 2) -> str:
    """The reason a text holding ``count`` answer sentences that give different answers (``said``) is refused."""
    return f"the text holds {count} answer sentences that do not all give the same answer ({said})"


@pytest.mark.parametrize(
    "text",
    [
        # the answer first, then the reasoning and the answer again: the rationale was taken as the text before
        # the first answer sentence (none) and the reply refused, or a bare "Answer: (b)" gave no answer
        f"The correct answer is (b) refrigerator.\n\n{_COOL} So the answer is (b) refrigerator.",
        f"**Answer:** (b) refrigerator\n\n**Explanation:** {_COOL} So the answer is (b) refrigerator.",
        f"Answer: (b)\n\n{_COOL} So the answer is (b) refrigerator.",
        f"**Answer: (b) refrigerator**\n\nExplanation: {_COOL} So the answer is (b).",
        f"So the answer is (b) refrigerator.\n{_COOL} So the answer is (b) refrigerator.",
        # three: the reasoning is what stands between the first answer's line and the next answer sentence
        f"Answer: (b)\n\nReasoning: {_COOL} So the answer is (b).\n\n**Final Answer:** (b) refrigerator",
    ],
)
def test_an_answer_first_reply_whose_answers_agree_gives_the_reasoning_after_it(text):
    parsed = parse_teacher_output("multiple_choice", text, choices=PIE_CHOICES)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_COOL, "refrigerator", "")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            f"Answer: (a)\n\n{_COOL} So the answer is (b) refrigerator.",
            _refused_as(
                "'Answer: (a)' gives 'oven', 'So the answer is (b) refrigerator.' gives 'refrigerator'"
            ),
        ),
        (
            "**Answer:** (b) refrigerator\n\n**Explanation:** An oven heats food. So the answer is (a) oven.",
            _refused_as(
                "'Answer: (b) refrigerator' gives 'refrigerator', 'So the answer is (a) oven.' gives 'oven'"
            ),
        ),
        # no reasoning before the first answer sentence, nor between it and the next (a heading is none)
        ("Answer: (b)\n\nSo the answer is (b) refrigerator.", "empty rationale before the answer sentence"),
        ("Answer: (b)\nExplanation:\nSo the answer is (b).", "empty rationale before the answer sentence"),
        ("So the answer is (b). So the answer is (b).", "empty rationale before the answer sentence"),
    ],
)
def test_an_answer_first_reply_is_refused_when_its_answers_differ_or_no_reasoning_follows(text, reason):
    parsed = parse_teacher_output("multiple_choice", text, choices=PIE_CHOICES)
    assert (parsed.rationale, parsed.label, parsed.reason) == ("", "", reason)


@pytest.mark.parametrize(
    ("task", "text", "said"),
    [
        # a teacher correcting itself in another case or words than the prompt's phrase: that gave the first
        # answer, the variant counting only where the prompt's phrase was missing
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4).\nWait, the answer is (5 + 4).",
            "'The answer is (3 + 4).' gives '(3 + 4)', 'the answer is (5 + 4).' gives '(5 + 4)'",
        ),
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4).\nNo, the answer is: 9.",
            "'The answer is (3 + 4).' gives '(3 + 4)', 'the answer is: 9.' gives '9'",
        ),
        (
            "nli",
            "No link. So the answer is neutral.\nWait, so the answer is entailment.",
            "'So the answer is neutral.' gives 'neutral', 'so the answer is entailment.' gives 'entailment'",
        ),
        (
            "nli",
            "No link. So the answer is neutral.\n\n**So, the answer is: Contradiction**",
            "'So the answer is neutral.' gives 'neutral', 'So, the answer is: Contradiction' gives "
            "'contradiction'",
        ),
        (
            "generic",
            "It is in France. So the answer is Paris.\nActually, so the answer is Rome.",
            "'So the answer is Paris.' gives 'paris', 'so the answer is Rome.' gives 'rome'",
        ),
        (
            "multiple_choice",
            "Cool. So the answer is (b) refrigerator.\n\n**Final Answer:** (a)",
            "'So the answer is (b) refrigerator.' gives 'refrigerator', 'Final Answer: (a)' gives 'oven'",
        ),
        (
            "multiple_choice",
            "Cool. So the answer is (b) refrigerator.\nFinal answer: (a) oven",
            "'So the answer is (b) refrigerator.' gives 'refrigerator', 'Final answer: (a) oven' gives 'oven'",
        ),
        (
            "multiple_choice",
            "Cool. So the answer is (b) refrigerator. The final answer is (a) oven.",
            "'So the answer is (b) refrigerator.' gives 'refrigerator', 'The final answer is (a) oven.' gives "
            "'oven'",
        ),
    ],
)
def test_a_self_correction_in_a_variant_of_the_phrase_is_refused(task, text, said):
    parsed = parse_teacher_output(task, text, choices=PIE_CHOICES if task == "multiple_choice" else None)
    assert (parsed.label, parsed.reason) == ("", _refused_as(said))


@pytest.mark.parametrize(
    ("task", "text", "label"),
    [
        # a variant of the phrase not followed by an answer of the task stays prose beside the prompt's phrase
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4).\nSo the answer is not obvious at first.",
            "(3 + 4)",
        ),
        ("arithmetic", "3 + 4 is 7. The answer is (3 + 4).\nThat is, the answer is the sum.", "(3 + 4)"),
        ("nli", "No link. So the answer is neutral.\nAt first so the answer is not obvious.", "neutral"),
        ("nli", "No link. So the answer is neutral.\nAnd so, the answer is entailed? No.", "neutral"),
        ("generic", "It is in France. So the answer is Paris.\nBut so the answer is not Rome.", "paris"),
        ("generic", "It is in France. So the answer is Paris.\nAnd so the answer isn't Rome.", "paris"),
        (
            "multiple_choice",
            "Cool. So the answer is (b) refrigerator.\nThe final answer is not (a) oven.",
            "refrigerator",
        ),
        (
            "multiple_choice",
            "Cool. So the answer is (b) refrigerator.\nFinal answer: it keeps cool.",
            "refrigerator",
        ),
    ],
)
def test_a_variant_of_the_phrase_without_an_answer_after_it_stays_prose(task, text, label):
    parsed = parse_teacher_output(task, text, choices=PIE_CHOICES if task == "multiple_choice" else None)
    assert (parsed.label, parsed.reason) == (label, "")


@pytest.mark.parametrize(
    ("task", "text", "rationale", "label"),
    [
        # the same answer again: refused for every task but multiple_choice, which accepted it
        ("nli", "No link. So the answer is neutral.\n\nSo the answer is neutral.", "No link.", "neutral"),
        ("nli", "No link. So the answer is neutral.\nSo, the answer is: **Neutral**", "No link.", "neutral"),
        ("nli", "No link. So the answer is neutral. So the answer is neutral.", "No link.", "neutral"),
        (
            "generic",
            "It is in France. So the answer is Paris.\nSo the answer is paris.",
            "It is in France.",
            "paris",
        ),
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4).\nThe answer is (3 + 4).",
            "3 + 4 is 7.",
            "(3 + 4)",
        ),
        # for arithmetic the same value: the first expression the rule reads is the answer
        ("arithmetic", "3 + 4 is 7. The answer is (3 + 4).\n\nThe answer is 7.", "3 + 4 is 7.", "(3 + 4)"),
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4).\nThe answer is (14 / 2).",
            "3 + 4 is 7.",
            "(3 + 4)",
        ),
        ("arithmetic", "The answer is 7.\n\n3 + 4 is 7. The answer is (3 + 4).", "3 + 4 is 7.", "(3 + 4)"),
    ],
)
def test_answer_sentences_that_agree_give_their_answer_for_every_task(task, text, rationale, label):
    parsed = parse_teacher_output(task, text)
    assert (parsed.rationale, parsed.label, parsed.reason) == (rationale, label, "")


@pytest.mark.parametrize(
    ("task", "text", "reason"),
    [
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4).\n\nThe answer is 8.",
            _refused_as("'The answer is (3 + 4).' gives '(3 + 4)', 'The answer is 8.' gives '8'"),
        ),
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4).\nThe answer is 7 apples.",
            _refused_as(
                "'The answer is (3 + 4).' gives '(3 + 4)', 'The answer is 7 apples.' gives no answer"
            ),
        ),
        (
            "generic",
            "It is in France. So the answer is Paris.\nSo the answer is Paris, France.",
            _refused_as(
                "'So the answer is Paris.' gives 'paris', 'So the answer is Paris, France.' gives 'paris, france'"
            ),
        ),
        # a number without parentheses is no answer by the SVAMP rule, once or twice
        (
            "arithmetic",
            "3 + 4 is 7. The answer is 7.\n\n**The answer is 7.**",
            "the answer sentence does not parse by the arithmetic rule, which reads only a parenthesised expression "
            "('The answer is (24 - 9).'), not a bare number",
        ),
        (
            "arithmetic",
            "3 + 4 is 7. The answer is 7.",
            "the answer sentence does not parse by the arithmetic rule, which reads only a parenthesised expression "
            "('The answer is (24 - 9).'), not a bare number",
        ),
    ],
)
def test_answer_sentences_that_differ_are_refused_for_every_task(task, text, reason):
    parsed = parse_teacher_output(task, text)
    assert (parsed.rationale, parsed.label, parsed.reason) == ("", "", reason)


@pytest.mark.parametrize(
    ("text", "rationale", "label"),
    [
        # a variant whose answer has no value is prose beside the prompt's phrase
        (
            "Tom had 10, gave 3.\nThe answer is (10 - 3).\n\nIn the first step, the answer is 10 because he "
            "starts there.",
            "Tom had 10, gave 3.",
            "(10 - 3)",
        ),
        (
            "First: the answer is 10 - 3 = 7 left. Then he doubles it. The answer is ((10 - 3) * 2).",
            "First: the answer is 10 - 3 = 7 left. Then he doubles it.",
            "((10 - 3) * 2)",
        ),
        # a variant whose number has a value confirms the answer by it, a unit or a clause after it aside
        (
            "Tom had 10, gave 3. The answer is (10 - 3). That is, the answer is 7 apples.",
            "Tom had 10, gave 3.",
            "(10 - 3)",
        ),
        (
            "He has 12 and gives half. The answer is (12 / 2).\n\nTherefore, the answer is: 6 apples.",
            "He has 12 and gives half.",
            "(12 / 2)",
        ),
        (
            "Step 1: 3 + 4 = 7. The answer is (3 + 4).\nStep 2: check: the answer is 7, which is 3 + 4.",
            "Step 1: 3 + 4 = 7.",
            "(3 + 4)",
        ),
    ],
)
def test_an_arithmetic_variant_is_prose_or_confirms_by_its_value(text, rationale, label):
    parsed = parse_teacher_output("arithmetic", text)
    assert (parsed.rationale, parsed.label, parsed.reason) == (rationale, label, "")


def test_an_arithmetic_variant_whose_value_differs_is_refused():
    parsed = parse_teacher_output(
        "arithmetic", "Tom had 10, gave 3. The answer is (10 - 3).\nSo the answer is 8."
    )
    assert parsed.reason == _refused_as(
        "'The answer is (10 - 3).' gives '(10 - 3)', 'So the answer is 8.' gives '8'"
    )


@pytest.mark.parametrize(
    ("task", "text", "said"),
    [
        # the variants multiple_choice read ("the correct answer is", "Final answer:", ...) correct any task
        (
            "nli",
            "A man is a person. So the answer is entailment.\nWait, the correct answer is contradiction.",
            "'So the answer is entailment.' gives 'entailment', 'the correct answer is contradiction.' gives "
            "'contradiction'",
        ),
        (
            "nli",
            "A man is a person. So the answer is entailment.\n\n**Final Answer: Contradiction**",
            "'So the answer is entailment.' gives 'entailment', 'Final Answer: Contradiction' gives 'contradiction'",
        ),
        # one adverb between the phrase and an nli label
        (
            "nli",
            "A man is a person. So the answer is entailment.\nWait, so the answer is actually contradiction.",
            "'So the answer is entailment.' gives 'entailment', 'so the answer is actually contradiction.' gives "
            "'contradiction'",
        ),
        (
            "generic",
            "Paris is the capital. So the answer is Paris.\nActually, the answer is Lyon.",
            "'So the answer is Paris.' gives 'paris', 'the answer is Lyon.' gives 'lyon'",
        ),
        (
            "generic",
            "Paris is the capital. So the answer is Paris.\nFinal answer: Lyon",
            "'So the answer is Paris.' gives 'paris', 'Final answer: Lyon' gives 'lyon'",
        ),
        # \boxed{...} is read as its expression, compared by value
        (
            "arithmetic",
            "Tom has 3 apples and gets 4 more. The answer is (3 + 4).\n\nFinal Answer: \\boxed{8}",
            "'The answer is (3 + 4).' gives '(3 + 4)', 'Final Answer: (8)' gives '(8)'",
        ),
        (
            "arithmetic",
            "Tom has 3 apples and gets 4 more. The answer is (3 + 4).\nThe final answer is 8.",
            "'The answer is (3 + 4).' gives '(3 + 4)', 'The final answer is 8.' gives '8'",
        ),
        # an answer given first that the reasoning's answer sentence contradicts
        (
            "nli",
            "**Answer: contradiction**\n\n**Explanation:** A man is a person. So the answer is entailment.",
            "'Answer: contradiction' gives 'contradiction', 'So the answer is entailment.' gives 'entailment'",
        ),
        (
            "generic",
            "**Answer:** Lyon\n\n**Explanation:** Paris is the capital. So the answer is Paris.",
            "'Answer: Lyon' gives 'lyon', 'So the answer is Paris.' gives 'paris'",
        ),
        (
            "arithmetic",
            "**Answer:** 8\n\n**Explanation:** Tom has 3 apples and gets 4. The answer is (3 + 4).",
            "'Answer: 8' gives '8', 'The answer is (3 + 4).' gives '(3 + 4)'",
        ),
        # \boxed{...} for every task, a \text{...} inside it read as its text; the reason quotes the plain answer
        (
            "nli",
            "A man is a person. So the answer is entailment.\n\nFinal Answer: \\boxed{neutral}",
            "'So the answer is entailment.' gives 'entailment', 'Final Answer: neutral' gives 'neutral'",
        ),
        (
            "nli",
            "A man is a person. So the answer is entailment.\n\nFinal Answer: \\boxed{\\text{neutral}}",
            "'So the answer is entailment.' gives 'entailment', 'Final Answer: neutral' gives 'neutral'",
        ),
        # LaTeX math delimiters around the answer after an answer phrase are removed
        (
            "arithmetic",
            "Tom has 3 apples and gets 4 more. The answer is (3 + 4).\nThe final answer is $\\boxed{8}$.",
            "'The answer is (3 + 4).' gives '(3 + 4)', 'The final answer is (8).' gives '(8)'",
        ),
        (
            "arithmetic",
            "Tom has 3 apples and gets 4 more. The answer is (3 + 4).\n\nFinal Answer: $\\boxed{8}$",
            "'The answer is (3 + 4).' gives '(3 + 4)', 'Final Answer: (8)' gives '(8)'",
        ),
        (
            "arithmetic",
            "Tom has 3 apples and gets 4 more. The answer is (3 + 4).\nThe final answer is $8$.",
            "'The answer is (3 + 4).' gives '(3 + 4)', 'The final answer is 8.' gives '8'",
        ),
        (
            "arithmetic",
            "Tom has 3 apples and gets 4 more. The answer is (3 + 4).\nThe final answer is \\(8\\).",
            "'The answer is (3 + 4).' gives '(3 + 4)', 'The final answer is 8.' gives '8'",
        ),
        (
            "arithmetic",
            "Tom has 3 apples and gets 4 more. The answer is (3 + 4).\nThe final answer is $$8$$.",
            "'The answer is (3 + 4).' gives '(3 + 4)', 'The final answer is 8.' gives '8'",
        ),
        (
            "arithmetic",
            "Tom has 3 apples and gets 4 more. The answer is (3 + 4).\nFinal answer: \\[ \\boxed{8} \\]",
            "'The answer is (3 + 4).' gives '(3 + 4)', 'Final answer: (8)' gives '(8)'",
        ),
    ],
)
def test_a_correction_in_another_tasks_variant_of_the_phrase_is_refused(task, text, said):
    """The variants were read for multiple_choice only: the other tasks kept the first, corrected, answer."""
    parsed = parse_teacher_output(task, text)
    assert (parsed.rationale, parsed.label, parsed.reason) == ("", "", _refused_as(said))


@pytest.mark.parametrize(
    ("task", "text", "rationale", "label"),
    [
        # an answer given first: the reasoning after it is the rationale, without the answer
        (
            "nli",
            "**Answer: entailment**\n\n**Explanation:** A man is a person. So the answer is entailment.",
            "A man is a person.",
            "entailment",
        ),
        (
            "generic",
            "**Answer:** Paris\n\n**Explanation:** Paris is the capital. So the answer is Paris.",
            "Paris is the capital.",
            "paris",
        ),
        (
            "arithmetic",
            "**Answer:** (3 + 4)\n\n**Explanation:** Tom has 3 apples and gets 4. The answer is (3 + 4).",
            "Tom has 3 apples and gets 4.",
            "(3 + 4)",
        ),
        # a variant that agrees, an adverb or \boxed{...} included
        (
            "nli",
            "A man is a person. So the answer is entailment.\nYes, so the answer is really entailment.",
            "A man is a person.",
            "entailment",
        ),
        (
            "nli",
            "A man is a person. So the answer is actually entailment.",
            "A man is a person.",
            "entailment",
        ),
        (
            "arithmetic",
            "Tom has 3 apples and gets 4 more. The answer is (3 + 4).\n\nFinal Answer: \\boxed{7}",
            "Tom has 3 apples and gets 4 more.",
            "(3 + 4)",
        ),
        (
            "arithmetic",
            "Tom has 3 and gets 4. The answer is \\boxed{3 + 4}.",
            "Tom has 3 and gets 4.",
            "(3 + 4)",
        ),
        # a variant followed by no answer of the task stays prose
        (
            "nli",
            "A man is a person. So the answer is entailment.\nThe correct answer is not obvious, though.",
            "A man is a person.",
            "entailment",
        ),
        (
            "nli",
            "A man is a person. So the answer is entailment.\nFinal answer: it depends.",
            "A man is a person.",
            "entailment",
        ),
        (
            "generic",
            "It is in France. So the answer is Paris.\nThe correct answer is not Lyon.",
            "It is in France.",
            "paris",
        ),
        # a generic "Answer:" that opens the reasoning (more than one sentence on its line) is no answer sentence
        (
            "generic",
            "Answer: Mercury is first. So the answer is Mercury.",
            "Answer: Mercury is first.",
            "mercury",
        ),
        (
            "arithmetic",
            "Tom has 3 and gets 4. The answer is (3 + 4).\nThe final answer is the sum.",
            "Tom has 3 and gets 4.",
            "(3 + 4)",
        ),
        # LaTeX math around an answer that agrees; math in the reasoning stays as written
        (
            "arithmetic",
            "Tom has $3 + 4$ apples. The answer is (3 + 4).\nThe final answer is $\\boxed{7}$.",
            "Tom has $3 + 4$ apples.",
            "(3 + 4)",
        ),
        (
            "nli",
            "A man is a person. So the answer is entailment.\n\nFinal Answer: $\\boxed{\\text{Entailment}}$",
            "A man is a person.",
            "entailment",
        ),
        # a sentence negating a label the answer is not agrees with it
        (
            "nli",
            "A man is a person. So the answer is entailment.\nBut wait, the answer is actually not neutral.",
            "A man is a person.",
            "entailment",
        ),
    ],
)
def test_another_tasks_variant_that_agrees_or_is_prose_keeps_the_answer(task, text, rationale, label):
    parsed = parse_teacher_output(task, text)
    assert (parsed.rationale, parsed.label, parsed.reason) == (rationale, label, "")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "A man is a person. So the answer is entailment. But wait, the answer is actually not entailment.",
            "the answer is actually not entailment",
        ),
        (
            "A man is a person. So the answer is entailment.\nFinal answer: not entailment",
            "Final answer: not entailment",
        ),
    ],
)
def test_an_nli_answer_sentence_negating_the_answer_is_refused(text, shown):
    """A teacher taking its answer back ("the answer is actually not entailment") was read as that answer."""
    parsed = parse_teacher_output("nli", text)
    assert (parsed.rationale, parsed.label, parsed.reason) == (
        "",
        "",
        f"the answer sentence {shown!r} negates the answer 'entailment'",
    )


def test_an_nli_answer_label_without_the_prompts_phrase_is_still_no_answer_sentence():
    """The e-SNLI release writes "Answer: <label>"; the nli task's rule reads "So the answer is" only."""
    parsed = parse_teacher_output("nli", "A man is a person.\nAnswer: entailment")
    assert (parsed.label, parsed.reason) == ("", "no answer sentence ('So the answer is ...')")


@pytest.mark.parametrize(
    ("text", "rationale", "label"),
    [
        ("**Two plus five.** The answer is (2 + 5).", "Two plus five.", "(2 + 5)"),
        ("Two plus five. __The answer is (2 + 5).__", "Two plus five.", "(2 + 5)"),
        ("Two plus five. The answer is **(2 + 5)**.", "Two plus five.", "(2 + 5)"),
    ],
)
def test_markdown_emphasis_around_text_is_removed(text, rationale, label):
    parsed = parse_teacher_output("arithmetic", text)
    assert (parsed.rationale, parsed.label, parsed.reason) == (rationale, label, "")


@pytest.mark.parametrize("text", ["Two cubed. The answer is (2**3).", "Two cubed. The answer is (2 ** 3)."])
def test_a_power_operator_is_no_emphasis_and_is_never_read_as_another_number(text):
    parsed = parse_teacher_output("arithmetic", text)
    # the power stays in the answer (which the arithmetic answers do not evaluate), never becoming (23)
    assert (parsed.label, parsed.reason) == (
        "",
        f"answer {text.split('is ')[1][:-1]!r} is not a valid arithmetic answer",
    )


def test_underscores_inside_a_generic_answer_are_kept():
    parsed = parse_teacher_output("generic", "It is the variable. So the answer is max__len.")
    assert (parsed.rationale, parsed.label, parsed.reason) == ("It is the variable.", "max__len", "")


@pytest.mark.parametrize(
    ("task", "text", "choices", "rationale"),
    [
        (
            "nli",
            "Sure! Let me help.\n\nSo the answer is entailment.\n\nExplanation: A man is a person. So the answer is "
            "entailment.",
            None,
            "A man is a person.",
        ),
        (
            "nli",
            "## Answer\nSo the answer is entailment.\n\n## Explanation\nA man is a person.\n\nSo the answer is "
            "entailment.",
            None,
            "A man is a person.",
        ),
        (
            "multiple_choice",
            "Sure! Here's my answer.\n\n**Answer:** (b) refrigerator\n\n**Explanation:** A refrigerator keeps food "
            "cool. So the answer is (b) refrigerator.",
            ["oven", "refrigerator"],
            "A refrigerator keeps food cool.",
        ),
    ],
)
def test_a_preamble_before_an_answer_given_first_is_no_rationale(task, text, choices, rationale):
    parsed = parse_teacher_output(task, text, choices=choices)
    assert (parsed.rationale, parsed.reason) == (rationale, "")


def test_a_refused_multiple_choice_answer_is_counted_and_reported(tmp_path):
    from hf_cotmi import generate_rationales

    source = tmp_path / "in.jsonl"
    question = format_cqa_input("Where would you keep a pie cool?", PIE_CHOICES)
    source.write_text(json.dumps({"input": question, "label": "refrigerator"}) + "\n")

    class Teacher:
        batch_size, concurrency, retries = 1, 1, 0

        def generate(self, requests):
            return [f"{_COOL} So the answer is (a) refrigerator." for _ in requests]

        def settings(self):
            return {"model": "canned"}

    out = tmp_path / "out.jsonl"
    summary = generate_rationales(source, out, backend=Teacher(), task="multiple_choice", progress=False)
    assert (summary.counts()["parsed"], summary.counts()["unparsable"], summary.counts()["written"]) == (
        0,
        1,
        0,
    )
    (reject,) = [json.loads(text) for text in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert reject["teacher_answers"] == [None]
    assert "letter (a) names choice 'oven'" in reject["teacher_parse_errors"][0]


def test_backoff_is_exponential_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(initial_delay=0.5, max_delay=4.0, jitter=0.5)
    rng = random.Random(1)
    for attempt in range(6):
        base = min(4.0, 0.5 * 2**attempt)
        assert base * 0.5 <= policy.delay(attempt, None, rng) <= base * 1.5
    assert policy.delay(0, 30.0, rng) == 30.0  # a longer Retry-After wins over the cap
    assert parse_retry_after("2") == 2.0 and parse_retry_after("-3") == 0.0 and parse_retry_after("x") is None


def test_a_retry_after_that_is_not_finite_is_ignored_not_slept_on():
    # time.sleep(inf) raises OverflowError, which stopped the run instead of backing off
    assert parse_retry_after("inf") is None and parse_retry_after("1e999") is None
    assert parse_retry_after("-inf") is None and parse_retry_after("nan") is None
    waits = []
    attempts = []

    def rate_limited_once():
        attempts.append(1)
        if len(attempts) == 1:
            raise RetryableError("HTTP 429", retry_after=parse_retry_after("Infinity"))
        return "ok"

    policy = RetryPolicy(initial_delay=0.01, jitter=0.0)
    assert call_with_retries(rate_limited_once, policy, sleep=waits.append) == "ok" and waits == [0.01]


def test_call_with_retries_gives_up_after_max_retries():
    waits = []
    calls = []

    def always_503():
        calls.append(1)
        raise RetryableError("HTTP 503", retry_after=0.25)

    with pytest.raises(RetryableError):
        call_with_retries(
            always_503, RetryPolicy(max_retries=3, jitter=0.0, initial_delay=0.01), sleep=waits.append
        )
    assert len(calls) == 4 and len(waits) == 3 and all(wait >= 0.25 for wait in waits)

    def not_retryable():
        calls.append(1)
        raise KeyError("bad")

    calls.clear()
    with pytest.raises(KeyError):
        call_with_retries(not_retryable, RetryPolicy(), sleep=waits.append)
    assert len(calls) == 1


def test_store_appends_whole_lines_repairs_a_torn_tail_and_sorts(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlAppender(path) as out:
        for index in (2, 0):
            out.write({"source_index": index, "input": f"x{index}"})
    with open(path, "ab") as handle:
        handle.write(b'{"source_index": 1, "inp')  # a line cut short
    done = read_done(path)
    assert sorted(done.records) == [0, 2] and done.truncated == 1
    assert path.read_bytes().endswith(b"}\n")
    with JsonlAppender(path) as out:
        out.write({"source_index": 1, "input": "x1"})
    sort_by_index(path)
    assert [json.loads(line)["source_index"] for line in path.read_text().splitlines()] == [0, 1, 2]

    path.write_text('{"source_index": 0}\n{"source_index": 0}\n')
    with pytest.raises(ValueError, match=r"out\.jsonl, line 2: source_index 0 appears a second time"):
        read_done(path)
    path.write_text('{"input": "no index"}\n')
    with pytest.raises(ValueError, match=r"out\.jsonl, line 1: expected a JSON object with an integer"):
        read_done(path)


def test_store_lines_end_at_newline_only_and_a_foreign_file_is_left_whole(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlAppender(path) as out:  # json.dumps leaves these separators unescaped with ensure_ascii=False
        out.write({"source_index": 1, "rationale": "a\u2028b\x85c\u2029d"})
        out.write({"source_index": 0, "rationale": "plain"})
    assert sorted(read_done(path).records) == [0, 1]
    sort_by_index(path)
    assert [json.loads(line)["source_index"] for line in path.read_text().split("\n")[:-1]] == [0, 1]
    assert read_done(path).records[1]["rationale"] == "a\u2028b\x85c\u2029d"
    # a user's file given as the output by mistake, its last line without a newline: refused, not cut
    foreign = tmp_path / "data.jsonl"
    foreign.write_bytes(b'{"input": "a?", "label": "1"}\n{"input": "b?", "label": "2"}')
    before = foreign.read_bytes()
    with pytest.raises(ValueError, match=r"data\.jsonl, line 1: expected a JSON object with an integer"):
        read_done(foreign)
    assert foreign.read_bytes() == before


def test_settings_mismatch_refused_unless_forced(tmp_path):
    out = tmp_path / "o.jsonl"
    from hf_cotmi.teacher.store import settings_id

    first = {"temperature": 0.0, "model": "m"}
    written = [{"source_index": 0, "teacher_settings_id": settings_id(first)}]  # a record of the first run
    check_settings(out, first, [], force=False)
    check_settings(out, first, written, force=False)  # same settings: fine
    with pytest.raises(SettingsMismatchError, match="temperature: 0.0 -> 0.7"):
        check_settings(out, {"temperature": 0.7, "model": "m"}, written, force=False)
    check_settings(out, {"temperature": 0.7, "model": "m"}, written, force=True)
    assert json.loads((tmp_path / "o.jsonl.settings.json").read_text())["temperature"] == 0.7
    # a run that wrote no record (it failed at once, or its output was deleted): its settings are replaced
    check_settings(out, {"temperature": 0.0, "model": "right-name"}, [], force=False)
    assert json.loads((tmp_path / "o.jsonl.settings.json").read_text())["model"] == "right-name"


def test_settings_keep_what_server_replies_said_apart_from_the_settings(tmp_path, caplog):
    from hf_cotmi.data.jsonfiles import DataFormatError
    from hf_cotmi.teacher.store import REPLIES_FIELD, ReplyModelCheck, settings_id

    out, stored = tmp_path / "o.jsonl", tmp_path / "o.jsonl.settings.json"
    settings = {"model": "tgi", "temperature": 0.0}
    written = [{"source_index": 0, "teacher_settings_id": settings_id(settings)}]
    assert check_settings(out, settings, [], force=False) is None
    check = ReplyModelCheck(out, settings, None, base_url="http://u:key@127.0.0.1:8080/v1?k=key", force=False)
    check("org/teacher-7b")  # the first reply's model is recorded, the URL without what may be a key
    replies = {"model": "org/teacher-7b", "base_url": "http://127.0.0.1:8080/v1"}
    assert json.loads(stored.read_text()) == {**settings, REPLIES_FIELD: replies}
    check("org/teacher-7b")
    with pytest.raises(
        SettingsMismatchError, match=r"replies as model 'org/other-7b', but .* model 'org/teacher-7b'"
    ):
        check("org/other-7b")
    # a rerun: no difference in the settings, and what the replies said comes back for its check
    assert check_settings(out, settings, written, force=False) == replies
    forced = {**settings, "temperature": 0.7}
    assert check_settings(out, forced, written, force=True) == replies  # kept with the new settings
    assert json.loads(stored.read_text()) == {**forced, REPLIES_FIELD: replies}
    with caplog.at_level("WARNING", logger="hf_cotmi.teacher.store"):
        ReplyModelCheck(out, forced, replies, base_url="http://127.0.0.1:9000/v1", force=True)("org/other-7b")
    assert "appending anyway (--force)" in caplog.text
    assert json.loads(stored.read_text())[REPLIES_FIELD] == {
        "model": "org/other-7b",
        "base_url": "http://127.0.0.1:9000/v1",
    }
    # no line written: what replies said describes nothing, and goes
    assert check_settings(out, forced, [], force=False) is None
    assert json.loads(stored.read_text()) == forced
    stored.write_text(json.dumps({**settings, REPLIES_FIELD: "org/teacher-7b"}))
    with pytest.raises(
        DataFormatError, match=r"o\.jsonl\.settings\.json: 'server_replies' is 'org/teacher-7b'; expected"
    ):
        check_settings(out, settings, written, force=False)


def test_read_teacher_inputs_checks_columns_and_rows(tmp_path):
    from hf_cotmi.teacher import read_teacher_inputs

    path = tmp_path / "in.jsonl"
    path.write_text('{"question": "a?", "answer": "1"}\n{"question": "b?", "answer": ""}\n')
    rows = read_teacher_inputs(path, input_column="question", label_column="answer")
    assert [(row.input, row.label) for row in rows] == [("a?", "1"), ("b?", None)]  # an empty label: no gold
    assert read_teacher_inputs(path, input_column="question")[0].extra == {"answer": "1"}  # no 'label': fine
    with pytest.raises(ValueError, match=r"in\.jsonl: no column 'input'"):
        read_teacher_inputs(path)
    with pytest.raises(ValueError, match=r"in\.jsonl: no column 'gold'"):
        read_teacher_inputs(path, input_column="question", label_column="gold")
    path.write_text('{"input": "a?"}\n{"input": "  "}\n')
    with pytest.raises(ValueError, match=r"in\.jsonl, line 2: 'input' is '  '"):
        read_teacher_inputs(path)
    # numbers and booleans become the text load_cot_dataset makes of them (7.0 is "7", not "7.0")
    path.write_text('{"input": "a?", "label": 7}\n{"input": "b?", "label": 2.5}\n')
    from hf_cotmi import load_cot_dataset

    assert [row.label for row in read_teacher_inputs(path)] == ["7", "2.5"]
    path.write_text(
        '{"input": "a?", "label": 7, "rationale": "r"}\n{"input": "b?", "label": 2.5, "rationale": "r"}\n'
    )
    assert load_cot_dataset(path)["train"]["label"] == ["7", "2.5"]
    path.write_text('{"input": "a?", "label": true}\n')
    assert read_teacher_inputs(path)[0].label == "true"


class _EchoTeacher:
    """A backend in code: answers every arithmetic question with its gold sum (or fails while told to)."""

    batch_size, concurrency, retries = 4, 1, 0

    def __init__(self, model: str = "echo", fail: bool = False) -> None:
        self.model, self.fail = model, fail

    def generate(self, requests):
        if self.fail:
            raise RuntimeError("404: no such model")
        return [
            f"Adding. The answer is ({r.prompt.rsplit('What is ', 1)[-1].split('?')[0]})." for r in requests
        ]

    def settings(self):
        return {"backend": "echo", "model": self.model}


def test_a_run_that_wrote_nothing_does_not_lock_its_settings_and_counting_stays_linear(tmp_path, monkeypatch):
    from hf_cotmi import generate_rationales
    from hf_cotmi.teacher import answers, generate

    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"input": f"What is {a} + 1?", "label": f"{a + 1}"}) + "\n" for a in range(40))
    )
    out = tmp_path / "out.jsonl"
    with pytest.raises(Exception, match="404"):
        generate_rationales(
            source, out, backend=_EchoTeacher("wrong-name", fail=True), task="arithmetic", progress=False
        )
    calls = []
    counted = answers.answers_agree
    monkeypatch.setattr(generate, "answers_agree", lambda *a: calls.append(1) or counted(*a))
    summary = generate_rationales(
        source, out, backend=_EchoTeacher("right-name"), task="arithmetic", progress=False
    )
    assert summary.complete and summary.written == 40 and summary.agreed == 40
    assert len(calls) <= 2 * 40  # once per record, and once for the summary: not once per record per record


def test_a_smaller_max_records_than_the_output_holds_says_so(tmp_path):
    from hf_cotmi import generate_rationales

    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"input": f"What is {a} + 1?", "label": f"{a + 1}"}) + "\n" for a in range(6))
    )
    out = tmp_path / "out.jsonl"
    generate_rationales(source, out, backend=_EchoTeacher(), task="arithmetic", progress=False)
    with pytest.raises(ValueError, match=r"already holds source_index 3, beyond --max-records 3; rerun with"):
        generate_rationales(
            source, out, backend=_EchoTeacher(), task="arithmetic", progress=False, max_records=3
        )


class _FailsAfterOneBatch(_EchoTeacher):
    """Answers its first batch, then fails as a local model can (not with a TeacherRequestError)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def generate(self, requests):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("CUDA out of memory")
        return super().generate(requests)


def test_any_failure_keeps_what_finished_and_carries_the_summary(tmp_path):
    # the command prints error.summary before exiting 1; an error that was not a TeacherRequestError
    # was wrapped without it, so the counts of what finished were never printed
    from hf_cotmi import generate_rationales
    from hf_cotmi.teacher import TeacherRequestError

    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"input": f"What is {a} + 1?", "label": f"{a + 1}"}) + "\n" for a in range(10))
    )
    out = tmp_path / "out.jsonl"
    with pytest.raises(TeacherRequestError, match="RuntimeError: CUDA out of memory") as info:
        generate_rationales(source, out, backend=_FailsAfterOneBatch(), task="arithmetic", progress=False)
    summary = info.value.summary
    assert isinstance(info.value.__cause__, RuntimeError)
    assert summary.written == 4 and summary.total == 10 and not summary.complete
    assert summary.output_file == str(out) and len(out.read_text().splitlines()) == 4
    resumed = generate_rationales(source, out, backend=_EchoTeacher(), task="arithmetic", progress=False)
    assert resumed.complete and resumed.resumed == 4 and resumed.written == 10


def test_a_column_json_cannot_hold_is_refused_before_any_request(tmp_path):
    # a parquet timestamp column used to fail with "datetime is not JSON serializable" at the first write,
    # after the teacher had answered, on every rerun
    import pandas as pd

    from hf_cotmi import generate_rationales

    source = tmp_path / "in.parquet"
    frame = {"input": ["What is 1 + 1?", "What is 2 + 1?"], "when": pd.to_datetime(["2024-01-01"] * 2)}
    pd.DataFrame(frame).to_parquet(source)
    teacher = _FailsAfterOneBatch()
    with pytest.raises(
        ValueError, match=r"in\.parquet, .*column 'when' holds a datetime.*convert the column"
    ):
        generate_rationales(
            source, tmp_path / "out.jsonl", backend=teacher, task="arithmetic", progress=False
        )
    assert teacher.calls == 0


@pytest.mark.parametrize(
    "teacher,option,value",
    [
        ({"base_url": "http://127.0.0.1:9/v1", "model": "m"}, "batch_size", 3),
        ({"base_url": "http://127.0.0.1:9/v1", "model": "m"}, "device", "cpu"),
        ({"base_url": "http://127.0.0.1:9/v1", "model": "m"}, "chat_template_file", "chat.jinja"),
        ({"teacher_model": "no-such-folder"}, "concurrency", 8),
        ({"teacher_model": "no-such-folder"}, "api_key_env", "MY_KEY"),
        ({"teacher_model": "no-such-folder"}, "request_timeout", 5.0),
        ({"teacher_model": "no-such-folder"}, "max_retry_after", 30.0),
    ],
)
def test_an_option_the_chosen_teacher_does_not_read_is_refused(tmp_path, teacher, option, value):
    """Server-only options with a local teacher, and local-only ones with a server, were accepted and ignored."""
    from hf_cotmi import generate_rationales

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"input": "What is 1 + 1?"}) + "\n")
    with pytest.raises(ValueError, match=rf"{option}={value!r} \(--{option.replace('_', '-')}\) is read by"):
        generate_rationales(source, tmp_path / "out.jsonl", progress=False, **teacher, **{option: value})
    assert not (tmp_path / "out.jsonl").exists()
    # and a chat template for a local teacher that sends the raw prompt
    if "teacher_model" in teacher:
        with pytest.raises(ValueError, match="chat_template_file .* api='chat' only"):
            generate_rationales(
                source, tmp_path / "out.jsonl", progress=False, api="completions", chat_template_file="t.jinja",
                **teacher,
            )  # fmt: skip


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(tmp_path):
    """Two runs appending to one output wrote records twice, and every later run refused the file."""
    from hf_cotmi import generate_rationales
    from hf_cotmi.teacher.store import OutputInUseError, exclusive_output

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"input": f"What is {a} + 1?"}) + "\n" for a in range(3)))
    out = tmp_path / "out.jsonl"
    teacher = _EchoTeacher()
    with exclusive_output(out):  # the first run, still writing
        with pytest.raises(OutputInUseError, match=r"another run is generating into .*out\.jsonl"):
            generate_rationales(source, out, backend=teacher, task="arithmetic", progress=False)
        assert not out.exists()
    summary = generate_rationales(source, out, backend=teacher, task="arithmetic", progress=False)
    assert summary.total == 3 and len(out.read_text().splitlines()) + summary.unparsable == 3
    assert not (tmp_path / "out.jsonl.lock").exists()  # released and removed when the run ends


def test_a_lock_released_between_opening_and_locking_it_is_taken_afresh(tmp_path, monkeypatch):
    """A run that opened ``<output>.lock`` just before the run holding it ended (and removed it) locked the
    removed file: a third run then created and locked a new one, and both appended the same records."""
    import fcntl

    from hf_cotmi.teacher.store import OutputInUseError, exclusive_output

    out = tmp_path / "out.jsonl"
    lock = tmp_path / "out.jsonl.lock"
    lock.write_text("")  # the lock file of a run still writing
    real_flock = fcntl.flock
    ended = []

    def flock_after_the_first_run_ended(fd, operation):
        if not ended:  # between this run's open and its flock, the first run ends and removes its lock file
            ended.append(True)
            lock.unlink()
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_first_run_ended)
    with exclusive_output(out):  # the second run
        assert lock.exists()  # it holds the lock file a newcomer opens, not the removed one
        with pytest.raises(OutputInUseError):
            with exclusive_output(out):  # a third run
                pass
    assert not lock.exists()


def test_a_long_retry_after_is_logged_as_a_warning(caplog):
    """A server asking for an hour's wait is honoured; the wait must not look like a silent hang."""
    pytest.importorskip("openai")
    from hf_cotmi.teacher.backends import OpenAICompatibleBackend

    backend = OpenAICompatibleBackend("http://127.0.0.1:9/v1", "m")
    with caplog.at_level("INFO", logger="hf_cotmi.teacher.backends"):
        backend._count_retry(0, RetryableError("HTTP 503", retry_after=2.0), 2.0)
        backend._count_retry(1, RetryableError("HTTP 429", retry_after=3600.0), 3600.0)
        backend._count_retry(2, RetryableError("HTTP 500"), 75.0)  # backoff with jitter: not the server's ask
    levels = [(record.levelname, "3600.00 s" in record.getMessage()) for record in caplog.records]
    assert levels == [("INFO", False), ("WARNING", True), ("INFO", False)]
    assert backend.retries == 3


def test_a_retry_after_above_max_retry_after_is_capped_and_the_cap_is_logged(caplog):
    """A server or proxy saying Retry-After: 86400 made the run sleep a day."""
    rng = random.Random(0)
    assert RetryPolicy().max_retry_after == 300.0
    policy = RetryPolicy(initial_delay=1.0, max_delay=8.0, jitter=0.0, max_retry_after=120.0)
    assert policy.delay(0, 86400.0, rng) == 120.0  # capped
    assert policy.delay(0, 90.0, rng) == 90.0  # below the cap: honoured in full
    assert policy.delay(6, 5.0, rng) == 8.0  # the backoff still wins over a shorter ask
    assert RetryPolicy(jitter=0.0, max_retry_after=math.inf).delay(0, 86400.0, rng) == 86400.0
    waits: list[float] = []
    attempts: list[int] = []

    def rate_limited_for_a_day():
        attempts.append(1)
        if len(attempts) == 1:
            raise RetryableError("HTTP 429 from http://proxy", retry_after=parse_retry_after("86400"))
        return "ok"

    with caplog.at_level("WARNING", logger="hf_cotmi.teacher.retrying"):
        assert call_with_retries(rate_limited_for_a_day, policy, sleep=waits.append) == "ok"
    assert waits == [120.0]
    (record,) = caplog.records
    message = record.getMessage()
    assert record.levelname == "WARNING" and "HTTP 429 from http://proxy" in message
    assert "86400 s" in message and "max_retry_after=120 s" in message and "120.00 s" in message


@pytest.mark.parametrize("value", [-1.0, math.nan])
def test_an_invalid_max_retry_after_is_refused(value):
    with pytest.raises(ValueError, match=rf"max_retry_after={value} must be >= 0 seconds"):
        RetryPolicy(max_retry_after=value)


def test_a_capped_wait_is_not_warned_about_twice(caplog):
    """The cap's warning says how long the wait is; the backend's long-wait warning is for asks honoured in full."""
    pytest.importorskip("openai")
    from hf_cotmi.teacher.backends import OpenAICompatibleBackend

    backend = OpenAICompatibleBackend("http://127.0.0.1:9/v1", "m")
    with caplog.at_level("INFO", logger="hf_cotmi.teacher.backends"):
        backend._count_retry(0, RetryableError("HTTP 429", retry_after=86400.0), 300.0)  # capped
        backend._count_retry(1, RetryableError("HTTP 429", retry_after=120.0), 120.0)  # honoured
    assert [record.levelname for record in caplog.records] == ["INFO", "WARNING"]


@pytest.mark.parametrize(
    ("task", "text", "rationale", "label"),
    [
        # a lowercase "the answer is" in the reasoning, or restating the answer, is prose, not a second
        # answer sentence: the DSS rule reads the text, as it did before chat phrases were rewritten
        (
            "arithmetic",
            "Let me think: the answer is not obvious. 3 + 4 is 7. The answer is (3 + 4).",
            "Let me think: the answer is not obvious. 3 + 4 is 7.",
            "(3 + 4)",
        ),
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4). That is, the answer is 7.",
            "3 + 4 is 7.",
            "(3 + 4)",
        ),
        (
            "arithmetic",
            "At first the answer is unclear. 3 + 4 is 7, so the answer is (3 + 4).",
            "At first the answer is unclear. 3 + 4 is 7,",
            "(3 + 4)",
        ),
        (
            "nli",
            "A man is a person. So the answer is entailment. Also, so the answer is not neutral.",
            "A man is a person.",
            "entailment",
        ),
        # a colon after the answer phrase
        ("generic", "Paris is the capital. So the answer is: Paris.", "Paris is the capital.", "paris"),
        ("nli", "A man is a person. So the answer is: entailment.", "A man is a person.", "entailment"),
        ("nli", "A man is a person. **So the answer is:** entailment", "A man is a person.", "entailment"),
        # more text after the answer on the same line: the answer sentence ends at its period
        (
            "nli",
            "A man is a person. So the answer is entailment. This is clear.",
            "A man is a person.",
            "entailment",
        ),
        (
            "multiple_choice",
            "Fish live in water. So the answer is (b) sea. Let me know if you need more help.",
            "Fish live in water.",
            "sea",
        ),
        ("multiple_choice", "Fish live in water. So the answer is (b) sea.", "Fish live in water.", "sea"),
    ],
)
def test_chat_style_answer_sentences_parse_without_a_second_answer_or_trailing_text(
    task, text, rationale, label
):
    answer = parse_teacher_output(task, text)
    assert (answer.rationale, answer.label, answer.reason) == (rationale, label, "")


@pytest.mark.parametrize(
    ("task", "text", "reason"),
    [
        # two answer sentences of the same form that give different answers are refused, as DSS refused them
        ("arithmetic", "so the answer is (1 + 1). so the answer is (2 + 2).", "holds 2 answer sentences"),
        (
            "nli",
            "No link. so the answer is neutral. so, the answer is entailment.",
            "holds 2 answer sentences",
        ),
        # an answer that is no single choice text is refused, not written with the trailing sentence
        ("multiple_choice", "Fish swim. So the answer is (b). Sea is where fish live.", "does not parse"),
    ],
)
def test_ambiguous_chat_answers_are_still_refused(task, text, reason):
    answer = parse_teacher_output(task, text)
    assert not answer.parsed and reason in answer.reason


_SLEEPING = "The man is sleeping, so he cannot be running."


@pytest.mark.parametrize(
    ("task", "text", "choices", "sentence", "line"),
    [
        ("nli", f"{_SLEEPING} So the answer is contradiction.\nneutral", None, "contradiction", "'neutral'"),
        (
            "nli",
            f"{_SLEEPING} So the answer is contradiction.\n\nNeutral.",
            None,
            "contradiction",
            "'Neutral.'",
        ),
        (
            "nli",
            f"{_SLEEPING} So the answer is contradiction.\n\n**Neutral**",
            None,
            "contradiction",
            "'Neutral'",
        ),
        (
            "multiple_choice",
            f"{_COOL} So the answer is (b) refrigerator.\n(a)",
            PIE_CHOICES,
            "refrigerator",
            "'(a)'",
        ),
        (
            "multiple_choice",
            f"{_COOL} So the answer is (b).\n\nA. Oven",
            PIE_CHOICES,
            "refrigerator",
            "'A. Oven'",
        ),
        (
            "multiple_choice",
            f"{_COOL} So the answer is (b) refrigerator.\noven",
            PIE_CHOICES,
            "refrigerator",
            "'oven'",
        ),
        ("arithmetic", "3 + 4 is 7. The answer is (3 + 4).\n8", None, "(3 + 4)", "'8'"),
        ("arithmetic", "3 + 4 is 7. The answer is (3 + 4).\n\n\\boxed{3 + 5}", None, "(3 + 4)", "'(3 + 5)'"),
    ],
)
def test_a_line_after_the_answer_holding_only_another_answer_is_refused(task, text, choices, sentence, line):
    parsed = parse_teacher_output(task, text, choices=choices)
    assert not parsed.parsed
    assert parsed.reason.startswith(
        "the text holds 1 answer sentence and, after it, 1 line holding only an answer"
    )
    # both are named, each with what it gives
    assert f"gives {sentence!r}" in parsed.reason and f"the line {line} gives" in parsed.reason


def test_a_line_holding_another_answer_after_several_agreeing_sentences_is_refused():
    text = f"Answer: (b)\n\n{_COOL} So the answer is (b).\n\n(a)"
    parsed = parse_teacher_output("multiple_choice", text, choices=PIE_CHOICES)
    assert parsed.reason == (
        "the text holds 2 answer sentences and, after them, 1 line holding only an answer, which do not all give "
        "the same answer ('Answer: (b)' gives 'refrigerator', 'So the answer is (b).' gives 'refrigerator', the "
        "line '(a)' gives 'oven')"
    )


@pytest.mark.parametrize(
    ("task", "text", "choices", "rationale", "label"),
    [
        # the same answer again, on a line of its own
        (
            "nli",
            f"{_SLEEPING} So the answer is contradiction.\ncontradiction",
            None,
            _SLEEPING,
            "contradiction",
        ),
        (
            "nli",
            f"{_SLEEPING} So the answer is contradiction.\n\nContradiction.",
            None,
            _SLEEPING,
            "contradiction",
        ),
        (
            "multiple_choice",
            f"{_COOL} So the answer is (b) refrigerator.\n\n(b)",
            PIE_CHOICES,
            _COOL,
            "refrigerator",
        ),
        (
            "multiple_choice",
            f"{_COOL} So the answer is (b).\nB. Refrigerator",
            PIE_CHOICES,
            _COOL,
            "refrigerator",
        ),
        (
            "multiple_choice",
            f"{_COOL} So the answer is (b).\nrefrigerator",
            PIE_CHOICES,
            _COOL,
            "refrigerator",
        ),
        ("arithmetic", "3 + 4 is 7. The answer is (3 + 4).\n7", None, "3 + 4 is 7.", "(3 + 4)"),
        ("arithmetic", "3 + 4 is 7. The answer is (3 + 4).\n\n\\boxed{7}", None, "3 + 4 is 7.", "(3 + 4)"),
        # lines that are more than an answer, or come before the answer sentence, answer nothing
        (
            "nli",
            f"neutral\n{_SLEEPING} So the answer is contradiction.",
            None,
            f"neutral\n{_SLEEPING}",
            "contradiction",
        ),
        (
            "nli",
            f"{_SLEEPING} So the answer is contradiction.\nNeutral would need more.",
            None,
            _SLEEPING,
            "contradiction",
        ),
        (
            "nli",
            f"{_SLEEPING} So the answer is contradiction.\n\nPremise: x\nneutral",
            None,
            _SLEEPING,
            "contradiction",
        ),
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4).\n8 apples were eaten.",
            None,
            "3 + 4 is 7.",
            "(3 + 4)",
        ),
        ("arithmetic", "3 + 4 is 7. The answer is (3 + 4).\n\nQ: And 8?\n8", None, "3 + 4 is 7.", "(3 + 4)"),
        # generic answers may be any words: no line is only an answer
        ("generic", "It is hot. So the answer is Mercury.\nVenus", None, "It is hot.", "mercury"),
        # a multiple-choice reply that lists the choices, or says why the others are wrong, after its answer
        (
            "multiple_choice",
            f"{_COOL} So the answer is (b) refrigerator.\n\n(a) oven\n(b) refrigerator\n(c) bookshelf",
            PIE_CHOICES,
            _COOL,
            "refrigerator",
        ),
        (
            "multiple_choice",
            f"{_COOL} So the answer is (b).\n\n(a) oven: it heats.",
            PIE_CHOICES,
            _COOL,
            "refrigerator",
        ),
        # without the record's choices a letter names no answer
        ("multiple_choice", f"{_COOL} So the answer is (b) refrigerator.\n(a)", None, _COOL, "refrigerator"),
    ],
)
def test_a_line_after_the_answer_agreeing_with_it_or_no_answer_keeps_the_answer(
    task, text, choices, rationale, label
):
    parsed = parse_teacher_output(task, text, choices=choices)
    assert (parsed.rationale, parsed.label, parsed.reason) == (rationale, label, "")


@pytest.mark.parametrize(
    ("task", "text", "choices", "label"),
    [
        ("nli", f"{_SLEEPING}\n\nFinal Answer\n\nneutral", None, "neutral"),
        ("nli", f"{_SLEEPING}\n\n**Final Answer**\n\nContradiction.", None, "contradiction"),
        (
            "nli",
            f"{_SLEEPING}\n\n### Final Answer\n\n\\boxed{{\\text{{contradiction}}}}",
            None,
            "contradiction",
        ),
        ("nli", f"{_SLEEPING}\n\nFinal answer: contradiction", None, "contradiction"),
        ("multiple_choice", f"{_SLEEPING}\n\n**Final Answer**\n\n(b)", PIE_CHOICES, "refrigerator"),
        ("multiple_choice", f"{_SLEEPING}\n\n**Answer**\n\n(b) refrigerator", PIE_CHOICES, "refrigerator"),
        ("arithmetic", f"{_SLEEPING}\n\nFinal answer:\n\n\\boxed{{8}}", None, "(8)"),
        ("arithmetic", f"{_SLEEPING}\n\n**Final Answer**\n\n$\\boxed{{4 + 4}}$", None, "(4 + 4)"),
        ("arithmetic", f"{_SLEEPING}\n\nFinal Answer: (4 + 4)", None, "(4 + 4)"),
        ("generic", f"{_SLEEPING}\n\nFinal Answer\n\nMercury", None, "mercury"),
        ("generic", f"{_SLEEPING}\n\n## Final Answer\n\nMercury.\n\nQ: next", None, "mercury"),
    ],
)
def test_a_final_answer_label_or_heading_over_the_answer_is_read(task, text, choices, label):
    parsed = parse_teacher_output(task, text, choices=choices)
    assert (parsed.rationale, parsed.label, parsed.reason) == (_SLEEPING, label, "")


@pytest.mark.parametrize(
    ("task", "text", "choices", "outcome"),
    [
        # a heading over reasoning is no answer label, and stays in the rationale as before
        ("nli", "## Answer\nNeutral says nothing. So the answer is neutral.", None, "neutral"),
        ("generic", "## Answer\n\nMercury is closest.\n\nSo the answer is Mercury.", None, "mercury"),
        (
            "generic",
            f"{_SLEEPING}\n\nFinal Answer\n\nMercury is closest. It is hot.",
            None,
            "no answer sentence",
        ),
        ("arithmetic", f"{_SLEEPING}\n\nFinal Answer\n\n8 apples", None, "no answer sentence"),
        # "Answer", not "Final answer", is read beside the prompt's phrase only (e-SNLI's "Answer: neutral")
        ("nli", f"{_SLEEPING}\n\nAnswer\n\ncontradiction", None, "no answer sentence"),
        # a heading over the choices listed is refused as a list
        (
            "multiple_choice",
            f"{_COOL}\n\nFinal Answer\n\n(a) oven\n(b) refrigerator",
            PIE_CHOICES,
            "list the choices",
        ),
        # a heading whose answer differs from the answer sentence's is a second answer
        (
            "nli",
            f"{_SLEEPING} So the answer is contradiction.\n\n**Final Answer**\n\nneutral",
            None,
            "2 answer sentences that do not all give the same answer ('So the answer is contradiction.' gives "
            "'contradiction', 'Final Answer:' gives 'neutral')",
        ),
        (
            "arithmetic",
            "3 + 4 is 7. The answer is (3 + 4).\n\n**Final Answer**\n\n\\boxed{8}",
            None,
            "2 answer sentences that do not all give the same answer ('The answer is (3 + 4).' gives '(3 + 4)', "
            "'Final Answer:' gives '(8)')",
        ),
    ],
)
def test_a_heading_over_no_single_answer_or_another_answer_is_read_as_such(task, text, choices, outcome):
    parsed = parse_teacher_output(task, text, choices=choices)
    assert parsed.label == outcome if parsed.parsed else outcome in parsed.reason


@pytest.mark.parametrize(
    ("task", "text", "choices", "rationale", "label"),
    [
        # "The final answer is ..." alone: a chat model's closing sentence (Llama-3-Instruct's "The final answer
        # is: $\boxed{8}$"), read as the prompt's phrase where an answer of the task follows
        ("nli", f"{_SLEEPING} The final answer is contradiction.", None, _SLEEPING, "contradiction"),
        ("nli", f"{_SLEEPING}\nThe final answer is: Contradiction", None, _SLEEPING, "contradiction"),
        ("nli", f"{_SLEEPING}\nThe final answer is:\n\ncontradiction", None, _SLEEPING, "contradiction"),
        ("nli", f"{_SLEEPING} So the final answer is **contradiction**.", None, _SLEEPING, "contradiction"),
        (
            "nli",
            f"{_SLEEPING} The final answer is $\\boxed{{\\text{{contradiction}}}}$.",
            None,
            _SLEEPING,
            "contradiction",
        ),
        ("nli", f"{_SLEEPING} The final answer is actually contradiction.", None, _SLEEPING, "contradiction"),
        # the connective before "the final answer is" stays in the rationale, as for the other variants
        (
            "nli",
            f"{_SLEEPING} Therefore, the final answer is contradiction.",
            None,
            f"{_SLEEPING} Therefore,",
            "contradiction",
        ),
        # Minerva's "Final Answer: The final answer is ...": the label is no part of the rationale
        (
            "nli",
            f"{_SLEEPING}\nFinal Answer: The final answer is contradiction.",
            None,
            _SLEEPING,
            "contradiction",
        ),
        ("arithmetic", f"{_SLEEPING}\n\nThe final answer is: $\\boxed{{8}}$", None, _SLEEPING, "(8)"),
        ("arithmetic", f"{_SLEEPING} The final answer is $\\boxed{{4 + 4}}$.", None, _SLEEPING, "(4 + 4)"),
        ("arithmetic", f"{_SLEEPING} The final answer is \\(\\boxed{{8}}\\).", None, _SLEEPING, "(8)"),
        ("arithmetic", f"{_SLEEPING} The final answer is (4 + 4).", None, _SLEEPING, "(4 + 4)"),
        ("arithmetic", f"{_SLEEPING} So the final answer is **(4 + 4)**.", None, _SLEEPING, "(4 + 4)"),
        ("arithmetic", f"{_SLEEPING} The final answer is (4 + 4) apples.", None, _SLEEPING, "(4 + 4)"),
        (
            "arithmetic",
            f"{_SLEEPING}\nFinal Answer: The final answer is $\\boxed{{8}}$. I hope it is correct.",
            None,
            _SLEEPING,
            "(8)",
        ),
        ("generic", f"{_SLEEPING} The final answer is Mercury.", None, _SLEEPING, "mercury"),
        ("generic", f"{_SLEEPING}\nThe final answer is: **Mercury**", None, _SLEEPING, "mercury"),
        ("generic", f"{_SLEEPING}\nThe final answer is:\n\nMercury\n", None, _SLEEPING, "mercury"),
        (
            "generic",
            f"{_SLEEPING} So the final answer is $\\boxed{{\\text{{Mercury}}}}$.",
            None,
            _SLEEPING,
            "mercury",
        ),
        ("generic", f"{_SLEEPING} The final answer is Mercury.\n\nQ: next", None, _SLEEPING, "mercury"),
        # multiple_choice read it already, where a choice's label follows
        (
            "multiple_choice",
            f"{_COOL} Therefore, the final answer is (b).",
            PIE_CHOICES,
            f"{_COOL} Therefore,",
            "refrigerator",
        ),
        (
            "multiple_choice",
            f"{_COOL} The final answer is: **(b) refrigerator**",
            PIE_CHOICES,
            _COOL,
            "refrigerator",
        ),
        # several answer sentences that agree keep the answer
        (
            "nli",
            f"{_SLEEPING} So, the answer is contradiction.\nThe final answer is contradiction.",
            None,
            _SLEEPING,
            "contradiction",
        ),
        (
            "arithmetic",
            f"{_SLEEPING} In all, the answer is 8.\n\nThe final answer is: $\\boxed{{8}}$",
            None,
            f"{_SLEEPING} In all,",
            "(8)",
        ),
        (
            "arithmetic",
            f"{_SLEEPING} The final answer is (4 + 4).\nThe final answer is $\\boxed{{8}}$.",
            None,
            _SLEEPING,
            "(4 + 4)",
        ),
        (
            "generic",
            f"{_SLEEPING} The final answer is Mercury.\nThe final answer is mercury.",
            None,
            _SLEEPING,
            "mercury",
        ),
    ],
)
def test_the_final_answer_is_reads_as_the_answer_sentence(task, text, choices, rationale, label):
    """ "The final answer is ..." was read for multiple_choice only: the other tasks found no answer sentence."""
    parsed = parse_teacher_output(task, text, choices=choices)
    assert (parsed.rationale, parsed.label, parsed.reason) == (rationale, label, "")


@pytest.mark.parametrize(
    ("task", "text", "reason"),
    [
        # a negation is no answer
        (
            "nli",
            f"{_SLEEPING} The final answer is not entailment.",
            "no answer sentence ('So the answer is ...')",
        ),
        (
            "arithmetic",
            f"{_SLEEPING} The final answer is not (8).",
            "no answer sentence ('The answer is ...')",
        ),
        (
            "generic",
            f"{_SLEEPING} The final answer is not Venus.",
            "no answer sentence ('So the answer is ...')",
        ),
        (
            "generic",
            f"{_SLEEPING} The final answer is never Venus.",
            "no answer sentence ('So the answer is ...')",
        ),
        # for arithmetic, an answer without a value is prose
        (
            "arithmetic",
            f"{_SLEEPING} The final answer is 4 + 4 = 8.",
            "no answer sentence ('The answer is ...')",
        ),
        (
            "arithmetic",
            f"{_SLEEPING} The final answer is 8 because he has 8.",
            "no answer sentence ('The answer is ...')",
        ),
        (
            "arithmetic",
            f"{_SLEEPING} The final answer is the sum.",
            "no answer sentence ('The answer is ...')",
        ),
        # a number without parentheses, which the SVAMP rule does not read, as after "The answer is"
        (
            "arithmetic",
            f"{_SLEEPING} The final answer is 8.",
            "the answer sentence does not parse by the arithmetic rule, which reads only a parenthesised expression "
            "('The answer is (24 - 9).'), not a bare number",
        ),
        # for generic, only one sentence ending the text: not one followed by more text or a remark
        (
            "generic",
            f"{_SLEEPING} The final answer is Mercury.\n\nI hope this helps!",
            "no answer sentence ('So the answer is ...')",
        ),
        (
            "generic",
            f"{_SLEEPING} The final answer is Mercury. I hope this helps!",
            "no answer sentence ('So the answer is ...')",
        ),
        (
            "generic",
            "The final answer is hard to find. Mercury is closest to the sun.",
            "no answer sentence ('So the answer is ...')",
        ),
        # several answer sentences that differ are refused
        (
            "nli",
            f"{_SLEEPING} The final answer is contradiction.\nWait, the final answer is neutral.",
            _refused_as(
                "'The final answer is contradiction.' gives 'contradiction', 'the final answer is neutral.' gives "
                "'neutral'"
            ),
        ),
        (
            "arithmetic",
            f"{_SLEEPING} The final answer is $\\boxed{{8}}$.\nThe final answer is $\\boxed{{9}}$.",
            _refused_as("'The final answer is (8).' gives '(8)', 'The final answer is (9).' gives '(9)'"),
        ),
        (
            "arithmetic",
            f"{_SLEEPING} So, the answer is (4 + 4).\n\nThe final answer is: $\\boxed{{9}}$",
            _refused_as(
                "'So, the answer is (4 + 4).' gives '(4 + 4)', 'The final answer is: (9)' gives '(9)'"
            ),
        ),
        (
            "generic",
            f"{_SLEEPING} So, the answer is Mercury.\nThe final answer is Venus.",
            _refused_as(
                "'So, the answer is Mercury.' gives 'mercury', 'The final answer is Venus.' gives 'venus'"
            ),
        ),
        # an nli answer sentence negating the answer is a correction
        (
            "nli",
            f"{_SLEEPING} The final answer is contradiction.\nBut the answer is actually not contradiction.",
            "the answer sentence 'the answer is actually not contradiction' negates the answer 'contradiction'",
        ),
    ],
)
def test_the_final_answer_is_without_one_answer_stays_unread_or_is_refused(task, text, reason):
    parsed = parse_teacher_output(task, text)
    assert (parsed.rationale, parsed.label, parsed.reason) == ("", "", reason)


@pytest.mark.parametrize(
    ("task", "text", "choices", "label"),
    [
        ("generic", "It is hot. So the answer is Mercury. I hope this helps!", None, "mercury"),
        ("generic", "It is hot. So the answer is Mercury! Let me know if you need more.", None, "mercury"),
        ("generic", "It is hot. So the answer is 3.5. I hope this helps!", None, "3.5"),
        ("generic", "It is hot. So the answer is St. Louis. I hope this helps!", None, "st. louis"),
        ("generic", "It is hot. So the answer is J. K. Rowling. Enjoy!", None, "j. k. rowling"),
        ("generic", "It is hot. So the answer is 2 + 3.5 = 5.5. Enjoy!", None, "2 + 3.5 = 5.5"),
        ("nli", "No link. So the answer is neutral! Let me know.", None, "neutral"),
        (
            "multiple_choice",
            f"{_COOL} So the answer is (b) refrigerator! Hope this helps.",
            PIE_CHOICES,
            "refrigerator",
        ),
        ("arithmetic", "Add. The answer is (3 + 4) apples. Let me know (if you need more).", None, "(3 + 4)"),
        ("arithmetic", "Add. The answer is (3 + 4). Let me know (if you need more).", None, "(3 + 4)"),
        ("arithmetic", "Add. The answer is (39. 5 + 1). Let me know.", None, "(39. 5 + 1)"),
        ("arithmetic", "Halve. The answer is (7 / 2) = 3.5. Let me know.", None, "(7 / 2)"),
    ],
)
def test_a_remark_after_the_answer_sentence_is_no_part_of_the_answer(task, text, choices, label):
    parsed = parse_teacher_output(task, text, choices=choices)
    assert (parsed.label, parsed.reason) == (label, "")


def test_a_question_mark_after_the_answer_ends_no_sentence():
    # "neutral? I am not sure." hedges: it is not read as the answer "neutral"
    parsed = parse_teacher_output("nli", "No link. So the answer is neutral? I am not sure.")
    assert not parsed.parsed and "is not a valid nli answer" in parsed.reason


def _corrected_by(answer: str, remark: str, holds: str) -> str:
    """The reason an answer followed on its line by a remark that may correct it is refused."""
    return (
        f"the answer {answer!r} is followed on its line by {remark!r}, which holds {holds!r}: the teacher may be "
        "correcting itself (expected the answer sentence alone, or a remark that gives no other answer)"
    )


@pytest.mark.parametrize(
    ("task", "text", "choices", "reason"),
    [
        # a correction after an exclamation mark or a period, on the answer's line: never read as the first answer
        (
            "nli",
            "Hmm. So the answer is neutral! Actually no, contradiction.",
            None,
            _corrected_by("neutral", "Actually no, contradiction.", "Actually"),
        ),
        (
            "nli",
            "Hmm. So the answer is entailment. Wait, no. Contradiction.",
            None,
            _corrected_by("entailment", "Wait, no. Contradiction.", "Wait"),
        ),
        # another label alone is enough for nli
        (
            "nli",
            "Hmm. So the answer is entailment. Contradiction is likelier.",
            None,
            _corrected_by("entailment", "Contradiction is likelier.", "Contradiction"),
        ),
        (
            "arithmetic",
            "10 minus 2. The answer is (10 - 2)! Oops, I mean (10 + 2).",
            None,
            _corrected_by("(10 - 2)", "Oops, I mean (10 + 2).", "Oops"),
        ),
        # another value alone is enough for arithmetic: an expression, or a number
        (
            "arithmetic",
            "10 minus 2. The answer is (10 - 2). So (10 + 2) fits better.",
            None,
            _corrected_by("(10 - 2)", "So (10 + 2) fits better.", "(10 + 2)"),
        ),
        (
            "arithmetic",
            "10 minus 2. The answer is (10 - 2). That makes 12 apples.",
            None,
            _corrected_by("(10 - 2)", "That makes 12 apples.", "12"),
        ),
        (
            "generic",
            "Capitals. So the answer is Paris. Wait, no, it is Lyon.",
            None,
            _corrected_by("Paris", "Wait, no, it is Lyon.", "Wait"),
        ),
        (
            "generic",
            "Capitals. So the answer is Paris. It is not Lyon.",
            None,
            _corrected_by("Paris", "It is not Lyon.", "not"),
        ),
        (
            "generic",
            "Capitals. So the answer is Paris. I think the answer would be Lyon.",
            None,
            _corrected_by("Paris", "I think the answer would be Lyon.", "answer would"),
        ),
        (
            "multiple_choice",
            f"{_COOL} So the answer is (b) refrigerator. Wait, no.",
            PIE_CHOICES,
            _corrected_by("refrigerator", "Wait, no.", "Wait"),
        ),
        # a generic answer kept whole, as no remark opens after its period, is checked too
        (
            "generic",
            "Senators. So the answer is Sen. Warren, not Sanders.",
            None,
            "the answer 'Sen. Warren, not Sanders' runs on past a sentence's end with 'Warren, not Sanders', which "
            "holds 'not': the teacher may be correcting itself (expected the answer sentence alone, or a remark "
            "that gives no other answer)",
        ),
    ],
)
def test_a_remark_on_the_answers_line_that_may_correct_it_refuses_the_answer(task, text, choices, reason):
    """The cut at the answer sentence's end dropped such a remark and kept the first answer (for nli, arithmetic
    and generic; multiple_choice read only the choices a remark names)."""
    parsed = parse_teacher_output(task, text, choices=choices)
    assert (parsed.rationale, parsed.label, parsed.reason) == ("", "", reason)


@pytest.mark.parametrize(
    ("task", "text", "label"),
    [
        ("nli", "Hmm. So the answer is neutral. I hope this helps!", "neutral"),
        ("nli", "Hmm. So the answer is neutral. The premise does not say he runs.", "neutral"),
        ("nli", "Hmm. So the answer is neutral. Neutral means unrelated.", "neutral"),
        ("arithmetic", "10 minus 2. The answer is (10 - 2). That is 8 apples.", "(10 - 2)"),
        ("generic", "Capitals. So the answer is Paris. Let me know if you have questions.", "paris"),
        ("generic", "Capitals. So the answer is Paris. I hope this answer helps.", "paris"),
        # words of correction that introduce an agreeing answer sentence are that sentence's
        ("nli", "Hmm. So the answer is neutral. Actually, the final answer is neutral.", "neutral"),
        ("nli", "Hmm. So the answer is entailment. Also, so the answer is not neutral.", "entailment"),
    ],
)
def test_a_remark_on_the_answers_line_that_gives_no_other_answer_is_dropped(task, text, label):
    parsed = parse_teacher_output(task, text)
    assert (parsed.label, parsed.reason) == (label, "")


@pytest.mark.parametrize(
    ("task", "text", "choices", "label"),
    [
        ("nli", "Hmm. So the answer is neutral!", None, "neutral"),
        ("multiple_choice", f"{_COOL} So the answer is (b) fridge!", ["oven", "fridge"], "fridge"),
        ("generic", "Hmm. So the answer is Paris!", None, "paris"),
        ("arithmetic", "Add. The answer is (3 + 4)!", None, "(3 + 4)"),
        # a choice's own exclamation mark stays in it
        (
            "multiple_choice",
            "Fans cheer. So the answer is (b) good luck!",
            ["have fun", "good luck!"],
            "good luck!",
        ),
    ],
)
def test_an_exclamation_mark_ending_the_line_ends_the_answer_sentence(task, text, choices, label):
    """Only an exclamation mark followed by whitespace ended the sentence: 'neutral!' was no nli label."""
    parsed = parse_teacher_output(task, text, choices=choices)
    assert (parsed.label, parsed.reason) == (label, "")


@pytest.mark.parametrize(
    ("text", "label"),
    [
        # a period or exclamation mark that no remark follows is part of the answer, whatever the abbreviation
        ("Senators. So the answer is Sen. Warren.", "sen. warren"),
        (
            "The address. So the answer is 1600 Pennsylvania Ave. NW, Washington.",
            "1600 pennsylvania ave. nw, washington",
        ),
        ("Companies. So the answer is Yahoo! Inc.", "yahoo! inc"),
        ("Authors. So the answer is J. K. Rowling.", "j. k. rowling"),
        # a remark after it is dropped, whatever the word before the period
        ("Vitamins. So the answer is vitamin C. It helps immunity.", "vitamin c"),
        ("Capitals. So the answer is Washington, D.C. It is the capital.", "washington, d.c"),
        ("Cities. So the answer is St. Louis. Hope this helps!", "st. louis"),
    ],
)
def test_a_generic_answer_ends_only_where_a_remark_follows(text, label):
    """A list of abbreviations cut 'Sen. Warren' to 'sen' and kept 'It helps immunity.' in 'vitamin C'."""
    parsed = parse_teacher_output("generic", text)
    assert (parsed.label, parsed.reason) == (label, "")


_REFRIGERATOR_CHOICES = ["oven", "refrigerator", "sea"]


@pytest.mark.parametrize(
    "text",
    [
        "A refrigerator keeps food cool.\n\n**Final Answer**\n\nB",
        "A refrigerator keeps food cool.\n\n**Final Answer**\n\nrefrigerator",
        "A refrigerator keeps food cool.\n\n**Final Answer**\n\n\\boxed{B}",
        "A refrigerator keeps food cool.\n\n**Final Answer:** B",
        "A refrigerator keeps food cool.\n\nFinal Answer: \\boxed{B}",
        "A refrigerator keeps food cool.\n\nFinal Answer: Refrigerator.",
        "A refrigerator keeps food cool.\n\nThe final answer is: $\\boxed{B}$",
    ],
)
def test_a_multiple_choice_letter_or_choice_after_a_final_answer_label_is_read(text):
    """Read only with a label in parentheses or followed by '.', ':' or ')': these had no answer sentence."""
    parsed = parse_teacher_output("multiple_choice", text, choices=_REFRIGERATOR_CHOICES)
    assert (parsed.rationale, parsed.label, parsed.reason) == (
        "A refrigerator keeps food cool.",
        "refrigerator",
        "",
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # without the record's choices a letter names nothing, as for "The answer is B."
        ("Cold.\n\nFinal Answer: B", "the answer sentence does not parse by the multiple_choice rule"),
        ("Cold.\n\n**Final Answer**\n\nB", "no answer sentence ('So the answer is ...')"),
    ],
)
def test_a_multiple_choice_letter_after_a_final_answer_label_needs_the_choices(text, reason):
    parsed = parse_teacher_output("multiple_choice", text)
    assert (parsed.label, parsed.reason) == ("", reason)


@pytest.mark.parametrize(
    ("task", "line", "shown", "given"),
    [
        ("nli", "*Neutral*", "*Neutral*", "neutral"),
        ("nli", "`neutral`", "`neutral`", "neutral"),
        ("nli", "- neutral", "- neutral", "neutral"),
        ("nli", "→ neutral.", "→ neutral.", "neutral"),
        ("arithmetic", "* _9_", "* _9_", "9"),
    ],
)
def test_a_marked_answer_line_after_the_answer_is_read(task, line, shown, given):
    """Emphasis, code marks, a bullet or an arrow hid a differing answer line."""
    first = {"nli": "So the answer is contradiction.", "arithmetic": "The answer is (3 + 4)."}[task]
    gives = {"nli": "contradiction", "arithmetic": "(3 + 4)"}[task]
    parsed = parse_teacher_output(task, f"He sleeps. {first}\n{line}")
    assert parsed.reason == (
        "the text holds 1 answer sentence and, after it, 1 line holding only an answer, which do not all give the "
        f"same answer ({first!r} gives {gives!r}, the line {shown!r} gives {given!r})"
    )


@pytest.mark.parametrize(
    ("task", "text", "choices", "label"),
    [
        # lines listing two or more different answers are a list, not an answer
        (
            "nli",
            "He sleeps. So the answer is contradiction.\n\nOptions:\nentailment\nneutral\ncontradiction",
            None,
            "contradiction",
        ),
        (
            "multiple_choice",
            "Cold. So the answer is (b) refrigerator.\n\nEliminated:\noven\nsea",
            _REFRIGERATOR_CHOICES,
            "refrigerator",
        ),
        # "1." and "2." number the items of a list
        ("arithmetic", "Add. The answer is (3 + 4).\n\n1.\nTom has 3.\n2.\nHe gets 4.", None, "(3 + 4)"),
        # display math on lines of its own under a heading
        ("arithmetic", "Add 4 and 4.\n\n**Final Answer**\n\\[\n\\boxed{8}\n\\]", None, "(8)"),
        ("arithmetic", "Add 4 and 4.\n\n## Final Answer\n$$\n\\boxed{4 + 4}\n$$", None, "(4 + 4)"),
    ],
)
def test_lists_and_display_math_after_the_answer_are_read_as_such(task, text, choices, label):
    """Lists were refused as differing answer lines; display math under a heading had no answer sentence."""
    parsed = parse_teacher_output(task, text, choices=choices)
    assert (parsed.label, parsed.reason) == (label, "")


@pytest.mark.parametrize(
    "text",
    [
        # one line, or a lone number with a period, still counts
        "Add. The answer is (3 + 4).\n\n8.",
        "Add. The answer is (3 + 4).\n8.\nI hope this helps.",
        # blank lines part two answers: no list
        "Add. The answer is (3 + 4).\n\n8\n\n9",
    ],
)
def test_answer_lines_that_are_no_list_still_refuse_a_differing_answer(text):
    parsed = parse_teacher_output("arithmetic", text)
    assert (
        not parsed.parsed and "holding only an answer, which do not all give the same answer" in parsed.reason
    )


_PREMISE = "An old man sleeps on a bench in the park."
_HYPOTHESIS = "The man is running a marathon."
_REASONING = "A man asleep on a bench cannot be running a marathon."


@pytest.mark.parametrize(
    ("text", "rationale"),
    [
        # the reply restates the question, as the prompt shows it, before the reasoning
        (f"Premise: {_PREMISE}\nHypothesis: {_HYPOTHESIS}\n{_REASONING}", _REASONING),
        (f"Premise: {_PREMISE}\nHypothesis: {_HYPOTHESIS}\nAnswer: {_REASONING}", _REASONING),
        (f"Q: Premise: {_PREMISE}\nHypothesis: {_HYPOTHESIS}\nA: {_REASONING}", _REASONING),
        (f"\n Premise: {_PREMISE}\n\nHypothesis: {_HYPOTHESIS}\n\n{_REASONING}", _REASONING),
        (f"**Premise:** {_PREMISE}\n**Hypothesis:** {_HYPOTHESIS}\n\n{_REASONING}", _REASONING),
        (f"Premise: {_PREMISE} Hypothesis: {_HYPOTHESIS} Answer: {_REASONING}", _REASONING),
        (f"Q: Premise: {_PREMISE} Hypothesis: {_HYPOTHESIS} A: {_REASONING}", _REASONING),
        # reasoning after the restatement that speaks of the premise keeps it
        (
            f"Premise: {_PREMISE}\nHypothesis: {_HYPOTHESIS}\nThe premise says he sleeps. {_REASONING}",
            f"The premise says he sleeps. {_REASONING}",
        ),
        # reasoning that merely mentions the premise or the hypothesis is no restatement
        (f"The premise says he sleeps. {_REASONING}", f"The premise says he sleeps. {_REASONING}"),
        (
            f"In the premise: he sleeps. Hypothesis: he runs. {_REASONING}",
            f"In the premise: he sleeps. Hypothesis: he runs. {_REASONING}",
        ),
    ],
)
def test_an_nli_reply_that_restates_premise_and_hypothesis_parses_to_its_reasoning(text, rationale):
    """Such replies were refused: the ANLI rule keeps only the text before the first "Premise:"."""
    answer = parse_teacher_output("nli", f"{text} So the answer is contradiction.\n\nPremise: next example")
    assert (answer.rationale, answer.label, answer.reason) == (rationale, "contradiction", "")


@pytest.mark.parametrize(
    "text",
    [
        # nothing but the restatement before the answer sentence: no reasoning to keep
        f"Premise: {_PREMISE}\nHypothesis: {_HYPOTHESIS} So the answer is contradiction.",
        f"Premise: {_PREMISE}\nHypothesis: {_HYPOTHESIS}\nAnswer: So the answer is contradiction.",
        # one line with no answer marker: where the hypothesis ends is unknown, so no reasoning is guessed
        f"Premise: {_PREMISE} Hypothesis: {_HYPOTHESIS} {_REASONING} So the answer is contradiction.",
    ],
)
def test_a_restated_question_is_never_taken_for_the_rationale(text):
    answer = parse_teacher_output("nli", text)
    assert not answer.parsed and "restates the premise and hypothesis" in answer.reason


@pytest.mark.parametrize(
    ("task", "text", "rationale", "label"),
    [
        (
            "generic",
            "A: The man is sleeping so he cannot run. So the answer is no.",
            "The man is sleeping so he cannot run.",
            "no",
        ),
        (
            "nli",
            "A: The man is sleeping so he cannot run. So the answer is contradiction.",
            "The man is sleeping so he cannot run.",
            "contradiction",
        ),
        (
            "nli",
            "  A:\n  The man sleeps. So the answer is contradiction.",
            "The man sleeps.",
            "contradiction",
        ),
        (
            "nli",
            "Answer: The man sleeps. So the answer is contradiction.",
            "The man sleeps.",
            "contradiction",
        ),
        ("generic", "A: Mercury is first. So the answer is Mercury.", "Mercury is first.", "mercury"),
        ("generic", "**A:** Mercury is first. So the answer is Mercury.", "Mercury is first.", "mercury"),
        (
            "multiple_choice",
            "A: Hammers hit nails. So the answer is (c) hammer.",
            "Hammers hit nails.",
            "hammer",
        ),
        ("arithmetic", "\nA: 7 * 6 is 42. The answer is (7 * 6).", "7 * 6 is 42.", "(7 * 6)"),
        # an "A:" that is not the reply's opening marker stays
        ("arithmetic", "Box A: 7 * 6 is 42. The answer is (7 * 6).", "Box A: 7 * 6 is 42.", "(7 * 6)"),
        (
            "generic",
            "Mercury is first. A: yes. So the answer is Mercury.",
            "Mercury is first. A: yes.",
            "mercury",
        ),
        ("generic", "A:B is 2:1 here. So the answer is 2:1.", "A:B is 2:1 here.", "2:1"),
        (
            "generic",
            "Answer: Mercury is first. So the answer is Mercury.",
            "Answer: Mercury is first.",
            "mercury",
        ),
    ],
)
def test_a_leading_answer_marker_is_not_part_of_the_rationale(task, text, rationale, label):
    """The few-shot prompts' answer marker ("A:", and nli's "Answer:") opening a reply stayed in its rationale."""
    answer = parse_teacher_output(task, text)
    assert (answer.rationale, answer.label, answer.reason) == (rationale, label, "")


# ------------------------------------------------------------------------ the local teacher's generation

_CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} : {{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant :{% endif %}"
)
# what the bigram teacher writes after the assistant header: an answer, the end of its turn, then a
# made-up next user turn (as chat models do when nothing stops them at the end of their turn)
_ANSWER_THEN_NEXT_TURN = {
    ":": "he",
    "he": "has",
    "has": "3",
    "3": "apples",
    "apples": "?",
    "?": "so",
    "so": "the",
    "the": "answer",
    "answer": "is",
    "is": "4",
    "4": ".",
    ".": "<|im_end|>",
    "<|im_end|>": "<|im_start|>",
    "<|im_start|>": "user",
    "user": ":",
    "</s>": "he",  # a raw prompt ends with the word tokenizer's </s>
}
_ANSWER = "he has 3 apples ? so the answer is 4 ."


def _bigram_teacher(successors: dict[str, str]):
    """A Llama whose greedy next token is ``successors[last token]``: one-hot embeddings, attention and MLP
    outputs zeroed, the output projection a successor table. Its generation config stops at ``</s>`` only,
    and the tokenizer has ChatML-style ``<|im_start|>``/``<|im_end|>`` special tokens and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_cotmi.teacher.tiny import _WORDS
    from hf_cotmi.tiny import build_word_tokenizer

    tokenizer = build_word_tokenizer([_WORDS])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = _CHATML_TEMPLATE
    vocab = len(tokenizer)
    width = vocab + vocab % 2
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    ids = tokenizer.convert_tokens_to_ids
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :vocab] = torch.eye(vocab)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for token, successor in successors.items():
            model.lm_head.weight[ids(successor), ids(token)] = 1.0
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def _reference_text(model, tokenizer, text: str, stop_tokens: list[str], *, raw: bool) -> str:
    """``model.generate`` on one unpadded prompt, greedy, stopping at ``stop_tokens``; the new text."""
    encoded = tokenizer(text, return_tensors="pt", add_special_tokens=raw)
    output = model.generate(
        **encoded,
        max_new_tokens=20,
        do_sample=False,
        eos_token_id=tokenizer.convert_tokens_to_ids(stop_tokens),
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)


def test_a_local_chat_teacher_stops_at_its_templates_end_of_turn_token():
    from hf_cotmi.teacher import GenerationRequest, LocalCausalBackend

    model, tokenizer = _bigram_teacher(_ANSWER_THEN_NEXT_TURN)
    backend = LocalCausalBackend("bigram", max_new_tokens=20, device="cpu", model=model, tokenizer=tokenizer)
    prompts = ["how many ?", "he has 3 apples and she has 4 . how many ?"]
    texts = backend.generate([GenerationRequest(i, 0, p, None) for i, p in enumerate(prompts)])
    reference = _reference_text(
        model, tokenizer, backend._text(prompts[0]), ["</s>", "<|im_end|>"], raw=False
    )
    assert reference == _ANSWER
    # not 'he has 3 apples ? so the answer is 4 . user : he has ...' (a next turn, up to max_new_tokens),
    # which has no single answer sentence and went to the rejects file
    assert texts == [reference, reference]
    assert parse_teacher_output("generic", texts[0]).label == "4"


def test_a_local_raw_teacher_stops_at_its_tokenizers_eos_too():
    from hf_cotmi.teacher import GenerationRequest, LocalCausalBackend

    model, tokenizer = _bigram_teacher(_ANSWER_THEN_NEXT_TURN)
    tokenizer.eos_token = "<|im_end|>"  # the generation config still stops at </s> only
    backend = LocalCausalBackend(
        "bigram", max_new_tokens=20, device="cpu", model=model, tokenizer=tokenizer, use_chat_template=False
    )
    [text] = backend.generate([GenerationRequest(0, 0, "Q: how many ?\nA:", None)])
    assert text == _reference_text(model, tokenizer, "Q: how many ?\nA:", ["</s>", "<|im_end|>"], raw=True)
    assert text == _ANSWER


def _tiny_gpt2_teacher(max_positions: int):
    from hf_cotmi.teacher.tiny import _WORDS, TINY_CHAT_TEMPLATE
    from hf_cotmi.tiny import build_tiny_causal_lm, build_word_tokenizer

    tokenizer = build_word_tokenizer([_WORDS])
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return build_tiny_causal_lm(tokenizer, "gpt2", max_positions=max_positions), tokenizer


def test_a_prompt_past_the_local_teachers_context_is_refused_naming_the_record():
    from hf_cotmi.teacher import GenerationRequest, LocalCausalBackend, TeacherRequestError

    model, tokenizer = _tiny_gpt2_teacher(max_positions=32)
    backend = LocalCausalBackend("gpt2-32", max_new_tokens=8, device="cpu", model=model, tokenizer=tokenizer)
    short = "how many ?"  # 'user: how many ?\nassistant:': 7 tokens
    at_the_limit = "1 + " * 8 + "1 ?"  # 22 tokens in its chat prompt: with 8 new tokens, 30 of 32 positions
    fits = backend.generate(
        [GenerationRequest(0, 0, short, None), GenerationRequest(1, 0, at_the_limit, None)]
    )
    assert len(fits) == 2
    longer = "1 + " * 12 + "1 ?"  # 30 tokens: fits alone, but not with 8 new ones (an IndexError in GPT-2)
    with pytest.raises(TeacherRequestError, match=r"record 5 \(sample 1\).*30 tokens.*context of 32"):
        backend.generate([GenerationRequest(4, 0, short, None), GenerationRequest(5, 1, longer, None)])
    with pytest.raises(ValueError, match="max_new_tokens=32 leaves no room"):
        LocalCausalBackend("gpt2-32", max_new_tokens=32, device="cpu", model=model, tokenizer=tokenizer)


def test_a_seq2seq_teacher_is_refused_with_what_the_local_backend_takes(tmp_path):
    from hf_cotmi.teacher import LocalCausalBackend
    from hf_cotmi.teacher.tiny import _WORDS
    from hf_cotmi.tiny import build_tiny_seq2seq, build_word_tokenizer

    tokenizer = build_word_tokenizer([_WORDS])
    build_tiny_seq2seq(tokenizer).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    with pytest.raises(ValueError, match=r"encoder-decoder \(t5\).*decoder-only"):
        LocalCausalBackend(str(tmp_path / "t5"), device="cpu")
