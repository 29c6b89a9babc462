"""Tenancy: organizations, workspaces, members, invitations, join codes, access and uploads."""
