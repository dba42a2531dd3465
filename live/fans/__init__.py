"""Fans (老铁): follows, go-live notifications, followers-only sales, lucky bags, shop stats.

``live.fans.service.install`` wires the domain in; ``live.transport.routes_fans`` is its transport.
"""
