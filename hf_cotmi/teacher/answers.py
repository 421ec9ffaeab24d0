"""The teacher's answer: parsed out of its text with the DSS rules, normalised per task, voted on.

Parsing reuses :mod:`hf_cotmi.data.parsing` (the rules Distilling Step-by-Step applied to PaLM's outputs),
so a rationale generated here is cut exactly as the released ones were. Each built-in task names the
parser whose answer sentence its shipped prompt teaches:

============== =========================================== ===================================
task           answer sentence                             DSS rule
============== =========================================== ===================================
nli            ``So the answer is neutral.``               ANLI (``parse_anli_output``)
multiple_choice ``So the answer is (c) wooded area.``      CQA (``parse_cqa_output``)
arithmetic     ``The answer is (84 / 2).``                 SVAMP (``parse_svamp_output``)
generic        ``So the answer is <answer>.``              ANLI
============== =========================================== ===================================

For multiple_choice, arithmetic and generic the text is cut first at a ``Q:`` that starts a line (an invented
next example); a ``Q:`` inside the reasoning ("FAQ:", "IQ:") stays, though the CQA and SVAMP rules, which
parse the PaLM release as DSS did and are not changed, would cut at any ``Q:``.

Before the rule runs, a chat model's phrasing is brought to the prompts' (markdown bold around text removed,
not ``**`` in ``(2**3)``; a heading on a line of its own, ``Final Answer``, ``**Answer**`` or ``## Final
answer``, whose next non-blank line is an answer of the task and nothing else, as ``neutral``, ``(b)`` or
``\\boxed{8}``, maybe as display math on lines of its own (``\\[``, ``\\boxed{8}``, ``\\]``; for generic, one
sentence ending the text), written as the label ``Final Answer:`` it stands for, :func:`_answer_under_heading`,
and read as that label is; for multiple_choice, with the record's choices, a choice's text alone after such a
label (``Final Answer: refrigerator``) gets the choice's letter, ``(b) refrigerator``
(:func:`_lettered_labelled_choice`), and a capital letter ending the label's line (``Final Answer: B``, ``The
final answer is: $\\boxed{B}$``) is a choice's label as ``B.`` is; ``so, the
answer is`` written ``So the answer is``, as is, for nli, arithmetic and generic, ``(so) the final answer is``
where an answer of the task follows it (:func:`_final_answer_sentence`: ``The final answer is: $\\boxed{8}$``,
``Therefore, the final answer is neutral.``; see below), and, for multiple_choice where a choice's label
follows, ``the correct answer is``, ``the final answer is``, ``the answer is`` and, opening a line,
``Answer:`` and ``Final answer:``, a colon after it dropped; a variant is rewritten only when the text lacks
the prompts' phrase, so that prose such as "the answer is not obvious" never becomes a second answer
sentence; for a text holding two, see below), a multiple_choice
reply without an answer sentence whose last line is a label and its choice (``B. Refrigerator``) and no other
line opening with a label is given one (:func:`_with_final_choice_line`), an nli reply that opens by restating
the question (``Premise: ...`` then ``Hypothesis: ...``, maybe after ``Q:``) loses that restatement, a
few-shot answer marker opening the reply (``A:``; for nli also ``Answer:``; not a multiple_choice reply's
``A:`` that labels option A, as a line opening with ``B:`` before any next ``Q:`` shows) is removed, the text
is cut after the line that holds the answer sentence and at that sentence's end, a period or an exclamation
mark followed by whitespace or ending the line, dropping a remark after it on the same line (``So the answer
is neutral. I hope this helps!``, ``So the answer is neutral!``; :func:`_answer_end`: for multiple_choice a
period inside the record's choice that the answer names, as in ``(c) St. Louis``, is no such end, nor is a
choice's own final mark, ``good luck!``; for arithmetic a period between digits, ``39. 0``; for generic, whose
answer may be any words, only one that ends the line or that a word opening a remark follows, ``I``, ``Let``,
``Hope``, ``It``, ``Wait``, ...: no list of abbreviations can be complete, so ``Sen. Warren``, ``Yahoo! Inc``
and ``1600 Pennsylvania Ave. NW`` stay whole, as DSS read the line, while ``vitamin C. It helps.`` gives
``vitamin c``). A remark so dropped that may correct the answer refuses it, never dropped
(:func:`_correcting_remark`: a teacher correcting itself on the answer's line, ``So the answer is neutral!
Actually no, contradiction.``): one holding a word of correction (``wait``, ``actually``, ``oops``, ``I
mean``, ``no,``), for nli another label, for arithmetic an expression or number of another value, for generic
a negation or an answer phrase (and for a generic answer kept whole, the same in its words after a sentence's
end); for multiple_choice one naming another choice, see below. A remark giving no other answer (``I hope
this helps!``) is dropped. A final period is added when the teacher left it
out (the ANLI rule drops the last character, which DSS knew to be a period). After the SVAMP rule, whose label
is only the parenthesised part of the answer, an arithmetic answer such as ``(50 - 12) / 2`` is kept whole, as
``((50 - 12) / 2)``, when the whole is an expression. After the CQA rule, which reads the text after the first
``(x)`` and ignores the letter, the letter is checked against that text and the record's choices
(:func:`_by_choice_letter`): an answer whose letter and text name different choices, or that names two
letters, is refused, never read as one of them; a letter alone, or after words that are no choice (``option
(b)``), gives the letter's choice, and words that start with a choice other than the letter's (``oven, not
(b)``) are refused. A label ``B:``, ``B.`` or ``B)`` opening the answer is a letter too (not where a choice
starts there, as ``J. K. Rowling`` does), whose text must be its choice. An answer that names a second choice,
by its text (a whole word, not inside a longer choice) or its letter (``iron or vitamin (c)``, ``(d) iron or
vitamin``), is refused (:func:`_choices_named`), never read as either; so is an answer whose line holds a
remark after the answer sentence that names another choice (``(d) iron. Or vitamin (c).``: the teacher hedges;
a remark naming no other choice is dropped), and one that negates (``not (a) oven``, ``isn't (a)``, ``(a)
oven is not it``: :func:`_negation`; ``not`` inside a choice's text, as in ``not lie``, negates nothing). With
the record's choices a label that is none of them is refused (``(b) fridge``, ``(e) field`` where (e) is
``feild``), but the letter's choice followed by more words (``(b) refrigerator because it is cold``) gives
that choice, the words checked as above (:func:`_refused_choice`). An answer that is, or starts with, a
choice holding a letter (``vitamin (c)``) has only a letter after that choice as its own. A separator between
the letter and the choice (``(b) - refrigerator``, ``(b) – ...``, ``(b) : ...``: dashes or colons followed by
whitespace) is dropped where what is left is a choice; a minus sign (``-5``) stays, and ``(a) - 5`` is ``-5``
where (a) is ``-5``. An answer split from a list of the choices (:func:`_options_listed_after_answer`) is
refused too. A line opening with a label (``(a) ...``, ``B: ...``, ``B. ...``, ``B) ...``) is a bare choice
when its text after the label (a final period and a separator aside) is exactly one of the choices. The answer
is split from a list when

- ``So the answer is`` alone ends its line and a label line follows it (blank lines aside);
- ``So the answer is:`` ends its line and the label lines after it (blank lines aside, up to the first line
  that opens with no label) name two or more letters, unless the first of them is a bare choice and another
  is not: ``(b) refrigerator`` then ``(a) oven: heats food`` is the answer, then why the others are wrong;
- the answer is only a label (``So the answer is (b):``) and the label lines directly after it name two or
  more letters and are all bare choices.

So lines labelling choices after an answer with its text (a "why not the others" section) are no such list.

As the cut after the answer line would hide a second answer on a later line (a teacher correcting itself: ``So
the answer is (a) home.`` then ``Wait, the correct answer is (b) car.``), every answer sentence the text holds
where the rule reads it (before a next example; for nli and generic before ``Premise:``, for multiple_choice
and arithmetic before a ``Q:`` after the first answer) is counted first, on one line or on several
(:func:`_answer_spans`): the prompt's phrase, a variant rewritten as it, and, beside the prompt's phrase, a
variant in any case followed by an answer of the task (an nli label, maybe after one adverb such as
``actually``, which is dropped; a choice's label; an expression or number, a LaTeX ``\\boxed{...}`` holding
one read as it in parentheses (for the other tasks every ``\\boxed{...}`` is read as its content, a
``\\text{...}`` in it as its text; LaTeX math delimiters around an answer after an answer phrase, ``$\\boxed{8}$``
or ``\\(8\\)``, are dropped: :func:`_unboxed`); for generic any words but a negation, and after an
``Answer:`` label only one sentence on its line): ``So the answer is``, ``(so) the correct answer is``,
``the final answer is``, ``the answer is`` and, opening a line, ``Answer:`` and ``Final answer:``, for
every task (``Wait, so the answer is
actually contradiction.``, ``Final answer: (a)``, ``Final Answer: \\boxed{8}``); but for ``So, the answer is`` (and
arithmetic's ``the answer is``) these are rewritten as the prompt's phrase, where the text lacks it, for
multiple_choice only, and so is ``Final answer:`` for every task (an e-SNLI ``Answer: neutral`` line stays no
nli answer sentence), and ``(so) the final answer is`` for nli, arithmetic and generic, before the others
where the text holds it, and only where an answer of the task follows it: an nli label, maybe after one
adverb; for arithmetic a number or an expression with a value, maybe followed by one unit word or a clause
after a comma, then the sentence's end (``$\\boxed{8}$`` read as ``(8)``; a number without parentheses, ``The
final answer is 8.``, the SVAMP rule then does not read, as after ``The answer is``; ``4 + 4 = 8`` and ``8
because ...`` are prose); for generic one sentence that opens with no negation and ends its line, on the
phrase's line or, after a colon, a later one, which is the last line where answers are read (``The final
answer is Paris.`` then ``I hope this helps!`` stays unread); a ``Final answer:`` label opening its line is
part of it (``Final Answer: The final answer is $\\boxed{8}$.``). A variant followed
by anything else stays prose, as does, for arithmetic, a variant whose answer has no value
(:func:`_prose_variant`); a negation (``The final answer is not 8``) is none. Each answer sentence is parsed
on its own (:func:`_given_answer`), and the text is refused, naming each sentence and what it gives, unless
all give the same answer (an nli sentence negating the answer, ``the answer is actually not entailment``, is a
correction too: :func:`_negated_nli_answer`; for arithmetic the same value, ``(3 + 4)`` and ``7``; a number
without parentheses, which the SVAMP rule does not read, only confirms another sentence's value). Then that
answer is the first the rule reads, and the rationale is the longer of the text before the first sentence
and (the answer given first, ``Answer: (b)`` then the reasoning and ``So the answer is (b).``) the text
between the first sentence's line and the next sentence, without a heading such as ``Explanation:`` opening
it (:func:`_reasoning_of_several`). A line after the last answer sentence's that holds only an answer of the task
(``neutral``, ``(a)``, ``B. Oven`` or ``oven`` with the record's choices, ``7``; not for generic, whose answer
may be any words; a bullet, an arrow or single emphasis or code marks around it aside, ``- neutral``,
``*Neutral*``; not lines that list two or more different answers one after another, ``Options:`` then
``entailment``, ``neutral``; not ``1.`` and ``2.`` numbering the items of a list; not lines of a
multiple_choice reply that list the choices after its answer: see :func:`_answer_lines`) is such an answer
too: one that gives the same answer changes nothing, and one that
gives another refuses the text, naming each sentence and that line (:func:`_disagreeing_answer_line`); a line
before an answer sentence, in the reasoning, is never read so.

Everything here is a pure function of strings.

Examples:
    >>> answer = parse_teacher_output("nli", "A man is a person. So the answer is Entailment.")
    >>> answer.rationale, answer.label
    ('A man is a person.', 'entailment')
    >>> vote_answers("arithmetic", ["(2 + 2)", None, "(8 / 2)", "(1 + 1)"]).winner
    '(2 + 2)'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..data.dss import NLI_LABELS
from ..data.parsing import PalmOutput, parse_anli_output, parse_cqa_output, parse_svamp_output
from ..metrics import normalize_text, safe_eval_arithmetic

__all__ = [
    "TASKS",
    "TeacherAnswer",
    "Vote",
    "parse_teacher_output",
    "normalise_answer",
    "answer_key",
    "answers_agree",
    "vote_answers",
    "answers_read_at_end",
]

TASKS: tuple[str, ...] = ("nli", "multiple_choice", "arithmetic", "generic")
"""The built-in tasks: each has a shipped prompt, an answer sentence, a DSS parsing rule and a normalisation."""

# task -> the phrase that opens its answer sentence (what the shipped prompts teach)
_ANSWER_PHRASE = {
    "nli": "So the answer is",
    "multiple_choice": "So the answer is",
    "arithmetic": "The answer is",
    "generic": "So the answer is",
}


@dataclass(frozen=True)
class TeacherAnswer:
    """One teacher output, parsed.

    Attributes:
        rationale: the reasoning before the answer sentence ("" when unparsable).
        label: the normalised answer ("" when unparsable).
        reason: why the output did not parse ("" when it did).

    Examples:
        >>> TeacherAnswer("Because.", "yes", "").parsed
        True
    """

    rationale: str
    label: str
    reason: str

    @property
    def parsed(self) -> bool:
        """True when an answer was found and normalised."""
        return bool(self.label)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not a built-in task; expected one of {', '.join(TASKS)}")


def _check_choices(task: str, choices: Sequence[str] | None) -> None:
    if choices is None:
        return
    if isinstance(choices, str):
        raise TypeError(f"choices must be a sequence of choice texts, got one string {choices!r}")
    if task != "multiple_choice":
        raise ValueError(f"choices are read by the multiple_choice task only; task={task!r} takes none")


# where an answer sentence ends on its line: a period or an exclamation mark followed by whitespace or the line's
# end ("So the answer is neutral! Let me know ...", "So the answer is neutral!"); a question mark, a hedge, ends
# none. For arithmetic not a period between digits, which a subword decoder may write "39. 0" (safe_eval_arithmetic
# reads it as 39.0)
_SENTENCE_END = re.compile(r"[.!](?=\s|\Z)")
_EXPRESSION_SENTENCE_END = re.compile(r"[.!](?=\s|\Z)(?!(?<=\d\.)[ \t]+\d)")
# the words that open a remark after a generic answer, a new sentence about it rather than more of the answer ("I
# hope this helps!", "Let me know ...", "It is the capital."), or one that may correct it ("Wait, no, ...",
# "Actually, ..."), which _correcting_remark then refuses; capitalised, each a whole word
_REMARK_OPENERS = (
    r"I|I['’](?:m|d|ve|ll)|Let|Let['’]s|Hope|Hopefully|Feel|Note|This|That|These|Those|It|It['’]s|Its|If|"
    r"Please|Thanks|Thank|Glad|Happy|Enjoy|You|Your|Any|Do|Does|Is|Are|Would|Here|Here['’]s|He|She|They|We|"
    r"There|Also|Because|Since|Which|Wait|Actually|No|Oops|Sorry|Correction|Hmm+|Or|But|However|Rather|Instead|"
    r"Alternatively|Maybe|Perhaps|Not"
)
# for generic, whose answer may be any words ("Sen. Warren", "Yahoo! Inc.", "1600 Pennsylvania Ave. NW"): a period
# or an exclamation mark that ends its line, or that a remark opener follows (_REMARK_OPENERS); at any other one
# the answer goes on, so that an abbreviation, whichever it is, never cuts it short
_GENERIC_SENTENCE_END = re.compile(rf"[.!](?=[ \t]*\Z|[ \t]+(?:{_REMARK_OPENERS})(?![\w'’.-]))")


def _answer_end(task: str, line: str, after: int, choices: Sequence[str] = ()) -> tuple[int, int] | None:
    """Where the answer that starts at ``line[after:]`` (the answer sentence's line, after the answer phrase)
    ends, and where the remark after its sentence begins: the index of the period or exclamation mark that
    closes the sentence and the index after it, or None when its line holds no end (:data:`_SENTENCE_END`).

    - multiple_choice: a period inside the one of ``choices`` that the answer starts with (``(c) St. Louis``)
      ends nothing, and a choice's own final period or exclamation mark (``(b) good luck!``) stays in it;
    - arithmetic: a period between digits (``39. 0``) ends nothing;
    - generic, whose answer may be any words: only a period or exclamation mark that ends the line, or that a
      word opening a remark follows (:data:`_GENERIC_SENTENCE_END`: ``I``, ``Let``, ``Hope``, ``It``,
      ``Wait``, ...), ends it. No list of abbreviations can be complete, so at any other one the answer goes
      on (``Sen. Warren``, ``Yahoo! Inc``), the whole line as DSS read it, rather than being cut short.

    Examples:
        >>> line = "So the answer is Sen. Warren. I hope this helps!"
        >>> end, remark = _answer_end("generic", line, 16)
        >>> line[:end], line[remark:]
        ('So the answer is Sen. Warren', ' I hope this helps!')
        >>> _answer_end("generic", "So the answer is Yahoo! Inc", 16) is None
        True
        >>> _answer_end("nli", "So the answer is neutral!", 16)
        (24, 25)
    """
    if task == "multiple_choice":
        span = _named_choice_span(line, after, choices)
        match = _SENTENCE_END.search(line, _last_of_named_choice(line, after, choices))
        if match is not None and span is not None and match.start() < span[1]:
            return span[1], match.end()  # the choice's own final character: "(b) good luck!"
    elif task == "generic":
        match = _GENERIC_SENTENCE_END.search(line, after)
    else:
        match = (_EXPRESSION_SENTENCE_END if task == "arithmetic" else _SENTENCE_END).search(line, after)
    return None if match is None else (match.start(), match.end())


def _cut_answer_line(
    text: str, phrase: str, *, task: str = "", choices: Sequence[str] = ()
) -> tuple[str, str]:
    """``text`` cut after the line holding the first ``phrase``, that line ending with a period, and the remark
    that a cut at the answer sentence's end (with ``task``: :func:`_answer_end`) dropped from that line ("" for
    none), stripped. A line that holds ``phrase`` again is left whole, for the DSS rule to refuse as
    ambiguous.

    Examples:
        >>> _cut_answer_line("Hot. So the answer is Mercury! Ask again.\\nQ: x", "So the answer is", task="generic")
        ('Hot. So the answer is Mercury! Ask again.', '')
        >>> _cut_answer_line("Hot. So the answer is neutral! I hope it helps.", "So the answer is", task="nli")
        ('Hot. So the answer is neutral.', 'I hope it helps.')
    """
    start = text.find(phrase)
    if start < 0:
        return text, ""
    end = text.find("\n", start)
    head = (text if end < 0 else text[:end]).rstrip()
    after = start + len(phrase)
    remark = ""
    if task and phrase not in head[after:]:
        stop = _answer_end(task, head, after, choices)
        if stop is not None:
            # a period ends the sentence, whatever closed it; not after a choice's own final character
            closing = "." if stop[0] < stop[1] else ""
            head, remark = head[: stop[0]].rstrip() + closing, head[stop[1] :].strip()
    return (head if head.endswith(".") else head + "."), remark


def _close_answer_line(text: str, phrase: str, *, task: str = "", choices: Sequence[str] = ()) -> str:
    """Cut ``text`` after the line holding the first ``phrase`` and make sure that line ends with a period.

    With ``task``, the line is cut at the answer sentence's end too (:func:`_answer_end`), so that a chat
    model's remark after it (``So the answer is (b) sea. Let me know ...``, ``So the answer is Paris. I hope
    this helps!``) is not part of the answer (:func:`_correcting_remark` checks it); the sentence then ends
    with a period, whatever closed it. A line that holds ``phrase`` again is left whole, for the DSS rule to
    refuse as ambiguous.

    Examples:
        >>> _close_answer_line("Hot. So the answer is Mercury. It is hot.\\nQ: x", "So the answer is", task="generic")
        'Hot. So the answer is Mercury.'
    """
    return _cut_answer_line(text, phrase, task=task, choices=choices)[0]


# what may open the answer before the choice's text: its "(x)" letter, maybe with a colon directly after it
_CHOICE_OPENING = re.compile(r"\s*(?:\(.\):?\s*)?")
# or a label without parentheses: "B:", "B.", "B)", followed by whitespace or the end
_OPENING_LETTER = re.compile(r"\s*(?P<letter>[A-Za-z])[:.)](?:\s+|\Z)")
# a separator between a letter and its choice ("(b) - refrigerator", "(b) – refrigerator", "(b) : ..."): dashes
# or colons followed by whitespace, so that a minus sign ("-5") is none
_SEPARATOR = re.compile(r"[-–—:]+\s+")


def _named_choice_span(line: str, start: int, choices: Sequence[str]) -> tuple[int, int] | None:
    """Where in ``line`` the longest of ``choices`` that the answer at ``line[start:]`` (after its ``(x)``
    letter and a colon directly after it) starts with, in any case, begins and ends; None when it starts
    with none. A choice after a separator (``- refrigerator``), or after a label such as ``B.`` (``B.
    Refrigerator``), counts where none starts before it (as ``J. K. Rowling`` does).

    Examples:
        >>> _named_choice_span(" (c) vitamin (a).", 0, ["iron", "vitamin (a)"])
        (5, 16)
        >>> _named_choice_span(" (b) - St. Louis.", 0, ["Boston", "St. Louis"])
        (7, 16)
        >>> _named_choice_span(" B. St. Louis.", 0, ["Boston", "St. Louis"])
        (4, 13)
    """
    bases = [_CHOICE_OPENING.match(line, start).end()]  # type: ignore[union-attr] - the pattern matches ""
    label = _OPENING_LETTER.match(line, start)
    if label is not None:
        bases.append(label.end())
    for base in bases:
        separator = _SEPARATOR.match(line, base)
        for at in (base, *([separator.end()] if separator else [])):
            named = [
                choice
                for choice in (str(choice).strip() for choice in choices)
                if choice and line[at : at + len(choice)].casefold() == choice.casefold()
            ]
            if named:
                return at, at + len(max(named, key=len))
    return None


def _last_of_named_choice(line: str, start: int, choices: Sequence[str]) -> int:
    """The index of the last character of the longest of ``choices`` that the answer at ``line[start:]``
    (after its ``(x)`` letter) starts with, in any case; when it starts with none, where a label opening it
    ends (the period of ``B. Fridge.`` ends no sentence), or ``start``."""
    span = _named_choice_span(line, start, choices)
    if span is None:
        label = _OPENING_LETTER.match(line, start)
        return start if label is None else label.end()
    return span[1] - 1


_SO_THE_ANSWER_IS = r"\bso,?\s+the\s+answer\s+is\b"

# words that negate an answer ("not", "never", ...): _NEGATION and _ANSWER_AHEAD["generic"] read them
_NEGATING_WORDS = r"not|never|neither|nor|none|cannot"

# an adverb that a teacher may put between the answer phrase and an nli label ("so the answer is actually
# contradiction"): _ANSWER_AHEAD["nli"] passes over one, and _plain drops it after the prompt's phrase
_NLI_ADVERB = r"(?:actually|really|definitely|clearly|indeed|certainly|probably|likely|still|instead)"

# what follows a variant of the answer phrase, maybe after a colon, where it answers: an answer of the task. A
# variant so followed is an answer sentence even beside the prompt's own phrase (_answer_spans), so that a
# teacher correcting itself in other words is seen; one followed by anything else ("the answer is not obvious")
# is prose. A variant other than "So, the answer is" (and for arithmetic "the answer is") is rewritten as the
# prompt's phrase for multiple_choice only, and only when so followed
_ANSWER_AHEAD = {
    # one of the nli labels, a whole word, in any case, maybe after one adverb ("actually contradiction")
    "nli": rf"(?=\s*:?\s*(?:{_NLI_ADVERB}\s+)?(?:{'|'.join(NLI_LABELS)})\b)",
    # a choice's label: "(b)", "B.", "B:", "B)", or a capital letter ending its line ("Final Answer: B")
    "multiple_choice": r"(?=\s*:?\s*(?:\([a-z]\)|[a-z][.:)](?:\s|$)|(?-i:[A-Z])[ \t]*$))",
    # an expression or a number: "(5 + 4)", "9", "-3"
    "arithmetic": r"(?=\s*:?\s*-?\s*[(\d])",
    # any text but a word that negates ("so the answer is not Rome")
    "generic": rf"(?=\s*:?\s*\S)(?!\s*:?\s*(?:{_NEGATING_WORDS})\b)",
}

# what a chat model writes for the answer phrase besides "So, the answer is", for every task: "(so) the correct
# answer is", "the final answer is", "the answer is" and, opening a line, "Answer:" and "Final answer:"; each is
# an answer sentence only where an answer of the task follows (_ANSWER_AHEAD)
_SENTENCE_VARIANTS = r"\b(?:so,?\s+)?the\s+(?:correct\s+|final\s+)?answer\s+is\b"
_LABEL_VARIANTS = r"^[ \t]*(?:final\s+)?answer(?=\s*:)"
# for generic, whose answer may be any words, an "Answer:" label counts only where the rest of its line is one
# sentence ("Answer: Paris"), not where it opens the reasoning ("Answer: Mercury is first. So the answer is ...")
_ONE_SENTENCE_LINE = r"(?=\s*:[ \t]*(?:(?![.!?][ \t]+\S)[^\n])*$)"


def _answered_variants(task: str) -> re.Pattern[str]:
    """The variants of the answer phrase (:data:`_SENTENCE_VARIANTS`, :data:`_LABEL_VARIANTS`) for ``task``,
    each only where an answer of ``task`` follows (:data:`_ANSWER_AHEAD`).

    Examples:
        >>> [bool(_answered_variants("generic").search(text)) for text in ("Answer: Paris", "Answer: Hm. Paris")]
        [True, False]
    """
    label = _LABEL_VARIANTS + (_ONE_SENTENCE_LINE if task == "generic" else "")
    return re.compile(rf"(?:{_SENTENCE_VARIANTS}|{label}){_ANSWER_AHEAD[task]}", re.IGNORECASE | re.MULTILINE)


def _final_answer_label(task: str) -> re.Pattern[str]:
    """A ``Final answer:`` label opening a line (one written as a heading, ``**Final Answer**`` over the answer,
    is made one by :func:`_answer_under_heading`), where an answer of ``task`` follows it
    (:data:`_ANSWER_AHEAD`; for generic, on a line holding one sentence), in any case.

    Examples:
        >>> label = _final_answer_label("nli")
        >>> bool(label.search("Final Answer:\\n\\nneutral")), bool(label.search("Answer: neutral"))
        (True, False)
    """
    label = r"^[ \t]*final\s+answer(?=\s*:)" + (_ONE_SENTENCE_LINE if task == "generic" else "")
    return re.compile(rf"{label}{_ANSWER_AHEAD[task]}", re.IGNORECASE | re.MULTILINE)


# what must follow "(so) the final answer is" for _final_answer_sentence to read it, besides _ANSWER_AHEAD's
# nli label: for arithmetic a number or an expression with a value (the shape _variant_answer reads: maybe one
# unit word and a clause after a comma, then the sentence's or the line's end; "the final answer is 10 - 3 = 7
# left" and "the final answer is 10 because ..." are prose); for generic, whose answer may be any words, one
# sentence (no negation opening it) ending its line, on the phrase's line or, after a colon, a later one, and
# that line the last where answers are read (only whitespace, a next example's "Q:" line or a "Premise:" after
# it), as the heading over a generic answer must end the text (_answer_under_heading)
_FINAL_ANSWER_AHEAD = {
    "nli": _ANSWER_AHEAD["nli"],
    "arithmetic": (
        r"(?=\s*:?\s*-?[ \t]*[(\d][-+*/().\d \t]*?[ \t]*(?:[A-Za-z]+[ \t]*)?"  # the expression, a unit word
        r"(?:,[ \t](?:(?!\.(?:\s|\Z))[^\n])*)?"  # a clause after a comma
        r"(?:\.(?:\s|\Z)|[ \t]*(?:\n|\Z)))"  # the sentence's or the line's end
    ),
    "generic": (
        rf"(?=(?:[ \t]*:\s*|[ \t]+)(?!(?:{_NEGATING_WORDS})\b)\S(?:(?![.!?][ \t]+\S)[^\n])*"
        r"(?:\s*\Z|[ \t]*\n\s*Q:|\s*Premise:))"
    ),
}


def _final_answer_sentence(task: str) -> re.Pattern[str]:
    """``(so) the final answer is``, as chat models end a reply (``The final answer is: $\\boxed{8}$``,
    ``Therefore, the final answer is neutral.``), in any case, where an answer of ``task`` (nli, arithmetic or
    generic) follows it (:data:`_FINAL_ANSWER_AHEAD`); a ``Final answer:`` label opening its line (``Final
    Answer: The final answer is $8$.``) is part of it, so that the label is neither left in the rationale
    nor a second answer sentence.

    Examples:
        >>> sentence = _final_answer_sentence("arithmetic")
        >>> [bool(sentence.search(text)) for text in ("The final answer is: (8)", "The final answer is 8-1=7")]
        [True, False]
        >>> sentence = _final_answer_sentence("generic")
        >>> [bool(sentence.search(text)) for text in ("The final answer is Rome.", "The final answer is X.\\nY")]
        [True, False]
    """
    label = r"(?:^[ \t]*final\s+answer[ \t]*:[ \t]*)?"
    sentence = r"\b(?:so,?\s+)?the\s+final\s+answer\s+is\b"
    return re.compile(label + sentence + _FINAL_ANSWER_AHEAD[task], re.IGNORECASE | re.MULTILINE)


# the answer sentence as chat models also write it, most specific first. For nli, arithmetic and generic:
# "(so) the final answer is" where an answer of the task follows (_final_answer_sentence: a chat model's
# closing sentence, checked, before the others, which a text's reasoning may hold followed by other words);
# "So, the answer is" in any case, and for arithmetic, whose prompts teach "The answer is", "the answer is" in
# any case; then a "Final answer:" label (_final_answer_label), which names the answer as plainly as the
# prompt's phrase (unlike "Answer:", which the e-SNLI release's lines open with: those stay no answer sentence
# of the nli task). For multiple_choice one pattern holds every variant, so that each one the text holds is an
# answer sentence (_answer_spans counts them): "So, the answer is", and the others (_answered_variants) where a
# choice's label follows
_PHRASE_VARIANTS = {
    "nli": (
        _final_answer_sentence("nli"),
        re.compile(_SO_THE_ANSWER_IS, re.IGNORECASE),
        _final_answer_label("nli"),
    ),
    "generic": (
        _final_answer_sentence("generic"),
        re.compile(_SO_THE_ANSWER_IS, re.IGNORECASE),
        _final_answer_label("generic"),
    ),
    "multiple_choice": (
        re.compile(
            rf"{_SO_THE_ANSWER_IS}|{_answered_variants('multiple_choice').pattern}",
            re.IGNORECASE | re.MULTILINE,
        ),
    ),
    "arithmetic": (
        _final_answer_sentence("arithmetic"),
        re.compile(_SO_THE_ANSWER_IS, re.IGNORECASE),
        re.compile(r"\bthe\s+answer\s+is\b", re.IGNORECASE),
        _final_answer_label("arithmetic"),
    ),
}
# for nli, generic and arithmetic, the other variants (_answered_variants) where an answer of the task follows: answer
# sentences that _answer_spans counts, beside the prompt's phrase or a variant rewritten as it, but that _plain
# does not rewrite (the e-SNLI release's "Answer: neutral" lines stay no answer sentence of the nli task)
_ANSWERED_VARIANTS = {task: (_answered_variants(task),) for task in ("nli", "generic", "arithmetic")}
# _ANSWER_AHEAD of each task, compiled
_ANSWER_FOLLOWS = {
    task: re.compile(ahead, re.IGNORECASE | re.MULTILINE) for task, ahead in _ANSWER_AHEAD.items()
}


# a markdown bold/underline marker ("**", "__") that is an operator, not emphasis: between two characters of an
# expression (letters, digits, parentheses: "(2**3)", "a__b") or with whitespace on both sides ("2 ** 3")
_MARKER_IN_EXPRESSION = re.compile(r"(?<=[\w()])(?:\*\*|__)(?=[\w()])|(?<=\s)(?:\*\*|__)(?=\s)")
_EMPHASIS_MARKER = re.compile(r"\*\*|__")


def _without_emphasis(text: str) -> str:
    """``text`` without markdown bold/underline markers (``**``, ``__``) where they mark emphasis, hugging
    text on one side only (``**Answer:**``, ``**(b) fridge**``); a marker between two characters of an
    expression (``2**3``, ``a__b``) or between whitespace (``2 ** 3``) is an operator and stays.

    Examples:
        >>> _without_emphasis("**Answer:** (b). The answer is (2**3).")
        'Answer: (b). The answer is (2**3).'
    """
    kept = {match.start() for match in _MARKER_IN_EXPRESSION.finditer(text)}
    return _EMPHASIS_MARKER.sub(lambda m: m[0] if m.start() in kept else "", text)


# a LaTeX "\boxed{...}", its content holding at most one level of braces ("\boxed{\text{neutral}}")
_BOXED = re.compile(r"\\boxed\{(?P<inside>(?:[^{}]|\{[^{}]*\})*)\}")
_LATEX_TEXT = re.compile(r"\\text\{(?P<inside>[^{}]*)\}")
# LaTeX math delimiters around the answer after an answer phrase or a variant of it ("The final answer is
# $\boxed{8}$.", "Final Answer: \(8\)"): "$$", "$", "\(" and "\)", "\[" and "\]"; math elsewhere stays
_DELIMITED_ANSWER = re.compile(
    r"(?P<phrase>(?:\bthe\s+(?:correct\s+|final\s+)?answer\s+is|^[ \t]*(?:final\s+)?answer\s*:)[ \t]*:?\s*)"
    r"(?:\$\$(?P<display>[^$]+)\$\$|\$(?P<inline>[^$\n]+)\$|\\\((?P<paren>[^\n]+?)\\\)|\\\[(?P<bracket>.+?)\\\])",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


def _undelimited(text: str) -> str:
    r"""``text`` without LaTeX math delimiters (``$$``, ``$``, ``\\(`` ``\\)``, ``\\[`` ``\\]``) around the
    answer that follows an answer phrase or a variant of it (:data:`_DELIMITED_ANSWER`); math elsewhere, in
    the reasoning, as it is.

    Examples:
        >>> _undelimited("So $3 + 4$ apples. The final answer is $\\boxed{7}$."), _undelimited("Answer: \\(7\\)")
        ('So $3 + 4$ apples. The final answer is \\boxed{7}.', 'Answer: 7')
    """

    def inside(match: re.Match[str]) -> str:
        content = next(match[name] for name in ("display", "inline", "paren", "bracket") if match[name])
        return match["phrase"] + content.strip()

    return _DELIMITED_ANSWER.sub(inside, text)


def _unboxed(task: str, text: str) -> str:
    r"""``text`` with its answer's LaTeX math delimiters removed (:func:`_undelimited`) and each LaTeX
    ``\\boxed{...}`` written as its content: for arithmetic, only one whose content is an expression (by
    :func:`hf_cotmi.metrics.safe_eval_arithmetic`, which evaluates nothing), in parentheses as the prompts
    write an answer; for the other tasks every one, with a ``\\text{...}`` inside it written as its text.

    Examples:
        >>> _unboxed("arithmetic", "Final Answer: \\boxed{3 + 4}"), _unboxed("arithmetic", "\\boxed{(8)} \\boxed{x}")
        ('Final Answer: (3 + 4)', '(8) \\boxed{x}')
        >>> _unboxed("nli", "Final Answer: $\\boxed{\\text{Neutral}}$")
        'Final Answer: Neutral'
    """
    text = _undelimited(text)
    if task != "arithmetic":
        return _BOXED.sub(lambda match: _LATEX_TEXT.sub(r"\g<inside>", match["inside"]).strip(), text)

    def expression(match: re.Match[str]) -> str:
        inside = match["inside"].strip()
        if safe_eval_arithmetic(inside) is None:
            return match[0]
        if inside.startswith("(") and inside.endswith(")") and safe_eval_arithmetic(inside[1:-1]) is not None:
            return inside
        return f"({inside})"

    return _BOXED.sub(expression, text)


# a letter alone on a line, as an answer: "(b)", "(b):", "B", "B:", "B)" (a final period already dropped)
_BARE_LETTER = re.compile(r"\((?P<paren>[A-Za-z])\):?|(?P<bare>[A-Z])[:)]?")


def _bare_answer(task: str, line: str, choices: Sequence[str] = ()) -> str:
    """The answer of ``task`` that ``line`` (markdown bold removed, :func:`_unboxed`) is and nothing else,
    normalised; "" when it is anything else. A final period is no part of it.

    - nli: one of the labels, in any case (``Neutral.``);
    - multiple_choice, only with the record's ``choices``: a choice's letter (``(b)``, ``B:``, ``B)``, ``B``),
      the letter and its own choice (``(b) refrigerator``, ``B. Refrigerator``, ``(b) - refrigerator``), or a
      choice's text (``refrigerator``); without them a letter names nothing;
    - arithmetic: a number or an expression (``7``, ``(3 + 4)``, a ``\\boxed{7}``), with a value;
    - generic: nothing, as any words may be its answer.

    Examples:
        >>> _bare_answer("nli", " Neutral."), _bare_answer("nli", "Neutral statements are rare.")
        ('neutral', '')
        >>> _bare_answer("multiple_choice", "B. Refrigerator", ["oven", "refrigerator"])
        'refrigerator'
        >>> _bare_answer("arithmetic", "(3 + 4)"), _bare_answer("arithmetic", "7 apples")
        ('(3 + 4)', '')
    """
    said = line.strip().removesuffix(".").rstrip()
    if task == "nli":
        return normalise_answer(task, said)
    if task == "arithmetic":
        return normalise_answer(task, said) if said else ""
    if task != "multiple_choice" or not said:
        return ""
    keys = [normalize_text(choice) for choice in choices]
    letter = _BARE_LETTER.fullmatch(said) or _OPTION_LINE.match(said)
    if letter is None:
        return normalize_text(said) if normalize_text(said) in keys else ""
    index = ord((letter["paren"] or letter["bare"]).lower()) - ord("a")
    rest = said[letter.end() :].strip()
    if index >= len(keys) or (rest and normalize_text(_without_separator(rest, keys)) != keys[index]):
        return ""
    return keys[index]


def _read_as_answer(task: str, line: str) -> str:
    r"""``line``, stripped, as an answer after a label reads (:func:`_unboxed`: math delimiters dropped, a LaTeX
    ``\\boxed{...}`` read).

    Examples:
        >>> _read_as_answer("arithmetic", " $\\boxed{4 + 4}$"), _read_as_answer("nli", "$neutral$")
        ('(4 + 4)', 'neutral')
    """
    label = "Answer: "
    return _unboxed(task, label + line.strip()).removeprefix(label)


# a heading on a line of its own that stands for an answer label: "Final Answer", "Answer" (markdown bold already
# removed: "**Final Answer**"), maybe a markdown heading ("## Final answer", "### Answer:")
_ANSWER_HEADING = re.compile(
    r"^[ \t]*(?P<hashes>#{1,6}[ \t]+)?(?P<words>(?:final[ \t]+)?answer)[ \t]*(?P<colon>:?)[ \t]*(?=\n|\Z)",
    re.IGNORECASE | re.MULTILINE,
)
# the next non-blank line after a heading, or display math on lines of its own ("\[", the answer, "\]"; "$$" around it)
_NEXT_LINE = re.compile(
    r"\s*?\n(?P<line>[ \t]*(?:\\\[[ \t]*\n[^\n]*\S[^\n]*\n[ \t]*\\\]|\$\$[ \t]*\n[^\n]*\S[^\n]*\n[ \t]*\$\$)"
    r"[ \t]*(?=\n|\Z)|[^\n]*\S[^\n]*)"
)
# more than one sentence on a line
_SECOND_SENTENCE = re.compile(r"[.!?][ \t]+\S")


def _answer_under_heading(task: str, text: str, choices: Sequence[str] = ()) -> str:
    """``text`` with each answer heading (:data:`_ANSWER_HEADING`: ``Final Answer``, ``**Answer**``, ``##
    Final answer``) whose answer is the next non-blank line written as the label it stands for (``Final
    Answer:``), which is then read as that label is (for every task ``Final answer:``; ``Answer:`` beside the
    prompt's phrase, or for multiple_choice alone). The next line is its answer where it is an answer of
    ``task`` and nothing else (:func:`_bare_answer`), and for generic where it is one sentence and the last
    line the answers are read in (:func:`_where_answers_are_read`). A heading over anything else (``##
    Answer`` then reasoning) labels nothing, and ``text`` is then returned as it is.

    Markdown bold is removed before the headings are looked for (and a LaTeX ``\\boxed{...}``, or math
    delimiters, in the next line read as after a label: :func:`_unboxed`); ``text`` is returned as it is where
    it holds no such heading.

    Examples:
        >>> _answer_under_heading("nli", "No link.\\n\\n**Final Answer**\\n\\nNeutral")
        'No link.\\n\\nFinal Answer:\\n\\nNeutral'
        >>> _answer_under_heading("nli", "## Answer\\nNeutral statements say nothing. So the answer is neutral.")
        '## Answer\\nNeutral statements say nothing. So the answer is neutral.'
    """
    prepared = _without_emphasis(text)
    pieces, last = [], 0
    for heading in _ANSWER_HEADING.finditer(prepared):
        following = _NEXT_LINE.match(prepared, heading.end())
        if (heading["colon"] and not heading["hashes"]) or following is None:
            continue  # already a label, or nothing under it
        line = _read_as_answer(task, following["line"])
        if task == "generic":
            rest = prepared[following.end() :]
            answers = not _SECOND_SENTENCE.search(line) and not _where_answers_are_read(task, rest).strip()
        else:
            answers = bool(_bare_answer(task, line, choices))
        if answers:
            pieces += [prepared[last : heading.start()], f"{heading['words']}:"]
            last = heading.end()
    return text if not pieces else "".join([*pieces, prepared[last:]])


# an answer label opening a line ("Answer:", "Final answer:", maybe written from a heading by _answer_under_heading)
# and the rest of its line or, when that is blank, the next non-blank line
_LABELLED_LINE = re.compile(
    r"^(?P<label>[ \t]*(?:final[ \t]+)?answer[ \t]*:)(?P<gap>[ \t]*(?:\n[ \t]*)*)(?P<line>[^\n]*\S[^\n]*)",
    re.IGNORECASE | re.MULTILINE,
)


def _lettered_labelled_choice(text: str, choices: Sequence[str]) -> str:
    """The multiple-choice ``text`` with the letter of the record's choice put before that choice's text where
    an answer label opening a line (``Answer:``, ``Final answer:``; :data:`_LABELLED_LINE`) answers it with the
    text alone (``Final Answer: refrigerator``, or under the label, as ``**Final Answer**`` then
    ``refrigerator`` is written by :func:`_answer_under_heading`), so that the CQA rule, which reads only an
    answer after a ``(x)`` letter, reads it: ``Final Answer: (b) refrigerator``. The text is as it is (not even
    markdown bold removed) where no label so answers; without ``choices`` there is no letter to put.

    Examples:
        >>> _lettered_labelled_choice("Cold.\\n\\nFinal Answer:\\n\\nRefrigerator.", ["oven", "refrigerator"])
        'Cold.\\n\\nFinal Answer:\\n\\n(b) Refrigerator.'
        >>> _lettered_labelled_choice("Cold.\\nAnswer: a fridge", ["oven", "refrigerator"])
        'Cold.\\nAnswer: a fridge'
    """
    keys = [normalize_text(choice) for choice in choices]
    if not keys:
        return text
    prepared = _without_emphasis(text)

    def lettered(match: re.Match[str]) -> str:
        said = _read_as_answer("multiple_choice", match["line"]).removesuffix(".").rstrip()
        key = normalize_text(said)
        if key not in keys or _OPTION_LINE.match(said) or _BARE_LETTER.fullmatch(said):
            return match[0]
        letter = chr(ord("a") + keys.index(key))
        return f"{match['label']}{match['gap'] or ' '}({letter}) {match['line'].strip()}"

    rewritten = _LABELLED_LINE.sub(lettered, prepared)
    return text if rewritten == prepared else rewritten


def _rewritten_variant(task: str, text: str) -> re.Pattern[str] | None:
    """The variant of ``task``'s answer phrase (:data:`_PHRASE_VARIANTS`) that :func:`_plain` writes as the
    prompt's phrase wherever it occurs in ``text`` (markdown bold removed): the most specific one ``text``
    holds, only when it lacks the prompt's phrase itself; None when it rewrites none.

    Examples:
        >>> so_the_answer_is = _PHRASE_VARIANTS["arithmetic"][1]
        >>> _rewritten_variant("arithmetic", "So, the answer is (3 + 4).") is so_the_answer_is
        True
        >>> text = "so the answer is 7. The final answer is (7)."  # "the final answer is", checked, first
        >>> _rewritten_variant("arithmetic", text) is _PHRASE_VARIANTS["arithmetic"][0]
        True
        >>> _rewritten_variant("nli", "No link. So the answer is neutral. so the answer is clear.") is None
        True
    """
    if _ANSWER_PHRASE[task] in text:
        return None
    return next((variant for variant in _PHRASE_VARIANTS[task] if variant.search(text)), None)


def _plain(text: str, task: str, *, keep_colon: bool = False) -> str:
    """A chat model's output as the DSS rules read it: markdown bold/underline markers (``**``, ``__``)
    removed, the answer sentence's opening written as ``task``'s prompt teaches it, and a colon after it
    dropped (with the whitespace around it, line breaks included) unless ``keep_colon``.

    Only when the text lacks the prompt's phrase itself is a variant rewritten, and only the most specific
    variant it holds (:func:`_rewritten_variant`): "the answer is" in the reasoning, or restating the answer,
    must not become a second answer sentence. multiple_choice has one pattern for all its variants, each
    followed by a choice's label but "So, the answer is": every one the text holds is rewritten. A variant
    that another answer of the task follows beside the prompt's phrase is an answer sentence too, which
    :func:`_answer_spans` counts."""
    phrase = _ANSWER_PHRASE[task]
    text = _unboxed(task, _without_emphasis(text))
    variant = _rewritten_variant(task, text)
    if variant is not None:
        text = variant.sub(phrase, text)
    if task == "nli":  # "So the answer is actually contradiction": the adverb dropped
        text = re.sub(
            rf"({re.escape(phrase)}\s*:?\s*){_NLI_ADVERB}\s+(?=(?:{'|'.join(NLI_LABELS)})\b)",
            r"\1",
            text,
            flags=re.IGNORECASE,
        )
    return text if keep_colon else re.sub(rf"({re.escape(phrase)})\s*:\s*", r"\1 ", text)


_NEXT_QUESTION = re.compile(r"(?:^|\n)\s*Q:")  # an invented next example: "Q:" at a line's start


def _before_next_question(text: str) -> str:
    """``text`` up to a ``Q:`` at a line's start (an invented next example); a ``Q:`` inside a line, as in
    "FAQ:" or "IQ:", is part of the text.

    Examples:
        >>> _before_next_question("The FAQ: page. So the answer is (a) sea.\\n\\nQ: next")
        'The FAQ: page. So the answer is (a) sea.'
    """
    return _NEXT_QUESTION.split(text, maxsplit=1)[0]


def _without_reasoning_questions(parse: Callable[[str], PalmOutput], text: str, phrase: str) -> PalmOutput:
    """``parse(text)`` for a DSS rule that keeps only the text before the first ``Q:`` (CQA, SVAMP), with the
    ``Q:`` before the answer's ``phrase`` kept out of that cut: the rule parses the text from ``phrase`` on,
    and the text before it is the rationale.

    ``text`` has been cut at a next example's ``Q:`` (:func:`_before_next_question`), so such a ``Q:`` is
    in the reasoning ("IQ:", "FAQ:"), not an invented exemplar; one after ``phrase`` is cut as DSS cut it.
    The rule itself, which must parse the PaLM release exactly as DSS did, is not changed.

    Examples:
        >>> _without_reasoning_questions(parse_svamp_output, "IQ: 100 + 20. The answer is (100 + 20).",
        ...                              "The answer is")
        PalmOutput(rationale='IQ: 100 + 20.', label='(100 + 20)')
    """
    start = text.find(phrase)
    if start < 0 or "Q:" not in text[:start]:
        return parse(text)
    # the rule run from the answer sentence on sees no "Q:" of the reasoning; what precedes is the rationale
    return PalmOutput(text[:start].strip(), parse(text[start:]).label)


# a reply that opens by restating the nli question as the prompt shows it: an optional "Q:", "Premise: <one
# line>", then "Hypothesis:" opening the next non-blank line (or later on the premise's line); the hypothesis
# runs to its line's end, or to an answer marker or the answer sentence on that line
_RESTATED_NLI_QUESTION = re.compile(
    r"\A\s*(?:Q:\s*)?Premise:[^\n]*?\s+Hypothesis:(?:(?!\s(?:Answer|A):|So the answer is)[^\n])*"
)


_RESTATEMENT_ONLY = (
    "empty rationale: the reply restates the premise and hypothesis and gives no reasoning after them "
    "(expected on a line of its own, or after 'Answer:' or 'A:', before the answer sentence)"
)


def _without_restated_question(text: str) -> str:
    """An nli reply without the premise and hypothesis it restates at its very start; any other text as it is.

    The ANLI rule keeps only the text before the first ``Premise:`` (a next example), so such a reply would
    be refused. Reasoning that mentions the premise is kept: only a ``Premise:`` opening the reply and
    followed by a ``Hypothesis:`` is a restatement. When the hypothesis shares its line with the reasoning
    and no answer marker parts them, the whole line is the restatement (where the hypothesis ends is not
    known), and the reply is then refused for its empty rationale rather than given a guessed one.

    Examples:
        >>> _without_restated_question("Q: Premise: A man sleeps.\\nHypothesis: He runs.\\nA: He cannot run.")
        '\\nA: He cannot run.'
        >>> _without_restated_question("The premise says he sleeps.")
        'The premise says he sleeps.'
    """
    match = _RESTATED_NLI_QUESTION.match(text)
    return text if match is None else text[match.end() :]


# the few-shot prompts' answer markers: "A:" after each "Q:" (and after a restated nli question), and the
# nli prompt's "Answer:"; one opening a reply is no part of its rationale
_LEADING_ANSWER_MARKER = {
    "nli": re.compile(r"\A\s*(?:Answer|A):(?:\s+|\Z)"),
    "other": re.compile(r"\A\s*A:(?:\s+|\Z)"),
}

# a multiple-choice reply that goes through the options by letter, one a line ("A: ...\nB: ..."): its "A:"
# is option A's
_OPTION_B_LABEL = re.compile(r"^[ \t]*B:(?:\s|$)", re.MULTILINE)


def _without_leading_answer_marker(task: str, text: str) -> str:
    """``text`` without the answer marker (``A:``; for nli also ``Answer:``) and whitespace at its very
    start; a marker elsewhere, or one not followed by whitespace (``A:B is 2:1``), stays. So does a
    multiple-choice reply's ``A:`` when a line of the reply (before a next example's ``Q:``) opens with
    ``B:`` too: the reply labels the options by letter, and its ``A:`` names option A.

    Examples:
        >>> _without_leading_answer_marker("generic", "  A: Mercury is first. Box A: one.")
        'Mercury is first. Box A: one.'
        >>> _without_leading_answer_marker("multiple_choice", "A: an oven heats.\\nB: a fridge cools.")
        'A: an oven heats.\\nB: a fridge cools.'
        >>> _without_leading_answer_marker("multiple_choice", "A: Vitamin B: is in meat.")
        'Vitamin B: is in meat.'
    """
    marker = _LEADING_ANSWER_MARKER["nli" if task == "nli" else "other"]
    if (
        task == "multiple_choice"
        and marker.match(text)
        and _OPTION_B_LABEL.search(_before_next_question(text))
    ):
        return text
    return marker.sub("", text, count=1)


def _dss_parse(task: str, text: str, choices: Sequence[str] = ()) -> tuple[PalmOutput, str]:
    """The DSS rule's output for the teacher's ``text``, and why the answer is refused ("" when it is not).

    Every answer sentence the text holds where the rule reads it is counted (:func:`_answer_spans`): the
    text after the first one's line is cut off, so a second answer on a later line (a teacher correcting
    itself) must be read here, not dropped. A text holding several gives their answer when all give the
    same one, and is refused otherwise (:func:`_one_answer_of_several`). So is a text whose line after the
    last answer sentence holds only another answer (:func:`_answer_lines`, :func:`_disagreeing_answer_line`)."""
    read = _where_answers_are_read(task, text)
    spans = [span for span in _answer_spans(task, read) if not _prose_variant(task, read, span)]
    if len(spans) > 1:
        output, refusal = _one_answer_of_several(task, read, spans, choices)
    else:
        output, refusal = _dss_parse_one(task, text, choices)
    if spans and output.label and not refusal:
        refusal = _disagreeing_answer_line(task, read, spans, output.label, choices)
    if task == "nli" and output.label and not refusal:
        refusal = _negated_nli_answer(read, normalise_answer(task, output.label))
    return (PalmOutput("", ""), refusal) if refusal else (output, refusal)


# an nli answer sentence that negates a label, maybe with an adverb before or after "not" ("But wait, the answer
# is actually not entailment."): the prompt's phrase or a variant of it, in any case
_NEGATED_NLI_ANSWER = re.compile(
    rf"(?:{_SENTENCE_VARIANTS}|{_LABEL_VARIANTS})\s*:?\s*(?:{_NLI_ADVERB}\s+)?not\s+(?:{_NLI_ADVERB}\s+)?"
    rf"(?P<label>{'|'.join(NLI_LABELS)})\b",
    re.IGNORECASE | re.MULTILINE,
)


def _negated_nli_answer(text: str, label: str) -> str:
    """Why the nli ``text`` (:func:`_where_answers_are_read`), whose answer is ``label``, is refused for an
    answer sentence that negates that label (:data:`_NEGATED_NLI_ANSWER`: a teacher correcting itself); ""
    when none does. A sentence negating another label (``neutral``, then ``the answer is not entailment``)
    agrees with the answer.

    Examples:
        >>> _negated_nli_answer("So the answer is entailment. But wait, the answer is actually not entailment.",
        ...                     "entailment")
        "the answer sentence 'the answer is actually not entailment' negates the answer 'entailment'"
        >>> _negated_nli_answer("So the answer is neutral.\\nSo the answer is not entailment.", "neutral")
        ''
    """
    for match in _NEGATED_NLI_ANSWER.finditer(text):
        if match["label"].casefold() == label:
            return (
                f"the answer sentence {_shown_sentence(text, *match.span())!r} negates the answer {label!r}"
            )
    return ""


def _dss_parse_one(
    task: str, text: str, choices: Sequence[str] = (), *, followed: bool = False
) -> tuple[PalmOutput, str]:
    """:func:`_dss_parse` of a ``text`` that holds at most one answer sentence (:func:`_answer_spans`): the
    DSS rule reads the answer sentence's line, the text after it being cut off. ``followed``: the text is one
    of several answer sentences, which the next one follows (see :func:`_correcting_remark`)."""
    phrase = _ANSWER_PHRASE[task]
    # whether a colon and a line break end the answer sentence's line is seen before _plain drops them
    listed = task == "multiple_choice" and _options_listed_after_answer(
        _before_next_question(_plain(text, task, keep_colon=True)), phrase, choices
    )
    text = _plain(text, task)
    if task == "nli":
        text = _without_restated_question(text)
    text = _without_leading_answer_marker(task, text)
    if task != "nli":  # the nli rule cuts at a next example's "Premise:"
        text = _before_next_question(text)
    if task == "multiple_choice" and phrase not in text:
        text = _with_final_choice_line(text, phrase, choices)
    line = _close_answer_line(text, phrase)  # the answer sentence's line, a remark after the sentence kept
    text, remark = _cut_answer_line(text, phrase, task=task, choices=choices)
    if task in ("nli", "generic"):
        output, refusal = parse_anli_output(text), ""
    elif task == "multiple_choice":
        output = _without_reasoning_questions(parse_cqa_output, text, phrase)
        if listed and output.rationale + output.label:
            return output, _OPTIONS_LISTED
        output, refusal = _by_choice_letter(text, output, choices)
        if not refusal and (output.rationale or output.label):  # the rule found one answer sentence
            refusal = _refused_choice(_answer_sentence(text), _answer_sentence(line), output.label, choices)
    else:
        output, refusal = (
            _whole_expression(text, _without_reasoning_questions(parse_svamp_output, text, phrase)),
            "",
        )
    if output.label and not refusal:  # the CQA and SVAMP rules read nothing from a "Q:" on
        cut = remark.split("Q:")[0] if task in ("multiple_choice", "arithmetic") else remark
        refusal = _correcting_remark(task, output.label, cut.strip(), followed=followed)
    return output, refusal


# what in a remark after the answer sentence, on its line, may correct or doubt the answer, for every task: a word
# such as "wait", "actually", "oops", "I mean", "no" before a punctuation mark ("Wait, no, ..."), or "or", "but",
# "maybe" opening the remark
_CORRECTION = re.compile(
    r"\b(?:wait|actually|oops|sorry|correction|mistake|mistaken|wrong|incorrect|rather|instead|alternatively|"
    r"i\s+mean|i\s+meant|scratch\s+that|second\s+thought)\b|\bno\b(?=\s*(?:[,.!;:]|\Z))|"
    r"\A\W*(?:or|but|however|hmm+|maybe|perhaps)\b",
    re.IGNORECASE,
)
# for generic, also an answer phrase ("the answer is", "answer:"): its remark must not answer again
_ANSWER_WORDS = re.compile(r"\banswer\s*(?::|(?:is|was|would|should|could|might|may|must)\b)", re.IGNORECASE)
# for arithmetic, what in a remark has a value: a parenthesised expression (one level of parentheses inside it),
# or else a number
_REMARK_VALUE = re.compile(r"\((?:[^()]|\([^()]*\))*\)|\d+(?:\.\d+)?")
# where a generic answer kept whole (_answer_end) runs on past a sentence's end
_RUN_ON = re.compile(r"[.!?]\s+(?=\S)")


def _correcting_remark(task: str, label: str, remark: str, *, followed: bool = False) -> str:
    """Why the answer ``label`` (the DSS rule's, of ``task``) is refused for what follows it on the answer
    sentence's line: the ``remark`` that the cut at the sentence's end dropped (:func:`_cut_answer_line`), or,
    for a generic answer kept whole, the words after a sentence end in it. "" when that gives no other answer.

    The remark is refused, never dropped, when it may correct the answer, as a teacher correcting itself on
    the same line does (``So the answer is neutral! Actually no, contradiction.``): when it holds a word of
    correction (:data:`_CORRECTION`: ``wait``, ``actually``, ``I mean``, ``no,``) or

    - nli: another label (``So the answer is entailment. Wait, no. Contradiction.``);
    - arithmetic: an expression or a number of another value (``(10 - 2)! Oops, I mean (10 + 2).``; ``That
      is 8 apples.`` after ``(10 - 2)`` agrees);
    - generic, whose answer may be any words: a negation (:data:`_NEGATION`) or an answer phrase
      (:data:`_ANSWER_WORDS`).

    (multiple_choice checks the choices a remark names in :func:`_refused_choice`.) A remark that gives no
    other answer (``I hope this helps!``, ``Let me know if you have questions.``) is dropped. Words of
    correction that introduce a next answer sentence (``But wait, the answer is ...``: :func:`_answer_sentence_in`;
    with ``followed``, the next of several answer sentences follows the remark) are left to that sentence,
    which is compared with this one.

    Examples:
        >>> _correcting_remark("nli", "neutral", "Actually no, contradiction.").split(":")[0]
        "the answer 'neutral' is followed on its line by 'Actually no, contradiction.', which holds 'Actually'"
        >>> _correcting_remark("arithmetic", "(10 - 2)", "That is 8 apples."), _correcting_remark("nli", "neutral", "")
        ('', '')
    """
    after = "is followed on its line by"
    if task == "generic" and not remark:
        run_on = _RUN_ON.search(label)
        if run_on is None:
            return ""
        after, remark = "runs on past a sentence's end with", label[run_on.end() :]
    # words that introduce a next answer sentence ("But wait, the answer is ...") are left to it
    sentence = _answer_sentence_in(task, remark)
    remark = remark if sentence is None else remark[:sentence]
    introduces = followed or sentence is not None
    found = (None if introduces else _CORRECTION.search(remark)) or _other_answer(task, label, remark)
    if found is None:
        return ""
    return (
        f"the answer {label.strip()!r} {after} {remark!r}, which holds {found[0].strip()!r}: the teacher may be "
        "correcting itself (expected the answer sentence alone, or a remark that gives no other answer)"
    )


_VARIANT_IN_REMARK = re.compile(_SENTENCE_VARIANTS, re.IGNORECASE)


def _answer_sentence_in(task: str, remark: str) -> int | None:
    """Where in ``remark`` an answer sentence of ``task`` begins that the checks of a text's answer sentences read
    (:func:`_answer_spans`: a variant of the phrase that an answer of ``task`` follows; for nli
    :func:`_negated_nli_answer`: one negating a label); None when it holds none.

    Examples:
        >>> _answer_sentence_in("nli", "But wait, the answer is actually not entailment.")
        10
        >>> _answer_sentence_in("nli", "But the answer is unclear.") is None
        True
    """
    for variant in _VARIANT_IN_REMARK.finditer(remark):
        answered = _ANSWER_FOLLOWS[task].match(remark, variant.end())
        if answered or (task == "nli" and _NEGATED_NLI_ANSWER.match(remark, variant.start())):
            return variant.start()
    return None


_NLI_LABEL_WORD = re.compile(rf"\b(?:{'|'.join(NLI_LABELS)})\b", re.IGNORECASE)


def _other_answer(task: str, label: str, remark: str) -> re.Match[str] | None:
    """The first thing in ``remark`` that may be another answer than ``label`` (see :func:`_correcting_remark`):
    for nli another label, for arithmetic an expression or number of another value, for generic a negation or
    an answer phrase; None when there is none (multiple_choice: always None).

    Examples:
        >>> _other_answer("arithmetic", "(10 - 2)", "That is 8, not (5 + 4).")[0]
        '(5 + 4)'
        >>> _other_answer("nli", "neutral", "Neutral means unrelated.") is None
        True
    """
    if task == "nli":
        key = normalise_answer(task, label)
        return next((word for word in _NLI_LABEL_WORD.finditer(remark) if word[0].casefold() != key), None)
    if task == "arithmetic":
        key = answer_key(task, label)
        return next(
            (
                value
                for value in _REMARK_VALUE.finditer(remark)
                if safe_eval_arithmetic(value[0]) is not None and answer_key(task, value[0]) != key
            ),
            None,
        )
    if task == "generic":
        return _NEGATION.search(remark) or _ANSWER_WORDS.search(remark)
    return None


def _where_answers_are_read(task: str, text: str) -> str:
    """``text`` up to where ``task``'s DSS rule stops reading answers, with markdown bold removed and the chat
    phrases not yet rewritten (:func:`_plain`), so that each answer sentence is found as the teacher wrote it:
    for nli without a restated question (:func:`_without_restated_question`) and up to the first
    ``Premise:``; for the other tasks up to a next example's ``Q:``, and for generic up to a ``Premise:``
    too. (multiple_choice and arithmetic read no answer after a ``Q:`` after the first one either:
    :func:`_answer_spans`.)

    Examples:
        >>> _where_answers_are_read("generic", "**Yes.** So the answer is Paris.\\nPremise: x")
        'Yes. So the answer is Paris.\\n'
    """
    text = _unboxed(task, _without_emphasis(text))
    if task == "nli":
        return _without_restated_question(text).split("Premise:")[0]
    text = _before_next_question(text)
    return text.split("Premise:")[0] if task == "generic" else text


def answers_read_at_end(task: str, text: str) -> bool:
    """Whether ``task``'s parser would still read answers in text added after ``text``: False once ``text``
    runs into an invented next example (a ``Q:``, or ``Premise:`` for nli and generic), after which nothing
    is read. A text cut off at the token limit (``max_new_tokens``) keeps its answer only when this is False:
    otherwise the lost text could have given a second, different answer.

    Args:
        task: one of :data:`TASKS`.
        text: a teacher's reply, maybe cut off.

    Returns:
        True when more text after ``text`` would be read for answers.

    Examples:
        >>> answers_read_at_end("generic", "Add them. So the answer is 12.\\nSo the answer")
        True
        >>> answers_read_at_end("generic", "Add them. So the answer is 12.\\n\\nQ: How many")
        False
    """
    _check_task(task)
    return _where_answers_are_read(task, text + "x") != _where_answers_are_read(task, text)


def _answer_spans(task: str, text: str) -> list[tuple[int, int]]:
    """Where each answer sentence of ``task`` in ``text`` (:func:`_where_answers_are_read`) starts, and where
    its phrase ends, in order.

    An answer sentence is the prompt's phrase (in the case the prompt writes it, as the DSS rules read it),
    or a variant of it that :func:`_plain` rewrites (:data:`_PHRASE_VARIANTS`: every one, where the text
    lacks the prompt's phrase) or that an answer of the task follows (:data:`_ANSWER_AHEAD`, and for nli,
    generic and arithmetic :data:`_ANSWERED_VARIANTS`: ``Wait, so the answer is entailment``, ``Final answer:
    (a)``, ``the answer is (5 + 4)``), beside the prompt's phrase too: such a variant answers as the phrase
    does. A variant followed by no answer (``the answer is not
    obvious``) is prose. As the CQA and SVAMP rules do, multiple_choice and arithmetic read no answer from
    a ``Q:`` after the first answer sentence on.

    Examples:
        >>> _answer_spans("multiple_choice", "Cars. So the answer is (a) home.\\nNo, the correct answer is (b) car.")
        [(6, 22), (37, 58)]
        >>> _answer_spans("nli", "No link. So the answer is neutral.\\nWait, so the answer is not entailment.")
        [(9, 25)]
        >>> _answer_spans("arithmetic", "Add. The answer is (3 + 4).\\nQ: and? The answer is (5).")
        [(5, 18)]
    """
    phrase = _ANSWER_PHRASE[task]
    rewritten = _rewritten_variant(task, text)
    found = [match.span() for match in re.finditer(re.escape(phrase), text)]
    found += [
        match.span()
        for variant in (*_PHRASE_VARIANTS[task], *_ANSWERED_VARIANTS.get(task, ()))
        for match in variant.finditer(text)
        if variant is rewritten or _ANSWER_FOLLOWS[task].match(text, match.end())
    ]
    spans: list[tuple[int, int]] = []
    for begin, end in sorted(found):  # the prompt's phrase and a variant overlapping it are one sentence
        if spans and begin < spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((begin, end))
    if task in ("multiple_choice", "arithmetic") and spans:
        cut = text.find("Q:", spans[0][0])
        spans = [span for span in spans if cut < 0 or span[0] < cut]
    return spans


def _shown_sentence(text: str, start: int, end: int) -> str:
    """The answer sentence at ``text[start:end]`` as a reason shows it: its first line, at most 80 characters."""
    line = text[start:end].split("\n", 1)[0].strip()
    return line if len(line) <= 80 else f"{line[:77]}..."


# what a variant of the arithmetic phrase (not the prompt's "The answer is") answers, after a colon: a number or
# an expression, then maybe one word (a unit: "7 apples") and maybe a clause after a comma ("7, which is 3 +
# 4"), up to the sentence's end
_VARIANT_ANSWER = re.compile(
    r"\A\s*:?\s*(?P<expression>[-(\d][-+*/().\d\s]*?)\s*(?:[A-Za-z]+)?\s*(?:,\s[^\n]*)?\Z"
)
_VARIANT_SENTENCE_END = re.compile(r"\n|\.(?:\s|$)")


def _is_variant(task: str, text: str, span: tuple[int, int]) -> bool:
    """Whether the answer sentence at ``span`` of ``text`` (:func:`_answer_spans`) opens with a variant of
    ``task``'s phrase that :func:`_plain` does not rewrite, rather than with the prompt's phrase."""
    rewritten = _rewritten_variant(task, text)
    return not text.startswith(_ANSWER_PHRASE[task], span[0]) and not (
        rewritten is not None and rewritten.match(text, span[0])
    )


# what may part an answer phrase from its answer on a later line: a colon and the whitespace after it, line breaks
# included ("So the answer is:\n\n(b)"), which _plain drops
_COLON_BEFORE_ANSWER = re.compile(r"[ \t]*:\s*")


def _variant_answer(sentence: str) -> str:
    """The arithmetic answer of a variant's ``sentence`` (what follows the variant's phrase), normalised: its
    number or expression (:data:`_VARIANT_ANSWER`) where that has a value; "" where the sentence gives none.
    After a colon the answer may be on a later line (``Final Answer:``, then ``(8)``).

    Examples:
        >>> _variant_answer(": 6 apples.\\n\\nMore."), _variant_answer(" 7, which is 3 + 4.")
        ('6', '7')
        >>> _variant_answer(" 10 because he starts there."), _variant_answer(" 10 - 3 = 7 left.")
        ('', '')
        >>> _variant_answer(":\\n\\n(8)")
        '(8)'
    """
    colon = _COLON_BEFORE_ANSWER.match(sentence)
    sentence = sentence if colon is None else sentence[colon.end() :]
    match = _VARIANT_ANSWER.match(_VARIANT_SENTENCE_END.split(sentence, maxsplit=1)[0])
    if match is None or safe_eval_arithmetic(match["expression"]) is None:
        return ""
    return normalise_answer("arithmetic", match["expression"])


def _prose_variant(task: str, text: str, span: tuple[int, int]) -> bool:
    """Whether the arithmetic answer sentence at ``span`` of ``text`` is prose: a variant of the phrase
    (:func:`_is_variant`: ``the answer is`` beside the prompt's ``The answer is``) whose answer has no value
    (:func:`_variant_answer`: ``the answer is 10 - 3 = 7 left``, ``the answer is 10 because ...``). Such a
    variant is reasoning; one whose answer has a value confirms or contradicts the other sentences by it."""
    return task == "arithmetic" and _is_variant(task, text, span) and not _variant_answer(text[span[1] :])


# what stands before an answer sentence that is parsed on its own (_given_answer): the DSS rules read an answer
# sentence with no reasoning before it as giving no answer where its label is only a letter ("Answer: (b)")
_STAND_IN_RATIONALE = "Some reasoning."


def _given_answer(
    task: str, sentence: str, choices: Sequence[str], *, followed: bool = False
) -> tuple[str, str]:
    """What the answer ``sentence`` of ``task`` gives, parsed on its own (:func:`_dss_parse_one`, every check
    included, after a stand-in rationale): the DSS rule's label, and that label normalised (both "" for
    none). ``sentence`` opens with the prompt's phrase and runs to the next answer sentence, which follows it
    where ``followed``.

    For arithmetic, a sentence whose answer the SVAMP rule does not read, as it has no parentheses (``The
    answer is 7.``), gives its whole answer normalised (:func:`_whole_answer`) and no label: its value can
    confirm, or contradict, another sentence's, but is no answer by the rule.

    Examples:
        >>> _given_answer("multiple_choice", "So the answer is: (b)\\n\\nA fridge is cold.", ["oven", "fridge"])
        ('fridge', 'fridge')
        >>> _given_answer("arithmetic", "The answer is 7.", [])
        ('', '7')
    """
    output, refusal = _dss_parse_one(task, f"{_STAND_IN_RATIONALE}\n{sentence}", choices, followed=followed)
    if refusal:
        return "", ""
    answer = normalise_answer(task, output.label)
    if answer or task != "arithmetic":
        return (output.label if answer else ""), answer
    line = _close_answer_line(_plain(sentence, task), _ANSWER_PHRASE[task])
    return "", normalise_answer(task, _whole_answer(line))


# a heading that opens the reasoning after an answer given first: "Explanation:", "Reasoning:", "Reason:",
# "Rationale:", in any case
_REASONING_HEADING = re.compile(r"\A(?:explanation|reasoning|reason|rationale)\s*:\s*", re.IGNORECASE)


def _reasoning_of_several(task: str, text: str, spans: Sequence[tuple[int, int]]) -> str:
    """The rationale of ``text`` (:func:`_where_answers_are_read`), whose answer sentences at ``spans`` (two
    or more, :func:`_answer_spans`) agree: the text before the first, as the DSS rule reads it (a few-shot
    answer marker, such as ``A:``, opening it removed), or the text from the first answer sentence's line's
    end to the next answer sentence, without a heading opening it (:data:`_REASONING_HEADING`), whichever is
    longer, the latter on a tie (so an answer given first after a preamble, ``Sure! Let me help.``, has the
    reasoning after it); markdown heading lines and an ``Answer:`` label ending either are dropped
    (:func:`_without_headings`). "" when neither holds any.

    Examples:
        >>> text = "Answer: (b)\\n\\n**Why:** Cold. So the answer is (b)."
        >>> _reasoning_of_several("multiple_choice", text, _answer_spans("multiple_choice", text))
        '**Why:** Cold.'
        >>> text = "Answer: (b)\\n\\nExplanation: Cold. So the answer is (b)."
        >>> _reasoning_of_several("multiple_choice", text, _answer_spans("multiple_choice", text))
        'Cold.'
    """
    before = _without_headings(_without_leading_answer_marker(task, text[: spans[0][0]]))
    line_end = text.find("\n", spans[0][1])
    between = text[line_end : spans[1][0]].strip() if 0 <= line_end < spans[1][0] else ""
    between = _without_headings(_REASONING_HEADING.sub("", between, count=1))
    return before if len(before) > len(between) else between


# a line that only heads what follows: a markdown heading ("## Answer") or an answer label ending the text
# ("Answer:", "Final answer:")
_HEADING_LINE = re.compile(r"^[ \t]*#+[ \t][^\n]*(?:\n|\Z)", re.MULTILINE)
_TRAILING_ANSWER_LABEL = re.compile(r"(?:^|\n)[ \t]*(?:final\s+)?answer\s*:\s*\Z", re.IGNORECASE)


def _without_headings(text: str) -> str:
    """``text`` without its markdown heading lines and an answer label (``Answer:``) ending it, stripped.

    Examples:
        >>> _without_headings("## Explanation\\nA man is a person.\\n\\nFinal answer:")
        'A man is a person.'
    """
    return _TRAILING_ANSWER_LABEL.sub("", _HEADING_LINE.sub("", text).strip()).strip()


def _one_answer_of_several(
    task: str, text: str, spans: Sequence[tuple[int, int]], choices: Sequence[str]
) -> tuple[PalmOutput, str]:
    """The DSS rule's output for ``text`` (:func:`_where_answers_are_read`) holding answer sentences at
    ``spans`` (two or more, :func:`_answer_spans`), and why it is refused ("" when it is not).

    Each sentence is parsed on its own (:func:`_given_answer`). When all give the same answer (compared by
    :func:`answer_key`: for arithmetic, by value), that is the answer: the first label the rule reads, with
    the reasoning as the rationale (:func:`_reasoning_of_several`); for arithmetic, sentences whose answer
    the rule does not read alone give none (``The answer is 7.`` twice). Otherwise (a teacher that corrects
    itself: ``(a) home.`` then ``Wait, the correct answer is (b) car.``) the text is refused, naming each
    sentence and what it gives, never read as one of them.

    Examples:
        >>> text = "Cars. So the answer is (a) home.\\nNo, the correct answer is (b) car."
        >>> reason = _one_answer_of_several("multiple_choice", text, _answer_spans("multiple_choice", text),
        ...                                 ["home", "car"])[1]
        >>> reason.removeprefix("the text holds 2 answer sentences that do not all give the same answer ")
        "('So the answer is (a) home.' gives 'home', 'the correct answer is (b) car.' gives 'car')"
        >>> text = "3 + 4 is 7. The answer is (3 + 4).\\nThat is, the answer is 7."
        >>> _one_answer_of_several("arithmetic", text, _answer_spans("arithmetic", text), [])
        (PalmOutput(rationale='3 + 4 is 7.', label='(3 + 4)'), '')
    """
    given = _given_answers(task, text, spans, choices)
    keys = [answer_key(task, answer) if answer else "" for _, answer in given]
    if keys[0] and all(key == keys[0] for key in keys):
        label = next((label for label, _ in given if label), "")
        return PalmOutput(_reasoning_of_several(task, text, spans) if label else "", label), ""
    said = ", ".join(_what_sentences_give(text, spans, [answer for _, answer in given]))
    return PalmOutput("", ""), (
        f"the text holds {len(spans)} answer sentences that do not all give the same answer ({said})"
    )


def _given_answers(
    task: str, text: str, spans: Sequence[tuple[int, int]], choices: Sequence[str]
) -> list[tuple[str, str]]:
    """What each answer sentence of ``text`` (:func:`_where_answers_are_read`) at ``spans``
    (:func:`_answer_spans`), running to the next one, gives parsed on its own (:func:`_given_answer`): the
    DSS rule's label and that label normalised; for an arithmetic variant, no label and the value of its
    answer (:func:`_variant_answer`)."""
    phrase = _ANSWER_PHRASE[task]
    ends = [begin for begin, _ in spans[1:]] + [len(text)]
    # each sentence opening with the prompt's phrase, so that _plain rewrites nothing else in it
    return [
        ("", _variant_answer(text[stop:end]))
        if task == "arithmetic" and _is_variant(task, text, (start, stop))
        else _given_answer(task, phrase + text[stop:end], choices, followed=end < len(text))
        for (start, stop), end in zip(spans, ends)
    ]


def _what_sentences_give(text: str, spans: Sequence[tuple[int, int]], answers: Sequence[str]) -> list[str]:
    """For a reason: each answer sentence of ``text`` at ``spans`` shown (:func:`_shown_sentence`) with the
    answer it gives (``answers``, "" for none)."""
    ends = [begin for begin, _ in spans[1:]] + [len(text)]
    return [
        f"{_shown_sentence(text, start, end)!r} " + (f"gives {answer!r}" if answer else "gives no answer")
        for (start, _), end, answer in zip(spans, ends, answers)
    ]


def _answer_lines(
    task: str, text: str, spans: Sequence[tuple[int, int]], choices: Sequence[str]
) -> list[tuple[str, str]]:
    """The lines of ``text`` (:func:`_where_answers_are_read`) after the line that holds the answer of its
    last answer sentence (at ``spans``, :func:`_answer_spans`) that are an answer of the task and nothing else
    (:func:`_bare_answer`: ``neutral``, ``(a)``, ``7``), each stripped and with the answer it gives. Only
    lines after every answer sentence count: a line of the reasoning, before the answer, is none. For
    multiple_choice and arithmetic, lines from a ``Q:`` on are not read, as the DSS rules cut there; for
    multiple_choice, lines after the answer of which two or more open with a choice's label (``(a) oven``
    then ``(b) refrigerator``) list the choices or say why the others are wrong: none of them counts. A line
    is read without a bullet, an arrow or single emphasis or code marks around it (:func:`_unmarked`: ``-
    neutral``, ``*Neutral*``). Lines one after another that give two or more different answers list them
    (``Options:`` then ``entailment``, ``neutral``), and a line ``1.`` beside a line ``2.`` numbers a list's
    item (:func:`_numbers_an_item`): neither counts.

    Examples:
        >>> text = "He sleeps. So the answer is contradiction.\\n\\nNeutral."
        >>> _answer_lines("nli", text, _answer_spans("nli", text), [])
        [('Neutral.', 'neutral')]
        >>> text = "Add. The answer is (3 + 4).\\nThat is 7 in all.\\n7"
        >>> _answer_lines("arithmetic", text, _answer_spans("arithmetic", text), [])
        [('7', '7')]
    """
    answer = _COLON_BEFORE_ANSWER.match(text, spans[-1][1])
    line_end = text.find("\n", spans[-1][1] if answer is None else answer.end())
    if line_end < 0:
        return []
    after = text[line_end + 1 :]
    if task in ("multiple_choice", "arithmetic"):
        after = after.split("Q:")[0]
    lines = after.split("\n")
    if task == "multiple_choice" and sum(_OPTION_LINE.match(line) is not None for line in lines) > 1:
        return []
    numbers = {int(marker[1]) for line in lines if (marker := _NUMBERED_ITEM.fullmatch(line.strip()))}
    found = [
        (line.strip(), _bare_answer(task, _read_as_answer(task, _unmarked(task, line)), choices))
        for line in lines
    ]
    listed: set[int] = set()  # the indices of lines in runs that list two or more different answers
    run: list[int] = []
    for at, (_, answer) in enumerate([*found, ("", "")]):
        if answer:
            run.append(at)
            continue
        if len({answer_key(task, found[index][1]) for index in run}) > 1:
            listed.update(run)
        run = []
    return [
        (line, answer)
        for at, (line, answer) in enumerate(found)
        if answer and at not in listed and not _numbers_an_item(line, numbers)
    ]


# a line that only numbers an item of a list ("1.", "2."): a number and a period
_NUMBERED_ITEM = re.compile(r"(\d+)\.")
# a list bullet or an arrow opening a line ("- neutral", "* neutral", "• neutral", "→ neutral", "=> neutral"); for
# arithmetic not "-", which may be a minus sign
_BULLET = re.compile(r"\A(?:[*•→⇒➔]|-+>|=>)\s+")
_DASH_BULLET = re.compile(r"\A-\s+")
# single markdown emphasis or code around a whole line: "*Neutral*", "_neutral_", "`neutral`" (a final period
# after it aside)
_WRAPPED = re.compile(r"\A(?P<mark>[*_`])(?P<inside>[^*_`]+)(?P=mark)(?P<period>\.?)\Z")


def _unmarked(task: str, line: str) -> str:
    """``line``, stripped, without a list bullet or arrow opening it (:data:`_BULLET`; for tasks other than
    arithmetic also ``- ``) and without single markdown emphasis or code around it (:data:`_WRAPPED`), so that
    an answer so marked is read as an answer line.

    Examples:
        >>> _unmarked("nli", "- *Neutral*"), _unmarked("nli", "`neutral`."), _unmarked("arithmetic", "- 5")
        ('Neutral', 'neutral.', '- 5')
    """
    said = _BULLET.sub("", line.strip())
    if task != "arithmetic":
        said = _DASH_BULLET.sub("", said)
    wrapped = _WRAPPED.fullmatch(said)
    return said if wrapped is None else wrapped["inside"].strip() + wrapped["period"]


def _numbers_an_item(line: str, numbers: set[int]) -> bool:
    """Whether ``line`` (stripped) only numbers an item of a list (:data:`_NUMBERED_ITEM`: ``1.``): one of
    ``numbers``, the numbers of such lines after the answer, next to another of them (``1.`` and ``2.``)."""
    marker = _NUMBERED_ITEM.fullmatch(line)
    return marker is not None and bool({int(marker[1]) - 1, int(marker[1]) + 1} & numbers)


def _disagreeing_answer_line(
    task: str, text: str, spans: Sequence[tuple[int, int]], label: str, choices: Sequence[str]
) -> str:
    """Why ``text`` (:func:`_where_answers_are_read`), whose answer sentences at ``spans`` give the DSS rule's
    ``label``, is refused for a line after them that holds only another answer (:func:`_answer_lines`: ``So
    the answer is contradiction.`` then ``neutral``, a teacher correcting itself or ending on what it means),
    naming each answer sentence and each such line with what it gives; "" when every such line gives the
    same answer (by :func:`answer_key`: for arithmetic, the same value) or there is none.

    Examples:
        >>> text = "He sleeps. So the answer is contradiction.\\nneutral"
        >>> reason = _disagreeing_answer_line("nli", text, _answer_spans("nli", text), "contradiction", [])
        >>> reason.removeprefix("the text holds 1 answer sentence and, after it, 1 line holding only an answer, "
        ...                     "which do not all give the same answer ")
        "('So the answer is contradiction.' gives 'contradiction', the line 'neutral' gives 'neutral')"
    """
    lines = _answer_lines(task, text, spans, choices)
    key = answer_key(task, normalise_answer(task, label))
    if all(answer_key(task, answer) == key for _, answer in lines):
        return ""
    given = [answer for _, answer in _given_answers(task, text, spans, choices)]
    shown = [f"the line {line!r} gives {answer!r}" for line, answer in lines]
    said = ", ".join([*_what_sentences_give(text, spans, given), *shown])
    sentences = f"{len(spans)} answer sentence{'s' if len(spans) > 1 else ''}"
    shown_lines = f"{len(lines)} line{'s' if len(lines) > 1 else ''} holding only an answer"
    return (
        f"the text holds {sentences} and, after {'them' if len(spans) > 1 else 'it'}, {shown_lines}, which do "
        f"not all give the same answer ({said})"
    )


# a line that opens with an option's label: "(b) ...", "(b): ...", "B: ...", "B. ...", "B) ..."
_OPTION_LINE = re.compile(r"[ \t]*(?:\((?P<paren>[A-Za-z])\):?|(?P<bare>[A-Za-z])[:.)])(?:\s|\Z)")
# an answer that is an option's label and nothing else: "(b)", "(b):", "B:", "B.", "B)"
_LABEL_ONLY = re.compile(r"(?:\([A-Za-z]\):?|[A-Za-z][:.)])\.?")

_OPTIONS_LISTED = (
    "the answer sentence is followed by lines that list the choices ('(a) ...', '(b) ...'); expected one "
    "answer ('So the answer is (x) choice.')"
)


def _option_lines(lines: Sequence[str], *, skip_blank: bool) -> list[tuple[str, str]]:
    """The letter (lower case) and the rest of each of ``lines`` that opens with an option's label, up to the
    first line that opens with none; blank lines are passed over with ``skip_blank`` and end the run
    otherwise."""
    labelled = []
    for line in lines:
        if skip_blank and not line.strip():
            continue
        match = _OPTION_LINE.match(line)
        if match is None:
            break
        labelled.append(((match["paren"] or match["bare"]).lower(), line[match.end() :]))
    return labelled


def _is_bare_choice(text: str, keys: Sequence[str]) -> bool:
    """Whether ``text``, the rest of a line after its option's label, is one of the normalised choices
    ``keys`` and nothing else (a final period, or a separator before it as in ``- oven``, aside)."""
    said = text.strip().removesuffix(".").rstrip()
    return normalize_text(_without_separator(said, keys)) in keys


def _with_final_choice_line(text: str, phrase: str, choices: Sequence[str]) -> str:
    """``text`` with ``phrase`` put before its last non-blank line where that line is a choice's label and
    that choice (``B. Refrigerator``, ``(b) refrigerator.``) and no other line opens with a label (the last
    line of a list of the options is no answer); ``text`` otherwise.

    Examples:
        >>> _with_final_choice_line("Cold.\\nB. Refrigerator", "So the answer is", ["oven", "refrigerator"])
        'Cold.\\nSo the answer is B. Refrigerator'
        >>> _with_final_choice_line("A. Oven\\nB. Refrigerator", "So the answer is", ["oven", "refrigerator"])
        'A. Oven\\nB. Refrigerator'
    """
    lines = text.rstrip().split("\n")
    labels = [_OPTION_LINE.match(line) for line in lines]
    last = labels[-1]
    if last is None or any(labels[:-1]):
        return text
    index = ord((last["paren"] or last["bare"]).lower()) - ord("a")
    if not (
        index < len(choices) and _is_bare_choice(lines[-1][last.end() :], [normalize_text(choices[index])])
    ):
        return text
    return "\n".join([*lines[:-1], f"{phrase} {lines[-1].strip()}"])


def _options_listed_after_answer(text: str, phrase: str, choices: Sequence[str] = ()) -> bool:
    """Whether the multiple-choice answer is split from a list of the choices that follows it, in ``text``
    as the teacher wrote it (its colon after ``phrase`` kept, cut at a next example's ``Q:``).

    Lines after the answer line that open with an option's label (``(b) ...``, ``B: ...``, ``B) ...``) are
    such a list only where the answer line names no choice on its own. A labelled line is a bare choice when
    its text after the label, a final period and a separator (``- ``) aside, is exactly one of ``choices``
    (in any case).

    - ``phrase`` ends its line with nothing: when a label line is the first non-blank line after it (the
      answer, on another line, is not read);
    - ``phrase`` ends its line with a colon (which is dropped, so that the first line after it becomes the
      answer): when the non-blank lines after it that open with labels, up to the first that does not, name
      two or more letters, unless the first of them is a bare choice and another is not (the answer, then
      why the others are wrong: ``(b) refrigerator`` then ``(a) oven: heats food``);
    - the answer on ``phrase``'s line is only a label (``(b)``, ``(b):``, ``B:``): when the lines directly
      after it (no blank line between) that open with labels name two or more letters and are all bare
      choices.

    So an answer with its text followed by lines labelling choices (``(b) keeps it cold``, ``A: because
    ...``), as a chat model's "why not the others" adds, lists nothing.

    Examples:
        >>> choices = ["oven", "refrigerator"]
        >>> _options_listed_after_answer("Cold. So the answer is:\\n(a) oven\\n(b) refrigerator",
        ...                              "So the answer is", choices)
        True
        >>> _options_listed_after_answer("Cold. So the answer is:\\n(b) refrigerator\\n(a) oven heats food.",
        ...                              "So the answer is", choices)
        False
    """
    start = text.find(phrase)
    end = text.find("\n", start) if start >= 0 else -1
    if end < 0:
        return False
    answer = text[start + len(phrase) : end].strip()
    after = text[end + 1 :].split("\n")
    keys = [normalize_text(choice) for choice in choices]
    if not answer:
        return bool(_option_lines(after, skip_blank=True))
    if answer == ":":
        labelled = _option_lines(after, skip_blank=True)
        bare = [_is_bare_choice(rest, keys) for _, rest in labelled]
        return len({letter for letter, _ in labelled}) >= 2 and (all(bare) or not bare[0])
    if _LABEL_ONLY.fullmatch(answer.removeprefix(":").strip()):
        labelled = _option_lines(after, skip_blank=False)
        bare = [_is_bare_choice(rest, keys) for _, rest in labelled]
        return len({letter for letter, _ in labelled}) >= 2 and all(bare)
    return False


# a choice's letter in a multiple-choice answer: "(b)" as the prompt teaches, or "B:", "B." or "B)" opening
# the answer (_OPENING_LETTER)
_LETTER_MARK = re.compile(r"\((?P<letter>[A-Za-z])\)")
# any "(x)", as the CQA rule reads it: its label is the text between the first and the second
_RULE_LETTER = re.compile(r"\(.\)")


def _answer_sentence(text: str) -> str:
    """The multiple-choice answer in the prepared ``text``: what follows its answer phrase, up to a ``Q:``
    (as the CQA rule cuts it); "" when ``text`` has no answer phrase."""
    phrase = _ANSWER_PHRASE["multiple_choice"]
    start = text.find(phrase)
    return "" if start < 0 else text[start + len(phrase) :].split("Q:")[0]


def _opening_letter(answer: str, choices: Sequence[str]) -> re.Match[str] | None:
    """The label without parentheses that opens ``answer`` (``B:``, ``B.``, ``B)``), unless one of
    ``choices`` starts there (``J. K. Rowling``); None when there is none.

    Examples:
        >>> _opening_letter(" B. St. Louis.", ["St. Louis"])["letter"]
        'B'
        >>> _opening_letter(" J. K. Rowling.", ["J. K. Rowling"]) is None
        True
    """
    opening = _OPENING_LETTER.match(answer)
    span = _named_choice_span(answer, 0, choices)
    if opening is not None and span is not None and span[0] == opening.start("letter"):
        return None
    return opening


def _by_choice_letter(text: str, output: PalmOutput, choices: Sequence[str]) -> tuple[PalmOutput, str]:
    """The CQA rule's ``output`` for the prepared multiple-choice ``text``, checked against the letters its
    answer sentence names, and why it is refused ("" when it is not).

    The rule takes the text after the first ``(x)`` and ignores the letter, so an answer that names two
    letters (``(b) fridge, not (a) oven``), or whose letter names one of ``choices`` and whose text another
    (``(a) refrigerator`` when (a) is oven, ``oven (b).``) is refused. The answer's text is

    - for ``(x) text``, the form the rule reads: the text after the letter, without a colon directly after
      the letter (``(B): refrigerator``), and the whole of the choice it starts with even where that holds a
      letter (``(c) vitamin (a)``). A text that is no choice (``(b) fridge``), or a letter that names none
      (``(x) refrigerator``), leaves the text to decide, as the rule does (:func:`_refused_choice` then
      refuses a text that is none of the record's choices), but the letter's choice followed by more words
      (``(b) refrigerator because it is cold``) gives that choice;
    - for a letter after the text or alone (``refrigerator (b).``, ``option (b).``, ``(b).``): the text
      before it, which, when it is no choice, gives way to the letter's choice, unless it starts with
      another choice (``oven, not (b).``), which is refused; without the letter's choice the answer is
      refused;
    - for ``B: text``, ``B. text`` or ``B) text`` opening the answer (a reply that labels the options
      ``A:``, ``B:``, ...): the text, which must be the letter's choice or nothing (the letter's choice);
      otherwise the answer is refused;
    - for an answer that is, or starts with, a choice holding a letter (``vitamin (c).``, ``vitamin (c)
      (b).``): the letter inside that choice is no letter of the answer, only one after the choice is (the
      text before it is then the answer's text, as above); without one the answer must be exactly a choice.

    A separator opening the text (``- refrigerator``, ``: refrigerator``) is dropped where the text is no
    choice and what is left is one (see :func:`_without_separator`).

    Examples:
        >>> choices = ["oven", "refrigerator"]
        >>> _by_choice_letter("Cold. So the answer is B: refrigerator.", PalmOutput("Cold.", ""), choices)
        (PalmOutput(rationale='Cold.', label='refrigerator'), '')
        >>> _by_choice_letter("Cold. So the answer is option (b).", PalmOutput("Cold.", ""), choices)
        (PalmOutput(rationale='Cold.', label='refrigerator'), '')
        >>> _by_choice_letter("Cold. So the answer is (a) refrigerator.", PalmOutput("Cold.", "refrigerator"),
        ...                   choices)[1]
        "the answer's letter (a) names choice 'oven' but its text 'refrigerator' is choice (b)"
    """
    phrase = _ANSWER_PHRASE["multiple_choice"]
    start = text.find(phrase)
    if start < 0 or not (output.rationale or output.label):  # no single answer sentence: the rule refused it
        return output, ""
    answer = _answer_sentence(text)
    opening = _opening_letter(answer, choices)
    body = answer[opening.end() :] if opening else answer
    first = _LETTER_MARK.search(body)
    named_choice = _named_choice_span(body, 0, choices)
    # the answer is, or starts with, a choice holding a letter ("vitamin (c)"): its own letter comes after it
    whole = (
        named_choice is not None and first is not None and named_choice[0] <= first.start() < named_choice[1]
    )
    if whole and named_choice is not None:
        first = _LETTER_MARK.search(body, named_choice[1])
    letters = [opening["letter"]] if opening else []
    if first is not None:  # letters after the text of the choice the answer names, as in "(c) vitamin (a)"
        after = max(first.end(), 0 if named_choice is None else named_choice[1])
        letters += [first["letter"], *(mark["letter"] for mark in _LETTER_MARK.finditer(body, after))]
    named = list(dict.fromkeys(letter.lower() for letter in letters))
    if len(named) > 1:
        shown = " and ".join(f"({letter})" for letter in named)
        return output, f"the answer sentence names more than one choice letter ({shown})"
    if not named and not whole:
        return output, ""
    # "(x) text": the rule's label is the text (not where the rule cut inside the choice, as in "vitamin (c)")
    text_decides = first is not None and bool(output.label) and not whole
    if first is None:  # "B: text", or a choice holding a letter and no letter after it ("vitamin (c).")
        said = body
    elif not text_decides:  # the text before the letter: "refrigerator (b).", "(b).", "vitamin (c) (b)."
        said = body[: first.start()]
    else:  # the rule's label, without a colon directly after the letter ("(B): refrigerator")
        colon = body.startswith(":", first.end())
        said = output.label[1:] if colon and output.label.startswith(":") else output.label
        cut = _RULE_LETTER.search(body, first.end())  # where the rule's label ends
        if named_choice and cut and first.end() <= named_choice[0] and cut.start() < named_choice[1]:
            # the rule cut the text at a letter inside the choice it names ("(c) vitamin (a)"): read on
            stop = _RULE_LETTER.search(body, named_choice[1])
            said = body[first.end() + int(colon) : len(body) if stop is None else stop.start()]
    said = said.strip().removesuffix(".").rstrip()
    keys = [normalize_text(choice) for choice in choices]
    index = ord(named[0]) - ord("a") if named else -1
    known = 0 <= index < len(choices)
    said = _without_separator(said, keys, keys[index] if known else "")
    key = normalize_text(said)
    if key and key in keys:
        if known and key != keys[index]:
            other = chr(ord("a") + keys.index(key))
            return output, (
                f"the answer's letter ({named[0]}) names choice {choices[index]!r} but its text {said!r} is "
                f"choice ({other})"
            )
        return PalmOutput(output.rationale, said), ""
    if known and key and _opens_with_choice_then_prose(body, named_choice, keys[index]):
        # "(b) refrigerator because it is cold.": the letter's choice, then words that _refused_choice checks
        return PalmOutput(output.rationale, str(choices[index])), ""
    if key and text_decides:  # a text that is no choice, or a letter that names none: the text, as the rule
        return PalmOutput(output.rationale, said), ""
    if known and first is not None and not text_decides and named_choice is not None:  # "oven, not (b)."
        opening_key = normalize_text(body[named_choice[0] : named_choice[1]])
        whole_word = not body[named_choice[1] : named_choice[1] + 1].isalnum()  # "art", not "artwork"
        if whole_word and opening_key in keys and opening_key != keys[index]:  # opened by another choice
            other = chr(ord("a") + keys.index(opening_key))
            # the letter ends another choice's text ("vitamin (a) or vitamin (c)."): two choices, no letter
            ending = _choice_ending_at(body, first.end(), named_choice[1], choices)
            if ending is not None and normalize_text(choices[ending]) != opening_key:
                return output, _more_than_one_choice((keys.index(opening_key), ending), choices)
            return output, (
                f"the answer's letter ({named[0]}) names choice {choices[index]!r} but its text {said!r} starts "
                f"with choice ({other}) {choices[keys.index(opening_key)]!r}"
            )
    if known and (not key or first is not None):  # a letter alone, or after words that are no choice
        return PalmOutput(output.rationale, str(choices[index])), ""
    return PalmOutput(output.rationale, ""), ""


def _choice_ending_at(line: str, end: int, start: int, choices: Sequence[str]) -> int | None:
    """The index in ``choices`` of the longest choice (in any case) with words before a final ``(x)``
    letter whose text is ``line[:end]``'s end, as a whole word beginning at or after ``start``; None when
    there is none.

    Examples:
        >>> _choice_ending_at("vitamin (a) or vitamin (c)", 26, 11, ["vitamin (a)", "vitamin (c)", "iron"])
        1
        >>> _choice_ending_at("oven, not (b)", 13, 4, ["oven", "refrigerator"]) is None
        True
    """
    found: int | None = None
    for at, choice in enumerate(str(choice).strip() for choice in choices):
        begin = end - len(choice)
        mark = _LETTER_MARK.fullmatch(choice, max(len(choice) - 3, 0))
        if mark is None or not choice[: mark.start()].strip() or begin < start:
            continue  # no choice with words before a final letter, or one reaching into the opening choice
        if line[begin:end].casefold() == choice.casefold() and not line[begin - 1 : begin].isalnum():
            if found is None or len(choice) > len(str(choices[found]).strip()):
                found = at
    return found


def _more_than_one_choice(
    indices: Sequence[int], choices: Sequence[str], where: str = "the answer sentence"
) -> str:
    """The reason an answer naming the ``choices`` at ``indices`` in ``where`` is refused."""
    shown = " and ".join(f"({chr(ord('a') + at)}) {choices[at]!r}" for at in indices)
    return f"{where} names more than one choice ({shown})"


def _word_spans(text: str, word: str) -> list[tuple[int, int]]:
    """Where ``word`` (already case-folded, not empty) occurs in ``text`` (case-folded) as a whole word: not
    directly after or before a letter or digit ("art" is not in "artwork")."""
    spans = []
    begin = text.find(word)
    while begin >= 0:
        end = begin + len(word)
        if not text[begin - 1 : begin].isalnum() and not text[end : end + 1].isalnum():
            spans.append((begin, end))
        begin = text.find(word, begin + 1)
    return spans


def _choices_named(answer: str, choices: Sequence[str]) -> list[int]:
    """The indices of the ``choices`` that ``answer`` names, in the order it first names them, one for each
    choice text (the first of equal ones). It names a choice

    - by its text: a whole-word occurrence in any case, not inside a longer occurrence of another choice
      (``train`` inside ``train station``);
    - by its letter: a ``(x)`` that is no part of a choice's text (as in ``vitamin (c)``), or a label opening
      the answer (``B:``, ``B.``, ``B)``). A letter that names no choice names nothing.

    Examples:
        >>> _choices_named(" (d) iron or vitamin.", ["calcium", "protein", "vitamin", "iron", "zinc"])
        [3, 2]
        >>> _choices_named(" (b) train station.", ["train", "train station"])
        [1]
    """
    folded = answer.casefold()
    keys = [normalize_text(choice) for choice in choices]
    texts = [str(choice).strip().casefold() for choice in choices]
    found = [(*span, at) for at, choice in enumerate(texts) if choice for span in _word_spans(folded, choice)]
    named = [  # (where, index): the occurrences that no longer occurrence holds
        (begin, at)
        for begin, end, at in found
        if not any(
            other[0] <= begin and end <= other[1] and other[1] - other[0] > end - begin for other in found
        )
    ]
    opening = _opening_letter(folded, choices)
    marks = [*([(opening.start("letter"), opening["letter"])] if opening else [])]
    marks += [(mark.start(), mark["letter"]) for mark in _LETTER_MARK.finditer(folded)]
    for where, letter in marks:
        inside_a_choice = any(begin <= where < end for begin, end, _ in found)
        if not inside_a_choice and ord(letter) - ord("a") < len(choices):
            named.append((where, ord(letter) - ord("a")))
    return list(dict.fromkeys(keys.index(keys[at]) for _, at in sorted(named)))


def _second_choice_named(
    answer: str, label: str, choices: Sequence[str], where: str = "the answer sentence"
) -> str:
    """Why ``answer`` (``where`` in the reason), parsed as ``label``, is refused for naming more than one of
    ``choices`` (:func:`_choices_named`); "" when it names one or none. Where ``label`` is a choice, a choice
    whose text is a whole word of the label's (``5`` of ``-5``, written ``(a) - 5``) is the label's.

    Examples:
        >>> _second_choice_named(" iron or vitamin (c).", "iron", ["calcium", "protein", "iron", "vitamin"])
        "the answer sentence names more than one choice ((c) 'iron' and (d) 'vitamin')"
        >>> _second_choice_named(" (a) - 5.", "-5", ["-5", "5"])
        ''
    """
    named = _choices_named(answer, choices)
    key = normalize_text(label)
    if key in (normalize_text(choice) for choice in choices):
        own = label.casefold()
        named = [
            at
            for at in named
            if normalize_text(choices[at]) == key or not _word_spans(own, str(choices[at]).strip().casefold())
        ]
    return _more_than_one_choice(named, choices, where) if len(named) > 1 else ""


# what may follow the letter's choice in an answer that goes on after it ("(b) refrigerator because it is cold",
# "(b) refrigerator, as ...", "(b) refrigerator (the cold one)"): whitespace, a comma, semicolon, colon or an
# opening parenthesis; not a letter or digit ("refrigerators"), a period ("5.5") or a hyphen ("oven-baked")
_PROSE_AFTER_CHOICE = re.compile(r"[\s,;:(]")


def _opens_with_choice_then_prose(body: str, named_choice: tuple[int, int] | None, letter_key: str) -> bool:
    """Whether the answer ``body``, whose opening choice (after its letter) lies at ``named_choice``
    (:func:`_named_choice_span`), opens with the letter's normalised choice ``letter_key`` followed by more
    words (:data:`_PROSE_AFTER_CHOICE`).

    Examples:
        >>> body = " (b) refrigerator because it is cold."
        >>> _opens_with_choice_then_prose(body, _named_choice_span(body, 0, ["oven", "refrigerator"]), "refrigerator")
        True
        >>> _opens_with_choice_then_prose(" (b) refrigerators.", None, "refrigerator")
        False
    """
    if named_choice is None:
        return False
    begin, end = named_choice
    return normalize_text(body[begin:end]) == letter_key and _PROSE_AFTER_CHOICE.match(body, end) is not None


# a word that negates, in any case: "not", "never", "neither", "nor", "none", "cannot", or one ending in "n't" or
# "n’t" ("doesn't"; "So the answer isn't" leaves "n't" right after the answer phrase). "no" is left out: it opens
# many choices ("no legs", "have no home") and seldom negates an answer
_NEGATION = re.compile(rf"\b(?:{_NEGATING_WORDS})\b|\w*n['’]t\b", re.IGNORECASE)


def _negation(answer: str, choices: Sequence[str]) -> str:
    """The first word of the multiple-choice ``answer`` (what follows the answer phrase) that negates
    (:data:`_NEGATION`), in lower case, outside every whole-word occurrence of one of ``choices`` (in ``not
    lie``, a choice, ``not`` negates nothing); without choices, only in the words before the answer's first
    label (``(x)``, or ``B:`` opening it), as the text after it may be a choice. "" when no word negates.

    Examples:
        >>> _negation(" not (a) oven.", ["oven", "refrigerator"]), _negation(" (c) not lie.", ["laugh", "not lie"])
        ('not', '')
        >>> _negation(" (c) not lie.", []), _negation(" B: not lie.", []), _negation("n't (a) oven.", [])
        ('', '', "n't")
    """
    folded = answer.casefold()
    texts = [str(choice).strip().casefold() for choice in choices]
    inside = [span for text in texts if text for span in _word_spans(folded, text)]
    end = len(folded)
    if not choices:  # the words before the first label: "B:" opening the answer, or the first "(x)"
        label = _OPENING_LETTER.match(folded) or _LETTER_MARK.search(folded)
        end = end if label is None else label.start()
    for word in _NEGATION.finditer(folded, 0, end):
        if not any(begin <= word.start() < end for begin, end in inside):
            return word[0]
    return ""


def _refused_choice(sentence: str, line: str, label: str, choices: Sequence[str]) -> str:
    """Why the multiple-choice answer ``sentence`` (what follows the answer phrase, up to the sentence's end),
    whose letter agrees with its text and which the rule parsed as ``label`` ("" for none), is refused; ""
    when it is not. ``line`` is the answer sentence's whole line (a remark after the sentence kept). It is
    refused when

    - the sentence names more than one of ``choices`` (:func:`_second_choice_named`), or the line does (a
      remark after the answer that names another choice: the teacher hedges; a remark naming none is
      dropped);
    - the sentence negates (:func:`_negation`): ``not (a) oven`` names no answer;
    - with the record's ``choices``, ``label`` is none of them: a text that is no choice (``(b) fridge``) is
      no training target of a multiple-choice task.

    Examples:
        >>> choices = ["ox", "cow"]
        >>> _refused_choice(" (b) cow.", " (b) cow. Or (a).", "cow", choices)
        "the answer sentence with the remark after it on its line names more than one choice ((b) 'cow' and (a) 'ox')"
        >>> _refused_choice(" (b) cows.", " (b) cows.", "cows", choices)
        "the answer 'cows' is none of the record's choices"
    """
    if label:
        reason = _second_choice_named(sentence, label, choices) or _second_choice_named(
            line, label, choices, "the answer sentence with the remark after it on its line"
        )
        if reason:
            return reason
    negation = _negation(sentence, choices)
    if negation:
        return f"the answer sentence negates ({negation!r}, outside the text of a choice): it names no answer"
    if label and choices and normalize_text(label) not in (normalize_text(choice) for choice in choices):
        return f"the answer {label!r} is none of the record's choices"
    return ""


def _without_separator(text: str, keys: Sequence[str], letter_key: str = "") -> str:
    """``text`` without a separator opening it (``- ``, ``– ``, ``: ``) when ``text`` is none of the
    normalised choices ``keys`` and what is left is one; ``text`` otherwise, so that a minus sign stays.

    Where the answer's letter names the choice ``letter_key`` and what is left is not that choice, a ``-``
    followed by spaces is read as a minus sign when the text without the spaces is that choice (``- 5``
    for ``-5``).

    Examples:
        >>> _without_separator("– refrigerator", ["oven", "refrigerator"]), _without_separator("-5", ["5"])
        ('refrigerator', '-5')
        >>> _without_separator("- 5", ["-5", "5"], letter_key="-5")
        '-5'
    """
    separator = _SEPARATOR.match(text)
    if separator is None or normalize_text(text) in keys:
        return text
    rest = text[separator.end() :]
    if letter_key and normalize_text(rest) != letter_key and separator[0].rstrip() == "-":
        if normalize_text(f"-{rest}") == letter_key:
            return f"-{rest}"
    return rest if normalize_text(rest) in keys else text


_ANSWER_END = re.compile(r"=|\.(?:\s|$)")


def _whole_answer(text: str) -> str:
    """The whole arithmetic answer in the prepared ``text``: what follows its ``The answer is``, up to a
    ``Q:`` (the DSS rule's cut, after the answer only: a ``Q:`` in the reasoning is part of it), an ``=`` or
    the sentence's end.

    Examples:
        >>> _whole_answer("Half. The answer is (50 - 12) / 2 = 19.")
        '(50 - 12) / 2'
    """
    tail = text.split(_ANSWER_PHRASE["arithmetic"], 1)[1].split("Q:")[0]
    return _ANSWER_END.split(tail, maxsplit=1)[0].strip()


def _whole_expression(text: str, output: PalmOutput) -> PalmOutput:
    """The SVAMP rule keeps only the parenthesised part of ``The answer is (50 - 12) / 2.``: ``(50 - 12)``, a
    different value. When the whole answer (:func:`_whole_answer`) is an expression, it is the label,
    parenthesised."""
    if not output.parsed:
        return output
    answer = _whole_answer(text)
    if answer == output.label or safe_eval_arithmetic(answer) is None:
        return output
    return PalmOutput(output.rationale, f"({answer})")


def normalise_answer(task: str, answer: str) -> str:
    """Normalise a parsed answer for ``task``; "" when it is not a valid answer of that task.

    nli: one of ``entailment``, ``neutral``, ``contradiction`` (case-folded); multiple_choice and generic:
    :func:`hf_cotmi.metrics.normalize_text` (case-folded, whitespace collapsed, trailing periods removed);
    arithmetic: the expression with runs of whitespace collapsed, kept only when
    :func:`hf_cotmi.metrics.safe_eval_arithmetic` evaluates it.

    Examples:
        >>> normalise_answer("nli", " Neutral "), normalise_answer("nli", "maybe")
        ('neutral', '')
        >>> normalise_answer("arithmetic", "(84 /  2)"), normalise_answer("arithmetic", "(x + 1)")
        ('(84 / 2)', '')
    """
    _check_task(task)
    if task == "arithmetic":
        expression = " ".join(answer.split())
        return expression if safe_eval_arithmetic(expression) is not None else ""
    text = normalize_text(answer)
    if task == "nli":
        return text if text in NLI_LABELS else ""
    return text


# what a refusal for an answer sentence the task's rule does not read adds, where the rule is stricter than a
# reader would guess: the SVAMP rule reads only a parenthesised expression
_RULE_HINT = {
    "arithmetic": ", which reads only a parenthesised expression ('The answer is (24 - 9).'), not a bare number",
}


def parse_teacher_output(task: str, text: str, choices: Sequence[str] | None = None) -> TeacherAnswer:
    """Parse one teacher output for ``task``: rationale and normalised answer, or the reason it failed.

    Args:
        task: one of :data:`TASKS`.
        text: the teacher's text.
        choices: for ``multiple_choice``, the record's answer choices (what
            :func:`hf_cotmi.teacher.prompts.choices_in_input` reads from its input): a period inside the choice
            the answer names is then not the end of the answer sentence (``(c) St. Louis.`` gives
            ``st. louis``, not ``st``), the answer's letter must name the choice its text names
            (``(a) refrigerator`` where (a) is ``oven`` is refused; a letter alone gives its choice), and an
            answer that is none of the choices (``(b) fridge``) is refused.

    Raises:
        ValueError: an unknown task, or ``choices`` for a task other than ``multiple_choice``.
        TypeError: ``text`` is not a string, or ``choices`` is one string instead of a sequence of them.

    Examples:
        >>> parse_teacher_output("multiple_choice", "Fish swim. So the answer is (a) sea.\\n\\nQ: x").label
        'sea'
        >>> parse_teacher_output("multiple_choice", "It is in Missouri. So the answer is (b) St. Louis.",
        ...                      choices=["Boston", "St. Louis"]).label
        'st. louis'
        >>> parse_teacher_output("arithmetic", "Tom has 3 + 4 apples. The answer is (3 + 4).").label
        '(3 + 4)'
        >>> parse_teacher_output("generic", "I am not sure.").reason
        "no answer sentence ('So the answer is ...')"
    """
    _check_task(task)
    if not isinstance(text, str):
        raise TypeError(f"teacher output must be a string, got {type(text).__name__}")
    _check_choices(task, choices)
    phrase = _ANSWER_PHRASE[task]
    text = _answer_under_heading(task, text, choices or ())
    if task == "multiple_choice":
        text = _lettered_labelled_choice(text, choices or ())
    output, refusal = _dss_parse(task, text, choices or ())
    if refusal:
        return TeacherAnswer("", "", refusal)
    if not output.parsed:
        if phrase not in _plain(text, task):
            return TeacherAnswer("", "", f"no answer sentence ('{phrase} ...')")
        return TeacherAnswer(
            "", "", f"the answer sentence does not parse by the {task} rule{_RULE_HINT.get(task, '')}"
        )
    label = normalise_answer(task, output.label)
    if not label:
        return TeacherAnswer("", "", f"answer {output.label!r} is not a valid {task} answer")
    if not output.rationale:
        if task == "nli" and _RESTATED_NLI_QUESTION.match(_plain(text, task)):
            return TeacherAnswer("", "", _RESTATEMENT_ONLY)
        return TeacherAnswer("", "", "empty rationale before the answer sentence")
    return TeacherAnswer(output.rationale, label, "")


def answer_key(task: str, answer: str) -> str:
    """What answers are compared and voted by: the value for arithmetic, the normalised text otherwise.

    Examples:
        >>> answer_key("arithmetic", "(6 / 4)") == answer_key("arithmetic", "( 1.5 )")
        True
        >>> answer_key("generic", "Paris.")
        'paris'
    """
    _check_task(task)
    if task == "arithmetic":
        value = safe_eval_arithmetic(answer)
        if value is None:
            return normalize_text(answer)
        value = round(value, 6)
        return repr(0.0 if value == 0 else value)
    return normalise_answer(task, answer) or normalize_text(answer)


def answers_agree(task: str, answer: str, gold: str) -> bool:
    """Whether a teacher answer agrees with a gold label (values for arithmetic, normalised text otherwise).

    Examples:
        >>> answers_agree("arithmetic", "(84 / 2)", "( 84.0 / 2.0 )"), answers_agree("nli", "neutral", "Neutral")
        (True, True)
    """
    if task == "arithmetic":
        left, right = safe_eval_arithmetic(answer), safe_eval_arithmetic(gold)
        if left is not None and right is not None:
            return math.isclose(left, right, rel_tol=1e-6, abs_tol=1e-6)
    return answer_key(task, answer) == answer_key(task, gold)


@dataclass(frozen=True)
class Vote:
    """The majority vote over one record's samples.

    Attributes:
        winner: the winning answer as the first sample that gave it wrote it ("" when none parsed).
        winners: indices of the samples whose answer agrees with the winner, in sample order.
        agreement: ``len(winners) / number of samples`` (0.0 when none parsed).

    Examples:
        >>> Vote("yes", (0, 2), 2 / 3).agreement
        0.6666666666666666
    """

    winner: str
    winners: tuple[int, ...]
    agreement: float


def vote_answers(task: str, answers: Sequence[str | None]) -> Vote:
    """Majority vote over sample answers (None or "" for an unparsable sample).

    Answers are grouped by :func:`answer_key`; the largest group wins and a tie goes to the group whose
    first member came first. The agreement is the winner's share of all samples, unparsable ones included.

    Examples:
        >>> vote = vote_answers("nli", ["neutral", "entailment", "entailment", None])
        >>> vote.winner, vote.winners, vote.agreement
        ('entailment', (1, 2), 0.5)
        >>> vote_answers("nli", [None, None]).winner
        ''
    """
    groups: dict[str, list[int]] = {}
    for index, answer in enumerate(answers):
        if answer:
            groups.setdefault(answer_key(task, answer), []).append(index)
    if not groups:
        return Vote("", (), 0.0)
    best = max(groups.values(), key=lambda members: (len(members), -members[0]))
    return Vote(str(answers[best[0]]), tuple(best), len(best) / len(answers))
