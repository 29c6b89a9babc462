"""Authentication: tokens, service keys and the caller's context."""
