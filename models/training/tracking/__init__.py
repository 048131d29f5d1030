"""flashsim models package."""
