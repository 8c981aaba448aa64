"""HTML reports built from the findings store (never from live objects)."""
