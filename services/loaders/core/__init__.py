"""What every warehouse loader shares: lease loop, batch reader, schema mapping, errors."""
