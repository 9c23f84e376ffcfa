"""Smoke test for bench/: the corpus generator and the ingest benchmark still do their work.

One fast test, no timing asserted (figures come from the scripts, never from tests): a tiny corpus
is deterministic and its manifest agrees with the messages, and `bench/ingest.py` on 30 messages
puts every message on the ticket the manifest names with one acknowledgement per new ticket —
so the scripts cannot rot silently when mailgate changes.
"""

from __future__ import annotations

import hashlib
import json
import mailbox
import os
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_corpus_manifest_is_consistent_and_ingest_bench_verifies_it(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import gen_corpus
    finally:
        sys.path.remove(str(REPO / "bench"))

    a = gen_corpus.generate(30, seed=3)
    b = gen_corpus.generate(30, seed=3)
    assert a.messages == b.messages, "same seed must give the same bytes"
    mbox = gen_corpus.write(a, tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["mbox_sha256"] == hashlib.sha256(mbox.read_bytes()).hexdigest()

    box = mailbox.mbox(str(mbox), create=False)
    raws = [box.get_bytes(k) for k in box.iterkeys()]
    box.close()
    assert raws == a.messages, "the mbox must give back exactly the generated messages"
    entries = manifest["messages"]
    assert [e["index"] for e in entries] == list(range(30))
    new = [e for e in entries if e["kind"] == "new"]
    # The k-th new request becomes SUP-k; a reply names a ticket opened before it.
    assert [e["ticket"] for e in new] == [f"SUP-{k}" for k in range(1, len(new) + 1)]
    opened: set[str] = set()
    for e, raw in zip(entries, raws, strict=True):
        msg = message_from_bytes(raw, policy=policy.default)
        assert msg["Message-ID"] == f"<{e['message_id']}>"
        if e["kind"] == "new":
            opened.add(e["ticket"])
            assert not msg["In-Reply-To"] and not msg["References"]
        else:
            assert e["ticket"] in opened
            if e["thread_by"] == "tag":
                assert f"[{e['ticket']}]" in str(msg["Subject"])
            elif e["thread_by"] == "in-reply-to":
                assert msg["In-Reply-To"]
            else:
                assert msg["References"]
    assert 0 < len(new) < 30

    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "ingest.py"), "--n", "30", "--seed", "3"],
        env={**env, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified: OK" in proc.stdout, proc.stdout


def test_big_mail_bench_runs_its_burst_through_the_daemon(tmp_path: Path) -> None:
    """bench/big_mail.py with a small burst: every large request is acknowledged at its relay."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "big_mail.py"),
            "--count",
            "3",
            "--mb",
            "0.5",
            "--clients",
            "2",
        ],
        env={**env, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "acknowledged 3/3" in proc.stdout and "peak RSS: intake" in proc.stdout, proc.stdout
