"""The HTTP side of `mailgate run` (an edge, beside the SMTP and IMAP intakes): the requester's
request page, one-click rating and unsubscribe, agents' sign-in, queues and ticket pages,
/healthz and /metrics. docs/web.md describes it; it never blocks the intake (web/server.py)."""
