"""Reporting: stored results -> checked evidence -> a board (rows, cells, marks) -> the leaderboard pages,
figures and findings.
"""
