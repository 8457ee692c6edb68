"""Operational endpoints: adapter and register health for the people running the broker."""
