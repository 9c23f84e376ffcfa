"""Benchmark: mailgate against Roundup's mail gateway on the same corpus, in alternating pairs.

Installs Roundup from PyPI into its own virtual environment under a temporary directory, makes a
`classic` tracker on the sqlite backend for every run (anonymous mail may create users, outgoing
mail goes to a file), and feeds it the corpus:

* batch: `roundup-mailgw TRACKER mailbox FILE` against `mailgate ingest --mbox FILE`;
* one process per message, as an MTA pipe runs them: `roundup-mailgw TRACKER < msg` against
  `mailgate ingest < msg` (p50/p90 per message), with no mailgate daemon (ingest stores and
  processes the message itself) and with `mailgate run` up (ingest hands it to the daemon).

The two are alternated in pairs on this noisy shared machine and every ratio is taken inside a
pair. Roundup gets the same messages with its own subject designator ([issue12] where mailgate
gets [SUP-12]); its issues and messages are counted and its threading checked against the
manifest. Prints figures only; it never asserts a timing and never touches mailgate's code.

    .venv/bin/python bench/roundup.py --n 300 --pairs 3 --per-message 40
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mailbox
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROUNDUP_TAG = "[issue{number}]"


def install_roundup(root: Path, spec: str) -> Path:
    """A venv with Roundup from PyPI; returns its bin directory."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", spec], check=True)
    return venv / "bin"


def make_tracker(bin_dir: Path, home: Path) -> Path:
    """A classic tracker on sqlite that takes mail from unknown senders and sends none out."""
    admin = str(bin_dir / "roundup-admin")
    subprocess.run([admin, "-i", str(home), "install", "classic", "sqlite"], check=True, capture_output=True)
    ini = home / "config.ini"
    text = ini.read_text()
    text = text.replace("#web = NO DEFAULT", "web = http://localhost/roundup/")
    text = text.replace("#domain = NO DEFAULT", "domain = localhost")
    # [mail] debug: write every outgoing mail to a file instead of an SMTP server (none here).
    text = re.sub(r"(?m)^debug = $", f"debug = {home / 'sent-mail.txt'}", text, count=1)
    ini.write_text(text)
    # The classic schema keeps anonymous mail access commented out; a help desk turns it on so a
    # new requester's mail creates their user and their issue (Roundup's mailgw needs both
    # 'Register' and 'Email Access' for the anonymous role).
    schema = home / "schema.py"
    schema.write_text(
        schema.read_text().replace(
            "#db.security.addPermissionToRole('Anonymous', 'Email Access')",
            "db.security.addPermissionToRole('Anonymous', 'Email Access')",
        )
    )
    subprocess.run([admin, "-i", str(home), "initialise", "bench-admin-pw"], check=True, capture_output=True)
    return home


def roundup_check(home: Path, manifest: dict[str, object], upto: int) -> dict[str, int]:
    """Issues and messages in the tracker, and how many messages sit on the issue the manifest names."""
    con = sqlite3.connect(home / "db" / "db")
    try:
        issues = con.execute("select count(*) from _issue where __retired__ = 0").fetchone()[0]
        msgs = con.execute("select count(*) from _msg where __retired__ = 0").fetchone()[0]
        placed = dict(
            con.execute(
                "select m._messageid, im.nodeid from _msg m join issue_messages im on im.linkid = m.id"
            ).fetchall()
        )
    finally:
        con.close()

    # Shift-proof: a message is right when it sits on the issue its conversation's first message
    # made (one wrongly split reply renumbers every later issue, so numbers alone would mislead).
    def issue_of(message_id: str) -> object:
        return placed.get(f"<{message_id}>", placed.get(message_id))

    first_of: dict[str, str] = {}
    right = 0
    for e in manifest["messages"][:upto]:  # type: ignore[index]
        first_of.setdefault(e["ticket"], e["message_id"])
        got = issue_of(e["message_id"])
        if got is not None and got == issue_of(first_of[e["ticket"]]):
            right += 1
    return {"issues": issues, "msgs": msgs, "right": right}


def first_messages(mbox: Path, k: int) -> list[bytes]:
    box = mailbox.mbox(str(mbox), create=False)
    try:
        return [box.get_bytes(key) for key in list(box.iterkeys())[:k]]
    finally:
        box.close()


def per_message(
    argv: list[str], messages: list[bytes], *, env: dict[str, str] | None, cwd: Path
) -> list[float]:
    """One process per message, as an MTA pipe transport runs it; seconds per message."""
    times = []
    for raw in messages:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, input=raw, env=env, cwd=cwd, capture_output=True, timeout=120)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.decode()[-1000:]}")
    return times


@contextlib.contextmanager
def running_daemon(config: Path, cwd: Path, port: int) -> Iterator[None]:
    """`mailgate run` on the desk until the block ends (its SMTP port answering first)."""
    proc = subprocess.Popen(
        [common.PYTHON, "-m", "mailgate", "--config", str(config), "--log-level", "WARNING", "run"],
        env=common.mailgate_env(),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mailgate run did not start") from None
                time.sleep(0.1)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="messages per batch run (default 300)")
    p.add_argument("--pairs", type=int, default=3, help="alternating mailgate/Roundup pairs (default 3)")
    p.add_argument("--per-message", type=int, default=40, help="messages in the one-process-per-message runs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--roundup", default="roundup", help="pip requirement for Roundup (default: latest)")
    args = p.parse_args(argv)
    common.header("roundup.py")
    mbox, manifest = common.corpus(args.n, args.seed)
    r_mbox, r_manifest = common.corpus(args.n, args.seed, tag=ROUNDUP_TAG)
    print(
        f"corpus: {manifest['count']} messages, {manifest['new_tickets']} new, {manifest['replies']} replies, "
        f"{manifest['with_attachment']} with attachment, {manifest['bytes'] / 1e6:.1f} MB"
    )
    failed = False
    with tempfile.TemporaryDirectory(prefix="mailgate-bench-roundup-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        bin_dir = install_roundup(tmp, args.roundup)
        version = subprocess.run(
            [str(bin_dir / "python"), "-c", "import roundup; print(roundup.__version__)"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"Roundup {version} installed from PyPI into {tmp / 'venv'} in {time.perf_counter() - t0:.0f}s")
        sys.stdout.flush()
        mailgw = str(bin_dir / "roundup-mailgw")
        pairs: list[tuple[float, float]] = []
        singles: list[tuple[list[float], list[float]]] = []
        handed: list[list[float]] = []
        for i in range(args.pairs):
            # mailgate: a fresh desk, the whole mbox in one process, verified.
            with tempfile.TemporaryDirectory(prefix="mailgate-bench-pair-") as d:
                config = common.write_config(Path(d))
                m = common.run_measured(
                    common.ingest_argv(config, mbox), env=common.mailgate_env(), cwd=Path(d)
                )
                problems = [] if m.rc == 0 else [f"exit {m.rc}: {m.stderr[-1500:]}"]
                if not m.rc:
                    problems += common.verify(f"sqlite:///{Path(d) / 'state' / 'mailgate.db'}", manifest)
            # Roundup: a fresh tracker, the same mbox through `roundup-mailgw … mailbox`.
            home = make_tracker(bin_dir, tmp / f"tracker-{i}")
            # Roundup's mailbox mode empties the mbox it read: give it a copy.
            copy = tmp / f"feed-{i}.mbox"
            shutil.copyfile(r_mbox, copy)
            r = common.run_measured([mailgw, str(home), "mailbox", str(copy)], cwd=tmp)
            check = roundup_check(home, r_manifest, args.n)
            mg_rate, ru_rate = args.n / m.wall, args.n / r.wall
            pairs.append((mg_rate, ru_rate))
            print(
                f"pair {i + 1} batch: mailgate {mg_rate:.1f} msg/s ({m.wall:.2f}s, CPU {m.cpu:.2f}s, "
                f"RSS {m.maxrss_mb:.0f} MB, verified {'OK' if not problems else 'FAILED'}) | "
                f"Roundup {ru_rate:.1f} msg/s ({r.wall:.2f}s, CPU {r.cpu:.2f}s, RSS {r.maxrss_mb:.0f} MB, "
                f"exit {r.rc}, {check['issues']} issues/{r_manifest['new_tickets']} expected, "
                f"{check['msgs']} msgs, {check['right']}/{args.n} on their conversation's issue) | "
                f"ratio {mg_rate / ru_rate:.1f}x"
            )
            for line in problems:
                print(f"  mailgate problem: {line}")
            failed = failed or bool(problems) or r.rc != 0
            sys.stdout.flush()
            if args.per_message:
                k = args.per_message
                with tempfile.TemporaryDirectory(prefix="mailgate-bench-pipe-") as d:
                    config = common.write_config(Path(d))
                    mg_argv = [common.PYTHON, "-m", "mailgate", "--config", str(config), "--log-level", "WARNING",
                               "ingest", "-r", "support@localhost", "-f", "bench@example.com"]  # fmt: skip
                    mg_t = per_message(
                        mg_argv, first_messages(mbox, k), env=common.mailgate_env(), cwd=Path(d)
                    )
                # The same pipe with `mailgate run` up on the desk: ingest hands each message to it.
                with tempfile.TemporaryDirectory(prefix="mailgate-bench-pipe-daemon-") as d:
                    port = common.free_port()
                    config = common.write_config(Path(d), smtp_port=port)
                    mg_argv[mg_argv.index("--config") + 1] = str(config)
                    with running_daemon(config, Path(d), port):
                        hand_t = per_message(
                            mg_argv, first_messages(mbox, k), env=common.mailgate_env(), cwd=Path(d)
                        )
                home = make_tracker(bin_dir, tmp / f"tracker-pipe-{i}")
                ru_t = per_message([mailgw, str(home)], first_messages(r_mbox, k), env=None, cwd=tmp)
                singles.append((mg_t, ru_t))
                handed.append(hand_t)
                mg_p50, ru_p50 = statistics.median(mg_t), statistics.median(ru_t)
                hand_p50 = statistics.median(hand_t)
                print(
                    f"pair {i + 1} one process per message ({k} msgs): mailgate alone p50 {mg_p50 * 1000:.0f} ms "
                    f"p90 {common.percentile(mg_t, 90) * 1000:.0f} ms, handed to its running daemon p50 "
                    f"{hand_p50 * 1000:.0f} ms p90 {common.percentile(hand_t, 90) * 1000:.0f} ms | Roundup p50 "
                    f"{ru_p50 * 1000:.0f} ms p90 {common.percentile(ru_t, 90) * 1000:.0f} ms | ratio "
                    f"{ru_p50 / mg_p50:.1f}x alone, {ru_p50 / hand_p50:.1f}x handed"
                )
                sys.stdout.flush()
        ratios = [a / b for a, b in pairs]
        print(
            f"batch, N={args.n}: median mailgate {statistics.median(a for a, _ in pairs):.1f} msg/s, "
            f"Roundup {statistics.median(b for _, b in pairs):.1f} msg/s; ratio per pair "
            f"{', '.join(f'{x:.1f}x' for x in ratios)} (median {statistics.median(ratios):.1f}x; target >= 10x)"
        )
        if singles:
            r2 = [statistics.median(b) / statistics.median(a) for a, b in singles]
            r3 = [
                statistics.median(b) / statistics.median(h) for (_, b), h in zip(singles, handed, strict=True)
            ]
            print(
                f"one process per message, {args.per_message} msgs/run: ratio of p50 per pair "
                f"{', '.join(f'{x:.1f}x' for x in r2)} (mailgate alone), "
                f"{', '.join(f'{x:.1f}x' for x in r3)} (handed to its running daemon)"
            )
        print(json.dumps({"pairs": pairs, "version": version}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
