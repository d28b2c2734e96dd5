"""Service settings of Thompson sampling's exploration and of the learned prior."""

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import ValidationError

from banditroute.api import create_app
from banditroute.policies.thompson import DEFAULT_EXPLORATION
from banditroute.posterior import DEFAULT_PRIOR
from banditroute.settings import ServiceSettings, load_settings

CATALOG = [
    {"name": "a", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0},
    {"name": "b", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2},
]


def make_settings(**values: object) -> ServiceSettings:
    return ServiceSettings(catalog=CATALOG, **values)


def test_exploration_settings_defaults():
    settings = make_settings()

    assert settings.exploration.scale == DEFAULT_EXPLORATION
    assert settings.exploration.noise_variance is None
    assert settings.prior.learn_weight_precision == DEFAULT_PRIOR.learn_weight_precision


@pytest.mark.parametrize(
    "exploration",
    [{"scale": 0.0}, {"scale": -1.0}, {"noise_variance": 0.0}, {"shift": 1.0}],
)
def test_exploration_settings_reject_invalid(exploration):
    with pytest.raises(ValidationError):
        make_settings(exploration=exploration)


def test_exploration_settings_keep_store_namespace():
    plain = make_settings()
    overridden = make_settings(exploration={"scale": 1.0, "noise_variance": 0.05})

    assert overridden.store_namespace(8) == plain.store_namespace(8)


def test_learned_prior_settings_change_store_namespace():
    fixed = make_settings(prior={"learn_weight_precision": False})
    learned = make_settings(prior={"learn_weight_precision": True})

    assert learned.store_namespace(8) != fixed.store_namespace(8)
    assert learned.prior.to_prior().learn_weight_precision


def test_fixed_prior_settings_keep_namespace_digest():
    # A fixed prior leaves the flag out of the namespace digest, so a service that
    # does not learn the precision keeps the namespace (and the stored state) it had.
    settings = make_settings(prior={"learn_weight_precision": False})

    assert "learn_weight_precision" not in settings.prior.identity()


def test_exploration_settings_reach_policy(
    tmp_path, redis_url, redis_namespace, encoder
):
    content = {
        "catalog": CATALOG,
        "redis_url": redis_url,
        "redis_namespace": redis_namespace,
        "seed": 0,
        "exploration": {"scale": 0.8, "noise_variance": 0.05},
        "prior": {"learn_weight_precision": True},
    }
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(content))
    settings = load_settings(path)

    with TestClient(create_app(settings, encoder=encoder)) as client:
        policy = client.app.state.service.policy

        assert policy.exploration == 0.8
        assert policy.noise_variance == 0.05
        assert policy.posteriors.prior.learn_weight_precision
        np.testing.assert_array_equal(
            policy.posteriors.weight_precision, [DEFAULT_PRIOR.weight_precision] * 2
        )
