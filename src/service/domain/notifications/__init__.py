"""Events that leave Beacon: webhook endpoints and deliveries, alert rules, digests."""
