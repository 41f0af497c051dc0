"""The application name an ``agl`` command shows PostgreSQL (``agl.app_name``), and that libpq takes it."""

from __future__ import annotations

import os
import sys

import psycopg
import pytest

from agl.app_name import application_name, connection_names, service_application_name
from agl.cli import main


def test_the_name_is_the_command_s_leading_words() -> None:
    assert application_name(["projections", "run", "rollouts", "--group", "g2"]) == "agl-projections-run-rollouts"
    assert application_name(["runner", "--agent", "m:o"]) == "agl-runner"
    assert application_name(["a", "b", "c", "d", "e"]) == "agl-a-b-c-d"  # arguments beyond four words left out
    assert application_name([]) == "agl"


def test_the_name_is_printable_ascii_within_postgresql_s_limit() -> None:
    assert application_name(["tri\u00e9", "x\x00"]) == "agl-tri?-x?"
    assert len(application_name(["w" * 100]).encode()) == 63


def test_a_service_has_the_name_of_its_command_run_by_hand() -> None:
    argv = [sys.executable, "-m", "agl", "projections", "run", "spans"]
    assert service_application_name(argv, "projection-spans") == "agl-projections-run-spans"
    assert service_application_name(["/usr/bin/other", "--x"], "agents") == "agl-agents"


def test_projections_sharing_a_process_keep_the_names_they_would_have_alone() -> None:
    words = ["archive", "spans", "triplets"]
    command = application_name(["projections", "run", *words])  # what main() or `agl up` set: the first one's
    expected = {n: f"agl-projections-run-{n}" for n in words}
    assert connection_names(words, words, None) == expected
    assert connection_names(words, words, command) == expected
    assert connection_names(words, words, "mine") == {}  # the user named the process: theirs wins
    assert connection_names(["spans"], ["spans"], None) == {}  # alone: the process's own name is right


def test_a_command_sets_its_name_for_libpq_unless_the_user_did(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGAPPNAME", "restored after the test")
    monkeypatch.delenv("PGAPPNAME")
    monkeypatch.setattr(sys, "argv", ["agl", "schemas", "export", "--check"])
    assert main() == 0
    assert os.environ.pop("PGAPPNAME") == "agl-schemas-export"
    monkeypatch.setenv("PGAPPNAME", "mine")
    assert main() == 0
    assert os.environ["PGAPPNAME"] == "mine"
    # Called in-process with its words, it leaves the caller's environment alone.
    monkeypatch.delenv("PGAPPNAME")
    assert main(["schemas", "export", "--check"]) == 0
    assert "PGAPPNAME" not in os.environ


@pytest.mark.pg
def test_libpq_takes_the_name_from_the_environment(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The mechanism the stack and the command rely on: no code of ours passes the name to connect().
    monkeypatch.setenv("PGAPPNAME", application_name(["probe"]))
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SHOW application_name").fetchone()
    assert row == ("agl-probe",)
