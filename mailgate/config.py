"""Settings: `config.toml` + `.env` + environment variables, validated once at start.

Every error names the key that is wrong. Nothing else in mailgate reads the environment or the
config file: the loaded `Config` is passed in to whatever needs it (no global settings object).
Secrets (relay password, IMAP passwords, the token key) come from the environment or `.env`, and
are referenced in config.toml by the *name* of the variable, never written there.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from mailgate.mail.decode import plus_parts

DEFAULT_SMTP_PORT = 2525
DEFAULT_MAX_MESSAGE_SIZE = 25 * 1024 * 1024
DEFAULT_MAX_DATA_IN_FLIGHT = 4 * 1024 * 1024
ADDRESS_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
KEY_RE = re.compile(r"^[A-Z][A-Z0-9]{0,15}$")


class ConfigError(Exception):
    """A setting is missing or invalid. The message names the key; `file` is the config file read
    (None: the embedded default), so a command can name the file and line as `config check` does
    (mailgate/checks.py `config_error_text`)."""

    file: Path | None = None


@dataclass(frozen=True)
class Desk:
    """One support address that makes tickets with its own key, e.g. support@ -> SUP."""

    address: str
    key: str
    name: str = "Support"
    aliases: tuple[str, ...] = ()
    workflow: str = "default"
    # Web forms and portals that relay a person's request: From the portal, Reply-To the person
    # (mailgate/mail/portal.py). Their mail makes the Reply-To address the requester.
    portals: tuple[str, ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.address, *self.aliases)

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]

    def token_address(self, token: str) -> str:
        """The plus-address that carries a reply token, e.g. support+t1a2@localhost."""
        local, domain = self.address.rsplit("@", 1)
        return f"{local}+{token}@{domain}"

    def envelope_sender(self, bounce_word: str) -> str:
        """The envelope sender (SMTP MAIL FROM) of one mail about a ticket: the plus-address with
        its bounce token (VERP, domain/tokens.bounce_word), where delivery reports for that mail
        come back. A local part longer than RFC 5321's 64 octets (a very long desk address or
        key) would be refused by relays: then the plain address, and that mail's bounces prove
        nothing (they are noted, nobody is quieted)."""
        local, domain = self.address.rsplit("@", 1)
        plus = f"{local}+{bounce_word}"
        return f"{plus}@{domain}" if len(plus.encode()) <= 64 else self.address


@dataclass(frozen=True)
class SmtpIntake:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = DEFAULT_SMTP_PORT
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    # Bytes of mail the SMTP sessions other than the longest-waiting one may hold together before
    # their commit; past it, they wait (intake/smtp.py DataBudget).
    max_data_in_flight: int = DEFAULT_MAX_DATA_IN_FLIGHT
    lmtp: bool = False


@dataclass(frozen=True)
class Relay:
    """Outgoing mail. transport = "file" writes .eml files; "smtp" hands them to a relay."""

    transport: str = "file"
    directory: str = ""  # file transport; default <state>/outgoing
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 30.0
    connections: int = 4
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    give_up_after_seconds: float = 3 * 86400.0
    from_name: str = "{desk}"


# Where `mailgate run` runs its pipeline, sender and scheduler: a child process, or threads of
# the daemon's own (mailgate/daemon.py).
WORKER_MODES = ("process", "thread")


@dataclass(frozen=True)
class Pipeline:
    """[pipeline]: where `mailgate run` works off its mail (mailgate/daemon.py)."""

    worker: str = "process"  # one of WORKER_MODES
    # A claimed inbox or outbox row is held this long and renewed every `renew_seconds` while its
    # worker lives (store/lease.py); after it runs out, any worker takes the row again.
    lease_seconds: float = 30.0
    renew_seconds: float = 10.0


@dataclass(frozen=True)
class SchedulerSettings:
    """[scheduler]: whether this daemon runs the periodic jobs, and how often they look."""

    enabled: bool = True
    sla_check_seconds: float = 300.0  # how late a warning or escalation may be, at most
    timers_seconds: float = 900.0  # reminders, auto-close, reviews, the digest hour
    weekly_report_day: int | None = 0  # weekly report mail: weekday (0 = Monday), None = off
    weekly_report_hour: int = 7  # local hour (the [timers] calendar's zone) it goes out
    attachment_grace_hours: float = 24.0  # the daily sweep keeps unnamed attachment files this long


# The longest grace the attachment sweep takes, about a century: the cutoff is a date (now minus
# the grace), and infinity, nan or 1e308 hours would make the daily sweep fail on every run.
MAX_ATTACHMENT_GRACE_HOURS = 876_000


def largest_attachment(max_message_size: int) -> int:
    """The largest attachment a message of `max_message_size` bytes can carry: base64 (RFC 2045
    section 6.8) writes 57 bytes as a line of 76 characters and CRLF, 78 bytes on the wire, so
    at most 57/78 of the message is attachment (25 MiB carries 18.3 MiB at most)."""
    return max_message_size * 57 // 78


# The default attachment limit: what fits in the default message limit, in whole MiB (18 MiB).
DEFAULT_MAX_ATTACHMENT_SIZE = largest_attachment(DEFAULT_MAX_MESSAGE_SIZE) // 2**20 * 2**20


@dataclass(frozen=True)
class Limits:
    """[limits]. The least value of each is in LIMITS_LEAST."""

    max_attempts: int = 3
    max_attachment_size: int = DEFAULT_MAX_ATTACHMENT_SIZE
    max_attachments: int = 50
    # What of a ticket's attachments one notification carries; beyond it they are named, with
    # `mailgate tickets attachment KEY NAME` to fetch them (most relays refuse mail past 10-25 MiB).
    max_forward_attachments_bytes: int = 10 * 1024 * 1024
    new_tickets_per_sender: int = 20
    flood_window_minutes: int = 120
    auto_mails_per_ticket: int = 10
    auto_mails_per_ticket_window_minutes: int = 60
    auto_mails_per_recipient: int = 30
    auto_mails_per_recipient_window_minutes: int = 10
    bounce_quiet_days: int = 7  # no automatic mail to an address after it failed permanently
    admin_notice_minutes: int = 15  # at most one mail per kind of admin notice in this time


# The least value each [limits] setting takes (config.example.toml says it beside each key). A
# count or a window of 0 is never an "off": 0 new tickets per sender holds every new mail as a
# flood, 0 automatic mails holds every acknowledgement as a loop, 0 attempts quarantines a message
# its worker never tried, a quiet time of 0 days tells the agents of a quiet time that is over.
# Where 0 means something, LIMITS_ZERO says what (mail/attachments.py apply_limits: 0 is no limit).
LIMITS_LEAST = {
    "max_attempts": 1,
    "max_attachment_size": 0,
    "max_attachments": 0,
    "max_forward_attachments_bytes": 0,
    "new_tickets_per_sender": 1,
    "flood_window_minutes": 1,
    "auto_mails_per_ticket": 1,
    "auto_mails_per_ticket_window_minutes": 1,
    "auto_mails_per_recipient": 1,
    "auto_mails_per_recipient_window_minutes": 1,
    "bounce_quiet_days": 1,
    "admin_notice_minutes": 0,
}
LIMITS_ZERO = {
    "max_attachment_size": "no limit but smtp.max_message_size",
    "max_attachments": "no limit",
    "max_forward_attachments_bytes": "no attachment travels, each is named",
    "admin_notice_minutes": "every notice mailed at once",
}

# Where Authentication-Results headers may come from (RFC 8601 section 5): "none" when mailgate's
# own listener is the MX (every such header arrived from outside), "relay" when an MTA in front
# adds its own and strips forged copies carrying its authserv-id.
AUTH_RESULTS_TRUST = ("none", "relay")


@dataclass(frozen=True)
class Security:
    """[security]: what proves an agent, and where system mail comes from (docs/security.md)."""

    trust_authentication_results: str = "none"  # one of AUTH_RESULTS_TRUST
    trusted_authserv_ids: tuple[str, ...] = ()
    system_sender: str = ""  # the no-reply From of admin notices and digests
    # Earlier token keys still accepted while a rotation's grace period runs (MAILGATE_SECRET_OLD),
    # and the day (UTC, YYYY-MM-DD) after which they are refused; "" keeps them until removed.
    old_secrets: tuple[str, ...] = field(default=(), repr=False)
    old_secrets_until: str = ""


@dataclass(frozen=True)
class Membership:
    """[security] keys on who is on a ticket and how many one event mails (DESIGN.md "Who is on
    a ticket"). Read by the handlers; defaults suit a desk that never set them."""

    max_initial_cc: int = 10  # To/Cc of a new request made watchers; the rest recorded
    max_recipients_per_event: int = 20  # addresses outside the team mailed for one event
    join_same_domain: bool = False  # colleagues of the requester's domain may join by writing


@dataclass(frozen=True)
class ImapAccount:
    """One mailbox folder polled over IMAP (mailgate/intake/imap.py, docs/imap.md)."""

    name: str
    desk: str  # desk key the mail is filed for
    host: str
    user: str
    port: int = 993
    security: str = "tls"  # tls (implicit, 993) | starttls (143) | none (loopback/test only)
    password: str = field(default="", repr=False)
    auth: str = "password"  # password | xoauth2
    token_command: str = ""
    token_file: str = ""
    folder: str = "INBOX"
    after: str = "seen"  # seen | move | delete, done only after the commit
    move_to: str = "Processed"
    poll_seconds: float = 60.0
    idle: bool = True
    first_run: str = "unseen"  # unseen | all | since
    since: str = ""  # YYYY-MM-DD, for first_run = "since"
    ca_file: str = ""  # extra CA bundle for a private certificate authority


@dataclass(frozen=True)
class Web:
    """[web]: the HTTP side of `mailgate run` (mailgate/web): request pages, one-click rating and
    unsubscribe, agent pages, /healthz and /metrics. `base_url` is what links in mail point at
    (the public URL behind a reverse proxy); by default http://host:port."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8025  # 0: any free port (tests); MAILGATE_WEB_PORT overrides
    base_url: str = ""
    link_days: int = 180  # how long a request page, rating or unsubscribe link in a mail works
    session_hours: int = 12  # how long an agent stays signed in
    signin_per_hour: int = 5  # sign-in mails per agent address (and 20 per client) an hour

    @property
    def url(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")


@dataclass(frozen=True)
class Config:
    root: Path
    state_dir: Path
    database_url: str
    desks: tuple[Desk, ...]
    smtp: SmtpIntake
    relay: Relay
    limits: Limits
    templates_dir: Path
    rules_dir: Path
    secret: str = field(repr=False)
    admin_address: str = "postmaster@localhost"
    instance_id: str = "mailgate"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    imap: tuple[ImapAccount, ...] = ()
    pipeline: Pipeline = Pipeline()
    security: Security = Security()
    scheduler: SchedulerSettings = SchedulerSettings()
    membership: Membership = Membership()
    web: Web = Web()
    source: Path | None = None  # the config file read; None: the embedded default

    @property
    def described(self) -> str:
        """Which configuration and state this is, as commands tell the operator."""
        where = (
            f"config {self.source}" if self.source else f"no config file, the embedded default in {self.root}"
        )
        return f"{where}, state dir {self.state_dir}"

    @property
    def system_sender(self) -> str:
        """The From of system mail: `[security] system_sender`, else mailgate-noreply@<desk domain>."""
        return self.security.system_sender or f"mailgate-noreply@{self.desks[0].domain}"

    def desk_for(self, address: str) -> Desk | None:
        """The desk an envelope or header address belongs to, plus-addresses included."""
        address = address.lower()
        base, _ = plus_parts(address)
        for desk in self.desks:
            if address in desk.addresses or base in desk.addresses:
                return desk
        if base == self.system_sender:
            # Answers to system mail are taken in, so the inbox records why they are not ticketed.
            return self.desks[0]
        return None

    def desk_by_key(self, key: str) -> Desk | None:
        for desk in self.desks:
            if desk.key == key.upper():
                return desk
        return None

    @property
    def own_addresses(self) -> tuple[str, ...]:
        return (*(a for d in self.desks for a in d.addresses), self.system_sender)


# The keys each table of config.toml may hold (the ones `[limits]`, `[security]`, `[scheduler]`
# and `[web]` may hold are read where those are).
TOP_KEYS = {
    "state_dir",
    "rules_dir",
    "templates_dir",
    "admin_address",
    "instance_id",
    "database",
    "desks",
    "smtp",
    "outgoing",
    "limits",
    "security",
    "imap",
    "scheduler",
    "web",
    "pipeline",
}
DATABASE_KEYS = {"url"}
DESK_KEYS = {"address", "key", "name", "aliases", "workflow", "portals"}
SMTP_KEYS = {"enabled", "host", "port", "max_message_size", "max_data_in_flight", "lmtp"}
OUTGOING_KEYS = {
    "transport",
    "directory",
    "host",
    "port",
    "starttls",
    "ssl",
    "username",
    "password_env",
    "timeout",
    "connections",
    "retry_base_seconds",
    "retry_max_seconds",
    "give_up_after_seconds",
}
PIPELINE_KEYS = {"worker", "lease_seconds", "renew_seconds"}
IMAP_KEYS = {
    "name",
    "desk",
    "host",
    "port",
    "security",
    "user",
    "password_env",
    "auth",
    "token_command",
    "token_file",
    "folder",
    "after",
    "move_to",
    "poll_seconds",
    "idle",
    "first_run",
    "since",
    "ca_file",
}
# Settings an earlier version read and this one does not, with what to do: loaded without them,
# and `config check` says so, rather than a daemon that will not start after an upgrade.
RETIRED: dict[str, dict[str, str]] = {
    "pipeline": {"parse_processes": "the parse helper process is gone (one runner path): remove the line"},
}


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str) -> Any:
    value = table.get(key, default)
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}.{key}: expected {name}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # TOML has inf and nan
        raise ConfigError(f"{where}.{key}: expected a finite number, got {value!r}")
    return value


def _port(table: dict[str, Any], key: str, default: int, where: str) -> int:
    """A TCP port to listen on or connect to, 1..65535 (a larger one fails only when the daemon
    binds or connects). `where` "" reads an environment variable, which is text."""
    value = table.get(key, default)
    if not where and isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    name = f"{where}.{key}" if where else key
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{name}: expected a port number 1..65535, got {value!r}")
    return value


def _table(data: dict[str, Any], name: str, known: set[str]) -> dict[str, Any]:
    """The table `[name]`, refused when it holds a key nobody reads (`_known`)."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a [{name}] table")
    return _known(table, name, known)


def _known(table: dict[str, Any], where: str, known: set[str]) -> dict[str, Any]:
    """`table`, refused when it holds a key nobody reads: a misspelt setting must not silently
    leave its default in force (a typo in `trusted_authserv_ids` would turn proof by DKIM/SPF
    off without a word, one in `[smtp] port` would listen where nobody sends). A setting an
    earlier version read (`RETIRED`) is let through: `config check` warns about it."""
    unknown = [k for k in table if k not in known and k not in RETIRED.get(where.split("[")[0], {})]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
    return table


def _scheduler(data: dict[str, Any]) -> SchedulerSettings:
    t = _table(
        data,
        "scheduler",
        {
            "enabled",
            "sla_check_seconds",
            "timers_seconds",
            "weekly_report_day",
            "weekly_report_hour",
            "attachment_grace_hours",
        },
    )
    values: dict[str, float] = {}
    for key, default in (("sla_check_seconds", 300.0), ("timers_seconds", 900.0)):
        value = _get(t, key, float, default, "scheduler")
        if value < 1:
            raise ConfigError(f"scheduler.{key}: expected a number of seconds >= 1, got {value!r}")
        values[key] = value
    day = t.get("weekly_report_day", "mon")
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    if day is not False and (not isinstance(day, str) or day.lower() not in days):
        raise ConfigError(f"scheduler.weekly_report_day: expected mon … sun, or false for none, got {day!r}")
    hour = t.get("weekly_report_hour", 7)
    if isinstance(hour, bool) or not isinstance(hour, int) or not 0 <= hour <= 23:
        raise ConfigError(f"scheduler.weekly_report_hour: expected an hour 0-23, got {hour!r}")
    grace = _get(t, "attachment_grace_hours", float, 24.0, "scheduler")
    if not 1 <= grace <= MAX_ATTACHMENT_GRACE_HOURS:  # nan fails both: TOML allows nan and inf
        raise ConfigError(
            f"scheduler.attachment_grace_hours: expected hours from 1 to {MAX_ATTACHMENT_GRACE_HOURS} (a"
            f" younger file may belong to a message being processed; the sweep reckons its cutoff as a"
            f" date), got {grace!r}"
        )
    return SchedulerSettings(
        enabled=_get(t, "enabled", bool, True, "scheduler"),
        attachment_grace_hours=grace,
        weekly_report_day=None if day is False else days.index(day.lower()),
        weekly_report_hour=hour,
        **values,
    )


def _web(data: dict[str, Any], env: dict[str, str]) -> Web:
    keys = {"enabled", "host", "port", "base_url", "link_days", "session_hours", "signin_per_hour"}
    t = _table(data, "web", keys)
    port = _get(t, "port", int, 8025, "web")
    if env.get("MAILGATE_WEB_PORT"):
        try:
            port = int(env["MAILGATE_WEB_PORT"])
        except ValueError:
            raise ConfigError(
                f"MAILGATE_WEB_PORT: expected a port number, got {env['MAILGATE_WEB_PORT']!r}"
            ) from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"web.port: expected 0..65535, got {port}")
    base_url = _get(t, "base_url", str, "", "web")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"web.base_url: expected an http:// or https:// URL, got {base_url!r}")
    numbers = {}
    for key, default in (("link_days", 180), ("session_hours", 12), ("signin_per_hour", 5)):
        numbers[key] = _get(t, key, int, default, "web")
        if numbers[key] < 1:
            raise ConfigError(f"web.{key}: expected a whole number >= 1, got {numbers[key]}")
    return Web(
        enabled=_get(t, "enabled", bool, True, "web"),
        host=_get(t, "host", str, "127.0.0.1", "web"),
        port=port,
        base_url=base_url,
        **numbers,
    )


def _env(env: dict[str, str], name: str) -> str:
    return env.get(name, "")


def config_path(path: str | Path | None = None) -> Path | None:
    """The config file to read: `path` (--config), else $MAILGATE_CONFIG, else ./config.toml in
    the working directory when there is one; None means the embedded default."""
    if path is None and os.environ.get("MAILGATE_CONFIG"):
        path = os.environ["MAILGATE_CONFIG"]
    if path is None and Path("config.toml").is_file():
        path = "config.toml"
    return Path(path) if path is not None else None


def load_config(
    path: str | Path | None = None, *, env: dict[str, str] | None = None, create_state: bool = True
) -> Config:
    """Load settings. With no file, the embedded default: one desk support@localhost (SUP).

    `env` defaults to `.env` next to the config (or in the working directory) overlaid by os.environ.
    The file is `path`, else MAILGATE_CONFIG, else ./config.toml (`config_path`).
    `create_state=False` (commands that only read what is there) never creates the state
    directory: without MAILGATE_SECRET and state/secret.key the secret is empty, as such commands
    sign nothing.
    """
    path = config_path(path)
    try:
        return _load(path, env, create_state)
    except ConfigError as exc:
        exc.file = path
        raise


def _load(path: Path | None, env: dict[str, str] | None, create_state: bool) -> Config:
    """`load_config` of the file `path` (None: the embedded default)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        root = path.resolve().parent
    else:
        root = Path.cwd()
    if env is None:
        env = {k: v for k, v in dotenv_values(root / ".env").items() if v is not None}
        env.update(os.environ)

    state_dir = Path(env.get("MAILGATE_STATE_DIR") or data.get("state_dir") or "state")
    if not state_dir.is_absolute():
        state_dir = root / state_dir

    _known(data, "config", TOP_KEYS)
    db = _table(data, "database", DATABASE_KEYS)
    url = env.get("MAILGATE_DATABASE_URL") or _get(db, "url", str, "", "database")
    if not url:
        url = f"sqlite:///{state_dir / 'mailgate.db'}"

    desks_raw = data.get("desks")
    if desks_raw is None:
        desks_raw = [{"address": "support@localhost", "key": "SUP", "name": "Support"}]
    if not isinstance(desks_raw, list) or not desks_raw:
        raise ConfigError("desks: expected at least one [[desks]] table")
    desks: list[Desk] = []
    seen_keys: set[str] = set()
    seen_addr: set[str] = set()
    for i, d in enumerate(desks_raw):
        where = f"desks[{i}]"
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a [[desks]] table")
        _known(d, where, DESK_KEYS)
        address = str(_get(d, "address", str, "", where)).lower()
        if not ADDRESS_RE.match(address):
            raise ConfigError(f"{where}.address: not an address: {address!r}")
        key = str(_get(d, "key", str, "", where))
        if not KEY_RE.match(key):
            raise ConfigError(
                f"{where}.key: must be 1-16 capitals/digits starting with a letter, got {key!r}"
            )
        aliases = tuple(a.lower() for a in _get(d, "aliases", list, [], where))
        for a in (address, *aliases):
            if a in seen_addr:
                raise ConfigError(f"{where}: address {a} belongs to two desks")
            seen_addr.add(a)
        if key in seen_keys:
            raise ConfigError(f"{where}.key: {key} is used by two desks")
        portals = tuple(str(p).lower() for p in _get(d, "portals", list, [], where))
        for j, portal in enumerate(portals):
            if not ADDRESS_RE.match(portal):
                raise ConfigError(f"{where}.portals: not an address: {portal!r} (item {j + 1})")
            if portal in seen_addr:
                raise ConfigError(f"{where}.portals: {portal} is a desk address, not a portal's")
        seen_keys.add(key)
        desks.append(
            Desk(
                address=address,
                key=key,
                name=_get(d, "name", str, key, where),
                aliases=aliases,
                workflow=_get(d, "workflow", str, "default", where),
                portals=portals,
            )
        )

    s = _table(data, "smtp", SMTP_KEYS)
    max_size = _get(s, "max_message_size", int, DEFAULT_MAX_MESSAGE_SIZE, "smtp")
    port = _port(s, "port", DEFAULT_SMTP_PORT, "smtp")
    if env.get("MAILGATE_SMTP_PORT"):
        port = _port(env, "MAILGATE_SMTP_PORT", port, "")
    smtp = SmtpIntake(
        enabled=_get(s, "enabled", bool, True, "smtp"),
        host=_get(s, "host", str, "127.0.0.1", "smtp"),
        port=port,
        max_message_size=max_size,
        max_data_in_flight=_get(s, "max_data_in_flight", int, DEFAULT_MAX_DATA_IN_FLIGHT, "smtp"),
        lmtp=_get(s, "lmtp", bool, False, "smtp"),
    )
    for key in ("max_message_size", "max_data_in_flight"):  # one key per message: it names its line
        if getattr(smtp, key) < 1:
            raise ConfigError(f"smtp.{key}: at least 1 byte, got {getattr(smtp, key)}")

    o = _table(data, "outgoing", OUTGOING_KEYS)
    transport = _get(o, "transport", str, "file", "outgoing")
    if transport not in ("file", "smtp"):
        raise ConfigError(f"outgoing.transport: expected 'file' or 'smtp', got {transport!r}")
    password_env = _get(o, "password_env", str, "MAILGATE_RELAY_PASSWORD", "outgoing")
    connections = _get(o, "connections", int, 4, "outgoing")
    if connections < 1:
        raise ConfigError("outgoing.connections: at least 1")
    relay = Relay(
        transport=transport,
        directory=_get(o, "directory", str, "", "outgoing") or str(state_dir / "outgoing"),
        host=_get(o, "host", str, "127.0.0.1", "outgoing"),
        port=_port(o, "port", 25, "outgoing"),
        starttls=_get(o, "starttls", bool, False, "outgoing"),
        ssl=_get(o, "ssl", bool, False, "outgoing"),
        username=_get(o, "username", str, "", "outgoing"),
        password=_env(env, password_env),
        timeout=_get(o, "timeout", float, 30.0, "outgoing"),
        connections=connections,
        retry_base_seconds=_get(o, "retry_base_seconds", float, 30.0, "outgoing"),
        retry_max_seconds=_get(o, "retry_max_seconds", float, 3600.0, "outgoing"),
        give_up_after_seconds=_get(o, "give_up_after_seconds", float, 3 * 86400.0, "outgoing"),
    )
    for key in ("timeout", "retry_base_seconds", "retry_max_seconds", "give_up_after_seconds"):
        if key in o and getattr(relay, key) <= 0:  # a zero socket timeout fails every send
            raise ConfigError(f"outgoing.{key}: must be more than 0, not {getattr(relay, key)!r}")
    if relay.retry_max_seconds < relay.retry_base_seconds:
        # The backoff starts at the base and doubles up to the maximum (outbox/sender.py): a
        # maximum under the base makes every retry wait the maximum, the base meaning nothing.
        # The error names the key the file sets (the other is its default), for its line.
        base, top = relay.retry_base_seconds, relay.retry_max_seconds
        if "retry_max_seconds" in o:
            raise ConfigError(
                f"outgoing.retry_max_seconds: must be at least retry_base_seconds ({base:g}), not {top:g}"
            )
        raise ConfigError(
            f"outgoing.retry_base_seconds: must be at most retry_max_seconds ({top:g}, its default), not {base:g}"
        )

    p = _table(data, "pipeline", PIPELINE_KEYS)
    worker = _get(p, "worker", str, "process", "pipeline")
    if worker not in WORKER_MODES:
        raise ConfigError(f'pipeline.worker: write "process" or "thread", not {worker!r}')
    lease = _get(p, "lease_seconds", float, 30.0, "pipeline")
    renew = _get(p, "renew_seconds", float, 10.0, "pipeline")
    if not lease > 0:
        raise ConfigError(f"pipeline.lease_seconds: must be more than 0, not {lease!r}")
    if not 0 < renew <= lease / 2:
        raise ConfigError(
            f"pipeline.renew_seconds: must be more than 0 and at most half of lease_seconds ({lease:g}),"
            f" not {renew!r}: a lease must survive one renewal that fails"
        )
    pipeline = Pipeline(worker=worker, lease_seconds=lease, renew_seconds=renew)

    lim = _table(data, "limits", set(LIMITS_LEAST))
    reachable = largest_attachment(smtp.max_message_size)
    max_attachment = _get(lim, "max_attachment_size", int, None, "limits")
    if max_attachment is None:  # what the message limit lets through, in whole MiB when it can
        max_attachment = min(DEFAULT_MAX_ATTACHMENT_SIZE, reachable) if reachable >= 2**20 else reachable
    elif smtp.enabled and max_attachment > reachable:
        raise ConfigError(
            f"limits.max_attachment_size: {max_attachment} bytes can never arrive: smtp.max_message_size "
            f"is {smtp.max_message_size} bytes, and base64 makes an attachment 78/57 times larger, so "
            f"{reachable} bytes is the most a message can carry (raise smtp.max_message_size, or lower this)"
        )
    limits = Limits(
        max_attempts=_get(lim, "max_attempts", int, 3, "limits"),
        max_attachment_size=max_attachment,
        max_attachments=_get(lim, "max_attachments", int, 50, "limits"),
        max_forward_attachments_bytes=_get(
            lim, "max_forward_attachments_bytes", int, 10 * 1024 * 1024, "limits"
        ),
        new_tickets_per_sender=_get(lim, "new_tickets_per_sender", int, 20, "limits"),
        flood_window_minutes=_get(lim, "flood_window_minutes", int, 120, "limits"),
        auto_mails_per_ticket=_get(lim, "auto_mails_per_ticket", int, 10, "limits"),
        auto_mails_per_ticket_window_minutes=_get(
            lim, "auto_mails_per_ticket_window_minutes", int, 60, "limits"
        ),
        auto_mails_per_recipient=_get(lim, "auto_mails_per_recipient", int, 30, "limits"),
        auto_mails_per_recipient_window_minutes=_get(
            lim, "auto_mails_per_recipient_window_minutes", int, 10, "limits"
        ),
        bounce_quiet_days=_get(lim, "bounce_quiet_days", int, 7, "limits"),
        admin_notice_minutes=_get(lim, "admin_notice_minutes", int, 15, "limits"),
    )
    for key in lim:  # in the file's order: the first wrong line is named
        value, least = getattr(limits, key), LIMITS_LEAST[key]
        if value < least:
            meaning = f" (0: {LIMITS_ZERO[key]})" if key in LIMITS_ZERO else ""
            raise ConfigError(f"limits.{key}: expected a whole number >= {least}{meaning}, got {value}")

    def _dir(key: str, default: str) -> Path:
        p = Path(_get(data, key, str, default, "config"))
        return p if p.is_absolute() else root / p

    secret = env.get("MAILGATE_SECRET", "")
    if not secret and (create_state or (state_dir / "secret.key").is_file()):
        secret = _state_secret(state_dir)
    security = _security(data, env)

    return Config(
        root=root,
        state_dir=state_dir,
        database_url=url,
        desks=tuple(desks),
        smtp=smtp,
        relay=relay,
        limits=limits,
        templates_dir=_dir("templates_dir", "templates"),
        rules_dir=_dir("rules_dir", "rules"),
        secret=secret,
        admin_address=_get(data, "admin_address", str, "postmaster@localhost", "config").lower(),
        instance_id=_get(data, "instance_id", str, "mailgate", "config"),
        raw=data,
        imap=_imap_accounts(data.get("imap", []), desks, env),
        pipeline=pipeline,
        security=security,
        scheduler=_scheduler(data),
        membership=_membership(_table(data, "security", SECURITY_KEYS)),
        source=path.resolve() if path is not None else None,
        web=_web(data, env),
    )


SECURITY_KEYS = {
    "trust_authentication_results",
    "trusted_authserv_ids",
    "system_sender",
    "old_secrets_until",
    "max_initial_cc",
    "max_recipients_per_event",
    "join_same_domain",
}


def _security(data: dict[str, Any], env: dict[str, str]) -> Security:
    """[security], and the old token keys from MAILGATE_SECRET_OLD (comma-separated). A key this
    table does not know is an error: a misspelt `trusted_authserv_ids` would silently turn proof
    by DKIM/SPF off."""
    sec = _table(data, "security", SECURITY_KEYS)
    trust = _get(sec, "trust_authentication_results", str, "none", "security")
    if trust not in AUTH_RESULTS_TRUST:
        raise ConfigError(
            f'security.trust_authentication_results: "none" (mailgate is the MX) or "relay" '
            f"(an MTA in front adds them), not {trust!r}"
        )
    ids = _get(sec, "trusted_authserv_ids", list, [], "security")
    for i, value in enumerate(ids):
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
            raise ConfigError(
                f"security.trusted_authserv_ids[{i}]: expected an authserv-id such as "
                f'"mx.example.com", got {value!r}'
            )
    sender = _get(sec, "system_sender", str, "", "security").lower()
    if sender and not ADDRESS_RE.match(sender):
        raise ConfigError(f"security.system_sender: not an address: {sender!r}")
    until = _get(sec, "old_secrets_until", str, "", "security")
    if until and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", until):
        raise ConfigError(f"security.old_secrets_until: expected YYYY-MM-DD, got {until!r}")
    old = tuple(s.strip() for s in env.get("MAILGATE_SECRET_OLD", "").split(",") if s.strip())
    return Security(
        trust_authentication_results=trust,
        trusted_authserv_ids=tuple(i.strip().lower() for i in ids),
        system_sender=sender,
        old_secrets=old,
        old_secrets_until=until,
    )


def _membership(sec: dict[str, Any]) -> Membership:
    """The membership and fan-out keys of [security]; other keys of the table are read elsewhere."""
    membership = Membership(
        max_initial_cc=_get(sec, "max_initial_cc", int, 10, "security"),
        max_recipients_per_event=_get(sec, "max_recipients_per_event", int, 20, "security"),
        join_same_domain=_get(sec, "join_same_domain", bool, False, "security"),
    )
    if membership.max_initial_cc < 0:
        raise ConfigError("security.max_initial_cc: 0 or more (0: nobody joins by being on Cc)")
    if membership.max_recipients_per_event < 1:
        raise ConfigError("security.max_recipients_per_event: at least 1 (the requester)")
    return membership


def _imap_accounts(tables: Any, desks: list[Desk], env: dict[str, str]) -> tuple[ImapAccount, ...]:
    """[[imap]] tables. desk = a desk key or address; optional when there is only one desk."""
    if not isinstance(tables, list):
        raise ConfigError("imap: expected [[imap]] tables")
    # key -> (allowed values, the first is the default)
    choices = {
        "security": ("tls", "starttls", "none"),
        "auth": ("password", "xoauth2"),
        "after": ("seen", "move", "delete"),
        "first_run": ("unseen", "all", "since"),
    }
    accounts: list[ImapAccount] = []
    for i, t in enumerate(tables):
        where = f"imap[{i}]"
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: expected an [[imap]] table")
        _known(t, where, IMAP_KEYS)
        host, user = _get(t, "host", str, "", where), _get(t, "user", str, "", where)
        if not host or not user:
            raise ConfigError(f"{where}: host and user are required")
        desk_ref = _get(t, "desk", str, "", where)
        if not desk_ref and len(desks) > 1:
            raise ConfigError(f"{where}.desk: required when there are several desks")
        found = [
            d for d in desks if not desk_ref or desk_ref.upper() == d.key or desk_ref.lower() == d.address
        ]
        if not found:
            raise ConfigError(f"{where}.desk: no desk with key or address {desk_ref!r}")
        values = {k: _get(t, k, str, allowed[0], where) for k, allowed in choices.items()}
        for k, allowed in choices.items():
            if values[k] not in allowed:
                raise ConfigError(f"{where}.{k}: expected one of {', '.join(allowed)}, got {values[k]!r}")
        since = _get(t, "since", str, "", where)
        if values["first_run"] == "since" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", since):
            raise ConfigError(f'{where}.since: first_run = "since" needs a date YYYY-MM-DD, got {since!r}')
        acct = ImapAccount(
            name=_get(t, "name", str, f"{user}@{host}", where),
            desk=found[0].key,
            host=host,
            user=user,
            port=_port(t, "port", {"tls": 993}.get(values["security"], 143), where),
            password=_env(env, _get(t, "password_env", str, "MAILGATE_IMAP_PASSWORD", where)),
            token_command=_get(t, "token_command", str, "", where),
            token_file=_get(t, "token_file", str, "", where),
            folder=_get(t, "folder", str, "INBOX", where),
            move_to=_get(t, "move_to", str, "Processed", where),
            poll_seconds=_get(t, "poll_seconds", float, 60.0, where),
            idle=_get(t, "idle", bool, True, where),
            since=since,
            ca_file=_get(t, "ca_file", str, "", where),
            **values,
        )
        if acct.poll_seconds < 1:  # 0 polls the server without pause, and reads the poller as stuck
            raise ConfigError(
                f"{where}.poll_seconds: expected a number of seconds >= 1, got {acct.poll_seconds:g}"
            )
        if acct.auth == "xoauth2" and not (acct.token_command or acct.token_file):
            raise ConfigError(f"{where}.auth: xoauth2 needs token_command or token_file")
        if any(a.name == acct.name for a in accounts):
            raise ConfigError(f"{where}.name: {acct.name} is used by two [[imap]] accounts")
        accounts.append(acct)
    return tuple(accounts)


def _state_secret(state_dir: Path) -> str:
    """A per-installation key for signing reply tokens, made once and kept under state/.

    Set MAILGATE_SECRET to share one key between several processes on one database.
    """
    path = state_dir / "secret.key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        state_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        return value
