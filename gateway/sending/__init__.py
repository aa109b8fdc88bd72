"""Sending: the dispatcher that drives the central scheduler (ratelimit/) over the durable
outbox, message templates, and the events a message's states commit with."""
