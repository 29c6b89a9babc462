"""Collection: prompts, schedules, runs, their answers' rollups and the reports read from them."""
