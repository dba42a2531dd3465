"""live-commerce: a real-time livestream-commerce server."""

__version__ = "0.1.0"
