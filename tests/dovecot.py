"""A real Dovecot 2.3 IMAP server for tests, on a loopback port, in its own /tmp directory.

Follows the verified recipe (/work/shared/recipes/dovecot.md): our own dovecot.conf read with
`-c` (never /etc/dovecot), a passwd-file with test users, Maildir++ under the instance dir, and
the server started with `dovecot -F` in its own session so a killpg stops it and its children.
It must not be used for anything but tests: plaintext logins, no TLS unless asked, root-owned.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)
USERS = {"alice": "alicepw", "bob": "bobpw"}

CONF = """\
# Self-contained Dovecot 2.3 test instance (tests/dovecot.py)
protocols = imap
listen = 127.0.0.1
base_dir = @D@/run
state_dir = @D@/state
instance_name = dovecot-test-@PORT@
log_path = @D@/dovecot.log
info_log_path = @D@/dovecot.log
debug_log_path = @D@/dovecot.log
@SSL@
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = root
default_internal_group = root
default_login_user = dovenull
first_valid_uid = 1
first_valid_gid = 1
mail_uid = dovecot
mail_gid = dovecot
mail_location = maildir:@D@/mail/%u
mail_home = @D@/home/%u
namespace inbox {
  inbox = yes
  separator = /
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u @D@/users
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=@D@/home/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = @PORT@
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = @TLSPORT@
  }
  chroot =
}
service anvil {
  chroot =
}
protocol imap {
  mail_max_userip_connections = 100
  @CAPABILITY@
}
"""


def available() -> bool:
    """Whether this machine can run the fixture (dovecot binary and its system users)."""
    if DOVECOT is None:
        return False
    try:
        pwd.getpwnam("dovecot")
        pwd.getpwnam("dovenull")
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    """One Dovecot instance. `start()`, `stop()` (SIGKILL to the process group), `start()` again.

    `capability` replaces the post-login CAPABILITY list (e.g. without MOVE, to exercise the
    COPY + EXPUNGE fallback against a real server). With `tls=True` an imaps listener on `tls_port` serves a fresh self-signed certificate
    (made with the openssl command), for testing what a client does with an untrusted one.
    """

    def __init__(self, *, tls: bool = False, capability: str = "") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dv-", dir="/tmp"))
        os.chmod(self.dir, 0o755)  # the mail processes run as uid dovecot and must traverse it
        self.port = _free_port()
        self.tls_port = _free_port() if tls else 0
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("run", "state", "mail", "home"):
            (self.dir / sub).mkdir()
        user = pwd.getpwnam("dovecot")
        for sub in ("mail", "home"):
            os.chown(self.dir / sub, user.pw_uid, user.pw_gid)
        (self.dir / "users").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in USERS.items()))
        ssl = "ssl = no"
        if tls:
            cert, key = self.dir / "cert.pem", self.dir / "key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
                + ["-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                check=True,
                capture_output=True,
            )
            ssl = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}"
        conf = (
            CONF.replace("@D@", str(self.dir))
            .replace("@PORT@", str(self.port))
            .replace("@TLSPORT@", str(self.tls_port))
            .replace("@SSL@", ssl)
            .replace("@CAPABILITY@", f"imap_capability = {capability}" if capability else "")
        )
        (self.dir / "dovecot.conf").write_text(conf)

    @property
    def log(self) -> str:
        try:
            return (self.dir / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def maildir(self, user: str = "alice", folder: str = "") -> Path:
        """The Maildir++ directory of a user's folder on disk ("" = INBOX, "Processed" = .Processed)."""
        base = self.dir / "mail" / user
        return base / f".{folder}" if folder else base

    def start(self, timeout: float = 10.0) -> Dovecot:
        assert DOVECOT is not None
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.dir / "dovecot.conf")],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"dovecot exited {self.proc.returncode}: {err}\n{self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"* OK"):
                        return self
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"dovecot did not answer on port {self.port}\n{self.log}")

    def stop(self) -> None:
        """Kill the whole process group at once (recipe: 1 ms; a restart afterwards is fine)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
