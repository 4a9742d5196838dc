//! Everything in Vigil that talks to the outside world: sources (OTLP, Kafka), alert
//! sinks (Alertmanager, webhook, Kafka, stdout) and the Kubernetes actuator. Each is a
//! module with a config type that builds the running component; heavy dependencies
//! sit behind cargo features so the engine stays light.
//!
//! The components land with their issues; the crate exists now so the dependency
//! direction (engine ← connectors ← binary) is fixed from the start.
