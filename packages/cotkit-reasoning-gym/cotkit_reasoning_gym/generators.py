"""reasoning-gym's generators seen from cotkit: their names, their options as typed cotkit options, their splits.

reasoning-gym is imported only inside functions (it pulls in sympy and matplotlib), so `cotkit
plugins` and `cotkit --help` stay light; that is why the dataset names are written out here, and a
test checks them against the installed registry.

Splits are generated, not carved: each split draws items from its own generator seed (derived by
hashing, so seeds lie far apart: most generators seed item i with `seed + i`, and neighbouring seeds
would repeat each other's items), skipping any question an earlier split already holds. The order
is fixed (few-shot exemplars, held-out, dev, train), so growing the training set never changes the
held-out questions.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, make_dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

from cotkit import ConfigError, UnknownNameError, option

#: Every generator of reasoning-gym 0.1.25 except `composite` (a mixture of the others, configured
#: by dataset specs, not difficulty options).
DATASETS: tuple[str, ...] = (
    "ab", "acre", "advanced_geometry", "aiw", "arc_1d", "arc_agi", "base_conversion", "basic_arithmetic", "bf",
    "binary_alternation", "binary_matrix", "bitwise_arithmetic", "boxnet", "caesar_cipher", "calendar_arithmetic",
    "chain_sum", "circuit_logic", "codeio", "coin_flip", "color_cube_rotation", "complex_arithmetic", "count_bits",
    "count_primes", "countdown", "course_schedule", "cryptarithm", "decimal_arithmetic", "decimal_chain_sum", "dice",
    "emoji_mystery", "family_relationships", "figlet_font", "fraction_simplification", "futoshiki", "game_of_life",
    "game_of_life_halting", "gcd", "graph_color", "group_anagrams", "gsm_symbolic", "intermediate_integration",
    "isomorphic_strings", "jugs", "kakurasu", "knight_swap", "knights_knaves", "largest_island", "lcm",
    "leg_counting", "letter_counting", "letter_jumble", "list_functions", "mahjong_puzzle", "manipulate_matrix",
    "maze", "mini_sudoku", "modulo_grid", "n_queens", "needle_haystack", "number_filtering", "number_format",
    "number_sequence", "number_sorting", "palindrome_generation", "palindrome_partitioning", "path_star",
    "polynomial_equations", "polynomial_multiplication", "pool_matrix", "power_function", "prime_factorization",
    "products", "propositional_logic", "puzzle24", "quantum_lock", "ransom_note", "rearc", "rectangle_count",
    "rotate_matrix", "rotten_oranges", "rubiks_cube", "rush_hour", "self_reference", "sentence_reordering",
    "shortest_path", "simple_equations", "simple_geometry", "simple_integration", "sokoban", "spell_backward",
    "spiral_matrix", "string_insertion", "string_manipulation", "string_splitting", "string_synthesis", "sudoku",
    "survo", "syllogism", "time_intervals", "tower_of_hanoi", "tsumego", "word_ladder", "word_sequence_reversal",
    "word_sorting", "zebra_puzzles",
)  # fmt: skip

#: Generator config fields the task sets itself (each split's seed, and how many items to draw).
OWN_FIELDS = ("seed", "size")
#: How many items a split may draw per question it keeps before the generator counts as exhausted.
DRAWS_PER_ITEM = 20


@dataclass
class RGConfig:
    """Options of every `rg:<dataset>` task (`-O KEY=VALUE`, `task_options:` in a run config)."""

    seed: int = option(0, help="seed of the generated splits; each split draws from its own seed derived from it")
    train_size: int = option(1000, help="questions in the train split", minimum=1)
    heldout_size: int = option(200, help="questions in the held-out split (generated first: never changes with the others)", minimum=1)
    shots: int = option(3, help="few-shot exemplars in `fewshot` prompts, drawn from the generator apart from every split", minimum=0)
    generator: dict[str, Any] = option(
        default_factory=dict,
        extra_keys=True,
        help="the generator's difficulty options, e.g. min_digits=2 for basic_arithmetic: the fields of its "
        "reasoning-gym config except seed and size, typed as that config declares them",
    )


def registry() -> dict[str, tuple[type, type]]:
    """reasoning-gym's dataset registry: name -> (dataset class, config class)."""
    from reasoning_gym.factory import DATASETS as REGISTRY

    return REGISTRY


def generator_fields(dataset: str) -> list[dataclasses.Field]:
    """The difficulty fields of a generator's reasoning-gym config (everything but seed and size)."""
    return [f for f in dataclasses.fields(registry()[dataset][1]) if f.name not in OWN_FIELDS and f.init]


@cache
def task_config_class(dataset: str) -> type:
    """RGConfig's own options plus the generator's fields as typed options: what `-O` is checked against."""
    if dataset not in registry():
        raise ConfigError(f"rg:{dataset}: the installed reasoning-gym has no generator {dataset!r}")
    hints = typing.get_type_hints(registry()[dataset][1])
    own = [f.name for f in dataclasses.fields(RGConfig) if f.name != "generator"]
    fields = []
    for f in dataclasses.fields(RGConfig):
        if f.name != "generator":
            fields.append((f.name, typing.get_type_hints(RGConfig)[f.name], dataclasses.field(default=f.default, metadata=f.metadata)))
    for f in generator_fields(dataset):
        if f.name in own:
            raise ConfigError(f"rg:{dataset}: the generator's option {f.name!r} clashes with the task option of that name")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"reasoning-gym {dataset} option (default {default!r})"
        fields.append((f.name, option_type(hints[f.name]), option(default_factory=lambda d=default: d, help=help_text)))
    return make_dataclass(f"RG_{dataset}_Config", fields)


_SCALARS = (bool, int, float, str)


def option_type(tp: Any) -> Any:
    """The cotkit option type for a generator field's type: scalars, literals, optionals and lists of
    them as declared (tuples and sequences become lists); anything else passes through untyped."""
    origin, args = get_origin(tp), get_args(tp)
    if tp in _SCALARS or origin is Literal:
        return tp
    if origin is Union:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and option_type(inner[0]) is not Any:
            return option_type(inner[0]) | None
        return Any
    if origin in (list, tuple, collections.abc.Sequence):
        items = [a for a in args if a is not Ellipsis]
        if len(set(items)) == 1 and items[0] in _SCALARS:
            return list[items[0]]
        return Any
    return Any


def generator_options(dataset: str, values: dict[str, Any]) -> dict[str, Any]:
    """The generator's options out of a task's typed options (or an example's stored copy), as its
    reasoning-gym config takes them: tuples where it declares tuples."""
    hints = typing.get_type_hints(registry()[dataset][1])
    out = {}
    for f in generator_fields(dataset):
        if f.name in values:
            value = values[f.name]
            out[f.name] = tuple(value) if isinstance(value, list) and get_origin(hints[f.name]) is tuple else value
    return out


def make_generator(dataset: str, options: dict[str, Any], seed: int, size: int) -> Any:
    """A reasoning-gym dataset object; a config it refuses is a ConfigError naming the generator."""
    if dataset not in registry():
        raise UnknownNameError("reasoning-gym dataset", dataset, DATASETS)
    dataset_cls, config_cls = registry()[dataset]
    try:
        config = config_cls(**options, seed=seed, size=size)
        if hasattr(config, "validate"):
            config.validate()
        return dataset_cls(config=config)
    except (AssertionError, ValueError, TypeError) as e:
        raise ConfigError(f"rg:{dataset}: reasoning-gym refuses the options {plain(options)}: {e or type(e).__name__}") from e


def split_seed(dataset: str, seed: int, split: str) -> int:
    """A split's generator seed: a hash, so the seeds of different splits lie far apart."""
    digest = hashlib.sha256(f"rg:{dataset}:{seed}:{split}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def question_key(question: str) -> str:
    """A question with whitespace collapsed: how duplicates across splits are recognized."""
    return " ".join(question.split())


def draw_split(dataset: str, options: dict[str, Any], seed: int, split: str, size: int, taken: set[str]) -> list[dict[str, Any]]:
    """`size` items with questions not in `taken` (which it extends), from the split's own seed."""
    limit = size * DRAWS_PER_ITEM + 100
    generator = make_generator(dataset, options, split_seed(dataset, seed, split), limit)
    items = []
    for index in range(limit):
        if len(items) == size:
            break
        entry = generator[index]
        key = question_key(entry["question"])
        if key in taken:
            continue
        taken.add(key)
        items.append(plain(entry))
    if len(items) < size:
        raise ConfigError(
            f"rg:{dataset}: the generator gave only {len(items)} new distinct questions in {limit} draws for the "
            f"{split} split (asked for {size}); ask for fewer or widen its difficulty options"
        )
    return items


def plain(value: Any) -> Any:
    """JSON-able copy of a generator entry (tuples as lists, anything else as text), as run files store it."""
    return json.loads(json.dumps(value, default=str))


# ------------------------------------------------------------------------------- rationales

_OPERATOR = {"+": 1, "-": -1}


def running_sum_rationale(expression: str, answer: str) -> str | None:
    """`5 - 3 - 6` -> `5 - 3 = 2. 2 - 6 = -4.`: a chain of sums worked left to right, or None when the
    expression is not a chain of numbers joined by + and - or does not come to `answer`."""
    tokens = expression.split()
    if len(tokens) < 3 or len(tokens) % 2 == 0:
        return None
    try:
        total = Decimal(tokens[0])
        steps = []
        for op, operand in zip(tokens[1::2], tokens[2::2], strict=True):
            if op not in _OPERATOR:
                return None
            value = Decimal(operand)
            new = total + _OPERATOR[op] * value
            steps.append(f"{number_text(total)} {op} {operand} = {number_text(new)}.")
            total = new
        if total != Decimal(answer):
            return None
    except (InvalidOperation, ValueError):
        return None
    return " ".join(steps)


def number_text(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: `2`, `-0.5`."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
