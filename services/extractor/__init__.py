"""Scheduled extraction: Singer taps run on a schedule into the gate, their state kept safely."""
