"""Short programs the README quotes; ``tests/test_readme.py`` runs each one."""
