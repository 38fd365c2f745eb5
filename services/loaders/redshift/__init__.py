"""The Redshift loader: S3 staging + COPY FORMAT JSON, merge through staging tables."""
