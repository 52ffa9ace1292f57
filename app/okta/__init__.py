"""Okta's own truth (DESIGN.md section 8): the Management API client, the check of a user's
current groups before their removals reach COR, and the System Log catch-up."""
