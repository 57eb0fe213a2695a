"""Tests of backup_agent: standard library and real services only, no Django."""
