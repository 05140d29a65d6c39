"""The hand-in: bundle, verify (and rerun), leaderboard."""
