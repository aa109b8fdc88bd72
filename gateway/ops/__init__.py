"""Operating zapgate: JSON logs with tenant and instance, Prometheus metrics, file modes."""
