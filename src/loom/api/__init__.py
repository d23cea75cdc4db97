"""Clients of the server's HTTP API."""
