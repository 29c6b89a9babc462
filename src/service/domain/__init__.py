"""Domain logic: rules, validation and access decisions, in plain Python without gRPC."""
