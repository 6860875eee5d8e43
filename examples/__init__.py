"""Runnable examples of oversync-sa."""
