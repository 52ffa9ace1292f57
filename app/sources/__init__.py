"""Sources: HTTP in, MembershipChange out. They know nothing of COR."""
