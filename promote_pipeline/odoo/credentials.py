"""Which of Odoo's columns and config parameters hold credentials: blanked wherever rows are exported.

An explicit list, not a pattern: a pattern loose enough to catch ``smtp_pass`` also catches
``passed``. Names are compared exactly; a dotted config parameter (``database.secret``) by its
last part.
"""

from __future__ import annotations

from resources.redaction import SECRET_KEYS

# Exact names of credential columns in Odoo's standard modules (17 to 19), beyond the generic ones.
CREDENTIAL_NAMES = SECRET_KEYS | {
    "smtp_pass",  # ir_mail_server: the outgoing mail server's password
    "access_key",  # web_unsplash.access_key (a config parameter)
}

# Suffixes Odoo's modules use for credentials, each one a credential wherever it ends a name:
CREDENTIAL_SUFFIXES = (
    "_password", "_passwd",  # fetchmail and provider passwords
    "_secret",  # client_secret (OAuth, Gmail, Outlook), totp_secret, *_webhook_secret, razorpay_key_secret
    "_secret_key",  # stripe_secret_key, xendit_secret_key, flutterwave_secret_key
    "_api_key",  # adyen_api_key, mollie_api_key
    "_private_key",  # recaptcha_private_key, smtp_ssl_private_key
    "_hmac_key", "_signature_key",  # adyen_hmac_key, authorize_signature_key: they sign payment notifications
    "_token",  # account_token (IAP), access_token (portal links), refresh_token, signup_token, session_token
)
# Deliberately absent: "_key" alone (stripe_publishable_key is public, ir_config_parameter.key is a name),
# "_pass" alone, and any "*_ref" (a reference names a variable, it is not a secret).


def is_credential(name: str) -> bool:
    """A column or config parameter that holds a credential: an exact name, or one of the suffixes above."""
    last = name.strip().lower().rsplit(".", 1)[-1]
    return last in CREDENTIAL_NAMES or last.endswith(CREDENTIAL_SUFFIXES)
