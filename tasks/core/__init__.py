"""What every step shares: configuration, file contracts, errors, layout, locks, reports."""
