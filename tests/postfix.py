"""A real Postfix 3.x instance for tests, on a loopback port, in its own /tmp directory.

Follows the verified recipe (/work/shared/recipes/postfix.md): our own main.cf/master.cf read with
`postfix -c DIR` (never /etc/postfix), a texthash transport map, the log in a file, a relayhost
that is an aiosmtpd sink, and optionally a `pipe` service that runs `mailgate ingest` as the
unprivileged user `nobody`, the way an admin would set it up.

Also here: `nobody_python()`, which finds a way for uid nobody to run this checkout's mailgate
(the venv's interpreter often lives under /root, which nobody cannot enter), and `desk_dir()`,
which writes a desk (config.toml, rules/, templates/, .env) that nobody can read and write.

It must not be used for anything but tests: no TLS, relaying open to 127.0.0.0/8, root-owned.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mailgate

POSTFIX = "/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists() else shutil.which("postfix")
POSTQUEUE = "/usr/sbin/postqueue" if Path("/usr/sbin/postqueue").exists() else shutil.which("postqueue")
POSTSUPER = "/usr/sbin/postsuper" if Path("/usr/sbin/postsuper").exists() else shutil.which("postsuper")
REPO = Path(mailgate.__file__).resolve().parent.parent
PIPE_USER = "nobody"

MAIN_CF = """\
# Self-contained Postfix test instance (tests/postfix.py). @D@ = instance dir.
compatibility_level = 3.6
config_directory = @D@/etc
queue_directory = @D@/queue
data_directory = @D@/data
mail_owner = postfix
setgid_group = postdrop
myhostname = gateway.example.test
mydomain = example.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# support+TOKEN@ (reply tokens) is routed like support@: transport lookups drop the extension
recipient_delimiter = +
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
transport_maps = texthash:@D@/etc/transport
relayhost = [127.0.0.1]:@RELAYPORT@
smtp_tls_security_level = none
smtpd_tls_security_level = none
lmtp_tls_security_level = none
maillog_file = @D@/maillog
biff = no
# fast retries for tests
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
# one message per pipe invocation: mailgate ingest takes one --recipient
mailgate_destination_recipient_limit = 1
smtputf8_enable = no
shlib_directory = /usr/lib/postfix
newaliases_path = /usr/bin/newaliases
daemon_directory = /usr/lib/postfix/sbin
command_directory = /usr/sbin
sample_directory = /etc/postfix
meta_directory = /etc/postfix
html_directory = no
manpage_directory = /usr/share/man
sendmail_path = /usr/sbin/sendmail
readme_directory = no
mailq_path = /usr/bin/mailq
maillog_file_prefixes = /var, /dev/stdout, @D@
"""

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:@PORT@ inet n -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def available() -> bool:
    """Whether this machine can run the fixture: the postfix programs and their system users."""
    if not (POSTFIX and POSTQUEUE and POSTSUPER):
        return False
    try:
        pwd.getpwnam("postfix")
        pwd.getpwnam(PIPE_USER)
    except KeyError:
        return False
    return os.geteuid() == 0  # postfix -c DIR start needs root (it drops to mail_owner itself)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _world_dir(prefix: str) -> Path:
    """A /tmp directory every uid may traverse (pytest's tmp_path is 0700 under /tmp/pytest-of-root)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o755)
    return d


def chown_tree(path: Path, user: str = PIPE_USER) -> None:
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(name, pw.pw_uid, pw.pw_gid)


# -- running this checkout's mailgate as uid nobody ----------------------------------------------

_PYTHON: tuple[list[str], dict[str, str]] | None = None


def _works_as_nobody(argv: list[str], env: dict[str, str]) -> bool:
    probe = "import mailgate.cli, sqlalchemy, sqlmodel, jinja2, aiosmtpd, dotenv, psycopg"
    try:
        r = subprocess.run(
            [*argv, "-c", probe],
            user=PIPE_USER,
            env={"PATH": "/usr/bin:/bin", **env},
            cwd="/",
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def nobody_python() -> tuple[list[str], dict[str, str]]:
    """(interpreter argv, environment) with which uid nobody can `-m mailgate` this checkout.

    In order: the venv's own interpreter; the system's python3.X of the same minor version with
    the venv's site-packages and the checkout on PYTHONPATH (same ABI, so compiled wheels load);
    the same with a copy of both in /tmp, when they sit below a directory nobody cannot enter.
    Raises RuntimeError when none works (the test then reports why instead of a Postfix bounce).
    """
    global _PYTHON
    if _PYTHON is not None:
        return _PYTHON
    if _works_as_nobody([sys.executable], {}):
        _PYTHON = ([sys.executable], {})
        return _PYTHON
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = next(
        (p for p in (f"/usr/bin/{minor}", f"/usr/local/bin/{minor}") if os.access(p, os.X_OK)), None
    )
    if system is None:
        raise RuntimeError(f"uid {PIPE_USER} cannot run {sys.executable} and there is no /usr/bin/{minor}")
    paths = sysconfig.get_paths()
    site = sorted({paths["purelib"], paths["platlib"]})
    env = {"PYTHONPATH": os.pathsep.join([*site, str(REPO)]), "PYTHONNOUSERSITE": "1"}
    if _works_as_nobody([system], env):
        _PYTHON = ([system], env)
        return _PYTHON
    copy = _world_dir("mailgate-py-")
    atexit.register(shutil.rmtree, copy, True)
    for i, s in enumerate(site):
        shutil.copytree(s, copy / f"site{i}", symlinks=True)
    shutil.copytree(REPO / "mailgate", copy / "src" / "mailgate", symlinks=True)
    env = {
        "PYTHONPATH": os.pathsep.join(
            [*(str(copy / f"site{i}") for i in range(len(site))), str(copy / "src")]
        ),
        "PYTHONNOUSERSITE": "1",
    }
    if _works_as_nobody([system], env):
        _PYTHON = ([system], env)
        return _PYTHON
    raise RuntimeError(f"uid {PIPE_USER} cannot import mailgate with {system} either")


def desk_dir(
    *,
    address: str = "support@example.test",
    key: str = "SUP",
    extra_desks: tuple[tuple[str, str], ...] = (),
    outgoing: str = '[outgoing]\ntransport = "file"\n',
    smtp: str = "[smtp]\nenabled = false\n",
    owner: str | None = PIPE_USER,
) -> Path:
    """A desk directory (config.toml, rules/, templates/, .env with the token key), in /tmp.

    With `owner`, the whole tree belongs to that user, so a pipe running as it can write state/.
    """
    root = _world_dir("mailgate-desk-")
    for name in ("rules", "templates"):
        shutil.copytree(REPO / name, root / name)
    desks = "".join(
        f'[[desks]]\naddress = "{a}"\nkey = "{k}"\nname = "{k} desk"\n\n'
        for a, k in ((address, key), *extra_desks)
    )
    (root / "config.toml").write_text(f'admin_address = "admin@example.test"\n\n{desks}{smtp}\n{outgoing}')
    (root / ".env").write_text("MAILGATE_SECRET=postfix-test-secret\n")
    (root / "state").mkdir()
    if owner:
        chown_tree(root, owner)
    return root


# -- the Postfix instance ------------------------------------------------------------------------


class Postfix:
    """One Postfix instance: `start()`, `stop()`, `set_transport()`, `queue()`, `flush()`, `log`.

    `services` are extra master.cf entries (e.g. the mailgate pipe), `transport` the transport map.
    """

    def __init__(self, *, relay_port: int, transport: dict[str, str], services: str = "") -> None:
        self.dir = _world_dir("pf-")
        self.port = free_port()
        self.relay_port = relay_port
        etc = self.dir / "etc"
        etc.mkdir()
        (self.dir / "queue").mkdir()
        (self.dir / "data").mkdir()
        pw = pwd.getpwnam("postfix")
        os.chown(self.dir / "data", pw.pw_uid, pw.pw_gid)  # recipe gotcha 2: master.lock lives here
        (etc / "main.cf").write_text(
            MAIN_CF.replace("@D@", str(self.dir)).replace("@RELAYPORT@", str(relay_port))
        )
        (etc / "master.cf").write_text(MASTER_CF.replace("@PORT@", str(self.port)) + services)
        self.set_transport(transport, reload=False)

    @property
    def etc(self) -> str:
        return str(self.dir / "etc")

    @property
    def log(self) -> str:
        try:
            return (self.dir / "maillog").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    def set_transport(self, transport: dict[str, str], *, reload: bool = True) -> None:
        # texthash: needs no postmap; re-read on reload.
        (self.dir / "etc" / "transport").write_text("".join(f"{k} {v}\n" for k, v in transport.items()))
        if reload:
            self.postfix("reload")

    def postfix(self, command: str) -> None:
        assert POSTFIX is not None
        r = self._run(POSTFIX, "-c", self.etc, command)
        if r.returncode != 0:
            raise RuntimeError(f"postfix {command} failed ({r.returncode}): {r.stderr}\n{self.log}")

    def start(self, timeout: float = 20.0) -> Postfix:
        self.postfix("start")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"220"):
                        return self
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"postfix did not answer on port {self.port}\n{self.log}")

    def stop(self) -> None:
        assert POSTFIX is not None
        self._run(POSTFIX, "-c", self.etc, "abort")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def queue(self) -> list[dict[str, object]]:
        """`postqueue -j`: one dict per queued message (queue_name, recipients with delay_reason)."""
        assert POSTQUEUE is not None
        r = self._run(POSTQUEUE, "-c", self.etc, "-j")
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def flush(self) -> None:
        """`postqueue -f`: retry deferred mail now (what an admin does after fixing the cause)."""
        assert POSTQUEUE is not None
        self._run(POSTQUEUE, "-c", self.etc, "-f")

    def empty_queue(self) -> None:
        assert POSTSUPER is not None
        self._run(POSTSUPER, "-c", self.etc, "-d", "ALL")

    def wait(self, what: str, cond: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; queue={self.queue()}\nmaillog:\n{self.log}")

    def mark(self) -> int:
        """Where the maillog ends now: `wait_log(..., since=mark)` and `self.log[mark:]` read only
        what a test made, whatever the tests before it (one Postfix serves the module) logged."""
        return len(self.log)

    def wait_log(self, needle: str, count: int = 1, timeout: float = 20.0, since: int = 0) -> None:
        self.wait(
            f"{count}x {needle!r} in the maillog", lambda: self.log[since:].count(needle) >= count, timeout
        )

    def wait_empty(self, timeout: float = 20.0) -> None:
        self.wait("an empty queue", lambda: not self.queue(), timeout)
