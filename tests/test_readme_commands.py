"""The README's two commands are the real ones: `./bin/run` sets up and starts the daemon on its
embedded default from a fresh clone, the README's example mail makes SUP-1 and an acknowledgement
file, SIGTERM stops it cleanly; and CI runs the README's test command."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from conftest import REPO, free_port

README = (REPO / "README.md").read_text()


def _blocks_after(heading: str) -> list[str]:
    section = README.split(heading, 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_names_the_two_commands_and_ci_runs_the_second() -> None:
    assert _blocks_after("## Two commands") == ["./bin/run", "./bin/test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^\./bin/test\b", ci, re.M), ".ci/run must call the README's test command"
    for script in ("bin/run", "bin/test", ".ci/run"):
        assert os.access(REPO / script, os.X_OK), f"{script} is not executable"


@pytest.mark.slow
def test_bin_run_from_a_fresh_clone_serves_the_readme_example(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], check=True, timeout=120)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGATE_", "VIRTUAL_ENV"))}
    env["MAILGATE_SMTP_PORT"] = str(port)
    web = free_port()
    env["MAILGATE_WEB_PORT"] = str(web)
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        ["./bin/run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 400  # the first run creates .venv and installs the project
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(100).startswith(b"220"):
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("bin/run never listened:\n" + (tmp_path / "run.log").read_text())
        example = README.split("## Try it", 1)[1].split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
        subprocess.run([sys.executable, "-c", example.replace("2525", str(port))], check=True, timeout=30)
        outgoing = clone / "state" / "outgoing"

        def ack_written() -> bool:
            # The agents' notification may be written before the requester's acknowledgement.
            return any(
                "Subject: [SUP-1] system is down" in a and "X-Envelope-To: <customer1@acme.com>" in a
                for a in (p.read_text() for p in outgoing.glob("*.eml"))
            )

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not ack_written():
            time.sleep(0.2)
        assert ack_written(), [p.name for p in outgoing.glob("*.eml")]
        listing = subprocess.run(
            [str(clone / ".venv" / "bin" / "mailgate"), "tickets", "list"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert re.search(r"^SUP-1\s+open\s", listing.stdout, re.M), listing.stdout + listing.stderr
        # the web side of `mailgate run`: health, and the acknowledgement's "View request" link
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/healthz", timeout=10) as r:
            assert r.status == 200
        ack = next(
            message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in outgoing.glob("*.eml")
            if b"X-Envelope-To: <customer1@acme.com>" in p.read_bytes()
        )
        text = ack.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        view = re.search(r"View request: (\S+)", text).group(1)  # type: ignore[union-attr]
        with urllib.request.urlopen(view, timeout=10) as r:
            assert "system is down" in r.read().decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    assert code == 0, (tmp_path / "run.log").read_text()
    assert "stopped" in (tmp_path / "run.log").read_text()
