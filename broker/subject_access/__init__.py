"""Subject-access overviews (AVG art. 15) from the audit log."""
