"""Sequence mixers: attention of every kind, each registered through the plugin hooks."""
