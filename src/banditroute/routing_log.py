"""Full-information routing logs: every model's quality and cost for every prompt.

Two formats are read:

- JSON Lines (``.jsonl``, ``.ndjson``, optionally gzip-compressed), one row per
  (prompt, model) with the fields ``prompt_id``, ``category``, ``prompt``, ``model``,
  ``quality``, ``cost_usd``, ``input_tokens`` and ``output_tokens``.
- The RouterBench wide table (``.pkl``/``.pickle`` or ``.csv``), one row per prompt
  with a score column and a ``<model>|total_cost`` column per model.

Model prices come from the ``prices`` file if given, else from ``models.json`` beside
the log, else they are fitted to the logged costs (JSON Lines) or set to placeholders
(RouterBench).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from banditroute.catalog import TOKENS_PER_PRICE_UNIT, Catalog, ModelSpec
from banditroute.errors import LogFormatError

logger = logging.getLogger(__name__)

PRICE_FILE_NAME = "models.json"
"""Name of the price file looked up beside a log when no price file is given."""

REQUIRED_FIELDS = (
    "prompt_id",
    "category",
    "prompt",
    "model",
    "quality",
    "cost_usd",
    "input_tokens",
    "output_tokens",
)
"""Fields every JSON Lines row must have. Only ``quality`` may be null."""

ROUTERBENCH_COST_SUFFIX = "|total_cost"
ROUTERBENCH_TEXT_COLUMNS = (
    "sample_id",
    "prompt",
    "eval_name",
    "oracle_model_to_route_to",
)
"""RouterBench columns that contain no model's score."""

PLACEHOLDER_OUTPUT_USD_PER_MTOK = 1_000_000.0
"""Placeholder output price without a price file: one output "token" costs 1 USD."""

CHARACTERS_PER_TOKEN = 4
"""Characters per token of the ``ceil(characters / 4)`` estimate of prompt tokens."""

UNKNOWN_CATEGORY = "unknown"

_GZIP_MAGIC = b"\x1f\x8b"
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_PICKLE_SUFFIXES = (".pkl", ".pickle")
_CSV_SUFFIXES = (".csv",)
_PRICE_FIT_TOLERANCE = 1e-3
"""Largest deviation of a logged cost from the fitted prices, relative to max cost."""


@dataclass(frozen=True)
class LoadReport:
    """Counts of what a log reader found, kept with the log for reports."""

    source: str
    """Path the log was read from."""
    rows: int
    """Data rows read (JSON Lines rows, or table rows of a wide table)."""
    prompts: int
    models: int
    duplicate_rows: int
    """(prompt_id, model) rows seen again, which were skipped in favour of the first."""
    missing_model_rows: int
    """(prompt, model) pairs with no row at all."""
    null_quality: int
    """Rows whose quality is null or NaN."""
    incomplete_prompts: int
    """Prompts with at least one model whose quality or cost is missing or null."""
    notes: tuple[str, ...] = ()
    """Remarks on how the log was read, such as where the prices came from."""

    def lines(self) -> list[str]:
        """Return a human-readable summary, one line per fact."""
        lines = [
            f"Routing log: {self.source}",
            f"{self.rows:,} rows read, {self.prompts:,} prompts x {self.models} models",
            f"{self.duplicate_rows:,} duplicate (prompt_id, model) rows skipped, "
            f"{self.missing_model_rows:,} (prompt, model) pairs without a row, "
            f"{self.null_quality:,} null qualities",
            f"{self.incomplete_prompts:,} of {self.prompts:,} prompts lack a quality "
            "or cost for at least one model",
        ]
        lines.extend(self.notes)
        return lines


@dataclass(frozen=True, eq=False)
class RoutingLog:
    """Every model's quality, cost and output length per prompt.

    Rows are prompts in first-appearance order, and columns are models in catalog
    order. ``quality`` is in [0, 1], or NaN where a model has no row or a null
    quality. ``cost_usd`` and ``output_tokens`` are NaN where a model has no row.
    """

    prompt_ids: list[str]
    prompts: list[str]
    categories: list[str]
    catalog: Catalog
    quality: np.ndarray
    cost_usd: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    report: LoadReport

    def __post_init__(self) -> None:
        n_prompts = len(self.prompt_ids)
        table_shape = (n_prompts, len(self.catalog))
        expected_shapes = {
            "prompts": (len(self.prompts), n_prompts),
            "categories": (len(self.categories), n_prompts),
            "quality": (self.quality.shape, table_shape),
            "cost_usd": (self.cost_usd.shape, table_shape),
            "input_tokens": (self.input_tokens.shape, (n_prompts,)),
            "output_tokens": (self.output_tokens.shape, table_shape),
        }
        for name, (actual, expected) in expected_shapes.items():
            if actual != expected:
                raise LogFormatError(
                    f"Routing log field {name} has shape {actual}, expected {expected} "
                    f"for {n_prompts} prompts and {len(self.catalog)} models."
                )

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def complete(self) -> np.ndarray:
        """Return a mask of the prompts where every model has a quality and a cost."""
        observed = np.isfinite(self.quality) & np.isfinite(self.cost_usd)
        return observed.all(axis=1)

    def subset(self, rows: np.ndarray | Sequence[int]) -> RoutingLog:
        """Return the prompts at ``rows`` (indices or a boolean mask), same report."""
        index = np.asarray(rows)
        if index.dtype == bool:
            index = np.flatnonzero(index)

        return RoutingLog(
            prompt_ids=[self.prompt_ids[i] for i in index],
            prompts=[self.prompts[i] for i in index],
            categories=[self.categories[i] for i in index],
            catalog=self.catalog,
            quality=self.quality[index],
            cost_usd=self.cost_usd[index],
            input_tokens=self.input_tokens[index],
            output_tokens=self.output_tokens[index],
            report=self.report,
        )


@dataclass
class _LogTable:
    """A log being assembled: prompts and models in first-appearance order."""

    prompt_ids: list[str]
    prompts: list[str]
    categories: list[str]
    model_names: list[str]
    quality: np.ndarray
    cost_usd: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    rows: int
    duplicate_rows: int
    notes: list[str] = field(default_factory=list)

    def select_models(self, names: Sequence[str]) -> None:
        """Reorder (and restrict) the model columns to ``names``."""
        columns = [self.model_names.index(name) for name in names]
        self.model_names = list(names)
        self.quality = self.quality[:, columns]
        self.cost_usd = self.cost_usd[:, columns]
        self.output_tokens = self.output_tokens[:, columns]


def read_routing_log(path: str | Path, prices: str | Path | None = None) -> RoutingLog:
    """Read a JSON Lines or RouterBench routing log, with model prices.

    ``prices`` is a ``models.json`` price file (model name to ``input_usd_per_mtok``
    and ``output_usd_per_mtok``). Without it, ``models.json`` beside the log is used
    if present. Raises ``LogFormatError`` naming the offending line, field or column.
    """
    path = Path(path)
    if not path.is_file():
        raise LogFormatError(
            f"Routing log {path} not found; give the path of a log file."
        )

    price_path = _find_price_file(path, prices)
    log_format = _detect_format(path)
    if log_format == "jsonl":
        table = _read_jsonl(path)
        catalog = _jsonl_catalog(table, path, price_path)
    else:
        frame = _read_wide_table(path, log_format)
        table, catalog = _routerbench_log(frame, path, price_path)

    log = _build_log(table, catalog, source=str(path))
    logger.info(
        "Read routing log %s: %d prompts x %d models from %d rows",
        path,
        len(log),
        len(catalog),
        table.rows,
    )
    return log


def _find_price_file(path: Path, prices: str | Path | None) -> Path | None:
    if prices is not None:
        return Path(prices)

    beside = path.parent / PRICE_FILE_NAME
    return beside if beside.is_file() else None


def _detect_format(path: Path) -> str:
    suffixes = [suffix.lower() for suffix in path.suffixes[-2:]]
    if suffixes and suffixes[-1] in _PICKLE_SUFFIXES:
        return "pickle"
    if any(suffix in _CSV_SUFFIXES for suffix in suffixes):
        return "csv"
    if any(suffix in _JSONL_SUFFIXES for suffix in suffixes):
        return "jsonl"

    supported = [*_JSONL_SUFFIXES, *_PICKLE_SUFFIXES, *_CSV_SUFFIXES]
    raise LogFormatError(
        f"Routing log {path} has an unknown format; name it with one of the suffixes "
        f"{supported} (a gzip-compressed file may add .gz)."
    )


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC


MAX_LISTED_PROMPT_IDS = 5
"""Prompt ids named per model in a load-report note; the rest are counted."""


def _gap_notes(
    catalog: Catalog,
    present: np.ndarray,
    observed: np.ndarray,
    prompt_ids: list[str],
) -> list[str]:
    """Name the models that lack rows or qualities, with some prompts affected."""
    notes = []
    for model_index, name in enumerate(catalog.names):
        for mask, gap in (
            (~present[:, model_index], "no row"),
            (present[:, model_index] & ~observed[:, model_index], "a null quality"),
        ):
            rows = np.flatnonzero(mask)
            if len(rows) == 0:
                continue
            listed = ", ".join(prompt_ids[row] for row in rows[:MAX_LISTED_PROMPT_IDS])
            more = len(rows) - MAX_LISTED_PROMPT_IDS
            suffix = f" and {more} more" if more > 0 else ""
            notes.append(
                f"model {name} has {gap} for {len(rows)} prompts: {listed}{suffix}"
            )
    return notes


def _build_log(table: _LogTable, catalog: Catalog, source: str) -> RoutingLog:
    present = np.isfinite(table.cost_usd)
    null_quality = int((present & ~np.isfinite(table.quality)).sum())
    observed = np.isfinite(table.quality) & present
    notes = [*table.notes, *_gap_notes(catalog, present, observed, table.prompt_ids)]
    report = LoadReport(
        source=source,
        rows=table.rows,
        prompts=len(table.prompt_ids),
        models=len(catalog),
        duplicate_rows=table.duplicate_rows,
        missing_model_rows=int((~present).sum()),
        null_quality=null_quality,
        incomplete_prompts=int((~observed.all(axis=1)).sum()),
        notes=tuple(notes),
    )
    return RoutingLog(
        prompt_ids=table.prompt_ids,
        prompts=table.prompts,
        categories=table.categories,
        catalog=catalog,
        quality=table.quality,
        cost_usd=table.cost_usd,
        input_tokens=table.input_tokens,
        output_tokens=table.output_tokens,
        report=report,
    )


# JSON Lines


def _read_jsonl(path: Path) -> _LogTable:
    prompt_index: dict[str, int] = {}
    model_index: dict[str, int] = {}
    prompt_ids: list[str] = []
    prompts: list[str] = []
    categories: list[str] = []
    input_tokens: list[float] = []
    cells: dict[tuple[int, int], tuple[float, float, float]] = {}
    rows = 0
    duplicate_rows = 0

    for row in _jsonl_rows(path):
        rows += 1
        prompt_id = row["prompt_id"]
        if prompt_id not in prompt_index:
            prompt_index[prompt_id] = len(prompt_ids)
            prompt_ids.append(prompt_id)
            prompts.append(row["prompt"])
            categories.append(row["category"])
            input_tokens.append(row["input_tokens"])
        model_index.setdefault(row["model"], len(model_index))

        key = (prompt_index[prompt_id], model_index[row["model"]])
        if key in cells:
            duplicate_rows += 1
            continue
        cells[key] = (row["quality"], row["cost_usd"], row["output_tokens"])

    if rows == 0:
        raise LogFormatError(f"Routing log {path} contains no rows.")
    if duplicate_rows:
        logger.warning(
            "Routing log %s repeats %d (prompt_id, model) rows; kept the first of each",
            path,
            duplicate_rows,
        )

    shape = (len(prompt_ids), len(model_index))
    quality = np.full(shape, np.nan)
    cost_usd = np.full(shape, np.nan)
    output_tokens = np.full(shape, np.nan)
    positions = tuple(np.array(list(cells), dtype=np.intp).T)
    values = np.array(list(cells.values()), dtype=np.float64)
    quality[positions] = values[:, 0]
    cost_usd[positions] = values[:, 1]
    output_tokens[positions] = values[:, 2]

    return _LogTable(
        prompt_ids=prompt_ids,
        prompts=prompts,
        categories=categories,
        model_names=list(model_index),
        quality=quality,
        cost_usd=cost_usd,
        input_tokens=np.array(input_tokens, dtype=np.float64),
        output_tokens=output_tokens,
        rows=rows,
        duplicate_rows=duplicate_rows,
    )


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each non-blank line as a validated row."""
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rt", encoding="utf-8") as file:
            for line_number, line in enumerate(file, start=1):
                if line.strip():
                    yield _parse_row(line, line_number, path)
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise LogFormatError(f"Cannot read routing log {path}: {error}") from error


def _parse_row(line: str, line_number: int, path: Path) -> dict[str, Any]:
    where = f"{path}, line {line_number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise LogFormatError(
            f"{where}: invalid JSON ({error.msg}); each line must be one JSON object."
        ) from error
    if not isinstance(row, dict):
        raise LogFormatError(
            f"{where}: expected a JSON object, got {line.strip()[:80]!r}."
        )

    for name in REQUIRED_FIELDS:
        if name not in row:
            raise LogFormatError(
                f"{where}: required field {name!r} is missing; "
                f"every row needs {list(REQUIRED_FIELDS)}."
            )

    # ``propensity`` and ``timestamp`` of a partial (bandit) log are ignored here.
    return {
        "prompt_id": _text_field(row, "prompt_id", where, allow_int=True),
        "category": _text_field(row, "category", where),
        "prompt": _text_field(row, "prompt", where),
        "model": _text_field(row, "model", where),
        "quality": _quality_field(row, where),
        "cost_usd": _count_field(row, "cost_usd", where),
        "input_tokens": _count_field(row, "input_tokens", where),
        "output_tokens": _count_field(row, "output_tokens", where),
    }


def _text_field(
    row: dict[str, Any], name: str, where: str, allow_int: bool = False
) -> str:
    value = row[name]
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise LogFormatError(
            f"{where}: field {name!r} must be a string, got {value!r}."
        )
    if not value.strip():
        raise LogFormatError(
            f"{where}: field {name!r} is {value!r}; it must not be empty."
        )
    return value


def _number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LogFormatError(
            f"{where}: field {name!r} must be a number, got {value!r}."
        )
    return float(value)


def _quality_field(row: dict[str, Any], where: str) -> float:
    value = row["quality"]
    if value is None:
        return math.nan

    quality = _number(value, "quality", where)
    if not math.isnan(quality) and not 0.0 <= quality <= 1.0:
        raise LogFormatError(
            f"{where}: field 'quality' is {value!r}; it must be in [0, 1] or null."
        )
    return quality


def _count_field(row: dict[str, Any], name: str, where: str) -> float:
    value = _number(row[name], name, where)
    if not math.isfinite(value) or value < 0:
        raise LogFormatError(
            f"{where}: field {name!r} is {row[name]!r}; "
            "it must be a finite number >= 0."
        )
    return value


def _jsonl_catalog(table: _LogTable, path: Path, price_path: Path | None) -> Catalog:
    if price_path is not None:
        return _catalog_from_price_file(table, path, price_path)

    catalog, notes = _fit_prices(table)
    table.notes.extend(notes)
    return catalog


def _catalog_from_price_file(table: _LogTable, path: Path, price_path: Path) -> Catalog:
    """Read the price file and put the table's model columns in its order."""
    priced = Catalog.from_json(price_path)
    unpriced = [name for name in table.model_names if name not in priced]
    if unpriced:
        raise LogFormatError(
            f"Models {unpriced} appear in {path} but not in the price file "
            f"{price_path}; add their input_usd_per_mtok and output_usd_per_mtok."
        )

    unlogged = [name for name in priced.names if name not in table.model_names]
    if unlogged:
        logger.warning(
            "Models %s of the price file %s have no rows in %s; left out of the log",
            unlogged,
            price_path,
            path,
        )
        table.notes.append(f"models without rows, left out: {', '.join(unlogged)}")

    models = [model for model in priced if model.name in table.model_names]
    table.select_models([model.name for model in models])
    table.notes.append(f"prices from {price_path}")
    return Catalog(models)


def _fit_prices(table: _LogTable) -> tuple[Catalog, list[str]]:
    """Fit each model's input and output price to ``cost = in * p_in + out * p_out``.

    Prices are non-negative least-squares fits over the model's rows. When the token
    counts cannot separate the two prices (fewer than two distinct input/output
    ratios), the model gets one price per token for both.
    """
    notes = ["prices fitted to the logged costs (no price file)"]
    logger.info("No price file for the log, so prices are fitted to the logged costs")
    models = []
    for column, name in enumerate(table.model_names):
        observed = np.isfinite(table.cost_usd[:, column])
        tokens = np.column_stack(
            [table.input_tokens[observed], table.output_tokens[observed, column]]
        )
        cost_per_mtok = table.cost_usd[observed, column] * TOKENS_PER_PRICE_UNIT

        if np.linalg.matrix_rank(tokens) < 2:
            price = _single_price(tokens, cost_per_mtok)
            prices = np.array([price, price])
            note = (
                f"prices of {name} are ill-posed (its token counts cannot separate "
                f"input from output price); used {price:.4g} USD/Mtok for both"
            )
            logger.warning("Routing log: %s", note)
            notes.append(note)
        else:
            prices, _ = nnls(tokens, cost_per_mtok)

        notes.extend(_check_price_fit(name, tokens, cost_per_mtok, prices))
        models.append(ModelSpec(name, float(prices[0]), float(prices[1])))
    return Catalog(models), notes


def _single_price(tokens: np.ndarray, cost_per_mtok: np.ndarray) -> float:
    total_tokens = tokens.sum()
    return float(cost_per_mtok.sum() / total_tokens) if total_tokens > 0 else 0.0


def _check_price_fit(
    name: str, tokens: np.ndarray, cost_per_mtok: np.ndarray, prices: np.ndarray
) -> list[str]:
    if len(cost_per_mtok) == 0:
        return []

    deviation = np.abs(tokens @ prices - cost_per_mtok).max()
    scale = max(np.abs(cost_per_mtok).max(), np.finfo(float).tiny)
    if deviation <= _PRICE_FIT_TOLERANCE * scale:
        return []

    note = (
        f"logged costs of {name} do not follow per-token prices: the fitted prices "
        f"miss some costs by {deviation / TOKENS_PER_PRICE_UNIT:.3g} USD"
    )
    logger.warning("Routing log: %s", note)
    return [note]


# RouterBench wide table


def _read_wide_table(path: Path, log_format: str) -> pd.DataFrame:
    """Read a RouterBench pickle or CSV file into a DataFrame.

    NOTE: unpickling runs code stored in the file, so read only pickles you trust.
    """
    compression = "gzip" if _is_gzip(path) else None
    try:
        if log_format == "pickle":
            frame = pd.read_pickle(path, compression=compression)
        else:
            frame = pd.read_csv(path, compression=compression)
    except (
        OSError,
        EOFError,
        ValueError,
        UnicodeDecodeError,
        pickle.UnpicklingError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
    ) as error:
        raise LogFormatError(f"Cannot read routing log {path}: {error}") from error

    if not isinstance(frame, pd.DataFrame):
        raise LogFormatError(
            f"Routing log {path} contains a {type(frame).__name__}, not a table; "
            "store the RouterBench table as a pandas DataFrame."
        )
    frame.columns = [str(column) for column in frame.columns]
    return frame


def _routerbench_log(
    frame: pd.DataFrame, path: Path, price_path: Path | None
) -> tuple[_LogTable, Catalog]:
    model_names = _routerbench_models(frame, path)
    prompts = _routerbench_prompts(frame, path)
    prompt_ids = _routerbench_ids(frame)
    categories = _routerbench_categories(frame)

    quality = np.column_stack(
        [_score_column(frame, name, path, prompt_ids) for name in model_names]
    )
    cost_usd = np.column_stack(
        [
            _cost_column(frame, name + ROUTERBENCH_COST_SUFFIX, path, prompt_ids)
            for name in model_names
        ]
    )
    input_tokens = np.array(
        [math.ceil(len(text) / CHARACTERS_PER_TOKEN) for text in prompts],
        dtype=np.float64,
    )

    first = _first_occurrences(prompt_ids)
    duplicate_rows = (len(prompt_ids) - len(first)) * len(model_names)
    if duplicate_rows:
        logger.warning(
            "Routing log %s repeats %d sample ids; kept the first row of each",
            path,
            len(prompt_ids) - len(first),
        )

    table = _LogTable(
        prompt_ids=[prompt_ids[i] for i in first],
        prompts=[prompts[i] for i in first],
        categories=[categories[i] for i in first],
        model_names=model_names,
        quality=quality[first],
        cost_usd=cost_usd[first],
        input_tokens=input_tokens[first],
        output_tokens=np.full((len(first), len(model_names)), np.nan),
        rows=len(frame),
        duplicate_rows=duplicate_rows,
    )
    if price_path is not None:
        catalog = _catalog_from_price_file(table, path, price_path)
        table.output_tokens = _output_tokens_from_cost(table, catalog)
    else:
        catalog = _placeholder_catalog(table)
    return table, catalog


def _routerbench_models(frame: pd.DataFrame, path: Path) -> list[str]:
    """Return the models of a RouterBench table: those with a ``|total_cost`` column."""
    columns = list(frame.columns)
    if "prompt" not in columns:
        raise LogFormatError(
            f"RouterBench table {path} has no 'prompt' column; "
            "the prompt text must be in a column named 'prompt'."
        )

    cost_columns = [c for c in columns if c.endswith(ROUTERBENCH_COST_SUFFIX)]
    if not cost_columns:
        raise LogFormatError(
            f"RouterBench table {path} has no '<model>{ROUTERBENCH_COST_SUFFIX}' "
            "column; give each model a score column and a cost column."
        )

    models = [column.removesuffix(ROUTERBENCH_COST_SUFFIX) for column in cost_columns]
    for name in models:
        if name not in columns:
            raise LogFormatError(
                f"RouterBench table {path} has the cost column "
                f"'{name}{ROUTERBENCH_COST_SUFFIX}' but no score column {name!r}; "
                "add the score column or drop the cost column."
            )

    uncosted = _uncosted_models(frame, models)
    if uncosted:
        name = uncosted[0]
        raise LogFormatError(
            f"RouterBench table {path} has a column of model {name!r} but no cost "
            f"column '{name}{ROUTERBENCH_COST_SUFFIX}'; add the cost column or drop "
            "the model's columns."
        )
    return models


def _uncosted_models(frame: pd.DataFrame, models: list[str]) -> list[str]:
    """Return models that have a score or ``<model>|<field>`` column but no cost column.

    A score column is any numeric column that is not a RouterBench text column nor a
    saved pandas index (``Unnamed: 0``).
    """
    uncosted = []
    for column in frame.columns:
        if "|" in column:
            name = column.rpartition("|")[0]
        elif column in ROUTERBENCH_TEXT_COLUMNS or column.startswith("Unnamed:"):
            continue
        elif pd.api.types.is_numeric_dtype(frame[column]):
            name = column
        else:
            continue
        if name not in models and name not in uncosted:
            uncosted.append(name)
    return uncosted


def _routerbench_prompts(frame: pd.DataFrame, path: Path) -> list[str]:
    """Return the prompt texts, keeping a list-like string such as ``"['text']"``."""
    prompts = []
    for row, value in enumerate(frame["prompt"]):
        if isinstance(value, list | tuple):
            value = "\n".join(str(part) for part in value)
        if not isinstance(value, str) or not value.strip():
            raise LogFormatError(
                f"RouterBench table {path}, row {row}: 'prompt' is {value!r}; "
                "every row needs the prompt text."
            )
        prompts.append(value)
    return prompts


def _routerbench_ids(frame: pd.DataFrame) -> list[str]:
    """Return each ``sample_id``, or the row number (from 0) where it is missing."""
    if "sample_id" not in frame.columns:
        return [str(row) for row in range(len(frame))]
    return [
        str(row) if pd.isna(value) else str(value)
        for row, value in enumerate(frame["sample_id"])
    ]


def _routerbench_categories(frame: pd.DataFrame) -> list[str]:
    if "eval_name" not in frame.columns:
        return [UNKNOWN_CATEGORY] * len(frame)
    return [UNKNOWN_CATEGORY if pd.isna(v) else str(v) for v in frame["eval_name"]]


def _numeric_column(
    frame: pd.DataFrame, column: str, path: Path, prompt_ids: list[str]
) -> np.ndarray:
    try:
        return frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        for row, value in enumerate(frame[column]):
            if pd.isna(value):
                continue
            try:
                float(value)
            except (TypeError, ValueError):
                raise LogFormatError(
                    f"RouterBench table {path}, sample {prompt_ids[row]!r}: column "
                    f"{column!r} is {value!r}; it must be a number."
                ) from None
        raise


def _score_column(
    frame: pd.DataFrame, column: str, path: Path, prompt_ids: list[str]
) -> np.ndarray:
    scores = _numeric_column(frame, column, path, prompt_ids)
    invalid = np.flatnonzero(~np.isnan(scores) & ((scores < 0) | (scores > 1)))
    if len(invalid):
        row = invalid[0]
        raise LogFormatError(
            f"RouterBench table {path}, sample {prompt_ids[row]!r}: score column "
            f"{column!r} is {float(scores[row])!r}; scores must be in [0, 1] or empty."
        )
    return scores


def _cost_column(
    frame: pd.DataFrame, column: str, path: Path, prompt_ids: list[str]
) -> np.ndarray:
    costs = _numeric_column(frame, column, path, prompt_ids)
    invalid = np.flatnonzero(np.isinf(costs) | (costs < 0))
    if len(invalid):
        row = invalid[0]
        raise LogFormatError(
            f"RouterBench table {path}, sample {prompt_ids[row]!r}: cost column "
            f"{column!r} is {float(costs[row])!r}; costs must be finite and >= 0."
        )
    return costs


def _first_occurrences(prompt_ids: list[str]) -> np.ndarray:
    seen: set[str] = set()
    first = []
    for row, prompt_id in enumerate(prompt_ids):
        if prompt_id not in seen:
            seen.add(prompt_id)
            first.append(row)
    return np.array(first, dtype=np.intp)


def _placeholder_catalog(table: _LogTable) -> Catalog:
    """Price every output "token" at 1 USD and input at 0, with output tokens = cost.

    NOTE: RouterBench logs a total cost per call but neither token counts nor prices.
    With these placeholder prices the cost of a call equals its "output tokens", so a
    cost model that learns each model's mean output tokens learns its mean cost
    directly. The prices are not the models' list prices.
    """
    logger.info(
        "No price file for the RouterBench table: input price 0 and output price "
        "%g USD/Mtok per model, output tokens set to the logged cost in USD",
        PLACEHOLDER_OUTPUT_USD_PER_MTOK,
    )
    table.notes.append(
        "no price file: placeholder prices (input 0, output 1 USD per token) "
        "with output tokens = logged cost in USD"
    )
    table.output_tokens = table.cost_usd.copy()
    return Catalog(
        ModelSpec(name, 0.0, PLACEHOLDER_OUTPUT_USD_PER_MTOK)
        for name in table.model_names
    )


def _output_tokens_from_cost(table: _LogTable, catalog: Catalog) -> np.ndarray:
    """Infer output tokens from cost and prices, or NaN where the output price is 0."""
    input_cost = table.input_tokens[:, None] * catalog.input_usd_per_token[None, :]
    output_cost = np.clip(table.cost_usd - input_cost, 0.0, None)
    output_price = catalog.output_usd_per_token[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(output_price > 0, output_cost / output_price, np.nan)
