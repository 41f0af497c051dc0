"""Read routes, one module per read model. They only read; every write goes through events."""
