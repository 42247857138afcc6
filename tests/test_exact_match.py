"""The `exact_match` verifier: one test per pitfall of ../shared/METHODS.md, tables per BBH answer
family, hard cases distilled from real model outputs (benchmarks/fidelity_exact_match.py), bad
input, and every gold answer of the real GSM8K, BBH and ARC data scored through the task plugins."""

from __future__ import annotations

import pytest

from cotkit.errors import ConfigError
from cotkit.types import AnswerKind, Choice, Example, Sample, Status, Verdict
from cotkit_plugins.verifiers.exact_match import ExactMatch

QA_STOPS = ["\n\nQ:", "\nQ:"]


def number(gold: str) -> Example:
    return Example("n", "t", "q", gold, AnswerKind.NUMBER)


def choice(gold: str, labels: str = "ABCDE", texts: list[str] | None = None) -> Example:
    texts = texts or [f"option {lab.lower()}" for lab in labels]
    return Example("c", "t", "q", gold, AnswerKind.CHOICE, choices=[Choice(lab, t) for lab, t in zip(labels, texts)])


def closed(gold: str, answer_set: list[str]) -> Example:
    return Example("s", "t", "q", gold, AnswerKind.TEXT, answer_set=answer_set)


def text(gold: str) -> Example:
    return Example("o", "t", "q", gold, AnswerKind.TEXT)


def verdict(example: Example, completion, stop=()) -> Verdict:
    (v,) = ExactMatch().verify([Sample(example, completion, stop=list(stop))])
    return v


def status(example: Example, completion, stop=()) -> Status:
    return verdict(example, completion, stop).status


C, I, U, E = Status.CORRECT, Status.INCORRECT, Status.UNPARSEABLE, Status.ERROR


# ---------------------------------------------------------------- METHODS.md pitfalls, one each


def test_pitfall_answer_is_at_end_of_text_without_period():
    assert status(number("18"), "She sells 9 eggs at $2. The answer is 18") is C


def test_pitfall_dollar_sign():
    assert status(number("18"), "She makes 9 * 2 = 18 dollars. The answer is $18.") is C


def test_pitfall_trailing_zeros():
    assert status(number("18"), "The answer is 18.00.") is C


def test_pitfall_boxed():
    assert status(number("18"), r"So she makes $\boxed{18}$ dollars a day.") is C


def test_pitfall_gsm8k_gold_with_commas():
    assert status(number("1,234"), "The answer is 1234.") is C
    assert status(number("1234"), "The answer is 1,234.") is C


def test_pitfall_last_number_from_a_hallucinated_next_question():
    completion = "She sells 9 eggs at $2 each, so she makes $18.\n\nQ: Tom has 5 apples and buys 7 more."
    assert status(number("18"), completion) is C  # markers cut even with no stop given
    assert status(number("18"), completion, QA_STOPS) is C
    # ...and an answer cue inside the hallucinated question is never read either
    hallucinated = "She makes $18 a day.\nQ: Tom has 5 apples. How many? A: The answer is 5."
    assert verdict(number("18"), hallucinated).normalized == "18"


def test_pitfall_stop_sequence_given_by_the_sample_is_honoured():
    completion = "The answer is 18.\n---\nThe answer is 20."
    assert status(number("18"), completion, ["\n---"]) is C
    assert status(number("18"), completion) is I  # without the stop, the last cue (20) wins


@pytest.mark.parametrize(
    "completion",
    [
        "So the answer is(B).",
        "So the answer is\n(B).",
        "So the answer is  (B) .",
        "So the answer is: (B)",
        "So the answer is (B)",
        "so the answer is b.",
        "So the answer is **(B)**.",
        "**So the answer is (B).**",
    ],
)
def test_pitfall_one_trailing_space_in_a_regex(completion):
    # a cue regex that needs exactly "is " + "(X)." scores these 0; each is option B
    assert status(choice("B"), completion) is C


def test_pitfall_listing_options_without_a_cue_is_not_an_answer():
    completion = "Let's look at each option.\n(A) is wrong.\n(B) might work.\n(C) is plausible.\n(D) no."
    for gold in "ABCD":
        assert status(choice(gold), completion) is U


def test_pitfall_bare_letter_in_prose_is_not_an_answer():
    assert status(choice("A"), "A good answer needs care; I am not sure which one it is.") is U


def test_pitfall_options_named_in_the_reasoning_then_the_cue_decides():
    completion = "(A) is too early and (C) too late, so the answer is (B)."
    assert status(choice("B"), completion) is C
    assert status(choice("A"), completion) is I


def test_pitfall_bbh_target_families_each_end_with_so_the_answer_is():
    assert status(choice("(C)"), "... So the answer is (C).") is C
    assert status(closed("True", ["True", "False"]), "... So the answer is True.") is C
    assert status(closed("No", ["Yes", "No"]), "... So the answer is No.") is C
    assert status(closed("invalid", ["valid", "invalid"]), "... So the answer is invalid.") is C
    assert status(number("8"), "1 + 1 + 1 + 1 + 2 + 1 + 1 = 8. So the answer is 8.") is C
    assert status(text("} ] >"), 'So, we need "}", "]", ">". So the answer is } ] >.') is C
    assert status(text("arson aspect census"), "... So the answer is arson aspect census.") is C


def test_pitfall_arc_numeric_labels_and_three_or_five_options():
    ex = choice("3", labels="1234", texts=["rock", "sand", "clay", "silt"])
    assert status(ex, "Clay holds water. The answer is (3).") is C
    assert status(ex, "The answer is 3.") is C
    assert status(ex, "The answer is (2).") is I
    assert status(choice("C", labels="ABC"), "The answer is (C).") is C
    assert status(choice("E", labels="ABCDE"), "The answer is (E).") is C
    assert status(choice("C", labels="ABC"), "The answer is (D).") is U  # not an option of this question


def test_pitfall_minerva_math_final_answer_sentence():
    ex = Example("m", "math", "q", r"\frac12", AnswerKind.MATH)
    completion = r"Final Answer: The final answer is $\dfrac{1}{2}$. I hope it is correct."
    assert status(ex, completion) is C
    assert status(ex, r"so $x = \boxed{0.5}$") is C
    assert status(ex, r"so $x = \boxed{\frac{1}{3}}$") is I


def test_pitfall_fine_tune_cot_student_format():
    assert status(number("18"), "Janet sells 16 - 3 - 4 = 9 eggs, 9 * 2 = 18 --> 18 END") is C
    assert status(choice("B"), "Christmas Eve is 12/24, so tomorrow is 12/25 --> (B) END") is C


def test_pitfall_zero_shot_cot_second_stage_cue():
    completion = "9 eggs at $2 is $18.\nTherefore, the answer (arabic numerals) is 18."
    assert status(number("18"), completion) is C
    completion = "Christmas is 12/25.\nTherefore, among A through E, the answer is B."
    assert status(choice("B"), completion) is C


def test_pitfall_strict_trice_format():
    assert status(number("18"), "She makes 9 * 2 = 18 dollars, so the answer is 18.") is C


# ---------------------------------------------------------------- numbers table


@pytest.mark.parametrize(
    "gold, completion, expected",
    [
        ("18", "The answer is 18 dollars.", C),
        ("5", "The pole is 5 cm long. The answer is 5 cm.", C),
        ("-3", "The temperature drops to -3. The answer is -3.", C),
        ("-3", "The answer is \u22123.", C),
        ("0.75", "The answer is 3/4.", C),
        ("3/4", "The answer is 0.75.", C),
        ("25", "The answer is 25%.", C),
        ("0.25", "The answer is 25%.", I),  # compared as written: 25 != 0.25
        ("18", r"The answer is \$18.", C),
        ("18", "The answer is $18$.", C),
        ("18", "The answer is 18.0", C),
        ("1000", "The answer is 1,000.", C),
        ("1000", r"The answer is 1{,}000.", C),
        ("12.5", "The answer is $12.50.", C),
        ("18", "#### 18", C),
        ("18", "Answer: 18", C),
        ("18", "Final Answer: 18", C),
        ("18", "Janet sells 9 eggs.\nShe makes 9 * 2 = $18\nA: 18", C),
        ("18", "The answer is 17.", I),
        ("18", "The answer is 180.", I),
        ("18", "The answer is 1.8.", I),
        ("8", "The answer is 5 + 3 = 8.", C),
        ("76", "In total, 76 cakes.\nTherefore, the answer (arabic numerals) is seventy six.", C),
        ("9.8", "The answer is 9.8.\nThe answer (in words) is nine point eight gallons.", C),
        ("17", "The answer is 323 / 19 = 17.\n\nThe answer (in words) is seventeen dollars.", C),
        ("2304", "Therefore, the answer is \n\n$192 x 12 = \n\n$2,304", C),
        ("18", "The answer is 18 or 20.", I),  # a hedge is not an answer
        ("0.375", "The answer is 3/8 or 0.375.", C),  # two forms of one value are
        ("18", "I cannot tell how much she makes.", U),
        ("18", "", U),
    ],
)
def test_numbers(gold, completion, expected):
    assert status(number(gold), completion) is expected


@pytest.mark.parametrize(
    "completion",
    [
        "Reasoning...\n\n### Final Answer\n\n(B)",
        "Reasoning...\n\n**Final Answer**\n(B) 12/25/1937",
        "Reasoning...\n\n**Answer: (B)**",
        "<think>the answer is (A)</think>\n\nThe correct answer is **B**.",
        "The final answer is $\\boxed{B}$.",
    ],
)
def test_chat_model_markdown_answers(completion):
    assert status(DATE, completion) is C


def test_number_verdict_fields():
    v = verdict(number("1234"), "So she has $1,234.00 left. The answer is $1,234.00.")
    assert (v.status, v.extracted, v.normalized, v.score) == (C, "$1,234.00", "1234", 1.0)
    v = verdict(number("18"), "She makes 9 * 2 = 18 dollars per day")
    assert v.correct and v.reason == "no answer cue; took the last number"
    v = verdict(number("18"), "no idea")
    assert (v.status, v.extracted, v.score) == (U, None, 0.0)


def test_last_number_fallback_can_be_turned_off():
    ex = Sample(number("18"), "She makes 9 * 2 = 18 dollars per day")
    assert ExactMatch(last_number=False).verify([ex])[0].status is U


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match="last_numbr"):
        ExactMatch(last_numbr=False)


# ---------------------------------------------------------------- choices table

DATE = choice("B", texts=["12/11/1937", "12/25/1937", "01/04/1938", "12/04/1937", "12/25/2006"])


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("So the answer is (B).", C),
        ("So the answer is B.", C),
        ("Answer: (B)", C),
        (r"The answer is $\boxed{B}$.", C),
        (r"\boxed{(B)}", C),
        ("So the answer is 12/25/1937.", C),  # the option text after the cue
        ("So the answer is (B) 12/25/1937.", C),
        ("The correct option is B, 12/25/1937.", C),
        ("Therefore, among A through E, the answer is most likely B, because...", C),
        ("The answer is option B.", C),
        ("The best answer is D--12/04/1937.", I),
        ("So the answer is (A).", I),
        ("So the answer is 12/11/1937.", I),
        ("So the answer is (B) or (C).", I),  # hedge
        ("So the answer is A, B, or D.", I),
        ("So the answer is (A) and (B).", I),
        ("Therefore, among A through E, the answer is either B or C.", I),
        ("(B)", C),  # a completion that is only a label (direct prompting)
        (" B.", C),
        ("(A) 12/11/1937\n(B) 12/25/1937\n(C) 01/04/1938", U),  # listing options, no cue
        ("The answer is none of these.", U),
        ("So the answer is (F).", U),  # not an option
    ],
)
def test_choices(completion, expected):
    assert status(DATE, completion) is expected


def test_hedge_verdict_names_both_and_says_why():
    v = verdict(DATE, "So the answer is (A) or (B).")
    assert v.status is I and v.normalized == "A|B" and v.reason == "names more than one answer"


def test_gold_given_as_option_text_maps_to_its_label():
    ex = choice("12/25/1937", texts=["12/11/1937", "12/25/1937", "01/04/1938"], labels="ABC")
    assert status(ex, "So the answer is (B).") is C
    assert status(ex, "So the answer is (A).") is I


def test_choice_without_choices_compares_labels():
    ex = Example("c", "t", "q", "(C)", AnswerKind.CHOICE)
    assert status(ex, "So the answer is (C).") is C
    assert status(ex, "So the answer is (D).") is I


# ---------------------------------------------------------------- BBH answer families

TF = ["True", "False"]
YN = ["Yes", "No"]
VI = ["valid", "invalid"]


@pytest.mark.parametrize(
    "gold, answer_set, completion, expected",
    [
        ("True", TF, "not ( True ) is False, so True. So the answer is True.", C),
        ("True", TF, "So the answer is true.", C),
        ("True", TF, "So the answer is False.", I),
        ("False", TF, "So the answer is False, since not True is False.", C),
        ("Yes", YN, "So the answer is Yes.", C),
        ("No", YN, "So the answer is no.", C),
        ("yes", ["yes", "no"], "So the answer is Yes.", C),  # sports_understanding's lowercase set
        ("No", YN, "So the answer is Yes or No.", I),
        ("No", YN, "So the answer is both Yes and No.", U),
        ("No", YN, "Therefore, the answer (Yes or No) is dependent on the battle.", U),
        ("Yes", YN, "Therefore, the answer (Yes or No) is 3. Yes, it would be profitable.", C),
        ("invalid", VI, "So the answer is invalid.", C),
        ("invalid", VI, "So the answer is not valid.", C),
        ("valid", VI, "So the answer is not valid.", I),
        ("valid", VI, "So the answer is invalid.", I),
        ("valid", VI, "So the answer is valid.", C),
        ("valid", VI, "So the answer is: the argument is deductively valid.", C),
        ("True", TF, "True", C),  # the whole completion
        ("True", TF, "Let me see. True and False and True.", U),  # no cue: no guessing
    ],
)
def test_bbh_closed_sets(gold, answer_set, completion, expected):
    assert status(closed(gold, answer_set), completion) is expected


@pytest.mark.parametrize(
    "gold, completion, expected",
    [
        ("] ) >", "So the answer is ] ) >.", C),
        ("] ) >", "So the answer is ])>.", C),
        ("] ) >", "So the answer is ]  )  >", C),
        ("] ) >", "So the answer is ] > ).", I),
        ("] ) >", "So the answer is ] ).", I),
        ("} ] >", '"}", "]", ">". So the answer is } ] >.', C),
    ],
)
def test_bbh_dyck_closing_sequences(gold, completion, expected):
    assert status(text(gold), completion) is expected


@pytest.mark.parametrize(
    "gold, completion, expected",
    [
        ("arson aspect census", "So the answer is arson aspect census.", C),
        ("arson aspect census", "So the answer is arson, aspect, census.", C),
        ("arson aspect census", "So the answer is Arson Aspect Census", C),
        ("arson aspect census", "So the answer is aspect arson census.", I),
        ("arson aspect census", "So the answer is arson aspect.", I),
        ("arson aspect census", "We now have: (1) arson < (3) census", U),
    ],
)
def test_bbh_word_sorting_lists(gold, completion, expected):
    assert status(text(gold), completion) is expected


@pytest.mark.parametrize(
    "gold, completion, expected",
    [
        ("8", "1 + 1 + 1 + 1 + 2 + 1 + 1 = 8. So the answer is 8.", C),
        ("-11520", "So the answer is -11520.", C),
        ("-50", "(-5 * 10) = -50. So the answer is -50.", C),
        ("-50", "So the answer is 50.", I),
    ],
)
def test_bbh_numbers(gold, completion, expected):
    assert status(number(gold), completion) is expected


# ---------------------------------------------------------------- bad input


def test_bad_input_is_an_error_verdict_and_never_raises():
    good = Sample(number("18"), "The answer is 18.")
    bad = [
        Sample(number(""), "The answer is 18."),
        Sample(number("   "), "The answer is 18."),
        Sample(number("eighteen dollars"), "The answer is 18."),
        Sample(number("18"), None),  # type: ignore[arg-type]
        Sample(number("18"), 18),  # type: ignore[arg-type]
        Sample(Example("x", "t", "q", "18", "poem"), "The answer is 18."),  # type: ignore[arg-type]
        Sample(None, "The answer is 18."),  # type: ignore[arg-type]
        "not a sample",
    ]
    verdicts = ExactMatch().verify([good, *bad, good])
    assert len(verdicts) == len(bad) + 2
    assert verdicts[0].correct and verdicts[-1].correct
    for v in verdicts[1:-1]:
        assert v.status is E and v.reason and not v.correct
    assert "gold answer is empty" in verdicts[1].reason
    assert "not a number" in verdicts[3].reason
    assert "not a string" in verdicts[4].reason


def test_verify_is_batch_shaped_and_ordered():
    samples = [Sample(number(str(i)), f"The answer is {i}.") for i in range(50)]
    samples[7] = Sample(number("7"), "The answer is 8.")
    verdicts = ExactMatch().verify(samples)
    assert [v.correct for v in verdicts] == [i != 7 for i in range(50)]
    assert ExactMatch().verify([]) == []


# ---------------------------------------------------------------- real task objects and data


def test_gsm8k_gold_solutions_and_answer_sentences_are_correct(host, data_dir):
    task = host.task("gsm8k", data_dir=data_dir)
    examples = task.examples("test")
    assert len(examples) == 1319
    stop = task.stop_sequences("fewshot")
    v = ExactMatch()
    # the publisher's own solution ("... #### 1,234") and the exemplar sentence are correct answers
    verdicts = v.verify([Sample(ex, ex.raw["answer"], stop=stop) for ex in examples])
    assert all(x.correct for x in verdicts), [x for x in verdicts if not x.correct][:3]
    verdicts = v.verify([Sample(ex, f"Step.\n{task.answer_sentence(ex)}\n\nQ: 9 + 9?", stop=stop) for ex in examples])
    assert all(x.correct for x in verdicts)
    # and another number is not
    wrong = v.verify([Sample(ex, f"The answer is {float(ex.answer) + 1:g}.", stop=stop) for ex in examples])
    assert not any(x.correct for x in wrong)


BBH_TASKS = [
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
    "word_sorting",
]  # fmt: skip


def _wrong_answer(ex: Example) -> str:
    """A different answer of the same family."""
    if ex.answer_kind is AnswerKind.CHOICE:
        # snarks row 88 is published with a single option: any other label is wrong there too
        return next((f"({c.label})" for c in ex.choices if c.label != ex.answer), "(Z)")
    if ex.answer_kind is AnswerKind.NUMBER:
        return str(int(ex.answer) + 1)
    if ex.answer_set:
        return next(a for a in ex.answer_set if a != ex.answer)
    tokens = ex.answer.split()
    return " ".join(tokens[:-1]) if len(tokens) > 1 else f"{tokens[0]} {tokens[0]}"


@pytest.mark.parametrize("name", BBH_TASKS)
def test_bbh_every_target_in_the_official_format(host, data_dir, name):
    task = host.task(f"bbh:{name}", data_dir=data_dir)
    examples = task.examples("test")
    stop = task.stop_sequences("fewshot")
    v = ExactMatch()
    right = v.verify([Sample(ex, f"Let's see. {task.answer_sentence(ex)}\n\nQ: next", stop=stop) for ex in examples])
    assert [x.status for x in right] == [C] * len(examples), [
        (ex.id, ex.answer, x) for ex, x in zip(examples, right) if not x.correct
    ][:3]
    published = [Sample(ex, f"Thinking. So the answer is {ex.raw['target']}.", stop=stop) for ex in examples]
    assert all(x.correct for x in v.verify(published))
    wrong = [Sample(ex, f"So the answer is {_wrong_answer(ex)}.", stop=stop) for ex in examples]
    assert not any(x.correct for x in v.verify(wrong))


def test_bbh_irregular_text_targets_match_the_published_metric(host, data_dir):
    # movie_recommendation row 163's target is "Monsters, Inc" though its options split it in two:
    # the published metric scores every letter wrong there, and so does exact_match.
    task = host.task("bbh:movie_recommendation", data_dir=data_dir)
    irregular = [ex for ex in task.examples("test") if ex.meta.get("irregular_target")]
    assert irregular
    for ex in irregular:
        assert status(ex, "So the answer is (B).") is not C
        assert status(ex, f"So the answer is {ex.answer}.") is C


def test_arc_every_answer_key(host, data_dir):
    task = host.task("arc:challenge", data_dir=data_dir)
    examples = task.examples("test")
    odd = [ex for ex in examples if len(ex.choices) != 4]
    assert odd  # 3- and 5-option questions (numeric labels: test_pitfall_arc_numeric_labels...)
    v = ExactMatch()
    right = v.verify([Sample(ex, f"Because... The answer is ({ex.answer}).") for ex in examples])
    assert all(x.correct for x in right)
    by_text = v.verify(
        [Sample(ex, f"The answer is {next(c.text for c in ex.choices if c.label == ex.answer)}.") for ex in examples]
    )
    assert sum(x.correct for x in by_text) / len(examples) > 0.99  # option texts that prefix another are ambiguous
    wrong = v.verify([Sample(ex, f"The answer is ({_wrong_answer(ex)[1:-1]}).") for ex in examples])
    assert not any(x.correct for x in wrong)
