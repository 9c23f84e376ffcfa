"""Issue 19 item 12: two desks in one daemon (support@ SUP and caredesk@ CARE), each with its own
routing rules and triage person. A desk's own `rules/<KEY>/routing.toml` replaces the shared
`rules/routing.toml` for that desk (as templates/<KEY>/ does for templates) and may name the
desk's triage person; both load into the one rules snapshot (one fingerprint, one refusal path).
`rules check` reports each desk and `rules test --desk CARE` dry-runs the CARE rules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import RunningDaemon, Sink, make_mail, scenario_config
from support.console import CLEAN_ENV

MAILGATE = shutil.which("mailgate", path=str(Path(sys.executable).parent))

TEAM = """\
triage = "support-lead@localhost"
admins = ["admin@example.com"]

[[agents]]
address = "support-lead@localhost"
name = "Sam Patel"

[[agents]]
address = "sales-lead@localhost"
name = "Sean Lee"

[[agents]]
address = "angel@localhost"
name = "Care Desk Angel"
handle = "angel"

[[agents]]
address = "it-lead@localhost"
name = "Irene Tanaka"

[[groups]]
name = "Sales"
members = ["sales-lead@localhost"]
lead = "sales-lead@localhost"

[[groups]]
name = "IT"
members = ["it-lead@localhost"]
lead = "it-lead@localhost"
"""

SUPPORT_ROUTING = """\
[[rules]]
name = "billing"
when.text.words = ["invoice"]
then = { group = "Sales" }
"""

CARE_ROUTING = """\
# The care desk's own rules: only these apply to mail for caredesk@.
triage = "angel"

[[rules]]
name = "care-it"
when.text.words = ["printer"]
then = { group = "IT" }
"""

DESKS = [("support@localhost", "SUP", "default"), ("caredesk@localhost", "CARE", "caredesk")]


def mailgate(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert MAILGATE
    proc = subprocess.run(
        [MAILGATE, *args], cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc
    return proc


def test_each_desk_routes_by_its_own_rules_and_triage(tmp_path: Path, sink: Sink) -> None:
    root = tmp_path / "desk"
    config = scenario_config(root, relay_port=sink.port, desks=DESKS, team=TEAM, routing=SUPPORT_ROUTING)
    (root / "rules" / "CARE").mkdir()
    (root / "rules" / "CARE" / "routing.toml").write_text(CARE_ROUTING)

    # The admin's view, as the console script: both desks, each with its file and triage person.
    check = mailgate(root, "--config", str(config), "rules", "check")
    assert check.returncode == 0, check
    assert (
        "desk SUP <support@localhost>: rules/routing.toml, 1 rules, triage support-lead@localhost"
        in check.stdout
    )
    assert (
        "desk CARE <caredesk@localhost>: rules/CARE/routing.toml, 1 rules, triage angel@localhost"
        in check.stdout
    )
    printer = root / "printer.eml"
    printer.write_bytes(
        make_mail("printer jammed", "The printer on floor 2 is jammed.\n", to="caredesk@localhost")
    )
    care = mailgate(root, "--config", str(config), "rules", "test", str(printer), "--desk", "CARE")
    assert care.returncode == 0, care
    assert "rules/CARE/routing.toml" in care.stdout and "rule 'care-it': hit" in care.stdout, care.stdout
    assert "group      IT" in care.stdout, care.stdout
    sup = mailgate(root, "--config", str(config), "rules", "test", str(printer), "--desk", "SUP")
    assert (
        "group      - (triage)" in sup.stdout
        and "triage     support-lead@localhost (gets this ticket)" in sup.stdout
    )

    daemon = RunningDaemon(config)
    try:
        daemon.send(make_mail("invoice is wrong", "The invoice total is wrong.\n", to="support@localhost"))
        daemon.send(
            make_mail("invoice question", "Who do I send the invoice to?\n", to="caredesk@localhost"),
            rcpt="caredesk@localhost",
        )
        daemon.send(
            make_mail("printer jammed", "The printer is jammed.\n", to="caredesk@localhost"),
            rcpt="caredesk@localhost",
        )
        daemon.send(make_mail("printer jammed too", "Our printer is jammed.\n", to="support@localhost"))
        daemon.settle()
        got = {t.key: (t.group, t.assignee) for t in daemon.tickets()}
        assert got == {
            "SUP-1": ("Sales", "sales-lead@localhost"),  # the shared rules
            "CARE-1": (None, "angel@localhost"),  # SUP's billing rule is not CARE's: CARE's triage
            "CARE-2": ("IT", "it-lead@localhost"),  # CARE's own rule
            "SUP-2": (None, "support-lead@localhost"),  # CARE's rule is not SUP's: SUP's triage
        }, got
        assert any("CARE-1" in str(m["Subject"]) for m in sink.wait_to("angel@localhost", 1))
        assert not any("SUP-" in str(m["Subject"]) for m in sink.to("angel@localhost"))
        assert not any("CARE-" in str(m["Subject"]) for m in sink.to("support-lead@localhost"))

        # A bad edit of the CARE file is refused whole, through the one refusal path: the admin is
        # told with file and line, and the CARE desk keeps routing by its last good rules.
        (root / "rules" / "CARE" / "routing.toml").write_text(CARE_ROUTING.replace('"IT"', '"Nobody"'))
        daemon.send(
            make_mail("printer out of toner", "The printer needs toner.\n", to="caredesk@localhost"),
            rcpt="caredesk@localhost",
        )
        daemon.settle()
        assert {t.key: t.group for t in daemon.tickets()}["CARE-3"] == "IT"
        refused = sink.wait_to("admin@example.com", 1)
        assert any("refused" in str(m["Subject"]) for m in refused)
        assert any(
            "rules/CARE/routing.toml:7: unknown group 'Nobody'"
            in m.get_body(preferencelist=("plain",)).get_content()
            for m in refused
        ), [m.get_body(preferencelist=("plain",)).get_content() for m in refused]
    finally:
        daemon.stop()
    bad = mailgate(root, "--config", str(config), "rules", "check")
    assert bad.returncode == 65 and "rules/CARE/routing.toml:7: unknown group 'Nobody'" in bad.stdout, bad


def test_a_rules_directory_for_no_desk_is_an_error(tmp_path: Path, sink: Sink) -> None:
    root = tmp_path / "desk"
    config = scenario_config(root, relay_port=sink.port, desks=DESKS, team=TEAM, routing=SUPPORT_ROUTING)
    (root / "rules" / "CAER").mkdir()
    (root / "rules" / "CAER" / "routing.toml").write_text(CARE_ROUTING)
    r = mailgate(root, "--config", str(config), "rules", "check")
    assert r.returncode == 65 and "rules/CAER/routing.toml:1: no desk has the key CAER" in r.stdout, r
