"""The ground floor: errors, the reader of untrusted files and the escapers, atomic writes, settings, hub access.

Imports nothing else of stmbench.
"""
