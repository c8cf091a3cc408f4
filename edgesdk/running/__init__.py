"""Running an artifact: the Runtime, its pool of sessions, autotune, crash-isolated child processes and
the timing helpers. The backends themselves live in edgesdk.backends."""
