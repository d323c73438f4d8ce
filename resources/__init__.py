"""Adapters to the world outside the promotion process, each a Dagster ``ConfigurableResource``.

One module per adapter: the ops database, the Odoo host, the routers and the artifact store.
"""
