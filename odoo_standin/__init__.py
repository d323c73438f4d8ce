"""A test double of an Odoo server, for exercising deployment tooling without running Odoo.

The promotion pipeline has to be tested against something that behaves like Odoo 18 on the
outside: the same HTTP and RPC shapes on the routes tooling uses, sessions kept the way Odoo
keeps them, the same process model and signals, a real PostgreSQL database with Odoo's table
and column names (so SQL written against it also runs against production), Odoo's
neutralization, and Odoo's filestore layout on disk. Where it differs from Odoo, it is wrong.
Each module's docstring names the Odoo source it copies.

Modules, one concept each:

- ``schema``, ``seed``, ``seed_settings`` -- ``init``: tables per installed module, demo rows,
  a live production's settings, filestore files.
- ``neutralize`` -- ``neutralize``: each installed module's neutralization script.
- ``serve``, ``prefork`` -- ``serve``: options, the postgres-role refusal, threaded or prefork.
- ``app`` -- the ASGI app: routes, ``/web/health``, ``/websocket``.
- ``dispatch``, ``sessions``, ``routes`` -- a request's life, session files, web controllers.
- ``rpc``, ``orm``, ``domain``, ``models`` -- ``/jsonrpc`` and ``/xmlrpc/2``, ``execute_kw``.
- ``users``, ``databases``, ``errors``, ``config`` -- logins and tokens, opening any database,
  Odoo's exceptions, a server's settings.
- ``faults`` -- switches read from a JSON file that make the server misbehave on purpose.
- ``__main__`` -- the ``odoo_standin`` command line (``init``, ``neutralize``, ``serve``).
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
