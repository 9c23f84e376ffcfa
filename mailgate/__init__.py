"""mailgate: an inbound email-to-ticket gateway.

Mail comes in by SMTP, IMAP or a pipe, is stored before it is acknowledged, and then flows
through one pipeline (parse, screen, thread, handle, apply, notify). See docs/flow.md.
"""

__version__ = "0.1.0"
