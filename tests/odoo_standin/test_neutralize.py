"""``odoo_standin neutralize`` does to a copy what ``odoo-bin neutralize`` does."""

from __future__ import annotations

from pathlib import Path

from .conftest import DSN, cli, connect, init_db


def test_neutralize_turns_off_crons_mail_and_payments_and_sets_the_flag(tmp_path: Path,
                                                                        scratch_dbs: list[str]) -> None:
    seeded = init_db(tmp_path)
    scratch_dbs.append(seeded.db)
    result = cli("neutralize", "--dsn", DSN, "--db", seeded.db, "--base-url", "http://staging.example")
    assert result.returncode == 0, result.stderr
    with connect(seeded.db) as conn:
        active_crons = conn.execute(
            "SELECT d.name FROM ir_cron c JOIN ir_model_data d ON d.model = 'ir.cron' AND d.res_id = c.id"
            " WHERE c.active").fetchall()
        assert active_crons == [("autovacuum_job",)]
        assert conn.execute("SELECT count(*) FROM ir_mail_server WHERE active").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM fetchmail_server WHERE active").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM payment_provider WHERE state = 'enabled'").fetchone() == (0,)
        params = dict(conn.execute("SELECT key, value FROM ir_config_parameter").fetchall())
    assert params["database.is_neutralized"] == "true"
    assert params["web.base.url"] == "http://staging.example"
