"""The comparison harness behind ``skipdit bench``: our caches and external peers on the same models and seeds."""
