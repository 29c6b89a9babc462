"""In-process fakes of external services, for tests and benchmarks (see provider_server)."""
