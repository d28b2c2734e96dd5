import os

import pytest

from banditroute.encoder import Encoder


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    """The packaged all-MiniLM-L6-v2 encoder, loaded once per test session."""
    return Encoder()


# Redis fixtures. Tests that only read and write use the machine's Redis on port 6379
# (CI starts one), or the port in BANDITROUTE_TEST_REDIS_PORT, each under a namespace
# of its own whose keys are deleted afterwards. Tests that stop or restart Redis start
# a private server under tmp_path.

MACHINE_REDIS_HOST = "127.0.0.1"
MACHINE_REDIS_PORT = int(os.environ.get("BANDITROUTE_TEST_REDIS_PORT", "6379"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the machine's Redis; skips the test when none responds on its port."""
    from redis_server import redis_answers

    if not redis_answers(MACHINE_REDIS_HOST, MACHINE_REDIS_PORT):
        pytest.skip(
            f"No Redis server responds to PING on {MACHINE_REDIS_HOST}:"
            f"{MACHINE_REDIS_PORT}; start one (redis-server --port "
            f"{MACHINE_REDIS_PORT}) to run the Redis tests."
        )
    return f"redis://{MACHINE_REDIS_HOST}:{MACHINE_REDIS_PORT}/0"


@pytest.fixture
def redis_namespace(redis_url: str):
    """A key namespace used by one test only; its keys are deleted after the test."""
    import uuid

    import redis

    namespace = f"banditroute-test:{uuid.uuid4().hex}"
    yield namespace

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server (appendonly yes) of this test alone, free to stop and restart."""
    from redis_server import RedisServer

    if not RedisServer.available():
        pytest.skip("redis-server is not installed; install it to run these tests.")

    server = RedisServer(tmp_path / "private-redis", appendonly=True)
    server.start()
    yield server
    server.stop()
