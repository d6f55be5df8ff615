"""Sending: campaign lifecycle, audience, the outbox, workers and the sweeper."""
