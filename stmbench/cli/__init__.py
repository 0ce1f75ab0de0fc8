"""The command line: parses arguments into typed specs, calls the rooms below, prints and refreshes the leaderboard.
"""
