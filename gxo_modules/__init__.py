"""gxo's modules: one file per module type, registered on import.

gxo imports ``gxo_modules.NAME`` the first time a playbook uses type NAME.
"""
