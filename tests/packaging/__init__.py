"""Packaging tests: notify protocol, unit files, and the .deb in a booted Debian 13 container."""
