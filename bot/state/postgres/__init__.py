"""The App's state on PostgreSQL, shared by any number of replicas: the job queue, the build
ledger, the command limits, the connection pool with its migrations and advisory locks."""
