"""A test double of an Odoo server, for exercising deployment tooling where Odoo cannot run.

Real Odoo cannot be installed in this environment, yet the promotion pipeline has to be
tested against something that behaves like it on the outside: the same HTTP shapes on the
few routes that health checks and smoke tests use, a real PostgreSQL database with Odoo's
table and column names (so SQL written against it also runs against production), and
Odoo's filestore layout on disk (so copying and verifying attachments is exercised for
real). Nothing else of Odoo is imitated.

Modules, one concept each:

- ``schema``   -- the DDL: which tables and columns exist, and the constraints added after load.
- ``seed``     -- ``init``: create the database, demo rows and filestore files.
- ``app``      -- the Starlette ASGI app that answers Odoo's HTTP routes.
- ``faults``   -- switches read from a JSON file that make the server misbehave on purpose.
- ``__main__`` -- the ``odoo_standin`` command line (``init`` and ``serve``).
"""

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres"
"""Where PostgreSQL is expected when neither ``--dsn`` nor ``STANDIN_DSN`` says otherwise."""

DSN_ENV = "STANDIN_DSN"
"""Environment variable that overrides :data:`DEFAULT_DSN`."""

DEFAULT_MODULES = ("base", "web", "mail", "contacts", "sale", "iap", "payment", "payment_stripe", "delivery",
                   "delivery_dhl", "website", "auth_oauth", "google_calendar", "microsoft_calendar",
                   "cloud_storage", "cloud_storage_google")
"""What ``init`` installs by default: a production using the modules whose settings ``odoo-bin neutralize``
changes, so that a neutralized copy differs from it where a real one would."""
