"""The benchmark's Django app: the task bodies and the agent every system runs."""
