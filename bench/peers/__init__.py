"""Peers of gxo for the bench: make, go-task, Ansible (see generate.py)."""
