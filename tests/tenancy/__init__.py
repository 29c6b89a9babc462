"""Tests of organizations, workspaces, members and join codes."""
