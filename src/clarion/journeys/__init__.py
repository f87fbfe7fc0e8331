"""Journeys: multi-step automations drawn as a graph, compiled to a plan, and run per
profile by a durable state machine."""
