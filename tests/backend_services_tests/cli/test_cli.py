"""The ``backend-services`` command: help, exit codes, one-line errors, JSON output, and
every fleet command against a real Redis-compatible server (and a real membrane process)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend_services.cli import main
from backend_services.cli.output import Output

COMMANDS = [
    [],
    ["demo"],
    ["membrane"],
    ["membrane", "serve"],
    ["serve"],
    ["services"],
    ["services", "list"],
    ["services", "watch"],
    ["circuits", "list"],
    ["circuits", "open"],
    ["circuits", "close"],
    ["circuits", "reset"],
    ["degradation", "status"],
    ["degradation", "force"],
    ["degradation", "clear"],
    ["config", "get"],
    ["config", "set"],
    ["config", "history"],
    ["config", "diff"],
    ["config", "rollback"],
    ["config", "snapshot"],
    ["config", "export"],
    ["config", "import"],
]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command in this process; (exit code, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> object:
    code, out, err = run(capsys, "--redis-url", url, *args, "--json")
    assert code == 0, err
    return json.loads(out)


class TestConventions:
    @pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "top")
    def test_every_command_has_help(self, capsys: pytest.CaptureFixture[str], path: list[str]):
        """--help works on every command and exits 0 with a usage line."""
        code, out, _ = run(capsys, *path, "--help")
        assert code == 0
        assert out.startswith("usage: backend-services")

    def test_usage_errors_exit_2_with_one_line(self, capsys: pytest.CaptureFixture[str]):
        """A missing argument is exit code 2 and a single error line, no traceback."""
        code, _, err = run(capsys, "circuits", "open")
        assert code == 2
        assert "the following arguments are required: name" in err
        assert "Traceback" not in err

    def test_no_redis_url_is_a_clear_configuration_error(self, capsys: pytest.CaptureFixture[str]):
        """Fleet commands without --redis-url or DTESN_SERVICE_REDIS_URL exit 2."""
        code, out, err = run(capsys, "services", "list")
        assert code == 2
        assert out == ""
        assert err.strip().count("\n") == 0
        assert "DTESN_SERVICE_REDIS_URL" in err

    def test_unreachable_redis_is_one_line_exit_1(self, capsys: pytest.CaptureFixture[str]):
        """A Redis that does not answer is exit 1 and one line naming the (masked) URL."""
        code, _, err = run(capsys, "--redis-url", "redis://u:pw@127.0.0.1:1/0", "config", "get")
        assert code == 1
        assert err.startswith("error: cannot reach Redis at redis://u:***@127.0.0.1:1/0")
        assert "pw" not in err
        assert "Traceback" not in err

    def test_redis_url_from_the_environment(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, redis_url: str
    ):
        """DTESN_SERVICE_REDIS_URL is used when no flag is given."""
        monkeypatch.setenv("DTESN_SERVICE_REDIS_URL", redis_url)
        code, out, _ = run(capsys, "config", "get", "--json")
        assert code == 0
        assert json.loads(out)["service"] == "dtesn-service"

    def test_redis_url_before_or_after_the_command(self):
        """--redis-url works before the command and, for membrane serve, as --redis after."""
        from backend_services.cli import build_parser

        parser = build_parser()
        before = parser.parse_args(["--redis-url", "redis://a:1/0", "membrane", "serve"])
        after = parser.parse_args(["membrane", "serve", "--redis", "redis://b:1/0"])
        listed = parser.parse_args(["services", "list", "--redis-url", "redis://c:1/0"])
        assert before.redis_url == "redis://a:1/0"
        assert after.redis_url == "redis://b:1/0"
        assert listed.redis_url == "redis://c:1/0"

    def test_colours_only_on_a_terminal(self):
        """State words are coloured on a terminal, plain otherwise and with --json."""

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        assert Output(stream=io.StringIO()).state("open") == "open"
        assert Output(stream=Tty()).state("open") == "\x1b[31mopen\x1b[0m"
        assert Output(stream=Tty(), json_mode=True).state("open") == "open"
        assert Output(stream=Tty(), colour=False).state("open") == "open"


class TestConfig:
    def test_set_get_snapshot_diff_rollback(
        self, capsys: pytest.CaptureFixture[str], redis_url: str
    ):
        """A value set is read back; a rollback restores the snapshot; diff shows changes."""
        url = redis_url
        run_json(capsys, url, "config", "set", "membrane_depth", "6")
        snap = run_json(capsys, url, "config", "snapshot", "--description", "six")
        assert isinstance(snap, dict)
        run_json(capsys, url, "config", "set", "membrane_depth", "3")
        run_json(capsys, url, "config", "set", "mode", "fast")
        value = run_json(capsys, url, "config", "get", "membrane_depth")
        assert isinstance(value, dict)
        assert value["value"] == 3
        latest = run_json(capsys, url, "config", "history", "--limit", "1")
        assert isinstance(latest, list)
        diff = run_json(capsys, url, "config", "diff", snap["version_id"], latest[0]["id"])
        assert diff == {
            "service": "dtesn-service",
            "from": snap["version_id"],
            "to": latest[0]["id"],
            "added": {"mode": "fast"},
            "removed": {},
            "changed": {"membrane_depth": {"old": 6, "new": 3}},
        }
        run_json(capsys, url, "config", "rollback", snap["version_id"])
        values = run_json(capsys, url, "config", "get")
        assert isinstance(values, dict)
        assert values["values"] == {"membrane_depth": 6}

    def test_human_output_and_missing_key(self, capsys: pytest.CaptureFixture[str], redis_url: str):
        """Plain output is a table; an unknown key is exit 1 with one line."""
        assert run(capsys, "--redis-url", redis_url, "config", "set", "x", "[1, 2]")[0] == 0
        code, out, _ = run(capsys, "--redis-url", redis_url, "config", "get")
        assert code == 0
        assert out.splitlines()[0].split() == ["key", "value"]
        assert "[1, 2]" in out
        code, out, err = run(capsys, "--redis-url", redis_url, "config", "get", "nope")
        assert code == 1
        assert err == "error: dtesn-service: configuration key 'nope' is not set\n"

    def test_invalid_value_is_rejected_with_exit_2(
        self, capsys: pytest.CaptureFixture[str], redis_url: str
    ):
        """A rollback to an unknown version is exit 1; nothing changes."""
        code, _, err = run(capsys, "--redis-url", redis_url, "config", "rollback", "v999-nope")
        assert code == 1
        assert "no retained version" in err

    def test_export_then_import_round_trips(
        self, capsys: pytest.CaptureFixture[str], redis_url: str, tmp_path: Path
    ):
        """An export written to a file imports back as one version with the same values."""
        url = redis_url
        run_json(capsys, url, "config", "set", "a", "1")
        run_json(capsys, url, "config", "set", "b", '"two"')
        target = tmp_path / "config.yaml"
        code, _, _ = run(
            capsys, "--redis-url", url, "config", "export", "--format", "yaml", "-o", str(target)
        )
        assert code == 0
        assert "format: backend_services.config" in target.read_text()
        run_json(capsys, url, "config", "set", "a", "100")
        result = run_json(capsys, url, "config", "import", str(target))
        assert isinstance(result, dict)
        values = run_json(capsys, url, "config", "get")
        assert isinstance(values, dict)
        assert values["values"] == {"a": 1, "b": "two"}


class TestDegradation:
    def test_force_and_clear_a_fleet_level(
        self, capsys: pytest.CaptureFixture[str], redis_url: str
    ):
        """force publishes a fleet override seen by status; clear ends it."""
        url = redis_url
        forced = run_json(capsys, url, "degradation", "force", "minimal", "--reason", "drill")
        assert isinstance(forced, dict)
        assert forced["published"] is True
        status = run_json(capsys, url, "degradation", "status")
        assert isinstance(status, dict)
        assert status["fleet_override"]["level"] == "minimal"
        cleared = run_json(capsys, url, "degradation", "clear")
        assert cleared == {"service": "fleet", "cleared": True}
        status = run_json(capsys, url, "degradation", "status")
        assert isinstance(status, dict)
        assert status["fleet_override"] is None

    def test_force_and_clear_one_service(self, capsys: pytest.CaptureFixture[str], redis_url: str):
        """--service forces a level on one service only (no fleet-wide override);
        clear --service ends it."""
        url = redis_url
        forced = run_json(
            capsys, url, "degradation", "force", "emergency", "--service", "api", "--reason", "x"
        )
        assert isinstance(forced, dict)
        assert (forced["service"], forced["level"], forced["published"]) == (
            "api",
            "emergency",
            True,
        )
        status = run_json(capsys, url, "degradation", "status")
        assert isinstance(status, dict)
        assert status["fleet_override"] is None
        assert status["service_overrides"]["api"]["level"] == "emergency"
        cleared = run_json(capsys, url, "degradation", "clear", "--service", "api")
        assert cleared == {"service": "api", "cleared": True}
        status = run_json(capsys, url, "degradation", "status")
        assert isinstance(status, dict)
        assert status["service_overrides"] == {}

    def test_unknown_level_is_a_usage_error(
        self, capsys: pytest.CaptureFixture[str], redis_url: str
    ):
        """An unknown level name is exit 2 naming the valid ones."""
        code, _, err = run(capsys, "--redis-url", redis_url, "degradation", "force", "panic")
        assert code == 2
        assert "normal" in err


@pytest.fixture
def membrane(redis_url: str) -> Iterator[subprocess.Popen[str]]:
    """A real membrane process that registers itself in the test's Redis."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backend_services.cli",
            "membrane",
            "serve",
            "--id",
            "cli-m1",
            "--redis",
            redis_url,
            "--monitors",
            "process",
            "--last-known-good",
            "none",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DTESN_SERVICE_HEALTH_CHECK_INTERVAL": "0.2"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert json.loads(line)["membrane_id"] == "cli-m1"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


class TestServices:
    def test_list_and_watch_a_real_membrane(
        self,
        capsys: pytest.CaptureFixture[str],
        redis_url: str,
        membrane: subprocess.Popen[str],
    ):
        """A membrane started by 'membrane serve' is listed healthy; watch sees it leave."""
        rows: object = []
        for _ in range(100):  # its own discovery probes it: real network, bounded wait
            rows = run_json(capsys, redis_url, "services", "list", "--status", "healthy")
            if rows:
                break
            time.sleep(0.05)
        assert isinstance(rows, list)
        assert [r["service_id"] for r in rows] == ["cli-m1"]
        assert rows[0]["metadata"]["membrane_type"] == "memory"
        membrane.send_signal(signal.SIGTERM)
        assert membrane.wait(10) == 0
        code, out, _ = run(
            capsys, "--redis-url", redis_url, "services", "watch", "--count", "1", "--json"
        )
        assert code == 0
        assert out == ""  # it deregistered on the way out: nothing left to report
