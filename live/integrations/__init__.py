"""Integrations: events for the systems beside the shop (ERP, warehouse, payments, shipping).

``outbox.emit`` records an event in the caller's SQL transaction; ``webhooks`` fans events out
to subscriptions and delivers them, signed (``signing``), to targets vetted by ``ssrf``.
Knows nothing of HTTP handlers: the sender is an HTTP *client*.
"""
