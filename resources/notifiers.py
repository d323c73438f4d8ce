"""Notification channels: a JSON webhook signed with HMAC-SHA256, and every service apprise reaches.

Apprise (PyPI ``apprise``) speaks Slack, e-mail (``mailto://``, ``mailtos://``), Teams, Matrix, Telegram and 100+
others from one URL each, so no client is written by hand here. It cannot sign a body, so the signed JSON webhook is
a small httpx poster of its own: the receiver checks ``X-Promote-Signature: sha256=<hex HMAC of the raw body>``.

Both take their secrets as *values* resolved by the caller from references (the HMAC key, an apprise URL that embeds
a token or a password) and never say them back: an error is the exception's type and a short status, never the URL
of an apprise target (which is itself the secret) nor apprise's log lines (which quote it). Apprise's logger is
silenced here for the same reason: its warnings would otherwise reach stderr, and so Dagster's captured logs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Annotated, Literal

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

NotificationEvent = Literal["started", "awaiting_approval", "success", "rolled_back", "failed", "blue_deleted"]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = ("started", "awaiting_approval", "success", "rolled_back",
                                                      "failed", "blue_deleted")
SIGNATURE_HEADER = "X-Promote-Signature"
EVENT_HEADER = "X-Promote-Event"
DELIVERY_HEADER = "X-Promote-Delivery"

_apprise_log = logging.getLogger("apprise")
_apprise_log.addHandler(logging.NullHandler())
_apprise_log.propagate = False  # its lines quote target URLs, tokens included


def _matches(pattern: str, message: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


_SecretRef = Annotated[str, _matches(r"[A-Za-z_][A-Za-z0-9_]{0,127}",
                                     "must be a secret reference: the NAME of an environment variable or of a key of"
                                     " the secrets file (letters, digits, '_'), never the secret itself")]
_HttpUrl = Annotated[str, _matches(r"https?://[^\s@]+", "must be an http:// or https:// URL without credentials"
                                                        " (the signature authenticates the sender)")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookTarget(_Strict):
    """A JSON webhook: the body POSTed as it is, signed with HMAC-SHA256."""

    url: _HttpUrl = Field(description="Where the JSON body is POSTed; it must not hold a secret (it is recorded in"
                          " the run's events and evidence).")
    secret_ref: _SecretRef = Field(description="Secret reference to the HMAC-SHA256 key: the X-Promote-Signature"
                                   " header is sha256=<hex HMAC of the raw body>.")
    events: list[NotificationEvent] | None = Field(default=None, description="The events sent here (default:"
                                                   " every event).")


class AppriseTarget(_Strict):
    """Any service apprise reaches (Slack, e-mail, Teams, ...), by its apprise URL."""

    url_ref: _SecretRef = Field(description="Secret reference to the apprise URL (slack://..., mailtos://...):"
                                " such URLs embed tokens or passwords, so they are only ever given by reference.")
    label: str | None = Field(default=None, min_length=1, max_length=80, description="How the run's events and"
                              " evidence name this target (default: the reference's name).")
    events: list[NotificationEvent] | None = Field(default=None, description="The events sent here (default:"
                                                   " every event).")


class NotificationsConfig(_Strict):
    """Where an environment's promotions are announced, and how hard each message is tried."""

    webhooks: list[WebhookTarget] = Field(default_factory=list, description="Signed JSON webhooks.")
    apprise: list[AppriseTarget] = Field(default_factory=list, description="Apprise targets: Slack, e-mail and"
                                         " the other services apprise reaches.")
    attempts: int = Field(default=3, ge=1, le=10, description="Tries per message and target before it is recorded"
                          " as not delivered.")
    timeout_seconds: float = Field(default=10.0, gt=0, le=600, description="Longest one try may take (connect and"
                                   " answer).")
    backoff_seconds: float = Field(default=2.0, ge=0, le=300, description="Wait before the second try; doubled"
                                   " before each further one.")


def sign(key: str, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=`` and the hex HMAC-SHA256 under ``key``."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def post_signed(url: str, body: bytes, key: str, event: str, delivery_id: str, timeout: float) -> None:
    """POST ``body`` to ``url`` with its signature; raises NotDelivered (a short, secret-free reason) unless 2xx."""
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(key, body), EVENT_HEADER: event,
               DELIVERY_HEADER: delivery_id, "User-Agent": "promote-pipeline"}
    try:
        resp = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise NotDelivered(f"timed out after {timeout:g}s ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise NotDelivered(f"{type(exc).__name__}: {_errno_text(exc)}") from None
    if not 200 <= resp.status_code < 300:
        raise NotDelivered(f"HTTP {resp.status_code}")


def _errno_text(exc: BaseException) -> str:
    """The OS's words for a connection error (``Connection refused``), which name no URL."""
    cause = exc.__cause__ or exc.__context__
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    return (cause.strerror if isinstance(cause, OSError) and cause.strerror else "no connection")


def send_apprise(url: str, title: str, body: str, timeout: float) -> None:
    """Send through apprise; raises NotDelivered (never quoting the URL) unless apprise reports success."""
    import apprise  # imported here: only a process that sends pays for apprise's plugin loading

    app = apprise.Apprise()
    service = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if service is None:
        raise NotDelivered("apprise does not recognise the URL behind the reference")
    # Bounded tries: apprise's own socket timeouts, which its plugins pass to requests or smtplib.
    service.socket_connect_timeout = timeout
    service.socket_read_timeout = timeout
    app.add(service)
    try:
        ok = app.notify(title=title, body=body)
    except Exception as exc:  # a plugin that raises: its type only (its message may quote the URL)
        raise NotDelivered(f"apprise {type(exc).__name__}") from None
    if not ok:
        raise NotDelivered(f"{getattr(service, 'service_name', None) or 'apprise'} did not accept it")


class NotDelivered(RuntimeError):
    """One try failed; the message names no secret and no apprise URL."""
