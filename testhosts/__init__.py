"""Reusable systemd-nspawn test hosts (Debian 13) for packaging and molecule tests."""
