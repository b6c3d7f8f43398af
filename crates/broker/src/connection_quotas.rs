//! Counts open client connections, in all and per client address, and decides at accept whether
//! one more may open: `max.connections`, `max.connections.per.ip` and
//! `max.connections.per.ip.overrides`, with Kafka's meaning.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;

use crate::config::BrokerConfig;
use crate::metrics::Refusal;

/// The limits and what is open now.
#[derive(Debug)]
pub(crate) struct ConnectionQuotas {
    max_total: usize,
    max_per_ip: usize,
    /// Per-address limits replacing `max_per_ip` (addresses in canonical form).
    overrides: BTreeMap<IpAddr, usize>,
    open: Mutex<Open>,
    /// `sluice_connections_active`, kept equal to the open count.
    active: Gauge,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Only addresses with at least one connection open, so the map stays as small as the set
    /// of connected clients.
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; gives its place back when dropped.
#[derive(Debug)]
#[must_use = "the connection counts as open only while its slot lives"]
pub(crate) struct ConnectionSlot {
    quotas: Arc<ConnectionQuotas>,
    ip: IpAddr,
}

impl ConnectionQuotas {
    /// The limits of `config`, counting open connections in `active` too.
    pub(crate) fn new(config: &BrokerConfig, active: Gauge) -> Arc<ConnectionQuotas> {
        Arc::new(ConnectionQuotas {
            max_total: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            overrides: config
                .max_connections_per_ip_overrides
                .iter()
                .map(|(ip, max)| (ip.to_canonical(), *max))
                .collect(),
            open: Mutex::new(Open::default()),
            active,
        })
    }

    /// Takes a place for a connection from `ip`, or says which limit refuses it.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        // An IPv4 client of a dual-stack listener shows up as ::ffff:a.b.c.d; count it as a.b.c.d.
        let ip = ip.to_canonical();
        let max_here = self.overrides.get(&ip).copied().unwrap_or(self.max_per_ip);
        let mut open = self.lock();
        if open.total >= self.max_total {
            return Err(Refusal::MaxConnections);
        }
        let here = open.per_ip.get(&ip).copied().unwrap_or(0);
        if here >= max_here {
            return Err(Refusal::MaxConnectionsPerIp);
        }
        open.total += 1;
        open.per_ip.insert(ip, here + 1);
        self.set_active_gauge(open.total);
        Ok(ConnectionSlot {
            quotas: self.clone(),
            ip,
        })
    }

    fn set_active_gauge(&self, open: usize) {
        self.active.set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // Nothing under the lock can panic halfway through a change.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.quotas.lock();
        open.total -= 1;
        self.quotas.set_active_gauge(open.total);
        if let Some(count) = open.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(total: usize, per_ip: usize, overrides: &[(&str, usize)]) -> Arc<ConnectionQuotas> {
        let config = BrokerConfig {
            max_connections: total,
            max_connections_per_ip: per_ip,
            max_connections_per_ip_overrides: overrides
                .iter()
                .map(|(ip, n)| (ip.parse().unwrap(), *n))
                .collect(),
            ..BrokerConfig::default()
        };
        ConnectionQuotas::new(&config, Gauge::default())
    }

    #[test]
    fn each_address_gets_its_own_limit_and_a_closed_connection_frees_its_place() {
        let q = quotas(100, 2, &[("10.0.0.9", 3), ("10.0.0.8", 0)]);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let first = q.admit(a).unwrap();
        let _second = q.admit(a).unwrap();
        assert_eq!(q.admit(a).unwrap_err(), Refusal::MaxConnectionsPerIp);
        // The same address seen through a dual-stack socket counts as the same client.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(q.admit(mapped).unwrap_err(), Refusal::MaxConnectionsPerIp);
        drop(first);
        let _again = q.admit(mapped).unwrap();
        let b: IpAddr = "10.0.0.9".parse().unwrap();
        let _b: Vec<_> = (0..3).map(|_| q.admit(b).unwrap()).collect();
        assert_eq!(q.admit(b).unwrap_err(), Refusal::MaxConnectionsPerIp);
        assert_eq!(
            q.admit("10.0.0.8".parse().unwrap()).unwrap_err(),
            Refusal::MaxConnectionsPerIp
        );
        assert_eq!(q.open(), 5);
    }

    #[test]
    fn the_total_limit_applies_across_addresses() {
        let q = quotas(2, 10, &[]);
        let _a = q.admit("10.0.0.1".parse().unwrap()).unwrap();
        let b = q.admit("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(
            q.admit("10.0.0.3".parse().unwrap()).unwrap_err(),
            Refusal::MaxConnections
        );
        drop(b);
        let _c = q.admit("10.0.0.3".parse().unwrap()).unwrap();
        assert_eq!(q.lock().per_ip.len(), 2, "closed addresses leave the map");
    }
}
