"""Training-sample makers and trainers for the PID models."""
