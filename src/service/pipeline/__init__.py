"""Interceptors: one concern each (logging, errors, auth, rate limits), applied to every RPC."""
