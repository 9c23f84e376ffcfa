"""Everything that leaves: template rendering, the outbox queue, the sender and its transports."""
