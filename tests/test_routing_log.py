"""Tests of the routing log readers on small logs written to disk and the real logs."""

from __future__ import annotations

import gzip
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from banditroute.errors import ConfigError, LogFormatError
from banditroute.routing_log import REQUIRED_FIELDS, RoutingLog, read_routing_log

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

PRICES = {"m1": (1.0, 2.0), "m2": (0.5, 0.5)}
"""Test prices in USD per million input and output tokens."""


# JSON Lines helpers


def make_row(
    prompt_id: str = "p1",
    model: str = "m1",
    quality: float | None = 1.0,
    input_tokens: int = 100,
    output_tokens: int = 50,
    **fields: object,
) -> dict[str, object]:
    """Return one log row whose cost follows ``PRICES``."""
    input_price, output_price = PRICES.get(model, (1.0, 1.0))
    row: dict[str, object] = {
        "prompt_id": prompt_id,
        "category": "math",
        "prompt": f"Question {prompt_id}?",
        "model": model,
        "quality": quality,
        "cost_usd": (input_tokens * input_price + output_tokens * output_price) / 1e6,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
    }
    row.update(fields)
    return row


def standard_rows() -> list[dict[str, object]]:
    """Two prompts x two models, every outcome present."""
    return [
        make_row("p1", "m1", 1.0, 100, 50),
        make_row("p1", "m2", 0.0, 100, 80),
        make_row("p2", "m1", 0.5, 40, 10, category="code", prompt="Write code."),
        make_row("p2", "m2", 0.25, 40, 30, category="code", prompt="Write code."),
    ]


def write_jsonl(
    path: Path, rows: list[dict[str, object]], compress: bool = False
) -> Path:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if compress:
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_prices(path: Path, prices: dict[str, tuple[float, float]]) -> Path:
    entries = {
        name: {"input_usd_per_mtok": price_in, "output_usd_per_mtok": price_out}
        for name, (price_in, price_out) in prices.items()
    }
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def read_standard_log(tmp_path: Path, compress: bool = False) -> RoutingLog:
    write_prices(tmp_path / "models.json", PRICES)
    log_path = write_jsonl(tmp_path / "log.jsonl", standard_rows(), compress)
    return read_routing_log(log_path)


# JSON Lines: reading


def test_plain_jsonl_shapes_and_values(tmp_path: Path) -> None:
    log = read_standard_log(tmp_path)

    assert len(log) == 2
    assert log.catalog.names == ("m1", "m2")
    assert log.prompt_ids == ["p1", "p2"]
    assert log.prompts == ["Question p1?", "Write code."]
    assert log.categories == ["math", "code"]
    np.testing.assert_array_equal(log.quality, [[1.0, 0.0], [0.5, 0.25]])
    np.testing.assert_array_equal(log.input_tokens, [100.0, 40.0])
    np.testing.assert_array_equal(log.output_tokens, [[50.0, 80.0], [10.0, 30.0]])
    np.testing.assert_allclose(log.cost_usd, [[200e-6, 90e-6], [60e-6, 35e-6]])


def test_plain_jsonl_arrays_are_float64(tmp_path: Path) -> None:
    log = read_standard_log(tmp_path)

    for array in (log.quality, log.cost_usd, log.input_tokens, log.output_tokens):
        assert array.dtype == np.float64


def test_gzip_log_is_detected_by_magic_bytes(tmp_path: Path) -> None:
    # The file is gzip-compressed but named like plain JSON Lines.
    log = read_standard_log(tmp_path, compress=True)

    assert (tmp_path / "log.jsonl").read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(log.quality, [[1.0, 0.0], [0.5, 0.25]])


def test_gzip_suffix_log_is_read(tmp_path: Path) -> None:
    write_prices(tmp_path / "models.json", PRICES)
    path = write_jsonl(tmp_path / "log.jsonl.gz", standard_rows(), compress=True)

    log = read_routing_log(path)

    assert log.quality.shape == (2, 2)
    np.testing.assert_array_equal(log.output_tokens[:, 1], [80.0, 30.0])


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    rows = standard_rows()
    path.write_text(
        json.dumps(rows[0]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in rows[1:])
    )
    write_prices(tmp_path / "models.json", PRICES)

    log = read_routing_log(path)

    assert log.report.rows == 4


def test_integer_prompt_ids_become_strings(tmp_path: Path) -> None:
    write_prices(tmp_path / "models.json", PRICES)
    rows = [make_row(7, "m1"), make_row(7, "m2")]

    log = read_routing_log(write_jsonl(tmp_path / "log.jsonl", rows))

    assert log.prompt_ids == ["7"]


def test_propensity_and_timestamp_are_ignored(tmp_path: Path) -> None:
    write_prices(tmp_path / "models.json", PRICES)
    rows = [
        make_row("p1", "m1", propensity=0.25, timestamp="2024-05-01T10:00:00Z"),
        make_row("p1", "m2", propensity=0.75, timestamp=1714557600),
    ]

    log = read_routing_log(write_jsonl(tmp_path / "log.jsonl", rows))

    assert log.quality.shape == (1, 2)
    assert log.complete().all()


def test_prompts_keep_first_appearance_order(tmp_path: Path) -> None:
    write_prices(tmp_path / "models.json", PRICES)
    rows = [make_row("zeta", "m1"), make_row("alpha", "m1"), make_row("zeta", "m2")]

    log = read_routing_log(write_jsonl(tmp_path / "log.jsonl", rows))

    assert log.prompt_ids == ["zeta", "alpha"]


# JSON Lines: prices


def test_models_follow_price_file_order(tmp_path: Path) -> None:
    write_prices(tmp_path / "models.json", {"m2": PRICES["m2"], "m1": PRICES["m1"]})
    log_path = write_jsonl(tmp_path / "log.jsonl", standard_rows())

    log = read_routing_log(log_path)

    assert log.catalog.names == ("m2", "m1")
    np.testing.assert_array_equal(log.quality, [[0.0, 1.0], [0.25, 0.5]])
    np.testing.assert_array_equal(log.output_tokens, [[80.0, 50.0], [30.0, 10.0]])


def test_prices_argument_overrides_file_beside_log(tmp_path: Path) -> None:
    write_prices(tmp_path / "models.json", PRICES)
    other = write_prices(tmp_path / "other.json", {"m1": (4.0, 8.0), "m2": (1.0, 1.0)})
    log_path = write_jsonl(tmp_path / "log.jsonl", standard_rows())

    log = read_routing_log(log_path, prices=other)

    assert log.catalog.models[0].input_usd_per_mtok == 4.0
    assert log.catalog.models[0].output_usd_per_mtok == 8.0


def test_model_missing_from_price_file_is_named(tmp_path: Path) -> None:
    write_prices(tmp_path / "models.json", {"m1": PRICES["m1"]})
    log_path = write_jsonl(tmp_path / "log.jsonl", standard_rows())

    with pytest.raises(LogFormatError, match=r"\['m2'\].*not in the price file"):
        read_routing_log(log_path)


def test_price_file_model_without_rows_is_left_out(tmp_path: Path) -> None:
    write_prices(tmp_path / "models.json", {**PRICES, "m3": (9.0, 9.0)})
    log_path = write_jsonl(tmp_path / "log.jsonl", standard_rows())

    log = read_routing_log(log_path)

    assert log.catalog.names == ("m1", "m2")
    assert log.report.missing_model_rows == 0


def test_invalid_price_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_text("[1, 2]")
    log_path = write_jsonl(tmp_path / "log.jsonl", standard_rows())

    with pytest.raises(ConfigError, match="JSON object keyed by model name"):
        read_routing_log(log_path)


def test_prices_are_fitted_without_price_file(tmp_path: Path) -> None:
    rows = [
        make_row(f"p{i}", model, 1.0, 100 + 37 * i, 20 + 11 * (i % 4))
        for i in range(8)
        for model in ("m1", "m2")
    ]
    log_path = write_jsonl(tmp_path / "log.jsonl", rows)

    log = read_routing_log(log_path)

    fitted = {
        m.name: (m.input_usd_per_mtok, m.output_usd_per_mtok) for m in log.catalog
    }
    assert fitted["m1"] == pytest.approx(PRICES["m1"], rel=1e-6)
    assert fitted["m2"] == pytest.approx(PRICES["m2"], rel=1e-6)
    assert "prices fitted to the logged costs (no price file)" in log.report.notes


def test_ill_posed_price_fit_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every row has the same token counts, so input and output prices are not
    # separable; the reader falls back to one price per token.
    rows = [make_row(f"p{i}", "m1", 1.0, 100, 50) for i in range(3)]
    log_path = write_jsonl(tmp_path / "log.jsonl", rows)

    with caplog.at_level(logging.WARNING, logger="banditroute.routing_log"):
        log = read_routing_log(log_path)

    model = log.catalog.models[0]
    assert "prices of m1 are ill-posed" in caplog.text
    assert any("ill-posed" in note for note in log.report.notes)
    assert model.input_usd_per_mtok == pytest.approx(200.0 / 150.0)
    assert model.output_usd_per_mtok == pytest.approx(200.0 / 150.0)


def test_costs_off_per_token_prices_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [make_row(f"p{i}", "m1", 1.0, 100 + 10 * i, 50 + 3 * i) for i in range(4)]
    rows[2]["cost_usd"] = 0.5
    log_path = write_jsonl(tmp_path / "log.jsonl", rows)

    with caplog.at_level(logging.WARNING, logger="banditroute.routing_log"):
        read_routing_log(log_path)

    assert "do not follow per-token prices" in caplog.text


# JSON Lines: errors


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_missing_field_names_line_and_field(tmp_path: Path, field: str) -> None:
    rows = standard_rows()
    del rows[1][field]
    log_path = write_jsonl(tmp_path / "log.jsonl", rows)

    with pytest.raises(LogFormatError, match=f"line 2: required field '{field}'"):
        read_routing_log(log_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quality", 1.5),
        ("quality", -0.1),
        ("quality", "high"),
        ("cost_usd", -0.001),
        ("cost_usd", None),
        ("input_tokens", -3),
        ("output_tokens", -2),
        ("output_tokens", "many"),
        ("model", 5),
        ("model", " "),
        ("prompt", ""),
    ],
)
def test_invalid_value_names_line_field_and_value(
    tmp_path: Path, field: str, value: object
) -> None:
    rows = standard_rows()
    rows[2][field] = value
    log_path = write_jsonl(tmp_path / "log.jsonl", rows)

    with pytest.raises(LogFormatError) as raised:
        read_routing_log(log_path)

    message = str(raised.value)
    assert "line 3" in message
    assert repr(field) in message
    assert repr(value) in message


def test_infinite_cost_is_rejected(tmp_path: Path) -> None:
    rows = standard_rows()
    rows[0]["cost_usd"] = math.inf
    log_path = write_jsonl(tmp_path / "log.jsonl", rows)

    with pytest.raises(LogFormatError, match="line 1: field 'cost_usd' is inf"):
        read_routing_log(log_path)


def test_invalid_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(make_row()) + "\n{not json\n")

    with pytest.raises(LogFormatError, match="line 2: invalid JSON"):
        read_routing_log(path)


def test_non_object_line_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text("[1, 2, 3]\n")

    with pytest.raises(LogFormatError, match="line 1: expected a JSON object"):
        read_routing_log(path)


def test_empty_log_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text("\n")

    with pytest.raises(LogFormatError, match="contains no rows"):
        read_routing_log(path)


def test_missing_log_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="not found"):
        read_routing_log(tmp_path / "absent.jsonl")


def test_unknown_suffix_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    path.write_text(json.dumps(make_row()) + "\n")

    with pytest.raises(LogFormatError, match="unknown format"):
        read_routing_log(path)


def test_truncated_gzip_is_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "log.jsonl.gz", standard_rows(), compress=True)
    path.write_bytes(path.read_bytes()[:20])

    with pytest.raises(LogFormatError, match="Cannot read routing log"):
        read_routing_log(path)


# JSON Lines: counting gaps


def test_duplicate_rows_are_counted_and_first_kept(tmp_path: Path) -> None:
    rows = standard_rows()
    rows.append(make_row("p1", "m1", 0.0, 100, 999))
    rows.append(make_row("p1", "m1", 0.0, 100, 998))
    write_prices(tmp_path / "models.json", PRICES)

    log = read_routing_log(write_jsonl(tmp_path / "log.jsonl", rows))

    assert log.report.duplicate_rows == 2
    assert log.report.rows == 6
    assert log.quality[0, 0] == 1.0
    assert log.output_tokens[0, 0] == 50.0


def test_missing_model_rows_are_counted(tmp_path: Path) -> None:
    rows = standard_rows()
    del rows[3]
    write_prices(tmp_path / "models.json", PRICES)

    log = read_routing_log(write_jsonl(tmp_path / "log.jsonl", rows))

    assert log.report.missing_model_rows == 1
    assert np.isnan(log.quality[1, 1])
    assert np.isnan(log.cost_usd[1, 1])
    assert np.isnan(log.output_tokens[1, 1])


def test_null_and_nan_qualities_are_counted(tmp_path: Path) -> None:
    rows = standard_rows()
    rows[0]["quality"] = None
    rows[3]["quality"] = math.nan  # json.dumps writes the NaN literal
    write_prices(tmp_path / "models.json", PRICES)

    log = read_routing_log(write_jsonl(tmp_path / "log.jsonl", rows))

    assert log.report.null_quality == 2
    assert log.report.missing_model_rows == 0
    assert np.isnan(log.quality[0, 0])
    assert log.cost_usd[0, 0] == pytest.approx(200e-6)


def test_complete_marks_prompts_with_every_outcome(tmp_path: Path) -> None:
    rows = standard_rows()
    rows.append(make_row("p3", "m1"))
    rows.append(make_row("p3", "m2", quality=None))
    rows.append(make_row("p4", "m2"))
    write_prices(tmp_path / "models.json", PRICES)

    log = read_routing_log(write_jsonl(tmp_path / "log.jsonl", rows))

    np.testing.assert_array_equal(log.complete(), [True, True, False, False])
    assert log.report.incomplete_prompts == 2


def test_report_lines_summarize_counts(tmp_path: Path) -> None:
    rows = standard_rows()
    rows.append(rows[0])
    rows[1]["quality"] = None
    del rows[3]
    write_prices(tmp_path / "models.json", PRICES)

    log = read_routing_log(write_jsonl(tmp_path / "log.jsonl", rows))
    lines = log.report.lines()

    assert lines[0] == f"Routing log: {tmp_path / 'log.jsonl'}"
    assert "4 rows read, 2 prompts x 2 models" in lines
    assert "1 duplicate (prompt_id, model) rows skipped" in lines[2]
    assert "1 (prompt, model) pairs without a row" in lines[2]
    assert "1 null qualities" in lines[2]
    assert lines[3].startswith("2 of 2 prompts lack")
    assert f"prices from {tmp_path / 'models.json'}" in lines


def test_subset_selects_rows_and_keeps_report(tmp_path: Path) -> None:
    log = read_standard_log(tmp_path)

    part = log.subset(np.array([1]))

    assert part.prompt_ids == ["p2"]
    assert part.prompts == ["Write code."]
    assert part.categories == ["code"]
    np.testing.assert_array_equal(part.quality, [[0.5, 0.25]])
    np.testing.assert_array_equal(part.input_tokens, [40.0])
    assert part.report is log.report
    assert part.catalog is log.catalog


def test_subset_accepts_boolean_mask(tmp_path: Path) -> None:
    log = read_standard_log(tmp_path)

    part = log.subset(np.array([True, False]))

    assert part.prompt_ids == ["p1"]
    np.testing.assert_array_equal(part.cost_usd, log.cost_usd[:1])


def test_log_with_mismatched_shapes_is_rejected(tmp_path: Path) -> None:
    log = read_standard_log(tmp_path)

    with pytest.raises(LogFormatError, match="quality has shape"):
        RoutingLog(
            prompt_ids=log.prompt_ids,
            prompts=log.prompts,
            categories=log.categories,
            catalog=log.catalog,
            quality=log.quality[:, :1],
            cost_usd=log.cost_usd,
            input_tokens=log.input_tokens,
            output_tokens=log.output_tokens,
            report=log.report,
        )


# RouterBench wide tables


def routerbench_frame() -> pd.DataFrame:
    """Three prompts x two models in RouterBench's wide layout."""
    return pd.DataFrame(
        {
            "sample_id": ["mmlu.0", "gsm8k.1", "mbpp.2"],
            "prompt": ["['What is 2+2?']", "['Name a prime number']", "Sort a list."],
            "eval_name": ["mmlu", "gsm8k", "mbpp"],
            "m1": [1.0, 0.0, 0.5],
            "m2": [0.0, 1.0, 1.0],
            "oracle_model_to_route_to": ["m1", "m2", "m2"],
            "m1|model_response": ["4", "7", "sorted(xs)"],
            "m2|model_response": ["5", "2", "xs.sort()"],
            "m1|total_cost": [0.002, 0.004, 0.006],
            "m2|total_cost": [0.0001, 0.0002, 0.0003],
        }
    )


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_pickle(path)
    return path


@pytest.mark.parametrize("file_name", ["bench.pkl", "bench.pickle", "bench.csv"])
def test_routerbench_table_is_read(tmp_path: Path, file_name: str) -> None:
    path = write_table(routerbench_frame(), tmp_path / file_name)

    log = read_routing_log(path)

    assert log.catalog.names == ("m1", "m2")
    assert log.prompt_ids == ["mmlu.0", "gsm8k.1", "mbpp.2"]
    assert log.categories == ["mmlu", "gsm8k", "mbpp"]
    np.testing.assert_array_equal(log.quality, [[1.0, 0.0], [0.0, 1.0], [0.5, 1.0]])
    np.testing.assert_allclose(
        log.cost_usd, [[0.002, 0.0001], [0.004, 0.0002], [0.006, 0.0003]]
    )


def test_routerbench_list_like_prompt_is_kept_as_text(tmp_path: Path) -> None:
    path = write_table(routerbench_frame(), tmp_path / "bench.pkl")

    log = read_routing_log(path)

    assert log.prompts == [
        "['What is 2+2?']",
        "['Name a prime number']",
        "Sort a list.",
    ]


def test_routerbench_input_tokens_are_estimated(tmp_path: Path) -> None:
    path = write_table(routerbench_frame(), tmp_path / "bench.csv")

    log = read_routing_log(path)

    # ceil(16 / 4), ceil(23 / 4), ceil(12 / 4)
    np.testing.assert_array_equal(log.input_tokens, [4.0, 6.0, 3.0])


def test_routerbench_without_prices_uses_cost_as_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_table(routerbench_frame(), tmp_path / "bench.pkl")

    with caplog.at_level(logging.INFO, logger="banditroute.routing_log"):
        log = read_routing_log(path)

    np.testing.assert_array_equal(log.output_tokens, log.cost_usd)
    for model in log.catalog:
        assert model.input_usd_per_mtok == 0.0
        assert model.output_usd_per_mtok == 1_000_000.0
    for row in range(len(log)):
        predicted = log.catalog.cost_usd(log.input_tokens[row], log.output_tokens[row])
        np.testing.assert_allclose(predicted, log.cost_usd[row])
    assert "output tokens set to the logged cost" in caplog.text


def test_routerbench_with_price_file_infers_output_tokens(tmp_path: Path) -> None:
    frame = routerbench_frame()
    write_prices(tmp_path / "models.json", {"m2": (10.0, 100.0), "m1": (0.0, 1000.0)})
    path = write_table(frame, tmp_path / "bench.pkl")

    log = read_routing_log(path)

    assert log.catalog.names == ("m2", "m1")
    np.testing.assert_allclose(log.output_tokens[:, 1], [2.0, 4.0, 6.0])
    expected_m2 = (frame["m2|total_cost"] * 1e6 - 10.0 * log.input_tokens) / 100.0
    np.testing.assert_allclose(log.output_tokens[:, 0], expected_m2)


def test_routerbench_missing_ids_and_categories_get_defaults(tmp_path: Path) -> None:
    frame = routerbench_frame().drop(columns=["sample_id", "eval_name"])
    path = write_table(frame, tmp_path / "bench.csv")

    log = read_routing_log(path)

    assert log.prompt_ids == ["0", "1", "2"]
    assert log.categories == ["unknown", "unknown", "unknown"]


def test_routerbench_missing_score_column_is_named(tmp_path: Path) -> None:
    frame = routerbench_frame().drop(columns=["m2"])
    path = write_table(frame, tmp_path / "bench.pkl")

    with pytest.raises(LogFormatError, match="'m2\\|total_cost' but no score column"):
        read_routing_log(path)


def test_routerbench_score_without_cost_column_is_named(tmp_path: Path) -> None:
    frame = routerbench_frame()
    frame["m3"] = [1.0, 1.0, 0.0]
    path = write_table(frame, tmp_path / "bench.csv")

    with pytest.raises(LogFormatError, match="no cost column 'm3\\|total_cost'"):
        read_routing_log(path)


def test_routerbench_response_without_cost_column_is_named(tmp_path: Path) -> None:
    frame = routerbench_frame().drop(columns=["m2|total_cost"])
    path = write_table(frame, tmp_path / "bench.pkl")

    with pytest.raises(LogFormatError, match="no cost column 'm2\\|total_cost'"):
        read_routing_log(path)


def test_routerbench_saved_index_column_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bench.csv"
    routerbench_frame().to_csv(path, index=True)

    log = read_routing_log(path)

    assert log.catalog.names == ("m1", "m2")


def test_routerbench_without_cost_columns_is_rejected(tmp_path: Path) -> None:
    frame = routerbench_frame().drop(columns=["m1|total_cost", "m2|total_cost"])
    path = write_table(frame, tmp_path / "bench.pkl")

    with pytest.raises(LogFormatError, match="no '<model>\\|total_cost' column"):
        read_routing_log(path)


def test_routerbench_without_prompt_column_is_rejected(tmp_path: Path) -> None:
    frame = routerbench_frame().drop(columns=["prompt"])
    path = write_table(frame, tmp_path / "bench.pkl")

    with pytest.raises(LogFormatError, match="no 'prompt' column"):
        read_routing_log(path)


def test_routerbench_score_out_of_range_is_rejected(tmp_path: Path) -> None:
    frame = routerbench_frame()
    frame.loc[1, "m2"] = 3.0
    path = write_table(frame, tmp_path / "bench.pkl")

    with pytest.raises(
        LogFormatError, match="sample 'gsm8k.1': score column 'm2' is 3.0"
    ):
        read_routing_log(path)


def test_routerbench_negative_cost_is_rejected(tmp_path: Path) -> None:
    frame = routerbench_frame()
    frame.loc[2, "m1|total_cost"] = -1.0
    path = write_table(frame, tmp_path / "bench.pkl")

    with pytest.raises(LogFormatError, match="sample 'mbpp.2': cost column"):
        read_routing_log(path)


def test_routerbench_text_score_is_rejected(tmp_path: Path) -> None:
    frame = routerbench_frame()
    frame["m1"] = frame["m1"].astype(object)
    frame.loc[0, "m1"] = "good"
    path = write_table(frame, tmp_path / "bench.pkl")

    with pytest.raises(LogFormatError, match="column 'm1' is 'good'"):
        read_routing_log(path)


def test_routerbench_missing_values_are_counted(tmp_path: Path) -> None:
    frame = routerbench_frame()
    frame.loc[0, "m1"] = np.nan
    frame.loc[1, "m2"] = np.nan
    frame.loc[1, "m2|total_cost"] = np.nan
    path = write_table(frame, tmp_path / "bench.csv")

    log = read_routing_log(path)

    assert log.report.null_quality == 1
    assert log.report.missing_model_rows == 1
    assert log.report.incomplete_prompts == 2
    np.testing.assert_array_equal(log.complete(), [False, False, True])


def test_routerbench_duplicate_sample_ids_are_counted(tmp_path: Path) -> None:
    frame = routerbench_frame()
    frame.loc[2, "sample_id"] = "mmlu.0"
    path = write_table(frame, tmp_path / "bench.pkl")

    log = read_routing_log(path)

    assert log.prompt_ids == ["mmlu.0", "gsm8k.1"]
    assert log.report.duplicate_rows == 2
    assert log.report.rows == 3
    np.testing.assert_array_equal(log.quality[0], [1.0, 0.0])


def test_routerbench_gzip_csv_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bench.csv.gz"
    routerbench_frame().to_csv(path, index=False, compression="gzip")

    log = read_routing_log(path)

    assert log.quality.shape == (3, 2)


# The real logs beside the project


def shared_log(name: str) -> Path:
    path = SHARED_DATA / name / "routing-log.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"routing log {path} is not available on this machine")
    return path


@pytest.mark.shared_data
def test_multitask_log_shape_and_baselines() -> None:
    log = read_routing_log(shared_log("multitask"))

    mean_quality = np.nanmean(log.quality, axis=0)
    best = int(np.argmax(mean_quality))
    assert log.quality.shape == (5608, 9)
    assert log.report.incomplete_prompts == 0
    assert log.catalog.names[best] == "llama-3.1-nemotron-51b-instruct"
    assert mean_quality[best] == pytest.approx(0.62, abs=0.01)
    assert log.quality.max(axis=1).mean() == pytest.approx(0.80, abs=0.01)


@pytest.mark.shared_data
def test_alpacaeval_log_lacks_two_phi2_rows() -> None:
    log = read_routing_log(shared_log("alpacaeval"))

    phi2 = log.catalog.index("phi-2")
    assert log.quality.shape == (805, 11)
    assert log.report.missing_model_rows == 2
    assert np.isnan(log.quality[:, phi2]).sum() == 2
    assert log.complete().sum() == 803


def test_load_report_names_model_without_rows(tmp_path):
    rows = [
        {"prompt_id": "p1", "model": "a", "quality": 1.0},
        {"prompt_id": "p1", "model": "b", "quality": 0.0},
        {"prompt_id": "p2", "model": "a", "quality": None},
    ]
    path = tmp_path / "gaps.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(
                {
                    "category": "c",
                    "prompt": f"prompt {row['prompt_id']}",
                    "cost_usd": 0.001,
                    "input_tokens": 10,
                    "output_tokens": 20,
                    **row,
                }
            )
            for row in rows
        )
    )
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {
                "a": {"input_usd_per_mtok": 20.0, "output_usd_per_mtok": 40.0},
                "b": {"input_usd_per_mtok": 20.0, "output_usd_per_mtok": 40.0},
            }
        )
    )

    lines = read_routing_log(path, prices).report.lines()

    assert "model b has no row for 1 prompts: p2" in lines
    assert "model a has a null quality for 1 prompts: p2" in lines
