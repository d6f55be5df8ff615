"""Automated journeys: triggers, versioned steps and their durable execution."""
