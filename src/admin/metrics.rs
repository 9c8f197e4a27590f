//! `/metrics` in the Prometheus/OpenMetrics text format. Everything is read at scrape
//! time from counters the gateway keeps anyway, so metrics add nothing to the request path.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::AdminState;
use crate::proxy::unix_now;

pub struct GatewayMetrics(pub AdminState);

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayMetrics")
    }
}

type Labels = Vec<(&'static str, String)>;

/// One `days_left` gauge per entry of a certificate listing, labelled with `labels`.
fn days_left<'a>(
    entries: &'a serde_json::Value,
    labels: &'a [&'static str],
) -> impl Iterator<Item = (Labels, ConstGauge)> + 'a {
    entries.as_array().into_iter().flatten().map(move |c| {
        let labels = labels
            .iter()
            .map(|k| (*k, c[*k].as_str().unwrap_or_default().to_string()))
            .collect();
        (labels, ConstGauge::new(c["days_left"].as_i64().unwrap_or(0)))
    })
}

fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: prometheus_client::metrics::MetricType,
    series: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for GatewayMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType::{Counter, Gauge};
        let state = &self.0;
        let snapshot = state.snapshot.load();
        let now = unix_now();

        let mut requests = Vec::new();
        for (id, route) in snapshot.config.routes.iter().enumerate() {
            for (mode, verdict, n) in snapshot.counters(id).outcomes() {
                let labels = vec![
                    ("route", route.name.to_string()),
                    ("mode", mode.to_string()),
                    ("verdict", verdict.label().to_string()),
                    ("reason", verdict.reason().map(|r| r.to_string()).unwrap_or_default()),
                ];
                requests.push((labels, ConstCounter::new(n)));
            }
        }
        family(
            &mut encoder,
            "phasegate_requests",
            "Requests by route, mode applied, verdict and reason.",
            Counter,
            requests,
        )?;

        let h = state.recorder.handshakes().totals();
        family(
            &mut encoder,
            "phasegate_handshakes",
            "Completed TLS handshakes, by whether a client certificate was asked for and presented.",
            Counter,
            [
                (
                    vec![("client_cert", "not_requested".to_string())],
                    ConstCounter::new(h.completed - h.client_cert_requested),
                ),
                (
                    vec![("client_cert", "requested_none_presented".to_string())],
                    ConstCounter::new(h.client_cert_requested.saturating_sub(h.client_cert_presented)),
                ),
                (
                    vec![("client_cert", "presented".to_string())],
                    ConstCounter::new(h.client_cert_presented),
                ),
            ],
        )?;

        let status = state.control.status();
        family(
            &mut encoder,
            "phasegate_reloads",
            "Configuration reloads by result (startup not included).",
            Counter,
            [
                (vec![("result", "ok".to_string())], ConstCounter::new(status.reloads_ok)),
                (
                    vec![("result", "failed".to_string())],
                    ConstCounter::new(status.reloads_failed),
                ),
            ],
        )?;
        family(
            &mut encoder,
            "phasegate_config_generation",
            "Generation of the configuration in force.",
            Gauge,
            [(Labels::new(), ConstGauge::new(status.generation as i64))],
        )?;
        family(
            &mut encoder,
            "phasegate_config_last_reload_failed",
            "1 when the last reload attempt was rejected (the previous configuration serves).",
            Gauge,
            [(Labels::new(), ConstGauge::new(i64::from(status.last_error.is_some())))],
        )?;
        family(
            &mut encoder,
            "phasegate_overrides_active",
            "Routes running another mode than their YAML says (rollbacks, auto-rollbacks, set modes).",
            Gauge,
            [(Labels::new(), ConstGauge::new(snapshot.overrides.len() as i64))],
        )?;
        let overrides = snapshot.overrides.iter().map(|(route, o)| {
            let kind = serde_json::to_value(o.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (
                vec![("route", route.clone()), ("mode", o.mode.to_string()), ("kind", kind)],
                ConstGauge::new(1i64),
            )
        });
        family(
            &mut encoder,
            "phasegate_route_override",
            "An active override of a route, with its mode and kind.",
            Gauge,
            overrides,
        )?;

        let certs = super::export::certificates(&snapshot, &state.recorder, now);
        family(
            &mut encoder,
            "phasegate_certificate_expiry_days",
            "Days until each of the gateway's own certificates expires (negative: expired).",
            Gauge,
            days_left(&certs["gateway"], &["kind", "owner", "certificate"]),
        )?;
        family(
            &mut encoder,
            "phasegate_crl_next_update_days",
            "Days until each CRL's nextUpdate (negative: stale).",
            Gauge,
            days_left(&certs["crls"], &["bundle", "issuer"]),
        )?;
        let (within7, within30) = state.recorder.read(|a| {
            let soon = |days: i64| {
                let mut names: Vec<String> = a
                    .expiring
                    .expiring_before(now + days * 86_400)
                    .into_iter()
                    .map(|c| c.client)
                    .collect();
                names.sort();
                names.dedup();
                names.len() as i64
            };
            (soon(7), soon(30))
        });
        family(
            &mut encoder,
            "phasegate_client_certificates_expiring",
            "Distinct clients seen whose certificate expires within the window (or has expired).",
            Gauge,
            [
                (vec![("within", "7d".to_string())], ConstGauge::new(within7)),
                (vec![("within", "30d".to_string())], ConstGauge::new(within30)),
            ],
        )?;
        family(
            &mut encoder,
            "phasegate_recording_dropped",
            "Audit events not recorded because the recording queue was full.",
            Counter,
            [(Labels::new(), ConstCounter::new(state.recorder.queue_dropped()))],
        )?;
        if let Some(fleet) = state.control.fleet() {
            let f = fleet.status();
            let reachable = i64::from(matches!(f.health, crate::store::StoreHealth::Reachable));
            family(
                &mut encoder,
                "phasegate_fleet_store_reachable",
                "1 while the fleet store answers; 0 while this instance serves on what it knows.",
                Gauge,
                [(Labels::new(), ConstGauge::new(reachable))],
            )?;
            family(
                &mut encoder,
                "phasegate_fleet_pending_overrides",
                "Changes in force on this instance that the fleet's log has not taken yet.",
                Gauge,
                [(Labels::new(), ConstGauge::new(f.pending_overrides as i64))],
            )?;
            family(
                &mut encoder,
                "phasegate_fleet_spooled_rows",
                "Audit rows waiting for the fleet store.",
                Gauge,
                [(Labels::new(), ConstGauge::new(f.spooled_rows as i64))],
            )?;
            family(
                &mut encoder,
                "phasegate_fleet_spool_dropped",
                "Audit rows given up because the spool was full (a full publish follows).",
                Counter,
                [(Labels::new(), ConstCounter::new(f.spool_dropped))],
            )?;
        }
        family(
            &mut encoder,
            "phasegate_instance_info",
            "This instance's id.",
            Gauge,
            [(vec![("instance", state.instance.to_string())], ConstGauge::new(1i64))],
        )?;
        Ok(())
    }
}

pub fn registry(state: AdminState) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(GatewayMetrics(state)));
    registry
}
