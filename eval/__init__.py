"""Evaluation: the lm-eval tasks, the runner that scores teachers and students, and leaderboard rows."""
