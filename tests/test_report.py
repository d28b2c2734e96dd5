"""Tests of the replay report files written from a small in-memory replay."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from banditroute.catalog import Catalog, ModelSpec
from banditroute.errors import ConfigError
from banditroute.policy import Decision, Policy
from banditroute.replay import ReplayResult, ReplaySettings, SeedSpread, replay
from banditroute.report import _needs_log_scale, format_spread, write_report
from banditroute.routing_log import LoadReport, RoutingLog

REPORT_FILES = {
    "results.json",
    "summary.csv",
    "summary.md",
    "learning_curves.png",
    "cost_quality.png",
    "model_shares.png",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class UniformPolicy(Policy):
    """Chooses a model uniformly at random, or always ``model`` when it is given."""

    def __init__(self, catalog: Catalog, rng: np.random.Generator, model=None) -> None:
        super().__init__(catalog, rng)
        self.model = model

    def decide(self, context, input_tokens, cost_weight, allowed=None) -> Decision:
        cost = self.cost_model.expected_cost(input_tokens)
        if self.model is not None:
            return Decision(self.model, 1.0, cost, np.zeros(self.n_models))

        model = int(self.rng.integers(self.n_models))
        return Decision(model, 1.0 / self.n_models, cost, np.zeros(self.n_models))

    def update_quality(self, model_index, context, quality) -> None:
        pass


def make_test_policy(name, catalog, dimension, rng) -> Policy:
    if name == "uniform":
        return UniformPolicy(catalog, rng)
    if name.startswith("fixed:"):
        return UniformPolicy(catalog, rng, catalog.index(name.removeprefix("fixed:")))
    raise ConfigError(f"Unknown test policy {name!r}.")


def make_log(n_prompts: int = 40) -> RoutingLog:
    rng = np.random.default_rng(3)
    names = ("small", "medium", "large")
    catalog = Catalog(ModelSpec(name, 0.0, 0.0) for name in names)
    quality = (rng.random((n_prompts, 3)) < [0.4, 0.6, 0.8]).astype(float)
    # Costs span 100x, so the cost axis of the cost-quality plot is logarithmic.
    cost = np.tile([0.0001, 0.001, 0.01], (n_prompts, 1))
    report = LoadReport(
        source="memory",
        rows=quality.size,
        prompts=n_prompts,
        models=3,
        duplicate_rows=2,
        missing_model_rows=0,
        null_quality=0,
        incomplete_prompts=0,
    )
    return RoutingLog(
        prompt_ids=[f"p{i}" for i in range(n_prompts)],
        prompts=[f"prompt {i}" for i in range(n_prompts)],
        categories=["test"] * n_prompts,
        catalog=catalog,
        quality=quality,
        cost_usd=cost,
        input_tokens=np.ones(n_prompts),
        output_tokens=np.full((n_prompts, 3), 5.0),
        report=report,
    )


def run_replay(**settings) -> ReplayResult:
    log = make_log()
    contexts = np.ones((len(log), 1))
    defaults = dict(policies=("uniform", "fixed:large"), cost_weights=(0.0, 20.0))
    return replay(
        log,
        contexts,
        ReplaySettings(**{**defaults, **settings}, curve_points=8),
        progress=False,
        policy_factory=make_test_policy,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> list[Path]:
    """Write the report of a three-seed replay once for the tests that read it."""
    out_dir = tmp_path_factory.mktemp("report") / "nested"
    return write_report(run_replay(seeds=3), out_dir, title="Test replay")


@pytest.fixture(scope="module")
def report_dir(written) -> Path:
    return written[0].parent


def test_report_writes_every_file(written):
    assert {path.name for path in written} == REPORT_FILES
    for path in written:
        assert path.is_file(), path


def test_results_json_contains_settings_and_load_report(report_dir):
    document = json.loads((report_dir / "results.json").read_text())

    assert document["title"] == "Test replay"
    assert document["settings"]["policies"] == ["uniform", "fixed:large"]
    assert document["load_report"]["duplicate_rows"] == 2
    assert document["prompts"]["stream_per_seed"] == 40


def test_results_json_keeps_per_seed_values(report_dir):
    document = json.loads((report_dir / "results.json").read_text())
    weight = document["cost_weights"][1]

    reward = weight["policies"]["uniform"]["reward"]
    assert weight["cost_weight"] == 20.0
    assert len(reward["per_seed"]) == 3
    assert reward["mean"] == pytest.approx(np.mean(reward["per_seed"]))
    assert weight["best_single_model"] in {"small", "medium", "large"}
    assert len(weight["learning_curves"]["uniform"]["mean"]) == 8
    assert len(document["seed_baselines"]) == 6


def test_results_json_writes_missing_spread_as_null(tmp_path):
    write_report(run_replay(seeds=1), tmp_path, title="One seed")
    document = json.loads((tmp_path / "results.json").read_text())

    quality = document["cost_weights"][0]["policies"]["uniform"]["quality"]
    assert quality["std"] is None
    assert quality["mean"] is not None


def test_summary_csv_has_row_per_policy_and_weight(report_dir):
    with (report_dir / "summary.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))

    assert [(row["policy"], float(row["cost_weight"])) for row in rows] == [
        ("uniform", 0.0),
        ("uniform", 20.0),
        ("fixed:large", 0.0),
        ("fixed:large", 20.0),
    ]
    assert float(rows[2]["cost_usd_mean"]) == pytest.approx(0.01)


def test_summary_markdown_places_references(report_dir):
    text = (report_dir / "summary.md").read_text()

    assert text.startswith("# Test replay")
    assert "## Cost weight 20 (quality points per USD)" in text
    assert text.count("| oracle |") == 2
    assert text.count("| best single model (") == 2
    assert "2 duplicate (prompt_id, model) rows skipped" in text
    assert "- warm_start_fraction: `0.0`" in text


def test_plots_are_nonempty_png(report_dir):
    for name in ("learning_curves.png", "cost_quality.png", "model_shares.png"):
        path = report_dir / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        height, width, _ = imread(path).shape
        assert height > 100, name
        assert width > 100, name


def test_share_plot_with_many_cost_weights(tmp_path):
    many = run_replay(seeds=1, cost_weights=(0.0, 1.0, 10.0, 100.0))

    paths = write_report(many, tmp_path, title="Many weights")

    assert (tmp_path / "model_shares.png").stat().st_size > 0
    assert len(paths) == len(REPORT_FILES)


def test_cost_axis_is_logarithmic_beyond_tenfold_span():
    assert _needs_log_scale([0.001, 0.02])
    assert not _needs_log_scale([0.001, 0.005])
    assert not _needs_log_scale([0.0, 0.02])


def test_format_spread_shows_mean_and_std():
    spread = SeedSpread(np.array([0.4, 0.6]))

    assert format_spread(spread, "{:.3f}") == "0.500 ± 0.141"


def test_format_spread_of_one_seed_has_no_std():
    assert format_spread(SeedSpread(np.array([0.25])), "{:.2f}") == "0.25"


def test_format_spread_of_nan_is_not_available():
    assert format_spread(SeedSpread(np.array([np.nan, 0.5])), "{:.2f}") == "n/a"
