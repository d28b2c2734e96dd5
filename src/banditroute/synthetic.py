"""A built-in synthetic workload: eight prompt families routed over six priced models.

The best model differs between families: specialists beat the frontier model on
math, code and logic, a chat model on creative writing and support replies, and the
mid-tier model on summaries. Routing per prompt therefore pays off, which makes the
workload a quick end-to-end check of a routing policy when no real log is at hand.

Each prompt comes from one of several templates of its family with random fill-ins,
so prompts of one family are similar but not identical. A model's success
probability on a prompt is its family-level probability shifted on the logit scale by
the prompt's difficulty. The logged quality is a 0/1 draw from that probability.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from banditroute.catalog import Catalog, ModelSpec
from banditroute.errors import ConfigError
from banditroute.routing_log import CHARACTERS_PER_TOKEN, LoadReport, RoutingLog

MODELS = (
    ModelSpec("frontier", input_usd_per_mtok=3.0, output_usd_per_mtok=15.0),
    ModelSpec("mid-tier", input_usd_per_mtok=0.5, output_usd_per_mtok=1.5),
    ModelSpec("small", input_usd_per_mtok=0.1, output_usd_per_mtok=0.1),
    ModelSpec("code-specialist", input_usd_per_mtok=0.3, output_usd_per_mtok=1.2),
    ModelSpec("math-specialist", input_usd_per_mtok=0.2, output_usd_per_mtok=0.6),
    ModelSpec("verbose-chat", input_usd_per_mtok=0.25, output_usd_per_mtok=1.0),
)
"""The synthetic catalog, with list prices in USD per million tokens."""

SUCCESS_PROBABILITY = {
    # family          frontier  mid  small  code  math  chat
    "arithmetic": (0.65, 0.50, 0.30, 0.45, 0.92, 0.35),
    "python-coding": (0.62, 0.45, 0.25, 0.92, 0.40, 0.30),
    "trivia": (0.85, 0.70, 0.55, 0.35, 0.35, 0.65),
    "summarization": (0.80, 0.82, 0.70, 0.40, 0.35, 0.75),
    "translation": (0.85, 0.75, 0.60, 0.35, 0.30, 0.70),
    "creative-writing": (0.70, 0.60, 0.45, 0.25, 0.20, 0.90),
    "logic-puzzle": (0.55, 0.40, 0.20, 0.50, 0.80, 0.25),
    "customer-support": (0.72, 0.70, 0.74, 0.30, 0.25, 0.86),
}
"""Success probability of each model (columns in ``MODELS`` order) on a family's
prompt of average difficulty."""

DIFFICULTY_SENSITIVITY = np.array([0.6, 1.0, 1.3, 0.9, 0.9, 1.0])
"""Per-model factor by which a prompt's difficulty lowers the logit of success."""

PROMPT_DIFFICULTY_SD = 0.35
"""Standard deviation of the per-prompt difficulty around its template's, in logits."""

MEAN_OUTPUT_TOKENS = {
    "arithmetic": 200.0,
    "python-coding": 350.0,
    "trivia": 50.0,
    "summarization": 90.0,
    "translation": 40.0,
    "creative-writing": 250.0,
    "logic-puzzle": 220.0,
    "customer-support": 180.0,
}
"""Mean output tokens of a model of verbosity 1 on each family."""

VERBOSITY = np.array([1.0, 0.9, 0.7, 1.0, 1.1, 2.2])
"""Each model's output length relative to the family mean (``MODELS`` order)."""

OUTPUT_TOKENS_SIGMA = 0.35
"""Log-normal spread of output tokens around their (family, model) mean."""


# Fill-in vocabularies. A template field names a slot, optionally with a digit suffix
# ("name", "name2") for several distinct values drawn from the same slot.

Slot = Sequence[str] | range | Callable[[np.random.Generator], str]

_PARAGRAPHS = (
    (
        "Remote work has changed how many companies plan their offices.",
        "Some firms have cut their floor space by half and rent desks by the day.",
        "Managers report that meetings now take up more of the week than before.",
        "Employees value the saved commute but miss casual conversations.",
        "Several cities worry that empty office towers will hurt local shops.",
    ),
    (
        "Coral reefs cover a tiny share of the ocean floor yet host a quarter of "
        "marine species.",
        "Rising water temperatures cause corals to expel the algae that feed them.",
        "Bleached reefs can recover if the heat stress passes quickly.",
        "Repeated heatwaves, however, leave too little time for regrowth.",
        "Scientists are testing heat-tolerant corals grown in nurseries.",
    ),
    (
        "The town council voted to extend the cycle lane network by twelve kilometres.",
        "Shop owners on the high street feared that losing parking would cost them "
        "customers.",
        "A pilot on one street showed footfall rising after the lane opened.",
        "Cyclist injuries at junctions fell by a third during the trial.",
        "The new lanes will be built in stages over the next three years.",
    ),
    (
        "Grid-scale batteries are being installed faster than most forecasts "
        "predicted.",
        "They store cheap solar power at midday and release it in the evening peak.",
        "Falling cell prices have made such projects profitable without subsidies.",
        "Critics point out that most batteries last only four hours at full output.",
        "Longer storage, such as pumped hydro, is still needed for calm winter weeks.",
    ),
    (
        "The public library extended its opening hours after a budget increase.",
        "Visitor numbers on weekday evenings doubled within two months.",
        "Students use the quiet rooms for exam revision late into the night.",
        "The library also started lending tools, board games and sewing machines.",
        "Staff say the changes brought in people who had not visited for years.",
    ),
)


def _paragraph(rng: np.random.Generator) -> str:
    """Return three sentences, in order, from one of the stock paragraphs."""
    sentences = _PARAGRAPHS[rng.integers(len(_PARAGRAPHS))]
    chosen = np.sort(rng.choice(len(sentences), size=3, replace=False))
    return " ".join(sentences[i] for i in chosen)


def _number_sequence(rng: np.random.Generator) -> str:
    """Return five terms of an arithmetic or geometric sequence."""
    start = int(rng.integers(1, 10))
    step = int(rng.integers(2, 6))
    if rng.random() < 0.5:
        terms = [start + step * i for i in range(5)]
    else:
        terms = [start * step**i for i in range(5)]
    return ", ".join(str(term) for term in terms)


# fmt: off
SLOTS: dict[str, Slot] = {
    "name": (
        "Amara", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro",
        "Ines", "Jonas", "Keiko", "Liam", "Maya", "Noah", "Olga", "Priya",
    ),
    "city": (
        "Lyon", "Porto", "Leeds", "Kraków", "Osaka", "Denver", "Perth", "Bergen",
    ),
    "item": ("crayons", "cookies", "marbles", "stickers", "apples", "candles"),
    "gadget": ("bicycle", "tablet", "pair of headphones", "camera", "guitar"),
    "small": range(2, 10),
    "medium": range(10, 60),
    "large": range(60, 400),
    "speed": range(60, 180, 5),
    "function": (
        "merge_intervals", "top_k_words", "flatten_dict", "chunk_list",
        "dedupe_records", "parse_durations", "rolling_mean", "group_by_key",
    ),
    "things": (
        "customer orders", "temperature readings", "file paths", "email addresses",
        "sensor events", "book titles", "invoice totals", "user sessions",
    ),
    "goal": (
        "the items sorted by frequency",
        "only the entries that appear more than once",
        "a dictionary grouping them by their first letter",
        "the longest increasing run",
        "the median value, ignoring missing entries",
    ),
    "class_name": ("Inventory", "RateLimiter", "TaskQueue", "LRUCache", "EventLog"),
    "algorithm": (
        "binary search over a sorted list",
        "Dijkstra's shortest path algorithm",
        "merge sort",
        "a breadth-first search on a grid",
        "the Knuth-Morris-Pratt string search",
    ),
    "country": (
        "Australia", "Canada", "Kenya", "Peru", "Vietnam", "Norway", "Morocco",
        "New Zealand", "Chile", "Hungary", "Ghana", "Mongolia", "Portugal",
        "Uruguay", "Finland", "Thailand",
    ),
    "book": (
        "Moby-Dick", "Pride and Prejudice", "One Hundred Years of Solitude",
        "The Trial", "Things Fall Apart", "Brave New World", "Middlemarch",
        "Dracula", "The Great Gatsby", "Wuthering Heights",
    ),
    "event": (
        "the first Moon landing", "the fall of the Berlin Wall",
        "the opening of the Suez Canal", "the founding of the United Nations",
        "the first modern Olympic Games",
    ),
    "element": (
        "gold", "potassium", "tungsten", "mercury", "silver", "lead", "tin",
        "sodium", "iron", "copper",
    ),
    "planet_fact": (
        "has the longest day", "has the most moons", "is the hottest",
        "has the strongest winds", "spins on its side",
    ),
    "quiz_intro": (
        "Quick pub quiz question:", "Settle a bet for me:",
        "My niece asked me this today:", "For a crossword I am stuck on:",
        "Trivia night prep:", "Just curious:",
    ),
    "answer_style": (
        "Keep the answer short.", "One line is enough.",
        "Please double-check the facts.", "No long explanation needed.",
    ),
    "audience": (
        "for children", "for a wedding toast", "for a school newsletter",
        "for a birthday card", "for my writing group", "for a radio show",
    ),
    "code_constraint": (
        "Include type hints and a short docstring.",
        "Use only the standard library.",
        "Add a few doctest examples.",
        "Keep it under twenty lines.",
        "Explain the edge cases you handle.",
    ),
    "reply_constraint": (
        "Keep it under one hundred words.", "Use a warm but professional tone.",
        "End with a clear next step.", "Avoid technical jargon.",
    ),
    "paragraph": _paragraph,
    "summary_form": (
        "in two sentences", "in one line for a busy manager",
        "as three short bullet points", "in under thirty words",
    ),
    "language": (
        "French", "Spanish", "German", "Japanese", "Italian", "Portuguese",
        "Dutch", "Polish",
    ),
    "tone": ("formal", "casual", "friendly", "businesslike"),
    "sentence": (
        "The meeting has been moved to Thursday afternoon because of the holiday.",
        "Could you tell me where the nearest pharmacy is, please?",
        "We are sorry, but the museum is closed for renovation until May.",
        "My flight was cancelled and I need a hotel room for tonight.",
        "Please remember to water the plants while we are away on holiday.",
        "The invoice is attached and payment is due within thirty days.",
        "Our team will arrive at the conference centre around nine tomorrow.",
        "I would like to book a table for four people on Saturday evening.",
        "The new software update fixes the login problem reported last week.",
        "Thank you for your patience while we look into your request.",
    ),
    "subject": (
        "a lighthouse keeper", "autumn rain", "a forgotten umbrella",
        "the last train home", "a city at dawn", "an old oak tree",
        "a broken violin", "the first snowfall", "a crowded night market",
    ),
    "style": ("a sea shanty", "a haiku sequence", "a nursery rhyme", "free verse"),
    "character": (
        "a retired astronaut", "a nervous dragon", "a talking cat",
        "a lonely robot", "a young baker", "a clumsy wizard",
    ),
    "discovery": (
        "a door that was not there yesterday", "a map hidden in a teapot",
        "that the neighbours are ghosts", "a message from their future self",
    ),
    "genre": ("mystery", "science fiction", "fantasy", "romance", "horror"),
    "setting": (
        "a floating market", "a research station in Antarctica",
        "a village with no clocks", "a generation ship",
    ),
    "pet": ("a cat", "a dog", "a parrot", "a tortoise", "a rabbit", "a goldfish"),
    "category_a": ("painters", "engineers", "poets", "runners", "chess players"),
    "category_b": ("early risers", "coffee drinkers", "left-handed people"),
    "column": ("status", "region", "owner", "priority", "channel"),
    "colour": ("red", "blue", "green", "yellow", "black", "white"),
    "sequence": _number_sequence,
    "product": (
        "coffee machine", "running shoes", "desk lamp", "phone case",
        "air purifier", "backpack",
    ),
    "service": (
        "banking app", "music streaming", "cloud storage", "meal kit",
        "fitness tracker", "language learning",
    ),
    "order": range(10_000, 99_999),
    "problem": (
        "with a cracked lid", "two weeks late", "in the wrong colour",
        "with a missing charger", "already opened",
    ),
    "discount": range(10, 35, 5),
}
# fmt: on
"""Fill-in values per slot: a sequence of values, a range, or a function of the rng."""

TEMPLATES: dict[str, tuple[tuple[str, float], ...]] = {
    "arithmetic": (
        (
            "{name} buys {small} boxes of {item}, each holding {medium} pieces. "
            "{name2} takes {small2} pieces. How many pieces are left? Show your "
            "working.",
            -0.3,
        ),
        (
            "A train leaves {city} at {speed} km/h and travels for {small} hours "
            "before stopping in {city2}. How many kilometres has it covered?",
            -0.1,
        ),
        (
            "{name} saves {medium} dollars a week for {small} weeks and then spends "
            "{large} dollars on a {gadget}. How much money does {name} have left?",
            0.0,
        ),
        (
            "A rectangular garden is {medium} metres long and {small} metres wide. "
            "{name} fences all four sides at {small2} dollars per metre. What does "
            "the fence cost in total?",
            0.2,
        ),
        (
            "If {small} workers can paint {medium} rooms in {small2} days, how many "
            "days would {small3} workers need to paint {large} rooms at the same "
            "rate? Explain each step.",
            0.5,
        ),
    ),
    "python-coding": (
        (
            "Write a Python function {function} that takes a list of {things} and "
            "returns {goal}. {code_constraint}",
            0.0,
        ),
        (
            "Fix the bug in this Python function so that it handles an empty list of "
            "{things}: def {function}(xs): return sum(xs) / len(xs). "
            "{code_constraint}",
            -0.3,
        ),
        (
            "Write a Python class {class_name} that stores {things} and supports "
            "adding, removing and listing them in sorted order. Add unit tests "
            "with pytest.",
            0.3,
        ),
        (
            "Implement {algorithm} in Python and state its time complexity in one "
            "sentence. {code_constraint}",
            0.1,
        ),
        (
            "Write a Python script that reads a CSV file of {things}, counts the "
            "rows per value of the {column} column and prints the {small} most common.",
            0.0,
        ),
    ),
    "trivia": (
        (
            "{quiz_intro} what is the capital city of {country}, and roughly how "
            "many people live there? {answer_style}",
            -0.2,
        ),
        (
            "{quiz_intro} who wrote the novel {book}, and in which decade was it "
            "first published? {answer_style}",
            0.0,
        ),
        (
            "In which year did {event} take place? Give the year and one sentence "
            "of context. {answer_style}",
            0.1,
        ),
        (
            "{quiz_intro} what is the chemical symbol for {element}, and what is "
            "its atomic number?",
            -0.1,
        ),
        (
            "{quiz_intro} which planet in our solar system {planet_fact}? "
            "{answer_style}",
            0.2,
        ),
    ),
    "summarization": (
        ("Summarise the following paragraph {summary_form}: {paragraph}", 0.0),
        ("Read this passage and summarise it {summary_form}. {paragraph}", 0.1),
        ("{paragraph} Please summarise the text above {summary_form}.", -0.1),
        (
            "Here is a short news item. {paragraph} What are its key points, "
            "{summary_form}?",
            0.2,
        ),
    ),
    "translation": (
        ("Translate into {language}: '{sentence}'", -0.2),
        ("How would you say '{sentence}' in {language}? Keep the tone {tone}.", 0.0),
        (
            "Please translate the following sentence from English to {language}, "
            "keeping it {tone}: {sentence}",
            0.1,
        ),
        (
            "I need this in {language} for a {tone} email to a colleague: '{sentence}'",
            0.2,
        ),
    ),
    "creative-writing": (
        (
            "Write a short poem about {subject} in the style of {style}, {audience}.",
            -0.1,
        ),
        (
            "Write a {small}-sentence story about {character} who discovers "
            "{discovery}. Make it suitable {audience}.",
            0.0,
        ),
        (
            "Compose a funny limerick about {character} who is obsessed with "
            "{subject}, {audience}.",
            0.1,
        ),
        (
            "Write the opening paragraph of a {genre} novel set in {setting}, told "
            "from the point of view of {character}.",
            0.3,
        ),
    ),
    "logic-puzzle": (
        (
            "{name}, {name2} and {name3} each own a different pet: {pet}, {pet2} or "
            "{pet3}. {name} does not own {pet2}. {name3} owns {pet3}. Who owns "
            "{pet}? Explain your reasoning.",
            0.0,
        ),
        (
            "If all {category_a} are {category_b} and some {category_b} are "
            "{category_a2}, can we conclude that some {category_a} are "
            "{category_a2}? Explain step by step.",
            0.3,
        ),
        (
            "A bag holds {medium} {colour} and {medium2} {colour2} marbles. What is "
            "the fewest marbles you must draw without looking to be sure of two of "
            "the same colour?",
            -0.1,
        ),
        (
            "{name} is older than {name2}, and {name2} is older than {name3}. "
            "{name4} is younger than {name3}. Who is the second youngest of the "
            "four?",
            0.2,
        ),
        (
            "What is the next number in the sequence {sequence}? Explain the rule "
            "you found.",
            -0.2,
        ),
    ),
    "customer-support": (
        (
            "A customer writes: 'My {product} order #{order} arrived {problem}. I "
            "want a refund.' Draft a polite reply from the support team. "
            "{reply_constraint}",
            0.0,
        ),
        (
            "Write a friendly reply to {name}, a customer whose {service} "
            "subscription was charged twice this month and who is threatening to "
            "cancel. {reply_constraint}",
            0.1,
        ),
        (
            "Customer message from {name}: 'I cannot log into my {service} account "
            "since I reset my password.' Reply with clear troubleshooting steps. "
            "{reply_constraint}",
            -0.1,
        ),
        (
            "Draft an apology email to {name}, whose {product} delivery is {small} "
            "days late, and offer a {discount} percent discount on the next order.",
            0.0,
        ),
    ),
}
"""Prompt templates per family, each with its difficulty in logits (harder > 0)."""

FAMILIES = tuple(SUCCESS_PROBABILITY)
"""Family names, in the order of ``SUCCESS_PROBABILITY``."""


@dataclass(frozen=True)
class SyntheticWorkload:
    """A synthetic full-information log and its ground-truth success probabilities."""

    log: RoutingLog
    """Full-information log whose qualities are 0/1 draws from ``expected_quality``."""
    expected_quality: np.ndarray
    """(n_prompts, n_models) ground-truth success probability."""
    families: list[str]
    """Family name per prompt (also ``log.categories``)."""


def generate_workload(n_prompts: int, rng: np.random.Generator) -> SyntheticWorkload:
    """Generate ``n_prompts`` prompts with every model's quality, tokens and cost.

    The same generator state gives the same workload.
    """
    if n_prompts < 1:
        raise ConfigError(f"n_prompts is {n_prompts}; generate at least one prompt.")

    catalog = Catalog(MODELS)
    family_index = rng.integers(len(FAMILIES), size=n_prompts)
    families = [FAMILIES[i] for i in family_index]
    prompts, template_difficulty = _generate_prompts(families, rng)

    difficulty = template_difficulty + rng.normal(0.0, PROMPT_DIFFICULTY_SD, n_prompts)
    expected_quality = _expected_quality(family_index, difficulty)
    quality = (rng.random(expected_quality.shape) < expected_quality).astype(np.float64)

    input_tokens = np.array(
        [math.ceil(len(prompt) / CHARACTERS_PER_TOKEN) for prompt in prompts],
        dtype=np.float64,
    )
    output_tokens = _output_tokens(family_index, rng)
    cost_usd = (
        input_tokens[:, None] * catalog.input_usd_per_token[None, :]
        + output_tokens * catalog.output_usd_per_token[None, :]
    )

    log = RoutingLog(
        prompt_ids=[f"synthetic-{i:06d}" for i in range(n_prompts)],
        prompts=prompts,
        categories=list(families),
        catalog=catalog,
        quality=quality,
        cost_usd=cost_usd,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        report=_report(n_prompts, len(catalog)),
    )
    return SyntheticWorkload(
        log=log, expected_quality=expected_quality, families=families
    )


def _generate_prompts(
    families: list[str], rng: np.random.Generator
) -> tuple[list[str], np.ndarray]:
    """Fill a random template per prompt and return the texts and their difficulties."""
    prompts = []
    difficulties = np.empty(len(families))
    for i, family in enumerate(families):
        templates = TEMPLATES[family]
        template, difficulties[i] = templates[rng.integers(len(templates))]
        prompts.append(_fill_template(template, rng))
    return prompts, difficulties


def _fill_template(template: str, rng: np.random.Generator) -> str:
    """Fill each field. Fields of one slot ("name", "name2") get distinct values."""
    values: dict[str, str] = {}
    used: dict[str, set[str]] = {}
    for field in _TEMPLATE_FIELDS[template]:
        slot = field.rstrip("0123456789")
        slot_values = used.setdefault(slot, set())
        values[field] = _draw_distinct(SLOTS[slot], slot_values, rng)
        slot_values.add(values[field])
    return template.format(**values)


def _draw_distinct(slot: Slot, excluded: set[str], rng: np.random.Generator) -> str:
    """Draw values of ``slot`` until one is not in ``excluded``."""
    value = _draw_value(slot, rng)
    while value in excluded:
        value = _draw_value(slot, rng)
    return value


def _draw_value(slot: Slot, rng: np.random.Generator) -> str:
    if callable(slot):
        return slot(rng)
    return str(slot[int(rng.integers(len(slot)))])


def _template_fields(template: str) -> tuple[str, ...]:
    fields = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return tuple(dict.fromkeys(fields))


_TEMPLATE_FIELDS = {
    template: _template_fields(template)
    for templates in TEMPLATES.values()
    for template, _ in templates
}


def _expected_quality(family_index: np.ndarray, difficulty: np.ndarray) -> np.ndarray:
    """Shift each family's success probabilities by the prompt difficulty in logits."""
    base = np.array([SUCCESS_PROBABILITY[family] for family in FAMILIES])
    logits = np.log(base / (1.0 - base))[family_index]
    shifted = logits - difficulty[:, None] * DIFFICULTY_SENSITIVITY[None, :]
    return 1.0 / (1.0 + np.exp(-shifted))


def _output_tokens(family_index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw whole output token counts log-normally around each (family, model) mean."""
    family_means = np.array([MEAN_OUTPUT_TOKENS[family] for family in FAMILIES])
    means = family_means[family_index][:, None] * VERBOSITY[None, :]
    spread = rng.normal(0.0, OUTPUT_TOKENS_SIGMA, means.shape)
    tokens = means * np.exp(spread - OUTPUT_TOKENS_SIGMA**2 / 2.0)
    return np.maximum(np.rint(tokens), 1.0)


def _report(n_prompts: int, n_models: int) -> LoadReport:
    return LoadReport(
        source="synthetic workload",
        rows=n_prompts * n_models,
        prompts=n_prompts,
        models=n_models,
        duplicate_rows=0,
        missing_model_rows=0,
        null_quality=0,
        incomplete_prompts=0,
        notes=("generated by banditroute.synthetic; qualities are 0/1 draws",),
    )
