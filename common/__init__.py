"""Code shared by every Skein service: settings, control-DB access, Kafka admin, the CLI."""
