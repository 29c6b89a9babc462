"""Markets and money: where prompts are asked from, what answers cost, estimates and caps."""
