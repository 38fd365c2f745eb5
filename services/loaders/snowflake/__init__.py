"""The Snowflake loader: stage + COPY INTO, MERGE, VARIANT for nested data."""
