"""promote-pipeline: gated blue-green promotion of an Odoo staging environment to production."""
