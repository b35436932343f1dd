//! The OpenTelemetry resource of an instrumented process: what its spans and metrics say
//! about where they come from (`service.name`, `process.pid`, `host.name`, …, plus
//! `OTEL_RESOURCE_ATTRIBUTES`). Shared by the span export and the metrics.

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;

use crate::process::ProcessInfo;

/// Resource attributes shared by every process (`OTEL_RESOURCE_ATTRIBUTES`).
#[derive(Clone, Debug, Default)]
pub struct GlobalResource {
    pub attributes: Vec<(String, String)>,
}

/// A process's resource attributes, one per key: a later pair replaces an earlier one with
/// the same key (in its place), as the SDK's `Resource` does, so `OTEL_RESOURCE_ATTRIBUTES`
/// can override `host.name` and the like.
pub fn resource_attributes(p: &ProcessInfo, global: &GlobalResource) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("service.name", p.service_name.clone()),
        KeyValue::new("service.instance.id", p.instance_id.clone()),
        KeyValue::new("host.name", p.host_name.clone()),
        KeyValue::new("process.pid", p.pid as i64),
        KeyValue::new("process.executable.name", p.exe_name.clone()),
        KeyValue::new("process.executable.path", p.exe_path.clone()),
        KeyValue::new("telemetry.sdk.name", "beyla-rs"),
        KeyValue::new("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("telemetry.distro.name", "beyla-rs"),
    ];
    if let Some(ns) = &p.service_namespace {
        attrs.insert(1, KeyValue::new("service.namespace", ns.clone()));
    }
    for (k, v) in global.attributes.iter().chain(p.extra_resource.iter()) {
        if k == "service.name" {
            continue;
        }
        let kv = KeyValue::new(k.clone(), v.clone());
        match attrs.iter_mut().find(|a| a.key.as_str() == k) {
            Some(a) => *a = kv,
            None => attrs.push(kv),
        }
    }
    attrs
}

/// The SDK resource of a process (metrics).
pub fn resource_for(p: &ProcessInfo, global: &GlobalResource) -> Resource {
    Resource::builder_empty()
        .with_attributes(resource_attributes(p, global))
        .build()
}
