"""Segments: saved, named conditions over a tenant's contacts (docs/segments.md)."""
