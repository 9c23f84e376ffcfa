"""The one path every message takes: parse → screen → thread → handler (commands, dispatch, apply,
notify). Stages decide; only `apply` writes, in one transaction with the outbox rows it causes."""
