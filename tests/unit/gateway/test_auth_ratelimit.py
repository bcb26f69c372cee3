"""API keys -> tenants, and per-tenant token buckets."""

import pytest
import yaml

from services.common.errors import Overloaded, Unauthenticated
from services.gateway.auth import Tenant, hash_key, load_api_keys, parse_api_keys
from services.gateway.ratelimit import RateLimiter

KEYS = {
    "tenants": {
        "acme": {"requests_per_minute": 2, "tokens_per_minute": 600, "keys": [{"plain": "k-acme"}]},
        "umbrella": {"keys": [{"sha256": hash_key("k-umbrella")}]},
    }
}


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def test_plain_and_hashed_keys_name_their_tenant(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump(KEYS))
    keys = load_api_keys(path)
    assert keys.authenticate(bearer("k-acme")) == Tenant("acme", 2.0, 600.0)
    assert keys.authenticate([("Authorization", b"bearer k-umbrella")]).name == "umbrella"


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ([], "missing"),
        ([("authorization", "k-acme")], "Bearer"),
        ([("authorization", "Basic k-acme")], "Bearer"),
        (bearer("wrong"), "invalid API key"),
        (bearer(""), "Bearer"),
    ],
)
def test_missing_or_wrong_keys_are_unauthenticated(metadata, message):
    with pytest.raises(Unauthenticated, match=message):
        parse_api_keys(KEYS).authenticate(metadata)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "'tenants'"),
        ({"tenants": {"a": {"keys": []}}}, "non-empty"),
        ({"tenants": {"a": {"keys": [{"sha256": "xyz"}]}}}, "hex"),
        ({"tenants": {"a": {"keys": [{"plain": "k"}], "requests_per_minute": -1}}}, "positive"),
        ({"tenants": {"a": {"keys": [{"plain": "k"}], "burst": 3}}}, "unknown"),
        ({"tenants": {"a": {"keys": [{"plain": "k"}]}, "b": {"keys": [{"plain": "k"}]}}}, "also a key"),
    ],
)
def test_bad_key_files_are_refused_with_the_reason(document, message):
    with pytest.raises(ValueError, match=message):
        parse_api_keys(document)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_bucket_refills():
    clock = Clock()
    limiter = RateLimiter(clock)
    tenant = Tenant("acme", requests_per_minute=2)
    limiter.admit(tenant)
    limiter.admit(tenant)
    with pytest.raises(Overloaded) as info:
        limiter.admit(tenant)
    assert info.value.retry_after_s == pytest.approx(30.0)
    clock.now += 30.0
    limiter.admit(tenant)


def test_tokens_are_charged_after_the_reply_and_block_while_in_debt():
    clock = Clock()
    limiter = RateLimiter(clock)
    tenant = Tenant("acme", tokens_per_minute=600)  # 10 tokens per second
    limiter.admit(tenant)
    limiter.charge_tokens(tenant, 650)  # 50 tokens of debt
    with pytest.raises(Overloaded, match="tokens per minute") as info:
        limiter.admit(tenant)
    assert info.value.retry_after_s == pytest.approx(5.1)
    clock.now += 5.2
    limiter.admit(tenant)


def test_tenants_have_separate_buckets_and_unlimited_tenants_pass():
    limiter = RateLimiter(Clock())
    limited, other = Tenant("a", requests_per_minute=1), Tenant("b", requests_per_minute=1)
    limiter.admit(limited)
    limiter.admit(other)
    for _ in range(100):
        limiter.admit(Tenant("free"))
