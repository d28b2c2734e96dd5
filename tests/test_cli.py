"""Tests of the ``banditroute`` command line, run in-process with typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from banditroute.cli import app

MODELS = {
    "small": {"input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2},
    "large": {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0},
}
TOPICS = ("arithmetic", "poetry", "geography", "chemistry")

runner = CliRunner()


def normalized(text: str) -> str:
    """Return ``text`` with rich's panel borders removed and whitespace collapsed."""
    return " ".join(text.replace("│", " ").split())


def write_log(folder: Path, n_prompts: int = 12) -> Path:
    """Write a JSON Lines log and models.json. Prompt 0 has no quality for "large"."""
    rows = []
    for i in range(n_prompts):
        topic = TOPICS[i % len(TOPICS)]
        for model, prices in MODELS.items():
            quality = (
                None
                if (i == 0 and model == "large")
                else float(model == "large" or topic == "arithmetic")
            )
            input_tokens, output_tokens = 20, 100
            cost = (
                input_tokens * prices["input_usd_per_mtok"]
                + output_tokens * prices["output_usd_per_mtok"]
            ) / 1e6
            rows.append(
                {
                    "prompt_id": f"q{i}",
                    "category": topic,
                    "prompt": f"Question {i} about {topic}: explain the main idea.",
                    "model": model,
                    "quality": quality,
                    "cost_usd": cost,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                }
            )

    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "routing-log.jsonl"
    log_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "models.json").write_text(json.dumps(MODELS))
    return log_path


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


# Help


def test_help_lists_replay_command():
    result = invoke("--help")

    assert result.exit_code == 0
    assert "replay" in result.output


def test_replay_help_states_units():
    result = invoke("replay", "--help")
    text = normalized(result.output)

    assert result.exit_code == 0
    assert "quality points given up per USD of expected cost" in text
    assert "USD per million tokens" in text
    assert "--warm-start" in text
    assert "--jobs" in text


# End to end


def test_replay_of_jsonl_log_writes_report(tmp_path):
    log_path = write_log(tmp_path / "data")
    out_dir = tmp_path / "report"

    result = invoke(
        "replay",
        log_path,
        "--policies",
        "random,cheapest,thompson",
        "--cost-weights",
        "0,100",
        "--seeds",
        "2",
        "--warm-start",
        "0.25",
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        out_dir,
        "--no-progress",
    )

    assert result.exit_code == 0, result.output
    assert f"Report written to {out_dir}" in normalized(result.stdout)
    assert "thompson" in result.stdout
    assert (out_dir / "summary.md").is_file()
    assert (out_dir / "learning_curves.png").stat().st_size > 0
    assert (tmp_path / "cache" / "embeddings.sqlite").is_file()

    document = json.loads((out_dir / "results.json").read_text())
    assert document["prompts"]["excluded"] == 1
    assert document["prompts"]["warm_start_per_seed"] == 2
    assert document["settings"]["cost_weights"] == [0.0, 100.0]
    assert document["inputs"]["log"] == str(log_path)


def test_replay_with_drift_scenario_and_half_life(tmp_path):
    log_path = write_log(tmp_path / "data", n_prompts=16)
    out_dir = tmp_path / "report"

    result = invoke(
        "replay",
        log_path,
        "--policies",
        "thompson,fixed:large",
        "--seeds",
        "1",
        "--scenario",
        "drift-swap:large,small",
        "--half-life",
        "50",
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        out_dir,
        "--no-progress",
    )

    assert result.exit_code == 0, result.output
    document = json.loads((out_dir / "results.json").read_text())
    assert document["settings"]["scenario"]["kind"] == "drift-swap"
    assert document["inputs"]["thompson half-life"] == "50 feedback events"


def test_replay_with_arrival_scenario_writes_report(tmp_path):
    log_path = write_log(tmp_path / "data", n_prompts=16)
    out_dir = tmp_path / "report"

    result = invoke(
        "replay",
        log_path,
        "--policies",
        "thompson",
        "--seeds",
        "1",
        "--cost-weights",
        "0,100",
        "--scenario",
        "arrival:large",
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        out_dir,
        "--no-progress",
    )

    assert result.exit_code == 0, result.output
    document = json.loads((out_dir / "results.json").read_text())
    assert document["settings"]["scenario"]["models"] == ["large"]
    assert "large-cheap" in (out_dir / "summary.md").read_text()


def test_replay_unknown_scenario_model_exits_2(tmp_path):
    log_path = write_log(tmp_path / "data")
    result = invoke(
        "replay",
        log_path,
        "--scenario",
        "drift-drop:medium",
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        tmp_path / "report",
        "--no-progress",
    )

    assert result.exit_code == 2
    assert "'medium'" in normalized(result.output)


def test_replay_without_log_uses_synthetic_workload(tmp_path):
    out_dir = tmp_path / "report"

    result = invoke(
        "replay",
        "--synthetic-prompts",
        "25",
        "--policies",
        "random,cheapest",
        "--seeds",
        "1",
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        out_dir,
        "--no-progress",
    )

    assert result.exit_code == 0, result.output
    assert "synthetic workload of 25 prompts" in result.stdout
    document = json.loads((out_dir / "results.json").read_text())
    assert document["prompts"]["in_log"] == 25
    assert document["inputs"]["log"].startswith("built-in synthetic workload")


# Invalid input


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--seeds", "-3", "-3"),
        ("--seeds", "0", "0 is invalid"),
        ("--warm-start", "1.5", "1.5"),
        ("--warm-start", "1.0", "1.0"),
        ("--warm-start", "nan", "nan"),
        ("--cost-weights", "0,nan", "'nan'"),
        ("--cost-weights", "0,-5", "'-5'"),
        ("--cost-weights", "cheap", "'cheap'"),
        ("--max-prompts", "0", "0 is invalid"),
        ("--synthetic-prompts", "-1", "-1"),
        ("--jobs", "0", "0 is invalid"),
        ("--log-level", "LOUD", "'LOUD'"),
        ("--scenario", "drift-drop", "drift-drop"),
        ("--scenario", "melt:small", "'melt'"),
        ("--half-life", "0", "0.0 is invalid"),
    ],
)
def test_invalid_option_value_exits_2(option, value, named, tmp_path):
    result = invoke("replay", option, value, "--out", tmp_path / "report")

    assert result.exit_code == 2
    assert option in normalized(result.output)
    assert named in normalized(result.output)
    assert not (tmp_path / "report").exists()


def test_unknown_policy_exits_2(tmp_path):
    log_path = write_log(tmp_path / "data")

    result = invoke(
        "replay", log_path, "--policies", "random,oracle-please", "--no-progress"
    )

    assert result.exit_code == 2
    assert "oracle-please" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_log_exits_2(tmp_path):
    missing = tmp_path / "absent.jsonl"

    result = invoke("replay", missing, "--no-progress")

    assert result.exit_code == 2
    assert str(missing) in result.stderr


# Real routing logs

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(
    not (SHARED_DATA / "alpacaeval").is_dir(),
    reason="the routing logs are not beside the project",
)
def test_replay_of_alpacaeval_log(tmp_path):
    out_dir = tmp_path / "report"

    result = invoke(
        "replay",
        SHARED_DATA / "alpacaeval" / "routing-log.jsonl.gz",
        "--policies",
        "thompson,knn,random",
        "--cost-weights",
        "0,100",
        "--seeds",
        "2",
        "--max-prompts",
        "150",
        "--jobs",
        "2",
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        out_dir,
        "--no-progress",
    )

    assert result.exit_code == 0, result.output
    document = json.loads((out_dir / "results.json").read_text())
    # phi-2 has no row for two prompts, so those two are left out.
    assert document["prompts"]["excluded"] == 2
    assert document["prompts"]["stream_per_seed"] == 150
    assert document["load_report"]["missing_model_rows"] == 2
    assert document["cost_weights"][0]["best_single_model"] == "gpt4_1106_preview"


# Self-tuning controls


def test_replay_with_controls_reports_them(tmp_path):
    log_path = write_log(tmp_path / "data", n_prompts=40)
    out_dir = tmp_path / "report"

    result = invoke(
        "replay",
        log_path,
        "--policies",
        "thompson",
        "--seeds",
        "2",
        "--cost-target",
        "0.0002",
        "--pacing-warmup",
        "5",
        "--health",
        "--failing-model",
        "large",
        "--failing-from",
        "10",
        "--rollout-share",
        "0.5",
        "--default-model",
        "small",
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        out_dir,
        "--no-progress",
    )

    assert result.exit_code == 0, result.output
    assert "## Budget pacing" in result.stdout
    document = json.loads((out_dir / "results.json").read_text())
    controls = document["settings"]["controls"]
    assert controls["cost_target"] == 0.0002
    assert controls["health"]["consecutive_errors"] == 5
    assert controls["default_model"] == "small"
    assert set(document["controls"][0]) >= {"pacing", "failure", "rollout"}
    summary = (out_dir / "summary.md").read_text()
    assert "## Failing model" in summary
    assert "## Rollout" in summary


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (("--rollout-share", "0.5"), "--default-model"),
        (("--rollout-share", "2", "--default-model", "small"), "share"),
        (("--cost-target", "0"), "target_cost_usd"),
    ],
)
def test_invalid_control_options_exit_2(options, named, tmp_path):
    log_path = write_log(tmp_path / "data")
    result = invoke("replay", log_path, *options, "--out", tmp_path / "report")
    assert result.exit_code == 2
    assert named in normalized(result.output)


def test_unknown_control_model_exits_2(tmp_path):
    log_path = write_log(tmp_path / "data")
    result = invoke(
        "replay",
        log_path,
        "--failing-model",
        "huge",
        "--cache-dir",
        tmp_path / "cache",
        "--out",
        tmp_path / "report",
        "--no-progress",
    )
    assert result.exit_code == 2
    assert "'huge' is not in the catalog" in normalized(result.output)
