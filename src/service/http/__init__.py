"""Beacon's HTTP side: icon uploads and downloads through signed URLs, metrics, health."""
