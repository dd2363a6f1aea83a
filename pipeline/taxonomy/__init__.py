"""Reading and validating a taxonomy: YAML with locations, lint, schemas, rules, documents, leaves,
findings and their reports, and the overlap index. Core dependencies only (no torch, no web
framework): the pre-commit hook installs nothing else."""
