"""The spec's four components: discovery, circuit breakers, degradation, configuration."""
