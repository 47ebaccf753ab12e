"""Scalytics Connect engine: config, protocol, sessions, policy and the server."""
