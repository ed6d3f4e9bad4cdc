"""Real servers for tests: PostgreSQL and Valkey, started here or named by the environment."""
