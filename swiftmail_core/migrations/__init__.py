"""Numbered SQL migrations, applied in order by ``swiftmail migrate``."""
