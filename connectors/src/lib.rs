//! Everything in Vigil that talks to the outside world: sources (OTLP, Kafka), alert
//! sinks (Alertmanager, webhook, Kafka, stdout) and the Kubernetes actuator. Each is a
//! module with a config type that builds the running component; heavy dependencies
//! sit behind cargo features so the engine stays light.
//!
//! - [`sinks`] (feature `sinks`, on by default): Alertmanager API v2, webhook and
//!   stdout alert sinks.
//! - [`otlp`] (feature `otlp`, on by default): OTLP metrics receivers (gRPC and HTTP)
//!   and the mapping of OTLP data points to engine samples. Feature `otlp-map` alone
//!   gives the mapping ([`otlp::prepare`], [`otlp::Mapper`]) without the servers: the
//!   replay reader of OTLP-JSON recordings maps with it, so both paths agree.
//!
//! Kafka, the Kafka sink and the actuator land with their issues; the dependency
//! direction (engine ← connectors ← binary) is fixed from the start.

#![cfg_attr(feature = "sinks", doc = include_str!("../README.md"))]

#[cfg(feature = "sinks")]
pub mod sinks;

#[cfg(feature = "otlp-map")]
pub mod otlp;
