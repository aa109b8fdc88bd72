"""The durable event log (cursors, retention, subscribers) and what feeds it: inbound
messages (the inbox) and state changes (the listeners)."""
