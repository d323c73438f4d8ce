"""The notification settings' format and the webhook signature (pure logic)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import ValidationError

from resources import notifiers
from resources.notifiers import AppriseTarget, NotificationsConfig, WebhookTarget

pytestmark = pytest.mark.unit


def test_every_field_is_described_and_unknown_keys_are_refused() -> None:
    for cls in (NotificationsConfig, WebhookTarget, AppriseTarget):
        assert cls.__doc__ and cls.model_config.get("extra") == "forbid", cls
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name}"


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"event": "started"}'
    expected = hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    assert notifiers.sign("k3y", body) == f"sha256={expected}"
    assert notifiers.sign("k3y", body + b" ") != notifiers.sign("k3y", body)


@pytest.mark.parametrize("config,where", [
    ({"webhooks": [{"url": "https://u:p4ss@h.example/x", "secret_ref": "K"}]}, ("webhooks", 0, "url")),
    ({"webhooks": [{"url": "ftp://h.example/x", "secret_ref": "K"}]}, ("webhooks", 0, "url")),
    ({"webhooks": [{"url": "https://h.example/x", "secret_ref": "not a name!"}]}, ("webhooks", 0, "secret_ref")),
    ({"apprise": [{"url_ref": "slack://a/b/c"}]}, ("apprise", 0, "url_ref")),
    ({"apprise": [{"url_ref": "A", "events": ["deployed"]}]}, ("apprise", 0, "events", 0)),
    ({"attempts": 0}, ("attempts",)),
    ({"timeout_seconds": 0}, ("timeout_seconds",)),
    ({"webhook": []}, ("webhook",)),
])
def test_a_bad_setting_is_refused_where_it_is(config: dict[str, object], where: tuple[object, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        NotificationsConfig.model_validate(config)
    assert [tuple(e["loc"]) for e in caught.value.errors()] == [where]


def test_every_event_is_sent_unless_a_target_names_its_own() -> None:
    config = NotificationsConfig.model_validate({
        "webhooks": [{"url": "https://h.example/x", "secret_ref": "K"}],
        "apprise": [{"url_ref": "A", "events": ["awaiting_approval"]}]})
    assert config.webhooks[0].events is None and config.apprise[0].events == ["awaiting_approval"]
    assert set(notifiers.NOTIFICATION_EVENTS) == {"started", "awaiting_approval", "success", "rolled_back", "failed",
                                                  "blue_deleted"}
