"""Redis Cluster settings of `RedisCache`, checked before anything connects (no server needed)."""

from __future__ import annotations

import pytest

from rerank_prod import RedisCache


@pytest.mark.parametrize(
    ("url", "kwargs", "error", "message"),
    [
        ("redis+cluster://127.0.0.1:7000/2", {}, ValueError, "only database 0"),
        ("unix:///run/redis.sock", {"cluster": True}, ValueError, "over TCP"),
        ("redis://127.0.0.1:7000", {"cluster": "yes"}, TypeError, "cluster must be a bool"),
        ("memcached://127.0.0.1:7000", {}, ValueError, "redis\\+cluster://"),
        ("redis+cluster://127.0.0.1:7000", {"no_such_option": 1}, TypeError, "no_such_option"),
    ],
)
def test_bad_cluster_settings_fail_at_construction(url: str, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        RedisCache(url, **kwargs)


def test_a_cluster_url_builds_without_connecting_and_hides_credentials() -> None:
    cache = RedisCache("rediss+cluster://user:s3cret@127.0.0.1:1/0", key_prefix="api:")
    assert cache.cluster and cache.url.startswith("rediss://")
    assert "s3cret" not in repr(cache) and "cluster=True" in repr(cache)
    assert RedisCache("redis://127.0.0.1:1", cluster=True).cluster
    assert not RedisCache("redis://127.0.0.1:1").cluster
