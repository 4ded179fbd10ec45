"""Two admins (here: four portal processes) starting a rotation at once make one rotation, on
the embedded SQLite file (IMMEDIATE transactions). PostgreSQL: tests/services/."""

from __future__ import annotations

import sqlite3

from tests.node_token_race import portal_env, race_starts


def test_concurrent_starts_on_one_sqlite_database_make_exactly_one_rotation(tmp_path):
    token_file = tmp_path / "node-token"
    token_file.write_text("the-current-node-token-0123456789\n")
    database = tmp_path / "portal.sqlite3"
    outcomes = race_starts(portal_env(f"sqlite:///{database}", token_file))
    assert outcomes.count("started") == 1, outcomes
    refused = [o for o in outcomes if o != "started"]
    assert all(o.startswith("refused: a rotation is already running") for o in refused), outcomes
    with sqlite3.connect(database) as db:
        slots = db.execute("SELECT slot FROM cluster_nodetokenrecord ORDER BY slot").fetchall()
        refusals = db.execute(
            "SELECT count(*) FROM audit_auditevent WHERE action = ?",
            ("node_token.rotation_start_refused",),
        ).fetchone()
    assert slots == [("current",), ("next",)]
    assert refusals == (3,)
