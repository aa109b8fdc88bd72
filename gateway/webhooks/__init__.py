"""Webhooks: the durable event log POSTed to receivers, signed, retried, in cursor order."""
