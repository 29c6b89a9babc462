"""Tests of the collection API: schedules, prompts, runs, responses and reports."""
