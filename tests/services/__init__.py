"""Real servers for tests: PostgreSQL, Valkey and a Kafka-protocol broker, started here or
named by the environment."""
