"""Reliability harnesses: a real server killed with SIGKILL at chosen and random points."""
