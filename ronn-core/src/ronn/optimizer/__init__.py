"""ronn's built-in graph optimizer passes, registered as a plugin like any other."""
