"""Pure service-desk logic: threading, tokens, workflow, routing, commands, SLA. No I/O here."""
