"""Answer extraction helpers (cotkit.reading.answers): cutting, cues, numbers, labels, closed sets, sequences."""

from __future__ import annotations

from fractions import Fraction

import pytest

from cotkit.reading import answers
from cotkit.reading.answers import (
    cut_completion,
    extract_answer,
    find_cues,
    format_number,
    iter_boxed,
    last_boxed,
    last_number,
    parse_choice,
    parse_closed_text,
    parse_gold_number,
    parse_number,
)

# ------------------------------------------------------------------------------ \boxed


def test_last_boxed_respects_nested_braces_and_takes_the_last():
    text = r"first \boxed{1} then \boxed{\frac{a}{b+\sqrt{2}}} done"
    assert last_boxed(text) == r"\frac{a}{b+\sqrt{2}}"
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed(r"so \boxed 5$ ok") == "5"
    assert last_boxed(r"unclosed \boxed{3") is None
    assert last_boxed("no box") is None


def test_iter_boxed_yields_every_complete_box_in_order():
    got = [c for _, _, c in iter_boxed(r"\boxed{1} and \boxed{{2}} and \boxed{3")]
    assert got == ["1", "{2}"]


# ------------------------------------------------------------------------------ cutting


@pytest.mark.parametrize(
    "text, stop, expected",
    [
        ("She makes $18.\n\nQ: Tom has 5 apples.", (), "She makes $18."),
        ("She makes $18.\nQ: Tom has 5 apples.", (), "She makes $18."),
        ("So 18.\nQuestion: next", (), "So 18."),
        ("x = 4.\n\nProblem: Find y = 7.", (), "x = 4."),
        ("So the answer is 18. Q: Tom has 5 apples.", (), "So the answer is 18."),
        ("The answer is 18.<|im_end|>\n<|im_start|>user\nWhat is 7?", (), "The answer is 18."),
        ("The answer is 18.<|eot_id|>more", (), "The answer is 18."),
        ("The answer is 18.\nUser: and 20?", (), "The answer is 18."),
        ("She has 18 left.\n\nQuestion 2: Tom has 5 apples.", (), "She has 18 left."),
        ("x = 4.\nProblem 3. Find y = 7.", (), "x = 4."),
        # a user stop sequence, even one no marker covers
        ("The answer is 18.###The answer is 5.", ["###"], "The answer is 18."),
        # a whitespace stop in the leading whitespace is not the end of the answer
        ("\n\nThe answer is 18.\n\nMore text", ["\n\n"], "\n\nThe answer is 18."),
        # a marker before any answer text is not a cut (a completion may start by restating)
        ("Question: restated. The answer is 18.", (), "Question: restated. The answer is 18."),
    ],
)
def test_cut_completion(text, stop, expected):
    assert cut_completion(text, stop) == expected


# ------------------------------------------------------------------------------ cues


def test_find_cues_finds_every_cue_family_in_order():
    text = (
        "Step. The answer is 3.\n#### 4\nAnswer: 5\n\\boxed{6}\nx --> 7 END\n"
        "Therefore, the answer (arabic numerals) is 8.\nA: 9"
    )
    names = [c.name for c in find_cues(text)]
    assert names == ["answer is", "####", "answer:", "boxed", "-->", "answer is", "A:"]
    spans = [c.span.strip() for c in find_cues(text)]
    assert spans[0] == "3." and spans[4] == "7" and spans[-1] == "9"


@pytest.mark.parametrize(
    "text",
    ["The last option is 12/25/1937.", "Option (C) is wrong.", "Each choice is plausible.", "The answers are 3 and 4."],
)
def test_phrases_that_are_not_cues(text):
    assert find_cues(text) == []


def test_a_colon_counts_only_on_the_last_line():
    assert [c.name for c in find_cues("A: 5 apples\nso 6 left")] == []
    assert [c.name for c in find_cues("so 6 left\nA: 6")] == ["A:"]


def test_cue_span_continues_past_blank_lines_and_trailing_equals():
    (cue,) = find_cues("Therefore, the answer is \n\n$192 x 12 = \n\n$2,304")
    assert parse_number(cue.span).value == 2304


# ------------------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    "span, value",
    [
        ("18", 18),
        ("18.", 18),
        ("$18", 18),
        ("$18.00.", 18),
        ("18.0", 18),
        ("1,234", 1234),
        ("$1,234.50 in total", Fraction(2469, 2)),
        ("-5", -5),
        ("\u22125 degrees", -5),
        ("-$5", -5),
        ("3/4", Fraction(3, 4)),
        (r"\frac{3}{4}", Fraction(3, 4)),
        (r"\dfrac{3}{4} of the cake", Fraction(3, 4)),
        (r"\frac34", Fraction(3, 4)),
        (".5 pounds", Fraction(1, 2)),
        ("18 dollars", 18),
        ("5 cm", 5),
        ("25%", 25),
        (r"25\%", 25),
        ("1{,}000", 1000),
        (r"\$18", 18),
        (r"$\boxed{18}$", 18),
        (r"\text{18 apples}", 18),
        ("**18**", 18),
        ("5 + 3 = 8", 8),
        ("9 * 2 = $18 per day", 18),
        ("3/4 - 1/4 = 2/4 = 1/2", Fraction(1, 2)),
        ("18, since 16 - 3 - 4 = 9 eggs", 18),
        ("16-3=13", 13),
        ("five", 5),
        ("seventy six", 76),
        ("thirty-seven.", 37),
        ("two hundred and eighty.", 280),
        ("one hundred seventy-four thousand and eighty", 174080),
        ("fifty-two point six two", Fraction(5262, 100)),
        ("three-tenths", Fraction(3, 10)),
        ("negative five", -5),
    ],
)
def test_parse_number(span, value):
    n = parse_number(span)
    assert n is not None and n.value == value


@pytest.mark.parametrize("span", ["", "not sure", "unknown", "the boots", "a lot"])
def test_parse_number_none(span):
    assert parse_number(span) is None


def test_percent_is_kept_in_the_normal_form():
    n = parse_number("25%")
    assert n.percent and n.normalized == "25%"


@pytest.mark.parametrize(
    "value, text", [(Fraction(18), "18"), (Fraction(3, 4), "0.75"), (Fraction(-5, 2), "-2.5"), (Fraction(1, 3), "1/3")]
)
def test_format_number(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(
    "gold, value",
    [("18", 18), ("1,234", 1234), ("-3", -3), ("0.5", Fraction(1, 2)), ("3/4", Fraction(3, 4)), (r"\frac{1}{2}", Fraction(1, 2)), ("$5", 5)],
)
def test_parse_gold_number(gold, value):
    assert parse_gold_number(gold).value == value


@pytest.mark.parametrize("gold", ["", "eighteen", "18 apples", "1/0", "x"])
def test_parse_gold_number_rejects_non_numbers(gold):
    assert parse_gold_number(gold) is None


def test_last_number_skips_digits_glued_to_letters_and_reads_signs_only_at_a_boundary():
    assert last_number("16-3=13 left").value == 13
    assert last_number("We had 4 cups of H2O").value == 4
    assert last_number("3rd place").value == 3
    assert last_number("it fell to -4 today").value == -4
    assert last_number("no digits") is None


# ------------------------------------------------------------------------------ choices

OPTIONS = [("A", "12/11/1937"), ("B", "12/25/1937"), ("C", "01/04/1938"), ("D", "none of the above")]


@pytest.mark.parametrize(
    "span, label",
    [
        ("(B).", "B"),
        ("B.", "B"),
        ("B", "B"),
        ("b)", "B"),
        (" (B) 12/25/1937.", "B"),
        ("option (B)", "B"),
        ("most likely (B)", "B"),
        ("**(B)**", "B"),
        (r"$\boxed{B}$", "B"),
        ("[B]", "B"),
        ("B, 12/25/1937", "B"),
        ("12/25/1937.", "B"),
        ('"12/25/1937"', "B"),
        ("none of the above.", "D"),
        ("that it is Christmas day (B).", "B"),
    ],
)
def test_parse_choice(span, label):
    got = parse_choice(span, OPTIONS)
    assert got is not None and not got.hedge and got.normalized == label


@pytest.mark.parametrize("span", ["(A) or (B).", "A or C", "A, B, or D.", "(B) and (C)", "either B or C", "(B)/(C)"])
def test_parse_choice_hedges(span):
    got = parse_choice(span, OPTIONS)
    assert got is not None and got.hedge and got.value is None


@pytest.mark.parametrize("span", ["A bird in the hand.", "I think so.", "(E).", "unclear"])
def test_parse_choice_none(span):
    assert parse_choice(span, OPTIONS) is None


def test_numeric_labels_without_choices():
    assert parse_choice("(3)", None).normalized == "3"
    assert parse_choice("4.", [("1", "a"), ("2", "b"), ("3", "c"), ("4", "d")]).normalized == "4"


# ------------------------------------------------------------------------------ closed sets


@pytest.mark.parametrize(
    "span, member",
    [
        ("True.", "True"),
        ("true", "True"),
        ("False, because not True is False.", "False"),
        ("**Yes**", "Yes"),
        ("invalid.", "invalid"),
        ("not valid", "invalid"),
        ("valid.", "valid"),
        ("3. Yes, it would be profitable.", "Yes"),
        ("that the argument is valid.", "valid"),
    ],
)
def test_parse_closed_text(span, member):
    sets = {"True": ["True", "False"], "Yes": ["Yes", "No"], "valid": ["valid", "invalid"], "invalid": ["valid", "invalid"]}
    answer_set = next(s for s in sets.values() if member in s)
    got = parse_closed_text(span, answer_set)
    assert got is not None and not got.hedge and got.value == member


def test_not_valid_is_never_valid_and_not_yes_is_not_yes():
    assert parse_closed_text("not valid", ["valid", "invalid"]).value == "invalid"
    assert parse_closed_text("not yes", ["Yes", "No"]) is None


def test_closed_text_hedge():
    got = parse_closed_text("Yes or No.", ["Yes", "No"])
    assert got.hedge


# ------------------------------------------------------------------------------ extraction


def test_extract_prefers_the_last_cue_that_parses():
    got = extract_answer("The answer is 16. Wait, she eats 3. So the answer is 18.", "number")
    assert (got.raw, got.via) == ("18", "answer is")


def test_extract_skips_a_later_cue_with_no_answer_in_it():
    got = extract_answer("So the answer is (B). I checked, and the answer is correct.", "choice", choices=OPTIONS)
    assert got.normalized == "B"


def test_extract_stops_at_a_cue_that_declines():
    text = "If it means X then the answer is yes.\nTherefore, the answer (Yes or No) is dependent on the meaning."
    got = extract_answer(text, "text", answer_set=["Yes", "No"])
    assert got.status == "refusal" and got.value is None


def test_extract_last_number_only_for_numbers_and_only_in_the_cut_text():
    text = "She sells 9 eggs for $2 each, making $18.\n\nQ: John has 4 cats and 7 dogs."
    got = extract_answer(text, "number")
    assert (got.normalized, got.via) == ("18", "last number")
    assert extract_answer(text, "number", last_number_fallback=False) is None
    assert extract_answer("Options (A) and (B) look fine; 18 is big.", "choice", choices=OPTIONS) is None


def test_extract_uses_a_final_code_output_block_before_the_last_number():
    text = "```python\nprint(30 - 5 - 20)\n```\n```output\n5\n```\n5 cars drove through in the first 15 minutes."
    got = extract_answer(text, "number")
    assert (got.normalized, got.via) == ("5", "output")


def test_extract_whole_completion_that_is_only_an_answer():
    assert extract_answer(" (B)", "choice", choices=OPTIONS).normalized == "B"
    assert extract_answer("True", "text", answer_set=["True", "False"]).value == "True"
    assert extract_answer(" 1,234.", "number").normalized == "1234"
    assert extract_answer("] ) >", "text").value == "] ) >"


def test_extract_rejects_unknown_kinds():
    with pytest.raises(ValueError):
        extract_answer("The answer is 3.", "poem")


def test_open_text_equal_tokens_and_brackets():
    assert answers.open_text_equal("apple, banana cherry.", "apple banana cherry")
    assert not answers.open_text_equal("banana apple cherry", "apple banana cherry")
    assert answers.open_text_equal("])>", "] ) >")
    assert not answers.open_text_equal("] >", "] ) >")
