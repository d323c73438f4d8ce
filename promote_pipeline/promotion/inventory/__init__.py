"""Onboarding an installation from an inventory file (``promote inventory check|apply``, ``examples/inventory.yaml``).

``model.py`` is the file's format; ``rules.py`` reads it (one line per problem) and the settings it stands for;
``state.py`` turns it into ops records and reads what is recorded; ``probes.py`` checks the machine, reading
only; ``apply.py`` plans the changes from what is recorded and makes them; ``adopt.py`` takes over a live
deployment.
"""
