"""The specification's usage examples, verbatim: one copy shared by the tests that run them."""

DISCOVERY = """
from backend_services.infrastructure.service_discovery import (
    ServiceDiscovery, ServiceEndpoint, ServiceType
)

# Initialize service discovery
discovery = ServiceDiscovery(
    redis_url="redis://localhost:6379",
    health_check_interval=30.0,
    max_consecutive_failures=3
)
await discovery.initialize()

# Register DTESN service
endpoint = ServiceEndpoint(
    service_id="dtesn-memory-1",
    service_type=ServiceType.DTESN_MEMBRANE,
    host="localhost",
    port=8081,
    metadata={"membrane_type": "memory", "capacity": 1000}
)

await discovery.register_service(endpoint)

# Discover services
services = await discovery.discover_services(ServiceType.DTESN_MEMBRANE)
"""

CIRCUIT_BREAKER = """
from backend_services.infrastructure.circuit_breaker import (
    CircuitBreaker, CircuitBreakerConfig, circuit_breaker
)

# Create circuit breaker
config = CircuitBreakerConfig(
    failure_threshold=5,
    timeout=60.0,
    request_timeout=30.0
)

cb = CircuitBreaker("external-api", config=config)
await cb.initialize()

# Use as context manager
async with cb:
    result = await external_service_call()

# Use decorator pattern
@circuit_breaker("dtesn-membrane")
async def process_membrane(data):
    return await membrane_processing(data)
"""

DEGRADATION = """
from backend_services.infrastructure.service_degradation import (
    ServiceDegradationManager, DegradationLevel, FeaturePriority, Feature
)

# Initialize degradation manager
manager = ServiceDegradationManager(
    service_name="dtesn-processor",
    check_interval=30.0,
    recovery_delay=60.0
)
await manager.initialize()

# Register features with priorities
features = [
    Feature("core_processing", FeaturePriority.CRITICAL),
    Feature("advanced_analytics", FeaturePriority.HIGH),
    Feature("debug_interface", FeaturePriority.OPTIONAL)
]

for feature in features:
    manager.register_feature(feature)

# Check feature availability
if await manager.is_feature_enabled("advanced_analytics"):
    result = await advanced_processing(data)
else:
    result = await basic_processing(data)
"""

CONFIGURATION = """
from backend_services.infrastructure.config_manager import (
    ConfigurationManager, ConfigSource
)

# Initialize configuration manager
config = ConfigurationManager(
    service_name="dtesn-service",
    config_file="config.json",
    redis_url="redis://localhost:6379"
)
await config.initialize()

# Set configuration
await config.set_config("membrane_depth", 6, ConfigSource.API)
await config.set_config("processing_timeout", 30.0, ConfigSource.API)

# Get configuration
depth = await config.get_config("membrane_depth", default=4)

# Create snapshot and rollback
version_id = await config.create_version_snapshot("v1.0")
await config.rollback_to_version(version_id)
"""
